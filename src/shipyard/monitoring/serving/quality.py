"""Model quality in service: measured on late labels joined to the logged predictions, and
estimated before they arrive (CBPE, with its calibration assumption checked); both also
write ``shipyard_model_quality_drop``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shipyard.checks import Check, Metric
from shipyard.monitoring.serving.base import (
    LOWER_IS_BETTER,
    QUALITY_DROP,
    ServingReader,
)
from shipyard.registry import VersionInfo
from shipyard.serving import records
from shipyard.stats.performance import cbpe, expected_calibration_error
from shipyard.statuses import CheckStatus


def quality_drop(metric: str, registered: float, measured: float) -> float:
    """How much worse ``measured`` is than ``registered``: positive = worse, for any metric."""
    if metric in LOWER_IS_BETTER:
        return measured - registered
    return registered - measured


def drop_metrics(info: VersionInfo, values: dict[str, float], source: str) -> list[Metric]:
    out = []
    for metric, value in values.items():
        registered = info.metrics.get(metric)
        if isinstance(registered, int | float) and not isinstance(registered, bool):
            labels = {
                "model": info.model,
                "version": str(info.version),
                "metric": metric,
                "source": source,
            }
            out.append((QUALITY_DROP, labels, quality_drop(metric, float(registered), value)))
    return out


class QualityChecks(ServingReader):
    """The quality checks of :class:`~shipyard.monitoring.serving.ServingMonitor`."""

    def quality(self, info: VersionInfo) -> Check:
        """Quality from late labels joined to the logged predictions by request id."""
        from sklearn import metrics as skm

        name = "serving.quality"
        pairs = self._joined(info)
        y_pred: list[Any] = []
        y_true: list[Any] = []
        scored: list[tuple[Any, float]] = []  # probabilities are logged for a sample of requests
        for pair in pairs:
            pred, conf, labels = pair.prediction, pair.confidence, pair.labels
            if len(pred) != len(labels):
                continue  # a label list that does not match the request's rows
            y_pred += pred
            y_true += labels
            if conf is not None and len(conf) == len(pred) and all(len(c) == 2 for c in conf):
                scored += [(y, c[1]) for y, c in zip(labels, conf, strict=True)]
        if len(y_true) < self.config.min_rows:
            return Check.of_model(
                name,
                info.model,
                info.version,
                CheckStatus.OK,
                f"{len(y_true)} labelled rows so far",
            )
        series = {"model": info.model, "version": str(info.version)}
        classification = all(
            isinstance(v, str | bool) or float(v).is_integer() for v in y_pred + y_true
        )
        values: dict[str, float] = {}
        if classification:
            yt, yp = np.asarray(y_true), np.asarray(y_pred)
            values["accuracy"] = float(skm.accuracy_score(yt, yp))
            average = "binary" if len(set(y_true) | set(y_pred)) <= 2 else "macro"
            pos = max(set(y_true) | set(y_pred)) if average == "binary" else 1
            values["f1"] = float(
                skm.f1_score(yt, yp, average=average, pos_label=pos, zero_division=0)
            )
            if len(scored) >= self.config.min_rows and len({y for y, _ in scored}) == 2:
                values["auc"] = float(
                    skm.roc_auc_score([y for y, _ in scored], [p for _, p in scored])
                )
        else:
            yt, yp = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
            values["mae"] = float(np.mean(np.abs(yt - yp)))
            values["rmse"] = float(math.sqrt(np.mean((yt - yp) ** 2)))
        worse = [
            k
            for k, v in values.items()
            if k in info.metrics
            and k not in ("mae", "rmse")
            and v < float(info.metrics[k]) - self.config.quality_tolerance
        ]
        worse += [
            k
            for k, v in values.items()
            if k in info.metrics and k in ("mae", "rmse") and v > float(info.metrics[k]) * 1.2
        ]
        status = CheckStatus.ALERT if worse else CheckStatus.OK
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        summary = f"{len(y_true)} labelled rows: {shown}" + (
            f"; worse than registered: {worse}" if worse else ""
        )
        metrics = [(f"shipyard_model_{k}", series, v) for k, v in values.items()]
        metrics += drop_metrics(info, values, "labels")
        evidence = {"rows": len(y_true), "metrics": values, "registered": info.metrics}
        return Check.of_model(name, info.model, info.version, status, summary, evidence, metrics)

    def estimated_quality(self, info: VersionInfo, classes: list[Any] | None = None) -> Check:
        """CBPE on the (sampled) predicted probabilities of the recent period."""
        name = "serving.estimated_quality"
        with self.store.session() as s:
            logged = records.confidences(s, info.model, info.version, self._since())
        proba_rows = [r for conf in logged for r in conf]
        if len(proba_rows) < self.config.min_rows:
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK, "not enough probabilities logged"
            )
        proba = np.asarray(proba_rows, dtype=float)
        k = proba.shape[1]
        estimate = cbpe(proba, classes or list(range(k)))
        evidence: dict[str, Any] = {
            "rows": len(proba),
            "estimate": estimate,
            "assumptions": "calibrated probabilities; no concept drift (P(y|x) unchanged)",
        }
        status = CheckStatus.OK
        notes = []
        if k == 2:
            ece = self._calibration(info)
            if ece is not None:
                evidence["calibration_error"] = ece
                if ece > self.config.max_calibration_error:
                    status = CheckStatus.WARNING
                    notes.append(
                        f"probabilities look miscalibrated (ECE {ece:.3f}); estimate unreliable"
                    )
        registered = info.metrics.get("accuracy")
        if registered is not None and estimate["expected_accuracy"] < float(registered) - (
            self.config.quality_tolerance
        ):
            status = CheckStatus.ALERT
            notes.append(f"below the registered accuracy {float(registered):.3f}")
        labels = {"model": info.model, "version": str(info.version)}
        metrics = [(f"shipyard_model_estimated_{k2[9:]}", labels, v) for k2, v in estimate.items()]
        metrics += drop_metrics(info, {k2[9:]: v for k2, v in estimate.items()}, "estimated")
        summary = f"estimated accuracy {estimate['expected_accuracy']:.3f} from {len(proba)} rows"
        if notes:
            summary += "; " + "; ".join(notes)
        return Check.of_model(name, info.model, info.version, status, summary, evidence, metrics)

    def _calibration(self, info: VersionInfo) -> float | None:
        p, y = [], []
        for pair in self._joined(info):
            conf, labels = pair.confidence, pair.labels
            if conf is None or len(conf) != len(labels):
                continue
            for c, label in zip(conf, labels, strict=True):
                p.append(c[1])
                y.append(float(label))
        if len(p) < self.config.min_rows:
            return None
        return expected_calibration_error(np.asarray(p), np.asarray(y))

"""The checks that read the request log's sampled input rows against the version's reference
rows (:mod:`shipyard.monitoring.serving.reference`): a regressor's loss estimated before its
labels arrive (DLE) and multivariate drift of the inputs.

- **estimated loss**: the loss models learn each reference row's absolute and squared error
  from its inputs and the version's prediction; on the recent period's logged rows they give
  the estimated MAE and RMSE. ``shipyard_serving_estimated_loss{model,version,metric}`` and
  ``shipyard_serving_estimated_loss_ratio{…}`` (over the reference's realised loss; the default
  ``ServingEstimatedLossHigh`` rule reads it), and ``shipyard_model_quality_drop{…,
  source="estimated"}`` where the version registered ``mae``/``rmse``. When late labels of the
  period arrive (``POST …/feedback``) the realised loss is the verdict, and an estimate further
  than ``loss_tolerance`` (relative) from it marks the estimator unreliable, as CBPE's
  calibration check does.
- **multivariate drift**: the PCA reconstruction error of the logged rows against the band of
  the reference's own chunks, and the MMD kernel two-sample test of a sample of them against
  the reference rows (:mod:`shipyard.stats.multivariate`), for versions with at most
  ``multivariate_max_columns`` inputs. ``shipyard_serving_multivariate_drift{model,version,
  method}`` is 1 when a method flags the inputs (``ServingMultivariateDrift``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shipyard.checks import Check, Metric
from shipyard.errors import InvalidInput
from shipyard.monitoring.estimation import judge_loss
from shipyard.monitoring.serving.base import ServingReader
from shipyard.monitoring.serving.quality import drop_metrics
from shipyard.monitoring.serving.reference import VersionReference, version_reference
from shipyard.registry import VersionInfo
from shipyard.serving import records
from shipyard.serving.records import LoggedInputs
from shipyard.stats.estimation import realised_loss
from shipyard.stats.multivariate import MultivariateResult, mmd_test
from shipyard.statuses import CheckStatus

ESTIMATED_LOSS = "shipyard_serving_estimated_loss"
ESTIMATED_LOSS_RATIO = "shipyard_serving_estimated_loss_ratio"
MULTIVARIATE_DRIFT = "shipyard_serving_multivariate_drift"
RECONSTRUCTION_ERROR = "shipyard_serving_reconstruction_error"


class SampledInputChecks(ServingReader):
    """The estimated-loss and multivariate-drift checks of
    :class:`~shipyard.monitoring.serving.ServingMonitor`."""

    def _reference(self, info: VersionInfo) -> VersionReference | None:
        with self.store.session() as s:
            return version_reference(s, self.registry, info)

    def _logged(self, info: VersionInfo) -> tuple[LoggedInputs, np.ndarray[Any, Any] | None]:
        """The recent period's logged rows as floats in signature order (``None`` when they are
        not numeric or do not have the signature's width)."""
        with self.store.session() as s:
            logged = records.logged_inputs(
                s, self.registry.artifacts, info.model, info.version, self._since(),
                max_rows=self.config.max_logged_rows,
            )  # fmt: skip
        try:
            x = np.asarray(logged.rows, dtype=np.float64)
        except (TypeError, ValueError):
            return logged, None
        width = len(info.signature.names or [])
        if x.ndim != 2 or x.shape[1] != width:
            return logged, None
        return logged, x

    def estimated_loss(self, info: VersionInfo) -> Check:
        """DLE on the recent period's logged rows, checked against the late labels."""
        name = "serving.estimated_loss"

        def quiet(summary: str, evidence: dict[str, Any] | None = None) -> Check:
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK, summary, evidence or {}
            )

        reference = self._reference(info)
        if reference is None or reference.labels is None:
            return quiet(
                "no labelled reference rows traced to this version: loss not estimated "
                "(publish the validation data with observe(..., role='reference', label=...) "
                "in the run that registers it)"
            )
        logged, x = self._logged(info)
        if x is None:
            return quiet(
                f"the {len(logged.rows)} logged input rows are not numeric rows of the signature"
                f" ({len(info.signature.names or [])} inputs)"
            )
        if len(x) < self.config.min_rows:
            return quiet(f"{len(x)} logged rows in the period; {self.config.min_rows} needed")
        try:
            dle = reference.loss_estimator(self.registry, info)
            assert dle is not None
            estimate = dle.estimate(x, np.asarray(logged.predictions, dtype=np.float64))
        except Exception as exc:  # a model that cannot load or predict: this check says so,
            # the others still run
            return Check.of_model(
                name, info.model, info.version, CheckStatus.WARNING,
                f"cannot estimate: {type(exc).__name__}: {exc}",
            )  # fmt: skip
        series = {"model": info.model, "version": str(info.version)}
        max_ratio = self.config.max_loss_ratio
        realised = self._realised(info)
        judged = judge_loss(
            estimate, dle.reference_, realised, max_ratio, self.config.loss_tolerance
        )
        metrics: list[Metric] = [
            (ESTIMATED_LOSS, {**series, "metric": k}, v) for k, v in estimate.items()
        ]
        metrics += [
            (ESTIMATED_LOSS_RATIO, {**series, "metric": k}, r) for k, r in judged.ratios.items()
        ]
        metrics += drop_metrics(info, estimate, "estimated")
        evidence: dict[str, Any] = {
            "rows": len(x),
            "requests": logged.requests,
            "estimate": estimate,
            "reference_loss": dle.reference_,
            "ratio": judged.ratios,
            "reference": reference.describe(),
            "assumptions": "no concept drift (P(y|x) unchanged since the reference)",
        }
        if realised is not None:
            evidence |= {"realised": realised, "relative_gap": judged.gap}
        status = judged.status
        summary = judged.summary(tail=f" from {len(x)} logged rows", max_ratio=max_ratio)
        return Check.of_model(name, info.model, info.version, status, summary, evidence, metrics)

    def _realised(self, info: VersionInfo) -> dict[str, float] | None:
        """MAE and RMSE of the period's predictions whose labels arrived (``None`` for fewer
        than ``min_rows`` labelled rows)."""
        labels: list[Any] = []
        predictions: list[Any] = []
        for pair in self._joined(info):
            if len(pair.prediction) == len(pair.labels):
                labels += pair.labels
                predictions += pair.prediction
        if len(labels) < self.config.min_rows:
            return None
        try:
            return realised_loss(labels, predictions)
        except (InvalidInput, TypeError, ValueError):
            return None

    def multivariate_drift(self, info: VersionInfo) -> Check | None:
        """The logged inputs' joint distribution against the reference rows; ``None`` for a
        version with more inputs than ``multivariate_max_columns``."""
        width = len(info.signature.names or [])
        if width < 2 or width > self.config.multivariate_max_columns:
            return None
        name = "serving.multivariate_drift"
        reference = self._reference(info)
        if reference is None:
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK,
                "no reference rows traced to this version: joint drift not judged",
            )  # fmt: skip
        _, x = self._logged(info)
        if x is None or len(x) < self.config.min_rows:
            rows = 0 if x is None else len(x)
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK,
                f"{rows} numeric logged rows in the period; {self.config.min_rows} needed",
            )  # fmt: skip
        series = {"model": info.model, "version": str(info.version)}
        results: list[MultivariateResult] = []
        metrics: list[Metric] = []
        try:
            fit = reference.reconstruction(self.config.variance_kept)
            if fit is not None:
                pca = fit.test(x)
                results.append(pca)
                metrics.append((RECONSTRUCTION_ERROR, series, pca.statistic))
            results.append(
                mmd_test(
                    reference.features,
                    x,
                    sample_rows=self.config.mmd_sample_rows,
                    permutations=self.config.mmd_permutations,
                    alpha=self.config.mmd_alpha,
                )
            )
        except InvalidInput as exc:
            return Check.of_model(
                name, info.model, info.version, CheckStatus.WARNING, f"not judged: {exc}"
            )
        metrics += [
            (MULTIVARIATE_DRIFT, {**series, "method": r.method}, float(r.drifted)) for r in results
        ]
        flagged = [r.method for r in results if r.drifted]
        parts = [
            f"reconstruction error {r.statistic:.3g} "
            f"({'outside' if r.drifted else 'inside'} [{r.lower:.3g}, {r.upper:.3g}])"
            if r.method == "reconstruction_error"
            else f"MMD² {r.statistic:.3g} (p={r.p_value:.3g})"
            for r in results
        ]
        verdict = "inputs move together differently" if flagged else "no multivariate drift"
        summary = (
            f"{verdict} against {reference.pipeline}/{reference.dataset} over {width} "
            f"inputs, {len(x)} logged rows: {'; '.join(parts)}"
        )
        evidence = {
            "rows": len(x),
            "reference": reference.describe(),
            "results": [r.to_json() for r in results],
        }
        status = CheckStatus.ALERT if flagged else CheckStatus.OK
        return Check.of_model(name, info.model, info.version, status, summary, evidence, metrics)

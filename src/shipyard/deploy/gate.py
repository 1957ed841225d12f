"""The validation gate: a version is blessed only if it meets the policy's absolute thresholds
and does not regress against the serving version on the same evaluation data.

Both versions predict the same rows; each metric is computed with scikit-learn; a metric in
``no_regression`` may be worse than the serving version's by at most ``tolerance`` (absolute).
The result and every number behind it are stored (``gate_results``) and audited, and
:func:`shipyard.deploy.rollout.start_rollout` refuses a version whose gate failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sqlalchemy.orm import Session

from shipyard import audit
from shipyard.checks import Check
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.deploy.authorship import version_authors
from shipyard.deploy.policy import Gate, load_policy
from shipyard.deploy.production import production_version
from shipyard.deploy.rollout import RolloutView, start_rollout
from shipyard.errors import InvalidInput, NotFound
from shipyard.registry import Predictor, Registry, VersionInfo
from shipyard.statuses import CheckStatus
from shipyard.store.deploy import GateResult

LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}


def _rmse(y: Any, p: Any) -> float:
    return float(np.sqrt(skm.mean_squared_error(y, p)))


PREDICTION_METRICS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": lambda y, p: float(skm.accuracy_score(y, p)),
    "f1": lambda y, p: float(skm.f1_score(y, p, average="macro")),
    "precision": lambda y, p: float(skm.precision_score(y, p, average="macro", zero_division=0)),
    "recall": lambda y, p: float(skm.recall_score(y, p, average="macro", zero_division=0)),
    "rmse": _rmse,
    "mae": lambda y, p: float(skm.mean_absolute_error(y, p)),
    "r2": lambda y, p: float(skm.r2_score(y, p)),
}
PROBA_METRICS = {"roc_auc", "log_loss"}


@dataclass(frozen=True)
class GateOutcome:
    model: str
    version: int
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    serving_version: int | None = None
    serving_metrics: dict[str, float] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "metrics": self.metrics,
            "serving_version": self.serving_version,
            "serving_metrics": self.serving_metrics,
        }


def _array(info: VersionInfo, x: Any) -> np.ndarray[Any, Any]:
    if hasattr(x, "columns"):
        missing = [c for c in info.signature.names if c not in x.columns]
        if missing:
            raise InvalidInput(f"evaluation data lacks columns {missing} of {info.model}")
        return np.asarray(x[list(info.signature.names)])
    return np.asarray(x)


def score(
    predictor: Predictor, x: np.ndarray[Any, Any], y: Any, names: set[str]
) -> dict[str, float]:
    """Each named metric of the predictor on (x, y)."""
    out: dict[str, float] = {}
    preds = predictor.predict(x)
    for name in sorted(names):
        if name in PREDICTION_METRICS:
            out[name] = PREDICTION_METRICS[name](y, preds)
        elif name in PROBA_METRICS:
            proba = predictor.predict_proba(x)
            if proba is None:
                raise InvalidInput(f"metric {name} needs a model with predict_proba")
            if name == "roc_auc":
                out[name] = float(
                    skm.roc_auc_score(
                        y, proba[:, 1] if proba.shape[1] == 2 else proba, multi_class="ovr"
                    )
                )
            else:
                out[name] = float(skm.log_loss(y, proba, labels=predictor.classes))
        else:
            known = sorted({*PREDICTION_METRICS, *PROBA_METRICS})
            raise InvalidInput(f"unknown gate metric {name!r}; use one of {known}")
    return out


def judge(
    gate: Gate,
    metrics: dict[str, float],
    serving: dict[str, float] | None,
    model: str,
    version: int,
) -> list[Check]:
    """One check per rule of the gate: each minimum, each maximum, and (when a serving version
    was scored) each metric that must not regress against it."""
    checks: list[Check] = []

    def rule(kind: str, name: str, failed: bool, summary: str, **evidence: float) -> None:
        status = CheckStatus.ALERT if failed else CheckStatus.OK
        found = {"metric": name, "value": metrics[name], **evidence}
        checks.append(Check.of_model(f"gate.{kind}", model, version, status, summary, found))

    for name, bound in gate.minimum.items():
        low = metrics[name] < bound
        rule(
            "minimum",
            name,
            low,
            f"{name} {metrics[name]:.4g} {'<' if low else '≥'} minimum {bound:g}",
            bound=bound,
        )
    for name, bound in gate.maximum.items():
        high = metrics[name] > bound
        rule(
            "maximum",
            name,
            high,
            f"{name} {metrics[name]:.4g} {'>' if high else '≤'} maximum {bound:g}",
            bound=bound,
        )
    if serving is not None:
        for name in gate.no_regression:
            new, old = metrics[name], serving[name]
            worse = (new - old) if name in LOWER_IS_BETTER else (old - new)
            regressed = worse > gate.tolerance
            rule(
                "no_regression",
                name,
                regressed,
                f"{name} {'regressed' if regressed else 'holds'}: {new:.4g} vs serving {old:.4g} "
                f"(tolerance {gate.tolerance:g})",
                serving=old,
                tolerance=gate.tolerance,
            )
    return checks


def reasons_of(checks: list[Check], compared: bool) -> tuple[bool, list[str]]:
    """Whether the gate passed, and why: the failed rules, or one line saying what passed
    (``compared``: a serving version was scored too)."""
    failed = [c.summary for c in checks if c.status != CheckStatus.OK]
    if failed:
        return False, failed
    return True, [
        "meets every threshold and does not regress against the serving version"
        if compared
        else "meets every threshold (no serving version to compare with)"
    ]


def record_gate(
    s: Session,
    model: str,
    version: int,
    passed: bool,
    evidence: dict[str, Any],
    actor: str,
    now: float,
) -> None:
    s.add(
        GateResult(
            model=model, version=version, passed=int(passed), evidence=evidence, ts=now, actor=actor
        )
    )
    audit.record(
        s,
        actor=actor,
        action="gate.passed" if passed else "gate.failed",
        subject=("model_version", f"{model}/{version}"),
        details=evidence,
        now=now,
    )


def validate_version(
    registry: Registry,
    model: str,
    version: int,
    x: Any,
    y: Any,
    *,
    actor: str | None = None,
    gate: Gate | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> GateOutcome:
    """Evaluate ``version`` (and the serving version) on (x, y); record and return the result.

    ``actor`` defaults to the registry's (inside a pipeline step: the user who started the run).
    """
    actor = actor or registry.actor
    store = registry.store
    gate = gate or load_policy(store, model).gate
    names = {*gate.minimum, *gate.maximum, *gate.no_regression}
    info, predictor = registry.load(model, version=version)
    if len(np.asarray(y)) == 0:
        raise InvalidInput("the evaluation data is empty")
    metrics = score(predictor, _array(info, x), y, names)
    with store.session() as s:
        serving_version = production_version(s, model)
    if serving_version is None:
        try:
            serving_version = registry.get(model).version
        except NotFound:
            serving_version = None
    serving_metrics: dict[str, float] | None = None
    if serving_version is not None and serving_version != version:
        s_info, s_pred = registry.load(model, version=serving_version)
        serving_metrics = score(s_pred, _array(s_info, x), y, set(gate.no_regression))
    checks = judge(gate, metrics, serving_metrics, model, version)
    passed, reasons = reasons_of(checks, serving_metrics is not None)
    outcome = GateOutcome(
        model,
        version,
        passed,
        reasons,
        metrics,
        serving_version if serving_metrics is not None else None,
        serving_metrics or {},
    )
    with store.session(immediate=True) as s:
        record_gate(s, model, version, passed, outcome.evidence(), actor, clock.time())
    return outcome


def validate_and_deploy(
    registry: Registry,
    model: str,
    version: int,
    x: Any,
    y: Any,
    *,
    actor: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[GateOutcome, RolloutView | None]:
    """The automated path at the end of a training pipeline: validate, and if blessed start the
    rollout (which still waits for the approvals the policy demands).

    From a step: ``validate_and_deploy(Registry.here(), "churn", v.version, x_test, y_test)``.
    """
    actor = actor or registry.actor
    outcome = validate_version(registry, model, version, x, y, actor=actor, clock=clock)
    if not outcome.passed:
        return outcome, None
    authors = version_authors(registry, model, version)
    view = start_rollout(registry.store, model, version, actor=actor, author=authors, clock=clock)
    return outcome, view

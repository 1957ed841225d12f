"""The replay stage: the candidate answers what the stable version already answered, before any
user is routed to it.

The model servers sample answered requests into their request log (input rows and the answer
of each row, :func:`shipyard.serving.records.logged_inputs`). At replay the control loop loads
the candidate and the stable version, runs both on the stable version's logged rows — one row
at a time, side by side, the order alternating — and judges the candidate against the stable
version's **recorded** answers with paired tests (:mod:`shipyard.stats.paired`), at the level
the release's one budget gives the replay's look (:meth:`Policy.replay_alpha`):

- ``error_rate``: rows the candidate fails on (raises, or answers with the wrong shape or a
  value that is not finite) that the stable version answered (every logged row): exact McNemar.
- ``prediction_shift``: the share of rows answered differently than recorded (classes), or the
  typical change of a number in units of the stable answers' spread (regressors), against the
  replay's own floor ``canary.replay.max_changed``.
- ``latency``: the paired per-row timings of the two versions in this process. The stable
  version is timed again rather than read from what the servers flushed: a server's latency
  holds decoding and the HTTP path that a replay has not, so only timings taken side by side
  compare like with like.
- ``latency_spread`` and ``quality`` are live-traffic metrics: not judged at replay.

Both versions answer identical inputs, so a small change shows on a few hundred rows, and a
model that answers differently is stopped before it answers a single user.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shipyard.artifacts import ArtifactStore
from shipyard.deploy.policy import REPLAY_STEP, MetricRule, Policy
from shipyard.deploy.request_log import no_log_message
from shipyard.errors import DeployError
from shipyard.registry import Registry
from shipyard.serving import records as serving_records
from shipyard.stats.canary import MetricVerdict, TestResult, verdict
from shipyard.stats.paired import (
    changed_numbers_test,
    changed_share_test,
    mcnemar_errors,
    paired_latency_test,
)
from shipyard.store import Store

MAX_CLASSES = 20
"""Answers with more distinct values than this, all numbers, are compared as numbers."""
MAX_EXAMPLES = 5
__all__ = [
    "REPLAY_STEP",
    "LogReplay",
    "ReplayArms",
    "ReplayOutcome",
    "ReplayUnavailable",
    "judge_pairs",
    "judge_replay",
    "paired_evidence",
]


class ReplayUnavailable(DeployError):
    """The stable version's request log holds too few answered rows to replay."""

    def __init__(self, message: str, rows: int, needed: int) -> None:
        super().__init__(message)
        self.rows = rows
        self.needed = needed


@dataclass
class ReplayArms:
    """What the two versions did on the same logged rows (one entry per row)."""

    recorded: list[Any]
    """The stable version's recorded answer to each row."""
    answers: list[Any]
    """The candidate's answer to each row (None where it failed)."""
    candidate_ms: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    """Per-row timings of the rows both versions answered here, paired with ``stable_ms``."""
    stable_ms: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    errors: list[str] = field(default_factory=list)
    """The candidate's failure on each row it failed on."""
    stable_reproduced: int = 0
    """Rows on which the stable version, run again here, gave its recorded answer."""

    @property
    def rows(self) -> int:
        return len(self.recorded)


@dataclass(frozen=True)
class ReplayOutcome:
    """The replay's verdicts and what the audit, the verdict row and a diagnosis show."""

    verdicts: list[MetricVerdict]
    evidence: dict[str, Any]


def _first(value: Any) -> Any:
    while isinstance(value, list | tuple | np.ndarray) and len(value):
        value = value[0]
    return value.item() if isinstance(value, np.generic) else value


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def same_answer(a: Any, b: Any) -> bool:
    """Two answers to one row agree: numbers within float noise, anything else as text."""
    if _numeric([a, b]):
        return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9))
    return str(a) == str(b)


def _not_judged(rule: MetricRule, alpha: float, why: str, rows: int) -> MetricVerdict:
    return MetricVerdict(
        metric=rule.name,
        outcome="pass",
        reason=why,
        test="none",
        statistic=math.nan,
        p_value=math.nan,
        alpha=alpha,
        effect=math.nan,
        effect_floor=rule.floor,
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=rows,
        n_stable=rows,
    )


def answers_test(arms: ReplayArms, floor: float, confidence: float) -> TestResult:
    """The paired test of the candidate's answers against the recorded ones, on the rows it
    answered: changed share for classes, changed numbers for a regressor's values."""
    pairs = [(a, r) for a, r in zip(arms.answers, arms.recorded, strict=True) if a is not None]
    candidate = [a for a, _ in pairs]
    recorded = [r for _, r in pairs]
    distinct = {str(v) for v in recorded}
    if _numeric(candidate + recorded) and len(distinct) > MAX_CLASSES:
        return changed_numbers_test(candidate, recorded, floor)
    changed = sum(not same_answer(a, r) for a, r in pairs)
    return changed_share_test(changed, len(pairs), floor, confidence)


def judge_replay(arms: ReplayArms, policy: Policy) -> list[MetricVerdict]:
    """Every metric of the policy's analysis on the replayed rows, at the replay's level."""
    changed_floor = policy.canary.replay.max_changed if policy.canary.replay else 0.10
    return judge_pairs(arms, policy, policy.replay_alpha(), changed_floor, "replay")


def judge_pairs(
    arms: ReplayArms, policy: Policy, alpha: float, changed_floor: float, stage: str
) -> list[MetricVerdict]:
    """Every metric of the policy's analysis on paired answers to identical inputs (the
    replay's, the shadow's: :mod:`shipyard.deploy.shadow`) at level ``alpha``; latency only
    where both versions were timed side by side."""
    conf = policy.analysis.confidence
    n = arms.rows
    out: list[MetricVerdict] = []
    for rule in policy.analysis.metrics:
        if rule.name == "error_rate":
            result = mcnemar_errors(len(arms.errors), 0, n)
            out.append(verdict(rule.name, result, alpha=alpha, effect_floor=rule.floor,
                               min_samples=1))  # fmt: skip
        elif rule.name == "prediction_shift":
            result = answers_test(arms, changed_floor, conf)
            out.append(verdict(rule.name, result, alpha=alpha, effect_floor=changed_floor,
                               min_samples=1))  # fmt: skip
        elif rule.name == "latency":
            if arms.candidate_ms.size < 2:
                out.append(_not_judged(rule, alpha, "fewer than 2 rows timed on both", n))
                continue
            result = paired_latency_test(arms.candidate_ms, arms.stable_ms)
            floor_ms = rule.floor * max(result.extra["median_stable"], 0.0)
            out.append(verdict(rule.name, result, alpha=alpha, effect_floor=floor_ms,
                               min_samples=2))  # fmt: skip
        else:
            why = f"a live-traffic metric: not judged at {stage}"
            out.append(_not_judged(rule, alpha, why, n))
    return out


def _run(predictor: Any, x: NDArray[Any]) -> tuple[Any, float]:
    """One row's answer (its first value) and the time it took, in ms; raises on a bad one."""
    t0 = time.perf_counter()
    out = predictor.predict(x)
    took_ms = (time.perf_counter() - t0) * 1000.0
    values = np.asarray(out)
    if values.ndim == 0 or values.shape[0] != len(x):
        raise ValueError(f"answered {values.shape} for {len(x)} row(s)")
    answer = _first(values.tolist())
    if isinstance(answer, float) and not math.isfinite(answer):
        raise ValueError(f"answered {answer}")
    return answer, took_ms


def replay_rows(candidate: Any, stable: Any, rows: NDArray[Any], recorded: list[Any]) -> ReplayArms:
    """Both predictors on each row, side by side (the order alternating, so that neither
    always runs on a warm cache), after one untimed warm-up each."""
    answers: list[Any] = []
    errors: list[str] = []
    c_ms: list[float] = []
    s_ms: list[float] = []
    reproduced = 0
    for warm in (candidate, stable):
        with contextlib.suppress(Exception):  # a failure is counted on the row itself below
            warm.predict(rows[:1])
    for i in range(len(rows)):
        x = rows[i : i + 1]
        order = (candidate, stable) if i % 2 == 0 else (stable, candidate)
        got: dict[int, tuple[Any, float] | None] = {}
        for predictor in order:
            try:
                got[id(predictor)] = _run(predictor, x)
            except Exception as exc:
                got[id(predictor)] = None
                if predictor is candidate:
                    errors.append(f"row {i}: {type(exc).__name__}: {exc}"[:300])
        c, s = got[id(candidate)], got[id(stable)]
        answers.append(c[0] if c is not None else None)
        if s is not None and same_answer(s[0], recorded[i]):
            reproduced += 1
        if c is not None and s is not None:
            c_ms.append(c[1])
            s_ms.append(s[1])
    return ReplayArms(
        recorded=list(recorded),
        answers=answers,
        candidate_ms=np.asarray(c_ms),
        stable_ms=np.asarray(s_ms),
        errors=errors,
        stable_reproduced=reproduced,
    )


def paired_evidence(arms: ReplayArms, request_id: str, errors: list[str]) -> dict[str, Any]:
    """What a replay or a shadow saw on its pairs, for the diagnosis: how many answers changed,
    the candidate's failures, and a few examples of each (``request_id`` labels them: the rows
    were not a user's request)."""
    pairs = zip(arms.answers, arms.recorded, strict=True)
    changed = [
        (i, a, r) for i, (a, r) in enumerate(pairs) if a is not None and not same_answer(a, r)
    ]
    return {
        "changed": len(changed),
        "changed_share": len(changed) / arms.rows,
        "candidate_errors": len(arms.errors),
        "error_examples": [
            {"request_id": request_id, "status": "error", "response": e}
            for e in errors[:MAX_EXAMPLES]
        ],
        "examples": [
            {"request_id": request_id, "row": i, "canary": a, "stable": r}
            for i, a, r in changed[:MAX_EXAMPLES]
        ],
        "users_served": 0,
    }


def _median(values: NDArray[np.float64]) -> float | None:
    return float(np.median(values)) if values.size else None


def _input_array(rows: list[list[Any]], numeric: bool) -> NDArray[Any]:
    if numeric:
        try:
            return np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    return np.asarray(rows, dtype=object)


@dataclass
class LogReplay:
    """The control loop's replay: the stable version's logged rows through both versions."""

    store: Store
    artifacts: ArtifactStore
    registry: Registry

    def __call__(
        self, model: str, candidate: int, stable: int, policy: Policy, now: float
    ) -> ReplayOutcome:
        arms, logged = self.replayed(model, candidate, stable, policy, now)
        return self.judged(arms, logged, stable, policy, now)

    def replayed(
        self, model: str, candidate: int, stable: int, policy: Policy, now: float
    ) -> tuple[ReplayArms, serving_records.LoggedInputs]:
        """Both versions on the stable version's logged rows (what ``__call__`` judges)."""
        replay = policy.canary.replay
        if replay is None:
            raise DeployError("the policy has no replay stage")
        since = now - replay.since_s
        with self.store.session(readonly=True) as s:
            logged = serving_records.logged_inputs(
                s, self.artifacts, model, stable, since, now, max_rows=replay.max_rows
            )
        if len(logged.rows) < replay.min_rows:
            why = (
                no_log_message(model, stable, replay.since_s)
                if not logged.rows
                else f"the request log of {model}/{stable} holds {len(logged.rows)} answered "
                f"row(s) from the last {replay.since_s:g} s; the replay needs "
                f"{replay.min_rows} (canary.replay.min_rows)"
            )
            raise ReplayUnavailable(why, len(logged.rows), replay.min_rows)
        info, candidate_model = self.registry.load(model, version=candidate)
        _, stable_model = self.registry.load(model, version=stable)
        rows = _input_array(logged.rows, info.signature.numeric)
        recorded = [_first(p) for p in logged.predictions]
        return replay_rows(candidate_model, stable_model, rows, recorded), logged

    def judged(
        self,
        arms: ReplayArms,
        logged: serving_records.LoggedInputs,
        stable: int,
        policy: Policy,
        now: float,
    ) -> ReplayOutcome:
        replay = policy.canary.replay
        assert replay is not None
        since = now - replay.since_s
        verdicts = judge_replay(arms, policy)
        evidence: dict[str, Any] = {
            "stable_version": stable,
            "rows": arms.rows,
            "requests": logged.requests,
            "log_files": logged.files,
            "since": since,
            **paired_evidence(arms, "(replayed)", arms.errors),
            "stable_reproduced_share": arms.stable_reproduced / arms.rows,
            "median_ms": {
                "candidate": _median(arms.candidate_ms),
                "stable": _median(arms.stable_ms),
            },
        }
        return ReplayOutcome(verdicts, evidence)

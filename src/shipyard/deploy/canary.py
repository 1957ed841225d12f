"""Canary analysis: the canary and the stable version judged over the same windows.

:func:`judge_arms` applies the policy to two :class:`ArmData` (pure: the benchmark calls it on
simulated traces); :class:`ServingAnalyzer` fills them from what the model servers flushed
(:mod:`shipyard.serving.records`: request and error counts, latency histograms, the logged
predictions) — and is what the control loop calls at each look.

Per metric (kernels in :mod:`shipyard.stats.canary`):

- ``error_rate``: exact Poisson-rate test on (errors + data errors) / requests; floor in
  absolute rate (0.005 = half a percentage point).
- ``latency``: Mann–Whitney U; fails only if the whole Hodges–Lehmann interval of the shift lies
  at or above ``threshold`` × the stable median (Kayenta's rule).
- ``latency_spread``: Brown–Forsythe; floor on the ratio of mean absolute deviations, and the
  increase must be at least 10 % of the stable median in time (see :func:`_spread_matters`).
- ``prediction_shift``: KS on numeric predictions, chi-square on classes (≤ 20 distinct
  values); floor on D or Cramér's V.
- ``quality`` (opt-in): share of wrong predictions among those whose late label arrived
  (``POST …/feedback``), the same exact rate test; floor in absolute share.

Latency comes from what the servers flushed. A window that carries the fine histogram
(``latency_s["log"]``, :class:`~shipyard.stats.latency.LatencyHistogram`: bins 2 % wide)
gives each request a value inside its bin (spread evenly over it, so values do not tie), so a
shift is resolved to about 2 % of the latency. Windows that carry only the Prometheus buckets
give each request its bucket's upper bound (the overflow bucket twice the last bound): a shift
inside one bucket is invisible there (every verdict then shows effect 0 in [0, 0]), and the
latency verdicts say so. Both arms use the fine values only when every window of both has them,
so the two are always compared at the same resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from shipyard.deploy.policy import MetricRule, Policy
from shipyard.serving import records as serving_records
from shipyard.stats.canary import (
    MetricVerdict,
    TestResult,
    chi_square_test,
    ks_test,
    latency_shift_test,
    rate_test,
    spread_test,
    verdict,
)
from shipyard.stats.latency import LatencyHistogram
from shipyard.store import Store

MAX_CLASSES = 20
MAX_PREDICTIONS = 20_000
LABELLED_MIN = 30
SPREAD_ABSOLUTE_FLOOR = 0.1
"""A latency spread increase must also be this share of the stable median (in time)."""
"""Late labels are scarce: quality is judged from 30 labelled predictions per side (or the
step's ``min_samples`` if smaller)."""


Resolution = Literal["exact", "fine", "buckets"]
BUCKET_RESOLUTION_NOTE = (
    "latencies known only to histogram-bucket resolution: a shift inside one bucket cannot be "
    "seen (the model servers flush no fine latency histogram)"
)


@dataclass
class ArmData:
    """What one version did over the analysed interval.

    ``latency_resolution`` says what ``latencies_ms`` are: measured values (``exact``, the
    benchmark's traces), fine-histogram bins (``fine``) or Prometheus bucket bounds
    (``buckets``)."""

    requests: int = 0
    errors: int = 0
    latencies_ms: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    predictions: list[Any] = field(default_factory=list)
    labelled: int = 0
    wrong: int = 0
    latency_resolution: Resolution = "exact"


def _spread_matters(
    judged: MetricVerdict, result: TestResult, stable_ms: NDArray[np.float64]
) -> MetricVerdict:
    """A wider spread fails only if it is wider by a noticeable amount of time, not only by a
    ratio: a model answering in 0.2 ms has mean absolute deviations of hundredths of a
    millisecond, so one 20 ms stall (a flush, a GC pause) makes the ratio huge and Brown–Forsythe
    significant (measured: 11 of 15 false rollbacks in 1000 served A/A rollouts,
    benchmarks/canary.py). The increase must also reach ``SPREAD_ABSOLUTE_FLOOR`` of the
    stable median, the scale the latency shift's floor uses."""
    if judged.outcome != "fail":
        return judged
    increase = result.extra["mad_canary"] - result.extra["mad_stable"]
    needed = SPREAD_ABSOLUTE_FLOOR * float(np.median(stable_ms))
    if increase >= needed:
        return judged
    return replace(
        judged,
        outcome="pass",
        reason=(
            f"spread ratio {judged.effect:.3g} but only {increase:.3g} ms wider, below "
            f"{SPREAD_ABSOLUTE_FLOOR:.0%} of the stable median ({needed:.3g} ms)"
        ),
    )


def _no_data(rule: MetricRule, alpha: float, floor: float, n_c: int, n_s: int) -> MetricVerdict:
    required = rule.is_required
    return MetricVerdict(
        metric=rule.name,
        outcome="extend" if required else "pass",
        reason=(
            f"no data: {n_c} canary / {n_s} stable observations"
            + ("" if required else " (optional metric, not judged)")
        ),
        test="none",
        statistic=math.nan,
        p_value=math.nan,
        alpha=alpha,
        effect=math.nan,
        effect_floor=floor,
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=n_c,
        n_stable=n_s,
    )


def _predictions_test(canary: list[Any], stable: list[Any]) -> TestResult:
    values = set(map(str, canary)) | set(map(str, stable))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in canary + stable)
    if numeric and len(values) > MAX_CLASSES:
        return ks_test(np.asarray(canary, dtype=np.float64), np.asarray(stable, dtype=np.float64))
    classes = sorted(values)
    c = [sum(1 for v in canary if str(v) == k) for k in classes]
    s = [sum(1 for v in stable if str(v) == k) for k in classes]
    return chi_square_test(c, s)


def judge_arms(
    canary: ArmData, stable: ArmData, policy: Policy, step_index: int, look: int
) -> list[MetricVerdict]:
    """Every metric of the policy's analysis at this look of this step (a targeted step's or a
    weighted one's: each spends its share of the release's one alpha, :meth:`Policy.alpha_at`)."""
    step = policy.canary.steps[step_index]
    alpha = policy.alpha_at(step_index, look)  # one budget over every stage's looks
    conf = policy.analysis.confidence
    out: list[MetricVerdict] = []
    for rule in policy.analysis.metrics:
        floor = rule.floor
        if rule.name == "error_rate":
            if canary.requests == 0 or stable.requests == 0:
                out.append(_no_data(rule, alpha, floor, canary.requests, stable.requests))
                continue
            result = rate_test(canary.errors, canary.requests, stable.errors, stable.requests, conf)
            out.append(
                verdict(
                    rule.name, result, alpha=alpha, effect_floor=floor, min_samples=step.min_samples
                )
            )
        elif rule.name in ("latency", "latency_spread"):
            n_c, n_s = canary.latencies_ms.size, stable.latencies_ms.size
            if n_c < 2 or n_s < 2:
                out.append(_no_data(rule, alpha, floor, n_c, n_s))
                continue
            if rule.name == "latency":
                result = latency_shift_test(canary.latencies_ms, stable.latencies_ms, conf)
                floor_ms = floor * max(result.extra["median_stable"], 0.0)
                judged = verdict(
                    rule.name,
                    result,
                    alpha=alpha,
                    effect_floor=floor_ms,
                    min_samples=step.min_samples,
                    effect_from_ci=True,
                )
            else:
                result = spread_test(canary.latencies_ms, stable.latencies_ms)
                judged = verdict(
                    rule.name, result, alpha=alpha, effect_floor=floor, min_samples=step.min_samples
                )
                judged = _spread_matters(judged, result, stable.latencies_ms)
            if "buckets" in (canary.latency_resolution, stable.latency_resolution):
                judged = replace(judged, reason=f"{judged.reason}; {BUCKET_RESOLUTION_NOTE}")
            out.append(judged)
        elif rule.name == "quality":
            if canary.labelled == 0 or stable.labelled == 0:
                out.append(_no_data(rule, alpha, floor, canary.labelled, stable.labelled))
                continue
            result = rate_test(canary.wrong, canary.labelled, stable.wrong, stable.labelled, conf)
            out.append(
                verdict(
                    rule.name,
                    result,
                    alpha=alpha,
                    effect_floor=floor,
                    min_samples=min(step.min_samples, LABELLED_MIN),
                )
            )
        else:  # prediction_shift
            n_c, n_s = len(canary.predictions), len(stable.predictions)
            if n_c < 2 or n_s < 2:
                out.append(_no_data(rule, alpha, floor, n_c, n_s))
                continue
            result = _predictions_test(canary.predictions, stable.predictions)
            out.append(
                verdict(
                    rule.name, result, alpha=alpha, effect_floor=floor, min_samples=step.min_samples
                )
            )
    return out


# -- reading what the servers flushed ---------------------------------------------------------


def latencies_from_histogram(latency_json: dict[str, Any]) -> NDArray[np.float64]:
    """One value (ms) per request: its bucket's upper bound; the overflow bucket 2 × the last."""
    bounds = [float(b) for b in latency_json.get("buckets_s", [])]
    counts = [int(c) for c in latency_json.get("counts", [])]
    if not bounds or len(counts) != len(bounds) + 1:
        return np.empty(0)
    values_ms = np.asarray([*bounds, 2 * bounds[-1]]) * 1000.0
    return np.repeat(values_ms, counts)


def _first_value(prediction: Any) -> Any:
    while isinstance(prediction, list) and prediction:
        prediction = prediction[0]
    return prediction


def _same(prediction: Any, label: Any) -> bool:
    if isinstance(prediction, int | float) and isinstance(label, int | float):
        return float(prediction) == float(label)
    return str(prediction) == str(label)


def fine_latencies(latency_jsons: list[dict[str, Any]]) -> NDArray[np.float64] | None:
    """Every request's latency (ms) from the windows' fine histograms, merged; None unless
    every window carries one (of one accuracy)."""
    if not latency_jsons or not all(isinstance(j.get("log"), dict) for j in latency_jsons):
        return None
    merged = LatencyHistogram.from_json(latency_jsons[0]["log"])
    try:
        for j in latency_jsons[1:]:
            merged.merge(LatencyHistogram.from_json(j["log"]))
    except ValueError:
        return None
    return merged.values_ms()


def arm_from_store(
    store: Store, model: str, version: int, start: float, end: float, *, fine: bool = True
) -> ArmData:
    """Sum the flushed windows of ``version`` that ended inside (start, end]; latencies from
    the fine histograms when ``fine`` and every window has one, else from the buckets."""
    with store.session(readonly=True) as s:
        flushed = serving_records.windows(s, model, version, start, end)
        preds = serving_records.predictions(s, model, version, start, end, MAX_PREDICTIONS)
        labelled = serving_records.labelled_predictions(
            s, model, version, start, end, MAX_PREDICTIONS
        )
    latencies = fine_latencies([w.latency_s for w in flushed]) if fine else None
    resolution: Resolution = "fine"
    if latencies is None:
        lat = [latencies_from_histogram(w.latency_s) for w in flushed]
        latencies = np.concatenate(lat) if lat else np.empty(0)
        resolution = "buckets"
    wrong = sum(not _same(_first_value(x.prediction), _first_value(x.labels)) for x in labelled)
    return ArmData(
        requests=sum(w.requests for w in flushed),
        errors=sum(w.errors + w.data_errors for w in flushed),
        latencies_ms=latencies,
        predictions=[_first_value(p) for p in preds],
        labelled=len(labelled),
        wrong=wrong,
        latency_resolution=resolution,
    )


@dataclass
class ServingAnalyzer:
    """The control loop's analyzer: both arms from the store, judged by the policy."""

    store: Store

    def __call__(
        self,
        model: str,
        canary: int,
        stable: int,
        start: float,
        end: float,
        policy: Policy,
        step_index: int,
        look: int,
    ) -> list[MetricVerdict]:
        c = arm_from_store(self.store, model, canary, start, end)
        s = arm_from_store(self.store, model, stable, start, end)
        if c.latency_resolution != s.latency_resolution:  # one resolution for both arms
            c = arm_from_store(self.store, model, canary, start, end, fine=False)
            s = arm_from_store(self.store, model, stable, start, end, fine=False)
        return judge_arms(c, s, policy, step_index, look)

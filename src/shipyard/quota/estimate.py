"""Quota estimates: steps from their run history, serving from Little's law.

**History.** For each step of a pipeline (or of a similar pipeline, ``like``), over its
succeeded step runs: the p90 of peak RSS and of CPU-seconds, times (1 + margin). When the history
has at least three runs with distinct ``input_rows``, memory and CPU-seconds are scaled to the
requested input size by a power law ``y = a · rowsᵇ`` fitted by least squares on
``log y = log a + b · log rows`` (a straight line on a log-log plot: linear scaling is ``b = 1``),
and the fit's error on the history is reported as the mean absolute percentage error (MAPE)
of its in-sample predictions. The pipeline's peak is the largest sum of per-step estimates over
the steps that ran at the same time in any past run (a sweep over their [started, ended]
intervals), so parallel branches of the DAG add up and sequential steps do not.

**Serving.** Little's law (Little, "A Proof for the Queuing Formula L = λW", Operations Research
9(3), 1961): requests in flight L = λ · W. With a replica serving ``concurrency`` requests at a
``target_utilisation`` (Knative targets 70 %, Vertex AI 60 %)::

    replicas = ceil(peak_qps × latency_s / (concurrency × target_utilisation)) + 1 (N+1)
               + ceil(headroom × that)          (experiments, canaries)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from shipyard.errors import InvalidInput, NotFound
from shipyard.statuses import StepStatus
from shipyard.store import Store
from shipyard.store.tables import Run, StepRun

P90 = 90.0


@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient · rows ** exponent``, with its in-sample MAPE."""

    coefficient: float
    exponent: float
    mape: float
    points: int

    def __call__(self, rows: float) -> float:
        return self.coefficient * rows**self.exponent


def fit_power_law(rows: Sequence[float], values: Sequence[float]) -> PowerLaw | None:
    """Least squares on (log rows, log value); ``None`` under three distinct positive sizes."""
    pairs = [(r, v) for r, v in zip(rows, values, strict=True) if r > 0 and v > 0]
    if len({r for r, _ in pairs}) < 3:
        return None
    x = np.log([r for r, _ in pairs])
    y = np.log([v for _, v in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    law = PowerLaw(float(math.exp(intercept)), float(slope), 0.0, len(pairs))
    predicted = np.array([law(r) for r, _ in pairs])
    actual = np.array([v for _, v in pairs])
    mape = float(np.mean(np.abs(predicted - actual) / actual))
    return PowerLaw(law.coefficient, law.exponent, mape, len(pairs))


@dataclass(frozen=True)
class StepEstimate:
    step: str
    runs: int
    memory_bytes: float
    cpu_seconds: float
    duration_s: float
    cpu_cores: float
    memory_model: PowerLaw | None = None
    cpu_model: PowerLaw | None = None
    requested: dict[str, float] = field(default_factory=dict)
    """What the step's latest run asked for (its lease), per resource."""


@dataclass(frozen=True)
class PipelineEstimate:
    pipeline: str
    based_on: str  # the pipeline whose history was used
    runs: int
    input_rows: int | None
    steps: list[StepEstimate]
    peak: dict[str, float]
    duration_s: float
    margin: float
    notes: list[str] = field(default_factory=list)
    requested_peak: dict[str, float] = field(default_factory=dict)
    """The largest sum of what steps running at once ask for: what admission will lease,
    whatever they were measured to use."""

    def lease_peak(self) -> dict[str, float]:
        """Per resource, the larger of the estimated need and what the steps ask for."""
        keys = set(self.peak) | set(self.requested_peak)
        return {k: max(self.peak.get(k, 0.0), self.requested_peak.get(k, 0.0)) for k in keys}


def _p90(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), P90)) if values else 0.0


def estimate_pipeline(
    store: Store,
    pipeline: str,
    *,
    input_rows: int | None = None,
    like: str | None = None,
    margin: float = 0.2,
) -> PipelineEstimate:
    """Estimate a pipeline's per-step and peak demand from history (see the module docstring)."""
    if input_rows is not None and input_rows <= 0:
        raise InvalidInput("--input-rows must be a positive number of rows")
    source = like or pipeline
    with store.session() as s:
        rows = s.execute(
            select(StepRun, Run.id)
            .join(Run, Run.id == StepRun.run_id)
            .where(Run.pipeline == source, StepRun.status == StepStatus.SUCCEEDED)
        ).all()
    if not rows:
        hint = "run it once, or give --like OTHER_PIPELINE" if not like else ""
        raise NotFound("run history of pipeline", source, hint)
    by_step: dict[str, list[StepRun]] = {}
    for step_run, _run_id in rows:
        by_step.setdefault(step_run.step, []).append(step_run)
    notes: list[str] = []
    unscaled: list[str] = []
    estimates: dict[str, StepEstimate] = {}
    for step, runs in sorted(by_step.items()):
        mem = [float(r.peak_rss_bytes or 0) for r in runs]
        cpu = [float(r.cpu_seconds or 0.0) for r in runs]
        dur = [
            r.ended_at - r.started_at
            for r in runs
            if r.started_at is not None and r.ended_at is not None
        ]
        sizes = [float(r.input_rows or 0) for r in runs]
        mem_model = fit_power_law(sizes, mem)
        cpu_model = fit_power_law(sizes, cpu)
        memory, cpu_s, duration = _p90(mem), _p90(cpu), _p90(dur)
        if input_rows is not None:
            if mem_model is not None:
                memory = mem_model(input_rows)
            if cpu_model is not None:
                duration *= cpu_model(input_rows) / max(cpu_s, 1e-9)
                cpu_s = cpu_model(input_rows)
            if mem_model is None:
                unscaled.append(step)
        memory *= 1 + margin
        cpu_s *= 1 + margin
        cores = max(1.0, math.ceil(cpu_s / duration)) if duration > 0 else 1.0
        latest = max(runs, key=lambda r: r.started_at or 0.0)
        estimates[step] = StepEstimate(
            step, len(runs), memory, cpu_s, duration, cores, mem_model, cpu_model,
            _amounts(latest.resources),
        )  # fmt: skip
    peak = _concurrent_peak(rows, estimates)
    requested_peak = _concurrent_peak(rows, estimates, requested=True)
    spans: dict[str, list[float]] = {}
    for r, rid in rows:
        if r.started_at is not None and r.ended_at is not None:
            span = spans.setdefault(rid, [math.inf, -math.inf])
            span[0], span[1] = min(span[0], r.started_at), max(span[1], r.ended_at)
    durations = [b - a for a, b in spans.values()]
    if unscaled:
        notes.append(
            f"not scaled to {input_rows:,} rows (their history has fewer than 3 distinct input "
            f"sizes; the p90 of the runs as they were): {', '.join(unscaled)}"
        )
    if like:
        notes.append(f"no history of its own: based on the similar pipeline {like!r}")
    return PipelineEstimate(
        pipeline,
        source,
        len({rid for _, rid in rows}),
        input_rows,
        list(estimates.values()),
        peak,
        _p90([d for d in durations if math.isfinite(d)]),
        margin,
        notes,
        requested_peak,
    )


def _amounts(resources: dict[str, Any] | None) -> dict[str, float]:
    """A step run's recorded request as numbers (cores, bytes); anything else is left out."""
    return {
        k: float(v)
        for k, v in (resources or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _concurrent_peak(
    rows: Sequence[Any], estimates: dict[str, StepEstimate], requested: bool = False
) -> dict[str, float]:
    """The largest per-resource sum over steps running at once in any past run: of the
    estimated need, or (``requested``) of what the steps asked for."""
    peak = {"cpu": 0.0, "memory": 0.0}
    by_run: dict[str, list[StepRun]] = {}
    for step_run, run_id in rows:
        by_run.setdefault(run_id, []).append(step_run)
    for runs in by_run.values():
        edges: list[tuple[float, int, str]] = []
        for r in runs:
            if r.started_at is not None and r.ended_at is not None:
                edges += [(r.started_at, 1, r.step), (r.ended_at, 0, r.step)]
        active: list[str] = []
        for _t, kind, step in sorted(edges):  # ends (0) before starts (1) at the same instant
            if kind:
                active.append(step)
                est = [estimates[a] for a in active]
                if requested:
                    for key in {k for e in est for k in e.requested}:
                        total = sum(e.requested.get(key, 0.0) for e in est)
                        peak[key] = max(peak.get(key, 0.0), total)
                    continue
                peak["cpu"] = max(peak["cpu"], sum(e.cpu_cores for e in est))
                peak["memory"] = max(peak["memory"], sum(e.memory_bytes for e in est))
            else:
                active.remove(step)
    return peak


@dataclass(frozen=True)
class ServingPlan:
    peak_qps: float
    latency_s: float
    in_flight: float
    base_replicas: int
    replicas: int
    headroom_replicas: int
    concurrency: int
    target_utilisation: float
    resources: dict[str, float]


def serving_replicas(
    peak_qps: float,
    latency_s: float,
    *,
    concurrency: int = 1,
    target_utilisation: float = 0.7,
    headroom: float = 0.2,
    per_replica: dict[str, float] | None = None,
) -> ServingPlan:
    """Replicas for a model by Little's law (see the module docstring).

    >>> serving_replicas(200, 0.025, concurrency=2, target_utilisation=0.7).replicas
    6
    """
    if peak_qps < 0 or latency_s <= 0 or concurrency < 1 or not 0 < target_utilisation <= 1:
        raise InvalidInput("need qps ≥ 0, latency > 0, concurrency ≥ 1 and 0 < utilisation ≤ 1")
    in_flight = peak_qps * latency_s
    base = math.ceil(in_flight / (concurrency * target_utilisation) - 1e-12)
    n_plus_one = base + 1
    extra = math.ceil(headroom * n_plus_one - 1e-12)
    replicas = n_plus_one + extra
    resources = {r: v * replicas for r, v in (per_replica or {}).items()}
    return ServingPlan(
        peak_qps,
        latency_s,
        in_flight,
        base,
        replicas,
        extra,
        concurrency,
        target_utilisation,
        resources,
    )


@dataclass(frozen=True)
class LatencyMeasurement:
    requests: int
    seconds: float
    p50_s: float
    p99_s: float
    mean_s: float


def measure_latency(
    predict: Callable[[Any], Any], sample: Any, seconds: float = 2.0, warmup: int = 5
) -> LatencyMeasurement:
    """Call ``predict(sample)`` in a closed loop for ``seconds`` (after ``warmup`` calls) and
    report the latency distribution — measured on this machine, one request at a time."""
    for _ in range(warmup):
        predict(sample)
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 10:
        t0 = time.perf_counter()
        predict(sample)
        latencies.append(time.perf_counter() - t0)
    arr = np.asarray(latencies)
    return LatencyMeasurement(
        len(arr),
        time.perf_counter() - start,
        float(np.percentile(arr, 50)),
        float(np.percentile(arr, 99)),
        float(arr.mean()),
    )

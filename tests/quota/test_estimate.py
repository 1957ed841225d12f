"""Estimates from run history (p90, power-law scaling, concurrent peak) and serving arithmetic."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from shipyard.errors import InvalidInput, NotFound
from shipyard.quota.estimate import (
    estimate_pipeline,
    fit_power_law,
    measure_latency,
    serving_replicas,
)
from shipyard.store import Store
from shipyard.store.tables import Run, StepRun

MiB = 1024**2


def history(store: Store, pipeline: str, sizes: list[int], seed: int = 0) -> None:
    """Runs where `load` and `features` run in parallel, then `train`; memory ∝ rows^0.8."""
    rng = np.random.default_rng(seed)
    with store.session() as s:
        for i, rows in enumerate(sizes):
            t0 = 1_700_000_000.0 + i * 10_000
            run = Run(
                pipeline=pipeline,
                kind="training",
                file="p.py",
                status="succeeded",
                created_at=t0,
            )
            s.add(run)
            s.flush()
            noise = float(rng.uniform(0.95, 1.05))
            for step, start, end, mem_factor in (
                ("load", 0, 100, 1.0),
                ("features", 10, 120, 2.0),
                ("train", 130, 400, 4.0),
            ):
                s.add(
                    StepRun(
                        run_id=run.id,
                        step=step,
                        status="succeeded",
                        started_at=t0 + start,
                        ended_at=t0 + end,
                        peak_rss_bytes=int(mem_factor * 1000 * rows**0.8 * noise),
                        cpu_seconds=(end - start) * 0.9,
                        input_rows=rows,
                    )
                )


class TestHistory:
    def test_p90_with_margin_without_scaling(self, store: Store) -> None:
        history(store, "etl", [1000] * 8)
        est = estimate_pipeline(store, "etl", margin=0.2)
        with store.session() as s:
            mems = [r.peak_rss_bytes for r in s.query(StepRun).filter(StepRun.step == "train")]
        train = next(e for e in est.steps if e.step == "train")
        assert train.memory_bytes == pytest.approx(np.percentile(mems, 90) * 1.2)
        assert train.runs == 8 and est.runs == 8 and est.based_on == "etl"
        assert train.memory_model is None  # one input size: nothing to fit

    def test_power_law_matches_scipy_and_scales_to_the_input(self, store: Store) -> None:
        sizes = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000]
        history(store, "etl", sizes)
        est = estimate_pipeline(store, "etl", input_rows=100_000, margin=0.0)
        train = next(e for e in est.steps if e.step == "train")
        assert train.memory_model is not None
        with store.session() as s:
            pts = [
                (r.input_rows, r.peak_rss_bytes)
                for r in s.query(StepRun).filter(StepRun.step == "train")
            ]
        ref = stats.linregress(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]))
        assert train.memory_model.exponent == pytest.approx(ref.slope, rel=1e-9)
        assert train.memory_model.exponent == pytest.approx(0.8, abs=0.05)
        assert train.memory_bytes == pytest.approx(np.exp(ref.intercept) * 100_000**ref.slope)
        assert train.memory_model.mape < 0.05

    def test_peak_adds_parallel_steps_only(self, store: Store) -> None:
        history(store, "etl", [1000] * 5)
        est = estimate_pipeline(store, "etl", margin=0.0)
        by = {e.step: e for e in est.steps}
        parallel = by["load"].memory_bytes + by["features"].memory_bytes
        assert est.peak["memory"] == pytest.approx(max(parallel, by["train"].memory_bytes))

    def test_the_lease_peak_counts_what_steps_ask_for_when_they_used_less(
        self, store: Store
    ) -> None:
        """`quota plan` plans what admission will lease: a step that asks for 2 CPUs and was
        measured at under one on a busy machine still takes 2 (README's plan flipped with load)."""
        history(store, "etl", [1000] * 3)
        with store.session() as s:
            for r in s.query(StepRun).filter(StepRun.step.in_(("load", "features"))):
                r.resources = {"cpu": 2.0, "memory": 64 * MiB}
        est = estimate_pipeline(store, "etl", margin=0.0)
        assert est.peak["cpu"] == 2.0  # load and features overlap, each measured at 1 core
        assert est.requested_peak == {"cpu": 4.0, "memory": 128 * MiB}
        lease = est.lease_peak()
        assert lease == {"cpu": 4.0, "memory": 128 * MiB}  # more than the ~1 MB measured

    def test_similar_pipeline_is_named(self, store: Store) -> None:
        history(store, "old", [1000] * 3)
        est = estimate_pipeline(store, "new", like="old")
        assert est.based_on == "old" and any("'old'" in n for n in est.notes)

    def test_no_history_is_a_clear_error(self, store: Store) -> None:
        with pytest.raises(NotFound, match="--like"):
            estimate_pipeline(store, "nobody")

    def test_fit_needs_three_sizes(self) -> None:
        assert fit_power_law([1, 1, 2], [1, 2, 3]) is None


class TestServing:
    def test_littles_law_with_n_plus_one_and_headroom(self) -> None:
        plan = serving_replicas(
            200,
            0.025,
            concurrency=2,
            target_utilisation=0.7,
            headroom=0.2,
            per_replica={"cpu": 1, "memory": 512 * MiB},
        )
        # L = 200 × 0.025 = 5 in flight; 5 / (2 × 0.7) = 3.57 → 4; N+1 → 5; 20 % → +1
        assert (plan.in_flight, plan.base_replicas, plan.replicas) == (5, 4, 6)
        assert plan.resources == {"cpu": 6, "memory": 6 * 512 * MiB}

    def test_exact_fit_does_not_round_up(self) -> None:
        assert serving_replicas(100, 0.01, target_utilisation=1.0, headroom=0).replicas == 2

    def test_bad_parameters(self) -> None:
        with pytest.raises(InvalidInput):
            serving_replicas(10, 0)

    def test_measure_latency_of_a_real_function(self) -> None:
        m = measure_latency(lambda _x: time.sleep(0.002), None, seconds=0.2)
        assert m.requests >= 10
        assert 0.002 <= m.p50_s < 0.05
        assert m.p99_s >= m.p50_s

"""Hardware advice: cited catalogue, roofline arithmetic, measured vs modelled, ranking."""

from __future__ import annotations

import pytest

from shipyard.quota.hardware import (
    ThreadMeasurement,
    Workload,
    advise,
    by_cost,
    load_catalogue,
    measure_cpu,
    roofline_seconds,
)


def test_every_catalogue_figure_has_a_source() -> None:
    entries = load_catalogue()
    assert {e.name for e in entries} >= {"nvidia-a100-80gb-sxm", "nvidia-t4", "google-tpu-v5e"}
    for e in entries:
        assert e.sources["compute"] and (e.price_per_hour is None or e.sources["price"])


def test_roofline_is_compute_or_memory_bound() -> None:
    # 1e12 FLOPs on 1e12 FLOP/s: 1 s; moving 1e10 bytes at 1e11 B/s: 0.1 s → compute bound
    assert roofline_seconds(Workload(1e12, 1e10), 1e12, 1e11) == pytest.approx(1.0)
    # same bytes, 1e9 FLOPs → memory bound at 0.1 s
    assert roofline_seconds(Workload(1e9, 1e10), 1e12, 1e11) == pytest.approx(0.1)


def test_measured_throughput_is_real_and_used_for_this_machine() -> None:
    measured = measure_cpu(max_threads=1, size=256, seconds=0.05)
    assert [(m.threads, m.dtype) for m in measured] == [(1, "float32"), (1, "float64")]
    assert all(m.gflops > 0.05 for m in measured)
    options = advise(Workload(1e12), measured, [], local_memory=8e9)
    (local,) = options
    assert local.provenance == "measured"
    assert local.seconds == pytest.approx(1e12 / (measured[0].gflops * 1e9))


def test_model_size_decides_what_fits_and_ranking() -> None:
    measured = [ThreadMeasurement(1, "float32", 50.0), ThreadMeasurement(2, "float32", 95.0)]
    catalogue = load_catalogue()
    # a 7e9-parameter model: training asks 112 GB (16 B/param) → no single 80 GB GPU fits
    train = Workload(6 * 7e9 * 1e9, 1e12, parameters=7e9, training=True)
    options = advise(train, measured, catalogue, local_memory=64e9)
    assert not any(o.fits_memory for o in options)
    # inference in fp16 asks 14 GB: fits the 16 GB T4, not this 8 GB machine
    infer = Workload(2 * 7e9 * 1000, 14e9 * 1000, parameters=7e9, training=False)
    options = advise(infer, measured, catalogue, local_memory=8e9)
    fits = {o.name for o in options if o.fits_memory}
    assert "nvidia-t4" in fits and not any(
        o.name.startswith("this machine") for o in options if o.fits_memory
    )
    assert options[0].name == "nvidia-h100-sxm"  # highest bandwidth wins a memory-bound job
    assert {o.provenance for o in options} == {"measured", "modelled"}
    cheapest = by_cost(options)[0]
    assert cheapest.fits_memory and cheapest.cost_per_run is not None

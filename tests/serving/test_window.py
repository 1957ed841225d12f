"""A serving window is a mergeable accumulator: windows fed apart and merged equal one fed all."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.serving.window import (
    LATENCY_BUCKETS_S,
    MAX_ROWS_PER_WINDOW,
    MAX_TRACES_PER_WINDOW,
    Traced,
    Window,
)


def _feed(w: Window, rows: np.ndarray, latencies: list[float], errors: int = 0) -> Window:
    for i, (row, lat) in enumerate(zip(rows, latencies, strict=True)):
        w.update_ok(row[None, :], (f"r{i}", 1.0, row[:1], None), lat)
    for i in range(errors):
        w.update_error("data" if i % 2 else "model", 0.001, {"request_id": f"e{i}"})
    return w


def test_windows_fed_apart_and_merged_equal_one_window_fed_everything() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(60, 3))
    lat = rng.exponential(0.003, size=60).tolist()
    whole = _feed(Window(0.0, "m", 1, ("a", "b", "c")), rows, lat, errors=5)
    first = _feed(Window(5.0, "m", 1, ("a", "b", "c")), rows[:25], lat[:25], errors=2)
    second = _feed(Window(0.0, "m", 1, ("a", "b", "c")), rows[25:], lat[25:], errors=3)
    merged = first.merge(second)
    assert merged.start == 0.0
    assert (merged.requests, merged.rows) == (whole.requests, whole.rows) == (65, 60)
    assert merged.errors + merged.data_errors == whole.errors + whole.data_errors == 5
    assert merged.latency_counts == whole.latency_counts
    assert merged.latency_sum_s == pytest.approx(whole.latency_sum_s)
    assert merged.latency_fine.counts_ == whole.latency_fine.counts_
    assert np.array_equal(np.concatenate(merged.inputs), rows)
    assert len(merged.predictions) == 60 and len(merged.samples) == 5
    assert sum(merged.latency_counts) == 65 and len(merged.latency_counts) == len(
        LATENCY_BUCKETS_S
    ) + (1)


def test_rows_past_the_cap_are_counted_but_not_kept_also_after_a_merge() -> None:
    big = np.zeros((MAX_ROWS_PER_WINDOW - 10, 2))
    w = Window(0.0, "m", 1, ("a", "b")).update_ok(big, ("r", 0.0, big[:, 0], None), 0.01)
    other = Window(1.0, "m", 1, ("a", "b")).update_ok(
        np.ones((20, 2)), ("s", 1.0, np.ones(20), None), 0.01
    )
    w.merge(other)
    assert w.rows == MAX_ROWS_PER_WINDOW + 10
    assert sum(len(x) for x in w.inputs) == MAX_ROWS_PER_WINDOW - 10
    assert len(w.inputs) == len(w.predictions) == 1


def test_windows_of_different_versions_do_not_merge() -> None:
    with pytest.raises(ValueError, match="m v2"):
        Window(0.0, "m", 1, ("a",)).merge(Window(0.0, "m", 2, ("a",)))


def test_traces_are_kept_up_to_the_cap_also_after_a_merge() -> None:
    def traced(i: int, status: int = 200) -> Traced:
        return (f"{i:032x}", "00f067aa0ba902b7", None, f"r{i}", 0.0, status, 1.0)

    row = np.zeros((1, 1))
    w = Window(0.0, "m", 1, ("a",))
    for i in range(MAX_TRACES_PER_WINDOW - 1):
        w.update_ok(row, ("r", 0.0, row[:, 0], None), 0.001, trace=traced(i))
    w.update_ok(row, ("r", 0.0, row[:, 0], None), 0.001)  # not traced: nothing kept
    other = Window(1.0, "m", 1, ("a",))
    other.update_error("model", 0.001, {"request_id": "e"}, traced(10_000, 500))
    other.update_error("model", 0.001, {"request_id": "f"}, traced(10_001, 500))
    w.merge(other)
    assert len(w.traces) == MAX_TRACES_PER_WINDOW
    assert w.traces[-1] == traced(10_000, 500) and w.requests == MAX_TRACES_PER_WINDOW + 2

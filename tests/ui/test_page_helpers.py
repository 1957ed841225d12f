"""The dashboard's pure helpers: a run's DAG laid out in layers, requests per second from a
cumulative counter, and which runs are slow against their pipeline's median."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.ui.attention import slow_runs
from shipyard.ui.graphs import NOT_STARTED, dag, dag_figure
from shipyard.ui.lineage import rates_per_s

SPECS = {
    "load": {"upstream": []},
    "left": {"upstream": ["load"]},
    "right": {"upstream": ["load"]},
    "join": {"upstream": ["left", "right", "gone"]},
}


def test_a_diamond_is_laid_out_in_layers_by_depth_with_the_latest_attempt_of_each_step() -> None:
    steps = [
        {"step": "load", "status": "succeeded", "attempt": 1},
        {"step": "left", "status": "failed", "attempt": 1},
        {"step": "left", "status": "succeeded", "attempt": 2},
        {"step": "right", "status": "running", "attempt": 1},
        {"step": "renamed", "status": "succeeded", "attempt": 1},
    ]
    graph = dag(steps, SPECS)
    nodes = {n["step"]: n for n in graph["nodes"]}
    assert {s: (n["depth"], n["row"], n["status"]) for s, n in nodes.items()} == {
        "load": (0, -0.5, "succeeded"), "renamed": (0, 0.5, "succeeded"),
        "left": (1, -0.5, "succeeded"), "right": (1, 0.5, "running"), "join": (2, 0.0, NOT_STARTED),
    }  # fmt: skip
    assert nodes["left"]["attempt"] == 2  # the retry, not the failed first attempt
    assert sorted(graph["edges"]) == [["left", "join"], ["load", "left"], ["load", "right"],
                                      ["right", "join"]]  # fmt: skip
    figure = dag_figure(graph)
    assert len(figure["layout"]["annotations"]) == 4


def test_an_edge_that_skips_a_layer_bows_around_it() -> None:
    specs = {"a": {"upstream": []}, "b": {"upstream": ["a"]}, "c": {"upstream": ["a", "b"]}}
    edges = dag_figure(dag([], specs))["data"][0]
    assert edges["x"] == [0, 1, None, 0, 1, 2, None, 1, 2, None]
    assert edges["y"] == [0, 0, None, 0, -0.5, 0, None, 0, 0, None]  # a -> c bows over b


def test_requests_per_second_from_a_counter_skip_gaps_and_resets() -> None:
    ts = [0.0, 60.0, 120.0, 180.0, 240.0]
    assert rates_per_s(ts, [0.0, 60.0, None, 300.0, 10.0]) == [None, 1.0, None, 2.0, None]


def test_a_run_is_slow_past_twice_its_pipelines_median_and_running_ones_count() -> None:
    history = [{"id": f"r{i}", "pipeline": "p", "status": "succeeded", "duration_s": 100.0}
               for i in range(3)]  # fmt: skip
    runs: list[dict[str, Any]] = [
        *history,
        {"id": "long", "pipeline": "p", "status": "failed", "duration_s": 250.0},
        {"id": "still", "pipeline": "p", "status": "running", "duration_s": None,
         "started_at": 1000.0},
        {"id": "alone", "pipeline": "q", "status": "succeeded", "duration_s": 900.0},
    ]  # fmt: skip
    found = slow_runs(runs, now=1500.0)
    assert [(r["id"], r["ratio"]) for r in found] == [("still", 5.0), ("long", 2.5)]
    assert slow_runs(runs[:2] + runs[3:], now=1500.0) == []  # two successes: no median yet
    assert found[0]["median_s"] == pytest.approx(100.0)

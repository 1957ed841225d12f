"""Reading what the servers flushed: windows and predictions by half-open interval, labelled
predictions joined by request id — on both backends, from real flushes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.conftest import fit_classifier
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.feedback import record_feedback
from shipyard.serving.telemetry import Telemetry
from shipyard.workspace import Workspace

T0 = 1_000_000.0


def test_intervals_are_half_open_and_labels_join_by_request_id(
    migrated_db_url: str, tmp_path: Path
) -> None:
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    try:
        clf, x = fit_classifier()
        registry = Registry.of(ws)
        v1 = registry.register("m", clf, training_data=x, alias="champion")
        v2 = registry.register("m", clf, training_data=x)
        clock = FakeClock(T0)
        telemetry = Telemetry(ws.store, None, sample_rate=0, clock=clock, worker="w")
        rows = x.to_numpy()
        for window in range(3):  # windows end at T0+10, T0+20, T0+30
            for i in range(4):
                row = rows[i : i + 1]
                telemetry.ok(v1, row, clf.predict(row), None, 0.001, f"r{window}-{i}")
            telemetry.error(v2, "model", 500, 0.001, f"e{window}", "boom")
            clock.advance(10)
            assert telemetry.flush() == 2
        body = {"request_ids": ["r1-0", "r1-1", "r2-3"], "labels": [1, 0, 1]}
        record_feedback(ws.store, "m", json.dumps(body).encode(), clock)
        with ws.store.session() as s:
            first_two = records.windows(s, "m", 1, T0, T0 + 20)
            assert [w.window_end for w in first_two] == [T0 + 10, T0 + 20]
            assert [w.window_end for w in records.windows(s, "m", 1, T0 + 10)] == [T0 + 20, T0 + 30]
            every = records.windows(s, "m", None, T0)
            assert sorted((w.version, w.requests, w.errors) for w in every) == (
                [(1, 4, 0)] * 3 + [(2, 1, 1)] * 3
            )
            # predictions are stamped when made: window k's at T0 + 10k
            assert len(records.predictions(s, "m", 1, T0, T0 + 20, limit=100)) == 8
            assert len(records.predictions(s, "m", 1, T0 + 10, T0 + 30, limit=100)) == 4
            assert len(records.predictions(s, "m", 1, T0, T0 + 30, limit=5)) == 5
            labelled = records.labelled_predictions(s, "m", 1, T0 + 5, T0 + 15, limit=100)
            expected = [clf.predict(rows[i : i + 1]).tolist() for i in (0, 1)]
            assert sorted(x.prediction for x in labelled) == sorted(expected)
            assert sorted(x.labels for x in labelled) == [[0], [1]]
            assert all(x.confidence is None for x in labelled)  # ok() was given no probabilities
            assert len(records.labelled_predictions(s, "m", 1, T0, T0 + 30, limit=100)) == 3
            assert records.labelled_predictions(s, "m", 2, T0, T0 + 30, limit=100) == []
            # the oldest windows of a version, and requests of every version by window end
            assert [w.window_end for w in records.first_windows(s, "m", 1, 2)] == [T0 + 10, T0 + 20]
            assert records.request_count(s, "m", T0, T0 + 20) == 10
            assert records.request_count(s, "m", T0 + 10) == 10
            assert records.request_count(s, "m", T0 + 30) == 0
        assert np.isfinite(first_two[0].latency_s["sum_s"])
    finally:
        ws.store.dispose()


def test_logged_probabilities_come_back_with_their_requests(
    migrated_db_url: str, tmp_path: Path
) -> None:
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    try:
        clf, x = fit_classifier()
        v1 = Registry.of(ws).register("m", clf, training_data=x, alias="champion")
        clock = FakeClock(T0)
        telemetry = Telemetry(ws.store, None, sample_rate=0, clock=clock, worker="w")
        rows = x.to_numpy()
        for i in range(3):  # probabilities logged for requests 0 and 2 only
            row = rows[i : i + 2]
            proba = clf.predict_proba(row) if i != 1 else None
            telemetry.ok(v1, row, clf.predict(row), proba, 0.001, f"r{i}")
        clock.advance(10)
        assert telemetry.flush() == 1
        record_feedback(
            ws.store,
            "m",
            json.dumps({"request_ids": ["r1", "r2"], "labels": [[0, 1], [1, 1]]}).encode(),
            clock,
        )
        with ws.store.session() as s:
            logged = records.confidences(s, "m", 1, T0 - 1)
            expected = [clf.predict_proba(rows[i : i + 2]).tolist() for i in (0, 2)]
            assert sorted(logged) == sorted(expected)
            assert records.confidences(s, "m", 1, T0) == []  # stamped at T0: not in (T0, …]
            labelled = sorted(
                records.labelled_predictions(s, "m", 1, T0 - 1), key=lambda p: p.labels
            )
            assert [p.labels for p in labelled] == [[0, 1], [1, 1]]
            assert labelled[0].confidence is None
            assert labelled[1].confidence == expected[1]
            assert labelled[1].prediction == clf.predict(rows[2:4]).tolist()
    finally:
        ws.store.dispose()

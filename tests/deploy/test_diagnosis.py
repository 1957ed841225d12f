"""The diagnosis of a failed canary: failed metrics, drifting input features against the
version's training data, failing requests from the sampled request log, and where the canary's
answers differ from the stable version's."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from deploy_testkit import histogram, training_frame

from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.rollout import approve, get_rollout, start_rollout
from shipyard.registry import Registry
from shipyard.stats import DatasetProfile
from shipyard.statuses import RolloutState
from shipyard.store.deploy import Diagnosis
from shipyard.store.serving import ServingWindow
from shipyard.workspace import Workspace


def _request_log(ws: Workspace, version: int, start: float) -> None:
    rows = [
        {"request_id": f"bad-{i}", "ts": start + i, "model": "churn", "version": version,
         "status": 500, "request": "[[9.0, 9.0]]", "response": "ValueError: boom"}
        for i in range(7)
    ] + [{"request_id": "ok-1", "ts": start, "model": "churn", "version": version, "status": 200,
          "request": "[[2.0, 1.0], [-3.0, -3.0]]", "response": "[1, 1]"}]  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    ws.artifacts.put_bytes(
        buf.getvalue(), "application/vnd.apache.parquet",
        {"kind": "serving_request_log", "model": "churn", "version": version,
         "window_start": start, "rows": len(rows)},
    )  # fmt: skip


def test_failed_canary_diagnosis_names_metrics_drifted_inputs_and_failing_requests(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    rng = np.random.default_rng(21)
    first = start_rollout(ws.store, "churn", 1, actor="carol", author="carol", clock=clock)
    approve(ws.store, first.id, actor="alice", clock=clock)
    advance_rollouts(ws, clock)
    rid = start_rollout(ws.store, "churn", 2, actor="dave", author="dave", clock=clock).id
    approve(ws.store, rid, actor="bob", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rid).state == RolloutState.CANARY

    reference = DatasetProfile.from_json(models.get("churn", 2).reference_profile or {})
    x, _ = training_frame(seed=5)
    shifted = x.assign(a=x["a"] + 3.0)  # feature 'a' moved, 'b' did not
    start = clock.time()
    clock.advance(60)
    with ws.store.session() as s:
        for version, req, err, frame in ((2, 300, 60, shifted), (1, 2700, 27, x)):
            s.add(
                ServingWindow(
                    model="churn", version=version, worker="w", window_start=start,
                    window_end=clock.time(), requests=req, errors=err,
                    latency_s=histogram(rng.lognormal(np.log(0.02), 0.4, req)),
                    input_profile=DatasetProfile.from_frame(
                        pd.DataFrame(frame), reference=reference
                    ).to_json(),
                )
            )  # fmt: skip
    _request_log(ws, 2, start)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rid).state == RolloutState.ROLLED_BACK

    with ws.store.session() as s:
        report = s.query(Diagnosis).filter(Diagnosis.rollout_id == rid).one().report
    assert [f["metric"] for f in report["failed_metrics"]] == ["error_rate"]
    assert report["failed_metrics"][0]["n_canary"] == 300
    drift = report["drifting_inputs"]
    assert drift["available"] and drift["against"] == "training data"
    assert drift["drifted_columns"] == ["a"]
    # 'a' put back to its training distribution in the canary's sampled rows, through the
    # canary's model: it accounts for all of the prediction change
    assert report["drift_attribution"]["available"]
    assert [c["column"] for c in report["drift_attribution"]["causes"]] == ["a"]
    assert drift["columns"][0]["explains"] == 1.0 and drift["columns"][0]["robust_effect"] > 1
    examples = report["failing_requests"]
    assert len(examples) == 5 and {e["status"] for e in examples} == {500}
    assert examples[0]["response"] == "ValueError: boom"
    # the stable version re-run on the canary's answered rows: it says 0 where the canary said 1
    replay = report["disagreements"]
    assert replay["available"] and (replay["rows"], replay["disagree"]) == (2, 1)
    assert replay["examples"] == [{"request_id": "ok-1", "row": 1, "canary": 1, "stable": 0}]

"""One bad request followed to the rollback it caused: its request id and W3C traceparent are
found in the model server's JSON log, in the window the server flushed, in the failing canary
verdict and in the rollback's audit event, and ``shipyard trace`` prints them all.

A real model server on loopback serves churn v1 (stable) and v2 (the canary, which raises on a
negative first feature); the flush, the look and the rollback run on the fake clock."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np

from cli_testkit import shipyard
from server_testkit import serving
from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import audit_trail, get_rollout, start_rollout
from shipyard.deploy.tracing import follow
from shipyard.registry import Registry, Signature
from shipyard.serving.server import build_app
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace

POLICY = """
approvals: {start: {count: 0}}
canary:
  interval_s: 60
  steps:
    - {weight_pct: 10, min_duration_s: 600, min_samples: 20}
analysis:
  metrics: [{name: error_rate, threshold: 0.005}]
"""
SIGNATURE = Signature.from_json({"inputs": [{"name": "a"}, {"name": "b"}]})
CALLER_SPAN = "00f067aa0ba902b7"


def doubled(x: np.ndarray) -> np.ndarray:
    return x[:, 0] * 2


def explodes_on_negatives(x: np.ndarray) -> np.ndarray:
    if (x[:, 0] < 0).any():
        raise RuntimeError("negative input blew the model up")
    return x[:, 0] * 2


def _body(a: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [a, 1.0]}]}


def test_a_bad_request_is_followed_from_the_server_log_to_the_rollback_it_caused(
    ws: Workspace, clock: FakeClock, json_log: io.StringIO, tmp_path: Path
) -> None:
    registry = Registry(ws.store, ws.artifacts, clock, "carol")
    for model in (doubled, explodes_on_negatives):
        registry.register("churn", model, flavor="python", signature=SIGNATURE)
    set_policy(ws.store, "churn", POLICY, actor="admin", clock=clock)
    start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
    advance_rollouts(ws, clock)
    rollout = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock).id
    clock.advance(1)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rollout).state == RolloutState.CANARY

    app = build_app(ws, flush_interval_s=3600, refresh_interval_s=0.2, sample_rate=0)
    bad: dict[str, str] = {}  # request id → trace id
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=10) as c:
        for version in (1, 2):
            for i in range(40):
                r = c.post(f"/v2/models/churn/versions/{version}/infer", json=_body(1.0 + i))
                assert r.status_code == 200, r.text
                assert r.headers["traceresponse"].startswith("00-")
        for i in range(20):
            rid, trace_id = f"bad-{i}", f"{i + 1:032x}"
            r = c.post(
                "/v2/models/churn/versions/2/infer",
                json=_body(-1.0),
                headers={"x-request-id": rid, "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"},
            )
            assert r.status_code == 500
            _, echoed, span, flags = r.headers["traceresponse"].split("-")
            assert (echoed, flags) == (trace_id, "01") and span != CALLER_SPAN
            bad[rid] = trace_id
        clock.advance(30)
        assert app.telemetry.flush() == 2
    clock.advance(31)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rollout).state == RolloutState.ROLLED_BACK

    rid, trace_id = "bad-3", bad["bad-3"]
    # the server log: a JSON line naming the request, its trace, the caller's span, the version
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    (failed,) = [d for d in lines if d.get("request_id") == rid]
    assert failed["trace_id"] == trace_id and failed["parent_id"] == CALLER_SPAN
    assert (failed["model"], failed["version"], failed["status"]) == ("churn", 2, 500)
    assert failed["level"] == "warning" and "negative input" in failed["message"]
    # the daemon's line about the rollback names the rollout and the traces
    (rolled,) = [d for d in lines if d.get("rollout_id") == rollout]
    assert trace_id in rolled["trace_ids"]

    report = follow(ws.store, f"00-{trace_id}-{CALLER_SPAN}-01")
    # the flushed window: the request, with its trace, written with the canary's window
    (call,) = report.requests
    assert (call.request_id, call.parent_id, call.status) == (rid, CALLER_SPAN, 500)
    assert call.span_id == failed["span_id"]
    (window,) = report.windows
    assert (window.model, window.version, window.errors, window.requests) == ("churn", 2, 20, 60)
    # the failing verdict and the rollback's audit event name the trace
    (verdict,) = report.verdicts
    assert (verdict.rollout_id, verdict.outcome) == (rollout, "fail")
    assert verdict.failed_metrics == ["error_rate"]
    (event,) = report.events
    assert event.action == "rollout.rolled_back" and trace_id in event.details["trace_ids"]
    assert set(event.details["trace_ids"]) == set(bad.values())  # failed requests first
    assert [e.action for e in audit_trail(ws.store, rollout)][-1] == "rollout.rolled_back"

    if ws.store.dialect == "sqlite":  # the command, as a user runs it (once is enough)
        log_file = tmp_path / "serve.log"
        log_file.write_text(json_log.getvalue(), encoding="utf-8")
        env = {"SHIPYARD_HOME": str(ws.settings.home), "SHIPYARD_DB_URL": ws.store.url}
        done = shipyard("trace", trace_id, "--log", str(log_file), env=env)
        assert done.returncode == 0, done.stderr
        out = " ".join(done.stdout.split())
        for expected in (f"request {rid} → churn v2: 500", f"flushed in window {window.id}",
                         f"canary verdict of rollout {rollout}", "rollout.rolled_back",
                         "negative input"):  # fmt: skip
            assert expected in out, done.stdout
        missing = shipyard("trace", "f" * 32, env=env)
        assert missing.returncode == 1 and "no trace named" in missing.stderr
        malformed = shipyard("trace", "not-a-trace", env=env)
        assert malformed.returncode != 0 and "not a trace id" in malformed.stderr

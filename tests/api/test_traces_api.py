"""Control-plane requests in a W3C trace, over a real socket on SQLite and PostgreSQL: every
answer names its request id and trace, the server's log lines about a request carry them with
who asked, an approval and a rollback sent in a trace carry it into their audit events (and the
chain still verifies), and ``GET /traces/{id}`` and ``shipyard trace`` (through the server and
on the database) find those events."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import pytest
from apikit import Plane
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.deploy.loop import advance_rollouts
from shipyard.registry import Registry, Signature

runner = CliRunner()
NO_CANARY = "approvals: {start: {count: 1}}\ncanary: {steps: []}\n"
SIGNATURE = Signature.from_json({"inputs": [{"name": "a"}, {"name": "b"}]})
CALLER_SPAN = "00f067aa0ba902b7"
APPROVE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROLLBACK_TRACE = "0af7651916cd43dd8448eb211c80319c"


def doubled(x: np.ndarray) -> np.ndarray:
    return x[:, 0] * 2


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{CALLER_SPAN}-01"


def logged(json_log: io.StringIO, *request_ids: str, timeout_s: float = 10.0) -> dict[Any, Any]:
    """The server's JSON lines by request id, once every one of ``request_ids`` has its line:
    the server writes a request's line after it has answered, so the client can read the log
    before the line is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = {d.get("request_id"): d for d in map(json.loads, json_log.getvalue().splitlines())}
        if all(r in lines for r in request_ids) or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def sqlite_only(plane: Plane) -> None:
    """What does not depend on the backend runs once, to keep the added tests in budget."""
    if plane.ws.store.dialect != "sqlite":
        pytest.skip("backend-independent: checked on SQLite")


def audit_of(plane: Plane, action: str, who: str = "vic") -> dict[str, Any]:
    with plane.http(who) as api:
        found = api.get("/audit/events", params={"action": action, "limit": 1}).json()
    return dict(found["items"][0])


def test_an_approval_and_a_rollback_sent_in_a_trace_carry_it_to_the_audit_and_the_log(
    plane: Plane, json_log: io.StringIO
) -> None:
    registry = Registry(plane.ws.store, plane.ws.artifacts, plane.clock, "carol")
    model = f"traced-{plane.ws.store.dialect}"
    for _ in range(2):
        registry.register(model, doubled, flavor="python", signature=SIGNATURE)
    with plane.http("bob") as api:
        assert api.put(f"/models/{model}/policy", json={"text": NO_CANARY}).status_code == 200
        first = api.post("/rollouts", json={"model": model, "version": 1})
    assert first.status_code == 200, first.text
    assert "trace_id" not in audit_of(plane, "rollout.start")["details"]  # named no ids

    with plane.http("alice") as api:
        approved = api.post(
            f"/rollouts/{first.json()['id']}/approve",
            json={},
            headers={"traceparent": traceparent(APPROVE_TRACE), "x-request-id": "ci-approve-7"},
        )
    assert approved.status_code == 200, approved.text
    _, echoed, span, flags = approved.headers["traceresponse"].split("-")
    assert (echoed, flags) == (APPROVE_TRACE, "01") and span != CALLER_SPAN
    assert approved.headers["x-request-id"] == "ci-approve-7"
    event = audit_of(plane, "rollout.approve.start")
    assert (event["actor"], event["mode"]) == ("alice", "server")
    assert event["details"]["trace_id"] == APPROVE_TRACE
    assert event["details"]["request_id"] == "ci-approve-7"

    advance_rollouts(plane.ws, plane.clock)
    plane.clock.advance(1)
    with plane.http("bob") as api:
        assert api.post("/rollouts", json={"model": model, "version": 2}).status_code == 200
        back = api.post(
            f"/models/{model}/rollback",
            json={"reason": "drill"},
            headers={"traceparent": traceparent(ROLLBACK_TRACE)},
        )
        assert back.status_code == 200, back.text
        malformed = api.get(f"/models/{model}/policy", headers={"traceparent": "00-XYZ-01"})
        verified = api.get("/audit/verify").json()
    rolled = audit_of(plane, "model.rollback")
    assert (rolled["actor"], rolled["details"]["trace_id"]) == ("bob", ROLLBACK_TRACE)
    assert rolled["details"]["request_id"] == back.headers["x-request-id"]  # a new one
    assert "drill" in rolled["details"]["why"]  # the event's own details are kept
    assert verified["ok"] is True, verified  # the ids are hashed with the event
    # a malformed traceparent is never an error: a new trace, named by the new request id
    assert malformed.status_code == 200
    assert malformed.headers["traceresponse"].split("-")[1] == malformed.headers["x-request-id"]

    # the server's lines about the approval: its ids, the caller's span, who asked
    logged(json_log, "ci-approve-7")
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    (line,) = [d for d in lines if d.get("request_id") == "ci-approve-7"]
    assert (line["trace_id"], line["parent_id"], line["span_id"]) == (
        APPROVE_TRACE,
        CALLER_SPAN,
        span,
    )
    assert (line["identity"], line["status"], line["method"]) == ("alice", 200, "POST")
    assert line["level"] == "info" and line["logger"] == "shipyard.server"

    with plane.http("vic") as api:
        report = api.get(f"/traces/{traceparent(APPROVE_TRACE)}").json()
        nothing = api.get(f"/traces/{'e' * 32}").json()
        bad = api.get("/traces/not-a-trace")
    assert report["found"] is True and report["trace_id"] == APPROVE_TRACE
    assert [(e["action"], e["actor"]) for e in report["events"]] == [
        ("rollout.approve.start", "alice"),
        ("rollout.staging", "alice"),  # what the approval caused, in the same request
    ]
    assert nothing["found"] is False and nothing["events"] == []
    assert bad.status_code == 400 and "not a trace id" in bad.json()["error"]


def test_a_trace_is_read_as_other_reads_are(plane: Plane, json_log: io.StringIO) -> None:
    sqlite_only(plane)
    with plane.http("nobody") as api:
        refused = api.get(f"/traces/{APPROVE_TRACE}", headers={"x-request-id": "nosy-1"})
    assert refused.status_code == 403 and refused.headers["x-request-id"] == "nosy-1"
    with plane.http() as api:
        anonymous = api.get(f"/traces/{APPROVE_TRACE}", headers={"x-request-id": "anon-1"})
    assert anonymous.status_code == 401 and anonymous.headers["traceresponse"].startswith("00-")
    lines = logged(json_log, "nosy-1", "anon-1")
    assert (lines["nosy-1"]["level"], lines["nosy-1"]["identity"]) == ("warning", "nobody")
    assert lines["anon-1"]["status"] == 401 and "identity" not in lines["anon-1"]
    with plane.http("vic") as api:
        spec = api.get("/openapi.json").json()
    operation = spec["paths"]["/api/v1/traces/{trace_id}"]["get"]
    assert operation["operationId"] == "traces.show" and "403" in operation["responses"]


def test_shipyard_trace_asks_the_server_or_reads_the_database(plane: Plane) -> None:
    """Run after the approval above (the module's plane): both ways print the same event."""
    through_server = runner.invoke(
        app, ["trace", APPROVE_TRACE], env={**plane.env("vic"), "COLUMNS": "200"}
    )
    embedded_env = {
        "SHIPYARD_URL": "",
        "SHIPYARD_HOME": str(plane.ws.settings.home),
        "SHIPYARD_DB_URL": plane.ws.store.url,
        "COLUMNS": "200",
    }
    on_database = runner.invoke(app, ["trace", APPROVE_TRACE], env=embedded_env)
    for done in (through_server, on_database):
        assert done.exit_code == 0, done.output
        out = " ".join(done.output.split())
        assert "rollout.approve.start of rollout" in out, out
        assert "by alice (request ci-approve-7)" in out, out
    as_json = runner.invoke(app, ["trace", ROLLBACK_TRACE, "--json"], env=plane.env("vic"))
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert [e["action"] for e in report["events"]] == ["rollout.rolled_back", "model.rollback"]
    missing = runner.invoke(app, ["trace", "d" * 32], env=plane.env("vic"))
    assert missing.exit_code == 1 and "no trace named" in missing.output


def test_a_command_run_in_a_trace_sends_it(plane: Plane) -> None:
    """TRACEPARENT in a command's environment (a CI job's trace) reaches the server's audit."""
    sqlite_only(plane)
    ci_trace = "5" * 32
    env = {**plane.env("admin"), "TRACEPARENT": traceparent(ci_trace)}
    done = runner.invoke(app, ["roles", "bind", "carol", "viewer"], env=env)
    assert done.exit_code == 0, done.output
    bound_event = audit_of(plane, "role.bind")
    assert bound_event["details"]["trace_id"] == ci_trace
    env["TRACEPARENT"] = "00-not-a-traceparent-01"  # not sent: the request names no ids
    done = runner.invoke(app, ["roles", "bind", "carol", "approver"], env=env)
    assert done.exit_code == 0, done.output
    assert "trace_id" not in audit_of(plane, "role.bind")["details"]

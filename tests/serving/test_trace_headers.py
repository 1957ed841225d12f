"""W3C Trace Context on the model server: a valid ``traceparent`` is continued (and the request's
trace kept with its window), a malformed one starts a new trace and is never an error, and every
answer names the server's span in ``traceresponse``."""

from __future__ import annotations

from serving.conftest import Running
from shipyard.observability.tracecontext import parse
from shipyard.serving import records

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
ROW = {"instances": [[0.1, 0.2, 0.3]]}


def test_a_valid_traceparent_is_continued_and_kept_with_the_window(served: Running) -> None:
    with served.client() as c:
        r = c.post(
            "/models/iris/invocations",
            json=ROW,
            headers={"traceparent": f"00-{TRACE}-{SPAN}-01", "x-request-id": "q-traced"},
        )
        untraced = c.post("/models/iris/invocations", json=ROW)
    assert r.status_code == 200 and untraced.status_code == 200
    ours = parse(r.headers["traceresponse"])
    assert ours is not None and ours.trace_id == TRACE and ours.span_id != SPAN and ours.sampled
    served.app.telemetry.flush()
    with served.ws.store.session() as s:
        (call,) = records.trace_calls(s, TRACE)
        assert records.window_of(s, call) is not None
        # an answered request the caller did not trace is not kept (its trace is only echoed)
        assert records.trace_calls(s, untraced.headers["x-request-id"]) == []
    assert (call.request_id, call.parent_id, call.span_id) == ("q-traced", SPAN, ours.span_id)
    assert (call.model, call.status) == ("iris", 200)


def test_a_malformed_traceparent_starts_a_new_trace_and_is_no_error(served: Running) -> None:
    with served.client() as c:
        for header in ("garbage", f"00-{TRACE.upper()}-{SPAN}-01", f"00-{'0' * 32}-{SPAN}-01"):
            r = c.post("/models/iris/invocations", json=ROW, headers={"traceparent": header})
            assert r.status_code == 200, (header, r.text)
            ours = parse(r.headers["traceresponse"])
            assert ours is not None and ours.trace_id != TRACE.lower()
            # no request id given: the new trace's id is the new request id
            assert ours.trace_id == r.headers["x-request-id"]


def test_a_failed_request_keeps_its_trace_even_without_a_traceparent(served: Running) -> None:
    with served.client() as c:
        r = c.post("/models/boom/invocations", json={"instances": [[-1.0, 0.0, 0.0]]})
        probe = c.get("/v2/health/live")
    assert r.status_code == 500 and probe.status_code == 200
    assert parse(probe.headers["traceresponse"]) is not None  # every answer names its span
    trace_id = parse(r.headers["traceresponse"]).trace_id  # type: ignore[union-attr]
    served.app.telemetry.flush()
    with served.ws.store.session() as s:
        (call,) = records.trace_calls(s, trace_id)
    assert (call.model, call.status, call.parent_id) == ("boom", 500, None)

"""``/traces``: one W3C trace followed from a request to what it caused."""

from __future__ import annotations

from typing import Any

from shipyard.api.operations import Context, operation
from shipyard.identity import READ


@operation("GET", "/traces/{trace_id}", name="traces.show")
def show_trace(ctx: Context, *, trace_id: str) -> dict[str, Any]:
    """Everything on record that names a trace: requests, windows, verdicts, audit events.

    `trace_id` is the 32 hex digits of a W3C trace id, or a whole `traceparent` or
    `traceresponse` value. The answer lists the model servers' requests in the trace (kept for
    refused or failed requests and for requests sent with a `traceparent`), the windows they
    were flushed with, the canary verdicts that named the trace, and the audit events that
    carry it (a rollback it caused; a decision made by a control-plane request sent in it),
    oldest first. `found` is false when nothing names it; that is an answer, not a 404, since a
    log file or a collector may still hold the trace."""
    from shipyard.deploy.tracing import follow, trace_id_of

    ctx.require(READ)
    report = follow(ctx.ws.store, trace_id_of(trace_id))
    return {**report.to_json(), "found": report.found}

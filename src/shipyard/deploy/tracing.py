"""Following one W3C trace from a request to the rollback it caused.

A model server keeps the trace of every refused or failed request, and of every request whose
caller sent a ``traceparent``, with the window it flushes (:mod:`shipyard.serving.records`). A
failing canary look names the traces of the canary's failed and slowest requests in its verdict
and in the rollback's audit event (:class:`ServingTraces`, the engine's ``traces`` seam).
:func:`follow` reads them back for one trace id: the requests, their windows, the verdicts and
the audit events that name it, oldest first (``shipyard trace TRACE_ID``). An audit event names
a trace by the rollback's ``trace_ids`` or by the ``trace_id`` of the control-plane request that
recorded it (:mod:`shipyard.api.correlation`); the latter are found by a scan of the events'
details for the id's text, checked exactly after, which a lookup by hand can afford.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import String, cast, select

from shipyard.audit.events import Event
from shipyard.errors import InvalidInput
from shipyard.serving import records as serving_records
from shipyard.store import Store
from shipyard.store.deploy import RolloutRecord, RolloutVerdict
from shipyard.store.tables import AuditEvent

MAX_TRACES_PER_VERDICT = 20
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(frozen=True)
class ServingTraces:
    """The engine's ``traces`` seam: the canary's failed, then slowest, traced requests."""

    store: Store
    limit: int = MAX_TRACES_PER_VERDICT

    def __call__(self, model: str, version: int, start: float, end: float) -> list[str]:
        with self.store.session(readonly=True) as s:
            calls = serving_records.worst_traces(s, model, version, start, end, self.limit)
        return list(dict.fromkeys(c.trace_id for c in calls))


@dataclass(frozen=True)
class TracedVerdict:
    """A canary look that named the trace."""

    rollout_id: str
    model: str
    version: int
    step_index: int
    look: int
    outcome: str
    window_start: float
    window_end: float
    ts: float
    failed_metrics: list[str]


@dataclass(frozen=True)
class TraceReport:
    """Everything on record that names one trace."""

    trace_id: str
    requests: list[serving_records.TracedCall] = field(default_factory=list)
    windows: list[serving_records.FlushedWindow] = field(default_factory=list)
    verdicts: list[TracedVerdict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.requests or self.verdicts or self.events)

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "requests": [asdict(c) for c in self.requests],
            "windows": [
                {
                    "id": w.id,
                    "model": w.model,
                    "version": w.version,
                    "worker": w.worker,
                    "window_start": w.window_start,
                    "window_end": w.window_end,
                    "requests": w.requests,
                    "errors": w.errors,
                    "data_errors": w.data_errors,
                }
                for w in self.windows
            ],
            "verdicts": [asdict(v) for v in self.verdicts],
            "events": [e.to_dict() for e in self.events],
        }


def trace_id_of(text: str) -> str:
    """The trace id in ``text``: 32 hex digits, or a whole ``traceparent`` value."""
    value = text.strip().lower()
    if _TRACE_ID.fullmatch(value):
        return value
    if found := _TRACEPARENT.fullmatch(value):
        return found.group(1)
    raise InvalidInput(
        f"{text[:80]!r} is not a trace id: give the 32 hex digits of a W3C trace id "
        "(the second field of a traceparent or traceresponse header), or the whole header"
    )


def follow(store: Store, trace_id: str) -> TraceReport:
    """The requests, windows, canary verdicts and audit events that name ``trace_id``."""
    trace_id = trace_id_of(trace_id)
    with store.session(readonly=True) as s:
        calls = serving_records.trace_calls(s, trace_id)
        windows: dict[int, serving_records.FlushedWindow] = {}
        for call in calls:
            window = serving_records.window_of(s, call)
            if window is not None:
                windows.setdefault(window.id, window)
        rows = s.execute(
            select(RolloutVerdict, RolloutRecord)
            .join(RolloutRecord, RolloutRecord.id == RolloutVerdict.rollout_id)
            .where(RolloutVerdict.trace_ids.is_not(None))
            .order_by(RolloutVerdict.ts, RolloutVerdict.id)
        ).all()
        verdicts = [_verdict(v, r) for v, r in rows if trace_id in (v.trace_ids or [])]
        rollouts = sorted({v.rollout_id for v in verdicts})
        named = s.scalars(
            select(AuditEvent).where(
                AuditEvent.subject_kind == "rollout", AuditEvent.subject_id.in_(rollouts)
            )
        ).all()
        carried = s.scalars(
            select(AuditEvent).where(cast(AuditEvent.detail, String).contains(trace_id))
        ).all()
        by_id = {e.id: e for e in [*named, *carried] if _names(e.detail or {}, trace_id)}
        events = [Event.of(by_id[i]) for i in sorted(by_id)]
    return TraceReport(trace_id, calls, list(windows.values()), verdicts, events)


def _names(detail: dict[str, Any], trace_id: str) -> bool:
    return detail.get("trace_id") == trace_id or trace_id in (detail.get("trace_ids") or [])


def _verdict(v: RolloutVerdict, r: RolloutRecord) -> TracedVerdict:
    return TracedVerdict(
        rollout_id=v.rollout_id,
        model=r.model,
        version=r.version,
        step_index=v.step_index,
        look=v.look,
        outcome=v.outcome,
        window_start=v.window_start,
        window_end=v.window_end,
        ts=v.ts,
        failed_metrics=[m["metric"] for m in v.metrics or [] if m.get("outcome") == "fail"],
    )

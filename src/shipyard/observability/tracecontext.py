"""W3C Trace Context: the ``traceparent`` header, read, validated and continued.

A request that arrives with a valid ``traceparent`` joins the caller's trace: its trace id is
kept and this process's span gets a new parent id. A missing or malformed header is never an
error: a new trace is started, as the specification asks of a participant that cannot parse
the header (§3.2.2: "the vendor creates a new traceparent header").

The format (W3C Trace Context, Recommendation 2021-11-23, §3.2,
https://www.w3.org/TR/trace-context/#traceparent-header)::

    traceparent = version "-" trace-id "-" parent-id "-" trace-flags
    version     = 2HEXDIGLC        ; "ff" is forbidden
    trace-id    = 32HEXDIGLC       ; not all zeros
    parent-id   = 16HEXDIGLC       ; not all zeros
    trace-flags = 2HEXDIGLC        ; bit 0: sampled

Only lowercase hex is valid. Version ``00`` is exactly 55 characters; a later version may be
longer, and is read as version 00 when its 56th character is ``-`` (§3.2.4, "Versioning of
traceparent"). Of the flags, only ``sampled`` is defined; unknown bits are not propagated
(§3.2.2.5).

>>> tp = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
>>> tp.trace_id, tp.sampled
('4bf92f3577b34da6a3ce929d0e0e4736', True)
>>> parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") is None
True
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["TRACEPARENT", "TRACERESPONSE", "TraceParent", "continue_trace", "parse"]

TRACEPARENT = "traceparent"
TRACERESPONSE = "traceresponse"
"""The answer's header naming the server's span (Trace Context Level 2, §4, "traceresponse")."""

SAMPLED = 0x01
_LENGTH_V00 = 55
_FORMAT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One span's place in a trace: ``trace_id`` (32 hex), ``span_id`` (16 hex), ``flags``."""

    trace_id: str
    span_id: str
    flags: int = 0

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def header(self) -> str:
        """The version-00 header value naming this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @classmethod
    def new(cls, trace_id: str | None = None, flags: int = 0) -> TraceParent:
        """A new span: in ``trace_id`` if given (32 lowercase hex), else in a new trace."""
        return cls(trace_id or os.urandom(16).hex(), _span_id(), flags & SAMPLED)

    def child(self) -> TraceParent:
        """A new span of the same trace, with the same sampled flag."""
        return TraceParent(self.trace_id, _span_id(), self.flags & SAMPLED)


def _span_id() -> str:
    span = os.urandom(8).hex()
    return span if span != _ZERO_SPAN else "0000000000000001"


def parse(value: str | bytes | None) -> TraceParent | None:
    """The caller's span named by a ``traceparent`` value, or None when it is absent or not
    valid under the specification (see the module doc)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip(" \t")  # optional whitespace around a header value (RFC 9110 §5.5)
    if len(text) < _LENGTH_V00:
        return None
    found = _FORMAT.match(text)
    if found is None:
        return None
    version, trace_id, span_id, flags = found.groups()
    if version == "ff":
        return None
    if version == "00" and len(text) != _LENGTH_V00:
        return None
    if len(text) > _LENGTH_V00 and text[_LENGTH_V00] != "-":
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def continue_trace(
    value: str | bytes | None, fresh_trace_id: str | None = None
) -> tuple[TraceParent, TraceParent | None]:
    """(this process's span, the caller's span or None): the caller's trace continued when the
    header is valid, else a new trace (with ``fresh_trace_id`` when the caller of this function
    already holds 32 random lowercase hex digits, such as a new request id)."""
    caller = parse(value)
    if caller is not None:
        return caller.child(), caller
    return TraceParent.new(fresh_trace_id), None

"""How Shipyard's processes say what they do, in a form other tools follow.

:mod:`~shipyard.observability.logs` (JSON lines with correlation fields, one setup for every
face), :mod:`~shipyard.observability.tracecontext` (W3C ``traceparent``) and
:mod:`~shipyard.observability.otlp` (OpenTelemetry export, the ``otel`` extra).
"""

from __future__ import annotations

from shipyard.observability.logs import FORMAT_ENV, LOG_FORMATS, bound, configure
from shipyard.observability.tracecontext import TraceParent, continue_trace

__all__ = ["FORMAT_ENV", "LOG_FORMATS", "TraceParent", "bound", "configure", "continue_trace"]

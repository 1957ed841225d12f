"""OpenTelemetry export of the logs, for users who run a collector (the ``otel`` extra).

:func:`otlp_handler` adds a :class:`logging.Handler` that turns each record into an OTLP log
record — body the message, severity from the level, attributes the correlation fields of
:mod:`shipyard.observability.logs` — and sends them in batches over OTLP/HTTP (protobuf) with the
OpenTelemetry SDK's exporter. A record that names a ``trace_id`` (and ``span_id``) is exported
in that trace, so a collector's backend links the server's line about a bad request, the
daemon's line about the canary verdict and the rollback to one trace.

It is on when the user names a collector, with the OpenTelemetry variables the SDK reads
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, e.g.
``http://127.0.0.1:4318``) or ``endpoint=``; naming one without the extra installed is a
:class:`~shipyard.errors.ConfigError` that says what to install.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from shipyard.errors import ConfigError
from shipyard.observability.logs import fields_of

__all__ = ["ENDPOINT_ENVS", "OtlpHandler", "collector_endpoint", "otlp_handler"]

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE_NAME = "shipyard"
_SEVERITY = {  # OpenTelemetry log data model, "Mapping of SeverityNumber" (TRACE=1 … FATAL=21)
    logging.DEBUG: 5,
    logging.INFO: 9,
    logging.WARNING: 13,
    logging.ERROR: 17,
    logging.CRITICAL: 21,
}


def collector_endpoint(endpoint: str | None = None) -> str | None:
    """The logs endpoint (``…/v1/logs``) named by ``endpoint`` or the environment, or None."""
    if endpoint:
        return endpoint.rstrip("/") + ("" if endpoint.endswith("/v1/logs") else "/v1/logs")
    if found := os.environ.get(ENDPOINT_ENVS[0]):
        return found
    if found := os.environ.get(ENDPOINT_ENVS[1]):
        return found.rstrip("/") + "/v1/logs"
    return None


class OtlpHandler(logging.Handler):
    """Records → OTLP log records, batched by the SDK's processor (never on the caller's time)."""

    def __init__(self, endpoint: str, service: str = SERVICE_NAME, timeout_s: float = 5.0) -> None:
        super().__init__()
        try:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.resources import Resource
        except ImportError:
            raise ConfigError(
                f"an OpenTelemetry collector is named ({endpoint}) but the exporter is not "
                "installed: pip install 'shipyard[otel]' (or unset "
                f"{' and '.join(ENDPOINT_ENVS)})"
            ) from None
        self.endpoint = endpoint
        self.provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, timeout=timeout_s))
        )
        self._logger = self.provider.get_logger("shipyard")

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("opentelemetry", "urllib3", "requests")):
            return  # the exporter's own lines would feed back into it
        try:
            fields = fields_of(record)
            attributes: dict[str, Any] = {
                "logger": record.name,
                **{k: _attribute(v) for k, v in fields.items() if v is not None},
            }
            self._logger.emit(
                timestamp=int(record.created * 1e9),
                context=_context(fields.get("trace_id"), fields.get("span_id")),
                severity_number=_severity(record.levelno),
                severity_text=record.levelname,
                body=record.getMessage(),
                attributes=attributes,
            )
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.provider.force_flush()

    def close(self) -> None:
        self.provider.shutdown()
        super().close()


def _attribute(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    return str(value)


def _severity(levelno: int) -> Any:
    from opentelemetry._logs import SeverityNumber

    exact = _SEVERITY.get(levelno)
    if exact is None:
        exact = max((n for lv, n in _SEVERITY.items() if lv <= levelno), default=1)
    return SeverityNumber(exact)


def _context(trace_id: Any, span_id: Any) -> Any:
    """An OpenTelemetry context whose current span is the record's (remote) span, or None."""
    if not isinstance(trace_id, str) or len(trace_id) != 32:
        return None
    from opentelemetry import trace

    try:
        span = int(span_id, 16) if isinstance(span_id, str) and len(span_id) == 16 else 1
        ctx = trace.SpanContext(
            int(trace_id, 16), span, is_remote=True, trace_flags=trace.TraceFlags(1)
        )
    except ValueError:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


def otlp_handler(endpoint: str | None = None) -> OtlpHandler | None:
    """Add an :class:`OtlpHandler` to the root logger when a collector is named; None if not."""
    url = collector_endpoint(endpoint)
    if url is None:
        return None
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, OtlpHandler)]:
        root.removeHandler(old)
        old.close()
    handler = OtlpHandler(url)
    root.addHandler(handler)
    return handler

"""Log lines exported over OTLP/HTTP reach a collector: here a real HTTP receiver on a socket
that decodes each export with the OpenTelemetry protocol's own protobuf messages, as a
collector's ``otlphttp`` receiver does. Skipped only when the ``otel`` extra is not installed."""

from __future__ import annotations

import gzip
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shipyard.errors import ConfigError

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra")

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from shipyard.observability.otlp import OtlpHandler, collector_endpoint, otlp_handler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP logs receiver: ``POST /v1/logs`` of an ``ExportLogsServiceRequest``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.exports: list[ExportLogsServiceRequest] = []
        self.paths: list[str] = []
        self.got = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def records(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, log record) of every record received."""
        out = []
        for export in self.exports:
            for rl in export.resource_logs:
                resource = {a.key: a.value.string_value for a in rl.resource.attributes}
                out += [(resource, r) for sl in rl.scope_logs for r in sl.log_records]
        return out


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.headers["Content-Type"] == "application/x-protobuf"
        export = ExportLogsServiceRequest()
        export.ParseFromString(body)
        self.server.paths.append(self.path)
        self.server.exports.append(export)
        self.server.got.set()
        answer = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _attributes(record: Any) -> dict[str, Any]:
    out = {}
    for a in record.attributes:
        v = a.value
        out[a.key] = v.int_value if v.HasField("int_value") else v.string_value
    return out


def test_a_line_reaches_the_collector_in_its_trace_with_its_fields(collector: Collector) -> None:
    handler = OtlpHandler(collector_endpoint(collector.url) or "")
    log = logging.getLogger("shipyard.test.otlp")
    log.addHandler(handler)
    try:
        extra = {"request_id": "q1", "trace_id": TRACE, "span_id": SPAN, "model": "churn",
                 "version": 2}  # fmt: skip
        log.warning("failed: boom", extra=extra)
        handler.flush()
    finally:
        log.removeHandler(handler)
        handler.close()
    assert collector.got.wait(10)
    assert collector.paths == ["/v1/logs"]
    ((resource, record),) = collector.records()
    assert resource["service.name"] == "shipyard"
    assert record.body.string_value == "failed: boom"
    assert record.severity_text == "WARNING" and record.severity_number == 13  # WARN
    assert record.trace_id == bytes.fromhex(TRACE) and record.span_id == bytes.fromhex(SPAN)
    attributes = _attributes(record)
    assert attributes["request_id"] == "q1" and attributes["model"] == "churn"
    assert attributes["version"] == 2 and attributes["logger"] == "shipyard.test.otlp"


def test_a_line_without_a_trace_is_exported_without_one(collector: Collector) -> None:
    handler = OtlpHandler(collector_endpoint(collector.url) or "")
    log = logging.getLogger("shipyard.test.otlp.plain")
    log.addHandler(handler)
    try:
        log.error("daemon task failed", extra={"task": "deploy"})
        handler.flush()
    finally:
        log.removeHandler(handler)
        handler.close()
    assert collector.got.wait(10)
    ((_, record),) = collector.records()
    assert record.trace_id == b"" and _attributes(record)["task"] == "deploy"


def test_the_collector_is_named_by_the_opentelemetry_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert collector_endpoint() is None and otlp_handler() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert collector_endpoint() == "http://collector:4318/v1/logs"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/custom")
    assert collector_endpoint() == "http://logs:4318/custom"  # the signal's own, as given


def test_a_collector_named_without_the_exporter_installed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http._log_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'shipyard\[otel\]'"):
        OtlpHandler("http://127.0.0.1:4318/v1/logs")

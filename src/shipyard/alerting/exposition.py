"""``/metrics``: every series' newest point from the store, in Prometheus' text format.

Each family gets its type and help from the metric catalogue (:mod:`shipyard.metrics`):
counters as counters, the serving monitors' latency quantiles as a summary, the rest as gauges,
so ``promtool check metrics`` accepts the page; a series under a name of the user's own is
exposed untyped. The text is produced by ``prometheus_client`` (a custom collector over the
store), so escaping and format follow its implementation. Points are exposed without
timestamps: Prometheus stamps them at scrape time (an old explicit timestamp would be rejected
as out of bounds). Alerts are exposed as ``ALERTS{alertname, alertstate, …}`` like Prometheus
does.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shipyard.errors import ShipyardError
from shipyard.metrics import spec
from shipyard.statuses import AlertState
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord
from shipyard.store.tables import MetricPoint

log = logging.getLogger("shipyard.alerting")

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def latest_points(store: Store) -> list[tuple[str, dict[str, Any], float]]:
    """(name, labels, value) of the newest point of every series."""
    with store.session() as session:
        newest = (
            select(
                MetricPoint.name,
                MetricPoint.labels_key,
                func.max(MetricPoint.id).label("id"),
            )
            .group_by(MetricPoint.name, MetricPoint.labels_key)
            .subquery()
        )
        rows = session.execute(
            select(MetricPoint.name, MetricPoint.labels, MetricPoint.value).join(
                newest, MetricPoint.id == newest.c.id
            )
        )
        return [(name, dict(labels or {}), value) for name, labels, value in rows]


def _family(name: str) -> Metric:
    """An empty family for ``name``, typed and described as the catalogue says."""
    known = spec(name)
    if known is None:
        return Metric(name, f"Shipyard series {name}", "untyped")
    # prometheus-client names a counter family without its _total; its samples keep it
    family_name = name.removesuffix("_total") if known.type == "counter" else name
    return Metric(family_name, known.help, known.type)


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, labels, value in latest_points(self.store):
            if not _NAME.match(name):
                continue
            family = families.get(name)
            if family is None:
                family = families[name] = _family(name)
            clean = {k: str(v) for k, v in labels.items() if _LABEL.match(k)}
            family.add_sample(name, clean, value)
        alerts = _family("ALERTS")
        with self.store.session() as session:
            for record in session.scalars(
                select(AlertRecord).where(
                    AlertRecord.state.in_((AlertState.PENDING, AlertState.FIRING))
                )
            ):
                labels = {k: str(v) for k, v in record.labels.items() if _LABEL.match(k)}
                alerts.add_sample("ALERTS", {**labels, "alertstate": record.state}, 1.0)
        yield from families.values()
        yield alerts


def render(store: Store) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)


class MetricsServer:
    """A tiny HTTP server (stdlib, in a thread) answering ``GET /metrics``."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics lives here")
                    return
                try:
                    body = render(outer.store)
                except ShipyardError as exc:  # a busy or damaged store: its class's status
                    self._refuse(exc.http_status, f"cannot read the store: {exc}", exc)
                    return
                except Exception as exc:  # a scrape must never kill the daemon
                    log.exception("/metrics could not be rendered")
                    self._refuse(500, f"cannot read the store: {type(exc).__name__}", exc)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # the scraper gave up (its scrape timeout) before the body was sent
                    log.info("a /metrics client hung up before its answer was sent")

            def _refuse(self, status: int, message: str, exc: Exception) -> None:
                """One JSON error body; a 503 says when to scrape again (``Retry-After``)."""
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    retry_after_s = float(getattr(exc, "retry_after_s", 1.0))
                    self.send_header("Retry-After", str(max(1, math.ceil(retry_after_s))))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.store = store
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

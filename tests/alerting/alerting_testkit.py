"""What the alerting tests share: metric points in a real store, and a real HTTP receiver.

A module of its own (not conftest) so that its name is unique across the test tree.

:class:`CollectingReceiver` is a stdlib HTTP server on 127.0.0.1 that records every request and
answers from a script: ``[500, 500, 500]`` then 200; ``"hang"`` holds the connection open;
``"trickle"`` answers one header byte every 0.2 s for 10 s (no single read ever times out);
:meth:`CollectingReceiver.stop` takes it down (connections refused) and ``start`` brings it
back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shipyard.store import Store
from shipyard.store.tables import MetricPoint


def write_point(store: Store, name: str, labels: dict[str, Any], ts: float, value: float) -> None:
    with store.session() as session:
        session.add(MetricPoint.of(name, labels, ts, value))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float


class CollectingReceiver:
    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.release = threading.Event()
        self.arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def start(self) -> CollectingReceiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    answer = outer.script.pop(0) if outer.script else 200
                if answer == "trickle":
                    with outer.lock:
                        outer.received.append(
                            Received(self.path, dict(self.headers), None, 0, time.monotonic())
                        )
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 50:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            if outer.release.wait(0.2):
                                break
                    except OSError:  # the client gave up and closed the connection
                        pass
                    self.close_connection = True
                    return
                if answer == "hang":  # hold the request, then drop it unanswered
                    with outer.lock:
                        outer.received.append(
                            Received(
                                self.path,
                                dict(self.headers),
                                json.loads(raw or b"null"),
                                0,
                                time.monotonic(),
                            )
                        )
                    outer.arrived.set()
                    outer.release.wait(30)
                    self.close_connection = True
                    return
                status = int(answer)
                with outer.lock:
                    outer.received.append(
                        Received(
                            self.path,
                            dict(self.headers),
                            json.loads(raw or b"null"),
                            status,
                            time.monotonic(),
                        )
                    )
                    outer.arrived.set()
                body = b'{"status": "ok"}' if status < 300 else b'{"error": "scripted"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        # a short poll: shutdown() waits for serve_forever's next poll (0.5 s by default)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.delivered) >= count:
                return self.delivered
            time.sleep(0.02)
        raise AssertionError(f"expected {count} deliveries, got {len(self.delivered)}")


def write_points(store: Store, points: list[tuple[str, dict[str, Any], float, float]]) -> None:
    """Many (name, labels, ts, value) points in one transaction."""
    with store.session() as session:
        session.add_all(MetricPoint.of(n, lab, t, v) for n, lab, t, v in points)

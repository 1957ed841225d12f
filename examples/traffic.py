"""A small load generator for the demo: real HTTP requests to ``shipyard serve``.

It speaks MLflow's scoring format (``POST /models/{model}/invocations`` with
``dataframe_split``), sends a user id header so the server's sticky canary routing has a key
(``X-User-Id``), and counts answers by status and by the version that answered (the server names
it in ``X-Shipyard-Model-Version``).

    from traffic import Load, send_rows, send_bad_requests
    stats = send_rows("http://127.0.0.1:8000", "digits", frame.drop(columns="target"))
    with Load(url, "digits", rows, rate_per_s=40) as load:   # a background stream
        ...
    print(load.stats.by_version)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd


@dataclass
class TrafficStats:
    """What came back: answers by HTTP status and by the model version that answered."""

    by_status: Counter[int] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.by_status.values()) + len(self.errors)

    def add(self, response: httpx.Response, seconds: float) -> None:
        self.by_status[response.status_code] += 1
        self.by_version[response.headers.get("x-shipyard-model-version", "-")] += 1
        self.latencies_s.append(seconds)

    def line(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        versions = ", ".join(f"v{k}: {v}" for k, v in sorted(self.by_version.items()) if k != "-")
        lost = f", {len(self.errors)} transport errors" if self.errors else ""
        return f"{self.sent} requests (HTTP {statuses}; answered by {versions or '-'}{lost})"


def _body(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "dataframe_split": {
            "columns": [str(c) for c in rows.columns],
            "data": rows.to_numpy().tolist(),
        }
    }


def _post(
    client: httpx.Client, model: str, body: Any, stats: TrafficStats, user: str | None
) -> None:
    headers = {"x-user-id": user} if user else {}
    started = time.perf_counter()
    try:
        if isinstance(body, bytes):
            headers["content-type"] = "application/json"
            r = client.post(f"/models/{model}/invocations", content=body, headers=headers)
        else:
            r = client.post(f"/models/{model}/invocations", json=body, headers=headers)
    except httpx.HTTPError as exc:
        stats.errors.append(f"{type(exc).__name__}: {exc}")
        return
    stats.add(r, time.perf_counter() - started)


def send_rows(
    url: str,
    model: str,
    rows: pd.DataFrame,
    *,
    batch_rows: int = 1,
    user_prefix: str = "user",
    stats: TrafficStats | None = None,
) -> TrafficStats:
    """Send every row (``batch_rows`` per request), one user id per request, as fast as it goes."""
    stats = stats or TrafficStats()
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i, start in enumerate(range(0, len(rows), batch_rows)):
            part = rows.iloc[start : start + batch_rows]
            _post(client, model, _body(part), stats, f"{user_prefix}-{i}")
    return stats


def send_bad_requests(url: str, model: str, good_row: pd.DataFrame) -> TrafficStats:
    """Requests a real client gets wrong: a missing column, a string in a number column, a
    malformed body. Each should get a 4xx that names the problem; none may crash the server."""
    stats = TrafficStats()
    missing = good_row.drop(columns=good_row.columns[0])
    wrong = good_row.astype(object)
    wrong.iloc[0, 3] = "twelve"
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i in range(15):
            _post(client, model, _body(missing), stats, f"bad-{i}")
            _post(client, model, _body(wrong), stats, f"bad-{i}")
            _post(client, model, b'{"dataframe_split": {"columns": [', stats, f"bad-{i}")
    return stats


class Load:
    """A background stream of single-row requests at about ``rate_per_s``, cycling through
    ``rows``, each from one of ``users`` users (so canary routing sticks to a user)."""

    def __init__(
        self, url: str, model: str, rows: pd.DataFrame, rate_per_s: float, users: int = 500
    ) -> None:
        self.url, self.model, self.rows = url, model, rows
        self.interval_s = 1.0 / rate_per_s
        self.users = users
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-load", daemon=True)

    def _loop(self) -> None:
        bodies = [_body(self.rows.iloc[i : i + 1]) for i in range(len(self.rows))]
        i = 0
        next_at = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                _post(client, self.model, bodies[i % len(bodies)], self.stats, f"u{i % self.users}")
                i += 1
                next_at += self.interval_s
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.perf_counter()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def __exit__(self, *exc: object) -> None:
        self.stop()

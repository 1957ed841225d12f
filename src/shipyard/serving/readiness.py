"""Readiness that tells the truth: which live models this worker cannot serve, and why.

A load balancer keeps a replica in rotation while ``/v2/health/ready`` (and MLflow's ``/ping``)
answer 200, so they answer 503 while any model that the store says is live has no version this
worker can serve: its artifact failed its sha256 or would not load, or its serving limits are
malformed. The answer names each such model and the reason.

Which models are live is read from the store (:func:`~shipyard.serving.live.live_versions`), at
most once per ``refresh_interval_s`` and off the event loop; a failure that belongs to a version
that is no longer live does not count. A model that became live a moment ago and is still
loading does not count either: every replica would drop out of rotation together during each
deploy. A canary that failed to load is not counted, since its model's stable version takes
all the traffic (the route skips it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shipyard.serving.live import LiveModels, live_versions


class Readiness:
    """The live models a worker cannot serve, re-read at most every ``refresh_interval_s``."""

    def __init__(
        self,
        live: LiveModels,
        refresh_interval_s: float,
        refused: Callable[[str], str | None] = lambda model: None,
    ) -> None:
        self.live = live
        self.refresh_interval_s = refresh_interval_s
        self.refused = refused
        self._live_models: set[str] = set()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _live(self) -> set[str]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.refresh_interval_s:
                with self.live.registry.store.session() as s:
                    self._live_models = set(live_versions(s))
                self._read_at = time.monotonic()
            return self._live_models

    def why_not(self, model: str) -> str | None:
        """Why ``model`` cannot be served here, or None when it can (or is not live)."""
        if model in self.live.routes:
            return self.refused(model)
        return self.live.failure(model)

    def unservable(self) -> dict[str, str]:
        """Every live model that cannot be served, with the reason (reads the store; blocking)."""
        out = {}
        for model in sorted(self._live()):
            why = self.why_not(model)
            if why is not None:
                out[model] = why
        return out

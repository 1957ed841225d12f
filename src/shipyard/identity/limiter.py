"""Failed sign-ins, counted per identity and per address, refused past a limit for a while."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque

from shipyard.errors import TooManyAttempts

MAX_KEYS = 10_000
"""Keys remembered at most (the oldest are forgotten first): a flood of addresses cannot grow
the server's memory without bound."""


class FailureLimiter:
    """At most ``limit`` failures per key within ``window_s``; a key past it is refused until
    its oldest failure leaves the window. In memory, per process: each replica of the control
    plane counts its own (documented in ``docs/team.md``)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, keys: list[str], now: float) -> None:
        """Raise :class:`TooManyAttempts` if any key is past its limit."""
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is not None and len(times) >= self.limit:
                    retry = max(1, math.ceil(times[0] + self.window_s - now))
                    raise TooManyAttempts(retry)

    def failed(self, keys: list[str], now: float) -> None:
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque(maxlen=self.limit + 1)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

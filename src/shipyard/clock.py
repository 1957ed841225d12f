"""The clock seam: code that needs "now" takes a :class:`Clock`, tests pass a :class:`FakeClock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to: ``at(t)``, ``advance(dt)``; ``sleep`` advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def at(self, t: float) -> FakeClock:
        self._now = float(t)
        return self

    def advance(self, seconds: float) -> FakeClock:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        return self


def utcnow(clock: Clock | None = None) -> datetime:
    """Now as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp((clock or SYSTEM_CLOCK).time(), tz=UTC)


SYSTEM_CLOCK: Clock = SystemClock()

"""What the overview adds to what is already failing: how ready each model and pipeline is
(the ML Test Score, ``readiness.score``) and which runs are slow against their pipeline's own
history."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Reader = Callable[..., Any]

SLOW_FACTOR = 2.0
"""A run is slow when it has taken more than this many times its pipeline's median."""
MIN_HISTORY = 3
"""Finished successful runs of a pipeline needed before any of its runs is called slow."""
HISTORY_RUNS = 200
"""Recent runs read (one page of ``runs.list``) to find the medians and the slow runs."""
READINESS_FOR_S = 30.0
"""How long the overview shows one readiness report before judging again: the report reads
every wing, and the overview refetches every 5 s."""
_judged: dict[int, tuple[float, dict[str, Any]]] = {}


def slow_runs(
    recent: Sequence[Mapping[str, Any]], now: float, limit: int = 10
) -> list[dict[str, Any]]:
    """Runs among ``recent`` (finished or running) that took, or have been running for, more
    than ``SLOW_FACTOR`` times the median duration of their pipeline's successful runs among
    ``recent``, slowest against its median first. A pipeline with fewer than ``MIN_HISTORY``
    successful runs has no median to be slow against."""
    typical: dict[str, list[float]] = {}
    for r in recent:
        if r.get("status") == "succeeded" and r.get("duration_s") is not None:
            typical.setdefault(r["pipeline"], []).append(float(r["duration_s"]))
    medians = {p: statistics.median(d) for p, d in typical.items() if len(d) >= MIN_HISTORY}
    found = []
    for r in recent:
        median = medians.get(r["pipeline"])
        if not median:
            continue
        took = r.get("duration_s")
        if took is None and r.get("status") == "running" and r.get("started_at") is not None:
            took = now - r["started_at"]
        if took is not None and took > SLOW_FACTOR * median:
            found.append({**r, "took_s": took, "median_s": median, "ratio": took / median})
    found.sort(key=lambda r: -r["ratio"])
    return found[:limit]


def readiness_summary(read: Reader, store_key: int) -> dict[str, Any]:
    """The workspace's ML Test Score, per section, and each model's and pipeline's score and
    failing items (lowest score first), judged at most every ``READINESS_FOR_S`` per store."""
    now = time.monotonic()
    kept = _judged.get(store_key)
    if kept is None or now - kept[0] > READINESS_FOR_S:
        report = read("readiness.score")
        subjects = sorted(report["subjects"], key=lambda s: (s["score"], -s["failing"]))
        kept = (now, {"score": report["score"], "sections": report["sections"],
                      "at": report["at"], "subjects": subjects})  # fmt: skip
        _judged[store_key] = kept
    return kept[1]

"""Where a model's versions came from, and how much traffic each serves: the model page's
lineage (the run that trained a version and the data it read) and its requests per version
over time (from the serving counters)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shipyard.errors import NotFound

Reader = Callable[..., Any]
"""``pages.call`` bound to the page's context: an operation's name and its parameters."""


def version_lineage(read: Reader, version: Mapping[str, Any]) -> dict[str, Any]:
    """A version's lineage as the page shows it: the run that trained it (its pipeline,
    status and times, ``None`` when no run is recorded or the run is gone) and each data
    artifact it trained on, named and sized from the run's own lineage where the run read it.
    ``models.version``'s ``lineage`` records the run and the data digests."""
    recorded = version.get("lineage") or {}
    run_id = recorded.get("run_id") or version.get("run_id")
    digests = [d for d in recorded.get("data") or [] if isinstance(d, str)]
    run = None
    read_by_run: dict[str, dict[str, Any]] = {}
    if run_id:
        try:
            shown = read("runs.show", run_id=run_id)
        except NotFound:
            shown = None
        if shown is not None:
            run = {k: shown.get(k) for k in ("id", "pipeline", "status", "started_at",
                                               "duration_s", "created_by")}  # fmt: skip
            for step in shown["steps"]:
                for edge in step.get("lineage") or []:
                    if edge["direction"] == "consumed":
                        read_by_run.setdefault(edge["digest"], {**edge, "step": step["step"]})
    data = []
    for digest in digests:
        seen = read_by_run.get(digest, {})
        data.append({"digest": digest, "name": seen.get("name"), "step": seen.get("step"),
                     "media_type": seen.get("media_type"),
                     "size_bytes": seen.get("size_bytes")})  # fmt: skip
    return {
        "version": version["version"],
        "run_id": run_id,
        "run": run,
        "data": data,
        "pipeline": (version.get("tags") or {}).get("pipeline"),
        "step": (version.get("tags") or {}).get("step"),
    }


def rates_per_s(ts: Sequence[float], totals: Sequence[float | None]) -> list[float | None]:
    """Requests per second in each bucket from the means of a cumulative counter per bucket:
    the rise since the previous bucket that has a value, over the time between them; ``None``
    for the first bucket with a value, a bucket without one, and a fall (a counter that was
    reset)."""
    out: list[float | None] = [None] * len(totals)
    last: tuple[float, float] | None = None
    for i, (t, total) in enumerate(zip(ts, totals, strict=True)):
        if total is None:
            continue
        if last is not None and t > last[0] and total >= last[1]:
            out[i] = (total - last[1]) / (t - last[0])
        last = (t, total)
    return out

"""``/readiness``: how ready the workspace, or one pipeline or model, is for production: the
ML Test Score judged from what the workspace records (:mod:`shipyard.readiness`), as
``shipyard readiness --json`` prints it without drills (a drill acts on the live workspace:
it stays a command)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shipyard.api.operations import Context, Params, operation
from shipyard.identity import READ


class ReadinessQuery(Params):
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A pipeline or model (default: the whole workspace).",
    )


@operation("GET", "/readiness", name="readiness.score")
def readiness_score(ctx: Context, *, query: ReadinessQuery) -> dict[str, Any]:
    """The readiness report: every item judged with its evidence and fix, every test of the ML
    Test Score with its points, the score per section and the final score (the lowest
    section's). Without `subject`, `subjects` scores each pipeline and model on its own:
    kind, name, score and how many items fail."""
    from shipyard.readiness.evidence import gather
    from shipyard.readiness.score import readiness

    ctx.require(READ)
    facts = gather(ctx.ws)
    report = readiness(facts, query.subject)
    out = report.to_json()
    if query.subject is None:
        out["subjects"] = [
            {"kind": kind, "name": name, "score": mine.score, "failing": len(mine.failing)}
            for kind, names in (
                ("pipeline", [p.name for p in facts.pipelines]),
                ("model", [m.name for m in facts.models]),
            )
            for name in names
            for mine in (readiness(facts, name),)
        ]
    return out

"""A readiness report as Markdown, for a review: the score, the 28 tests, every item with its
evidence, the drills, and the fixes for what is missing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipyard.readiness.drills import DrillResult
    from shipyard.readiness.score import Readiness

MARK = {"pass": "✅ pass", "fail": "❌ fail", "unknown": "❔ unknown", "manual": "✋ manual",
        "n/a": "n/a"}  # fmt: skip


def stamp(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def score_line(report: Readiness) -> str:
    sections = ", ".join(f"{name} {points:g}" for name, points in report.sections.items())
    automated = sum(t.test.automated for t in report.tests)
    return (
        f"ML Test Score {report.score:g} (the lowest section: {sections}); "
        f"{automated} of {len(report.tests)} tests judged by Shipyard"
    )


def markdown(report: Readiness, drills: Sequence[DrillResult] = ()) -> str:
    """The whole report as one Markdown document."""
    what = f" of {report.subject}" if report.subject else ""
    out = [f"# Readiness{what}, {stamp(report.at)}", "", f"**{score_line(report)}**", ""]
    out += [
        "## The ML Test Score (Breck et al., 2017)",
        "",
        "| test | section | title | status | points | how |",
        "|---|---|---|---|---|---|",
    ]
    for t in report.tests:
        out.append(
            f"| {t.test.id} | {t.test.section} | {_cell(t.test.title)} | "
            f"{MARK.get(str(t.status), t.status)} | {t.points:g} | {_cell(t.test.why)} |"
        )
    out += ["", "## Items", "", "| status | item | subject | tests | evidence |",
            "|---|---|---|---|---|"]  # fmt: skip
    for r in report.items:
        evidence = "; ".join(
            e.what + (f" ({stamp(e.at)})" if e.at is not None else "") for e in r.evidence
        )
        out.append(
            f"| {MARK[r.status]} | {r.item.title} | {r.subject} | "
            f"{', '.join(r.item.tests) or 'guidance'} | {_cell(evidence)} |"
        )
    if drills:
        out += ["", "## Drills", "", "| drill | subject | outcome | signals (s from start) | "
                "cleanup |", "|---|---|---|---|---|"]  # fmt: skip
        for d in drills:
            signals = ", ".join(f"{k} {v:.2f}" for k, v in d.signals.items())
            cleanup = ", ".join(f"{k}={v}" for k, v in d.cleanup.items())
            outcome = "passed" if d.passed else f"failed: {d.reason}"
            out.append(
                f"| {d.kind} | {d.subject} | {_cell(outcome)} | {signals} | {_cell(cleanup)} |"
            )
    fails = report.failing
    if fails:
        out += ["", "## Fixes", ""]
        for r in fails:
            out.append(f"- **{r.item.title}** ({r.subject}): `{r.fix}`")
    return "\n".join(out) + "\n"

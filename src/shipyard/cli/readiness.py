"""``shipyard readiness``: how ready each pipeline and model is for production, scored by the
ML Test Score, proven by drills, with the command that fixes each missing item."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from shipyard.cli.output import console, flag, open_workspace, print_json, table, when

DEFAULT_DRILL_TIMEOUT_S = 60.0
"""``shipyard.readiness.verdicts.DEFAULT_DRILL_TIMEOUT_S`` (not imported: ``--help`` loads none
of readiness)."""

if TYPE_CHECKING:
    from shipyard.readiness import DrillResult, Readiness

STYLE = {"pass": "green", "fail": "bold red", "unknown": "yellow", "manual": "dim", "n/a": "dim"}
BELOW_MIN_SCORE = 3
"""The exit code when the score is under ``--min-score`` (1 stays "the command failed")."""


def readiness(
    subject: str | None = typer.Argument(
        None, help="A pipeline or model (default: the whole workspace)."
    ),
    as_json: bool = flag("--json", help="Print JSON."),
    as_markdown: bool = flag("--markdown", help="Print Markdown, for a review."),
    min_score: float | None = typer.Option(
        None,
        "--min-score",
        help=f"Exit {BELOW_MIN_SCORE} when the ML Test Score is below this (for CI).",
    ),
    drill: bool = flag(
        "--drill",
        help="Run the drills first: drift alert, outage page, rollback rehearsal, quota alert.",
    ),
    only: list[str] = typer.Option(
        [], "--only", help="With --drill: run only this drill (drift, outage, rollback, quota)."
    ),
    timeout: float = typer.Option(
        DEFAULT_DRILL_TIMEOUT_S, "--timeout", help="Seconds each drill may take.", min=1
    ),
) -> None:
    """How ready each pipeline and model is for production: every item of the guidance and
    every ML Test Score test Shipyard can judge, pass/fail/unknown with its evidence, the
    command that fixes each fail, and the score (per section; the final score is the lowest).

    With --drill the alert paths, a rollback and the quota alert are proven first, on the
    live workspace, scoped so that no user is harmed, and cleaned up after.
    """
    from shipyard.errors import InvalidInput
    from shipyard.readiness.evidence import gather
    from shipyard.readiness.report import markdown
    from shipyard.readiness.score import readiness as judge
    from shipyard.readiness.verdicts import DRILL_KINDS as KINDS

    unknown = sorted(set(only) - set(KINDS))
    if unknown:
        raise InvalidInput(f"--only: no drill named {unknown[0]!r} (drills: {', '.join(KINDS)})")
    ws = open_workspace(create=False)
    kinds = tuple(k for k in KINDS if not only or k in only)
    drills = []
    if drill:
        from shipyard.readiness.drills import Drills

        drills = Drills(ws, timeout_s=timeout).run(kinds, subject=subject)
    report = judge(gather(ws), subject)
    if as_json:
        print_json({**report.to_json(), "drills": [d.to_json() for d in drills]})
    elif as_markdown:
        sys.stdout.write(markdown(report, drills))
    else:
        _print(report, drills)
    if min_score is not None and report.score < min_score:
        if not as_json and not as_markdown:
            console.print(f"[bold red]score {report.score:g} is below --min-score {min_score:g}[/]")
        raise typer.Exit(BELOW_MIN_SCORE)


def _print(report: Readiness, drills: list[DrillResult]) -> None:
    from shipyard.readiness.report import score_line

    if drills:
        shown = table("drill", "subject", "outcome", "signals (s)", "cleanup", free={"outcome"})
        for d in drills:
            outcome = "[green]passed[/]" if d.passed else f"[bold red]failed[/]: {escape(d.reason)}"
            shown.add_row(
                d.kind,
                d.subject,
                outcome,
                ", ".join(f"{k} {v:.2f}" for k, v in d.signals.items()),
                ", ".join(f"{k}={v}" for k, v in d.cleanup.items()),
            )
        console.print(shown)
    tests = table("test", "title", "status", "points")
    for t in report.tests:
        status = str(t.status)
        tests.add_row(t.test.id, t.test.title, f"[{STYLE[status]}]{status}[/]", f"{t.points:g}")
    console.print(tests)
    items = table("status", "item", "subject", "feeds", "evidence", free={"evidence"})
    for r in report.items:
        first = r.evidence[0] if r.evidence else None  # what was found; rules and drills follow
        evidence = f"{first.what}" + (f" ({when(first.at)})" if first.at else "") if first else "-"
        items.add_row(
            f"[{STYLE[r.status]}]{r.status}[/]",
            r.item.key,
            r.subject,
            ", ".join(t.replace(" ", "\u00a0") for t in r.item.tests) or "guidance",
            escape(evidence),
        )
    console.print(items)
    console.print(f"[bold]{escape(score_line(report))}[/]")
    if report.failing:
        console.print("[bold]To fix:[/]")
        for r in report.failing:
            console.print(
                f"  {escape(r.item.key)} ({escape(r.subject)}): {escape(str(r.fix))}",
                soft_wrap=True,
            )


def register(app: typer.Typer) -> None:
    app.command("readiness")(readiness)

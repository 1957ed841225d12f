"""Judge every item for every subject, and score the result the way the ML Test Score does.

Per test: 1 point when Shipyard judges it automated and every item that feeds it passes for
every subject; 0 otherwise (the paper's half point for a test run by hand is the team's to
claim: Shipyard cannot see it). A section's score is the sum of its seven tests; the final
score is the minimum over the four sections (Breck et al., 2017, section VI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.errors import NotFound
from shipyard.readiness.evidence import Facts, ModelFacts, PipelineFacts
from shipyard.readiness.items import ITEMS, Item, subjects
from shipyard.readiness.rubric import AUTOMATED_POINTS, SECTIONS, TESTS, MLTest, Section
from shipyard.readiness.verdicts import Evidence, Status, Subject


@dataclass(frozen=True)
class ItemResult:
    item: Item
    subject: str
    """The pipeline or model judged; ``-`` for the workspace, or when the scope has none."""
    status: Status
    evidence: tuple[Evidence, ...]
    fix: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item.key,
            "title": self.item.title,
            "subject": self.subject,
            "status": self.status,
            "tests": list(self.item.tests),
            "guidance": self.item.guidance,
            "evidence": [{"what": e.what, "at": e.at} for e in self.evidence],
            "fix": self.fix,
        }


@dataclass(frozen=True)
class TestResult:
    test: MLTest
    status: Status | str
    """pass / fail / unknown for an automated test; ``manual`` for one Shipyard cannot judge;
    ``n/a`` when no item of it applies to the subject asked about."""
    points: float
    items: tuple[ItemResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test.id,
            "section": self.test.section,
            "title": self.test.title,
            "automated": self.test.automated,
            "status": self.status,
            "points": self.points,
            "how": self.test.why,
            "items": [f"{r.item.key}:{r.subject}" for r in self.items],
        }


@dataclass(frozen=True)
class Readiness:
    """A readiness report: every item's result, every test's, and the scores."""

    at: float
    subject: str | None
    items: tuple[ItemResult, ...]
    tests: tuple[TestResult, ...]

    @property
    def sections(self) -> dict[Section, float]:
        return {s: sum(t.points for t in self.tests if t.test.section == s) for s in SECTIONS}

    @property
    def score(self) -> float:
        """The ML Test Score: the lowest of the four sections."""
        return min(self.sections.values())

    @property
    def failing(self) -> list[ItemResult]:
        return [r for r in self.items if r.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "subject": self.subject,
            "score": self.score,
            "sections": self.sections,
            "automated_tests": sum(t.test.automated for t in self.tests),
            "tests": [t.to_json() for t in self.tests],
            "items": [r.to_json() for r in self.items],
        }


def _name(subject: Subject) -> str:
    if isinstance(subject, PipelineFacts | ModelFacts):
        return subject.name
    return "-"


def judge_items(facts: Facts, subject: str | None = None) -> list[ItemResult]:
    """Every item for every subject of its scope (only ``subject``'s when named)."""
    results = []
    for item in ITEMS:
        found = list(subjects(facts, item.scope))
        if subject is not None:
            if item.scope == "workspace":
                continue
            found = [s for s in found if _name(s) == subject]
            if not found:
                continue
        if not found:
            scope = "pipeline" if item.scope == "pipeline" else item.scope
            what = f"no {scope} pipeline yet" if scope not in ("model", "pipeline") else (
                "no registered model yet" if scope == "model" else "no pipeline yet"
            )  # fmt: skip
            results.append(ItemResult(item, "-", "fail", (Evidence(what),), item.none_fix))
            continue
        for s in found:
            verdict = item.judge(facts, s)
            results.append(
                ItemResult(item, _name(s), verdict.status, verdict.evidence, verdict.fix)
            )
    return results


def score_tests(items: list[ItemResult], subject: str | None = None) -> list[TestResult]:
    """Each of the 28 tests from the items that feed it."""
    out = []
    for test in TESTS:
        mine = tuple(r for r in items if test.id in r.item.tests)
        if not test.automated:
            out.append(TestResult(test, "manual", 0.0, mine))
            continue
        if not mine:
            out.append(TestResult(test, "n/a" if subject else "fail", 0.0, mine))
            continue
        statuses = {r.status for r in mine}
        status: Status = (
            "fail" if "fail" in statuses else "unknown" if "unknown" in statuses else "pass"
        )
        out.append(TestResult(test, status, AUTOMATED_POINTS if status == "pass" else 0.0, mine))
    return out


def readiness(facts: Facts, subject: str | None = None) -> Readiness:
    """The readiness of the workspace, or of one pipeline or model (``subject``)."""
    if subject is not None:
        known = {p.name for p in facts.pipelines} | {m.name for m in facts.models}
        if subject not in known:
            raise NotFound(
                "pipeline or model",
                subject,
                "see `shipyard pipelines list` and `shipyard models list`",
                candidates=sorted(known),
            )
    items = judge_items(facts, subject)
    return Readiness(facts.now, subject, tuple(items), tuple(score_tests(items, subject)))

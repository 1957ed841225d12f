"""``shipyard readiness`` as a user runs it: JSON for machines, Markdown for a review, an exit
code for CI, one line for a name it does not know."""

from __future__ import annotations

import json

import pytest

from cli_testkit import shipyard
from shipyard.errors import NotFound
from shipyard.readiness import gather, readiness
from shipyard.workspace import Workspace


def test_the_json_of_one_model_has_its_score_tests_and_items(demo_ws: Workspace) -> None:
    report = json.loads(json.dumps(readiness(gather(demo_ws), "digits").to_json()))
    assert report["subject"] == "digits" and report["automated_tests"] == 20
    assert report["score"] == min(report["sections"].values())
    assert {i["subject"] for i in report["items"]} == {"digits"}
    gate = next(i for i in report["items"] if i["item"] == "model.gate")
    assert gate["status"] == "pass" and gate["tests"] == ["Infra 4"]
    assert any("v1 passed" in e["what"] for e in gate["evidence"])
    rollback = next(i for i in report["items"] if i["item"] == "model.rollback")
    assert rollback["fix"] == "shipyard readiness digits --drill --only rollback"


def test_a_name_it_does_not_know_is_suggested(demo_ws: Workspace) -> None:
    with pytest.raises(
        NotFound, match="no pipeline or model named 'digitz'; did you mean 'digits'"
    ):
        readiness(gather(demo_ws), "digitz")


def test_markdown_under_the_minimum_score_exits_3(demo_ws: Workspace) -> None:
    env = {"SHIPYARD_HOME": str(demo_ws.settings.home)}
    out = shipyard("readiness", "--markdown", "--min-score", "5", env=env)
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stdout.startswith("# Readiness, ")
    for heading in ("## The ML Test Score (Breck et al., 2017)", "## Items", "## Fixes"):
        assert heading in out.stdout
    assert "| Monitor 7 | monitoring |" in out.stdout
    assert "- **Rollback done or rehearsed recently** (digits): `shipyard readiness" in out.stdout

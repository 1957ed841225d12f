"""The readiness score: what an empty workspace and a demo-like one score, and which items turn
red when one thing is broken."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete

from shipyard.clock import FakeClock
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.settings import keep_settings
from shipyard.readiness import ITEMS, TESTS, Readiness, gather, readiness
from shipyard.readiness.rubric import SECTIONS
from shipyard.store.deploy import DeployPolicyRecord
from shipyard.workspace import Workspace


def _status(report: Readiness) -> dict[tuple[str, str], str]:
    return {(r.item.key, r.subject): r.status for r in report.items}


def _red(report: Readiness) -> set[tuple[str, str]]:
    return {key for key, status in _status(report).items() if status == "fail"}


class TestTheRubric:
    def test_has_the_papers_28_tests_seven_per_section_and_at_least_20_automated(self) -> None:
        assert len(TESTS) == 28
        for section in SECTIONS:
            assert sum(t.section == section for t in TESTS) == 7
        assert sum(t.automated for t in TESTS) >= 20

    def test_every_automated_test_is_fed_by_an_item_and_every_item_names_real_tests(self) -> None:
        ids = {t.id for t in TESTS}
        fed = {test for item in ITEMS for test in item.tests}
        assert fed <= ids
        assert fed == {t.id for t in TESTS if t.automated}


class TestAnEmptyWorkspace:
    def test_scores_zero_with_an_actionable_fix_for_every_item(self, tmp_path: Path) -> None:
        ws = Workspace.open(clock=FakeClock(), home=tmp_path / "home")
        report = readiness(gather(ws))
        assert report.score == 0 and set(report.sections.values()) == {0.0}
        assert {r.item.key for r in report.items} == {i.key for i in ITEMS}
        for r in report.items:
            assert r.status == "fail", r.item.key
            assert r.fix and r.fix.startswith("shipyard "), r.item.key
            assert r.evidence and r.evidence[0].what, r.item.key
        automated = [t for t in report.tests if t.test.automated]
        assert {t.status for t in automated} == {"fail"}
        assert {t.status for t in report.tests if not t.test.automated} == {"manual"}


class TestADemoLikeWorkspace:
    def test_scores_what_it_really_has_each_pass_backed_by_its_evidence(
        self, demo_ws: Workspace
    ) -> None:
        report = readiness(gather(demo_ws))
        status = _status(report)
        evidence = {
            (r.item.key, r.subject): " ; ".join(e.what for e in r.evidence) for r in report.items
        }
        # what the demo has, with the evidence that proves it
        assert status["data.schema", "digits-data"] == "pass"
        assert "schema of 65 columns" in evidence["data.schema", "digits-data"]
        assert status["data.feature_drift", "digits-batch"] == "pass"
        assert "drifted" in evidence["data.feature_drift", "digits-batch"]
        assert "DatasetDrift" in evidence["data.feature_drift", "digits-batch"]
        assert status["training.automated", "digits-training"] == "pass"
        assert "registered digits v1" in evidence["training.automated", "digits-training"]
        assert "(production)" in evidence["training.automated", "digits-training"]
        assert status["model.gate", "digits"] == "pass"
        assert "v1 passed" in evidence["model.gate", "digits"]
        assert status["model.review", "digits"] == "pass"
        assert "author of the serving version recorded: bob" in evidence["model.review", "digits"]
        assert status["model.latency", "digits"] == "pass"
        assert "p99" in evidence["model.latency", "digits"]
        assert status["alerts.delivery", "-"] == "pass"
        assert "receiver demo-log" in evidence["alerts.delivery", "-"]
        assert status["model.policy", "digits"] == "pass"
        # and what it does not have, each with its fix
        missing = {
            ("model.online_offline", "digits"),  # no late labels were sent
            ("model.quality", "digits"),  # one window: no baseline, no labels, no probabilities
            ("model.canary", "digits"),  # one version: nothing to canary against
            ("model.rollback", "digits"),  # never rolled back, never drilled
            ("model.outage", "digits"),  # never drilled
            ("alerts.drilled", "-"),
            ("quota.exhaustion", "-"),
            ("quota.capped", "-"),  # digits-training may take the whole demo pool
        }
        assert _red(report) == missing
        fixes = {(r.item.key, r.subject): r.fix for r in report.items}
        assert (
            fixes["model.rollback", "digits"] == "shipyard readiness digits --drill --only rollback"
        )
        assert "digits-training may take all of demo's cpu" in evidence["quota.capped", "-"]
        # scored per section; the final score is the lowest section
        assert report.sections["monitoring"] == 5  # Monitor 1 waits for a drill, 7 for data
        assert report.score == min(report.sections.values())
        assert report.score == report.sections["model"] == 2  # Model 1 and Model 5

    def test_one_subject_is_judged_alone(self, demo_ws: Workspace) -> None:
        report = readiness(gather(demo_ws), "digits-batch")
        assert {r.subject for r in report.items} == {"digits-batch"}
        assert {t.status for t in report.tests if t.test.id.startswith("Infra")} == {"n/a"}


class TestBreakingOneThing:
    def test_removing_the_receiver_turns_delivery_red_and_nothing_else(
        self, demo_ws: Workspace
    ) -> None:
        before = _red(readiness(gather(demo_ws)))
        config = demo_ws.settings.home / "alerting.yaml"
        text = config.read_text().replace("receiver: demo-log", "receiver: oncall")
        text = text.replace("{name: demo-log, type: log, path: demo-alerts.log}",
                            "{name: oncall, type: log, path: oncall.log}")  # fmt: skip
        config.write_text(text)
        after = _red(readiness(gather(demo_ws)))
        assert after - before == {("alerts.delivery", "-")}
        assert before - after == set()

    def test_disabling_a_monitor_turns_exactly_its_item_red(self, demo_ws: Workspace) -> None:
        before = _red(readiness(gather(demo_ws)))
        with demo_ws.store.session() as s:
            keep_settings(s, "digits-data", resolve_monitors("data", {"label_drift": False}), 0)
        report = readiness(gather(demo_ws))
        assert _red(report) - before == {("data.label_drift", "digits-data")}
        fix = next(r.fix for r in report.failing if r.item.key == "data.label_drift")
        assert fix is not None and '"label_drift": True' in fix

    def test_deleting_the_policy_turns_the_deployment_items_red(self, demo_ws: Workspace) -> None:
        before = _red(readiness(gather(demo_ws)))
        with demo_ws.store.session() as s:
            s.execute(delete(DeployPolicyRecord).where(DeployPolicyRecord.model == "digits"))
        report = readiness(gather(demo_ws))
        assert _red(report) - before == {
            ("model.policy", "digits"),
            ("model.review", "digits"),
            ("model.baseline", "digits"),
            ("model.smoke", "digits"),
            ("model.gate", "digits"),
        }
        assert all(
            r.fix and r.fix.startswith("shipyard deployments set-policy digits")
            for r in report.failing
            if r.item.key in ("model.policy", "model.review", "model.gate", "model.smoke")
        )

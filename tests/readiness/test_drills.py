"""Drills on the demo-like workspace: each proves its signal end to end through the real rule
evaluation and delivery, records when it ran and how long each signal took, and leaves nothing
behind; a drill whose alert does not arrive fails with the reason."""

from __future__ import annotations

import json
from typing import Any

from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sqlalchemy import select

from shipyard.deploy.production import put_in_production
from shipyard.quota.pools import apply_pools, read_pool_file
from shipyard.readiness import Drills, gather, readiness
from shipyard.readiness.drills import DRILL_LABEL, DRILL_PIPELINE, last_drills
from shipyard.registry import Registry
from shipyard.store.alerting import AlertRecord
from shipyard.store.quota import QuotaLease
from shipyard.store.readiness import ReadinessDrill
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace

from readiness_testkit import EXAMPLES, MODEL  # isort: skip


def _drill_points(ws: Workspace) -> list[MetricPoint]:
    with ws.store.session() as s:
        return [p for p in s.scalars(select(MetricPoint)) if DRILL_LABEL in (p.labels or {})]


def _live_drill_alerts(ws: Workspace) -> list[AlertRecord]:
    with ws.store.session() as s:
        return [
            a
            for a in s.scalars(
                select(AlertRecord).where(AlertRecord.state.in_(("pending", "firing")))
            )
            if DRILL_LABEL in (a.labels or {})
        ]


def _log_lines(ws: Workspace) -> list[dict[str, Any]]:
    path = ws.settings.home / "logs" / "demo-alerts.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


class TestTheDriftDrill:
    def test_the_alert_reaches_the_receiver_and_the_drill_cleans_up(
        self, demo_ws: Workspace
    ) -> None:
        before = len(_log_lines(demo_ws))
        result = Drills(demo_ws, timeout_s=30).drift()
        assert result.passed, result.reason
        assert result.subject == "digits-data"
        assert list(result.signals) == [
            "batch judged", "alert pending", "alert firing", "notification queued", "delivered",
            "alert resolved", "resolution delivered",
        ]  # fmt: skip
        assert result.detail["delivered_to"] == ["demo-log"]
        assert result.detail["alerts"] == ["DatasetDrift/ticket"]
        # the receiver really got it, firing then resolved, labelled as a drill
        told = _log_lines(demo_ws)[before:]
        drilled = [
            a for n in told for a in n["alerts"] if a["labels"].get(DRILL_LABEL) == result.id
        ]
        assert [a["status"] for a in drilled] == ["firing", "resolved"]
        # nothing left behind
        assert _drill_points(demo_ws) == [] and _live_drill_alerts(demo_ws) == []
        assert result.cleanup["points_deleted"] > 0 and result.cleanup["alerts_left_firing"] == 0
        # recorded, and the score reads it
        with demo_ws.store.session() as s:
            row = s.get(ReadinessDrill, result.id)
            assert row is not None and row.passed and row.signals == result.signals
        status = {(r.item.key, r.subject): r.status for r in readiness(gather(demo_ws)).items}
        assert status["alerts.drilled", "-"] == "pass"

    def test_an_alert_that_does_not_arrive_fails_with_the_reason(self, demo_ws: Workspace) -> None:
        config = demo_ws.settings.home / "alerting.yaml"
        # the receiver is an HTTP endpoint nobody listens on: the alert fires, never arrives
        config.write_text(
            config.read_text().replace(
                "{name: demo-log, type: log, path: demo-alerts.log}",
                '{name: demo-log, type: webhook, url: "http://127.0.0.1:9/hook", timeout: 1s}',
            )
        )
        result = Drills(demo_ws, timeout_s=4).drift()
        assert not result.passed
        assert result.reason.startswith("the alert fired but did not reach demo-log within 4 s")
        assert "cannot reach http://127.0.0.1:9/hook" in result.reason
        assert "alert firing" in result.signals and "delivered" not in result.signals
        assert _drill_points(demo_ws) == [] and _live_drill_alerts(demo_ws) == []
        [last] = [d for d in last_drills(demo_ws) if d.kind == "drift"]
        assert not last.passed and last.reason == result.reason
        status = {(r.item.key, r.subject): r.status for r in readiness(gather(demo_ws)).items}
        assert status["alerts.drilled", "-"] == "fail"


class TestTheOutageDrill:
    def test_a_probe_of_a_stopped_server_pages_model_outage(self, demo_ws: Workspace) -> None:
        result = Drills(demo_ws, timeout_s=30).outage()
        assert result.passed, result.reason
        assert result.subject == MODEL and result.detail["alerts"] == ["ModelOutage/page"]
        assert "probe failed" in result.signals and "delivered" in result.signals
        assert "ConnectError" in result.detail["probe"]
        assert _drill_points(demo_ws) == [] and _live_drill_alerts(demo_ws) == []

    def test_a_rule_slower_than_the_drill_fails_it_at_once_saying_so(
        self, demo_ws: Workspace
    ) -> None:
        config = demo_ws.settings.home / "alerting.yaml"
        config.write_text(config.read_text().replace("  ModelOutage: {for: 0s}\n", ""))
        result = Drills(demo_ws, timeout_s=10).outage()
        assert not result.passed
        assert "ModelOutage fires only after for=60 s" in result.reason
        assert "--timeout 90" in result.reason


class TestTheRollbackRehearsal:
    def test_moves_traffic_on_a_scratch_alias_and_leaves_the_real_ones_alone(
        self, demo_ws: Workspace
    ) -> None:
        registry = Registry.of(demo_ws)
        frame = load_digits(as_frame=True).frame
        x, y = frame.drop(columns="target"), frame["target"]
        registry.register(
            MODEL, RandomForestClassifier(10, random_state=1).fit(x, y), training_data=x
        )
        with demo_ws.store.session() as s:
            put_in_production(
                s, MODEL, 2, now=demo_ws.clock.time(), via="rollout", actor="alice", reason="v2"
            )
        aliases = registry.aliases(MODEL)
        result = Drills(demo_ws, timeout_s=30).rollback()
        assert result.passed, result.reason
        assert (result.detail["current"], result.detail["target"]) == (2, 1)
        assert result.detail["took_s"] <= result.detail["bound_s"] == 5  # the policy's interval
        assert list(result.signals) == ["alias moved", "answered by v1"]
        assert result.cleanup == {
            "scratch_alias_removed": True, "real_aliases_untouched": True, "live_unchanged": True,
        }  # fmt: skip
        assert registry.aliases(MODEL) == aliases
        moves = registry.alias_history(MODEL, result.detail["alias"])
        assert [(m.from_version, m.to_version) for m in moves] == [(None, 2), (2, 1), (1, None)]

    def test_with_nothing_to_roll_back_to_it_fails_saying_so(self, demo_ws: Workspace) -> None:
        aliases = Registry.of(demo_ws).aliases(MODEL)
        result = Drills(demo_ws, timeout_s=30).rollback()
        assert not result.passed
        assert result.reason == (
            f"{MODEL} has no version to roll back to: none before v1, and none other that was "
            "healthy in production"
        )
        assert Registry.of(demo_ws).aliases(MODEL) == aliases


class TestTheQuotaDrill:
    def test_a_capped_stranger_cannot_reach_the_threshold_and_says_what_to_change(
        self, demo_ws: Workspace
    ) -> None:
        result = Drills(demo_ws, timeout_s=20).quota()
        assert not result.passed
        assert "QuotaPoolFull needs 2 cpu reserved in demo" in result.reason
        assert f"name {DRILL_PIPELINE} as a member" in result.reason

    def test_a_lease_toward_the_cap_raises_the_alert_and_is_released(
        self, demo_ws: Workspace
    ) -> None:
        text = (
            (EXAMPLES / "pools.yaml")
            .read_text()
            .replace(
                "- {pipeline: digits-batch, share: 0.125, cap: 0.5}",
                "- {pipeline: digits-batch, share: 0.125, cap: 0.5}\n"
                f"      - {{pipeline: {DRILL_PIPELINE}, cap: 1.0}}",
            )
        )
        pools = demo_ws.settings.home / "pools.yaml"
        pools.write_text(text)
        apply_pools(demo_ws.store, read_pool_file(pools, 0.5), demo_ws.clock)
        result = Drills(demo_ws, timeout_s=30).quota()
        assert result.passed, result.reason
        assert result.detail["resource"] == "cpu" and result.detail["amount"] == 2.0
        assert result.detail["alerts"] == ["QuotaPoolFull/ticket"]
        assert list(result.signals)[:3] == ["lease granted", "usage sampled", "alert pending"]
        assert "delivered" in result.signals and "alert resolved" in result.signals
        assert result.cleanup["leases_left_held"] == 0
        with demo_ws.store.session() as s:
            held = s.scalars(
                select(QuotaLease).where(
                    QuotaLease.pipeline == DRILL_PIPELINE, QuotaLease.status == "held"
                )
            ).all()
        assert held == []

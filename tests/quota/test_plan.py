"""Weekly planning: cron firings, collisions, reservations and headroom."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shipyard.api.client import LocalClient
from shipyard.clock import FakeClock
from shipyard.errors import InvalidInput
from shipyard.identity import Principal
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.plan import (
    RunningDemand,
    ScheduledDemand,
    StandingLease,
    firings,
    plan_week,
    standing_beyond_reservations,
)
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.quota.views import LeaseView
from shipyard.serving.instances import register_instance, serving_request
from shipyard.store.tables import PipelineRecord, Run, StepRun
from shipyard.workspace import Workspace

MONDAY = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
POOL = resolve(PoolSpec(name="p", capacity={"cpu": 8}), 0.5)


def test_daily_cron_fires_seven_times_a_week() -> None:
    assert len(firings("0 2 * * *", MONDAY, MONDAY + 7 * 86400)) == 7
    assert firings("0 2 * * *", MONDAY, MONDAY + 86400) == [MONDAY + 2 * 3600]


def test_collision_is_found_with_its_pipelines() -> None:
    demands = [
        ScheduledDemand("etl", "p", "0 2 * * *", {"cpu": 4}, 3600),
        ScheduledDemand("train", "p", "30 2 * * 1", {"cpu": 3}, 7200),  # Mondays 02:30
        ScheduledDemand("report", "p", "0 12 * * *", {"cpu": 2}, 600),
    ]
    plan = plan_week([POOL], demands, {"p": {"cpu": 1}}, headroom_fraction=0.1, start=MONDAY)
    (line,) = plan.lines
    assert line.scheduled_peak == 7 and line.colliding == ["etl", "train"]
    assert line.peak_at == MONDAY + 2.5 * 3600
    assert line.headroom == pytest.approx(0.8)  # 10 % of (1 reserved + 7)
    assert line.total == pytest.approx(8.8) and not line.fits and not plan.fits


def test_back_to_back_runs_do_not_collide() -> None:
    demands = [
        ScheduledDemand("a", "p", "0 2 * * *", {"cpu": 6}, 3600),
        ScheduledDemand("b", "p", "0 3 * * *", {"cpu": 6}, 3600),
    ]
    plan = plan_week([POOL], demands, {}, headroom_fraction=0.0, start=MONDAY)
    assert plan.lines[0].scheduled_peak == 6 and plan.fits


def test_bad_cron_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="cron"):
        firings("every day", MONDAY, MONDAY + 1)


def test_runs_without_a_recorded_duration_still_end() -> None:
    demands = [ScheduledDemand("a", "p", "0 2 * * *", {"cpu": 6}, 0.0)]
    plan = plan_week([POOL], demands, {}, headroom_fraction=0.0, start=MONDAY)
    assert plan.lines[0].scheduled_peak == 6  # not 7 × 6: each firing ends


def test_a_running_lease_collides_with_a_firing_until_its_expected_end() -> None:
    demands = [ScheduledDemand("etl", "p", "0 2 * * *", {"cpu": 5}, 3600)]
    running = [RunningDemand("train", "p", {"cpu": 4}, MONDAY + 3 * 3600)]
    plan = plan_week([POOL], demands, {}, headroom_fraction=0.0, start=MONDAY, running=running)
    (line,) = plan.lines
    assert (line.running, line.scheduled_peak) == (4, 5) and not line.fits
    assert line.colliding == ["etl", "train (running)"]
    # the same run, expected to end at 01:00: it is over before etl fires at 02:00
    done = [RunningDemand("train", "p", {"cpu": 4}, MONDAY + 3600)]
    plan = plan_week([POOL], demands, {}, headroom_fraction=0.0, start=MONDAY, running=done)
    assert plan.lines[0].running == 0 and plan.lines[0].scheduled_peak == 5 and plan.fits


def test_standing_leases_count_all_week_and_add_to_the_headroom_base() -> None:
    standing = [StandingLease("serve:h:1 (churn)", "p", {"cpu": 3})]
    demands = [ScheduledDemand("etl", "p", "0 2 * * *", {"cpu": 4}, 3600)]
    plan = plan_week(
        [POOL], demands, {"p": {"cpu": 1}}, headroom_fraction=0.1, start=MONDAY, standing=standing
    )
    (line,) = plan.lines
    assert line.serving == 3 and line.holders == ["serve:h:1 (churn)"]
    assert line.headroom == pytest.approx(0.8)  # 10 % of (1 reserved + 3 serving + 4)
    assert line.total == pytest.approx(8.8) and not plan.fits


def lease(lease_id: str, cpu: float, pipeline: str = "serve:h:1") -> LeaseView:
    return LeaseView(lease_id, "p", pipeline, "", "serve", "held", {"cpu": cpu}, {}, 0.0, 1.0, 1)


def test_a_servers_lease_is_part_of_its_models_reservation_never_added_to_it() -> None:
    reservations = {("p", "serving:churn@champion"): {"cpu": 4.0}}
    servers = {"a": ("churn",), "b": ("churn",), "c": ("fraud",)}
    held = [lease("a", 2), lease("b", 1, "serve:h:2"), lease("c", 1, "serve:h:3")]
    counted = standing_beyond_reservations(held, servers, reservations)
    # churn: 3 held of 4 reserved adds nothing; fraud has no reservation: counted whole
    assert [(s.holder, s.demand) for s in counted] == [("serve:h:3 (fraud)", {"cpu": 1.0})]
    held.append(lease("d", 2, "serve:h:4"))
    counted = standing_beyond_reservations(held, {**servers, "d": ("churn",)}, reservations)
    beyond = next(s for s in counted if "churn" in s.holder)
    assert beyond.demand == {"cpu": 1.0}  # 5 held by churn's servers, 4 reserved
    # a lease that no live server names (its record is gone) still counts whole
    assert standing_beyond_reservations([lease("x", 2)], {}, reservations)[0].demand == {"cpu": 2.0}


class TestPlanFromTheStore:
    """Issue #17 item 4, on SQLite and PostgreSQL: `quota plan` counts what runs."""

    def test_a_shortfall_that_only_a_live_serving_lease_causes(
        self, ws: Workspace, clock: FakeClock
    ) -> None:
        clock.at(MONDAY + 1.5 * 3600)  # 01:30, half an hour before etl's daily 02:00 firing
        apply_pools(
            ws.store,
            [resolve(PoolSpec(name="shared", capacity={"cpu": 4, "memory": "8Gi"}), 1.0)],
            clock,
            actor="test",
        )
        scheduled_history(ws, "etl", cpu_seconds=6000.0, duration_s=3600.0)  # p90 + 20 %: 2 cores
        api = LocalClient(ws, Principal.embedded("tester"))
        before = cpu_line(api.call("quota.plan"))
        assert before["fits"] and before["serving"] == 0
        assert before["scheduled_peak"] == 2 and before["total"] == pytest.approx(2.4)

        leases = LeaseManager(ws.store, clock=clock, lease_ttl_s=60)
        held = leases.acquire(serving_request("127.0.0.1", 8080, "shared", 2))  # 2 CPUs
        register_instance(
            ws.store,
            url="http://127.0.0.1:8080",
            host="127.0.0.1",
            workers=2,
            ttl_s=60,
            now=clock.time(),
            models=["churn"],
            pool="shared",
            lease_id=held.lease_id,
        )
        after = api.call("quota.plan")
        line = cpu_line(after)
        assert not after["fits"] and not line["fits"]
        assert line["serving"] == 2 and line["holders"] == ["serve:127.0.0.1:8080 (churn)"]
        assert line["total"] == pytest.approx(4.8)  # (2 serving + 2 scheduled) × 1.2 > 4
        assert line["scheduled_peak"] == before["scheduled_peak"]

        run_lease = leases.acquire(
            LeaseRequest("train", {"cpu": 1}, pool="shared", run_id="r1", step="fit")
        )
        with_run = api.call("quota.plan")
        running = cpu_line(with_run)  # counted an hour from now (no history): 02:00 collides
        assert running["running"] == 1 and running["colliding"] == ["etl", "train (running)"]
        assert any("train runs now with no history" in n for n in with_run["notes"])
        leases.release(run_lease)
        leases.release(held)
        leases.close()
        assert cpu_line(api.call("quota.plan"))["fits"]


def cpu_line(plan: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in plan["lines"] if (x["pool"], x["resource"]) == ("shared", "cpu"))


def scheduled_history(ws: Workspace, name: str, *, cpu_seconds: float, duration_s: float) -> None:
    with ws.store.session() as s:
        s.add(
            PipelineRecord(
                name=name,
                kind="data",
                file=f"{name}.py",
                schedule="0 2 * * *",
                spec={"pool": "shared"},
                updated_at=0.0,
            )
        )
        run = Run(pipeline=name, kind="data", file="x.py", status="succeeded", created_at=0.0)
        s.add(run)
        s.flush()
        s.add(
            StepRun(
                run_id=run.id,
                step="only",
                status="succeeded",
                started_at=0.0,
                ended_at=duration_s,
                peak_rss_bytes=256 * 1024**2,
                cpu_seconds=cpu_seconds,
            )
        )

"""Weekly planning: cron firings, collisions, reservations and headroom."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shipyard.errors import InvalidInput
from shipyard.quota.plan import ScheduledDemand, firings, plan_week
from shipyard.quota.pools import PoolSpec, resolve

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

"""One interval convention for serving windows: ``(since, until]`` by a window's end, the same
for the canary judge's reader and for the serving monitors, so a window that ends exactly on a
boundary is counted once and on the same side by both (issue #12 item 2)."""

from __future__ import annotations

from serving.conftest import fit_classifier
from shipyard.clock import FakeClock
from shipyard.deploy.canary import arm_from_store
from shipyard.monitoring.serving import ServingMonitor, ServingMonitorConfig
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.telemetry import Telemetry
from shipyard.workspace import Workspace


def test_a_window_ending_on_the_boundary_counts_before_it_for_the_judge_and_the_monitors(
    ws: Workspace,
) -> None:
    assert isinstance(ws.clock, FakeClock)
    clock = ws.clock
    t0 = clock.time()
    clf, x = fit_classifier()
    info = Registry.of(ws).register("m", clf, training_data=x, alias="champion")
    telemetry = Telemetry(ws.store, None, sample_rate=0, clock=clock, worker="w")
    rows = x.to_numpy()
    for requests, bad in ((4, 1), (3, 2)):  # windows end at t0 + 10 (the boundary), t0 + 20
        for i in range(requests):
            row = rows[i : i + 1]
            telemetry.ok(info, row, clf.predict(row), None, 0.001, f"r{clock.time()}-{i}")
        for i in range(bad):
            telemetry.error(info, "data", 400, 0.001, f"b{clock.time()}-{i}", "bad input")
        clock.advance(10)
        assert telemetry.flush() == 1
    boundary, now = t0 + 10, t0 + 20

    with ws.store.session() as s:
        ends = [w.window_end for w in records.windows(s, "m", 1, t0 - 1)]
    assert ends == [boundary, now]  # one window ends exactly on the boundary

    before = arm_from_store(ws.store, "m", 1, t0, boundary)
    after = arm_from_store(ws.store, "m", 1, boundary, now)
    assert (before.requests, after.requests) == (5, 5)  # the judge counts requests and errors

    monitor = ServingMonitor(ws.store, Registry.of(ws), clock, ServingMonitorConfig(period_s=10))
    recent = monitor.data_type_problems(info)  # the recent period is (boundary, now]
    assert recent.evidence["requests"] == after.requests
    assert recent.evidence["data_errors"] == 2
    traffic = monitor.outage("m").evidence["traffic"]
    assert traffic == {"recent": after.requests, "earlier": before.requests}

"""Is the model served (monitoring/serving/operations.py): a failed probe and traffic that
stopped are outages; a server that answers is not."""

from __future__ import annotations

import time

from serving_testkit import infer, wait_flushed

from serving.conftest import Running, training_frame
from shipyard.clock import FakeClock
from shipyard.monitoring import ServingMonitor


def test_outage_from_a_failed_probe_and_from_traffic_that_stopped(served: Running) -> None:
    with served.client() as c:
        infer(c, training_frame(n=3)[0].to_numpy(), "t")
    wait_flushed(served, 3)
    monitor = ServingMonitor(served.ws.store, served.registry)
    down = monitor.outage("iris", "http://127.0.0.1:9")
    assert down.status == "alert" and "probe failed" in down.summary
    later = FakeClock(time.time() + 2 * monitor.config.period_s)
    quiet = ServingMonitor(served.ws.store, served.registry, clock=later).outage("iris")
    assert quiet.status == "alert" and "no traffic" in quiet.summary
    assert monitor.outage("iris", served.url).status == "ok"

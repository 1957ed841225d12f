"""``/metrics`` over real HTTP: the newest point of every series, parsed back with
prometheus_client's own text parser."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from alerting_testkit import write_point
from prometheus_client.parser import text_string_to_metric_families

from shipyard.alerting.exposition import MetricsServer
from shipyard.store import Store

T0 = 1_700_000_000.0


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_series_is_exposed_with_its_newest_value(store: Store) -> None:
    write_point(store, "shipyard_drift_score", {"column": "age"}, T0, 0.1)
    write_point(store, "shipyard_drift_score", {"column": "age"}, T0 + 5, 0.3)
    write_point(store, "shipyard_drift_score", {"column": 'we"ird\\'}, T0, 0.2)
    write_point(store, "shipyard_quota_used", {"pool": "gpu"}, T0, 3)
    write_point(store, "not a metric name", {}, T0, 1)
    server = MetricsServer(store).start()
    try:
        samples = _scrape(f"http://127.0.0.1:{server.port}/metrics")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
    finally:
        server.stop()
    assert samples[("shipyard_drift_score", frozenset({("column", "age")}))] == 0.3
    assert samples[("shipyard_drift_score", frozenset({("column", 'we"ird\\')}))] == 0.2
    assert samples[("shipyard_quota_used", frozenset({("pool", "gpu")}))] == 3
    assert not any(name.startswith("not") for name, _ in samples)

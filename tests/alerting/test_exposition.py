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


def test_a_scraper_that_hangs_up_early_gets_no_traceback_and_the_next_one_an_answer(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prometheus gives up on a scrape at its timeout; the write then hits a closed socket.
    The body here (20,000 series, ~1.5 MB) is larger than loopback's socket buffers, so the
    write fails for certain once the client has reset the connection."""
    import socket
    import struct
    import time

    from shipyard.store.tables import MetricPoint

    with store.session() as s:
        s.add_all(
            MetricPoint.of(
                "shipyard_serving_requests_total",
                {"model": f"m{i}", "version": "1", "pad": "x" * 20},
                T0,
                i,
            )
            for i in range(20_000)
        )
    server = MetricsServer(store).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1)  # the answer has started
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(1.0)  # the handler meets the reset connection
        samples = _scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert len(samples) == 20_000
    assert "Traceback" not in capsys.readouterr().err

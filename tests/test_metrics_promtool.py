"""Both ``/metrics`` of a real deployment: ``shipyard serve`` (two workers) and ``shipyard daemon``
over one workspace, scraped over sockets. ``promtool check metrics`` accepts each page, and one
Prometheus scraping both sees every family once, typed as the catalogue says."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from serving.conftest import first_answer, fit_classifier, free_port
from shipyard.metrics import CATALOGUE_LIST, MetricSpec
from shipyard.registry import Registry
from shipyard.serving.split import set_split
from shipyard.serving.telemetry import Telemetry
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace

pytestmark = pytest.mark.slow


def _exposed(spec: MetricSpec) -> str:
    return spec.name.removesuffix("_total") if spec.type == "counter" else spec.name


def _write_every_store_series(ws: Workspace) -> None:
    """One point of every store family of the catalogue, with every label it may carry."""
    now = time.time()
    with ws.store.session() as s:
        for spec in CATALOGUE_LIST:
            if spec.where == "store" and spec.name != "ALERTS":
                labels = {k: "0.99" if k == "quantile" else "x" for k in spec.labels}
                s.add(MetricPoint.of(spec.name, labels, now, 0.5))


def _start(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(cwd / "home"),
        SHIPYARD_USER="tester",
        SHIPYARD_SERVING__FLUSH_INTERVAL_S="0.2",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "shipyard", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _scrape_until(url: str, proc: subprocess.Popen[bytes], needle: str) -> str:
    deadline = time.monotonic() + 120
    while True:
        try:
            text = httpx.get(url, timeout=5).text
            if needle in text:
                return text
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{url} never showed {needle}"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(model server's page, daemon's page) after good and bad requests have been flushed."""
    tmp = tmp_path_factory.mktemp("deployment")
    ws = Workspace.open(home=tmp / "home")
    clf, x = fit_classifier()
    Registry.of(ws).register("iris", clf, training_data=x, alias="champion")
    Registry.of(ws).register("iris", clf, training_data=x)  # v2 shadows v1: its copies counted
    with ws.store.session(immediate=True) as s:
        set_split(s, "iris", stable=1, shadow=2, shadow_pct=100.0, now=time.time())
    _write_every_store_series(ws)
    port, metrics_port = free_port(), free_port()
    server = _start("serve", "--port", str(port), "--workers", "2", "--model", "iris", cwd=tmp)
    daemon = _start("daemon", "--metrics-port", str(metrics_port), "--tick", "0.5", cwd=tmp)
    try:
        assert first_answer(server, port, timeout_s=120).status_code == 200
        bad = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"instances": [[0.1]]}, timeout=10
        )
        assert 400 <= bad.status_code < 500
        deadline = time.monotonic() + 120
        flushed = select(MetricPoint.value).where(
            MetricPoint.name == "shipyard_serving_data_errors_total", MetricPoint.value > 0
        )
        while True:
            with ws.store.session() as s:
                if s.scalars(flushed).first() is not None:
                    break
            assert time.monotonic() < deadline, "the server never flushed its windows"
            time.sleep(0.2)
        _scrape_until(
            f"http://127.0.0.1:{port}/metrics", server, "shipyard_http_shadow_copies_total"
        )
        worker_page = _scrape_until(
            f"http://127.0.0.1:{port}/metrics", server, "shipyard_http_request_errors_total"
        )
        daemon_page = _scrape_until(
            f"http://127.0.0.1:{metrics_port}/metrics", daemon, 'model="iris"'
        )
        yield worker_page, daemon_page
    finally:
        _stop(server)
        _stop(daemon)
        ws.store.dispose()


def _families(page: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(page)}


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (apt-get install prometheus; .ci/run does it)",
)
@pytest.mark.parametrize("which", ["model server", "daemon"])
def test_promtool_accepts_the_page(pages: tuple[str, str], which: str) -> None:
    page = pages[0] if which == "model server" else pages[1]
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (apt-get install prometheus; .ci/run does it)",
)
def test_promtool_accepts_a_single_workers_page(workspace: Workspace) -> None:
    """Without --workers the page comes from the worker's own registry (``_created`` samples
    and all), not from prometheus-client's multiprocess files."""
    clf, x = fit_classifier()
    info = Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    telemetry = Telemetry(workspace.store, workspace.artifacts, enabled=False)
    row = x.to_numpy()[:1]
    telemetry.ok(info, row, clf.predict(row), None, 0.003, "ok")
    telemetry.error(info, "data", 400, 0.001, "bad", "missing column")
    page = telemetry.exposition().decode()
    assert "shipyard_http_request_errors_total" in page and "_created" in page
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_promtool_refuses_latency_quantiles_typed_as_a_gauge() -> None:
    """The check is not vacuous: the store's latency quantiles as a gauge fail it, which is why
    the catalogue types them as a summary (a client-side quantile over a sliding window)."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does it)")
    page = (
        "# HELP shipyard_serving_request_duration_seconds Latency quantiles.\n"
        "# TYPE shipyard_serving_request_duration_seconds gauge\n"
        'shipyard_serving_request_duration_seconds{model="m",quantile="0.99"} 0.2\n'
    )
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "quantile" in out.stdout + out.stderr


def test_one_prometheus_scraping_both_sees_no_family_twice(pages: tuple[str, str]) -> None:
    worker, daemon = (_families(p) for p in pages)
    assert not worker.keys() & daemon.keys()
    samples = [
        {s.name for f in text_string_to_metric_families(p) for s in f.samples} for p in pages
    ]
    assert not samples[0] & samples[1]


@pytest.mark.parametrize("where", ["worker", "store"])
def test_every_catalogued_family_is_exposed_with_its_type(
    pages: tuple[str, str], where: str
) -> None:
    page = _families(pages[0] if where == "worker" else pages[1])
    expected = {_exposed(s): s.type for s in CATALOGUE_LIST if s.where == where}
    assert {name: page.get(name) for name in expected} == expected
    assert [name for name, kind in page.items() if kind == "unknown"] == []

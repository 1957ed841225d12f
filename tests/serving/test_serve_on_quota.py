"""``shipyard serve --pool``: a real server process on a quota lease — held while it runs with its
measured usage, released on SIGTERM, refused in one line when the pool cannot grant it; and the
instance record the control loop probes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from serving.conftest import first_answer, fit_classifier, free_port
from shipyard.clock import FakeClock
from shipyard.quota import LeaseManager
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.registry import Registry
from shipyard.serving.instances import (
    InstanceKeeper,
    ProcessUsage,
    instance_leases,
    live_instances,
    serving_request,
)
from shipyard.store.quota import QuotaLease
from shipyard.store.serving import ServingInstance
from shipyard.workspace import Workspace

MiB = 1024**2
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"


@pytest.fixture
def ws(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A workspace on SQLite, then PostgreSQL, that a child process opens too (same env)."""
    monkeypatch.setenv("SHIPYARD_DB_URL", db_url)
    monkeypatch.setenv("SHIPYARD_QUOTA__LEASE_TTL_S", "3")
    workspace = Workspace.open(home=tmp_path / "home")
    apply_pools(
        workspace.store,
        [resolve(PoolSpec(name="serving", capacity={"cpu": 4, "memory": "4Gi"}), 1.0)],
    )
    yield workspace
    workspace.store.dispose()


def _serve(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shipyard", "serve", *args],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _leases(ws: Workspace) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(s.scalars(select(QuotaLease)))


def test_serve_holds_a_lease_with_measured_usage_and_releases_it_on_sigterm(
    ws: Workspace, tmp_path: Path
) -> None:
    clf, x = fit_classifier()
    Registry.of(ws).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    proc = _serve(tmp_path, "--port", str(port), "--pool", "serving", "--memory", "1Gi")
    try:
        r = first_answer(proc, port)
        assert r.status_code == 200
        # a heartbeat (every ttl/3 = 1 s) has reported what the server's processes use
        deadline = time.monotonic() + 10
        while not (held := [x for x in _leases(ws) if x.status == "held"]) or not held[0].used:
            assert time.monotonic() < deadline, "no heartbeat with usage"
            time.sleep(0.2)
        lease = held[0]
        assert lease.pool == "serving" and lease.pipeline == f"serve:127.0.0.1:{port}"
        assert lease.step == "serve" and lease.holder_pid == proc.pid
        assert lease.resources == {"cpu": 1.0, "memory": 1024.0 * MiB}
        rss = psutil.Process(proc.pid).memory_info().rss
        assert lease.used["memory"] == pytest.approx(rss, rel=0.25)
        assert 0 <= lease.used["cpu"] < 2.5
        (instance,) = live_instances(ws.store, time.time(), "iris")
        assert instance.url == f"http://127.0.0.1:{port}" and instance.lease_id == lease.id
        (with_lease,) = instance_leases(ws.store, time.time(), "iris")
        assert with_lease.granted["memory"] == 1024.0 * MiB
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert "in pool serving" in out.decode()
    (ended,) = _leases(ws)
    assert ended.status == "released" and ended.reason == "model server stopped"
    assert live_instances(ws.store, time.time()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool", "serving", "--cpu", "8"], "pool 'serving'"),
        (["--pool", "nowhere"], "no pool named 'nowhere'"),
        (["--pool", "serving", "--memory", "lots"], "--memory: 'lots' is not a quantity"),
    ],
)
def test_serve_refuses_in_one_line_when_the_pool_cannot_grant_it(
    ws: Workspace, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _serve(tmp_path, "--port", str(free_port()), *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err.decode()
    assert b"serving on" not in out
    assert _leases(ws) == []
    with ws.store.session() as s:
        assert list(s.scalars(select(ServingInstance))) == []


def test_a_killed_server_leaves_its_lease_to_expire_and_its_record_to_lapse(
    ws: Workspace,
) -> None:
    """What SIGKILL leaves behind, on a fake clock: no heartbeat, so both lapse after the ttl."""
    clock = FakeClock(1_700_000_000.0)
    keeper = InstanceKeeper(
        ws.store,
        url="http://127.0.0.1:1",
        host="127.0.0.1",
        workers=1,
        ttl_s=3,
        leases=LeaseManager(ws.store, clock=clock, lease_ttl_s=3),
        request=serving_request("127.0.0.1", 1, "serving", 1),
        clock=clock,
        models=lambda: ["iris"],
    )
    keeper.start()
    keeper._stop.set()  # the thread stops beating, as if the process were gone
    assert [i.url for i in live_instances(ws.store, clock.time(), "iris")] == ["http://127.0.0.1:1"]
    clock.advance(2)
    keeper.beat()
    (lease,) = _leases(ws)
    assert lease.status == "held" and set(lease.used) == {"cpu", "memory"}
    clock.advance(4)
    assert live_instances(ws.store, clock.time()) == []
    from shipyard.quota import reclaim_expired

    assert reclaim_expired(ws.store, clock) == [lease.id]
    keeper.stop()  # releasing an expired lease changes nothing
    assert _leases(ws)[0].status == "expired"


def test_process_usage_counts_the_cpu_of_the_whole_process_tree() -> None:
    """A child that spins for 0.6 s shows as about one core over that time."""
    usage = ProcessUsage()
    usage.sample()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SPIN + "time.sleep(5)",
        ]
    )
    try:
        time.sleep(1.2)
        got = usage.sample()
        assert got["cpu"] == pytest.approx(0.6 / 1.2, abs=0.2)
        assert got["memory"] >= psutil.Process().memory_info().rss
    finally:
        child.kill()
        child.wait()


def test_the_migration_creates_the_instances_table_the_model_describes(ws: Workspace) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
    from shipyard.store import Base

    with ws.store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if "serving_instances" in str(d)] == []
    assert "0009_serving_instances" in ws.store.applied_revisions()

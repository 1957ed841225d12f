"""``shipyard serve --pool``: a real server process on a quota lease — held while it runs with its
measured usage, released on SIGTERM, refused in one line when the pool cannot grant it; and the
instance record the control loop probes."""

from __future__ import annotations

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
from serving.processes import START_S, shipyard_serve
from shipyard.clock import FakeClock
from shipyard.quota import LeaseManager, LeaseRequest
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.registry import Registry
from shipyard.serving.instances import (
    InstanceKeeper,
    ProcessUsage,
    instance_leases,
    list_instances,
    live_instances,
    reap_stale_instances,
    serving_request,
)
from shipyard.store.quota import QuotaLease
from shipyard.store.serving import ServingInstance
from shipyard.workspace import Workspace

MiB = 1024**2
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"


@pytest.fixture
def ws(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    """A workspace on SQLite, then PostgreSQL, that a child process opens too (same env)."""
    monkeypatch.setenv("SHIPYARD_DB_URL", migrated_db_url)
    monkeypatch.setenv("SHIPYARD_QUOTA__LEASE_TTL_S", "3")
    workspace = Workspace.open(home=tmp_path / "home")
    apply_pools(
        workspace.store,
        [resolve(PoolSpec(name="serving", capacity={"cpu": 4, "memory": "4Gi"}), 1.0)],
    )
    yield workspace
    workspace.store.dispose()


def _leases(ws: Workspace) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(s.scalars(select(QuotaLease)))


def test_serve_holds_a_lease_with_measured_usage_and_releases_it_on_sigterm(
    ws: Workspace, tmp_path: Path
) -> None:
    clf, x = fit_classifier()
    Registry.of(ws).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    proc = shipyard_serve(tmp_path, "--port", str(port), "--pool", "serving", "--memory", "1Gi")
    try:
        r = first_answer(proc, port, START_S)
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
        (
            ["--pool", "serving", "--cpu", "8"],
            "pool 'serving' cannot ever grant cpu=8: at most 4 is available (pool capacity); "
            "a server may hold at most cpu=4, memory=4.0Gi there: ask for less with "
            "--cpu/--memory",
        ),
        (["--pool", "nowhere"], "no pool named 'nowhere'"),
        (["--pool", "serving", "--memory", "lots"], "--memory: 'lots' is not a quantity"),
    ],
)
def test_serve_refuses_in_one_line_when_the_pool_cannot_grant_it(
    ws: Workspace, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = shipyard_serve(tmp_path, "--port", str(free_port()), *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err.decode()
    assert b"serving on" not in out
    assert _leases(ws) == []
    with ws.store.session() as s:
        assert list(s.scalars(select(ServingInstance))) == []


def test_serve_says_it_waits_for_a_full_pool_and_names_who_holds_it(
    ws: Workspace, tmp_path: Path
) -> None:
    blocker = LeaseManager(ws.store, lease_ttl_s=60)
    held = blocker.acquire(LeaseRequest("batch-scoring", {"cpu": 4}, pool="serving"))
    try:
        proc = shipyard_serve(
            tmp_path, "--port", str(free_port()), "--pool", "serving", "--wait", "2"
        )
        out, err = proc.communicate(timeout=60)
    finally:
        blocker.release(held)
        blocker.close()
    assert proc.returncode == 1
    assert out.decode().splitlines()[0] == (
        "waiting for room in pool 'serving' for cpu=1, memory=512.0Mi "
        "(0s of at most 2s; held by batch-scoring)"
    )
    (line,) = err.decode().strip().splitlines()
    assert line == (
        "error: pool 'serving' had no room for cpu=1, memory=512.0Mi within 2s (held by "
        "batch-scoring); try again later, wait longer with --wait, or ask for less with "
        "--cpu/--memory"
    )
    (request,) = [x for x in _leases(ws) if x.pipeline.startswith("serve:")]
    assert request.status == "cancelled", "it left the queue"
    with ws.store.session() as s:
        assert list(s.scalars(select(ServingInstance))) == []


def _keeper(ws: Workspace, clock: FakeClock, lease_ttl_s: float) -> InstanceKeeper:
    """The keeper of a server at port 1 whose record lives 3 s, on a lease in 'serving'."""
    return InstanceKeeper(
        ws.store,
        url="http://127.0.0.1:1",
        host="127.0.0.1",
        workers=1,
        ttl_s=3,
        leases=LeaseManager(ws.store, clock=clock, lease_ttl_s=lease_ttl_s),
        request=serving_request("127.0.0.1", 1, "serving", 1),
        clock=clock,
        models=lambda: ["iris"],
    )


def test_a_server_whose_lease_was_reclaimed_and_cannot_be_regranted_stops(
    ws: Workspace,
) -> None:
    """Fencing, as for a step: a server whose lease expired (a stalled machine) and whose pool
    has since granted the room to others must stop, not serve on capacity it no longer holds."""
    clock = FakeClock(1_700_000_000.0)
    lost: list[str] = []
    keeper = _keeper(ws, clock, lease_ttl_s=3)
    keeper.on_lost = lost.append
    keeper.start()
    keeper._stop.set()  # no background heartbeats: this test beats by hand
    try:
        clock.advance(4)  # past the ttl with no heartbeat
        from shipyard.quota import reclaim_expired

        (reclaimed,) = reclaim_expired(ws.store, clock)
        others = LeaseManager(ws.store, clock=clock, lease_ttl_s=3)
        taken = others.acquire(LeaseRequest("batch-scoring", {"cpu": 4}, pool="serving"))
        keeper.beat()
        assert keeper.lease is None
        (reason,) = lost
        assert reason.startswith(f"lease {reclaimed} in pool serving was lost")
        assert reason.endswith("the server stops")
        others.release(taken)
        others.close()
    finally:
        keeper.stop()


def test_a_killed_server_leaves_its_lease_to_expire_and_its_record_to_lapse(
    ws: Workspace,
) -> None:
    """What SIGKILL leaves behind, on a fake clock: no heartbeat, so both lapse after the ttl."""
    clock = FakeClock(1_700_000_000.0)
    keeper = _keeper(ws, clock, lease_ttl_s=3)
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


def test_a_silent_server_is_closed_as_stale_but_keeps_its_lease_and_a_heartbeat_reopens_it(
    ws: Workspace,
) -> None:
    """A record silent past its ttl whose process cannot be seen (it may be on another machine,
    with its store away for a while) is closed by the next server, but its lease is left to
    quota's expiry, and the server's next heartbeat reopens the record."""
    clock = FakeClock(time.time())  # a real epoch: the process' start time is compared with it
    keeper = _keeper(ws, clock, lease_ttl_s=30)
    keeper.start()
    keeper._stop.set()
    try:
        clock.advance(10)
        (stale,) = list_instances(ws.store, clock.time())
        assert (stale.state, stale.why, stale.process_gone) == (
            "stale",
            "no heartbeat for 10s",
            False,
        )
        (closed,) = reap_stale_instances(ws.store, clock=clock, lease_ttl_s=30, by="a test")
        assert closed.state == "stopped" and closed.lease_status == "held"
        assert closed.stop_reason == "no heartbeat for 10s; closed by a test"
        assert live_instances(ws.store, clock.time()) == []
        keeper.beat()
        (again,) = list_instances(ws.store, clock.time())
        assert again.state == "live" and again.stop_reason is None
        assert [i.id for i in live_instances(ws.store, clock.time())] == [again.id]
    finally:
        keeper.stop()
    (ended,) = list_instances(ws.store, clock.time(), include_stopped=True)
    assert ended.state == "stopped" and ended.lease_status == "released"


def test_process_usage_counts_the_cpu_of_the_whole_process_tree() -> None:
    """A child that spins for 0.6 CPU seconds adds them to the tree's cores × seconds (its own
    start-up on top): measured against the sample interval, so a loaded machine that stretches
    the wall time does not change the answer."""
    at: list[float] = []
    usage = ProcessUsage(clock=lambda: at.append(time.monotonic()) or at[-1])
    usage.sample()
    child = subprocess.Popen(
        [sys.executable, "-c", SPIN + "print('spun', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"spun\n"
        got = usage.sample()
        cpu_s = got["cpu"] * (at[1] - at[0])
        assert 0.55 <= cpu_s <= 1.5
        assert got["memory"] >= psutil.Process().memory_info().rss
    finally:
        child.kill()
        child.communicate()


def test_the_migration_creates_the_instances_table_the_model_describes(ws: Workspace) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
    from shipyard.store import Base

    with ws.store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if "serving_instances" in str(d)] == []
    assert {"0009_serving_instances", "0012_serving_instance_machine"} <= (
        ws.store.applied_revisions()
    )

"""The runner in a quota pool: a lease per attempt, ``--reserve`` for the DAG's peak, infeasible
steps failing at once, memory and CPU limits applied in the step, usage series from the daemon."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from shipyard.alerting.config import build_config
from shipyard.cli.runs import run_services
from shipyard.clock import FakeClock
from shipyard.daemon import Daemon, DaemonContext
from shipyard.daemon.tasks import builtin_tasks
from shipyard.errors import NotFound
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.pipelines.reservation import peak_demand, resolve_pool, step_levels
from shipyard.pipelines.runner import Runner, RunResult
from shipyard.quota.admission import QuotaAdmission
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.store.quota import QuotaLease
from shipyard.store.tables import MetricPoint, PipelineRecord
from shipyard.workspace import Workspace

WriteFile = Callable[..., Path]
MiB = 1024**2

DIAMOND = """
@step(resources=Resources(cpu=1, memory="64Mi"))
def source() -> int:
    return 1

@step(resources=Resources(cpu=1, memory="100Mi"))
def left(x: int) -> int:
    return x + 1

@step(resources=Resources(cpu="500m", memory="50Mi"))
def right(x: int) -> int:
    return x + 2

@step(resources=Resources(cpu=1, memory="64Mi"))
def join(a: int, b: int) -> int:
    return a * b

pipeline = Pipeline("diamond", kind="data")

@pipeline
def build():
    s = source()
    return join(left(s), right(s))
"""


def declare(ws: Workspace, name: str, **capacity: object) -> None:
    spec = PoolSpec(name=name, capacity=capacity, default_cap_fraction=1.0)
    apply_pools(ws.store, [resolve(spec, 1.0)])


def run(ws: Workspace, target: Path, **kw: object) -> RunResult:
    file, pipeline = load_pipeline(str(target))
    with Runner(ws, **(run_services(ws) | kw)) as runner:
        return runner.run(file, pipeline)


def pools(ws: Workspace) -> QuotaAdmission:
    return QuotaAdmission.for_workspace(ws.store, ws.settings, ws.clock)


def leases(ws: Workspace, run_id: str) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(s.scalars(select(QuotaLease).where(QuotaLease.run_id == run_id)))


def steps(ws: Workspace, run_id: str) -> dict[str, dict[str, object]]:
    return {st["step"]: st for st in get_run(ws.store, run_id)["steps"]}


def test_peak_demand_is_the_widest_level_of_the_dag(pipeline_file: WriteFile) -> None:
    _, pipeline = load_pipeline(str(pipeline_file(DIAMOND)))
    graph = pipeline.build()
    assert step_levels(graph) == {"source": 0, "left": 1, "right": 1, "join": 2}
    assert peak_demand(graph) == {"cpu": 1.5, "memory": 150 * MiB}


def test_a_run_in_a_shared_pool_takes_a_lease_per_step_and_gives_them_back(
    pg_workspace: Workspace, pipeline_file: WriteFile
) -> None:
    ws = pg_workspace
    declare(ws, "shared", cpu=2, memory="1Gi")
    result = run(ws, pipeline_file(DIAMOND), pool="shared")
    assert result.status == "succeeded", result.exit_reason
    rows = leases(ws, result.run_id)
    assert sorted(r.step for r in rows) == ["join", "left", "right", "source"]
    assert {r.status for r in rows} == {"released"}
    assert {r.pool for r in rows} == {"shared"}
    recorded = steps(ws, result.run_id)
    assert {st["enforcement"]["lease_id"] for st in recorded.values()} == {r.id for r in rows}
    with ws.store.session() as s:
        record = s.get(PipelineRecord, "diamond")
        assert record is not None and record.spec["pool"] == "shared"


def test_a_recorded_pool_is_not_used_silently_and_an_unknown_pool_is_refused(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    """Issue #19 item 4: a run goes to a pool named by the run or declared by the pipeline,
    never to one inherited from an earlier run; the choice names the recorded pool instead."""
    declare(workspace, "shared", cpu=2, memory="1Gi")
    target = pipeline_file(DIAMOND)
    run(workspace, target, pool="shared")
    again = run(workspace, target)  # no --pool: no pool, whatever an earlier run used
    assert again.status == "succeeded"
    assert leases(workspace, again.run_id) == []
    _, pipeline = load_pipeline(str(target))
    choice = resolve_pool(workspace, pipeline, None, pools(workspace))
    assert (choice.name, choice.recorded) == (None, "shared")
    assert "pass --pool shared" in choice.describe()
    assert resolve_pool(workspace, pipeline, "shared", pools(workspace)).describe() == (
        "pool 'shared' (named with --pool)"
    )
    with pytest.raises(NotFound, match="nowhere"):
        run(workspace, target, pool="nowhere")


def test_a_pipeline_declares_its_pool(workspace: Workspace, pipeline_file: WriteFile) -> None:
    declare(workspace, "shared", cpu=2, memory="1Gi")
    target = pipeline_file(DIAMOND.replace('kind="data")', 'kind="data", pool="shared")'))
    _, pipeline = load_pipeline(str(target))
    assert (
        resolve_pool(workspace, pipeline, None, pools(workspace)).describe()
        == "pool 'shared' (Pipeline(pool=…))"
    )
    result = run(workspace, target)
    assert {r.pool for r in leases(workspace, result.run_id)} == {"shared"}


def test_reserve_holds_the_peak_for_the_whole_run_and_releases_it(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    declare(workspace, "shared", cpu=2, memory="1Gi")
    result = run(workspace, pipeline_file(DIAMOND), pool="shared", reserve=True)
    assert result.status == "succeeded"
    (lease,) = leases(workspace, result.run_id)  # one lease, no per-step ones
    assert lease.step == "(run reservation)"
    assert lease.resources == {"cpu": 1.5, "memory": 150.0 * MiB}
    assert lease.status == "released"
    recorded = steps(workspace, result.run_id)
    assert {st["enforcement"]["lease_id"] for st in recorded.values()} == {lease.id}
    assert lease.granted_at is not None and lease.ended_at is not None
    for st in recorded.values():
        assert lease.granted_at <= st["started_at"] <= st["ended_at"] <= lease.ended_at


def test_a_step_that_can_never_fit_fails_at_once_with_the_quota_message(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    declare(workspace, "small", cpu=2, memory="1Gi")
    target = pipeline_file(
        """
        @step(resources=Resources(cpu=4))
        def huge() -> int:
            return 1

        pipeline = Pipeline("greedy", kind="training")

        @pipeline
        def build():
            huge()
        """
    )
    result = run(workspace, target, pool="small")
    assert result.status == "failed"
    message = "pool 'small' cannot ever grant cpu=4: at most 2 is available (pool capacity)"
    assert steps(workspace, result.run_id)["huge"]["exit_reason"] == message
    reserved = run(workspace, target, pool="small", reserve=True)
    assert reserved.exit_reason == f"not admitted: {message}"
    assert steps(workspace, reserved.run_id)["huge"]["status"] == "cancelled"


def test_a_step_over_its_declared_memory_is_killed_and_the_run_says_why(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    declare(workspace, "local", cpu=2, memory="2Gi")  # the default pool, used without --pool
    target = pipeline_file(
        """
        @step(resources=Resources(cpu=1, memory="150Mi"))
        def hog() -> int:
            blocks = []
            for _ in range(60):
                blocks.append(bytearray(16 * 1024 * 1024))
                time.sleep(0.05)
            return len(blocks)

        pipeline = Pipeline("hog", kind="data")

        @pipeline
        def build():
            hog()
        """
    )
    result = run(workspace, target)
    hog = steps(workspace, result.run_id)["hog"]
    assert result.status == "failed"
    assert str(hog["exit_reason"]).startswith("exceeded memory quota: used ")
    assert "of 150.0Mi" in str(hog["exit_reason"])
    assert {r.status for r in leases(workspace, result.run_id)} == {"released"}


def test_declared_memory_is_enforced_without_a_pool_too(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    """Issue #19 item 4: with no pool at all (plain ``shipyard run``), a step that declared
    300Mi and allocates far more is killed with the same reason as in a pool."""
    target = pipeline_file(
        """
        @step(resources=Resources(memory="300Mi"))
        def hog() -> int:
            blocks = []
            for _ in range(100):  # up to 1.6 GiB, touched (not lazily zeroed pages)
                blocks.append(b"x" * (16 * 1024 * 1024))
                time.sleep(0.02)
            return len(blocks)

        pipeline = Pipeline("hog", kind="data")

        @pipeline
        def build():
            hog()
        """
    )
    result = run(workspace, target)
    hog = steps(workspace, result.run_id)["hog"]
    assert result.status == "failed"
    assert leases(workspace, result.run_id) == []  # admitted by this machine, not a pool
    reason = str(hog["exit_reason"])
    assert reason.startswith("exceeded memory quota: used ")
    assert reason.endswith(" of 300.0Mi (watchdog)")
    assert hog["enforcement"]["memory_limit_bytes"] == int(300 * MiB * 1.1)


def test_the_step_runs_on_the_cpus_it_was_granted(
    workspace: Workspace, pipeline_file: WriteFile, tmp_path: Path
) -> None:
    declare(workspace, "local", cpu=2, memory="2Gi")
    target = pipeline_file(
        """
        import json

        @step(resources=Resources(cpu=1, memory="500Mi"))
        def where() -> int:
            seen = {"cpus": sorted(os.sched_getaffinity(0)), "omp": os.environ["OMP_NUM_THREADS"]}
            Path("seen.json").write_text(json.dumps(seen))
            return 0

        pipeline = Pipeline("where", kind="data")

        @pipeline
        def build():
            where()
        """
    )
    result = run(workspace, target)
    assert result.status == "succeeded"
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert len(seen["cpus"]) == 1 and seen["omp"] == "1"
    enforcement = steps(workspace, result.run_id)["where"]["enforcement"]
    assert enforcement["cpu_affinity"] == seen["cpus"]


def test_the_cli_runs_in_a_pool_with_a_reservation(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    import typer

    from shipyard.cli import Group, runs

    app = typer.Typer(cls=Group)  # the CLI's root group: errors become one line
    app.callback()(lambda: None)
    runs.register(app)
    declare(workspace, "shared", cpu=2, memory="1Gi")
    target = pipeline_file(DIAMOND)
    args = ["run", str(target), "--pool", "shared", "--reserve", "--priority", "7", "--json"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)  # the pool line goes to stderr: --json stays clean
    assert "pool 'shared' (named with --pool)" in out.stderr
    assert info["status"] == "succeeded"
    (lease,) = leases(workspace, info["id"])
    assert lease.priority == 7 and lease.step == "(run reservation)"
    fresh = pipeline_file(DIAMOND.replace('"diamond"', '"fresh"'), "fresh")  # no recorded pool
    bad = CliRunner().invoke(app, ["run", str(fresh), "--reserve"])
    assert bad.exit_code == 1 and "--reserve needs a pool" in bad.output


def test_the_daemon_records_quota_usage_series(workspace: Workspace) -> None:
    declare(workspace, "shared", cpu=2, memory="1Gi")
    clock = FakeClock(1_700_000_000.0)
    ctx = DaemonContext(
        workspace,
        build_config({}, home=workspace.settings.home),
        clock,
        lambda record: None,
        workspace.settings.logs_dir,
    )
    assert "quota.usage" in Daemon(ctx, tasks=builtin_tasks()).tick()
    with workspace.store.session() as s:
        names = set(s.scalars(select(MetricPoint.name)))
    assert {"shipyard_quota_capacity", "shipyard_quota_usage_rate"} <= names


def test_parallel_steps_share_a_pool_without_exceeding_it(
    workspace: Workspace, pipeline_file: WriteFile
) -> None:
    """Regression: the step threads once shared one lease manager's SQLite connection."""
    declare(workspace, "shared", cpu=2, memory="1Gi")
    target = pipeline_file(
        """
        @step(resources=Resources(cpu="500m"))
        def src() -> int:
            return 1

        @step(resources=Resources(cpu=1))
        def work(x: int, i: int) -> int:
            time.sleep(0.05)
            return x + i

        pipeline = Pipeline("wide", kind="data")

        @pipeline
        def build():
            s = src()
            for i in range(8):
                work(s, i)
        """
    )
    result = run(workspace, target, pool="shared")
    assert result.status == "succeeded", result.exit_reason
    rows = leases(workspace, result.run_id)
    assert len(rows) == 9 and {r.status for r in rows} == {"released"}
    edges: list[tuple[float, int, float]] = []
    for r in rows:
        assert r.granted_at is not None and r.ended_at is not None
        edges += [(r.granted_at, 1, r.resources["cpu"]), (r.ended_at, 0, -r.resources["cpu"])]
    held = peak = 0.0
    for _, _, delta in sorted(edges):  # at equal times a release (0) comes before a grant
        held += delta
        peak = max(peak, held)
    assert 1.0 < peak <= 2.0

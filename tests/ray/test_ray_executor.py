"""Steps on a real local Ray cluster (``ray.init(num_cpus=2)``, one per module): the demo gives
the same results as locally, quota caps hold across competing pipelines, unplaceable steps and
killed workers fail with their reason, and distributed profiling equals one process."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasketches
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from shipyard.cli.runs import run_services
from shipyard.errors import ConfigError
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.pipelines.runner import Runner, RunResult
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.stats.drift import compare
from shipyard.stats.profile import KLL_K, DatasetProfile
from shipyard.store.quota import QuotaLease
from shipyard.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
EARLY_EXIT = "RAY_enable_infeasible_task_early_exit"
HEADER = "import os, sys, time\nfrom pathlib import Path\n"
HEADER += "from shipyard.pipelines import Pipeline, Resources, step, log\n"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray for the whole module (``ray.init`` costs ~4.5 s on 2 cores)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'shipyard[ray]'")
    saved = {
        k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_enable_infeasible_task_early_exit")
    }
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ[EARLY_EXIT] = "true"  # Ray's own name for it is lower case
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(source), encoding="utf-8")
    return path


def run(ws: Workspace, target: Path, params: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    from shipyard.pipelines.ray_executor import RayExecutor

    file, pipeline = load_pipeline(str(target))
    executor = kw.pop("executor", None) or RayExecutor()
    with Runner(ws, executor=executor, **(run_services(ws) | kw)) as runner:
        return runner.run(file, pipeline, params)


def leases(ws: Workspace, run_id: str) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(s.scalars(select(QuotaLease).where(QuotaLease.run_id == run_id)))


def produced(ws: Workspace, run_id: str) -> dict[str, list[str]]:
    return {
        st["step"]: sorted(e["digest"] for e in st["lineage"] if e["direction"] == "produced")
        for st in get_run(ws.store, run_id)["steps"]
    }


def test_without_ray_the_executor_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipyard.pipelines.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'shipyard\[ray\]'"):
        RayExecutor()


def test_the_cli_says_how_to_install_ray_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from shipyard.cli import Group, runs

    app = typer.Typer(cls=Group)
    app.callback()(lambda: None)
    runs.register(app)
    target = write(
        tmp_path,
        "tiny",
        """
        @step()
        def one() -> int:
            return 1

        pipeline = Pipeline("tiny", kind="data")

        @pipeline
        def build():
            one()
        """,
    )
    monkeypatch.setitem(sys.modules, "ray", None)
    out = CliRunner().invoke(app, ["run", str(target), "--executor", "ray"])
    assert out.exit_code == 1
    assert "pip install 'shipyard[ray]'" in out.output and "Traceback" not in out.output
    misuse = CliRunner().invoke(app, ["run", str(target), "--address", "ray-head:6379"])
    assert misuse.exit_code == 1 and "--address is for --executor ray" in misuse.output


def test_the_demo_gives_the_same_results_on_ray_as_locally(
    ray_cluster: Any, tmp_path: Path
) -> None:
    local = Workspace.open(home=tmp_path / "local")
    on_ray = Workspace.open(home=tmp_path / "ray")
    results: dict[str, list[dict[str, list[str]]]] = {"local": [], "ray": []}
    for name, params in (("data", None), ("training", {"C": 0.5})):
        file, pipeline = load_pipeline(str(EXAMPLES / f"{name}.py"))
        with Runner(local, **run_services(local)) as runner:
            mine = runner.run(file, pipeline, params)
        theirs = run(on_ray, EXAMPLES / f"{name}.py", params)
        assert (mine.status, theirs.status) == ("succeeded", "succeeded"), theirs.exit_reason
        results["local"].append(produced(local, mine.run_id))
        results["ray"].append(produced(on_ray, theirs.run_id))
        assert get_run(on_ray.store, theirs.run_id)["executor"] == "ray"
    # artifacts are content-addressed: the same bytes on both executors
    assert results["ray"] == results["local"]


def test_quota_caps_hold_when_two_pipelines_compete_on_ray(
    ray_cluster: Any, workspace: Workspace, tmp_path: Path
) -> None:
    members = [MemberSpec(pipeline=p, share=0.5, cap=0.5) for p in ("red", "blue")]
    spec = PoolSpec(name="shared", capacity={"cpu": 2}, members=members)
    apply_pools(workspace.store, [resolve(spec, 0.5)])
    source = """
        @step(resources=Resources(cpu=1))
        def nap(i: int) -> int:
            time.sleep(0.6)
            return i

        pipeline = Pipeline("{name}", kind="data")

        @pipeline
        def build():
            nap(1)
            nap(2)
        """
    files = {p: write(tmp_path, p, source.replace("{name}", p)) for p in ("red", "blue")}
    results: dict[str, RunResult] = {}

    def go(name: str) -> None:
        results[name] = run(workspace, files[name], pool="shared")

    threads = [threading.Thread(target=go, args=(p,)) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {r.status for r in results.values()} == {"succeeded"}
    for name, result in results.items():
        rows = leases(workspace, result.run_id)
        assert len(rows) == 2 and {r.status for r in rows} == {"released"}
        first, second = sorted(rows, key=lambda r: r.granted_at or 0)
        assert first.ended_at is not None and second.granted_at is not None
        assert second.granted_at >= first.ended_at, f"{name} held 2 CPUs over its cap of 1"


def test_a_step_no_ray_node_can_place_fails_at_once_and_gives_its_lease_back(
    ray_cluster: Any, workspace: Workspace, tmp_path: Path
) -> None:
    spec = PoolSpec(name="big", capacity={"cpu": 8}, default_cap_fraction=1.0)
    apply_pools(workspace.store, [resolve(spec, 1.0)])
    target = write(
        tmp_path,
        "wide",
        """
        @step(resources=Resources(cpu=3))
        def wide() -> int:
            return 1

        pipeline = Pipeline("wide", kind="training")

        @pipeline
        def build():
            wide()
        """,
    )
    begun = time.monotonic()
    result = run(workspace, target, pool="big")
    assert time.monotonic() - begun < 60  # it did not hang waiting for a node
    assert result.status == "failed"
    (step,) = get_run(workspace.store, result.run_id)["steps"]
    assert step["exit_reason"] == (
        "step 'wide': no Ray node can ever place it: it asks CPU=3, the largest node has CPU=2"
    )
    assert [r.status for r in leases(workspace, result.run_id)] == ["released"]


def test_a_killed_ray_worker_fails_the_step_with_its_reason_and_releases_the_lease(
    ray_cluster: Any, workspace: Workspace, tmp_path: Path
) -> None:
    spec = PoolSpec(name="shared", capacity={"cpu": 2}, default_cap_fraction=1.0)
    apply_pools(workspace.store, [resolve(spec, 1.0)])
    pid_file = tmp_path / "worker.pid"
    target = write(
        tmp_path,
        "doomed",
        f"""
        @step(resources=Resources(cpu=1))
        def doomed() -> int:
            Path({str(pid_file)!r}).write_text(str(os.getpid()))
            time.sleep(60)
            return 1

        pipeline = Pipeline("doomed", kind="data")

        @pipeline
        def build():
            doomed()
        """,
    )

    def kill_when_started() -> None:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    result = run(workspace, target, pool="shared")
    killer.join()
    assert result.status == "failed"
    (step,) = get_run(workspace.store, result.run_id)["steps"]
    assert str(step["exit_reason"]).startswith("Ray worker died: ")
    assert [r.status for r in leases(workspace, result.run_id)] == ["released"]


def test_distributed_profile_of_20_parquet_files_equals_one_process(
    ray_cluster: Any, tmp_path: Path
) -> None:
    from shipyard.pipelines.distributed import profile_parquet_files

    rng = np.random.default_rng(7)
    paths = []
    for i in range(20):
        n = 2_000
        frame = pd.DataFrame(
            {
                "x": rng.normal(i / 10, 1.0, n),
                "y": np.where(rng.random(n) < 0.05, np.nan, rng.exponential(2.0, n)),
                "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
            }
        )
        path = tmp_path / f"part-{i:02d}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    reference = DatasetProfile.from_frame(pd.read_parquet(paths[0]))
    whole = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    single = DatasetProfile.from_frame(whole, reference=reference)
    spread = profile_parquet_files(paths, reference=reference, executor="ray")
    assert spread.rows == single.rows == 40_000
    for name, col in single.columns.items():
        other = spread.columns[name]
        assert (other.count, other.missing, other.valid) == (col.count, col.missing, col.valid)
        assert other.histogram == col.histogram
        assert other.frequencies == col.frequencies
        assert other.mean == pytest.approx(col.mean, rel=1e-12)
        assert other.m2 == pytest.approx(col.m2, rel=1e-9)
        if col.kind == "numeric":
            ranks = np.linspace(0.01, 0.99, 99)
            values = np.sort(whole[name].dropna().to_numpy())
            # KLL's stated single-rank error (99 % confidence), DataSketches for k = KLL_K
            epsilon = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
            for q, rank in zip(other.quantiles(ranks), ranks, strict=True):
                true_rank = np.searchsorted(values, q, side="right") / len(values)
                assert abs(true_rank - rank) <= epsilon
    assert compare(reference, spread).drifted_columns == compare(reference, single).drifted_columns
    local = profile_parquet_files(paths, reference=reference, executor="local")
    assert local.to_json()["rows"] == spread.rows
    assert local.columns["x"].histogram == spread.columns["x"].histogram


def test_reused_ray_workers_keep_each_step_in_its_own_log_and_folder(
    ray_cluster: Any, workspace: Workspace, tmp_path: Path
) -> None:
    from shipyard.pipelines.ray_executor import RayExecutor

    target = write(
        tmp_path,
        "chatty",
        """
        @step(resources=Resources(cpu=1))
        def first() -> int:
            print("said by first", os.getpid())
            os.environ["LEAKED"] = "1"
            return 20

        @step(resources=Resources(cpu=1))
        def second(x: int) -> int:
            print("said by second", os.getpid(), os.environ.get("LEAKED"))
            return x + 1

        pipeline = Pipeline("chatty", kind="data")

        @pipeline
        def build():
            second(first())
        """,
    )
    result = run(workspace, target, executor=RayExecutor(reuse_workers=True))
    assert result.status == "succeeded", result.exit_reason
    steps = {st["step"]: st for st in get_run(workspace.store, result.run_id)["steps"]}
    first_log = Path(steps["first"]["log_path"]).read_text()
    second_log = Path(steps["second"]["log_path"]).read_text()
    assert "said by first" in first_log and "said by second" not in first_log
    assert (
        "said by second" in second_log
        and second_log.split("said by second")[1].split()[1] == "None"
    )
    (digest,) = [e["digest"] for e in steps["second"]["lineage"] if e["direction"] == "produced"]
    assert workspace.artifacts.get_object(digest, "application/json") == 21
    assert steps["second"]["cpu_seconds"] is not None and steps["second"]["cpu_seconds"] < 5
    # Ray placed them: no CPU affinity was set, and the record says so
    assert {st["enforcement"]["cpu_affinity"] for st in steps.values()} == {"not applied"}

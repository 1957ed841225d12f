"""The Ray executor against the local executor, and distributed profiling with 1 vs 2 workers.

1. **Per-step overhead**: a chain of ``--steps`` no-op steps (each reads the previous output), run
   by Shipyard's runner with the local executor (forkserver processes) and with the Ray executor
   (one Ray task, in a worker of its own, per step; and with ``reuse_workers=True``) on a local
   Ray of 2 CPUs. Both warm (one
   untimed run first); the median of ``--repeats`` runs, divided by the number of steps. Both
   include the same run/step records, artifacts and lineage in SQLite. For context, the cost of
   a bare Ray no-op task with a reused worker and with ``max_calls=1`` (what the executor uses).
2. **Profiling throughput**: ``--files`` Parquet files of ``--rows`` rows × 10 columns profiled
   in one process (``executor="local"``) and on Ray with 1 and with 2 CPUs (one task per file,
   profiles merged). Rows per second, median of ``--repeats``.

    .venv/bin/python benchmarks/ray_executor.py [--steps 10] [--files 8] [--rows 250000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PIPELINE = """
from shipyard.pipelines import Pipeline, Resources, step

@step(resources=Resources(cpu="500m"))
def noop(*inputs: int) -> int:
    return 1

chain = Pipeline("bench-ray-chain", kind="data")

@chain
def build():
    x = noop()
    for _ in range({steps} - 1):
        x = noop(x)
"""


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_overhead(root: Path, steps: int, repeats: int) -> list[tuple[str, float]]:
    import ray
    from shipyard.cli.runs import run_services
    from shipyard.pipelines.loader import load_pipeline
    from shipyard.pipelines.local import LocalExecutor
    from shipyard.pipelines.ray_executor import RayExecutor
    from shipyard.pipelines.runner import Runner
    from shipyard.workspace import Workspace

    path = root / "chain.py"
    path.write_text(PIPELINE.format(steps=steps), encoding="utf-8")
    file, pipeline = load_pipeline(str(path))
    rows: list[tuple[str, float]] = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        executors = (
            ("local executor", LocalExecutor),
            ("ray executor", RayExecutor),
            ("ray executor, reuse_workers", lambda: RayExecutor(reuse_workers=True)),
        )
        for name, make in executors:
            ws = Workspace.open(home=root / name.replace(" ", "-").replace(",", ""))
            services = run_services(ws)  # wired as `shipyard run` wires it
            with Runner(ws, executor=make(), **services) as runner:  # type: ignore[no-untyped-call]

                def once(r: Runner = runner) -> None:
                    result = r.run(file, pipeline)
                    assert result.status == "succeeded", result.exit_reason

                once()
                rows.append((f"{name}, per step (ms)", median_time(once, repeats) / steps * 1e3))

        def noop() -> int:
            return 1

        for label, options in (("reused worker", {}), ("max_calls=1", {"max_calls": 1})):
            task = ray.remote(num_cpus=0.5, **options)(noop)  # type: ignore[call-overload]
            ray.get(task.remote())

            def chain(t: object = task) -> None:
                for _ in range(steps):
                    ray.get(t.remote())  # type: ignore[attr-defined]

            rows.append((f"bare Ray task, {label} (ms)", median_time(chain, repeats) / steps * 1e3))
    finally:
        ray.shutdown()
    return rows


def make_files(root: Path, files: int, rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        frame = pd.DataFrame({f"x{j}": rng.normal(j, 1 + j / 10, rows) for j in range(8)})
        frame["colour"] = rng.choice(["red", "green", "blue", "grey"], rows)
        frame["flag"] = rng.random(rows) < 0.1
        path = root / f"part-{i:03d}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    return paths


def profiling(root: Path, files: int, rows: int, repeats: int) -> list[tuple[str, float]]:
    import ray
    from shipyard.pipelines.distributed import profile_parquet_file, profile_parquet_files
    from shipyard.stats.profile import DatasetProfile

    paths = make_files(root, files, rows)
    reference = DatasetProfile.from_json(profile_parquet_file(paths[0], None))
    total = files * rows
    out = []
    seconds = median_time(lambda: profile_parquet_files(paths, reference, "local"), repeats)
    out.append(("one process (rows/s)", total / seconds))
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            profile_parquet_files(paths[:cpus], reference, "ray")  # start the workers
            seconds = median_time(lambda: profile_parquet_files(paths, reference, "ray"), repeats)
        finally:
            ray.shutdown()
        out.append((f"Ray, {cpus} worker{'s' if cpus > 1 else ''} (rows/s)", total / seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)
        overhead = step_overhead(root, args.steps, args.repeats)
        throughput = profiling(root, args.files, args.rows, args.repeats)
    print(f"\nper-step overhead, chain of {args.steps} no-op steps, {os.cpu_count()} CPUs")
    print(f"{'':44} {'value':>12}")
    for label, value in overhead:
        print(f"{label:44} {value:12.1f}")
    local_ms, ray_ms, reuse_ms = overhead[0][1], overhead[1][1], overhead[2][1]
    print(f"{'ray / local':44} {ray_ms / local_ms:11.1f}x")
    print(f"{'ray reuse_workers / local':44} {reuse_ms / local_ms:11.1f}x")
    print(f"\nprofiling {args.files} files × {args.rows:,} rows × 10 columns")
    for label, value in throughput:
        print(f"{label:44} {value:12,.0f}")
    one, two = throughput[1][1], throughput[2][1]
    print(f"{'speed-up, 2 workers / 1 worker':44} {two / one:11.2f}x")


if __name__ == "__main__":
    main()

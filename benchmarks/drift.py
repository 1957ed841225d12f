"""Drift detection: Shipyard against Evidently (DataDriftPreset), profiling against whylogs.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/drift.py    # 200k × (20 numeric + 5 categorical), 1M × 20
    .venv/bin/python benchmarks/drift.py --sizes 200k

Evidently 0.7.x does not import with pandas 3 and whylogs pins pandas < 3 too, so each runs in
its own virtualenv under benchmarks/.venvs/ (created on first use), as a subprocess reading the
same Parquet files. Every measured job runs in a fresh process that reports its wall time and
its peak resident memory (sampled every 2 ms during the timed section, plus the data it loaded
before the clock started). Goals (issue 3): ≥ 30× faster than Evidently with the reference
profile precomputed, ≥ 10× when profiling both sides, peak extra memory ≤ 1.5× the current
frame's size.

``--whole-process N`` adds the row a user meets (issue 12): ``shipyard drift REF CUR`` on the two
Parquet files as a whole process (imports, reading, profiling both sides, the report) against
Evidently's job as a whole process in its virtualenv, interleaved, median of N each, with each
side's wall time outside its compute (interpreter start, imports, reading) next to it. Goal:
≥ 10× Evidently. Without Evidently's virtualenv the row shows Shipyard's side alone.
``--profile`` then runs each side once more under ``-X importtime`` and cProfile, keeps both
outputs under ``benchmarks/results/`` and prints each side's heaviest imports.
``--src NAME=PATH`` (repeatable) runs the CLI side once per source tree, e.g. before and after
a change, in the same interleaved rounds::

    .venv/bin/python benchmarks/drift.py --sizes 20k --src before=../main/src --src after=src

This file is also the worker: ``drift.py --job NAME ...`` runs one measurement and prints JSON.
It imports only the standard library at module level, so the peers' virtualenvs can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
PEERS = {
    "evidently": ["evidently==0.7.23", "pandas<3", "pyarrow"],
    "whylogs": ["whylogs==1.6.4", "pandas<3", "pyarrow"],
}
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's resident set size every 2 ms while active."""

    def __init__(self) -> None:
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


# ---------------------------------------------------------------- workers (one per process)


def _job(name: str, ref_path: str, cur_path: str, extra: str) -> dict[str, Any]:
    import pandas as pd

    cur = pd.read_parquet(cur_path)
    wanted = ("evidently", "shipyard-both", "shipyard-multivariate")
    ref = pd.read_parquet(ref_path) if name in wanted else None
    frame_bytes = int(cur.memory_usage(deep=True).sum())
    ref_text = Path(extra).read_text() if name == "shipyard-precomputed" else ""
    drifted: list[str] = []
    if name.startswith("evidently"):
        from evidently import Report
        from evidently.presets import DataDriftPreset
    if name == "whylogs-profile":
        import whylogs as why
    if name.startswith("shipyard"):
        from shipyard.stats import DatasetProfile, compare
    if name == "shipyard-multivariate":
        import numpy as np

        from shipyard.stats.multivariate import ReconstructionDrift, mmd_test

        numeric = [c for c in cur.columns if c.startswith("num_")]
        ref_x = ref[numeric].to_numpy(dtype=np.float64)  # type: ignore[index]
        cur_x = cur[numeric].to_numpy(dtype=np.float64)
        steps: dict[str, float] = {}
    rss_before = PeakRss.now()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        if name == "evidently":
            snapshot = Report([DataDriftPreset()]).run(cur, ref)
            for m in snapshot.dict()["metrics"]:
                cfg = m["config"]
                if cfg["type"].endswith("ValueDrift"):
                    p_value_test = "p_value" in cfg["method"]
                    hit = (
                        m["value"] < cfg["threshold"]
                        if p_value_test
                        else m["value"] >= cfg["threshold"]
                    )
                    if hit:
                        drifted.append(cfg["column"])
        elif name == "shipyard-precomputed":
            reference = DatasetProfile.from_json(json.loads(ref_text))
            report = compare(reference, DatasetProfile.from_frame(cur, reference=reference))
            drifted = report.drifted_columns
        elif name == "shipyard-both":
            reference = DatasetProfile.from_frame(ref)
            report = compare(reference, DatasetProfile.from_frame(cur, reference=reference))
            drifted = report.drifted_columns
        elif name == "shipyard-profile":
            DatasetProfile.from_frame(cur)
        elif name == "shipyard-multivariate":
            # what observe() does: the PCA fit on the whole reference (once, with the
            # reference), then each batch's reconstruction error and the MMD test on samples
            t = time.perf_counter()
            fit = ReconstructionDrift().fit(ref_x)
            steps["pca_fit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            pca = fit.test(cur_x)
            steps["pca_test_s"] = time.perf_counter() - t
            t = time.perf_counter()
            mmd = mmd_test(ref_x, cur_x, sample_rows=500, permutations=200, alpha=0.01)
            steps["mmd_s"] = time.perf_counter() - t
            drifted = [r.method for r in (pca, mmd) if r.drifted]
        elif name == "whylogs-profile":
            why.log(pandas=cur)
        else:
            raise SystemExit(f"unknown job {name}")
        wall_s = time.perf_counter() - t0
    return {
        "job": name,
        "wall_s": wall_s,
        "peak_rss_bytes": rss.peak,
        "extra_rss_bytes": rss.peak - rss_before,
        "frame_bytes": frame_bytes,
        "rows": len(cur),
        "drifted": sorted(drifted),
        **(steps if name == "shipyard-multivariate" else {}),
    }


# ---------------------------------------------------------------- driver


def _peer_python(peer: str) -> Path | None:
    venv = VENVS / peer
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} for {peer} ({' '.join(PEERS[peer])}) …", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[peer]], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"  could not install {peer}: {exc}")
        return None
    return python


def _make_data(rows: int, categorical: int, seed: int = 0) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd

    RESULTS.mkdir(exist_ok=True)
    tag = f"{rows}x{20 + categorical}"
    ref_path, cur_path = RESULTS / f"ref_{tag}.parquet", RESULTS / f"cur_{tag}.parquet"
    if ref_path.exists() and cur_path.exists():
        return ref_path, cur_path
    rng = np.random.default_rng(seed)

    def frame(current: bool) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for i in range(20):
            kind = i % 4
            if kind == 0:
                x = rng.normal(10, 2, rows)
            elif kind == 1:
                x = rng.gamma(2, 3, rows)
            elif kind == 2:
                x = rng.lognormal(0, 1, rows)
            else:
                x = rng.poisson(4, rows).astype(np.float64)
            if current and i == 0:
                x = x + 0.2 * 2  # a 0.2σ mean shift: real drift
            if current and i == 4:
                x = x + 0.02 * 2  # a 0.02σ shift: significant at this n, not worth an alarm
            if current and i == 8:
                x = x.copy()
                x[rng.random(rows) < 0.4] = np.nan  # the column goes 40 % null
            cols[f"num_{i}"] = x
        labels = np.array([f"v{j}" for j in range(12)], dtype=object)
        base = np.linspace(2, 1, 12)
        base /= base.sum()
        for j in range(categorical):
            p = base
            if current and j == 0:
                p = base[::-1]  # the category mix turns over
            cols[f"cat_{j}"] = rng.choice(labels, rows, p=p)
        return pd.DataFrame(cols)

    frame(False).to_parquet(ref_path)
    frame(True).to_parquet(cur_path)
    return ref_path, cur_path


def _run(
    python: Path | str, job: str, ref: Path, cur: Path, extra: str = ""
) -> dict[str, Any] | None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [str(python), str(Path(__file__).resolve()), "--job", job, str(ref), str(cur), extra]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        print(f"  {job} failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="200k,1m", help="comma list of 20k (a quick check), 200k, 1m"
    )
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--skip-whylogs", action="store_true")
    parser.add_argument(
        "--whole-process",
        type=int,
        default=3,
        metavar="N",
        help="runs of the whole-process row (0: skip it)",
    )
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a source tree for the whole-process row's CLI side (repeatable); default: src",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile each side of the whole-process row once (importtime + cProfile)",
    )
    parser.add_argument(
        "--multivariate-only",
        action="store_true",
        help="only the multivariate measures against the univariate compare (issue 18)",
    )
    parser.add_argument("--job", nargs=4, metavar=("NAME", "REF", "CUR", "EXTRA"))
    args = parser.parse_args()
    if args.job:
        print(json.dumps(_job(*args.job)))
        return
    cases = {"20k": (20_000, 5), "200k": (200_000, 5), "1m": (1_000_000, 0)}
    evidently = None if args.skip_evidently else _peer_python("evidently")
    whylogs = None if args.skip_whylogs else _peer_python("whylogs")
    for size in args.sizes.split(","):
        rows, cats = cases[size]
        ref, cur = _make_data(rows, cats)
        print(f"\n## {rows:,} rows × 20 numeric + {cats} categorical")
        profile_json = RESULTS / f"ref_{rows}x{20 + cats}.profile.json"
        _write_profile(ref, profile_json)
        univariate = _run(sys.executable, "shipyard-precomputed", ref, cur, str(profile_json))
        _print_multivariate(univariate, _run(sys.executable, "shipyard-multivariate", ref, cur))
        if args.multivariate_only:
            continue
        results = {
            "shipyard, reference profile precomputed": univariate,
            "shipyard, profiling both sides": _run(sys.executable, "shipyard-both", ref, cur),
        }
        if evidently:
            results["evidently 0.7.23 DataDriftPreset"] = _run(evidently, "evidently", ref, cur)
        _print_drift_table(results)
        if args.whole_process:
            trees = dict(t.split("=", 1) for t in args.src) or {"": str(HERE.parent / "src")}
            _print_whole_process(
                results, evidently, ref, cur, args.whole_process, trees, args.profile
            )
        prof = {"shipyard profile": _run(sys.executable, "shipyard-profile", ref, cur)}
        if whylogs:
            prof["whylogs 1.6 why.log"] = _run(whylogs, "whylogs-profile", ref, cur)
        _print_profile_table(prof)


def _print_multivariate(univariate: dict[str, Any] | None, r: dict[str, Any] | None) -> None:
    """The multivariate measures on the 20 numeric columns: the PCA fit (once per reference),
    a batch's reconstruction error and the MMD test (500 rows a side, 200 permutations),
    against the univariate compare of every column with a precomputed reference profile."""
    print(
        f"{'multivariate (20 numeric columns)':42} {'wall':>8} {'vs compare':>10} {'extra RSS':>10}"
    )
    if r is None:
        print(f"{'shipyard multivariate':42} failed")
        return
    base = univariate["wall_s"] if univariate else None
    rows = [
        ("PCA fit on the reference (once)", r["pca_fit_s"]),
        ("reconstruction error of the batch", r["pca_test_s"]),
        ("MMD test, 500 rows a side, B=200", r["mmd_s"]),
        ("all three", r["wall_s"]),
    ]
    for name, wall in rows:
        ratio = f"{wall / base:.2f}×" if base else "-"
        extra = _mib(r["extra_rss_bytes"]) if name == "all three" else ""
        print(f"{name:42} {wall:>7.3f}s {ratio:>10} {extra:>10}")
    if base:
        print(f"{'univariate compare (precomputed reference)':42} {base:>7.3f}s {'1.00×':>10}")
    print(f"flags: {', '.join(r['drifted']) or 'none'}")


def _write_profile(ref: Path, out: Path) -> None:
    import pandas as pd

    from shipyard.stats import DatasetProfile

    out.write_text(json.dumps(DatasetProfile.from_frame(pd.read_parquet(ref)).to_json()))


def _print_drift_table(results: dict[str, dict[str, Any] | None]) -> None:
    peer = results.get("evidently 0.7.23 DataDriftPreset")
    print(
        f"{'tool':42} {'wall':>8} {'speed-up':>9} {'peak RSS':>10} {'extra RSS':>10} "
        f"{'/frame':>7}  flags"
    )
    for name, r in results.items():
        if r is None:
            print(f"{name:42} failed")
            continue
        speedup = f"{peer['wall_s'] / r['wall_s']:.1f}×" if peer else "-"
        print(
            f"{name:42} {r['wall_s']:7.2f}s {speedup:>9} {_mib(r['peak_rss_bytes']):>10} "
            f"{_mib(r['extra_rss_bytes']):>10} {r['extra_rss_bytes'] / r['frame_bytes']:6.2f}×  "
            f"{', '.join(r['drifted']) or '-'}"
        )
    ours = results.get("shipyard, reference profile precomputed")
    if peer and ours:
        print(f"current frame: {_mib(ours['frame_bytes'])}")
        only_ours = sorted(set(ours["drifted"]) - set(peer["drifted"]))
        only_peer = sorted(set(peer["drifted"]) - set(ours["drifted"]))
        print(
            f"flagged only by shipyard: {only_ours or '-'}; only by evidently: {only_peer or '-'}"
        )


def _print_whole_process(
    results: dict[str, dict[str, Any] | None],
    evidently: Path | None,
    ref: Path,
    cur: Path,
    runs: int,
    trees: dict[str, str],
    profile: bool = False,
) -> None:
    """The CLI on the two files (once per source tree) vs Evidently's job, each a whole
    process, interleaved."""
    import statistics

    from cli_start import run_once  # benchmarks/ is on sys.path when this file runs

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")},
        "PYTHONWARNINGS": "ignore",
    }
    sides: dict[str, tuple[list[str], dict[str, Any] | None, dict[str, str]]] = {}
    for tree, path in trees.items():
        name = "shipyard drift REF CUR (CLI process)" + (f" [{tree}]" if tree else "")
        sides[name] = (
            [sys.executable, "-m", "shipyard", "drift", str(ref), str(cur), "--json"],
            results.get("shipyard, profiling both sides"),
            {**env, "PYTHONPATH": str(Path(path).resolve())},
        )
    if evidently:
        sides["evidently DataDriftPreset (whole process)"] = (
            [str(evidently), str(Path(__file__).resolve()), "--job", "evidently", str(ref),
             str(cur), ""],
            results.get("evidently 0.7.23 DataDriftPreset"),
            env,
        )  # fmt: skip
    walls: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, (argv, _, side_env) in sides.items():
            wall, cpu = run_once(argv, side_env, HERE.parent)
            walls[name].append(wall)
            cpus[name].append(cpu)
    medians = {name: statistics.median(w) for name, w in walls.items()}
    cpu = {name: statistics.median(c) for name, c in cpus.items()}
    peer_name = "evidently DataDriftPreset (whole process)"
    peer = medians.get(peer_name)
    print(
        f"\n{'whole process (median of ' + str(runs) + ')':42} {'wall':>8} {'speed-up':>9} "
        f"{'CPU':>8} {'speed-up':>9} {'outside compute':>16}"
    )
    for name, (_, in_process, _) in sides.items():
        wall = medians[name]
        speedup = f"{peer / wall:.1f}×" if peer else "-"
        cpu_speedup = f"{cpu[peer_name] / cpu[name]:.1f}×" if peer else "-"
        outside = f"{wall - in_process['wall_s']:.2f}s" if in_process else "-"
        print(
            f"{name:42} {wall:7.2f}s {speedup:>9} {cpu[name]:7.2f}s {cpu_speedup:>9} {outside:>16}"
        )
    if not peer:
        print("(no Evidently virtualenv: its side of the row runs once benchmarks/.venvs/evidently")
        print(" can be created; goal ≥ 10× Evidently)")
    if profile:
        for name, (argv, _, side_env) in sides.items():
            _profile_side(name, argv, side_env)


def _profile_side(name: str, argv: list[str], env: dict[str, str]) -> None:
    """One more run of a side under ``-X importtime`` and cProfile: both outputs kept, its
    heaviest top-level imports printed."""
    import re

    tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    prof = RESULTS / f"whole-process.{tag}.prof"
    script = ["-m", *argv[2:]] if argv[1] == "-m" else argv[1:]
    cmd = [argv[0], "-X", "importtime", "-m", "cProfile", "-o", str(prof), *script]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
    log = RESULTS / f"whole-process.{tag}.importtime.txt"
    log.write_text(out.stderr)
    top = []  # (cumulative µs, module) of the imports made at depth 1
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m:
            top.append((int(m[1]), m[2]))
    top.sort(reverse=True)
    total = sum(us for us, _ in top) / 1e6
    heaviest = ", ".join(f"{mod} {us / 1e6:.2f}s" for us, mod in top[:6])
    print(f"\n{name}: imports {total:.2f}s under importtime; heaviest: {heaviest}")
    print(f"  {log.relative_to(HERE.parent)}, {prof.relative_to(HERE.parent)} (pstats)")


def _print_profile_table(results: dict[str, dict[str, Any] | None]) -> None:
    print(f"\n{'profiling':42} {'wall':>8} {'rows/s':>12} {'extra RSS':>10}")
    for name, r in results.items():
        if r is None:
            print(f"{name:42} failed")
            continue
        print(
            f"{name:42} {r['wall_s']:7.2f}s {r['rows'] / r['wall_s']:12,.0f} "
            f"{_mib(r['extra_rss_bytes']):>10}"
        )


if __name__ == "__main__":
    main()

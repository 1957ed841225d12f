"""Run every benchmark in turn (``make bench``), or the ones named: ``run_all.py drift serving``.

Each script prints its own table and compares with its peer in the same run; peers whose pins
clash with Shipyard's are installed by the scripts into ``benchmarks/.venvs/`` on first use.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "runner_overhead",
    "drift",
    "admission",
    "serving",
    "alerting",
    "canary",
    "control_plane",
    "ray_executor",
]


def main(names: list[str]) -> int:
    chosen = names or [n for n in ORDER if (HERE / f"{n}.py").exists()]
    unknown = [n for n in chosen if not (HERE / f"{n}.py").exists()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ORDER)}")
        return 2
    failed = []
    for name in chosen:
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"--- {name}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

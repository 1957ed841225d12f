"""Admission throughput and latency: ``python benchmarks/admission.py [--admissions N]``.

Each client is its own OS process with its own connection, taking a lease (timed: that is the
admission) and releasing it (not timed), N times, into one shared pool large enough that nobody
waits — so the figure is the cost of the admission transaction itself under lock contention.
Runs on SQLite (a temporary file) and, when ``SHIPYARD_TEST_POSTGRES_URL`` is set, PostgreSQL
(a temporary schema). Goal (issue 4): ≥ 500 admissions/s on SQLite with one client, p99 ≤ 20 ms.
No peer runs here: the systems the issue names (Kueue, Ray, Prefect) admit through a
Kubernetes API server or a cluster head, not a library call on one machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import uuid

import numpy as np
from sqlalchemy import create_engine, text

from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.store import Store


def client(url: str, admissions: int, seed: int, start: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = Store(url, migrate=False)
    leases = LeaseManager(store, default_pool="bench")
    latencies = []
    while time.time() < start:
        time.sleep(0.001)
    for i in range(admissions):
        t0 = time.perf_counter()
        lease = leases.acquire(LeaseRequest(f"p{seed}", {"cpu": 1, "memory": "1Gi"}, step=str(i)))
        latencies.append(time.perf_counter() - t0)
        leases.release(lease)
    leases.close()
    store.dispose()
    out.put(latencies)


def measure(url: str, clients: int, admissions: int) -> tuple[float, float, float, float]:
    """(admit+release cycles/s over the wall clock, admissions/s from the mean admission
    latency alone, p50 ms, p99 ms)."""
    store = Store(url)
    spec = PoolSpec(name="bench", capacity={"cpu": 64, "memory": "256Gi"})
    apply_pools(store, [resolve(spec, 1.0)])
    store.dispose()
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start = time.time() + 1.0
    procs = [
        mp.Process(target=client, args=(url, admissions, i, start, out)) for i in range(clients)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.time() - start
    lat = np.concatenate([np.asarray(r) for r in results]) * 1000
    return (
        clients * admissions / wall,
        1000 / float(np.mean(lat)) * clients,
        float(np.percentile(lat, 50)),
        float(np.percentile(lat, 99)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=500, help="per client")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clients in (1, 8):
            url = f"sqlite:///{tmp}/bench-{clients}.db"
            rows.append(("sqlite", clients, *measure(url, clients, args.admissions)))
    pg = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
    if pg:
        for clients in (1, 8):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(pg)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
                rows.append(("postgresql", clients, *measure(url, clients, args.admissions)))
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    header = f"{'backend':<11} {'clients':>7} {'cycles/s':>9} {'admissions/s':>13}"
    print(f"{header} {'p50 ms':>8} {'p99 ms':>8}")
    for backend, clients, cycles, rate, p50, p99 in rows:
        print(f"{backend:<11} {clients:>7} {cycles:>9.0f} {rate:>13.0f} {p50:>8.2f} {p99:>8.2f}")
    one = rows[0]
    verdict = "met" if one[3] >= 500 and one[5] <= 20 else "NOT met"
    print(
        "cycles/s: admit + release per second of wall clock; admissions/s: from the mean "
        "admission latency (release not counted)"
    )
    print(
        f"goal ≥ 500 admissions/s, p99 ≤ 20 ms (SQLite, 1 client): {one[3]:.0f}/s, "
        f"p99 {one[5]:.1f} ms → {verdict}"
    )


if __name__ == "__main__":
    main()

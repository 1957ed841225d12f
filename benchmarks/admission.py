"""Admission throughput and latency, and scheduling quality on a mixed workload:
``python benchmarks/admission.py [--admissions N] [--part throughput|mixed|all]``.

**Mixed workload** (``--part mixed``): many small requests, a few large ones and one greedy
pipeline that floods the pool, replayed through the real admission (SQLite, a fake clock)
under four policies in the same run: strict FIFO (the baseline: no backfill, no preemption),
backfill, preemption of borrowers, and both. Printed: utilisation of the pool until the last
request ends, the makespan, the mean wait of small requests, the mean and longest wait of the
large ones (until the start that lasts), and how many leases were preempted. Goal (issue 17):
utilisation up, and no large request waits longer than under strict FIFO.

**Throughput** (``--part throughput``):

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
import heapq
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import create_engine, select, text

from shipyard.clock import FakeClock
from shipyard.quota.admission import Lease, LeaseManager, LeaseRequest
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.store import Store
from shipyard.store.quota import QuotaLease


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


# -- the mixed workload: backfill and preemption against strict FIFO --------------------------

POLICIES = (
    ("strict FIFO", False, "never"),
    ("backfill", True, "never"),
    ("preemption", False, "borrowers"),
    ("backfill + preemption", True, "borrowers"),
)
"""(name, backfill, preemption): strict FIFO is the scheduler before backfill and preemption —
the head blocks everything behind it, and a borrower keeps what it took until its leases end."""
CAPACITY_CPU = 32
GRACE_S = 5.0
SAME_WAIT_S = 1e-3
"""Waits this close count as equal (the greedy requests arrive a microsecond apart)."""


@dataclass
class Job:
    name: str
    pipeline: str
    cpu: float
    duration_s: float
    expected_s: float
    arrives_at: float
    started_at: float | None = None
    done_at: float | None = None
    preempted: int = 0


def mixed_workload(seed: int, small: int, large: int) -> list[Job]:
    """Many small requests (1–2 CPUs, 5–30 s, Poisson arrivals over 10 minutes), a few large
    ones (16 CPUs, 60–120 s, spread over the same 10 minutes) and one greedy pipeline that
    floods the pool at the start (40 requests of 4 CPUs, 60 s). Expected durations are upper
    estimates (as a declared timeout is): 1–1.5× the real one."""
    rng = np.random.default_rng(seed)
    jobs = []
    arrivals = np.sort(rng.uniform(0, 600, small))
    for i, at in enumerate(arrivals):
        d = float(rng.uniform(5, 30))
        jobs.append(
            Job(f"s{i}", "small", float(rng.integers(1, 3)), d, d * rng.uniform(1, 1.5), at)
        )
    for i, at in enumerate(np.linspace(30, 570, large)):
        d = float(rng.uniform(60, 120))
        jobs.append(Job(f"L{i}", "large", 16.0, d, d * rng.uniform(1, 1.5), float(at)))
    for i in range(40):
        # a microsecond apart: ties in the admission order would fall to random lease ids
        jobs.append(Job(f"g{i}", "greedy", 4.0, 60.0, 60.0 * rng.uniform(1, 1.5), i * 1e-6))
    return jobs


@dataclass(frozen=True)
class Outcome:
    makespan_s: float
    utilisation: float
    goodput: float
    small_wait_mean_s: float
    large_waits_s: list[float]
    preempted: int


def simulate(url: str, jobs: list[Job], backfill: bool, preemption: str) -> Outcome:
    """Replays ``jobs`` through the real admission (LeaseManager on the store at ``url``) on a
    fake clock: each event (an arrival, an end, a preempted holder's stop) is applied, then one
    scheduling pass runs, and the grants and preemption marks it made are read back. A
    preempted job stops at the end of its grace period and is submitted again from scratch."""
    store = Store(url)
    spec = PoolSpec(
        name="mixed",
        capacity={"cpu": CAPACITY_CPU},
        backfill=backfill,
        preemption=preemption,
        preemption_grace_s=GRACE_S,
        members=[
            MemberSpec(pipeline="small", share=0.25, cap=1.0),
            MemberSpec(pipeline="large", share=0.5, cap=1.0),
            MemberSpec(pipeline="greedy", share=0.25, cap=1.0),
        ],
    )
    apply_pools(store, [resolve(spec, 1.0)])
    clock = FakeClock(0.0)
    leases = LeaseManager(store, clock=clock, lease_ttl_s=1e9, default_pool="mixed")
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, job or lease id)
    for job in jobs:
        heapq.heappush(events, (job.arrives_at, 0, "arrive", job.name))
    by_name = {job.name: job for job in jobs}
    lease_job: dict[str, Job] = {}
    running: dict[str, float] = {}  # lease id -> cpu
    stopping: set[str] = set()
    busy_cpu_s, last_t, held_cpu, now = 0.0, 0.0, 0.0, 0.0
    waiting: set[str] = set()
    while events:
        now = events[0][0]
        busy_cpu_s += held_cpu * (now - last_t)
        last_t = now
        clock.at(now)
        while events and events[0][0] == now:
            _, _, kind, key = heapq.heappop(events)
            if kind == "arrive":
                job = by_name[key]
                lease_id = leases.submit(
                    LeaseRequest(
                        job.pipeline,
                        {"cpu": job.cpu},
                        step=job.name,
                        run_id=job.name,
                        expected_s=job.expected_s,
                        preemptible=True,
                    )
                )
                lease_job[lease_id] = job
                waiting.add(lease_id)
            elif key in running:  # an end, or a preempted holder's stop
                job = lease_job[key]
                leases.release(Lease(key, "mixed", job.pipeline, {}, 0.0, 0.0))
                held_cpu -= running.pop(key)
                if kind == "end":
                    job.done_at = now
                else:  # preempted: the work is lost, the job asks again
                    job.preempted += 1
                    heapq.heappush(events, (now, 1, "arrive", job.name))
        if waiting:
            leases.poll(next(iter(waiting)))  # one scheduling pass
        with store.session() as s:
            rows = s.execute(
                select(QuotaLease.id, QuotaLease.granted_at, QuotaLease.preempt_at).where(
                    QuotaLease.pool == "mixed", QuotaLease.status == "held"
                )
            ).all()
        for lease_id, granted_at, preempt_at in rows:
            job = lease_job[lease_id]
            if lease_id in waiting and granted_at is not None:
                waiting.discard(lease_id)
                running[lease_id] = job.cpu
                held_cpu += job.cpu
                job.started_at = granted_at  # the wait counts until the start that lasts
                heapq.heappush(events, (granted_at + job.duration_s, 2, "end", lease_id))
            if preempt_at is not None and lease_id not in stopping:
                stopping.add(lease_id)
                heapq.heappush(events, (preempt_at, 2, "stop", lease_id))
    leases.close()
    store.dispose()
    makespan = max(job.done_at or 0.0 for job in jobs)
    waits: dict[str, list[float]] = {}
    for job in jobs:
        assert job.started_at is not None and job.done_at is not None, job
        waits.setdefault(job.pipeline, []).append(job.started_at - job.arrives_at)
    useful_cpu_s = sum(job.cpu * job.duration_s for job in jobs)
    return Outcome(
        makespan,
        busy_cpu_s / (CAPACITY_CPU * makespan),
        useful_cpu_s / (CAPACITY_CPU * makespan),
        float(np.mean(waits["small"])),
        waits["large"],
        sum(job.preempted for job in jobs),
    )


def mixed(url_for: Callable[[str], str], seed: int, small: int, large: int) -> bool:
    """Run every policy on the same workload; print the table; True when the goal is met."""
    results = []
    for name, backfill, preemption in POLICIES:
        started = time.perf_counter()
        outcome = simulate(url_for(name), mixed_workload(seed, small, large), backfill, preemption)
        results.append((name, outcome, time.perf_counter() - started))
    print(
        f"\nmixed workload (seed {seed}): {small} small (1-2 CPUs), {large} large (16 CPUs), "
        f"one greedy pipeline (40 x 4 CPUs at t=0); pool of {CAPACITY_CPU} CPUs; "
        f"grace {GRACE_S:g}s"
    )
    print(
        f"{'policy':<22} {'utilisation':>11} {'goodput':>7} {'makespan s':>10} {'small wait':>10} "
        f"{'large wait mean':>15} {'large wait max':>14} {'preempted':>9} {'sim s':>6}"
    )
    for name, o, took in results:
        print(
            f"{name:<22} {o.utilisation:>11.1%} {o.goodput:>7.1%} {o.makespan_s:>10.0f} "
            f"{o.small_wait_mean_s:>10.1f} "
            f"{np.mean(o.large_waits_s):>15.1f} {max(o.large_waits_s):>14.1f} {o.preempted:>9} "
            f"{took:>6.1f}"
        )
    print(
        "utilisation: CPU-seconds held / (capacity x makespan), preempted work included; "
        "goodput: the same for work that completed"
    )
    fifo = results[0][1]
    met = True
    for name, o, _ in results[1:]:
        util_up = o.utilisation > fifo.utilisation
        longer = [
            f"L{i}: {mine:.1f}s vs {theirs:.1f}s"
            for i, (mine, theirs) in enumerate(
                zip(o.large_waits_s, fifo.large_waits_s, strict=True)
            )
            if mine > theirs + SAME_WAIT_S
        ]
        print(
            f"goal, {name} vs strict FIFO: utilisation up "
            f"({fifo.utilisation:.1%} -> {o.utilisation:.1%}: {'yes' if util_up else 'NO'}); "
            f"longest large wait {max(fifo.large_waits_s):.1f}s -> {max(o.large_waits_s):.1f}s; "
            "no large request waits longer: "
            + ("yes" if not longer else f"NO ({', '.join(longer)})")
        )
        met = met and util_up and not longer
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=500, help="per client")
    parser.add_argument("--part", choices=("throughput", "mixed", "all"), default="all")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--small", type=int, default=200, help="small requests (mixed)")
    parser.add_argument("--large", type=int, default=6, help="large requests (mixed)")
    args = parser.parse_args()
    if args.part in ("throughput", "all"):
        throughput(args.admissions)
    if args.part in ("mixed", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            met = mixed(
                lambda name: f"sqlite:///{tmp}/mixed-{name.replace(' ', '')}.db",
                args.seed,
                args.small,
                args.large,
            )
        print(f"goal met by every policy: {'yes' if met else 'no'}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def throughput(admissions: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clients in (1, 8):
            url = f"sqlite:///{tmp}/bench-{clients}.db"
            rows.append(("sqlite", clients, *measure(url, clients, admissions)))
    pg = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
    if pg:
        for clients in (1, 8):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(pg)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
                rows.append(("postgresql", clients, *measure(url, clients, admissions)))
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

"""Admission throughput and latency, and scheduling quality on a mixed workload:
``python benchmarks/admission.py [--admissions N] [--part throughput|mixed|all]``.

**Mixed workload** (``--part mixed``): many small requests, a few large ones and one greedy
pipeline that floods the pool, replayed through the real admission (SQLite, a fake clock)
under six policies — strict FIFO (the baseline: no backfill, no preemption), backfill,
preemption of borrowers, and both, the last two once with a taken-back lease's room freed when
its holder has stopped and once when it is told to stop (``quota_release: on-terminating``) —
for each of several seeds (``--seeds``, five by default).
Every policy of a seed is given the identical job stream (checked). Printed per seed: the
utilisation while requests wait (1 − loss of capacity), the same for completed work only, the
utilisation over the makespan, the mean wait of small requests, each large request's wait
(until the start that lasts) with FIFO's in the same run, how many leases were preempted
(taken back from borrowers, or yielded by backfill to a request they passed) and the work
they lost;
then the worst case of each policy over the seeds. Goal (issue 17): utilisation up, and no
large request waits longer than under strict FIFO. A large request that does wait longer is
replayed once more: the policy's run up to its arrival, strict FIFO from there — if FIFO from
that same state makes it wait as long, the policy did not delay it; the two runs had diverged.

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
import itertools
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
from shipyard.quota import admission
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

Policy = tuple[str, bool, str, str]
POLICIES: tuple[Policy, ...] = (
    ("strict FIFO", False, "never", "on-terminal"),
    ("backfill", True, "never", "on-terminal"),
    ("preemption", False, "borrowers", "on-terminal"),
    ("backfill + preemption", True, "borrowers", "on-terminal"),
    ("preemption, freed at once", False, "borrowers", "on-terminating"),
    ("backfill + pre., freed at once", True, "borrowers", "on-terminating"),
)
"""(name, backfill, preemption, quota_release): strict FIFO is the scheduler before backfill and
preemption — the head blocks everything behind it, and a borrower keeps what it took until its
leases end. "freed at once": a lease taken back stops counting against the pool as soon as its
holder is told to stop (Kueue's ``OnTerminating``), not when it has stopped."""
FIFO = POLICIES[0]
CAPACITY_CPU = 32
GRACE_S = 5.0
BACKFILL_GRACE_S = 0.0
"""How long a backfilled lease takes to give its room back to a request it passed."""
SAME_WAIT_S = 1e-3
"""Waits this close count as equal (the greedy requests arrive a microsecond apart)."""
SEEDS = (1, 2, 3, 4, 5)


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


def stream(jobs: list[Job]) -> tuple[tuple[str, str, float, float, float, float], ...]:
    """What every policy must be given identically: each job's demand, length and arrival."""
    return tuple(
        (j.name, j.pipeline, j.cpu, j.duration_s, j.expected_s, j.arrives_at) for j in jobs
    )


@dataclass(frozen=True)
class Outcome:
    utilisation: float
    """CPU-seconds held while any request waits / (capacity × the time requests wait): 1 minus
    the *loss of capacity* (idle capacity while work waits, which head-of-line blocking causes).
    Preempted work counts as held."""
    goodput: float
    """The same, counting only leases whose work completed (preempted work is lost)."""
    utilisation_makespan: float
    """CPU-seconds held / (capacity × makespan): with the same work under every policy this
    is only the makespan inverted, set by whichever request ends last."""
    makespan_s: float
    small_wait_mean_s: float
    large_waits_s: dict[str, float]
    large_promised_waits_s: dict[str, float | None]
    """Each large request's wait until the start backfill promised it (None: none promised)."""
    preempted: int
    lost_cpu_s: float
    """CPU-seconds of work lost: held by leases that were taken back (preempted, or yielded
    by backfill to a request they passed) and redone from scratch."""
    peak_cpu: float
    """The most CPUs in use at once: above the capacity only while holders told to stop (their
    room already freed: ``on-terminating``) run out their grace period beside their successors."""


def spans(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals, as sorted disjoint intervals."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def overlap_s(a: float, b: float, union: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, v) - max(a, u)) for u, v in union)


def simulate(url: str, jobs: list[Job], policy: Policy, fifo_from: float | None = None) -> Outcome:
    """Replays ``jobs`` through the real admission (LeaseManager on the store at ``url``) on a
    fake clock: each event (an arrival, an end, a preempted holder's stop, the end in strict
    order's account of a lease that ran early by backfill) is applied, then one scheduling pass
    runs, and the grants and preemption marks it made are read back. A
    preempted job stops at the end of its grace period (the worst case) and is submitted again
    from scratch, in its place in line (asked since its first arrival, as the runner's retry
    of a preempted step does). ``fifo_from``: from that time on the pool runs strict FIFO
    (the counterfactual "what FIFO would have done from this policy's state")."""
    # lease ids break ties in the admission and the victim order (requests asking again at
    # the same instant, leases granted in the same pass): random ids would make two runs of
    # one seed differ, sequential ones give every run the same order (the older id first)
    sequence = itertools.count()
    random_ids, admission.new_id = admission.new_id, lambda: f"{next(sequence):012x}"
    try:
        return replay(url, jobs, policy, fifo_from)
    finally:
        admission.new_id = random_ids


def replay(url: str, jobs: list[Job], policy: Policy, fifo_from: float | None) -> Outcome:
    store = Store(url)

    def apply(backfill: bool, preemption: str, quota_release: str) -> None:
        spec = PoolSpec(
            name="mixed",
            capacity={"cpu": CAPACITY_CPU},
            backfill=backfill,
            preemption=preemption,
            preemption_grace_s=GRACE_S,
            backfill_grace_s=BACKFILL_GRACE_S,
            quota_release=quota_release,
            members=[
                MemberSpec(pipeline="small", share=0.25, cap=1.0),
                MemberSpec(pipeline="large", share=0.5, cap=1.0),
                MemberSpec(pipeline="greedy", share=0.25, cap=1.0),
            ],
        )
        apply_pools(store, [resolve(spec, 1.0)])

    apply(policy[1], policy[2], policy[3])
    clock = FakeClock(0.0)
    leases = LeaseManager(store, clock=clock, lease_ttl_s=1e9, default_pool="mixed")
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, job or lease id)
    for job in jobs:
        heapq.heappush(events, (job.arrives_at, 0, "arrive", job.name))
    by_name = {job.name: job for job in jobs}
    lease_job: dict[str, Job] = {}
    submitted: dict[str, float] = {}  # lease id -> when it was asked for
    granted: dict[str, float] = {}
    # (start, end, end in the pool's account, cpu, work completed): a lease taken back stops
    # counting at its mark where the pool frees its room at once, though its holder runs on
    held: list[tuple[float, float, float, float, bool]] = []
    marked: dict[str, float] = {}  # lease id -> when it was marked to stop
    frees_at_once = policy[3] == "on-terminating"
    running: dict[str, float] = {}  # lease id -> cpu
    stopping: set[str] = set()
    waiting: set[str] = set()
    ticks: set[float] = set()  # when strict order's account frees room (no event of its own)
    while events:
        now = events[0][0]
        clock.at(now)
        if fifo_from is not None and now >= fifo_from:
            apply(FIFO[1], FIFO[2], FIFO[3])
            fifo_from = None
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
                        queued_since=job.arrives_at,
                    )
                )
                lease_job[lease_id] = job
                submitted[lease_id] = now
                waiting.add(lease_id)
            elif key in running:  # an end, or a preempted holder's stop
                job = lease_job[key]
                leases.release(Lease(key, "mixed", job.pipeline, {}, 0.0, 0.0))
                counted_until = marked.get(key, now) if frees_at_once else now
                held.append((granted[key], now, counted_until, running.pop(key), kind == "end"))
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
        with store.session() as s:
            strict_ends = s.scalars(
                select(QuotaLease.in_turn_until).where(
                    QuotaLease.pool == "mixed", QuotaLease.in_turn_until > now
                )
            ).all()
        for at in set(strict_ends) - ticks:  # a lease that ran early ends in strict order
            ticks.add(at)
            heapq.heappush(events, (at, 3, "tick", ""))
        for lease_id, granted_at, preempt_at in rows:
            job = lease_job[lease_id]
            if lease_id in waiting and granted_at is not None:
                waiting.discard(lease_id)
                running[lease_id] = job.cpu
                granted[lease_id] = granted_at
                job.started_at = granted_at  # the wait counts until the start that lasts
                heapq.heappush(events, (granted_at + job.duration_s, 2, "end", lease_id))
            if preempt_at is not None and lease_id not in stopping:
                stopping.add(lease_id)
                marked[lease_id] = now
                heapq.heappush(events, (preempt_at, 2, "stop", lease_id))
    with store.session() as s:
        promised = dict(
            s.execute(  # the lasting start's row: one released, not preempted
                select(QuotaLease.step, QuotaLease.start_promised_at).where(
                    QuotaLease.pipeline == "large", QuotaLease.status == "released"
                )
            ).all()
        )
    leases.close()
    store.dispose()
    makespan = max(job.done_at or 0.0 for job in jobs)
    contended = spans([(submitted[k], granted[k]) for k in submitted])
    contended_s = sum(b - a for a, b in contended)
    waits: dict[str, list[float]] = {}
    for job in jobs:
        assert job.started_at is not None and job.done_at is not None, job
        waits.setdefault(job.pipeline, []).append(job.started_at - job.arrives_at)
    return Outcome(
        sum(cpu * overlap_s(a, b, contended) for a, _, b, cpu, _ in held)
        / (CAPACITY_CPU * contended_s),
        sum(cpu * overlap_s(a, b, contended) for a, _, b, cpu, done in held if done)
        / (CAPACITY_CPU * contended_s),
        sum(cpu * (b - a) for a, _, b, cpu, _ in held) / (CAPACITY_CPU * makespan),
        makespan,
        float(np.mean(waits["small"])),
        {j.name: j.started_at - j.arrives_at for j in jobs if j.pipeline == "large"},  # type: ignore[operator]
        {
            j.name: None if promised[j.name] is None else promised[j.name] - j.arrives_at
            for j in jobs
            if j.pipeline == "large"
        },
        sum(job.preempted for job in jobs),
        sum(cpu * (b - a) for a, b, _, cpu, done in held if not done),
        peak_cpu([(a, b, cpu) for a, b, _, cpu, _ in held]),
    )


def peak_cpu(spans_cpu: list[tuple[float, float, float]]) -> float:
    """The most CPUs the holders used at once (a holder told to stop runs until it stops)."""
    steps = sorted([(a, cpu) for a, _, cpu in spans_cpu] + [(b, -cpu) for _, b, cpu in spans_cpu])
    peak = used = 0.0
    for _, change in steps:  # at one instant, ends (negative) sort before starts
        used += change
        peak = max(peak, used)
    return peak


@dataclass(frozen=True)
class Longer:
    """A large request that waited longer under a policy than under FIFO in the same run, and
    how long FIFO would have made it wait from the policy's own state at its arrival."""

    seed: int
    policy: str
    request: str
    wait_s: float
    fifo_wait_s: float
    fifo_from_same_state_s: float
    promised_s: float | None


@dataclass
class Worst:
    """A policy's worst case over the seeds, against strict FIFO in the same runs."""

    util_gain: float = float("inf")
    goodput_gain: float = float("inf")
    longer_s: float = -float("inf")
    """The most a large request waited beyond its wait under FIFO in the same run."""
    longer_than_same_state_s: float = 0.0
    """The most one waited beyond FIFO's wait from the policy's own state at its arrival."""
    longest_wait_s: float = 0.0
    fifo_longest_wait_s: float = 0.0


def mixed(url_for: Callable[[str], str], seeds: tuple[int, ...], small: int, large: int) -> bool:
    """Run every policy on the same workloads, one per seed; print a table per seed and the
    worst case of each policy over the seeds; True when the goal is met for every seed."""
    print(
        f"\nmixed workload: {small} small (1-2 CPUs), {large} large (16 CPUs), one greedy "
        f"pipeline (40 x 4 CPUs at t=0); pool of {CAPACITY_CPU} CPUs; preemption grace "
        f"{GRACE_S:g}s; backfill grace {BACKFILL_GRACE_S:g}s (a backfilled lease yields to a "
        "request it passed); "
        f"seeds {', '.join(map(str, seeds))}"
    )
    worst = {policy[0]: Worst() for policy in POLICIES[1:]}
    longer: list[Longer] = []
    runs = 0
    for seed in seeds:
        reference = stream(mixed_workload(seed, small, large))
        arrival = {name: at for name, _, _, _, _, at in reference}
        results: list[tuple[Policy, Outcome]] = []
        for policy in POLICIES:
            jobs = mixed_workload(seed, small, large)
            assert stream(jobs) == reference  # every policy is given the identical stream
            runs += 1
            results.append((policy, simulate(url_for(f"{seed}-{runs}"), jobs, policy)))
        names = list(results[0][1].large_waits_s)
        print(f"\nseed {seed}: waits in s; each large request's, FIFO's in the same run first")
        print(
            f"{'policy':<30} {'util':>6} {'goodput':>7} {'util/mksp':>9} {'makespan':>8} "
            f"{'small':>6} "
            + " ".join(f"{n:>6}" for n in names)
            + f" {'preempted':>9} {'lost CPU-s':>10} {'peak CPUs':>9}"
        )
        for (name, *_), o in results:
            print(
                f"{name:<30} {o.utilisation:>6.1%} {o.goodput:>7.1%} "
                f"{o.utilisation_makespan:>9.1%} {o.makespan_s:>8.0f} {o.small_wait_mean_s:>6.1f} "
                + " ".join(f"{o.large_waits_s[n]:>6.1f}" for n in names)
                + f" {o.preempted:>9} {o.lost_cpu_s:>10.0f} {o.peak_cpu:>9.0f}"
            )
        fifo = results[0][1]
        for policy, o in results[1:]:
            w = worst[policy[0]]
            w.util_gain = min(w.util_gain, o.utilisation - fifo.utilisation)
            w.goodput_gain = min(w.goodput_gain, o.goodput - fifo.goodput)
            w.longest_wait_s = max(w.longest_wait_s, *o.large_waits_s.values())
            w.fifo_longest_wait_s = max(w.fifo_longest_wait_s, *fifo.large_waits_s.values())
            for n in names:
                mine, theirs = o.large_waits_s[n], fifo.large_waits_s[n]
                w.longer_s = max(w.longer_s, mine - theirs)
                if mine > theirs + SAME_WAIT_S:
                    runs += 1
                    same = simulate(
                        url_for(f"{seed}-{runs}"),
                        mixed_workload(seed, small, large),
                        policy,
                        fifo_from=arrival[n],
                    ).large_waits_s[n]
                    promised = o.large_promised_waits_s[n]
                    longer.append(Longer(seed, policy[0], n, mine, theirs, same, promised))
                    w.longer_than_same_state_s = max(w.longer_than_same_state_s, mine - same)
    print(
        "\nutil: CPU-seconds held while requests wait / (capacity x time they wait), i.e. 1 - "
        "loss of capacity, preempted work included; goodput: the same for work that completed; "
        "util/mksp: held over the whole makespan (a lease taken back counts until its room is "
        "free: its holder stopped, or, freed at once, its mark); peak CPUs: the most in use at "
        f"once, above {CAPACITY_CPU} only while holders told to stop run out their grace"
    )
    if longer:
        print("large requests that waited longer than under FIFO in the same run:")
        for x in longer:
            verdict = "not a delay the policy made: the two runs' states differ"
            if x.wait_s > x.fifo_from_same_state_s + SAME_WAIT_S:
                verdict = "the policy delayed it"
                if x.promised_s is not None and x.wait_s <= x.promised_s + SAME_WAIT_S:
                    verdict += (
                        f", within the start backfill promised it ({x.promised_s:.1f}s): "
                        "the leases ahead of it ended before their estimates"
                    )
            print(
                f"  seed {x.seed}, {x.policy}, {x.request}: {x.wait_s:.1f}s vs "
                f"{x.fifo_wait_s:.1f}s under FIFO; FIFO from this policy's state at its "
                f"arrival: {x.fifo_from_same_state_s:.1f}s ({verdict})"
            )
    met = True
    print(f"\nworst case over seeds {', '.join(map(str, seeds))}:")
    releases = {policy[0]: policy[3] for policy in POLICIES}
    for name, w in worst.items():
        util_up = w.util_gain > 0
        no_longer = w.longer_s <= SAME_WAIT_S
        if not no_longer and releases[name] == "on-terminal" and w.longer_s <= GRACE_S:
            # a reclaiming request waits for its victims to stop: the grace is the bound here
            print(
                f"  ({name}: the room of a lease taken back is free only once its holder has "
                f"stopped, so a reclaiming request may wait the {GRACE_S:g}s grace; up to "
                f"{w.longer_s:.1f}s longer is within it)"
            )
        print(
            f"goal, {name} vs strict FIFO: utilisation up in every seed "
            f"(least gain {w.util_gain * 100:+.1f} points, goodput {w.goodput_gain * 100:+.1f}): "
            f"{'yes' if util_up else 'NO'}; no large request waits longer: "
            + (
                "yes"
                if no_longer
                else f"NO (up to {w.longer_s:.1f}s longer, of which the policy's own doing, "
                f"against FIFO from the same state: {w.longer_than_same_state_s:.1f}s)"
            )
            + f"; longest large wait {w.fifo_longest_wait_s:.1f}s -> {w.longest_wait_s:.1f}s"
        )
        met = met and util_up and no_longer
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=500, help="per client")
    parser.add_argument("--part", choices=("throughput", "mixed", "all"), default="all")
    parser.add_argument(
        "--seeds", default=",".join(map(str, SEEDS)), help="comma-separated (mixed)"
    )
    parser.add_argument("--small", type=int, default=200, help="small requests (mixed)")
    parser.add_argument("--large", type=int, default=6, help="large requests (mixed)")
    args = parser.parse_args()
    if args.part in ("throughput", "all"):
        throughput(args.admissions)
    if args.part in ("mixed", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            met = mixed(
                lambda name: f"sqlite:///{tmp}/mixed-{name}.db",
                tuple(int(s) for s in args.seeds.split(",")),
                args.small,
                args.large,
            )
        print(f"goal met by every policy: {'yes' if met else 'no'} (see the worst case above)")
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

"""A step whose lease is preempted: SIGTERM, the lease given back within the grace period and
recorded ``preempted``, the step retried when it allows retries (real processes, both
backends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.pipelines.runner import Runner, RunResult
from shipyard.quota.admission import LeaseManager, LeaseRequest, QuotaAdmission, renew_every_s
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.store.quota import QuotaLease
from shipyard.workspace import Workspace

TTL_S = 1.5
GRACE_S = 1.0

GREEDY = """
MARKER = Path({marker!r})

@step(resources=Resources(cpu=2), retries={retries})
def hog() -> int:
    if MARKER.exists():  # the retry: quick
        return 2
    MARKER.write_text("started")
    time.sleep(60)  # until preempted
    return 1

pipeline = Pipeline("greedy", kind="training")

@pipeline
def build():
    return hog()
"""


@pytest.fixture
def real_ws(migrated_db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace on the real clock (steps are real processes), on SQLite then PostgreSQL."""
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    spec = PoolSpec(
        name="shared",
        capacity={"cpu": 2},
        preemption="borrowers",
        preemption_grace_s=GRACE_S,
        members=[
            MemberSpec(pipeline="greedy", share=0.5, cap=1.0),
            MemberSpec(pipeline="owner", share=0.5, cap=1.0),
        ],
    )
    apply_pools(ws.store, [resolve(spec, 1.0)])
    yield ws
    ws.store.dispose()


def leases_of(ws: Workspace, pipeline: str) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(
            s.scalars(
                select(QuotaLease)
                .where(QuotaLease.pipeline == pipeline)
                .order_by(QuotaLease.requested_at, QuotaLease.granted_at.nulls_last())
            )
        )


def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start_greedy(ws: Workspace, file: Path) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []

    def go() -> None:
        loaded, pipeline = load_pipeline(str(file))
        admission = QuotaAdmission(LeaseManager(ws.store, lease_ttl_s=TTL_S))
        with Runner(ws, pools=admission, pool="shared", kill_grace_s=0.5) as runner:
            results.append(runner.run(loaded, pipeline))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, results


@pytest.mark.parametrize(
    ("migrated_db_url", "retries"),
    [("sqlite", 1), pytest.param("postgresql", 1, marks=pytest.mark.postgres), ("sqlite", 0)],
    indirect=["migrated_db_url"],
)
def test_preempted_step_gives_the_share_back_in_its_grace_and_is_retried(
    real_ws: Workspace, tmp_path: Path, retries: int
) -> None:
    marker = tmp_path / "marker"
    file = tmp_path / "greedy.py"
    header = "import os, sys, time\nfrom pathlib import Path\n"
    header += "from shipyard.pipelines import Pipeline, Resources, step\n"
    file.write_text(header + GREEDY.format(marker=str(marker), retries=retries), "utf-8")
    thread, results = start_greedy(real_ws, file)
    until(marker.exists)  # the greedy step runs on the whole pool (borrowing the owner's half)
    owner = LeaseManager(real_ws.store, lease_ttl_s=TTL_S, default_pool="shared")
    asked = time.monotonic()
    grant = owner.acquire(LeaseRequest("owner", {"cpu": 1}, step="mine"), timeout_s=15)
    waited = time.monotonic() - asked
    # the holder learns at its next renewal, stops within the grace, and gives the lease back
    assert waited < renew_every_s(TTL_S) + GRACE_S + 1.5
    first = leases_of(real_ws, "greedy")[0]
    assert first.status == "preempted" and "guaranteed share" in (first.reason or "")
    owner.release(grant)
    owner.close()
    thread.join(30)
    (result,) = results
    (step,) = get_run(real_ws.store, result.run_id)["steps"]
    if retries:
        assert result.status == "succeeded"
        assert step["status"] == "succeeded" and step["attempt"] == 2
        taken, retried = leases_of(real_ws, "greedy")
        assert (taken.status, retried.status) == ("preempted", "released")
        # the retry asked again in the place in line of the attempt that gave its room back
        assert retried.requested_at == taken.requested_at
    else:
        assert result.status == "failed" and "preempted" in (result.exit_reason or "")
        assert step["status"] == "preempted"  # not failed: the step's code did nothing wrong

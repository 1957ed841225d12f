"""What the runner tells a pool each step is expected to take (backfill plans with it): the
longest of the step's last successful attempts, at most its declared timeout, else the timeout."""

from __future__ import annotations

import pytest

from shipyard.pipelines import Pipeline, step
from shipyard.pipelines.reservation import expected_durations
from shipyard.store import Store
from shipyard.store.tables import Run, StepRun


@step(timeout_s=100)
def bounded() -> int:
    return 1


@step()
def unbounded(x: int) -> int:
    return x


@step(timeout_s=50)
def fresh(x: int) -> int:
    return x


flow = Pipeline("flow", kind="data")


@flow
def build():
    return fresh(unbounded(bounded()))


def past_run(store: Store, took: dict[str, float], status: str = "succeeded") -> None:
    with store.session() as s:
        run = Run(pipeline="flow", kind="data", file="f.py", status=status, created_at=1.0)
        s.add(run)
        s.flush()
        for name, seconds in took.items():
            s.add(
                StepRun(
                    run_id=run.id, step=name, status=status, started_at=1000.0,
                    ended_at=1000.0 + seconds,
                )
            )  # fmt: skip


@pytest.mark.parametrize("migrated_db_url", ["sqlite"], indirect=True)
def test_history_capped_by_the_timeout_else_the_timeout(store: Store) -> None:
    graph = flow.build({})
    assert expected_durations(store, "flow", graph) == {"bounded": 100.0, "fresh": 50.0}
    past_run(store, {"bounded": 30.0, "unbounded": 7.0})
    past_run(store, {"bounded": 140.0, "unbounded": 9.0})
    past_run(store, {"bounded": 1.0, "unbounded": 500.0}, status="failed")  # not counted
    expected = expected_durations(store, "flow", graph)
    assert expected == {"bounded": 100.0, "unbounded": 9.0, "fresh": 50.0}

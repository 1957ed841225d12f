"""Runs written straight into a store, for the tests of the run list (``store.run_list``,
``shipyard runs list``)."""

from __future__ import annotations

from shipyard.store import Store
from shipyard.store.tables import PipelineRecord, Run

STATUSES = ("succeeded", "failed", "running", "cancelled")


def fill(store: Store, runs: int = 23) -> None:
    """Two pipelines' runs of every status, some sharing a creation time (the keyset's tie),
    some not started or not ended, with parameters and reasons."""
    with store.session() as s:
        s.add(PipelineRecord(name="etl", kind="data", file="/p/etl.py", spec={}, updated_at=1.0))
        s.add(PipelineRecord(name="train", kind="training", file="/p/t.py", spec={}, updated_at=1))
        for i in range(runs):
            created = 1_700_000_000.0 + (i // 3) * 60.25  # three runs per creation time
            s.add(
                Run(
                    id=f"{(i * 7919) % 4096:03x}{i:09x}",
                    pipeline="etl" if i % 2 else "train",
                    kind="data" if i % 2 else "training",
                    file="/p/x.py",
                    status=STATUSES[i % 4],
                    params={"i": i, "name": "ü", "nested": {"a": [1, 2.5, None]}},
                    executor="local" if i % 5 else "ray",
                    created_by=f"user{i % 3}",
                    created_at=created,
                    started_at=created + 1 if i % 3 else None,
                    ended_at=created + 1 + i * 7.5 if i % 4 != 2 else None,
                    exit_reason=f"step {i} failed: exit 1" if i % 4 == 1 else None,
                )
            )

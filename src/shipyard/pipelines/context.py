"""What a running step can reach: its run's identity and other pipelines' outputs.

:func:`latest_output` lets a step read what another pipeline produced — the training pipeline
reads the data pipeline's latest ``train`` split — and records that read as ``consumed``
lineage of the current step run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import select

from shipyard.artifacts import ArtifactStore
from shipyard.errors import NotFound
from shipyard.store import Store
from shipyard.store.tables import ArtifactRecord, Lineage, Run, StepRun


@dataclass
class StepContext:
    """The step run this process executes (set by the step process before the step's code).

    Reads of other runs' outputs are collected in ``consumed`` and reported to the runner,
    which records them as lineage in the transaction that marks the step succeeded.
    """

    database_url: str
    artifacts: ArtifactStore
    run_id: str
    pipeline: str
    step: str
    step_run_id: str
    attempt: int
    consumed_rows: int = 0
    consumed_bytes: int = 0
    consumed: list[dict[str, str]] = field(default_factory=list)

    @cached_property
    def store(self) -> Store:
        """Opened on first use: most steps never touch the metadata database."""
        return Store(self.database_url, migrate=False)


_current: StepContext | None = None


def current() -> StepContext | None:
    """The running step's context, ``None`` outside a step process."""
    return _current


def set_current(ctx: StepContext | None) -> None:
    global _current
    _current = ctx


def latest_output(pipeline: str, step: str, name: str | None = None) -> Any:
    """The object that ``step`` of the latest succeeded run of ``pipeline`` produced.

    ``name`` picks one of the step's outputs (needed only when it has several). Inside a step,
    the read becomes ``consumed`` lineage of the current step run; outside, the
    workspace of the current settings is used.
    """
    ctx = _current
    if ctx is not None:
        store, artifacts = ctx.store, ctx.artifacts
    else:
        from shipyard.workspace import Workspace

        ws = Workspace.open()
        store, artifacts = ws.store, ws.artifacts
    with store.session() as s:
        producer = s.execute(
            select(StepRun.id, Run.id)
            .join(Run, Run.id == StepRun.run_id)
            .where(Run.pipeline == pipeline, StepRun.step == step, StepRun.status == "succeeded")
            .order_by(StepRun.ended_at.desc())
            .limit(1)
        ).first()
        if producer is None:
            raise NotFound(
                "output", f"{pipeline}/{step}", "no succeeded run of that step; run it first"
            )
        produced = s.execute(
            select(Lineage.name, ArtifactRecord)
            .join(ArtifactRecord, ArtifactRecord.digest == Lineage.digest)
            .where(Lineage.step_run_id == producer[0], Lineage.direction == "produced")
        ).all()
        outputs = {row[0]: row[1] for row in produced}
        if name is None and len(outputs) == 1:
            name = next(iter(outputs))
        if name is None or name not in outputs:
            raise NotFound(
                "output",
                f"{pipeline}/{step}/{name or '?'}",
                f"run {producer[1]} produced: {', '.join(sorted(outputs)) or 'nothing'}",
            )
        record = outputs[name]
    value = artifacts.get_object(record.digest, record.media_type)
    if ctx is not None:
        ctx.consumed.append({"digest": record.digest, "name": f"{pipeline}/{step}/{name}"})
        ctx.consumed_bytes += record.size_bytes
        ctx.consumed_rows += int(record.meta.get("rows", 0) or 0)
    return value

"""Run and step-run records: every state change is written in its own transaction before it
takes effect, and the read side used by ``shipyard runs``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from shipyard.artifacts import ArtifactRef, record_artifact, record_lineage
from shipyard.clock import Clock
from shipyard.errors import InvalidInput, NotFound
from shipyard.pipelines.logs import step_log_path
from shipyard.statuses import RUN_FINAL, STEP_FINAL
from shipyard.store import Store
from shipyard.store.run_list import run_summary
from shipyard.store.tables import ArtifactRecord, Lineage, PipelineRecord, Run, StepRun

if TYPE_CHECKING:  # the read side (`shipyard runs list`) needs neither the DSL nor quota
    from shipyard.pipelines.dsl import Pipeline
    from shipyard.pipelines.graph import Graph


@dataclass(frozen=True)
class NewRun:
    run_id: str
    step_run_ids: dict[str, str]
    log_paths: dict[str, str]


def create_run(
    store: Store,
    clock: Clock,
    pipeline: Pipeline,
    file: Path,
    graph: Graph,
    params: dict[str, Any],
    *,
    executor: str,
    actor: str,
    logs_dir: Path,
    tags: dict[str, Any] | None = None,
) -> NewRun:
    """Register the pipeline, and the run with all its steps ``pending``, in one transaction.

    The run records who runs it (this host, pid and the process's start time, which tells a
    reused pid apart) and a first heartbeat: :mod:`.reconcile` reads them to find runs whose
    runner died. It keeps the pipeline's resolved monitor settings (``runs.monitors``), which
    its steps and monitoring judge it by: nobody has to find the definition again."""
    from shipyard.store.base import new_id

    now = clock.time()
    run_id = new_id()
    step_ids = {node: new_id() for node in graph.nodes}
    logs = {node: str(step_log_path(logs_dir, run_id, node)) for node in graph.nodes}
    (logs_dir / run_id).mkdir(parents=True, exist_ok=True)
    spec = {"steps": graph.to_json(), "params": _jsonable(params)}
    with store.session(immediate=True) as s:
        record = s.get(PipelineRecord, pipeline.name)
        if record is None:
            record = PipelineRecord(name=pipeline.name)
            s.add(record)
        record.kind = pipeline.kind.value
        record.file = str(file)
        record.schedule = pipeline.schedule
        pool = (record.spec or {}).get("pool")  # kept for `quota plan` (reservation.py)
        record.spec = spec | ({"pool": pool} if pool else {})
        record.updated_at = now
        s.add(
            Run(
                id=run_id,
                pipeline=pipeline.name,
                kind=pipeline.kind.value,
                file=str(file),
                status="running",
                params=_jsonable(params),
                tags=tags or {},
                executor=executor,
                created_by=actor,
                created_at=now,
                started_at=now,
                runner_host=socket.gethostname(),
                runner_pid=os.getpid(),
                runner_started_at=process_started_at(os.getpid()),
                heartbeat_at=now,
                monitors=pipeline.monitors.to_json(),
            )
        )
        s.flush()
        for node_name, node in graph.nodes.items():
            s.add(
                StepRun(
                    id=step_ids[node_name],
                    run_id=run_id,
                    step=node_name,
                    status="pending",
                    attempt=0,
                    resources=node.step.resources.amounts(),
                    log_path=logs[node_name],
                )
            )
    return NewRun(run_id, step_ids, logs)


def process_started_at(pid: int | None) -> float | None:
    """When the process ``pid`` started (epoch seconds), ``None`` when it is gone."""
    import psutil  # here: the read side (`shipyard runs list`) never asks

    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | bool | str | None) else str(v)
        for k, v in params.items()
    }


def update_step(store: Store, step_run_id: str, **fields: Any) -> None:
    with store.session(immediate=True) as s:
        row = s.get(StepRun, step_run_id)
        if row is None:
            raise NotFound("step run", step_run_id)
        for key, value in fields.items():
            setattr(row, key, value)


def record_success(
    store: Store,
    clock: Clock,
    step_run_id: str,
    outputs: dict[str, dict[str, Any]],
    consumed: list[dict[str, str]],
    **fields: Any,
) -> None:
    """In one transaction: the step's output artifacts, its lineage (``consumed`` entries are
    ``{"digest", "name"}``), and its status ``succeeded`` with ``fields``."""
    now = clock.time()
    with store.session(immediate=True) as s:
        for name, out in outputs.items():
            ref = ArtifactRef(out["digest"], out["uri"], out["size_bytes"], out["media_type"])
            record_artifact(s, ref, out.get("meta", {}), now)
            record_lineage(s, out["digest"], step_run_id, "produced", name)
        for edge in consumed:
            record_lineage(s, edge["digest"], step_run_id, "consumed", edge["name"])
        row = s.get(StepRun, step_run_id)
        if row is None:
            raise NotFound("step run", step_run_id)
        row.status = "succeeded"
        for key, value in fields.items():
            setattr(row, key, value)


def heartbeat_run(store: Store, run_id: str, now: float) -> tuple[str, str | None] | None:
    """The runner is alive: stamp the run. ``None`` while the run is still ``running``, else
    ``(status, reason)`` of a run ended from outside (``runs cancel``, or reconciled as
    abandoned): the runner must then stop its steps."""
    with store.session(immediate=True) as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat_at=now)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return None
        row = s.execute(select(Run.status, Run.exit_reason).where(Run.id == run_id)).first()
        return (row[0], row[1]) if row is not None else ("failed", "the run record is gone")


def finish_run(
    store: Store, run_id: str, status: str, reason: str | None, ended_at: float
) -> tuple[str, str | None]:
    """End the run; steps that never finished become ``cancelled`` in the same transaction.

    A run already ended from outside (``runs cancel``, reconciled) keeps that ending; the
    ``(status, reason)`` the run ends with is returned."""
    with store.session(immediate=True) as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFound("run", run_id)
        if run.status in RUN_FINAL:
            return run.status, run.exit_reason
        run.status = status
        run.exit_reason = reason
        run.ended_at = ended_at
        for step in s.scalars(select(StepRun).where(StepRun.run_id == run_id)):
            if step.status not in STEP_FINAL:
                step.status = "cancelled"
                step.exit_reason = step.exit_reason or "cancelled: the run ended first"
                if step.started_at is not None and step.ended_at is None:
                    step.ended_at = ended_at
    return status, reason


def run_status(store: Store, run_id: str) -> str | None:
    with store.session() as s:
        return s.scalar(select(Run.status).where(Run.id == run_id))


# -- reading ---------------------------------------------------------------------------------
def resolve_run_id(store: Store, run_id: str) -> str:
    """A run id, given in full or as an unambiguous prefix."""
    if not run_id or not all(c in "0123456789abcdef" for c in run_id.lower()):
        raise InvalidInput(f"{run_id!r} is not a run id (hexadecimal, e.g. 3f2a9c01b7de)")
    with store.session() as s:
        found = list(s.scalars(select(Run.id).where(Run.id.startswith(run_id.lower())).limit(3)))
    if not found:
        raise NotFound("run", run_id, "see `shipyard runs list`")
    if len(found) > 1:
        raise InvalidInput(f"run id prefix {run_id!r} is ambiguous ({', '.join(found)}, …)")
    return found[0]


def list_runs(store: Store, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    query = select(Run).order_by(Run.created_at.desc()).limit(limit)
    if pipeline:
        query = query.where(Run.pipeline == pipeline)
    with store.session() as s:
        return [run_summary(r) for r in s.scalars(query)]


def step_summary(step: StepRun) -> dict[str, Any]:
    return {
        "id": step.id,
        "step": step.step,
        "status": step.status,
        "attempt": step.attempt,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "duration_s": (step.ended_at - step.started_at)
        if step.ended_at and step.started_at
        else None,
        "exit_reason": step.exit_reason,
        "exit_code": step.exit_code,
        "pid": step.pid,
        "peak_rss_bytes": step.peak_rss_bytes,
        "cpu_seconds": step.cpu_seconds,
        "input_rows": step.input_rows,
        "input_bytes": step.input_bytes,
        "resources": step.resources,
        "enforcement": step.enforcement,
        "log_path": step.log_path,
    }


def get_run(store: Store, run_id: str) -> dict[str, Any]:
    """A run with its steps (in DAG order) and each step's lineage."""
    full_id = resolve_run_id(store, run_id)
    with store.session() as s:
        run = s.get(Run, full_id)
        assert run is not None
        steps = list(s.scalars(select(StepRun).where(StepRun.run_id == full_id)))
        record = s.get(PipelineRecord, run.pipeline)
        order = list((record.spec or {}).get("steps", {})) if record else []
        steps.sort(key=lambda st: order.index(st.step) if st.step in order else len(order))
        edges = s.execute(
            select(Lineage, ArtifactRecord)
            .join(ArtifactRecord, ArtifactRecord.digest == Lineage.digest)
            .where(Lineage.step_run_id.in_([st.id for st in steps]))
        ).all()
        out = run_summary(run)
        out["steps"] = []
        for st in steps:
            summary = step_summary(st)
            summary["lineage"] = [
                {
                    "direction": lin.direction,
                    "name": lin.name,
                    "digest": art.digest,
                    "media_type": art.media_type,
                    "size_bytes": art.size_bytes,
                }
                for lin, art in edges
                if lin.step_run_id == st.id
            ]
            out["steps"].append(summary)
    return out

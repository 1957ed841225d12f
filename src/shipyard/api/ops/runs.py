"""``/runs`` and ``/pipelines/{name}/runs``: runs listed, shown, their step logs read, started
and cancelled.

Reading needs any role. Starting and cancelling need ``runs.write`` over ``pipeline:NAME``
(operator, or admin). A run started here is ``shipyard run FILE:PIPELINE`` launched on the
server's host as a detached process acting as the caller
(:mod:`shipyard.pipelines.launch`), so its ``created_by`` is the authenticated identity.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    decode_cursor,
    encode_cursor,
    operation,
    page,
)
from shipyard.api.ops.pipelines import PIPELINE
from shipyard.errors import NotFound
from shipyard.identity import READ, RUNS_WRITE

STATUS = Literal["running", "succeeded", "failed", "cancelled"]
KIND = Literal["data", "training", "validation", "serving"]

ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
ParamValue = (
    StrictBool
    | StrictInt
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, Field(max_length=4096)]
)


class RunsQuery(PageQuery):
    pipeline: str | None = Field(None, pattern=PIPELINE, description="Only this pipeline's runs.")
    status: STATUS | None = Field(None, description="Only runs in this status.")
    kind: KIND | None = Field(None, description="Only runs of pipelines of this kind.")
    since: float | None = Field(
        None, ge=0, le=1e11, description="Only runs created since then (epoch seconds)."
    )


class LogsQuery(Params):
    step: str = Field(..., min_length=1, max_length=200, description="The step whose log.")
    offset: int = Field(
        0, ge=0, le=2**53, description="Byte offset: the `offset` of the page before."
    )
    limit: int = Field(1000, ge=1, le=10_000, description="How many lines at most.")


class StartBody(Params):
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict, max_length=100, description="The pipeline's parameters."
    )
    pool: str | None = Field(None, pattern=PIPELINE, description="The quota pool to run in.")
    priority: int = Field(0, ge=-1000, le=1000, description="Admission priority (higher first).")
    wait_s: float = Field(
        30.0, gt=0, le=120, description="How long to wait for the run to be recorded."
    )


class CancelBody(Params):
    wait_s: float = Field(
        15.0, ge=0, le=60, description="Seconds the run's runner gets to stop its steps itself."
    )


def _shown(info: dict[str, Any]) -> dict[str, Any]:
    from shipyard.pipelines.listing import step_usage

    for step in info["steps"]:
        step["usage"] = step_usage(step)
    return info


@operation("GET", "/runs", name="runs.list")
def list_runs(ctx: Context, *, query: RunsQuery) -> dict[str, Any]:
    """Runs, newest first, filtered by pipeline, status, kind and creation time.

    Paged by a keyset cursor (`next`), so any page costs what the first one does."""
    from shipyard.pipelines.listing import runs_page

    ctx.require(READ)
    found = runs_page(
        ctx.ws.store,
        pipeline=query.pipeline,
        status=query.status,
        kind=query.kind,
        since=query.since,
        after=decode_cursor("runs.list", query.cursor, float, str),
        limit=query.limit,
    )
    following = found.next_key
    return page(found.items, encode_cursor("runs.list", *following) if following else None)


@operation("GET", "/runs/{run_id}", name="runs.show")
def show_run(ctx: Context, *, run_id: str) -> dict[str, Any]:
    """A run (by id or a unique prefix) with its steps in DAG order.

    Each step: state, attempt, times and duration, exit reason and code, resources declared,
    `usage` (peak memory and mean cores used against what was declared), its quota enforcement,
    and the artifacts it produced and consumed."""
    from shipyard.pipelines.records import get_run

    ctx.require(READ)
    return _shown(get_run(ctx.ws.store, run_id))


@operation("GET", "/runs/{run_id}/logs", name="runs.logs")
def run_logs(ctx: Context, *, run_id: str, query: LogsQuery) -> dict[str, Any]:
    """A page of one step's log: at most `limit` lines and 256 KiB from byte `offset`.

    Lines are the structured JSON lines the runner and the step wrote, and what the step
    printed (`stream: output`). `offset` in the answer is where the next page starts (also when
    the step is still writing: pass it again later to follow); `next` is set while more
    complete lines are already there. `run_status` was read before the log, so a finished run
    with nothing more to read has nothing more to come."""
    from shipyard.pipelines.listing import read_log_page
    from shipyard.pipelines.records import get_run

    ctx.require(READ)
    info = get_run(ctx.ws.store, run_id)
    steps = {st["step"]: st for st in info["steps"]}
    step = steps.get(query.step)
    if step is None:
        known = list(steps)
        raise NotFound("step", query.step, f"its steps: {', '.join(known)}", candidates=known)
    found = read_log_page(step["log_path"], query.offset, query.limit)
    return page(
        found.lines,
        str(found.offset) if found.more else None,
        run_id=info["id"],
        step=query.step,
        run_status=info["status"],
        offset=found.offset,
    )


@operation("POST", "/pipelines/{name}/runs", name="runs.start")
def start_run(ctx: Context, *, name: str, body: StartBody) -> dict[str, Any]:
    """Start a run of a registered pipeline with parameters; the run as recorded.

    The server launches `shipyard run FILE:PIPELINE` on its host as a detached process acting
    as you (the run's `created_by`), waits up to `wait_s` for its run record and returns it
    with the runner's pid. Parameters the pipeline refuses are a 400 with its message."""
    from shipyard.audit import record
    from shipyard.pipelines.launch import await_run, launch_run
    from shipyard.pipelines.listing import pipeline_detail
    from shipyard.pipelines.records import get_run

    ctx.require(RUNS_WRITE, f"pipeline:{name}")
    pipeline = pipeline_detail(ctx.ws.store, name, recent=0)
    launched = launch_run(
        ctx.ws.settings,
        pipeline["file"],
        name,
        body.params,
        actor=ctx.actor,
        pool=body.pool,
        priority=body.priority,
    )
    run_id = await_run(ctx.ws.store, launched, body.wait_s)
    with ctx.ws.store.session(immediate=True) as s:
        record(
            s,
            actor=ctx.actor,
            action="run.start",
            subject=("run", run_id),
            details={"pipeline": name, "params": dict(body.params), "runner_pid": launched.pid},
            now=ctx.now,
        )
    info = _shown(get_run(ctx.ws.store, run_id))
    info["runner"] = {"pid": launched.pid, "output": str(launched.output)}
    return info


@operation("POST", "/runs/{run_id}/cancel", name="runs.cancel")
def cancel_run(ctx: Context, *, run_id: str, body: CancelBody) -> dict[str, Any]:
    """Cancel a running run: mark it cancelled, stop its steps, release its leases.

    Its runner gets `wait_s` to stop its own steps; what is still running then is killed."""
    import functools

    from shipyard.pipelines.reconcile import cancel_run as cancel
    from shipyard.pipelines.records import get_run
    from shipyard.quota.admission import release_run_leases

    ctx.require(READ)
    info = get_run(ctx.ws.store, run_id)
    ctx.require(RUNS_WRITE, f"pipeline:{info['pipeline']}")
    # on the host's clock, as the run's runner records its own times
    ended = cancel(
        ctx.ws,
        info["id"],
        wait_s=body.wait_s,
        release_leases=functools.partial(release_run_leases, ctx.ws.store),
        actor=ctx.actor,
    )
    return {
        "run_id": ended.run_id,
        "pipeline": ended.pipeline,
        "status": ended.status,
        "reason": ended.reason,
        "steps_stopped": ended.steps_stopped,
        "leases_released": ended.leases_released,
    }

"""The code that runs inside a step's own process.

It makes the process the leader of a new process group (so the runner can end the step and
everything it started with one ``killpg``), watches its runner and kills its own process group
the moment the runner dies (:func:`die_with_runner`), points stdout/stderr at the step's log file,
applies the limits the enforcer chose, loads the inputs, calls the step, writes the outputs as
artifacts, and leaves a :class:`~.executor.StepResult` file (written atomically) that tells the
runner how it went.
"""

from __future__ import annotations

import inspect
import io
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

from shipyard.pipelines import context
from shipyard.pipelines.executor import ProcessLimits, StepResult, StepTask
from shipyard.pipelines.graph import OutputRef
from shipyard.pipelines.logs import log


def process_usage() -> dict[str, Any]:
    """This process's peak RSS and CPU time, its children included (``getrusage(2)``)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        # ru_maxrss is in KiB on Linux (getrusage(2)).
        "peak_rss_bytes": max(me.ru_maxrss, kids.ru_maxrss) * 1024,
        "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    }


def _failed(reason: str) -> StepResult:
    return StepResult(False, reason, **process_usage())


def _redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "wb", closefd=False), line_buffering=True)


def _resolve(value: Any, loaded: dict[str, Any]) -> Any:
    if isinstance(value, OutputRef):
        return loaded[f"{value.node}:{value.output}"]
    if isinstance(value, list):
        return [_resolve(v, loaded) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, loaded) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, loaded) for k, v in value.items()}
    return value


def _split_outputs(task: StepTask, value: Any) -> dict[str, Any]:
    if len(task.outputs) == 1:
        return {task.outputs[0]: value}
    if isinstance(value, dict) and set(value) == set(task.outputs):
        return dict(value)
    if isinstance(value, tuple | list) and len(value) == len(task.outputs):
        return dict(zip(task.outputs, value, strict=True))
    raise TypeError(
        f"step declares outputs {list(task.outputs)} but returned a {type(value).__name__}"
    )


def die_with_runner(runner_pid: int) -> None:
    """Kill this process group (the step and all it started) as soon as ``runner_pid`` exits.

    A watchdog on the runner rather than a parent-death signal (``prctl(PR_SET_PDEATHSIG)``):
    a step's parent is the runner's forkserver, not the runner, and the forkserver lives on as
    long as any of its children does (each holds the pipe whose end-of-file tells it to exit),
    so a parent-death signal would wait for the step it should kill. The watch is a pidfd
    (Linux ≥ 5.3: readable the moment the runner exits, zombie or not), else a poll of the pid
    every half second."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(runner_pid)
        except ProcessLookupError:
            fd = None  # already gone
        except (AttributeError, OSError):  # no pidfd here: poll
            while _alive(runner_pid):
                time.sleep(0.5)
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="shipyard-runner-watch").start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def idle_main(conn: Any, runner_pid: int | None = None) -> None:
    """A warm step process: lead a new process group, die with the runner, wait for one task,
    run it, exit.

    It never runs a second task, so every step attempt still has a process of its own.
    """
    os.setsid()
    if runner_pid is not None:
        die_with_runner(runner_pid)
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return  # the runner went away before giving it work
    finally:
        conn.close()
    if message is not None:
        step_main(*message)


def step_main(task: StepTask, limits: ProcessLimits) -> None:
    """Entry point of a step process (``multiprocessing`` target)."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    _redirect_output(task.log_path)
    log.bind(
        sys.stderr, run_id=task.run_id, pipeline=task.pipeline, step=task.node, attempt=task.attempt
    )
    try:
        os.chdir(task.settings["cwd"])
        os.environ.clear()
        os.environ.update(task.settings["env"])
        limits.apply_here()
        _run(task)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        log.error("step raised", reason=reason)
        _failed(reason).write(task.result_path)
        sys.stderr.flush()
        sys.exit(1)


def worker_main(task: StepTask, limits: ProcessLimits) -> StepResult:
    """Run the step in a process someone else owns (a Ray worker that serves this one task) and
    return the result instead of exiting with it.

    Unlike :func:`step_main` it keeps the worker's session and environment (the cluster's, which
    a remote node needs), adding the runner's ``SHIPYARD_*`` variables and the enforcer's; it
    moves to the runner's folder only where that folder exists. Output still goes to the step's
    log (its folder is made on a node that lacks it: the log then stays on that node). The
    result is also written to ``task.result_path``."""
    os.makedirs(os.path.dirname(task.log_path) or ".", exist_ok=True)
    _redirect_output(task.log_path)
    log.bind(
        sys.stderr, run_id=task.run_id, pipeline=task.pipeline, step=task.node, attempt=task.attempt
    )
    result: StepResult
    try:
        if os.path.isdir(task.settings["cwd"]):
            os.chdir(task.settings["cwd"])
        os.environ.update(
            {k: v for k, v in task.settings["env"].items() if k.startswith("SHIPYARD_")}
        )
        limits.apply_here()
        result = _run(task)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        log.error("step raised", reason=reason)
        result = _failed(reason)
        if os.path.isdir(os.path.dirname(task.result_path) or "."):
            result.write(task.result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    return result


def _run(task: StepTask) -> StepResult:
    from shipyard.artifacts import ArtifactStore, encode
    from shipyard.pipelines.loader import find_step

    artifacts = ArtifactStore(task.settings["artifact_url"])
    ctx = context.StepContext(
        task.settings["database_url"],
        artifacts,
        task.run_id,
        task.pipeline,
        task.node,
        task.step_run_id,
        task.attempt,
    )
    context.set_current(ctx)
    try:
        step = find_step(task.file, task.step_function)
        loaded: dict[str, Any] = {}
        input_rows = input_bytes = 0
        for key, ref in task.inputs.items():
            loaded[key] = artifacts.get_object(ref["digest"], ref["media_type"])
            input_rows += int(ref.get("meta", {}).get("rows") or 0)
            input_bytes += int(ref["size_bytes"])
        resolved = {k: _resolve(v, loaded) for k, v in task.arguments.items()}
        bound = inspect.BoundArguments(step.signature, OrderedDict(resolved))
        value = step.fn(*bound.args, **bound.kwargs)
        outputs: dict[str, dict[str, Any]] = {}
        for name, obj in _split_outputs(task, value).items():
            data, media_type, meta = encode(obj)
            art = artifacts.put_bytes(data, media_type)
            outputs[name] = {**art.to_json(), "meta": {**meta, "step": task.node}}
        sys.stdout.flush()
        result = StepResult(
            True,
            outputs=outputs,
            consumed=ctx.consumed,
            input_rows=input_rows + ctx.consumed_rows,
            input_bytes=input_bytes + ctx.consumed_bytes,
            **process_usage(),
        )
        if os.path.isdir(os.path.dirname(task.result_path) or "."):
            result.write(task.result_path)
        return result
    finally:
        context.set_current(None)
        if "store" in vars(ctx):
            ctx.store.dispose()

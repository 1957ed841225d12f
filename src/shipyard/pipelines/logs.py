"""Step logs: one file per step run under ``SHIPYARD_HOME/logs/RUN/STEP.log``.

The file holds what the step printed (stdout and stderr, including output of C code, since the
step process points file descriptors 1 and 2 at it) and structured JSON lines — one object per
line with ``ts``, ``level``, ``run_id``, ``pipeline``, ``step``, ``message`` and any extra
fields — written by the runner (attempts, exit reasons) and by steps through :data:`log`::

    from shipyard.pipelines import log
    log.info("loaded", rows=569)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

LEVELS = ("debug", "info", "warning", "error")


def step_log_path(logs_dir: Path, run_id: str, node: str) -> Path:
    return logs_dir / run_id / f"{node}.log"


def json_line(level: str, message: str, context: dict[str, Any], **extra: Any) -> str:
    record = {"ts": round(time.time(), 6), "level": level, **context, "message": message, **extra}
    return json.dumps(record, default=str, ensure_ascii=False) + "\n"


def append(
    path: str | Path, level: str, message: str, context: dict[str, Any], **extra: Any
) -> None:
    """Append one JSON line (a single ``write`` on an ``O_APPEND`` file, so lines never mix)."""
    data = json_line(level, message, context, **extra).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class StepLogger:
    """Structured logging for step code; outside a step it writes JSON lines to stderr."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {}
        self.sink: IO[str] | None = None

    def bind(self, sink: IO[str] | None, **context: Any) -> None:
        self.sink = sink
        self.context = context

    def _emit(self, level: str, message: str, extra: dict[str, Any]) -> None:
        out = self.sink or sys.stderr
        out.write(json_line(level, message, self.context, **extra))
        out.flush()

    def debug(self, message: str, **extra: Any) -> None:
        self._emit("debug", message, extra)

    def info(self, message: str, **extra: Any) -> None:
        self._emit("info", message, extra)

    def warning(self, message: str, **extra: Any) -> None:
        self._emit("warning", message, extra)

    def error(self, message: str, **extra: Any) -> None:
        self._emit("error", message, extra)


log = StepLogger()


def parse_line(line: str) -> dict[str, Any]:
    """A structured line as its object; anything the step printed as ``{"stream": "output"}``."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            if isinstance(value, dict) and "message" in value:
                return value
    return {"stream": "output", "message": text}


def read_lines(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte ``offset`` on, and the offset after the last complete line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return [parse_line(line) for line in lines], offset + end


def follow(
    paths: list[Path], stop: Any, poll_s: float = 0.2
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Lines of several log files as they grow, until ``stop()`` is true and nothing is left."""
    offsets = dict.fromkeys(paths, 0)
    while True:
        finished = bool(stop())
        got = False
        for path in paths:
            lines, offsets[path] = read_lines(path, offsets[path])
            for line in lines:
                got = True
                yield path, line
        if finished and not got:
            return
        if not got:
            time.sleep(poll_s)

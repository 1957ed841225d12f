"""One logging setup for every long-running face: JSON lines by default, text on request.

``shipyard serve``, ``shipyard server`` and ``shipyard daemon`` call :func:`configure` once
(``--log-format json|text``, or ``SHIPYARD_LOG_FORMAT``); the standard library's ``logging`` does
the rest, so every module keeps its ``logging.getLogger(__name__)``.

A JSON line has the step logs' field names (:mod:`shipyard.pipelines.logs`: ``ts``, ``level``,
``message``, ``run_id``, ``pipeline``, ``step``), ``logger``, and whatever correlates the line
with the rest of the system, given as ``extra=`` by the caller or bound for a block with
:func:`bound`: ``request_id``, ``trace_id``, ``span_id``, ``model``, ``version``,
``rollout_id``, ``task``. Text lines carry the same fields as ``key=value`` after the message.

    log.warning("model raised", extra={"request_id": rid, "trace_id": tid, "model": m})

The serving path logs a request only when something went wrong with it (a refusal, a model
error) or at ``debug``: a line per answered request would cost throughput.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from shipyard.errors import InvalidInput

__all__ = [
    "FORMAT_ENV",
    "LOG_FORMATS",
    "JsonFormatter",
    "TextFormatter",
    "bound",
    "configure",
    "fields_of",
    "lines_naming",
]

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
FORMAT_ENV = "SHIPYARD_LOG_FORMAT"
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")
"""A line per probe, per delivery and per export: the callers log what changed."""

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_bound: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "shipyard.log_fields", default=None
)
_HANDLER_NAME = "shipyard"


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every line logged in this block (this thread or task only)."""
    token = _bound.set({**(_bound.get() or {}), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The correlation fields of a record: those bound by :func:`bound`, then its ``extra``."""
    fields = dict(_bound.get() or {})
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the step logs' field names."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value …``: for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = fields_of(record)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {pairs}{newline}{rest}"


def configure(
    fmt: str = "json", level: int | str = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) as ``fmt`` lines; calling it again
    replaces the handler it installed, nothing else. Returns the handler."""
    if fmt not in LOG_FORMATS:
        raise InvalidInput(f"log format {fmt!r}: choose json or text")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def lines_naming(paths: Iterable[Path], key: str, value: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``paths`` whose ``key`` is ``value`` or a list holding it (lines
    that are not JSON objects, a text log's, are skipped), each with its ``file``."""
    found: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if value not in line:  # cheap before parsing
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(doc, dict):
                    continue
                got = doc.get(key)
                if got == value or (isinstance(got, list) and value in got):
                    found.append({"file": str(path), **doc})
    return found

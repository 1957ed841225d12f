"""The one logging setup: JSON lines with the step logs' field names and the correlation
fields a caller gives or binds; text lines with the same fields; a bad format refused."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import InvalidInput
from shipyard.observability.logs import bound, configure, lines_naming

log = logging.getLogger("shipyard.test.logs")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _emit(fmt: str) -> list[str]:
    out = io.StringIO()
    configure(fmt, logging.INFO, out)
    with bound(rollout_id="r1"):
        log.warning("refused %s", "x", extra={"request_id": "q1", "model": "churn", "version": 2})
    log.debug("not shown at info")
    return out.getvalue().splitlines()


def test_a_json_line_has_the_step_logs_fields_and_the_correlation_fields(
    restore_root: None,
) -> None:
    (line,) = _emit("json")
    doc = json.loads(line)
    assert doc["level"] == "warning" and doc["message"] == "refused x"
    assert doc["logger"] == "shipyard.test.logs" and isinstance(doc["ts"], float)
    assert {k: doc[k] for k in ("request_id", "model", "version", "rollout_id")} == {
        "request_id": "q1",
        "model": "churn",
        "version": 2,
        "rollout_id": "r1",
    }


def test_a_text_line_carries_the_same_fields_as_key_value_pairs(restore_root: None) -> None:
    (line,) = _emit("text")
    assert "WARNING shipyard.test.logs refused x" in line
    assert "request_id=q1" in line and "rollout_id=r1" in line and "version=2" in line


def test_bound_fields_end_with_their_block(restore_root: None) -> None:
    out = io.StringIO()
    configure("json", logging.INFO, out)
    with bound(task="deploy"):
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(x) for x in out.getvalue().splitlines())
    assert inside["task"] == "deploy" and "task" not in outside


def test_configuring_again_replaces_the_handler_instead_of_doubling_lines(
    restore_root: None,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("json", logging.INFO, first)
    configure("json", logging.INFO, second)
    log.info("once")
    assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1


def test_an_unknown_format_is_refused_and_changes_nothing(restore_root: None) -> None:
    before = list(logging.getLogger().handlers)
    with pytest.raises(InvalidInput, match="json or text"):
        configure("xml")
    assert logging.getLogger().handlers == before


def test_lines_naming_finds_a_value_or_a_list_holding_it_and_skips_other_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "server.log"
    path.write_text(
        "plain text line abc\n"
        + json.dumps({"ts": 1.0, "trace_id": "abc", "message": "one"})
        + "\n"
        + json.dumps({"ts": 2.0, "trace_ids": ["x", "abc"], "message": "two"})
        + "\n"
        + json.dumps({"ts": 3.0, "trace_id": "abcd", "message": "other"})
        + '\n[1, 2, "abc"]\n',
        encoding="utf-8",
    )
    assert [d["message"] for d in lines_naming([path], "trace_id", "abc")] == ["one"]
    assert [d["message"] for d in lines_naming([path], "trace_ids", "abc")] == ["two"]

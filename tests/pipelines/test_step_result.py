"""The step result: one typed record from the step process, read the same way by every
executor."""

from __future__ import annotations

from pathlib import Path

from shipyard.pipelines.executor import StepResult

OUTPUT = {"digest": "ab" * 32, "media_type": "application/json", "size_bytes": 2}


def test_a_result_reads_back_as_written(tmp_path: Path) -> None:
    path = str(tmp_path / ".step.1.result.json")
    written = StepResult(
        True,
        outputs={"output": OUTPUT},
        consumed=[{"digest": "cd" * 32, "name": "train"}],
        input_rows=10,
        input_bytes=2048,
        peak_rss_bytes=1 << 20,
        cpu_seconds=0.25,
    )
    written.write(path)
    assert StepResult.read(path) == written
    assert not Path(f"{path}.tmp").exists()


def test_no_result_file_or_a_torn_one_reads_as_none(tmp_path: Path) -> None:
    assert StepResult.read(str(tmp_path / "missing.json")) is None
    torn = tmp_path / "torn.json"
    torn.write_text('{"ok": tr', encoding="utf-8")
    assert StepResult.read(str(torn)) is None


def test_the_outcome_carries_outputs_on_success_and_the_reason_on_failure() -> None:
    ok = StepResult(True, outputs={"output": OUTPUT}, input_rows=3).outcome(0, 100, 1.5)
    assert (ok.ok, ok.exit_code, ok.outputs, ok.input_rows) == (True, 0, {"output": OUTPUT}, 3)
    assert (ok.peak_rss_bytes, ok.cpu_seconds) == (100, 1.5)
    failed = StepResult(False, "ValueError: boom", outputs={"x": OUTPUT}).outcome(1, None, None)
    assert (failed.ok, failed.reason, failed.exit_code, failed.outputs) == (
        False,
        "ValueError: boom",
        1,
        {},
    )

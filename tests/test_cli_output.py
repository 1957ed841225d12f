"""Output that survives an 80-column terminal and a CI log (issue 19, item 9), and read-only
commands that do not make a workspace where they run (item 10)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from cli_testkit import broken, lines_wider_than, shipyard, words
from shipyard.cli.output import table

IDENTIFIERS = ["digits-batch-0001", "digits-training", "cancer-classifier", "statistic"]
SUMMARY = (
    "input drift on 12 of 64 columns: pixel_3_4 (psi 0.41), pixel_5_2 (psi 0.33) and "
    "pixel_7_1 (psi 0.29) moved the most since the reference of version 3"
)


def render(t: object, width: int, piped: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, soft_wrap=piped, color_system=None)
    console.print(t)
    return out.getvalue()


def wide_table() -> object:
    t = table("pipeline", "dataset", "monitor", "statistic", "status", "summary", free={"summary"})
    for name in IDENTIFIERS:
        t.add_row("digits-training", name, "feature_drift", "0.413", "alert", SUMMARY)
    return t


class TestFittedTable:
    @pytest.mark.parametrize("piped", [False, True])
    def test_at_80_columns_no_word_is_broken_and_the_table_fits(self, piped: bool) -> None:
        text = render(wide_table(), 80, piped)
        identifiers = {*IDENTIFIERS, "feature_drift", "pipeline", "dataset", "monitor"}
        assert broken(text, identifiers) == []
        assert lines_wider_than(text, 80) == []
        assert "pixel_3_4" in text  # free text wraps between its words first

    def test_free_text_is_cut_with_an_ellipsis_when_words_cannot_fit(self) -> None:
        t = table("name", "detail", free={"detail"})
        t.add_row("cancer-classifier-v2", "x" * 60)
        text = render(t, 40, piped=False)
        assert "cancer-classifier-v2" in text
        assert "…" in text and "x" * 60 not in text
        assert lines_wider_than(text, 40) == []

    def test_piped_a_table_that_cannot_fit_is_drawn_wider_not_broken(self) -> None:
        t = table("a", "b")
        t.add_row("digits-batch-0001-long-identifier", "another-long-identifier-value")
        text = render(t, 30, piped=True)
        assert (
            broken(text, ["digits-batch-0001-long-identifier", "another-long-identifier-value"])
            == []
        )

    def test_a_table_that_fits_is_left_at_its_natural_width(self) -> None:
        t = table("model", "latest")
        t.add_row("cancer", "3")
        assert max(len(line) for line in render(t, 200, piped=False).splitlines()) < 30

    def test_rendering_twice_at_different_widths_does_not_stick(self) -> None:
        t = wide_table()
        render(t, 80, piped=False)
        wide = render(t, 400, piped=False)
        assert SUMMARY in wide  # the widths chosen for 80 columns were given back


def drift_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    columns = {
        "digits-batch": rng.normal(size=400),
        "pixel_intensity_mean": rng.normal(size=400),
        "category_label": rng.integers(0, 4, size=400),
    }
    ref = pd.DataFrame(columns)
    cur = ref.copy()
    cur["digits-batch"] = cur["digits-batch"] + 2.0
    ref_path, cur_path = tmp_path / "reference.csv", tmp_path / "current.csv"
    ref.to_csv(ref_path, index=False)
    cur.to_csv(cur_path, index=False)
    return ref_path, cur_path


class TestRealProcess:
    def test_drift_at_80_columns_piped_keeps_every_word(self, tmp_path: Path) -> None:
        ref, cur = drift_files(tmp_path)
        out = shipyard("drift", str(ref), str(cur))
        assert out.returncode == 0, out.stderr
        expected = {"digits-batch", "pixel_intensity_mean", "category_label", "statistic"}
        expected |= {"threshold", "verdict", "distance", "p-value"}
        assert broken(out.stdout, expected) == []
        assert lines_wider_than(out.stdout, 80) == []

    def test_piped_without_columns_nothing_is_wrapped(self, tmp_path: Path) -> None:
        ref, cur = drift_files(tmp_path)
        out = shipyard("drift", str(ref), str(cur), columns=None)
        summary = [line for line in out.stdout.splitlines() if "columns drifted" in line]
        assert len(summary) == 1 and "(threshold 50% of columns)" in summary[0]

    def test_json_is_the_same_at_any_width(self, tmp_path: Path) -> None:
        ref, cur = drift_files(tmp_path)
        narrow = shipyard("drift", str(ref), str(cur), "--json", columns=20)
        wide = shipyard("drift", str(ref), str(cur), "--json", columns=400)
        assert narrow.stdout == wide.stdout
        assert json.loads(narrow.stdout)["columns"]

    @pytest.mark.slow
    def test_piped_run_logs_keep_a_long_line_whole(self, tmp_path: Path) -> None:
        line = " ".join(f"token{i:03d}" for i in range(60))  # about 540 characters
        (tmp_path / "chatty.py").write_text(
            "from shipyard.pipelines import Pipeline, step\n\n"
            "@step()\n"
            "def speak() -> int:\n"
            f"    print({line!r})\n"
            "    return 1\n\n"
            "@Pipeline('chatty', kind='data')\n"
            "def build():\n"
            "    return speak()\n"
        )
        assert shipyard("init").returncode == 0
        ran = shipyard("run", str(tmp_path / "chatty.py"), "--json", cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        run_id = json.loads(ran.stdout)["id"]
        logs = shipyard("runs", "logs", run_id)
        assert logs.returncode == 0, logs.stderr
        assert line in logs.stdout.splitlines()


class TestReadOnlyCommandsNeedAWorkspace:
    @pytest.mark.parametrize(
        "args",
        [["runs", "list"], ["models", "list"], ["quota", "status"], ["alerts", "rules"]],
    )
    def test_a_forgotten_home_is_a_hint_not_an_empty_workspace(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
    ) -> None:
        monkeypatch.delenv("SHIPYARD_HOME")
        out = shipyard(*args, cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr.strip() == (
            f"error: no Shipyard workspace at {tmp_path / '.shipyard'}; "
            "run `shipyard init` or set SHIPYARD_HOME"
        )
        assert not (tmp_path / ".shipyard").exists()

    def test_init_makes_it_and_then_they_work(self, tmp_path: Path) -> None:
        assert shipyard("init").returncode == 0
        out = shipyard("runs", "list")
        assert out.returncode == 0 and "no runs yet" in out.stdout
        assert words("no runs yet") <= words(out.stdout)

"""``shipyard drift|profile|schema`` on real files, through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from shipyard.cli import Group
from shipyard.cli import stats as stats_cli

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(cls=Group)  # the CLI's root group: errors become one line

    @app.callback()
    def _root() -> None:
        """Test root (keeps sub-commands named)."""

    stats_cli.register(app)
    return app


def _frame(seed: int, n: int = 5000, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(shift, 1, n),
            "b": rng.normal(shift, 1, n),
            "city": rng.choice(np.array(["Oslo", "Rome", "Lima"], dtype=object), n),
        }
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "ref": tmp_path / "ref.parquet",
        "same": tmp_path / "same.csv",
        "shifted": tmp_path / "shifted.parquet",
    }
    _frame(1).to_parquet(paths["ref"])
    _frame(2).to_csv(paths["same"], index=False)
    _frame(3, shift=1.0).to_parquet(paths["shifted"])
    return paths


class TestDrift:
    def test_iid_files_do_not_drift_and_exit_zero(self, app: typer.Typer, files: dict) -> None:
        out = runner.invoke(
            app, ["drift", str(files["ref"]), str(files["same"]), "--fail-on-drift"]
        )
        assert out.exit_code == 0, out.output
        assert "0 of 3 columns drifted" in out.output
        assert "city" in out.output and "W1/σ" in out.output

    def test_shifted_file_fails_with_exit_code_3(self, app: typer.Typer, files: dict) -> None:
        args = ["drift", str(files["ref"]), str(files["shifted"]), "--fail-on-drift", "--json"]
        out = runner.invoke(app, args)
        assert out.exit_code == 3
        report = json.loads(out.stdout)
        assert report["drifted_columns"] == ["a", "b"]
        assert report["drifted"] is True

    def test_a_stored_profile_stands_in_for_the_reference(
        self, app: typer.Typer, files: dict, tmp_path: Path
    ) -> None:
        profile = tmp_path / "ref.json"
        assert (
            runner.invoke(app, ["profile", str(files["ref"]), "--out", str(profile)]).exit_code == 0
        )
        from_profile = runner.invoke(app, ["drift", str(profile), str(files["shifted"]), "--json"])
        from_data = runner.invoke(
            app, ["drift", str(files["ref"]), str(files["shifted"]), "--json"]
        )
        assert json.loads(from_profile.stdout) == json.loads(from_data.stdout)

    def test_html_report_is_self_contained_with_a_plot_per_drifted_column(
        self, app: typer.Typer, files: dict, tmp_path: Path
    ) -> None:
        page = tmp_path / "report.html"
        out = runner.invoke(
            app, ["drift", str(files["ref"]), str(files["shifted"]), "--html", str(page)]
        )
        assert out.exit_code == 0, out.output
        text = page.read_text()
        assert text.count("<svg") == 2
        assert "<script" not in text and "http" not in text

    def test_html_for_a_thousand_columns_stays_light(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(4)
        ref = pd.DataFrame(rng.normal(0, 1, (2000, 1000)), columns=[f"c{i}" for i in range(1000)])
        cur = ref.copy()
        cur.iloc[:, :100] += 1.0
        from shipyard.stats import DatasetProfile, compare

        rp = DatasetProfile.from_frame(ref)
        report = compare(rp, DatasetProfile.from_frame(cur, reference=rp))
        page = stats_cli.render_html(report, "ref", "cur")
        assert page.count("<svg") == 100
        assert len(page) < 3_000_000

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda p: None, "no file named"),
            (lambda p: p.write_bytes(b"\x00\x01garbage"), "cannot read"),
        ],
    )
    def test_missing_or_unreadable_file_is_one_line_exit_1(
        self, app: typer.Typer, files: dict, tmp_path: Path, make, message: str
    ) -> None:
        bad = tmp_path / "bad.parquet"
        make(bad)
        out = runner.invoke(app, ["drift", str(files["ref"]), str(bad)])
        assert out.exit_code == 1
        assert message in out.output
        assert "Traceback" not in out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)

    def test_a_json_that_is_not_a_profile_is_rejected(
        self, app: typer.Typer, files: dict, tmp_path: Path
    ) -> None:
        bogus = tmp_path / "p.json"
        bogus.write_text('{"hello": 1}')
        out = runner.invoke(app, ["drift", str(bogus), str(files["same"])])
        assert out.exit_code == 1 and "not a Shipyard profile" in out.output


class TestSchema:
    def test_infer_then_validate_reports_anomalies(
        self, app: typer.Typer, files: dict, tmp_path: Path
    ) -> None:
        schema = tmp_path / "schema.json"
        out = runner.invoke(app, ["schema", "infer", str(files["ref"]), "--out", str(schema)])
        assert out.exit_code == 0, out.output
        bad = tmp_path / "bad.csv"
        _frame(5).assign(city="Paris").to_csv(bad, index=False)
        args = [
            "schema",
            "validate",
            str(bad),
            "--schema",
            str(schema),
            "--json",
            "--fail-on-anomaly",
        ]
        out = runner.invoke(app, args)
        assert out.exit_code == 3
        kinds = {(a["column"], a["kind"]) for a in json.loads(out.stdout)}
        assert ("city", "unseen_category") in kinds

    def test_validate_clean_data_says_so(
        self, app: typer.Typer, files: dict, tmp_path: Path
    ) -> None:
        schema = tmp_path / "schema.json"
        runner.invoke(app, ["schema", "infer", str(files["ref"]), "--out", str(schema)])
        out = runner.invoke(app, ["schema", "validate", str(files["ref"]), "--schema", str(schema)])
        assert out.exit_code == 0 and "no anomalies" in out.output

"""``shipyard models …`` driven through Typer (the lazy CLI lists it in COMMANDS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
import typer
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from shipyard.errors import ConfigError, InvalidInput, NotFound
from shipyard.workspace import Workspace


def test_register_list_show_alias_roundtrip(app: typer.Typer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 2)), columns=["u", "v"])
    clf = LogisticRegression().fit(frame.to_numpy(), (frame["u"] > 0).astype(int))
    (tmp_path / "m.skops").write_bytes(sio.dumps(clf))
    frame.to_csv(tmp_path / "train.csv", index=False)
    runner = CliRunner()
    for _ in range(2):
        r = runner.invoke(
            app,
            ["models", "register", "cli-model", str(tmp_path / "m.skops"), "--training-data",
             str(tmp_path / "train.csv"), "--metric", "accuracy=0.9", "--alias", "champion"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "alias", "cli-model", "champion", "1", "--reason", "back"])
    assert r.exit_code == 0 and "2 → 1" in r.output
    r = runner.invoke(app, ["models", "list", "--json"])
    listed = json.loads(r.output)
    assert listed[0]["name"] == "cli-model" and listed[0]["latest_version"] == 2
    assert listed[0]["aliases"] == {"champion": 1}
    r = runner.invoke(app, ["models", "show", "cli-model", "--json"])
    shown = json.loads(r.output)
    assert shown["version"] == 1 and shown["metrics"] == {"accuracy": 0.9}
    assert [(h["from"], h["to"]) for h in shown["alias_history"]] == [(None, 1), (1, 2), (2, 1)]
    assert shown["has_reference_profile"] is True


def test_cli_errors_are_shipyard_errors(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["models", "register", "x", str(tmp_path / "missing.skops")])
    assert isinstance(r.exception, InvalidInput)
    r = runner.invoke(app, ["models", "alias", "nope", "champion", "1"])
    # moving an alias goes through the control plane's client, which opens no new workspace
    assert isinstance(r.exception, ConfigError) and "shipyard init" in str(r.exception)
    Workspace.open().store.dispose()
    r = runner.invoke(app, ["models", "alias", "nope", "champion", "1"])
    assert isinstance(r.exception, NotFound)
    r = runner.invoke(app, ["models", "import-mlflow", str(tmp_path), "--name", "m"])
    assert isinstance(r.exception, InvalidInput) and "no MLmodel" in str(r.exception)

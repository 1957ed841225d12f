"""Every command that takes a model, pipeline, pool, rollout or run name answers an unknown one
with the same line, ``no <kind> named 'X'`` (and the closest names), in a real process at 80
columns with its output piped (issue 19).

The commands come from the Typer app: a parameter is a name by what it is called
(``NAMES``), so a new command that takes a model is checked without being listed here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cli_testkit import command_tree, shipyard

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# parameter name → (kind, a misspelt name, the name it should suggest or None)
NAMES: dict[str, tuple[str, str, str | None]] = {
    "model": ("model", "cancr", "cancer"),
    "name": ("model", "cancr", "cancer"),
    "pipeline": ("pipeline", "digits-dta", "digits-data"),
    "like": ("pipeline", "digits-dta", "digits-data"),
    "pool": ("pool", "shard", "shared"),
    "reserve": ("pool", "shard", "shared"),
    "rollout_id": ("rollout", "0123456789ab", None),
    "run_id": ("run", "abc123", None),
    "receiver": ("receiver", "demo-lg", "demo-log"),
    "target": ("pipeline", "digits-dta", "digits-data"),
    "silence_id": ("silence", "nope", None),
}
# commands whose NAME is a new one, not one to look up
NOT_LOOKUPS = {
    ("models", "register", "name"),
    ("models", "import-mlflow", "name"),
    ("hardware", "advise", "target"),  # FILE:STEP with run history, not a name
}
# other helpers' changes make these answer the rule; the integrator removes the marks
OTHERS: dict[tuple[str, ...], str] = {}


def known(ws_dir: Path) -> dict[str, str]:
    """A valid value for every parameter that a command needs besides the name under test."""
    return {
        "model": "cancer",
        "name": "cancer",
        "pipeline": "digits-data",
        "pool": "shared",
        "target": str(ws_dir / "tiny.py"),
        "version": "1",
        "qps": "1",
        "file": str(ws_dir / "policy.yaml"),
        "data": str(ws_dir / "eval.csv"),
        "label": "target",
        "alias_name": "champion",
    }


def cases() -> Iterator[Any]:
    for path, command in command_tree().items():
        if hasattr(command, "commands"):
            continue
        for param in command.params:
            key = (*path, param.name)
            if param.name not in NAMES or key in NOT_LOOKUPS or getattr(param, "is_flag", False):
                continue
            marks = []
            if key in OTHERS:
                marks.append(pytest.mark.xfail(strict=False, reason=OTHERS[key]))
            yield pytest.param(path, param.name, marks=marks, id=" ".join(key))


def argv(path: tuple[str, ...], under_test: str, ws_dir: Path) -> list[str]:
    """The command line: the misspelt name for ``under_test``, valid values elsewhere."""
    command = command_tree()[path]
    fill = known(ws_dir)
    args: list[str] = list(path)
    for param in command.params:
        if param.name == under_test:
            value = NAMES[under_test][1]
            if param.name == "target":
                value = f"{fill['target']}:{value}"
        elif param.required or (param.param_type_name == "argument" and param.name in fill):
            if param.name not in fill:
                pytest.fail(f"shipyard {' '.join(path)}: give test a value for {param.name}")
            value = fill[param.name]
        else:
            continue
        if param.param_type_name == "option":
            args += [param.opts[0], value]
        else:
            args.append(value)
    if path == ("serve",):
        args += ["--port", "0"]  # should it listen after all, not on a port in use
    return args


TINY = """
from shipyard.pipelines import Pipeline, step

@step()
def make() -> int:
    return 1

@Pipeline("digits-data", kind="data")
def build():
    return make()
"""


@pytest.fixture(scope="module")
def ws_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a model 'cancer' (v1), a pipeline 'digits-data' that ran, a pool
    'shared' and a receiver 'demo-log'."""
    from sklearn.linear_model import LogisticRegression

    from shipyard.registry import Registry
    from shipyard.workspace import Workspace

    root = tmp_path_factory.mktemp("names")
    env = {"SHIPYARD_HOME": str(root / "home")}
    (root / "tiny.py").write_text(TINY)
    (root / "pools.yaml").write_text(
        "pools:\n  - name: shared\n    mode: shared\n    capacity: {cpu: 2, memory: 2Gi}\n"
    )
    (root / "policy.yaml").write_text((EXAMPLES / "policy.yaml").read_text())
    for args in (["init"], ["quota", "apply", str(root / "pools.yaml")], ["run", "tiny.py"]):
        done = shipyard(*args, cwd=root, env=env)
        assert done.returncode == 0, done.stderr
    (root / "home" / "alerting.yaml").write_text(
        "route: {receiver: demo-log}\nreceivers:\n  - {name: demo-log, type: log, path: a.log}\n"
    )
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (x["a"] > 0).astype(int)
    pd.concat([x, y.rename("target")], axis=1).to_csv(root / "eval.csv", index=False)
    ws = Workspace.open(home=root / "home")
    Registry.of(ws).register("cancer", LogisticRegression().fit(x, y), training_data=x)
    ws.store.dispose()
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("path", "under_test"), list(cases()))
def test_an_unknown_name_is_one_clear_line(
    ws_dir: Path, tmp_path: Path, path: tuple[str, ...], under_test: str
) -> None:
    kind, wrong, suggestion = NAMES[under_test]
    here = shutil.copytree(ws_dir, tmp_path / "ws")  # a command that wrongly writes stays here
    args = argv(path, under_test, here)
    out = shipyard(*args, cwd=here, env={"SHIPYARD_HOME": str(here / "home")}, timeout=90)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Traceback" not in text
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, text
    assert re.match(rf"error: no {kind} named '{re.escape(wrong)}'", errors[0]), errors[0]
    if suggestion is not None:
        assert f"did you mean '{suggestion}'?" in errors[0]


def test_every_kind_of_name_is_covered() -> None:
    covered = {NAMES[p.values[1]][0] for p in cases()}
    assert {"model", "pipeline", "pool", "rollout", "run"} <= covered

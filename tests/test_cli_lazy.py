"""The ``shipyard`` command loads a command's module only when that command runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer._coercion import TypeDescriptor

from shipyard.cli import _BUILD, COMMANDS, _as_given, _reflow_all, reflow

HEAVY = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "fastapi",
    "uvicorn",
)
"""Libraries that neither ``shipyard --help`` nor a command's ``--help`` needs."""

NOT_FOR_LISTING_RUNS = {
    "sqlalchemy",  # the default SQLite workspace is read on the driver (store.run_list)
    "pydantic",  # its settings are the defaults but the home (config.location.plain_home)
    "pydantic_settings",
    "shipyard.config.settings",
    "shipyard.store.db",
    "shipyard.store.tables",
    "shipyard.api.client",  # the runs.list operation is for the server and the full way
    "shipyard.api.operations",
    "alembic",  # only to migrate a schema that is behind
    "fsspec",  # the artifact store's file systems
    "psutil",  # a run's process, when it is created or reconciled
    "rich.live",  # `shipyard run`'s progress
    "typer._adapters",  # Typer's Pydantic coercion: no option given needs it
    "shipyard.cli.audit",  # --since's parser, when --since is given
    "shipyard.audit.events",  # the audit's reader, verifier and identity events: the embedded
    "shipyard.audit.verify",  # client only says who acts (shipyard.audit.acting)
    "shipyard.audit.identity",
    "shipyard.pipelines.dsl",
    "shipyard.pipelines.runner",
    "shipyard.quota",
    "shipyard.monitoring",
    "shipyard.registry",
    "shipyard.deploy",
    "shipyard.serving",
    "shipyard.store.quota",
    "shipyard.store.registry",
    "shipyard.store.deploy",
}
"""What ``shipyard runs list`` must not load: it reads the runs table and prints it."""


WATCH = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
from shipyard.cli import main
main()
"""


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the ``shipyard`` command with ARGS as a real process; the modules it had loaded when
    it exited."""
    modules_out = cwd / "modules.json"
    out = subprocess.run(
        [sys.executable, "-c", WATCH, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "MODULES_OUT": str(modules_out)},
        timeout=120,
    )
    return out, set(json.loads(modules_out.read_text()))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def _under(modules: set[str], names: set[str]) -> set[str]:
    """The modules that are one of ``names`` or inside one of them."""
    return {m for m in modules if m in names or any(m.startswith(f"{n}.") for n in names)}


class TestTheCommandTable:
    @pytest.mark.parametrize("module", sorted({m for m, _ in COMMANDS.values()}))
    def test_lists_exactly_what_the_module_registers_with_its_first_help_line(
        self, module: str
    ) -> None:
        """A command added to a module, or a help line changed, must be changed in the table."""
        sub = typer.Typer(rich_markup_mode="rich")
        import_module(f"shipyard.cli.{module}").register(sub)
        _reflow_all(sub)
        registered = typer.main.get_group(sub).commands
        listed = {name for name, (m, _) in COMMANDS.items() if m == module}
        assert set(registered) == listed
        for name, command in registered.items():
            first = reflow(command.help or "").split("\n\n")[0]
            assert COMMANDS[name][1] == first, name


class TestColdStart:
    def test_help_lists_every_command_and_loads_no_command_module(self, tmp_path: Path) -> None:
        out, modules = imported("--help", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        for name, (_, short_help) in COMMANDS.items():
            assert f" {name} " in out.stdout and short_help[:40] in out.stdout
        assert not {m for m in modules if m.startswith("shipyard.cli.")}
        assert not _top(modules) & set(HEAVY)

    def test_a_command_loads_its_own_module_only(self, tmp_path: Path) -> None:
        out, modules = imported("drift", "--help", cwd=tmp_path)
        assert out.returncode == 0 and "REFERENCE" in out.stdout
        assert {m for m in modules if m.startswith("shipyard.cli.")} == {
            "shipyard.cli.stats",
            "shipyard.cli.output",
        }
        assert not _top(modules) & set(HEAVY)
        assert {m for m in modules if m.startswith("shipyard.stats.")} == set()

    def test_a_subcommand_help_coerces_nothing_through_pydantic(self, tmp_path: Path) -> None:
        """Typer coerces a parameter's value through a Pydantic adapter unless it is a bool
        already; the root's ``--help`` flag defaulted to None, which loaded Pydantic (a
        Typer import's worth of time) for every subcommand."""
        out, modules = imported("schema", "infer", "--help", cwd=tmp_path)
        assert out.returncode == 0 and "--out" in out.stdout
        assert "pydantic" not in _top(modules)

    def test_listing_runs_on_sqlite_loads_neither_sqlalchemy_nor_pydantic(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SQLAlchemy's import alone is twice Typer's: the floor of issue 12's 3× is kept by
        reading the runs on the driver (``tests/pipelines/test_cli_runs_list.py`` checks that
        it prints what the operation's answer prints)."""
        from shipyard.workspace import Workspace

        Workspace.open()  # read-only commands refuse a missing workspace (issue 19)
        # any SHIPYARD_ variable but the home and the user sends the command the full way
        monkeypatch.delenv("SHIPYARD_TEST_POSTGRES_URL", raising=False)
        out, modules = imported("runs", "list", cwd=tmp_path)
        assert out.returncode == 0 and "no runs yet" in out.stdout
        assert "shipyard.store.run_list" in modules
        assert not _top(modules) & {"numpy", "pandas", "scipy", "sklearn", "fastapi", "uvicorn"}
        assert not _under(modules, NOT_FOR_LISTING_RUNS)

    def test_an_option_given_is_judged_by_typers_own_adapter_when_it_needs_one(
        self, tmp_path: Path
    ) -> None:
        from shipyard.workspace import Workspace

        Workspace.open()
        out, modules = imported("runs", "list", "--limit", "5", "--status", "failed", cwd=tmp_path)
        assert out.returncode == 0 and "no runs match" in out.stdout
        assert "typer._adapters" not in modules
        out, modules = imported("runs", "list", "--limit", "0", cwd=tmp_path)
        assert out.returncode == 2
        assert "Invalid value for '--limit': Input should be greater than or equal to 1" in (
            " ".join(out.stderr.replace("│", " ").split())
        )
        assert "typer._adapters" in modules

    def test_a_command_that_skips_the_last_collection_still_closes_its_database(
        self, tmp_path: Path
    ) -> None:
        """``main`` freezes the heap rather than collect it as the process ends; the store's
        connections are closed first, so SQLite checkpoints its WAL as before."""
        out, _ = imported("init", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        home = Path(os.environ["SHIPYARD_HOME"])
        assert (home / "shipyard.db").is_file()
        assert not (home / "shipyard.db-wal").exists()

    def test_drift_computes_its_p_values_without_scipy_stats(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)}).to_parquet(
            tmp_path / "ref.parquet"
        )
        pd.DataFrame({"x": rng.normal(1, size=500), "c": rng.choice(["a", "c"], 500)}).to_parquet(
            tmp_path / "cur.parquet"
        )
        out, modules = imported("drift", "ref.parquet", "cur.parquet", "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert '"drifted": true' in out.stdout
        assert "scipy.special" in modules and "scipy.stats" not in modules
        assert "pandas" not in _top(modules)  # Parquet is read and profiled as Arrow

    def test_a_misspelt_command_is_suggested_from_the_table(self, tmp_path: Path) -> None:
        out, modules = imported("runz", cwd=tmp_path)
        assert out.returncode == 2 and "'runs'" in out.stderr
        assert not {m for m in modules if m.startswith("shipyard.cli.")}

    def test_an_error_is_one_line_from_a_lazily_loaded_command(self, tmp_path: Path) -> None:
        out, _ = imported("drift", "missing.csv", "missing.csv", cwd=tmp_path)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr and "missing.csv" in out.stderr


def _descriptor(annotation: type, **limits: int) -> TypeDescriptor:
    from typer._coercion import resolve_type_descriptor

    return resolve_type_descriptor(annotation, typer.Option(None, **limits))  # type: ignore[arg-type]


class TestValuesTakenAsGiven:
    """A value :func:`shipyard.cli._as_given` passes without Typer's adapter is exactly what
    the adapter gives back; everything else goes to the adapter."""

    @pytest.mark.parametrize(
        ("annotation", "limits", "value"),
        [
            (str, {}, "text"),
            (str, {}, ""),
            (str, {}, "ünïcode"),
            (int, {}, 20),
            (int, {}, "42"),
            (int, {}, "-7"),
            (int, {"min": 1, "max": 1000}, 1),
            (int, {"min": 1, "max": 1000}, "1000"),
            (int, {"min": 0}, "0012"),
        ],
    )
    def test_a_plain_value_is_what_the_adapter_gives(
        self, annotation: type, limits: dict[str, int], value: object
    ) -> None:
        from typer._coercion import build_runtime_param

        descriptor = _descriptor(annotation, **limits)
        adapter = build_runtime_param(descriptor)
        mine = _as_given(value, descriptor)
        expected = adapter._coerce_value(value, param=None, ctx=None)  # type: ignore[arg-type]
        assert mine == expected and type(mine) is type(expected)

    @pytest.mark.parametrize(
        ("annotation", "limits", "value"),
        [
            (int, {"min": 1, "max": 1000}, 0),
            (int, {"min": 1, "max": 1000}, "1001"),
            (int, {}, " 5"),
            (int, {}, "5_000"),
            (int, {}, "1e3"),
            (int, {}, "abc"),
            (int, {}, 2.0),
            (int, {}, True),
            (float, {}, 1.5),
            (str, {}, b"bytes"),
            (Path, {}, "some/path"),
        ],
    )
    def test_anything_else_goes_to_the_adapter(
        self, annotation: type, limits: dict[str, int], value: object
    ) -> None:
        assert _as_given(value, _descriptor(annotation, **limits)) is _BUILD

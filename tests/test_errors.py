"""One error path (issue 12): each class in :mod:`shipyard.errors` says its HTTP status and CLI exit
code, drawn in the module's docstring; the CLI prints any of them as one line with that code.
And the one unknown-name line (issue 19): ``no <kind> named 'X'``, with the closest names."""

from __future__ import annotations

import ast
import builtins
import re
import socket
import subprocess
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from cli_testkit import shipyard
from shipyard import errors
from shipyard.cli import Group
from shipyard.errors import NotFound
from shipyard.workspace import Workspace


def test_an_unknown_name_reads_the_same_for_every_kind() -> None:
    assert str(NotFound("model", "cancr")) == "no model named 'cancr'"
    assert str(NotFound("pool", "x", "declare it")) == "no pool named 'x'; declare it"


def test_close_candidates_are_suggested_best_first() -> None:
    err = NotFound("model", "cancr", candidates=["digits", "cancer", "canceled-v2"])
    assert str(err) == "no model named 'cancr'; did you mean 'cancer'?"
    assert err.suggestions == ["cancer"]


def test_several_close_names_and_a_hint() -> None:
    err = NotFound("pipeline", "digits-dat", "see pipelines list", ["digits-data", "digits-date"])
    assert str(err).startswith("no pipeline named 'digits-dat'; did you mean 'digits-dat")
    assert " or " in str(err) and str(err).endswith("; see pipelines list")


def test_nothing_close_suggests_nothing() -> None:
    assert str(NotFound("rollout", "zzz", candidates=["a1b2c3"])) == "no rollout named 'zzz'"


# -- one table: each class's HTTP status and exit code ----------------------------------------

OWN_CODES = {0, 2, 3, 130}  # done, a command line Click cannot parse, a verdict, interrupted
TREE_LINE = re.compile(
    r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>\w+)(?:\((?P<builtin>\w+)\))?"
    r"\s+(?P<status>\d{3})\s+(?P<exit>\d+)\s+\S"
)


def declared() -> dict[str, type[errors.ShipyardError]]:
    """Every error class that ``shipyard.errors`` defines."""
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type)
        and issubclass(cls, errors.ShipyardError)
        and cls.__module__ == errors.__name__
    }


def drawn() -> dict[str, tuple[str | None, str | None, int, int]]:
    """The docstring's tree: name → (parent, builtin, HTTP status, exit code)."""
    assert errors.__doc__ is not None
    rows: dict[str, tuple[str | None, str | None, int, int]] = {}
    parents: list[str] = []
    for line in errors.__doc__.splitlines():
        m = TREE_LINE.match(line.removeprefix("    "))
        if m is None:
            continue
        depth = len(m["indent"]) // 4 + (0 if m["name"] == "ShipyardError" else 1)
        parents[depth:] = [m["name"]]
        parent = parents[depth - 1] if depth else None
        rows[m["name"]] = (parent, m["builtin"], int(m["status"]), int(m["exit"]))
    return rows


def _base_names(node: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}


def _assigned(node: ast.ClassDef) -> set[str]:
    """The names a class body assigns (``x = …`` or ``x: T = …``)."""
    targets = [t for item in node.body if isinstance(item, ast.Assign) for t in item.targets]
    targets += [item.target for item in node.body if isinstance(item, ast.AnnAssign)]
    return {t.id for t in targets if isinstance(t, ast.Name)}


class TestTheTable:
    def test_every_class_has_an_error_status_and_an_exit_code_of_its_own_meaning(self) -> None:
        for name, cls in declared().items():
            assert 400 <= HTTPStatus(cls.http_status) < 600, name  # a status HTTP names
            assert cls.exit_code >= 1 and cls.exit_code not in OWN_CODES, name

    def test_the_docstring_draws_every_class_with_its_parent_status_and_code(self) -> None:
        tree = drawn()
        assert set(tree) == set(declared())
        for name, (parent, builtin, status, code) in tree.items():
            cls = declared()[name]
            assert (cls.http_status, cls.exit_code) == (status, code), name
            if parent is not None:
                assert cls.__bases__[0] is declared()[parent], name
            if builtin is not None:
                assert issubclass(cls, getattr(builtins, builtin)), name

    def test_no_class_outside_errors_py_sets_a_status_or_exit_code(self) -> None:
        """The table is whole in one module: a local error beside its code inherits both."""
        src = Path(errors.__file__).parent
        classes: list[tuple[str, ast.ClassDef]] = [
            (str(path.relative_to(src)), node)
            for path in sorted(src.rglob("*.py"))
            if path != src / "errors.py"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ClassDef)
        ]
        error_names = set(declared())
        grew = True
        while grew:  # the errors defined elsewhere, subclasses of subclasses included
            before = len(error_names)
            error_names |= {node.name for _, node in classes if _base_names(node) & error_names}
            grew = len(error_names) > before
        setters = [
            f"{where}:{node.name}"
            for where, node in classes
            if node.name in error_names and _assigned(node) & {"http_status", "exit_code"}
        ]
        assert setters == []

    def test_the_serving_errors_are_the_same_classes_from_their_old_modules(self) -> None:
        from shipyard.serving import execution, limits, protocol_mlflow

        assert limits.RequestTooLarge is errors.RequestTooLarge
        assert execution.Overloaded is errors.Overloaded
        assert protocol_mlflow.UnsupportedMediaType is errors.UnsupportedMediaType


# -- the CLI: one line and the class's exit code, for any command ------------------------------


class Refused(errors.ShipyardError):
    exit_code = 7


def test_the_cli_exits_with_the_code_the_class_names() -> None:
    app = typer.Typer(cls=Group)
    app.callback()(lambda: None)

    @app.command()
    def go() -> None:
        raise Refused("the door is [shut]")  # markup-like text is printed as it is

    result = CliRunner().invoke(app, ["go"])
    assert result.exit_code == 7
    assert result.stderr == "error: the door is [shut]\n" and result.stdout == ""


def one_line(out: subprocess.CompletedProcess[str], exc: errors.ShipyardError) -> None:
    """``out`` is the CLI's answer to ``exc``: its class's exit code and one ``error:`` line."""
    assert out.returncode == type(exc).exit_code, out.stderr
    assert out.stderr == f"error: {exc}\n", out.stderr
    assert out.stdout == ""


class TestRealCommands:
    """Each error reaches the user the same way, through a real ``shipyard`` process."""

    def test_a_missing_workspace_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(errors.ConfigError) as caught:
            Workspace.open(create=False)
        one_line(shipyard("runs", "list", cwd=tmp_path), caught.value)

    def test_an_unknown_run_is_not_found(self, workspace: Workspace, tmp_path: Path) -> None:
        from shipyard.pipelines.records import get_run

        with pytest.raises(errors.NotFound) as caught:
            get_run(workspace.store, "abc123")
        one_line(shipyard("runs", "show", "abc123", cwd=tmp_path), caught.value)

    def test_a_file_of_unknown_type_is_invalid_input(self, tmp_path: Path) -> None:
        (tmp_path / "data.xyz").write_text("a,b\n1,2\n")
        exc = errors.InvalidInput("cannot read data.xyz: expected a .csv or .parquet file")
        one_line(shipyard("profile", "data.xyz", "--out", "p.json", cwd=tmp_path), exc)

    def test_a_file_without_a_pipeline_is_a_pipeline_definition_error(self, tmp_path: Path) -> None:
        from shipyard.pipelines.loader import load_pipeline

        (tmp_path / "nothing.py").write_text("x = 1\n")
        with pytest.raises(errors.PipelineDefinitionError) as caught:
            load_pipeline("nothing.py")
        one_line(shipyard("run", "nothing.py", cwd=tmp_path), caught.value)

    def test_a_metrics_port_in_use_is_invalid_input(self, tmp_path: Path) -> None:
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            out = shipyard("daemon", "--metrics-port", str(port), cwd=tmp_path)
        assert out.returncode == errors.InvalidInput.exit_code, out.stderr
        # the daemon logs to stderr from its start (the store's migrations): the error ends it
        *_, last = out.stderr.splitlines()
        assert last.startswith(f"error: cannot serve /metrics on {port}: ")
        assert "Traceback" not in out.stderr and out.stdout == ""


# -- the daemon's HTTP face --------------------------------------------------------------------


def test_the_daemons_metrics_answer_a_damaged_store_with_its_class_status(tmp_path: Path) -> None:
    from shipyard.alerting.exposition import MetricsServer
    from shipyard.store import Store

    path = tmp_path / "shipyard.db"
    store = Store(f"sqlite:///{path}")
    server = MetricsServer(store).start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert httpx.get(url, timeout=30).status_code == 200
        store.engine.dispose()  # the next scrape opens the file again
        with open(path, "r+b") as fh:
            fh.write(b"this is no db!!\0")  # SQLite's 16-byte magic string, overwritten
        r = httpx.get(url, timeout=30)
        assert r.status_code == errors.StoreDamaged.http_status == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith(f"cannot read the store: the metadata database {path}")
        assert "is damaged" in r.json()["error"]
    finally:
        server.stop()
        store.dispose()

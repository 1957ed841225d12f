"""The floors of docs/design.md hold: no import that runs (at module level or inside a function)
points up a floor or across a pair that must never meet, and no service imports another wing's
tables, except today's edges in ``tests/architecture_allowlist.txt``, a list that only shrinks.

The graph is read from the source by ``tests/architecture.py`` (``python -m tests.architecture``
prints the counts, the import cycles and each violation with its file and line).
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import architecture as arch

REGENERATE = "python -m tests.architecture --write-allowlist"


def _explain(new: list[arch.Violation], stale: list[arch.Key]) -> str:
    lines = []
    if new:
        lines.append("New imports that break the floors (point them down, or behind a seam):")
        lines += [f"  {v.edge.where}: {v.edge.statement}  ({v.rule})" for v in new]
    if stale:
        lines.append(f"Allowlisted edges that are gone (remove them: {REGENERATE}):")
        lines += [f"  {a} -> {b} {when}" for a, b, when in stale]
    return "\n".join(lines)


# -- the real tree ---------------------------------------------------------------------------


def test_every_module_of_shipyard_has_a_floor() -> None:
    for module in arch.find_modules():
        arch.wing_of(module)  # KeyError names the module and where to give it a floor


def test_a_new_top_level_module_has_no_floor_until_it_is_given_one() -> None:
    with pytest.raises(KeyError, match=r"shipyard\.nowhere has no floor"):
        arch.wing_of("shipyard.nowhere")
    assert arch.wing_of("shipyard.metrics").name == "base"
    assert arch.wing_of("shipyard.serving.app").name == "serving-http"
    assert arch.wing_of("shipyard.serving.live").name == "serving"


def test_no_new_import_breaks_the_floors_and_every_allowlisted_one_still_exists() -> None:
    found = arch.violations(arch.read_imports())
    allowed = arch.parse_allowlist(arch.ALLOWLIST.read_text(encoding="utf-8"))
    new, stale = arch.ratchet(found, allowed)
    assert not new and not stale, _explain(new, stale)


def test_the_modules_the_kernels_may_import_import_nothing_of_shipyard() -> None:
    leaves = set(arch.STATS_MAY_IMPORT)
    assert not [e for e in arch.read_imports() if e.importer in leaves and e.when != "type"]


def test_docs_design_draws_the_floors_this_test_checks() -> None:
    text = arch.DESIGN_DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- floors:.*?-->\s*```\n(.*?)\n```", text, re.DOTALL)
    assert block is not None, "docs/design.md has no floors block (<!-- floors: ... -->)"
    assert block.group(1) == arch.floors_block(), (
        "print it with: python -m tests.architecture --floors"
    )


def test_the_written_allowlist_reads_back_as_the_same_edges() -> None:
    found = arch.violations(arch.read_imports())
    keys = {v.key for v in found}
    assert arch.parse_allowlist(arch.allowlist_text(found)) == keys


# -- a planted back edge ---------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of today's source, to plant imports in."""
    shutil.copytree(arch.SOURCE / arch.PACKAGE, tmp_path / arch.PACKAGE)
    return tmp_path


def _plant(tree: Path, relative: str, code: str) -> int:
    """Append ``code`` to a module of the copy; the line number of its first line."""
    path = tree / relative
    before = path.read_text(encoding="utf-8")
    path.write_text(before + "\n\n" + textwrap.dedent(code), encoding="utf-8")
    return len(before.splitlines()) + 3


@pytest.mark.parametrize(
    ("relative", "code", "target", "rule"),
    [
        (
            "shipyard/store/db.py",
            "def _planted():\n    from shipyard.deploy.rollout import approve\n",
            "shipyard.deploy.rollout",
            "the base imports no service",
        ),
        (
            "shipyard/stats/drift.py",
            "from shipyard.store import Store\n",
            "shipyard.store.db",  # a lazy name of the package: the module that defines it
            "stats imports nothing of Shipyard but errors and lazy",
        ),
        (
            "shipyard/registry/models.py",
            "def _planted():\n    import shipyard.cli.models\n",
            "shipyard.cli.models",
            "a service imports no face",
        ),
        (
            "shipyard/serving/records.py",
            "def _planted():\n    from importlib import import_module\n"
            "    return import_module('shipyard.deploy.engine')\n",
            "shipyard.deploy.engine",
            "the data plane (serving) imports no control plane",
        ),
        (
            "shipyard/quota/pools.py",
            "def _planted():\n    from ..store.registry import RegisteredModel\n",
            "shipyard.store.registry",
            "a service reads only its own tables: quota reads registry's",
        ),
        (
            "shipyard/alerting/rules.py",
            "def _planted():\n    from shipyard import monitoring\n",
            "shipyard.monitoring",
            "alerting imports only the base",
        ),
    ],
    ids=["store-deploy", "stats-store", "registry-cli", "serving-deploy", "tables", "alerting"],
)
def test_a_planted_import_fails_the_ratchet_with_its_file_and_line(
    tree: Path, relative: str, code: str, target: str, rule: str
) -> None:
    line = _plant(tree, relative, code)
    if "import_module" in code:
        line += 2  # the call, not the `from importlib` line
    elif code.startswith("def"):
        line += 1
    allowed = arch.parse_allowlist(arch.ALLOWLIST.read_text(encoding="utf-8"))
    new, stale = arch.ratchet(arch.violations(arch.read_imports(tree)), allowed)
    assert not stale
    assert [(v.edge.where, v.edge.target) for v in new] == [(f"{relative}:{line}", target)]
    assert new[0].rule.startswith(rule)
    assert f"{relative}:{line}" in _explain(new, stale)


def test_an_allowlisted_import_that_is_gone_fails_the_ratchet(tree: Path) -> None:
    dsl = tree / "shipyard/pipelines/dsl.py"
    text = dsl.read_text(encoding="utf-8")
    _plant(tree, "shipyard/pipelines/dsl.py", "from shipyard.quota.pools import Pool\n")
    allowed = {v.key for v in arch.violations(arch.read_imports(tree))}  # listed while it ran
    dsl.write_text(text, "utf-8")  # and now it is gone
    new, stale = arch.ratchet(arch.violations(arch.read_imports(tree)), allowed)
    assert not new
    assert stale == [("shipyard.pipelines.dsl", "shipyard.quota.pools", "module")]


# -- reading imports -------------------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, code in files.items():
        path = root / "shipyard" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code), encoding="utf-8")
    return root


def test_every_form_of_import_is_read_with_when_it_runs(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "store/__init__.py": "from .db import Store\n",
            "store/db.py": "from .. import errors\n",
            "quota/__init__.py": """\
                from shipyard.lazy import lazy_exports
                _MODULES = {"pools": ("Pool",)}
                __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
                """,
            "quota/pools.py": """\
                import shipyard.store.db as db
                from typing import TYPE_CHECKING
                import typing
                if TYPE_CHECKING:
                    from shipyard.registry import Model
                else:
                    from shipyard.errors import QuotaError
                if typing.TYPE_CHECKING:
                    from ..deploy import rollout


                def later():
                    from . import admission
                    import importlib
                    importlib.import_module("shipyard.deploy.engine")
                    __import__("shipyard.serving")
                    return lambda: importlib.import_module(".traffic", "shipyard.deploy")
                """,
            "quota/admission.py": "from shipyard import quota\nP = quota.Pool\n",
            "quota/usage.py": """\
                def f():
                    from shipyard.quota import Pool
                    from shipyard import quota
                    return getattr(quota, "Pool")
                """,
            "lazy.py": "",
            "registry/__init__.py": "",
            "serving.py": "",
            "deploy/__init__.py": "",
            "deploy/rollout.py": "",
            "deploy/engine.py": "",
            "deploy/traffic.py": "",
        },
    )
    found = {(e.importer, e.target, e.when, e.line) for e in arch.read_imports(src)}
    assert found == {
        ("shipyard.store", "shipyard.store.db", "module", 1),
        ("shipyard.store.db", "shipyard.errors", "module", 1),
        ("shipyard.quota", "shipyard.lazy", "module", 1),
        ("shipyard.quota.pools", "shipyard.store.db", "module", 1),
        ("shipyard.quota.pools", "shipyard.registry", "type", 5),
        ("shipyard.quota.pools", "shipyard.errors", "module", 7),
        ("shipyard.quota.pools", "shipyard.deploy.rollout", "type", 9),
        ("shipyard.quota.pools", "shipyard.quota.admission", "function", 13),
        ("shipyard.quota.pools", "shipyard.deploy.engine", "function", 15),
        ("shipyard.quota.pools", "shipyard.serving", "function", 16),
        ("shipyard.quota.pools", "shipyard.deploy.traffic", "function", 17),
        ("shipyard.quota.admission", "shipyard.quota", "module", 1),
        ("shipyard.quota.admission", "shipyard.quota.pools", "module", 2),  # a lazy name
        ("shipyard.quota.usage", "shipyard.quota.pools", "function", 2),
        ("shipyard.quota.usage", "shipyard.quota", "function", 3),
        ("shipyard.quota.usage", "shipyard.quota.pools", "function", 4),  # getattr by name
    }


def test_an_import_by_a_computed_name_is_listed_as_not_followed(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "plugins.py": """\
                import importlib


                def load(name):
                    importlib.import_module("shipyard.plugins")
                    return importlib.import_module(f"shipyard.{name}")
                """,
        },
    )
    assert arch.unresolved_imports(src) == [
        "shipyard/plugins.py:6 importlib.import_module(f'shipyard.{name}')"
    ]


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("importer", "target", "rule"),
    [
        ("shipyard.stats.drift", "shipyard.store", "stats imports nothing"),
        ("shipyard.stats.drift", "shipyard.config", "stats imports nothing"),
        ("shipyard.store.db", "shipyard.quota", "the base imports no service"),
        ("shipyard.workspace", "shipyard.cli", "the base imports no service or face"),
        ("shipyard.deploy.engine", "shipyard.cli.deploy", "a service imports no face"),
        ("shipyard.monitoring", "shipyard.daemon", "a service imports no face"),
        ("shipyard.serving.live", "shipyard.serving.app", "a service imports no face"),
        ("shipyard.serving.live", "shipyard.deploy.traffic", "the data plane (serving)"),
        ("shipyard.serving.live", "shipyard.api", "the data plane (serving)"),
        ("shipyard.pipelines.runner", "shipyard.quota", "pipelines imports no other service"),
        ("shipyard.pipelines.dsl", "shipyard.alerting", "pipelines imports no other service"),
        ("shipyard.alerting.rules", "shipyard.pipelines", "alerting imports only the base"),
        ("shipyard.quota.pools", "shipyard.registry", "sideways on one floor"),
        ("shipyard.deploy.engine", "shipyard.monitoring", "sideways on one floor"),
        ("shipyard.quota.pools", "shipyard.serving.live", "up a floor"),
        ("shipyard.registry", "shipyard.deploy", "up a floor"),
        ("shipyard.daemon", "shipyard.cli", "up a floor"),
        ("shipyard.deploy.canary", "shipyard.store.serving", "a service reads only its own"),
        ("shipyard.serving.live", "shipyard.store.registry", "a service reads only its own"),
    ],
)
def test_an_import_that_breaks_a_rule_says_which(importer: str, target: str, rule: str) -> None:
    edge = arch.Import(importer, target, "function", "x.py", 1, "import x")
    found = arch.rule_of(edge)
    assert found is not None and found.startswith(rule)


@pytest.mark.parametrize(
    ("importer", "target"),
    [
        ("shipyard.stats.drift", "shipyard.errors"),
        ("shipyard.stats", "shipyard.lazy"),
        ("shipyard.store.db", "shipyard.config"),
        ("shipyard.pipelines.runner", "shipyard.store.tables"),
        ("shipyard.pipelines.runner", "shipyard.stats"),
        ("shipyard.alerting.rules", "shipyard.store.alerting"),
        ("shipyard.serving.live", "shipyard.registry"),
        ("shipyard.serving.instances", "shipyard.quota"),
        ("shipyard.deploy.canary", "shipyard.serving.records"),
        ("shipyard.monitoring.serving.monitor", "shipyard.serving"),
        ("shipyard.monitoring.evaluate", "shipyard.store.monitoring"),
        ("shipyard.serving.app", "shipyard.serving.live"),
        ("shipyard.cli.serve", "shipyard.serving.server"),
        ("shipyard.cli.runs", "shipyard.store.quota"),
        ("shipyard.__main__", "shipyard.cli"),
    ],
)
def test_an_import_down_the_floors_is_allowed(importer: str, target: str) -> None:
    assert arch.rule_of(arch.Import(importer, target, "module", "x.py", 1, "import x")) is None


def test_an_import_under_type_checking_is_never_a_violation() -> None:
    edge = arch.Import("shipyard.store.db", "shipyard.cli", "type", "x.py", 1, "import x")
    assert arch.rule_of(edge) is not None
    assert arch.violations([edge]) == []


# -- cycles ----------------------------------------------------------------------------------


def test_import_cycles_are_the_strongly_connected_components() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert arch.strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@given(st.dictionaries(st.sampled_from("abcdefg"), st.sets(st.sampled_from("abcdefg"))))
def test_two_modules_share_a_cycle_exactly_when_each_reaches_the_other(
    graph: dict[str, set[str]],
) -> None:
    components = arch.strongly_connected(graph)
    component_of = {node: i for i, c in enumerate(components) for node in c}
    for a in "abcdefg":
        for b in "abcdefg":
            if a != b:
                mutual = b in _reachable(graph, a) and a in _reachable(graph, b)
                same = a in component_of and component_of.get(a) == component_of.get(b)
                assert mutual == same


def test_an_import_of_a_module_also_loads_its_packages() -> None:
    edge = arch.Import("shipyard.deploy.canary", "shipyard.serving.records", "module", "", 1, "")
    graph = arch.graph_of([edge], {"module"}, by_wing=False)
    # `shipyard` itself is loaded already: the importer is inside it
    assert graph == {"shipyard.deploy.canary": {"shipyard.serving", edge.target}}


def test_the_command_prints_counts_cycles_and_each_violation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert arch.main([]) == 0
    out = capsys.readouterr().out
    assert "import cycles among wings (running imports):" in out
    assert "import cycles among modules (module-level imports):" in out
    assert "violating imports (back edges) at function level:" in out
    for v in arch.violations(arch.read_imports()):
        assert f"{v.edge.where}  {v.edge.importer} -> {v.edge.target}" in out

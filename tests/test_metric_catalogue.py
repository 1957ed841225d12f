"""One catalogue of metric names: every name the code uses is listed once, with one owner, and
every prometheus-client instrument matches its entry."""

from __future__ import annotations

import ast
import functools
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

import shipyard
import shipyard.metrics as catalogue
from shipyard.alerting.defaults import default_rules
from shipyard.metrics import CATALOGUE, CATALOGUE_LIST, DYNAMIC_PREFIXES, MetricSpec

SRC = Path(shipyard.__file__).parent
REPO = SRC.parents[1]
NAME = re.compile(r"\bshipyard_[a-z0-9_]+\*?")  # shipyard_http_*: every name so prefixed
NOT_METRICS = {
    "shipyard_pipeline_build": "the name of a ContextVar (pipelines/dsl.py)",
    "shipyard_pipeline_": "the prefix of a pipeline file's module name (pipelines/loader.py)",
}
INSTRUMENTS = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
}
UNWRITTEN: dict[str, str] = {}
"""Store series read by a rule but written by nothing yet (each entry is a strict xfail)."""


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(SRC)), ast.parse(p.read_text()))
        for p in sorted(SRC.rglob("*.py"))
        if p.name != "metrics.py" and "migrations" not in p.parts  # SQL names, not metrics
    ]


MODULES = _modules()


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
        and isinstance(n.body[0].value.value, str)
    }


@functools.cache
def names_in_code(*, docstrings: bool = True) -> dict[str, set[str]]:
    """Every ``shipyard_…`` token in a string literal (f-string parts included), by module."""
    found: dict[str, set[str]] = defaultdict(set)
    for module, tree in MODULES:
        skip = set() if docstrings else _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                for name in NAME.findall(node.value):
                    found[name].add(module)
    return found


def _known(name: str) -> bool:
    if name.endswith("*"):
        return any(n.startswith(name[:-1]) for n in CATALOGUE)
    return name in CATALOGUE or name in NOT_METRICS or name in DYNAMIC_PREFIXES


class TestEveryNameIsCatalogued:
    def test_every_name_in_the_code_is_in_the_catalogue(self) -> None:
        missing = {n: sorted(m) for n, m in names_in_code().items() if not _known(n)}
        assert not missing, f"add these to shipyard/metrics.py (or fix the name): {missing}"

    def test_the_check_finds_an_uncatalogued_name(self) -> None:
        tree = ast.parse('POINT = ("shipyard_made_up_total", {}, 1.0)')
        names = {
            n
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for n in NAME.findall(node.value)
        }
        assert names == {"shipyard_made_up_total"} and not _known("shipyard_made_up_total")

    def test_every_completion_of_a_dynamic_name_is_catalogued(self) -> None:
        """``f"shipyard_model_{k}"`` in the serving quality checks: every k they compute."""
        from shipyard.stats import cbpe

        estimated = cbpe(np.array([[0.2, 0.8], [0.6, 0.4]]), [0, 1])
        for k in estimated:
            assert f"shipyard_model_estimated_{k.removeprefix('expected_')}" in CATALOGUE
        source = (SRC / "monitoring" / "serving" / "quality.py").read_text()
        for k in re.findall(r'values\["([a-z0-9_]+)"\]', source):
            assert f"shipyard_model_{k}" in CATALOGUE, k

    @pytest.mark.parametrize("doc", ["docs/alerting.md", "docs/design.md", "docs/team.md"])
    def test_docs_name_only_catalogued_metrics(self, doc: str) -> None:
        names = set(NAME.findall((REPO / doc).read_text()))
        assert not {n for n in names if not _known(n)}

    def test_default_rules_read_catalogued_store_series_and_their_labels(self) -> None:
        for rule in default_rules():
            for metric in filter(None, (rule.metric, rule.error_metric)):
                known = CATALOGUE[metric]
                assert known.where == "store", f"{rule.name} reads {metric}, not in the store"
                for matcher in rule.matchers:
                    assert matcher.name in known.labels, (rule.name, matcher.name)


class TestOneDefinitionPerName:
    def test_the_catalogue_lists_each_name_once(self) -> None:
        counts = Counter(s.name for s in CATALOGUE_LIST)
        assert [n for n, c in counts.items() if c > 1] == []

    def test_no_family_exposes_a_sample_name_of_another(self) -> None:
        """A counter ``x_total`` also exposes ``x_created``; a histogram ``x_bucket``, ``x_sum``,
        ``x_count``: none of them may be another family's name or sample."""
        owners: dict[str, list[str]] = defaultdict(list)
        for s in CATALOGUE_LIST:
            for sample in s.samples:
                owners[sample].append(s.name)
        assert {k: v for k, v in owners.items() if len(v) > 1} == {}

    def test_a_worker_instrument_and_a_store_series_never_share_a_name(self) -> None:
        worker = {x for s in CATALOGUE_LIST if s.where == "worker" for x in s.samples}
        store = {x for s in CATALOGUE_LIST if s.where == "store" for x in s.samples}
        assert worker and store and not worker & store
        assert {s.name.split("_")[1] for s in CATALOGUE_LIST if s.where == "worker"} == {"http"}

    def test_no_two_modules_define_one_name_as_a_constant(self) -> None:
        defined: dict[str, list[str]] = defaultdict(list)
        for module, tree in MODULES:
            for node in tree.body:
                if (
                    isinstance(node, ast.Assign | ast.AnnAssign)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and NAME.fullmatch(node.value.value)
                ):
                    defined[node.value.value].append(module)
        assert {n: m for n, m in defined.items() if len(m) > 1} == {}

    @pytest.mark.parametrize(
        "spec",
        [
            pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=UNWRITTEN[s.name]))
            if s.name in UNWRITTEN
            else s
            for s in CATALOGUE_LIST
            if s.where == "store" and s.name != "ALERTS"
        ],
        ids=lambda s: s.name,
    )
    def test_each_store_series_is_written_in_its_owners_wing(self, spec: MetricSpec) -> None:
        """The owner is true: its wing names the series outside docstrings (a dynamic name by its
        prefix), so a series read by a rule but written by nobody shows up here."""
        where = names_in_code(docstrings=False)
        modules = where.get(spec.name, set()) | {
            m
            for prefix in DYNAMIC_PREFIXES
            if spec.name.startswith(prefix)
            for m in where.get(prefix, set())
        }
        assert {m.split("/")[0] for m in modules} & {spec.owner}, sorted(modules)


def _instrument_calls() -> list[tuple[str, str, MetricSpec, tuple[str, ...]]]:
    """(module, type, catalogue entry, labels) of every prometheus-client instrument built in the
    code, its name and labels resolved through literals or ``shipyard.metrics`` constants."""

    def resolve(node: ast.expr, attr: str) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return tuple(resolve(e, attr) for e in node.elts)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr == attr
            and isinstance(getattr(catalogue, node.value.id, None), MetricSpec)
        ):
            return getattr(getattr(catalogue, node.value.id), attr)
        raise AssertionError(f"cannot resolve {ast.unparse(node)}: use a literal or a constant")

    found = []
    for module, tree in MODULES:
        imported = {
            alias.asname or alias.name: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus")
            for alias in node.names
            if alias.name in INSTRUMENTS
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in imported
            ):
                name = resolve(node.args[0], "name")
                labels_node = next(
                    (k.value for k in node.keywords if k.arg == "labelnames"),
                    node.args[2] if len(node.args) > 2 else ast.Tuple(elts=[]),
                )
                labels = resolve(labels_node, "labels")
                assert isinstance(name, str) and isinstance(labels, tuple)
                entry = CATALOGUE.get(name) or CATALOGUE.get(f"{name}_total")
                assert entry is not None, f"{module}: instrument {name} is not catalogued"
                found.append((module, INSTRUMENTS[imported[node.func.id]], entry, labels))
    return found


class TestInstruments:
    def test_each_instrument_matches_its_entry(self) -> None:
        calls = _instrument_calls()
        for module, kind, entry, labels in calls:
            assert entry.where == "worker", f"{module}: {entry.name} is a store series"
            assert (kind, labels) == (entry.type, entry.labels), (module, entry.name)
        built = Counter(entry.name for _, _, entry, _ in calls)
        assert [n for n, c in built.items() if c > 1] == []
        assert set(built) == {s.name for s in CATALOGUE_LIST if s.where == "worker"}

    def test_an_instrument_of_a_store_name_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The check would catch the old collision: a worker counter under a store name."""
        planted = ast.parse(
            "from prometheus_client import Counter\n"
            'C = Counter("shipyard_serving_requests_total", "x", ["model"])\n'
        )
        monkeypatch.setitem(globals(), "MODULES", [*MODULES, ("planted.py", planted)])
        with pytest.raises(AssertionError, match="store series"):
            self.test_each_instrument_matches_its_entry()

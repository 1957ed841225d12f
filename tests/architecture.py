"""Shipyard's import graph, read from the source with :mod:`ast`, and the floors it must keep.

Every import is found without running anything: ``import x``, ``from x import y``, relative
imports, ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name, at module
level or inside a function (an import hidden in a function still runs, only later). Imports under
``if TYPE_CHECKING:`` never run, so they are kept apart and never count as violations.

Each module belongs to a wing and each wing to a floor (``FLOORS``, drawn in ``docs/design.md``).
An import between two wings must point to a lower rank; a few pairs are named as never allowed,
so that a violation says which rule it breaks. A service importing another wing's tables
(``shipyard.store.<wing>``) is a violation too. ``tests/test_architecture.py`` compares the
violations with ``tests/architecture_allowlist.txt`` (today's, to be removed) as a ratchet.

Run from the repository root::

    python -m tests.architecture                    # counts, import cycles, violations (file:line)
    python -m tests.architecture --allowlist        # the allowlist file's text, from the code now
    python -m tests.architecture --write-allowlist  # rewrite tests/architecture_allowlist.txt
    python -m tests.architecture --floors           # the floors block of docs/design.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
PACKAGE = "shipyard"
ALLOWLIST = Path(__file__).resolve().parent / "architecture_allowlist.txt"
DESIGN_DOC = ROOT / "docs" / "design.md"

When = Literal["module", "function", "type"]
"""When an import runs: as its module is imported, when a function runs, never (TYPE_CHECKING)."""


# -- the floors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wing:
    name: str
    floor: str
    rank: int
    """An import between two wings must point to a strictly lower rank."""
    modules: tuple[str, ...]
    """Module prefixes (below ``shipyard.``) that belong to this wing; the longest prefix wins."""


# Top to bottom, as drawn in docs/design.md. Modules named here that do not exist yet (the metric
# catalogue, the control-plane server) have their floor ready before they land.
FLOORS: tuple[Wing, ...] = (
    Wing("__main__", "faces", 9, ("__main__",)),
    Wing("cli", "faces", 8, ("cli",)),
    Wing("server", "faces", 7, ("api", "ui", "server")),
    Wing("daemon", "faces", 6, ("daemon",)),
    Wing("readiness", "faces", 6, ("readiness",)),
    Wing("serving-http", "faces", 6, ("serving.app", "serving.server")),
    Wing("monitoring", "services: top", 5, ("monitoring",)),
    Wing("deploy", "services: top", 5, ("deploy",)),
    # serving core is on the middle floor but above its two neighbours: a server serves the
    # registry's versions and holds a quota lease; neither of them may import serving
    Wing("serving", "services: middle", 4, ("serving",)),
    Wing("quota", "services: middle", 3, ("quota",)),
    Wing("registry", "services: middle", 3, ("registry",)),
    Wing("pipelines", "services: bottom", 2, ("pipelines",)),
    Wing("alerting", "services: beside", 2, ("alerting",)),
    Wing("identity", "services: beside", 2, ("identity",)),
    Wing(
        "base",
        "base",
        1,
        (
            "",
            "store",
            "artifacts",
            "audit",
            "config",
            "clock",
            "errors",
            "lazy",
            "metrics",
            "monitor_config",
            "observability",
            "process_tree",
            "quantities",
            "workspace",
            "statuses",
            "supervision",
            "checks",
        ),
    ),
    Wing("stats", "kernels", 0, ("stats",)),
)

SERVICES = frozenset(w.name for w in FLOORS if w.floor.startswith("services"))
FACES = frozenset(w.name for w in FLOORS if w.floor == "faces")
STATS_MAY_IMPORT = (f"{PACKAGE}.errors", f"{PACKAGE}.lazy")
"""The kernels import nothing of Shipyard but these two, which import nothing of Shipyard."""
CONTROL_PLANE = frozenset({"deploy", "server"})
TABLES = f"{PACKAGE}.store"
"""``shipyard.store.<wing>`` holds a wing's tables; only that wing (and the faces) import them."""


def _prefixes() -> list[tuple[str, Wing]]:
    pairs = [
        (f"{PACKAGE}.{prefix}" if prefix else PACKAGE, wing)
        for wing in FLOORS
        for prefix in wing.modules
    ]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


_PREFIXES = _prefixes()


def wing_of(module: str) -> Wing:
    """The wing of a module of Shipyard, by the longest prefix in ``FLOORS`` naming it."""
    for prefix, wing in _PREFIXES:
        if prefix == PACKAGE and module != PACKAGE:
            continue  # only the package's own __init__; a new top-level module needs a floor
        if module == prefix or module.startswith(prefix + "."):
            return wing
    raise KeyError(f"{module} has no floor: give it one in FLOORS (tests/architecture.py)")


def tables_owner(module: str) -> str | None:
    """The service wing whose tables ``module`` holds (``shipyard.store.quota`` → ``quota``)."""
    if not module.startswith(TABLES + "."):
        return None
    owner = module[len(TABLES) + 1 :].split(".")[0]
    return owner if owner in SERVICES else None


def floors_block() -> str:
    """The floors as docs/design.md draws them: one wing per line, top first."""
    lines = [f"{'rank':<5} {'floor':<17} {'wing':<13} modules (shipyard.…)"]
    for w in FLOORS:
        modules = ", ".join(m or "__init__" for m in w.modules)
        lines.append(f"{w.rank:<5} {w.floor:<17} {w.name:<13} {modules}".rstrip())
    return "\n".join(lines)


# -- reading the imports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    when: When
    path: str
    """The importing file, relative to the source root."""
    line: int
    statement: str

    by_attribute: bool = False
    """A lazy name reached as ``module.name`` / ``getattr(module, "name")``, not an import."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def find_modules(source: Path = SOURCE, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``source``, by dotted name."""
    found = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _literal_import(call: ast.Call) -> tuple[str, str | None] | None:
    """(name, package) of ``import_module("name", "package")`` / ``__import__("name")``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    package = None
    if name == "import_module" and len(call.args) > 1:
        second = call.args[1]
        if isinstance(second, ast.Constant) and isinstance(second.value, str):
            package = second.value
    return first.value, package


def lazy_names(tree: ast.Module, package: str) -> dict[str, str]:
    """Where each name of a package made lazy by ``lazy_exports(__name__, {module: names})``
    (:mod:`shipyard.lazy`) lives: ``from package import name`` imports that module."""
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    where = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and len(node.args) > 1):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name != "lazy_exports":
            continue
        table = node.args[1]
        if isinstance(table, ast.Name):
            table = assigned.get(table.id, table)
        try:
            modules = ast.literal_eval(table)
        except ValueError:
            continue
        for module, names in modules.items():
            where.update({exported: f"{package}.{module}" for exported in names})
    return where


class _Reader(ast.NodeVisitor):
    def __init__(
        self,
        module: str,
        is_package: bool,
        known: Mapping[str, Path],
        lazy: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.lazy = lazy
        self.bound: dict[str, str] = {}
        """Local names bound to a module of the package (``from shipyard import monitoring``)."""
        self.depth = 0
        self.type_only = 0
        self.found: list[tuple[str, int, ast.AST, When, bool]] = []

    @property
    def when(self) -> When:
        if self.type_only:
            return "type"
        return "function" if self.depth else "module"

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
        else:
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    def _absolute(self, name: str, level: int) -> str:
        if not level:
            return name
        base = self.package.split(".")
        if level > 1:
            base = base[: -(level - 1)]
        return ".".join([*base, name] if name else base)

    def _resolve(self, name: str) -> str:
        """The module that ``name`` loads: itself, or its longest existing parent package."""
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        return name

    def _add(self, name: str, node: ast.AST, by_attribute: bool = False) -> None:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            target, line = self._resolve(name), getattr(node, "lineno", 0)
            if not any(f[:2] == (target, line) for f in self.found):  # one edge per line
                self.found.append((target, line, node, self.when, by_attribute))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)
            if alias.asname:
                self.bound[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self._absolute(node.module or "", node.level)
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in self.known:
                self.bound[alias.asname or alias.name] = submodule
            else:
                submodule = self.lazy.get(source, {}).get(alias.name, source)
            self._add(submodule, node)

    def _lazy_attribute(self, value: ast.expr, attribute: str, node: ast.AST) -> None:
        """``module.name`` or ``getattr(module, "name")`` of a lazy name imports its module."""
        if isinstance(value, ast.Name) and value.id in self.bound:
            target = self.lazy.get(self.bound[value.id], {}).get(attribute)
            if target is not None:
                self._add(target, node, by_attribute=True)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._lazy_attribute(node.value, node.attr, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        literal = _literal_import(node)
        if literal is not None:
            name, package = literal
            if name.startswith(".") and package:
                level = len(name) - len(name.lstrip("."))
                parent = package.split(".")
                name = ".".join([*parent[: len(parent) - level + 1], name.lstrip(".")])
            self._add(name, node)
        func = node.func
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) > 1:
            attribute = node.args[1]
            if isinstance(attribute, ast.Constant) and isinstance(attribute.value, str):
                self._lazy_attribute(node.args[0], attribute.value, node)
        self.generic_visit(node)


def read_imports(source: Path = SOURCE, package: str = PACKAGE) -> list[Import]:
    """Every import of a module of ``package`` found in the modules of ``package``."""
    known = find_modules(source, package)
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in known.items()}
    lazy = {m: lazy_names(tree, m) for m, tree in trees.items() if known[m].name == "__init__.py"}
    found = []
    for module, path in known.items():
        reader = _Reader(module, path.name == "__init__.py", known, lazy)
        reader.visit(trees[module])
        relative = path.relative_to(source).as_posix()
        for target, line, node, when, by_attribute in reader.found:
            if target and target != module:
                statement = " ".join(ast.unparse(node).split())
                found.append(Import(module, target, when, relative, line, statement, by_attribute))
    return found


def unresolved_imports(source: Path = SOURCE, package: str = PACKAGE) -> list[str]:
    """``file:line call`` of each ``import_module`` / ``__import__`` whose name is not a literal
    (``import_module(f"shipyard.cli.{name}")``): the graph cannot follow them."""
    out = []
    for path in find_modules(source, package).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args or _literal_import(node):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                where = f"{path.relative_to(source).as_posix()}:{node.lineno}"
                out.append(f"{where} {ast.unparse(node)}")
    return sorted(out)


# -- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    edge: Import
    rule: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.edge.importer, self.edge.target, self.edge.when)


def rule_broken(importer: str, target: str) -> str | None:
    """Which rule an import from ``importer`` to ``target`` breaks, or None."""
    low, high = wing_of(target), wing_of(importer)
    if low.name == high.name:
        return None
    if high.name == "stats":
        if target in STATS_MAY_IMPORT:
            return None
        return "stats imports nothing of Shipyard but errors and lazy"
    if low.rank < high.rank:
        return None
    if high.name == "base":
        return f"the base imports no service or face: base imports {low.name}"
    if high.name == "serving" and low.name in CONTROL_PLANE:
        return "the data plane (serving) imports no control plane (deploy, api)"
    if high.name in SERVICES and low.name in FACES:
        return f"a service imports no face: {high.name} imports {low.name}"
    if high.name == "pipelines":
        return f"pipelines imports no other service: pipelines imports {low.name}"
    if high.name == "alerting":
        return f"alerting imports only the base: alerting imports {low.name}"
    if low.rank == high.rank:
        return f"sideways on one floor ({high.floor}): {high.name} imports {low.name}"
    return f"up a floor: {high.name} ({high.floor}) imports {low.name} ({low.floor})"


def table_rule(importer: str, target: str) -> str | None:
    """A service importing another service's tables (the base's and faces' imports are free)."""
    high = wing_of(importer)
    owner = tables_owner(target)
    if high.name in SERVICES and owner is not None and owner != high.name:
        return f"a service reads only its own tables: {high.name} reads {owner}'s"
    return None


def rule_of(edge: Import) -> str | None:
    """The rule ``edge`` breaks (or would break, if it ran), or None."""
    return table_rule(edge.importer, edge.target) or rule_broken(edge.importer, edge.target)


def violations(imports: Iterable[Import]) -> list[Violation]:
    """Every import that runs (module or function level) and breaks a rule."""
    found = []
    for edge in imports:
        if edge.when == "type":
            continue
        rule = rule_of(edge)
        if rule is not None:
            found.append(Violation(edge, rule))
    return found


# -- the ratchet -----------------------------------------------------------------------------

Key = tuple[str, str, str]


def allowlist_text(found: Sequence[Violation]) -> str:
    """The allowlist file for ``found``: one ``importer -> target when`` line per edge, grouped
    by rule, each with where it is and what it imports as a comment."""
    by_rule: dict[str, dict[Key, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for v in found:
        by_rule[v.rule][v.key].append(v.edge)
    lines = [
        "# Today's imports that break the floors (tests/test_architecture.py): a ratchet.",
        "# A new violating edge fails the test, and so does a line here that no longer",
        "# matches an import: the list only shrinks. Regenerate after a re-cut with",
        "#     python -m tests.architecture --write-allowlist",
        "# Format: importer -> imported when(module|function)  # file:line statement",
    ]
    for rule in sorted(by_rule):
        lines += ["", f"# {rule}"]
        for key in sorted(by_rule[rule]):
            edges = by_rule[rule][key]
            first = edges[0]
            more = f" (+{len(edges) - 1} more)" if len(edges) > 1 else ""
            lines.append(f"{key[0]} -> {key[1]} {key[2]}  # {first.where}{more} {first.statement}")
    return "\n".join(lines) + "\n"


def parse_allowlist(text: str) -> set[Key]:
    keys = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4 or parts[1] != "->" or parts[3] not in ("module", "function"):
            raise ValueError(f"allowlist line {number}: expected 'a -> b module|function': {raw}")
        keys.add((parts[0], parts[2], parts[3]))
    return keys


def ratchet(found: Sequence[Violation], allowed: set[Key]) -> tuple[list[Violation], list[Key]]:
    """(violations not in the allowlist, allowlist entries no import matches any more)."""
    new = [v for v in found if v.key not in allowed]
    stale = sorted(allowed - {v.key for v in found})
    return new, stale


# -- cycles ----------------------------------------------------------------------------------


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    successors = {n: sorted(set(graph.get(n, ()))) for n in nodes}
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(successors[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(successors[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components, key=lambda c: (-len(c), c))


def _packages(module: str) -> list[str]:
    """``a.b.c`` → ``["a", "a.b"]``: the packages whose ``__init__`` runs before ``module``."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def graph_of(imports: Iterable[Import], whens: set[str], by_wing: bool) -> dict[str, set[str]]:
    """Who loads whom: an import of ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``
    (those the importer is not already inside), so the graph has an edge to each of them."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in imports:
        if edge.when not in whens:
            continue
        inside = {edge.importer, *_packages(edge.importer)}
        for target in [*_packages(edge.target), edge.target]:
            if target in inside:
                continue
            a, b = edge.importer, target
            if by_wing:
                a, b = wing_of(a).name, wing_of(b).name
            if a != b:
                graph[a].add(b)
    return graph


# -- the command -----------------------------------------------------------------------------


def report(imports: Sequence[Import], out: list[str], source: Path = SOURCE) -> None:
    found = violations(imports)
    statements = [e for e in imports if not e.by_attribute]
    cross = [e for e in statements if wing_of(e.importer).name != wing_of(e.target).name]
    for when in ("module", "function", "type"):
        total = sum(e.when == when for e in statements)
        across = sum(e.when == when for e in cross)
        out.append(
            f"imports at {when} level: {total} (statement, module) pairs, {across} across wings"
        )
    would = [e for e in imports if e.when == "type" and rule_of(e) is not None]
    out.append(f"imports under TYPE_CHECKING that would break a rule if they ran: {len(would)}")
    hidden = [e for e in cross if e.when == "function"]
    services = sum(wing_of(e.importer).name in SERVICES for e in hidden)
    out.append(
        f"cross-wing import statements inside functions: {len(hidden)} ({services} from a "
        f"service); lazy names reached by attribute: {sum(e.by_attribute for e in imports)}"
    )
    for when in ("module", "function"):
        edges = [v for v in found if v.edge.when == when]
        out.append(
            f"violating imports (back edges) at {when} level: {len(edges)} (statement, module) "
            f"pairs, {len({v.key for v in edges})} module -> module edges"
        )
    for label, whens in (("running", {"module", "function"}), ("module-level", {"module"})):
        for by_wing in (True, False):
            cycles = strongly_connected(graph_of(imports, whens, by_wing))
            kind = "wings" if by_wing else "modules"
            sizes = ", ".join(str(len(c)) for c in cycles) or "-"
            out.append(
                f"import cycles among {kind} ({label} imports): {len(cycles)} (sizes {sizes})"
            )
            out.extend(f"  {' <-> '.join(c)}" for c in cycles)
    unresolved = unresolved_imports(source)
    out.append(f"imports by a computed name, not followed: {len(unresolved)}")
    out.extend(f"  {line}" for line in unresolved)
    out.append("")
    out.append("violations (file:line  importer -> imported  when  rule):")
    for v in sorted(found, key=lambda v: (v.edge.path, v.edge.line, v.edge.target)):
        e = v.edge
        out.append(f"  {e.where}  {e.importer} -> {e.target}  {e.when}  {v.rule}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.architecture", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--allowlist", action="store_true", help="print the allowlist's text")
    group.add_argument("--write-allowlist", action="store_true", help=f"rewrite {ALLOWLIST.name}")
    group.add_argument("--floors", action="store_true", help="print the floors block")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the src/ folder to read")
    args = parser.parse_args(argv)
    if args.floors:
        print(floors_block())
        return 0
    imports = read_imports(args.source)
    if args.allowlist or args.write_allowlist:
        text = allowlist_text(violations(imports))
        if args.write_allowlist:
            ALLOWLIST.write_text(text, encoding="utf-8")
            print(f"wrote {ALLOWLIST}")
        else:
            print(text, end="")
        return 0
    out: list[str] = []
    report(imports, out, args.source)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

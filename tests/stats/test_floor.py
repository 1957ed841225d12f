"""The kernel floor imports nothing of Shipyard but its errors (DESIGN.md: floors)."""

from __future__ import annotations

import ast
from pathlib import Path

import shipyard.stats

ALLOWED = ("shipyard.errors", "shipyard.lazy", "shipyard.stats")


def test_stats_modules_import_only_errors_and_each_other() -> None:
    package = Path(shipyard.stats.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] == "shipyard" and not n.startswith(ALLOWED)
            ]
    assert offenders == []


def test_the_lazy_helper_imports_nothing_of_shipyard() -> None:
    tree = ast.parse((Path(shipyard.stats.__file__).parents[1] / "lazy.py").read_text())
    modules = [
        n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    assert not [m for m in modules if m and m.startswith("shipyard")]


def test_short_commands_do_not_load_scipy_or_scikit_learn() -> None:
    """The package names load on first use; importing the whole CLI loads neither."""
    import subprocess
    import sys

    code = (
        "import sys, shipyard.cli, shipyard.stats, shipyard.deploy;"
        "print(sorted(m for m in ('scipy', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert shipyard.stats.DatasetProfile.__module__ == "shipyard.stats.profile"
    with __import__("pytest").raises(AttributeError, match="no attribute 'nope'"):
        _ = shipyard.stats.nope  # type: ignore[attr-defined]

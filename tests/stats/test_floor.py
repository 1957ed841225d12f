"""The kernel floor imports nothing of Shipyard but its errors (DESIGN.md: floors)."""

from __future__ import annotations

import ast
from pathlib import Path

import shipyard.stats

ALLOWED = ("shipyard.errors", "shipyard.stats")


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

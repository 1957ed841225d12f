"""Lazy public names for packages whose parts pull heavy libraries (scipy, scikit-learn).

``shipyard --help`` and every short command import the command modules, and those import the
packages; importing ``shipyard.stats`` used to load scipy.stats, and ``shipyard.deploy``
scikit-learn, for commands that use neither. A package lists where each public name lives and
the module is imported on first use (PEP 562: a module's ``__getattr__`` and ``__dir__``).
Type checkers read the same names from an ``if TYPE_CHECKING:`` import block.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``modules`` map a submodule's name
    to the public names it defines."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__

"""Imports every module of this package that defines tables, so that the metadata is complete.

Each wing keeps its tables in a module of its own here (``tables.py`` for the foundation,
``quota.py``, ``registry.py``…); a new module is picked up without editing this file.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

import shipyard.store as _package

_NOT_TABLES = {"base", "db", "schema", "migrations", "revisions", "run_list"}

for _info in pkgutil.iter_modules(_package.__path__):
    if _info.name not in _NOT_TABLES:
        import_module(f"shipyard.store.{_info.name}")

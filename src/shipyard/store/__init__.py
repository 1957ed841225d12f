"""The metadata database: tables, transactions, migrations.

Nothing above this package writes SQL.

The public names load on first use (:mod:`shipyard.lazy`): :mod:`.run_list` reads the runs on
the database driver alone, and ``shipyard runs list`` must not pay for SQLAlchemy on the way
through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.store.base import Base, new_id
    from shipyard.store.db import Store

__getattr__, __dir__ = lazy_exports(__name__, {"base": ("Base", "new_id"), "db": ("Store",)})

__all__ = ["Base", "Store", "new_id"]

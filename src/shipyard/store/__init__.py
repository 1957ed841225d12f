"""The metadata database: tables, transactions, migrations.

Nothing above this package writes SQL.
"""

from shipyard.store.base import Base, new_id
from shipyard.store.db import Store

__all__ = ["Base", "Store", "new_id"]

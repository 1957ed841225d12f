"""The schema revisions this Shipyard knows, read from ``migrations/versions`` without Alembic.

Opening a store compares the database's revisions (Alembic's version table) with
:func:`script_heads`; :mod:`shipyard.store.db` asks Alembic only when they differ, and
:mod:`shipyard.store.run_list` reads only a database whose revisions are these.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
"""Alembic's table of the revisions a database is at."""

_REVISION = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


@cache
def script_heads() -> frozenset[str]:
    """The newest revisions in ``migrations/versions``: those no other revision revises, read
    from each file's ``revision`` and ``down_revision`` lines. The same set as Alembic's
    ``ScriptDirectory.get_heads()`` (``tests/store/test_db.py`` checks), for a fraction of the
    cost of importing Alembic; should a file not parse here, the answer differs from the
    database's and :meth:`shipyard.store.db.Store.migrate` asks Alembic."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        fields = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in fields:
            continue
        try:
            revisions.add(ast.literal_eval(fields["revision"]))
            down = ast.literal_eval(fields.get("down_revision", "None"))
        except (ValueError, SyntaxError):
            return frozenset()  # not a literal: let Alembic read it
        revised.update((down,) if isinstance(down, str) else down or ())
    return frozenset(revisions - revised)

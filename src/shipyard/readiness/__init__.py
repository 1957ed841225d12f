"""How ready each pipeline and model is for production: the ML Test Score's 28 tests and the
guidance Shipyard is built from, judged from what the workspace records, proven by drills.

- :func:`gather` reads the facts (:mod:`~shipyard.readiness.evidence`);
- :func:`readiness` judges every item (:mod:`~shipyard.readiness.items`) and scores the tests
  (:mod:`~shipyard.readiness.rubric`, :mod:`~shipyard.readiness.score`);
- :class:`Drills` proves the alert paths, the rollback and the quota alert
  (:mod:`~shipyard.readiness.drills`).

Readiness is a face: it reads every wing and is imported by the CLI and by the server's
``readiness.score`` operation only. Names are imported on
first use, so a report without drills does not load the drills' kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.readiness.drills import DrillResult, Drills
    from shipyard.readiness.evidence import Facts, gather
    from shipyard.readiness.items import ITEMS, Item
    from shipyard.readiness.rubric import TESTS, MLTest
    from shipyard.readiness.score import ItemResult, Readiness, TestResult, readiness

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "drills": ("DrillResult", "Drills"),
        "evidence": ("Facts", "gather"),
        "items": ("ITEMS", "Item"),
        "rubric": ("TESTS", "MLTest"),
        "score": ("ItemResult", "Readiness", "TestResult", "readiness"),
    },
)

__all__ = [
    "ITEMS",
    "TESTS",
    "DrillResult",
    "Drills",
    "Facts",
    "Item",
    "ItemResult",
    "MLTest",
    "Readiness",
    "TestResult",
    "gather",
    "readiness",
]

"""What other wings may know of quota leases, as frozen views.

A model server records the id of the lease it holds; serving reads that lease back (its pool,
grant, measured use and status) and who else holds a pool through these functions, never
through quota's tables. Each takes the caller's session, so a listing reads its own records and
the leases they name in one snapshot.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from shipyard.quota.admission import Lease
from shipyard.store.quota import QuotaLease

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class LeaseView:
    """One lease as its holder's record shows it: ``status`` is ``waiting``, ``held``,
    ``released``, ``expired``, ``cancelled`` or ``preempted``; ``used`` is what the holder last
    reported."""

    id: str
    pool: str
    pipeline: str
    run_id: str
    step: str
    status: str
    resources: dict[str, float]
    used: dict[str, float]
    granted_at: float | None
    expires_at: float
    fence: int

    @classmethod
    def of(cls, row: QuotaLease) -> LeaseView:
        return cls(
            row.id,
            row.pool,
            row.pipeline,
            row.run_id or "",
            row.step or "",
            row.status,
            {k: float(v) for k, v in row.resources.items()},
            {k: float(v) for k, v in row.used.items()},
            row.granted_at,
            row.expires_at,
            row.fence,
        )

    def held(self) -> Lease | None:
        """The lease as its holder releases it, while it is held (None once it ended)."""
        if self.status != "held" or self.granted_at is None:
            return None
        return Lease(
            self.id,
            self.pool,
            self.pipeline,
            dict(self.resources),
            self.granted_at,
            self.expires_at,
            self.step,
            self.run_id,
            fence=self.fence,
        )


def leases_in(s: Session, ids: Collection[str]) -> dict[str, LeaseView]:
    """The leases of ``ids`` that exist, by id."""
    if not ids:
        return {}
    rows = s.scalars(select(QuotaLease).where(QuotaLease.id.in_(list(ids))))
    return {row.id: LeaseView.of(row) for row in rows}


def holders_in(s: Session, pool: str) -> list[str]:
    """The pipelines that hold a lease in ``pool`` now, sorted by name."""
    held = s.scalars(
        select(QuotaLease.pipeline).where(QuotaLease.pool == pool, QuotaLease.status == "held")
    )
    return sorted(set(held))

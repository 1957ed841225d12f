"""The live traffic split: which versions of a model serve, and with which share.

Serving owns the split, as a traffic router owns its weights: the model server reads it every
``serving.refresh_interval_s`` (:func:`live_splits_in`, through
:func:`shipyard.serving.live.live_states`) and routes by it with
:func:`shipyard.serving.routing.choose_version`. Deploy commands it through this interface only,
the way an Argo Rollouts controller drives a traffic router (``SetWeight`` / ``VerifyWeight``):
:func:`set_split` and :func:`clear_split` inside the caller's transaction, so that a split is
never seen without the rollout decision (and audit event) that called for it, and
:func:`split_in` to read back what it set. Nothing here knows rollouts or policies; a split
only names the rollout that wrote it, for the record.

A split may also name a **shadow** version (a row of role ``shadow``, its weight the share of
requests copied to it): it answers no user; the server copies that share of the stable
version's answered requests to it off the request path (:mod:`shipyard.serving.shadow`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from shipyard.serving.routing import Cohort
from shipyard.store.serving import TrafficSplit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.store import Store


@dataclass(frozen=True)
class LiveSplit:
    """One model's live versions: the stable one and, during a canary, the canary and its weight."""

    model: str
    stable: int | None
    canary: int | None = None
    canary_weight_pct: float = 0.0
    rollout_id: str | None = None
    updated_at: float = 0.0
    weights: dict[int, float] = field(default_factory=dict)
    cohort: Cohort | None = None
    """How the canary draws its users (salt, targets, exclusions); None without a canary."""
    shadow: int | None = None
    """The version that answers a copy of ``shadow_pct`` of the requests, never a user."""
    shadow_pct: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "stable": self.stable,
            "canary": self.canary,
            "canary_weight_pct": self.canary_weight_pct,
            "rollout_id": self.rollout_id,
            "updated_at": self.updated_at,
            "weights": {str(v): w for v, w in self.weights.items()},
            "cohort": self.cohort.to_json() if self.cohort is not None else None,
            "shadow": self.shadow,
            "shadow_pct": self.shadow_pct,
        }


def _split_of(model: str, rows: list[TrafficSplit]) -> LiveSplit:
    stable = next((r for r in rows if r.role == "stable"), None)
    canary = next((r for r in rows if r.role == "canary"), None)
    shadow = next((r for r in rows if r.role == "shadow"), None)
    cohort = None
    if canary is not None and canary.cohort is not None:
        cohort = Cohort.from_json(canary.cohort)
    elif canary is not None:  # written before cohorts existed
        cohort = Cohort(model, canary.rollout_id or "")
    return LiveSplit(
        model=model,
        stable=stable.version if stable else None,
        canary=canary.version if canary else None,
        canary_weight_pct=canary.weight_pct if canary else 0.0,
        rollout_id=next((r.rollout_id for r in (canary, stable) if r is not None), None),
        updated_at=max((r.updated_at for r in rows), default=0.0),
        # a canary at weight 0 still serves the targeted users of its cohort
        weights={
            r.version: r.weight_pct
            for r in rows
            if r.role != "shadow"
            and (r.weight_pct > 0 or (r.role == "canary" and cohort is not None and cohort.targets))
        },
        cohort=cohort,
        shadow=shadow.version if shadow else None,
        shadow_pct=shadow.weight_pct if shadow else 0.0,
    )


# -- reading ----------------------------------------------------------------------------------


def split_in(s: Session, model: str) -> LiveSplit | None:
    """The model's split inside the caller's session, or None when it has none."""
    rows = list(s.scalars(select(TrafficSplit).where(TrafficSplit.model == model)))
    return _split_of(model, rows) if rows else None


def live_split(store: Store, model: str) -> LiveSplit | None:
    """The model's split, or None when deploy has never put a version of it live."""
    with store.session(readonly=True) as s:
        return split_in(s, model)


def live_splits_in(s: Session) -> dict[str, LiveSplit]:
    """Every model's split, in one read inside the caller's session (the server's refresh)."""
    by_model: dict[str, list[TrafficSplit]] = {}
    for r in s.scalars(select(TrafficSplit)):
        by_model.setdefault(r.model, []).append(r)
    return {m: _split_of(m, rs) for m, rs in by_model.items()}


def live_splits(store: Store) -> dict[str, LiveSplit]:
    """Every model's split, in one read."""
    with store.session(readonly=True) as s:
        return live_splits_in(s)


# -- commanding -------------------------------------------------------------------------------


def set_split(
    s: Session,
    model: str,
    *,
    stable: int | None,
    canary: int | None = None,
    canary_weight_pct: float = 0.0,
    rollout_id: str | None = None,
    cohort: Cohort | None = None,
    shadow: int | None = None,
    shadow_pct: float = 0.0,
    now: float,
) -> None:
    """Replace the model's split inside the caller's transaction.

    The canary takes ``canary_weight_pct`` of the users, drawn by ``cohort`` (its targeted
    users first), and the stable version the rest; a canary without a stable version takes
    everything, and neither leaves nothing live (as :func:`clear_split`). ``rollout_id`` names
    the rollout that decided it; a canary's cohort defaults to one salted by that rollout.
    ``shadow`` answers a copy of ``shadow_pct`` of the stable version's requests, no user.
    """
    if canary is not None and canary == stable:
        raise ValueError("canary and stable must differ")
    if shadow is not None and (shadow in (stable, canary) or stable is None):
        raise ValueError("a shadow version shadows a stable version and differs from it")
    if not 0.0 <= shadow_pct <= 100.0:
        raise ValueError("shadow_pct must be in [0, 100]")
    if cohort is not None and (cohort.model != model or canary is None):
        raise ValueError("a cohort belongs to the canary of its own model")
    if cohort is None and canary is not None:
        cohort = Cohort(model, rollout_id or "")
    clear_split(s, model)
    if stable is not None:
        s.add(
            TrafficSplit(
                model=model,
                version=stable,
                weight_pct=100.0 - (canary_weight_pct if canary is not None else 0.0),
                role="stable",
                rollout_id=rollout_id,
                updated_at=now,
            )
        )
    if canary is not None:
        s.add(
            TrafficSplit(
                model=model,
                version=canary,
                weight_pct=canary_weight_pct if stable is not None else 100.0,
                role="canary",
                rollout_id=rollout_id,
                updated_at=now,
                cohort=cohort.to_json() if cohort is not None else None,
            )
        )
    if shadow is not None:
        s.add(
            TrafficSplit(
                model=model,
                version=shadow,
                weight_pct=shadow_pct,
                role="shadow",
                rollout_id=rollout_id,
                updated_at=now,
            )
        )
    s.flush()


def clear_split(s: Session, model: str) -> None:
    """Take the model's split away inside the caller's transaction: its default alias decides
    what serves it again."""
    s.execute(delete(TrafficSplit).where(TrafficSplit.model == model))
    s.flush()

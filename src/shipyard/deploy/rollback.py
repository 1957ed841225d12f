"""One-command rollback: put the last healthy (or a named) version back in production at once.

Works during a rollout (which ends rolled back, traffic to its stable version) and after one
completed (the completed rollout is marked rolled back). The split, the production history, the
rollout's state and the audit event are one transaction; model servers pick the split (or the
default alias, which ``shipyard rollback`` moves right after) up at their next refresh, every
0.5 s by default.

Without a named version the target is the most recent version that was **healthy in
production**: it served production and was replaced by a newer version's rollout. A version
whose production ended in a rollback, or whose latest rollout was aborted, rolled back or failed
its staging, is never chosen (so rolling back twice cannot bring back what the first rollback
removed); a version's latest such event decides, so a version rolled back once and later
promoted again and replaced in good health is healthy again. A version named with
``to_version`` is put back even if it was not healthy, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard import audit
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.deploy.production import production_version, put_in_production
from shipyard.deploy.rollout import move_to
from shipyard.errors import DeployError, NotFound
from shipyard.statuses import ROLLOUT_ACTIVE, RolloutState
from shipyard.store import Store
from shipyard.store.deploy import ProductionRecord, RolloutRecord


@dataclass(frozen=True)
class Standing:
    """What the latest production event of one version says about it."""

    version: int
    healthy: bool
    why: str
    at: float


def standings(s: Session, model: str) -> dict[int, Standing]:
    """Each version's latest production evidence: healthy (served production until a newer
    version's rollout replaced it) or not (rolled back from production; a rollout of it
    aborted, rolled back or failed)."""
    spans = list(
        s.scalars(
            select(ProductionRecord)
            .where(ProductionRecord.model == model)
            .order_by(ProductionRecord.since, ProductionRecord.id)
        )
    )
    events: list[Standing] = []
    for r in s.scalars(
        select(RolloutRecord).where(
            RolloutRecord.model == model,
            RolloutRecord.state.in_((RolloutState.ROLLED_BACK, RolloutState.FAILED)),
        )
    ):
        state = "failed" if r.state == RolloutState.FAILED else "rolled back or aborted"
        why = f"{state} in rollout {r.id}" + (f" ({r.reason})" if r.reason else "")
        events.append(Standing(r.version, False, why, r.ended_at or r.updated_at))
    for i, span in enumerate(spans):  # after the rollouts: at a tie, the span says more
        following = spans[i + 1] if i + 1 < len(spans) else None
        if span.until is None or (following is not None and following.version == span.version):
            continue  # still serving, or the same version again (a rollback during a canary)
        if following is not None and following.via == "rollback":
            why = f"rolled back from production by {following.actor or 'someone'}"
            events.append(Standing(span.version, False, why, span.until))
        else:
            events.append(Standing(span.version, True, "served production", span.until))
    latest: dict[int, Standing] = {}
    for e in sorted(events, key=lambda e: (e.at, not e.healthy)):  # at a tie, bad news wins
        latest[e.version] = e
    return latest


def last_healthy_version(s: Session, model: str, current: int | None) -> int | None:
    """The most recent version other than ``current`` that was healthy in production."""
    health = standings(s, model)
    spans = s.scalars(
        select(ProductionRecord)
        .where(ProductionRecord.model == model, ProductionRecord.until.is_not(None))
        .order_by(ProductionRecord.until.desc(), ProductionRecord.id.desc())
    )
    for span in spans:
        standing = health.get(span.version)
        if span.version != current and standing is not None and standing.healthy:
            return span.version
    return None


def _nothing_healthy(model: str, current: int | None, health: dict[int, Standing]) -> str:
    unhealthy = "; ".join(
        f"v{v}: {st.why}" for v, st in sorted(health.items()) if not st.healthy and v != current
    )
    return (
        f"model {model!r} has no earlier production version that was healthy to roll back to"
        + (f" ({unhealthy})" if unhealthy else "")
        + "; name one with --to-version"
    )


def rollback(
    store: Store,
    model: str,
    *,
    actor: str,
    to_version: int | None = None,
    reason: str = "",
    clock: Clock = SYSTEM_CLOCK,
    version_exists: Callable[[str, int], bool] | None = None,
) -> dict[str, Any]:
    """Put ``to_version`` (default: the last version healthy in production) in production at
    once; the result's ``warning`` says when a named version was not healthy there.

    Works during a rollout (which ends rolled back) and after one completed. The model servers
    pick the new split up at their next refresh (every 0.5 s by default).
    """
    now = clock.time()
    with store.session() as s:
        current = production_version(s, model)
        active = s.scalar(
            select(RolloutRecord)
            .where(RolloutRecord.model == model, RolloutRecord.state.in_(ROLLOUT_ACTIVE))
            .with_for_update()
        )
        target = to_version
        if target is None:
            if active is not None and active.stable_version is not None:
                target = active.stable_version
            else:
                target = last_healthy_version(s, model, current)
        if target is None:
            raise DeployError(_nothing_healthy(model, current, standings(s, model)))
        if version_exists is not None and not version_exists(model, target):
            raise NotFound("model version", f"{model}/{target}")
        warning = None
        if to_version is not None:
            standing = standings(s, model).get(target)
            if standing is None and target != current:
                warning = f"{model}/{target} never served production; putting it back as named"
            elif standing is not None and not standing.healthy:
                warning = f"{model}/{target} was {standing.why}; putting it back as named"
        if target == current and active is None:
            raise DeployError(f"{model}/{target} is already the production version")
        why = reason or f"rollback to version {target}"
        ended: str | None = None
        if active is not None:
            move_to(s, active, RolloutState.ROLLED_BACK, now, actor, why)
            ended = active.id
        else:
            last = s.scalar(
                select(RolloutRecord)
                .where(RolloutRecord.model == model, RolloutRecord.state == RolloutState.PRODUCTION)
                .order_by(RolloutRecord.ended_at.desc())
            )
            if last is not None and last.version == current:
                move_to(
                    s,
                    last,
                    RolloutState.ROLLED_BACK,
                    now,
                    actor,
                    f"rolled back after completion: {why}",
                )
                ended = last.id
        put_in_production(s, model, target, now=now, via="rollback", actor=actor, reason=why)
        audit.record(
            s,
            actor=actor,
            action="model.rollback",
            subject=("model", model),
            details={
                "from": current,
                "to": target,
                "why": why,
                "rollout": ended,
                "warning": warning,
            },
            now=now,
        )
        return {
            "model": model,
            "from": current,
            "to": target,
            "rollout": ended,
            "at": now,
            "warning": warning,
        }

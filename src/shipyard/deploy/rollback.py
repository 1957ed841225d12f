"""One-command rollback: put the previous (or a named) version back in production at once.

Works during a rollout (which ends rolled back) and after one completed (the completed rollout
is marked rolled back). The split, the production history, the rollout's state and the audit
event are one transaction; model servers pick the split (or the default alias, which
``shipyard rollback`` moves right after) up at their next refresh, every 0.5 s by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.deploy import traffic
from shipyard.deploy.rollout import ACTIVE, PRODUCTION, ROLLED_BACK, move_to
from shipyard.errors import DeployError, NotFound
from shipyard.store import Store
from shipyard.store.deploy import RolloutRecord
from shipyard.store.tables import AuditEvent


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
    """Put ``to_version`` (default: the version before the current one) in production at once.

    Works during a rollout (which ends rolled back) and after one completed. The model servers
    pick the new split up at their next refresh (every 0.5 s by default).
    """
    now = clock.time()
    with store.session(immediate=True) as s:
        current = traffic.production_version(s, model)
        active = s.scalar(
            select(RolloutRecord)
            .where(RolloutRecord.model == model, RolloutRecord.state.in_(ACTIVE))
            .with_for_update()
        )
        target = to_version
        if target is None:
            if active is not None and active.stable_version is not None:
                target = active.stable_version
            else:
                target = traffic.previous_production_version(s, model)
        if target is None:
            raise DeployError(
                f"model {model!r} has no earlier production version to roll back to; "
                "name one with --to-version"
            )
        if version_exists is not None and not version_exists(model, target):
            raise NotFound("model version", f"{model}/{target}")
        if target == current and active is None:
            raise DeployError(f"{model}/{target} is already the production version")
        why = reason or f"rollback to version {target}"
        ended: str | None = None
        if active is not None:
            move_to(s, active, ROLLED_BACK, now, actor, why)
            ended = active.id
        else:
            last = s.scalar(
                select(RolloutRecord)
                .where(RolloutRecord.model == model, RolloutRecord.state == PRODUCTION)
                .order_by(RolloutRecord.ended_at.desc())
            )
            if last is not None and last.version == current:
                move_to(s, last, ROLLED_BACK, now, actor, f"rolled back after completion: {why}")
                ended = last.id
        traffic.put_in_production(
            s, model, target, now=now, via="rollback", actor=actor, reason=why
        )
        s.add(
            AuditEvent(
                ts=now,
                actor=actor,
                action="model.rollback",
                subject_kind="model",
                subject_id=model,
                detail={"from": current, "to": target, "why": why, "rollout": ended},
            )
        )
        return {"model": model, "from": current, "to": target, "rollout": ended, "at": now}

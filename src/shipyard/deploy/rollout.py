"""The rollout state machine, persisted in the store and advanced by the control loop.

::

    waiting_for_approvals ─approvals─▶ staging ─smoke, replay, shadow ok─▶ canary[0] ─▶ … ─▶ prod.
            │                              │ smoke/replay/shadow fails     │ verdict fails / abort
            │                              ▼                               ▼
            └──────────── abort ───▶ rolled_back ◀───────────────────── (traffic back to stable)
                                        failed   (smoke failed, no log to replay, no shadow rows)

The replay (policy ``canary.replay``) runs in staging, after the smoke check: the candidate
answers the stable version's logged requests (:mod:`shipyard.deploy.replay`). A replay that
fails rolls back with a diagnosis and no traffic ever moved; its verdict row has step -1.
The shadow stage (policy ``canary.shadow``) follows, still in staging with ``step_index`` -2
(:func:`enter_shadow`): the split names the candidate as the stable version's shadow, the
servers copy live requests to it, and its one verdict row (step -2) judges the pairs
(:mod:`shipyard.deploy.shadow`). A failing shadow rolls back the same way: the shadow stops,
and no user was ever answered by the candidate. Pausing the shadow stage stops the shadow too
(the split keeps the stable version alone); resuming starts it again, its rows counted afresh.
    any active state ──pause──▶ paused ──resume──▶ the state it left

Every transition is one transaction that takes the rollout's row lock, re-reads its state,
writes the new state, the traffic split it calls for and an :class:`AuditEvent` (who, when, why,
evidence) together. This module holds the states, the transitions people make (start, approve,
pause, resume, promote, abort) and the views; :mod:`shipyard.deploy.engine` makes the ones the
control loop makes, :mod:`shipyard.deploy.rollback` the one-command production rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shipyard.audit import record
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.deploy import production
from shipyard.deploy.policy import (
    REPLAY_STEP,
    SHADOW_STEP,
    Policy,
    load_policy,
    policy_from_dict,
)
from shipyard.deploy.request_log import has_request_log, no_log_message
from shipyard.errors import ApprovalRequired, DeployError, InvalidInput, NotFound
from shipyard.serving.routing import MAX_EXCLUDED, Cohort
from shipyard.serving.split import clear_split, set_split, split_in
from shipyard.statuses import ROLLOUT_ACTIVE, ROLLOUT_FINAL, ROLLOUT_MOVING, RolloutState
from shipyard.store import Store
from shipyard.store.deploy import GateResult, RolloutApproval, RolloutRecord, RolloutVerdict
from shipyard.store.tables import AuditEvent

ROLLOUT_FAILED_METRIC = "shipyard_rollout_failed"
"""Written (value 1) when a canary fails, labelled model/version/rollout: the alert's series."""
AUTHORS_MAX_CHARS = 100
"""The room for a rollout's authors (``rollouts.author``), stored comma-separated."""


def authors_of(r: RolloutRecord) -> tuple[str, ...]:
    """Who made the rollout's version (four-eyes: none of them may approve it)."""
    return tuple(a for a in r.author.split(",") if a)


def _authors_field(author: str | Sequence[str] | None, actor: str) -> str:
    names = [author] if isinstance(author, str) else list(author or ())
    names = list(dict.fromkeys(n.strip() for n in names if n and n.strip())) or [actor]
    if any("," in n for n in names):
        raise InvalidInput(f"an author's name cannot hold a comma: {names}")
    joined = ",".join(names)
    if len(joined) > AUTHORS_MAX_CHARS:
        raise DeployError(
            f"the authors of this version ({', '.join(names)}) take more than "
            f"{AUTHORS_MAX_CHARS} characters together; four-eyes could not be kept for all of them"
        )
    return joined


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutView:
    id: str
    model: str
    version: int
    stable_version: int | None
    state: str
    step_index: int
    weight_pct: float
    looks: int
    author: str
    """Who made the version (the registrant); :attr:`authors` lists every author."""
    created_by: str
    created_at: float
    updated_at: float
    reason: str
    approvals: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> dict[str, Any]:
        """The view without its approvals and verdicts (one line of a list)."""
        data = self.to_json()
        del data["approvals"], data["verdicts"]
        return data


def _view(s: Session, r: RolloutRecord, *, details: bool = True) -> RolloutView:
    policy = policy_from_dict(r.policy)
    weight = 0.0
    if r.state in (RolloutState.CANARY, RolloutState.PAUSED) and r.step_index < len(
        policy.canary.steps
    ):
        split = split_in(s, r.model)
        weight = split.canary_weight_pct if split is not None else 0.0
    elif r.state == RolloutState.PRODUCTION:
        weight = 100.0
    authors = list(authors_of(r))
    if not details:
        return RolloutView(
            r.id, r.model, r.version, r.stable_version, r.state, r.step_index, weight, r.looks,
            authors[0] if authors else "", r.created_by, r.created_at, r.updated_at, r.reason,
            authors=authors,
        )  # fmt: skip
    approvals = [
        {"purpose": a.purpose, "actor": a.actor, "roles": a.roles, "ts": a.ts, "used": bool(a.used)}
        for a in s.scalars(
            select(RolloutApproval)
            .where(RolloutApproval.rollout_id == r.id)
            .order_by(RolloutApproval.id)
        )
    ]
    verdicts = [
        {
            "step": v.step_index,
            "stage": {REPLAY_STEP: "replay", SHADOW_STEP: "shadow"}.get(v.step_index, "live"),
            "look": v.look,
            "outcome": v.outcome,
            "window": [v.window_start, v.window_end],
            "metrics": v.metrics,
            "ts": v.ts,
        }
        for v in s.scalars(
            select(RolloutVerdict)
            .where(RolloutVerdict.rollout_id == r.id)
            .order_by(RolloutVerdict.id)
        )
    ]
    return RolloutView(
        r.id,
        r.model,
        r.version,
        r.stable_version,
        r.state,
        r.step_index,
        weight,
        r.looks,
        authors[0] if authors else "",
        r.created_by,
        r.created_at,
        r.updated_at,
        r.reason,
        approvals,
        verdicts,
        authors,
    )


def get_rollout(store: Store, rollout_id: str) -> RolloutView:
    with store.session() as s:
        r = s.get(RolloutRecord, rollout_id)
        if r is None:
            raise NotFound("rollout", rollout_id, "see `shipyard deployments history MODEL`")
        return _view(s, r)


def rollouts_of(store: Store, model: str) -> list[RolloutView]:
    with store.session() as s:
        rows = s.scalars(
            select(RolloutRecord)
            .where(RolloutRecord.model == model)
            .order_by(RolloutRecord.created_at, RolloutRecord.id)
        )
        return [_view(s, r) for r in rows]


@dataclass(frozen=True)
class RolloutPage:
    """One page of rollouts, newest first; ``next`` continues after the last one."""

    rollouts: list[RolloutView]
    next: tuple[float, str] | None


def list_rollouts(
    store: Store,
    *,
    model: str | None = None,
    states: Sequence[str] = (),
    limit: int = 50,
    after: tuple[float, str] | None = None,
    details: bool = False,
) -> RolloutPage:
    """Rollouts newest first (by start time, then id), with their approvals and verdicts when
    ``details``; ``after`` is the (created_at, id) of the last rollout of the previous page (a
    keyset cursor, so a page costs the same however deep it is)."""
    q = select(RolloutRecord)
    if model is not None:
        q = q.where(RolloutRecord.model == model)
    if states:
        q = q.where(RolloutRecord.state.in_(list(states)))
    if after is not None:
        at, last_id = after
        q = q.where(
            (RolloutRecord.created_at < at)
            | ((RolloutRecord.created_at == at) & (RolloutRecord.id < last_id))
        )
    q = q.order_by(RolloutRecord.created_at.desc(), RolloutRecord.id.desc()).limit(limit + 1)
    with store.session(readonly=True) as s:
        rows = list(s.scalars(q))
        views = [_view(s, r, details=details) for r in rows[:limit]]
    more = len(rows) > limit
    return RolloutPage(views, (views[-1].created_at, views[-1].id) if more else None)


def audit_trail(store: Store, rollout_id: str) -> list[AuditEvent]:
    with store.session() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.subject_kind == "rollout", AuditEvent.subject_id == rollout_id)
                .order_by(AuditEvent.id)
            )
        )


def progress_of(store: Store, rollout_id: str, now: float) -> dict[str, Any]:
    """Where the rollout stands under the policy it started with: its canary step (``None``
    outside one) and what it waits for, each in one line (empty once it ended).

    What the control loop waits for is said here; whether a control loop runs at all is the
    caller's to add (the daemon is a face of its own)."""
    with store.session(readonly=True) as s:
        r = s.get(RolloutRecord, rollout_id)
        if r is None:
            raise NotFound("rollout", rollout_id, "see `shipyard deployments history MODEL`")
        policy = policy_from_dict(r.policy)
        state = r.paused_from if r.state == RolloutState.PAUSED else r.state
        start = {a.actor for a in open_approvals(s, r.id, "start")}
        speedup = {a.actor for a in open_approvals(s, r.id, "speedup")}
        authors = authors_of(r)
        step: dict[str, Any] | None = None
        steps = policy.canary.steps
        if state == RolloutState.CANARY and r.step_index < len(steps):
            rule = steps[r.step_index]
            elapsed = now - r.step_started_at if r.step_started_at is not None else 0.0
            step = {
                "index": r.step_index,
                "of": len(steps),
                "kind": "targeted" if rule.targeted else "canary",
                "description": rule.describe(),
                "weight_pct": rule.weight_pct,
                "min_duration_s": rule.min_duration_s,
                "max_duration_s": rule.max_duration(policy.canary.interval_s),
                "min_samples": rule.min_samples,
                "interval_s": policy.canary.interval_s,
                "started_at": r.step_started_at,
                "elapsed_s": max(0.0, elapsed),
                "looks": r.looks,
            }
        waits: list[str] = []
        if r.state == RolloutState.PAUSED:
            waits.append(f"someone to resume it: `shipyard rollout resume {r.id}`")
        elif r.state == RolloutState.WAITING:
            rule_s = policy.approvals.start
            whom = f"members of {', '.join(rule_s.roles)}" if rule_s.roles else "anyone"
            but = f" but {', '.join(authors)} (four-eyes)" if rule_s.four_eyes else ""
            got = f"; approved by {', '.join(sorted(start))}" if start else ""
            waits.append(
                f"{max(0, rule_s.count - len(start))} more approval(s) to start, from {whom}{but}"
                f"{got}: `shipyard approve {r.id}`"
            )
        elif r.state == RolloutState.STAGING and r.step_index == SHADOW_STEP:
            shadow = policy.canary.shadow
            assert shadow is not None
            waits.append(
                f"the control loop to judge the shadow: {shadow.min_rows} rows of live requests "
                f"copied to the candidate ({shadow.share_pct:g}% of them, no user answered by "
                f"it), for at most {shadow.max_wait_s:g} s since it began"
            )
        elif r.state == RolloutState.STAGING:
            replay = policy.canary.replay if policy.replays() else None
            waits.append(
                "the control loop to smoke-test the version in staging"
                + (
                    f", then replay up to {replay.max_rows} rows of the stable version's "
                    "request log through it"
                    if replay is not None and r.stable_version is not None
                    else ""
                )
            )
        elif step is not None:
            to_go = max(0.0, step["min_duration_s"] - step["elapsed_s"])
            waits.append(
                f"the control loop to judge step {r.step_index + 1} of {len(steps)} "
                f"({step['description']}) every {policy.canary.interval_s:g} s: "
                f"at least {step['min_samples']} requests per version and "
                f"{step['min_duration_s']:g} s ({to_go:.0f} s to go)"
            )
            rule_p = policy.approvals.speedup
            waits.append(
                f"or {max(0, rule_p.count - len(speedup))} more speed-up approval(s) to promote "
                f"it early: `shipyard approve {r.id} --for speedup`, then "
                f"`shipyard rollout promote {r.id}`"
            )
        judged = {
            step_index: outcome
            for step_index, outcome in s.execute(
                select(RolloutVerdict.step_index, RolloutVerdict.outcome)
                .where(
                    RolloutVerdict.rollout_id == r.id,
                    RolloutVerdict.step_index.in_((REPLAY_STEP, SHADOW_STEP)),
                )
                .order_by(RolloutVerdict.id)
            )
        }
        stages = _stages_of(r, policy, judged.get(REPLAY_STEP), judged.get(SHADOW_STEP))
        return {"step": step, "waits_for": waits, "stages": stages}


def _stages_of(
    r: RolloutRecord, policy: Policy, replay: str | None = None, shadow: str | None = None
) -> list[dict[str, Any]]:
    """The policy's release stages, each marked ``passed``, ``current``, ``failed`` (the
    rollout was rolled back, paused or aborted there) or ``pending``; ``replay`` and
    ``shadow`` are the outcomes of those stages, if they were judged."""
    entered = r.step_started_at is not None
    shadowing = r.step_index == SHADOW_STEP
    out = []
    for stage in policy.stages():
        if stage.step is None:  # the replay or the shadow
            outcome = replay if stage.kind == "replay" else shadow
            where = {"pass": "passed", "fail": "failed"}.get(outcome or "", "pending")
            if where == "pending" and r.state == RolloutState.STAGING:
                current = shadowing if stage.kind == "shadow" else not shadowing
                where = "current" if current else "pending"
            elif where == "pending" and stage.kind == "shadow" and shadowing:
                where = "failed"  # ended there unjudged: too few rows, or aborted
            out.append({**stage.to_json(), "status": where})
            continue
        if not entered or stage.step > r.step_index:
            where = "pending"
        elif stage.step < r.step_index or r.state == RolloutState.PRODUCTION:
            where = "passed"
        elif r.state in (RolloutState.CANARY, RolloutState.PAUSED):
            where = "current"
        else:
            where = "failed" if r.state == RolloutState.ROLLED_BACK else "pending"
        out.append({**stage.to_json(), "status": where})
    return out


# -- writing helpers --------------------------------------------------------------------------


def audit(
    s: Session, r: RolloutRecord, now: float, actor: str, action: str, why: str, **evidence: Any
) -> None:
    record(
        s,
        actor=actor,
        action=action,
        subject=("rollout", r.id),
        details={
            "model": r.model,
            "version": r.version,
            "state": r.state,
            "why": why,
            **evidence,
        },
        now=now,
    )


def move_to(
    s: Session, r: RolloutRecord, state: str, now: float, actor: str, why: str, **evidence: Any
) -> None:
    before = r.state
    r.state = state
    r.reason = why
    r.updated_at = now
    if state in ROLLOUT_FINAL:
        r.ended_at = now
    audit(s, r, now, actor, f"rollout.{state}", why, **{"from": before, **evidence})


def locked(s: Session, rollout_id: str) -> RolloutRecord:
    r = s.get(RolloutRecord, rollout_id, with_for_update=True, populate_existing=True)
    if r is None:
        raise NotFound("rollout", rollout_id, "see `shipyard deployments history MODEL`")
    return r


DAY_S = 86_400.0


def _exclusions(s: Session, r: RolloutRecord, policy: Policy, now: float) -> dict[str, Any]:
    """The earlier rollouts of the model whose canary users this one keeps out: those that put
    users in a weighted canary and ended (or are still going) within ``exclude_recent_days``,
    newest first, each with the bucket threshold below which a key was possibly in it."""
    days = policy.canary.exclude_recent_days
    if days <= 0:
        return {"excluded": [], "since": None}
    since = now - days * DAY_S
    rows = s.scalars(
        select(RolloutRecord)
        .where(
            RolloutRecord.model == r.model,
            RolloutRecord.id != r.id,
            RolloutRecord.step_started_at.is_not(None),
            (RolloutRecord.ended_at.is_(None)) | (RolloutRecord.ended_at >= since),
        )
        .order_by(RolloutRecord.created_at.desc(), RolloutRecord.id.desc())
    )
    excluded: list[list[Any]] = []
    for old in rows:
        weights = [
            st.weight_pct for st in policy_from_dict(old.policy).canary.steps[: old.step_index + 1]
        ]
        top = max(weights, default=0.0)
        if top <= 0:  # targeted steps only: its users are not recognisable by a hash
            continue
        old_cohort = Cohort(old.model, old.id, excluded=_frozen_excluded(old.cohort)).exposure_pct(
            top
        )
        if old_cohort >= 100:
            continue  # everyone may have been in it; excluding it would exclude no one usefully
        excluded.append([old.id, old_cohort])
        if len(excluded) == MAX_EXCLUDED:
            break
    return {"excluded": excluded, "since": since}


def _frozen_excluded(cohort: dict[str, Any] | None) -> tuple[tuple[str, float], ...]:
    return tuple((str(a), float(b)) for a, b in (cohort or {}).get("excluded", ()))


def cohort_of(r: RolloutRecord, policy: Policy, index: int) -> Cohort:
    """The cohort of the rollout at step ``index``: salted by the rollout, the matches of the
    targeted steps entered so far, the exclusions frozen when it first moved traffic."""
    targets = tuple(st.match.rule() for st in policy.canary.steps[: index + 1] if st.match)
    return Cohort(r.model, r.id, targets=targets, excluded=_frozen_excluded(r.cohort))


def enter_step(s: Session, r: RolloutRecord, policy: Policy, index: int, now: float) -> None:
    step = policy.canary.steps[index]
    if r.cohort is None:  # frozen once, so later steps (and resumes) keep the same buckets
        r.cohort = _exclusions(s, r, policy, now)
    r.step_index = index
    r.step_started_at = now
    r.last_look_at = now
    r.looks = 0
    set_split(
        s,
        r.model,
        stable=r.stable_version,
        canary=r.version,
        canary_weight_pct=step.weight_pct,
        rollout_id=r.id,
        cohort=cohort_of(r, policy, index),
        now=now,
    )


def enter_shadow(s: Session, r: RolloutRecord, policy: Policy, now: float) -> None:
    """The shadow stage begins: the candidate shadows the stable version (no user), and the
    rollout stays in staging with ``step_index`` :data:`SHADOW_STEP` and ``last_look_at`` at
    the stage's start (``step_started_at`` stays unset: no user was ever routed to it)."""
    shadow = policy.canary.shadow
    assert shadow is not None and r.stable_version is not None
    r.step_index = SHADOW_STEP
    r.last_look_at = now
    r.looks = 0
    set_split(
        s,
        r.model,
        stable=r.stable_version,
        shadow=r.version,
        shadow_pct=shadow.share_pct,
        rollout_id=r.id,
        now=now,
    )


def stage_evidence(r: RolloutRecord, policy: Policy, index: int) -> dict[str, Any]:
    """What the audit records about a stage the rollout enters: its kind, who it routes, the
    alpha it may spend, the users kept out."""
    stage = policy.stage_of_step(index)
    cohort = cohort_of(r, policy, index)
    return {
        "stage": stage.to_json(),
        "cohort": {
            "targets": [t.describe() for t in cohort.targets],
            "excluded_rollouts": [rid for rid, _ in cohort.excluded],
            "eligible_share": cohort.eligible,
        },
    }


def to_production(s: Session, r: RolloutRecord, now: float, actor: str, why: str) -> None:
    production.put_in_production(
        s, r.model, r.version, now=now, via="rollout", actor=actor, reason=why, rollout_id=r.id
    )
    move_to(s, r, RolloutState.PRODUCTION, now, actor, why, weight_pct=100.0)


def shadowing(r: RolloutRecord) -> bool:
    """Whether the rollout is in its shadow stage, its split naming the candidate as shadow."""
    return r.state == RolloutState.STAGING and r.step_index == SHADOW_STEP


def traffic_back(s: Session, r: RolloutRecord, now: float) -> None:
    """Stable version takes all traffic again (or the canary's traffic stops, if none)."""
    if r.stable_version is not None:
        set_split(s, r.model, stable=r.stable_version, rollout_id=r.id, now=now)
    else:
        clear_split(s, r.model)


def open_approvals(s: Session, rollout_id: str, purpose: str) -> list[RolloutApproval]:
    return list(
        s.scalars(
            select(RolloutApproval).where(
                RolloutApproval.rollout_id == rollout_id,
                RolloutApproval.purpose == purpose,
                RolloutApproval.used == 0,
            )
        )
    )


def start_approved(s: Session, r: RolloutRecord, policy: Policy) -> bool:
    return len({a.actor for a in open_approvals(s, r.id, "start")}) >= policy.approvals.start.count


# -- actions ----------------------------------------------------------------------------------


def start_rollout(
    store: Store,
    model: str,
    version: int,
    *,
    actor: str,
    author: str | Sequence[str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    policy: Policy | None = None,
) -> RolloutView:
    """Begin deploying ``version`` of ``model``; it waits for the approvals its policy demands.

    ``author`` is who made the version, one name or several (four-eyes: none of them may
    approve it): :func:`shipyard.deploy.authorship.version_authors` when the caller can ask the
    registry, else the person starting the rollout.
    """
    if version < 1:
        raise InvalidInput(f"version must be a positive number, got {version}")
    authors = _authors_field(author, actor)
    policy = policy or load_policy(store, model)
    now = clock.time()
    with store.session(immediate=True) as s:
        if (
            store.dialect == "postgresql"
        ):  # one starter per model at a time (SQLite: BEGIN IMMEDIATE)
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:m))"), {"m": f"rollout:{model}"})
        active = s.scalar(
            select(RolloutRecord)
            .where(RolloutRecord.model == model, RolloutRecord.state.in_(ROLLOUT_ACTIVE))
            .with_for_update()
        )
        if active is not None:
            raise DeployError(
                f"model {model!r} already has rollout {active.id} of version {active.version} in "
                f"state {active.state}; finish it or `shipyard rollout abort {active.id}` first"
            )
        gate = s.scalar(
            select(GateResult)
            .where(GateResult.model == model, GateResult.version == version)
            .order_by(GateResult.id.desc())
        )
        if gate is not None and not gate.passed:
            raise DeployError(
                f"{model}/{version} failed its validation gate at {gate.ts:.0f}; it cannot be "
                "deployed (see `shipyard deployments history`)"
            )
        if gate is None and policy.gate.required:
            raise DeployError(
                f"{model}/{version} has no validation gate result and the policy requires one"
            )
        stable = production.production_version(s, model)
        if stable == version:
            raise DeployError(f"{model}/{version} is already in production")
        replay = policy.canary.replay if policy.replays() else None
        if (
            replay is not None
            and stable is not None
            and not has_request_log(s, model, stable, now - replay.since_s)
        ):
            raise DeployError(no_log_message(model, stable, replay.since_s))
        r = RolloutRecord(
            model=model,
            version=version,
            stable_version=stable,
            author=authors,
            state=RolloutState.WAITING,
            reason=_waiting_reason(policy, actor),
            policy=policy.model_dump(mode="json"),
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        s.add(r)
        s.flush()
        audit(
            s,
            r,
            now,
            actor,
            "rollout.start",
            f"deploy {model}/{version} (stable: {stable})",
            author=authors_of(r)[0],
            authors=list(authors_of(r)),
            stable_version=stable,
            stages=[st.to_json() for st in policy.stages()],
        )
        if policy.approvals.start.count == 0:
            move_to(s, r, RolloutState.STAGING, now, actor, "the policy asks no approval to start")
        return _view(s, r)


def _waiting_reason(policy: Policy, actor: str) -> str:
    need = policy.approvals.start
    roles = f" of {', '.join(need.roles)}" if need.roles else ""
    return f"started by {actor}; waiting for {need.count} approval(s){roles} to start"


def approve(
    store: Store,
    rollout_id: str,
    *,
    actor: str,
    purpose: str = "start",
    clock: Clock = SYSTEM_CLOCK,
) -> RolloutView:
    """Record ``actor``'s approval; the rollout moves on as soon as enough people approved."""
    if purpose not in ("start", "speedup"):
        raise InvalidInput(f"an approval is for 'start' or 'speedup', not {purpose!r}")
    now = clock.time()
    with store.session(immediate=True) as s:
        r = locked(s, rollout_id)
        if r.state not in ROLLOUT_ACTIVE:
            raise DeployError(f"rollout {r.id} is {r.state}; there is nothing left to approve")
        if purpose == "start" and r.state != RolloutState.WAITING:
            raise DeployError(f"rollout {r.id} already started ({r.state}); approve 'speedup'")
        policy = policy_from_dict(r.policy)
        rule = getattr(policy.approvals, purpose)
        if rule.four_eyes and actor in authors_of(r):
            raise DeployError(
                f"four-eyes: {actor} made {r.model}/{r.version} and may not approve it; "
                "ask another member of " + (", ".join(rule.roles) or "the team")
            )
        roles = policy.roles_of(actor)
        if rule.roles and not set(roles) & set(rule.roles):
            raise DeployError(
                f"{actor} is not a member of {', '.join(rule.roles)}, which approve "
                f"{purpose} of {r.model}"
            )
        if any(a.actor == actor for a in open_approvals(s, r.id, purpose)):
            raise DeployError(f"{actor} already approved {purpose} of rollout {r.id}")
        s.add(RolloutApproval(rollout_id=r.id, purpose=purpose, actor=actor, roles=roles, ts=now))
        s.flush()
        have = len({a.actor for a in open_approvals(s, r.id, purpose)})
        audit(
            s,
            r,
            now,
            actor,
            f"rollout.approve.{purpose}",
            f"{have} of {rule.count} approvals",
            roles=roles,
        )
        if purpose == "start" and r.state == RolloutState.WAITING and have >= rule.count:
            move_to(
                s, r, RolloutState.STAGING, now, actor, f"{have} of {rule.count} approvals to start"
            )
        return _view(s, r)


def pause(
    store: Store, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Hold the rollout where it is (users stay routed as they are) until someone resumes it.
    A paused shadow stage stops shadowing: its split keeps the stable version alone."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = locked(s, rollout_id)
        if r.state not in ROLLOUT_MOVING:
            raise DeployError(f"rollout {r.id} is {r.state}; only a running rollout can pause")
        if shadowing(r):
            traffic_back(s, r, now)
        r.paused_from = r.state
        move_to(s, r, RolloutState.PAUSED, now, actor, reason or "paused by hand")
        return _view(s, r)


def resume(
    store: Store, rollout_id: str, *, actor: str, clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    now = clock.time()
    with store.session(immediate=True) as s:
        r = locked(s, rollout_id)
        if r.state != RolloutState.PAUSED:
            raise DeployError(f"rollout {r.id} is {r.state}, not paused")
        back = r.paused_from or RolloutState.WAITING
        r.paused_from = None
        if back == RolloutState.CANARY:
            r.last_look_at = now
        elif back == RolloutState.STAGING and r.step_index == SHADOW_STEP:
            enter_shadow(s, r, policy_from_dict(r.policy), now)  # its rows count from now
        move_to(s, r, back, now, actor, "resumed")
        return _view(s, r)


def promote(
    store: Store, rollout_id: str, *, actor: str, clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Skip the rest of the current canary step (speed-up): needs the policy's speed-up approvals,
    which this promotion uses up."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = locked(s, rollout_id)
        if r.state != RolloutState.CANARY:
            raise DeployError(
                f"rollout {r.id} is {r.state}; only a rollout in a canary step can be promoted"
            )
        policy = policy_from_dict(r.policy)
        rule = policy.approvals.speedup
        approvals = open_approvals(s, r.id, "speedup")
        if len({a.actor for a in approvals}) < rule.count:
            raise ApprovalRequired(
                f"promoting rollout {r.id} early needs {rule.count} speed-up approval(s), has "
                f"{len(approvals)}: `shipyard approve {r.id} --for speedup`, by each approver"
            )
        for a in approvals:
            a.used = 1
        approvers = sorted(a.actor for a in approvals)
        next_step(s, r, policy, now, actor, f"promoted early, approved by {approvers}")
        return _view(s, r)


def next_step(
    s: Session, r: RolloutRecord, policy: Policy, now: float, actor: str, why: str
) -> None:
    nxt = r.step_index + 1
    if nxt < len(policy.canary.steps):
        enter_step(s, r, policy, nxt, now)
        audit(
            s,
            r,
            now,
            actor,
            "rollout.step",
            why,
            step=nxt,
            weight_pct=policy.canary.steps[nxt].weight_pct,
            **stage_evidence(r, policy, nxt),
        )
        r.reason = why
        r.updated_at = now
    else:
        to_production(s, r, now, actor, why)


def abort(
    store: Store, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Stop the rollout: traffic back to the stable version."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = locked(s, rollout_id)
        if r.state not in ROLLOUT_ACTIVE:
            raise DeployError(f"rollout {r.id} is already {r.state}")
        touched_traffic = (
            r.state in (RolloutState.CANARY, RolloutState.PAUSED) and r.step_started_at is not None
        ) or (
            r.state in (RolloutState.STAGING, RolloutState.PAUSED) and r.step_index == SHADOW_STEP
        )
        if touched_traffic:
            traffic_back(s, r, now)
        move_to(
            s,
            r,
            RolloutState.ROLLED_BACK,
            now,
            actor,
            reason or "aborted by hand",
            traffic_reverted=touched_traffic,
        )
        return _view(s, r)

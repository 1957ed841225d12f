"""The rollout state machine, persisted in the store and advanced by the control loop.

::

    waiting_for_approvals ─approvals─▶ staging ─smoke ok─▶ canary[0] ─▶ … ─▶ canary[n-1] ─▶ prod.
            │                              │ smoke fails              │ verdict fails / abort
            │                              ▼                          ▼
            └──────────── abort ───▶ rolled_back ◀──────────────── (traffic back to stable)
                                        failed   (staging smoke failed: no traffic ever moved)
    any active state ──pause──▶ paused ──resume──▶ the state it left

Every transition is one transaction that takes the rollout's row lock, re-reads its state,
writes the new state, the traffic split it calls for and an :class:`AuditEvent` (who, when, why,
evidence) together. Slow work (loading a model for the smoke check, reading metric windows for
the analysis) happens before the transaction, and the transaction only commits if the rollout
is still where the slow work found it, so two daemons, or a daemon restarted after a SIGKILL,
never apply one decision twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.deploy import traffic
from shipyard.deploy.policy import Policy, load_policy, policy_from_dict
from shipyard.errors import ApprovalRequired, DeployError, InvalidInput, NotFound
from shipyard.stats.canary import MetricVerdict, combine
from shipyard.store import Store
from shipyard.store.deploy import GateResult, RolloutApproval, RolloutRecord, RolloutVerdict
from shipyard.store.tables import AuditEvent, MetricPoint

WAITING = "waiting_for_approvals"
STAGING = "staging"
CANARY = "canary"
PRODUCTION = "production"
PAUSED = "paused"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
ACTIVE = (WAITING, STAGING, CANARY, PAUSED)
FINAL = (PRODUCTION, ROLLED_BACK, FAILED)

ROLLOUT_FAILED_METRIC = "shipyard_rollout_failed"
"""Written (value 1) when a canary fails, labelled model/version/rollout: the alert's series."""


# -- seams ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    evidence: dict[str, Any]


SmokeCheck = Callable[[str, int, Policy], SmokeResult]
"""(model, version, policy) → did the version load, answer a sample and meet the latency?"""


class Analyzer(Protocol):
    def __call__(
        self,
        model: str,
        canary: int,
        stable: int,
        start: float,
        end: float,
        policy: Policy,
        step_index: int,
        look: int,
        /,
    ) -> list[MetricVerdict]: ...


class FailureHook(Protocol):
    """Called inside the failing transition's transaction (e.g. to store a diagnosis)."""

    def __call__(
        self, s: Session, r: RolloutRecord, verdicts: Sequence[MetricVerdict], now: float, /
    ) -> dict[str, Any]: ...


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
    created_by: str
    created_at: float
    updated_at: float
    reason: str
    approvals: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _view(s: Session, r: RolloutRecord) -> RolloutView:
    policy = policy_from_dict(r.policy)
    weight = 0.0
    if r.state in (CANARY, PAUSED) and r.step_index < len(policy.canary.steps):
        split = s.scalars(select(traffic.TrafficSplit).where(traffic.TrafficSplit.model == r.model))
        weight = next((t.weight_pct for t in split if t.role == "canary"), 0.0)
    elif r.state == PRODUCTION:
        weight = 100.0
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
        r.author,
        r.created_by,
        r.created_at,
        r.updated_at,
        r.reason,
        approvals,
        verdicts,
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


def audit_trail(store: Store, rollout_id: str) -> list[AuditEvent]:
    with store.session() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.subject_kind == "rollout", AuditEvent.subject_id == rollout_id)
                .order_by(AuditEvent.id)
            )
        )


# -- writing helpers --------------------------------------------------------------------------


def _audit(
    s: Session, r: RolloutRecord, now: float, actor: str, action: str, why: str, **evidence: Any
) -> None:
    s.add(
        AuditEvent(
            ts=now,
            actor=actor,
            action=action,
            subject_kind="rollout",
            subject_id=r.id,
            detail={
                "model": r.model,
                "version": r.version,
                "state": r.state,
                "why": why,
                **evidence,
            },
        )
    )


def _move(
    s: Session, r: RolloutRecord, state: str, now: float, actor: str, why: str, **evidence: Any
) -> None:
    before = r.state
    r.state = state
    r.reason = why
    r.updated_at = now
    if state in FINAL:
        r.ended_at = now
    _audit(s, r, now, actor, f"rollout.{state}", why, **{"from": before, **evidence})


def _locked(s: Session, rollout_id: str) -> RolloutRecord:
    r = s.get(RolloutRecord, rollout_id, with_for_update=True, populate_existing=True)
    if r is None:
        raise NotFound("rollout", rollout_id, "see `shipyard deployments history MODEL`")
    return r


def _enter_step(s: Session, r: RolloutRecord, policy: Policy, index: int, now: float) -> None:
    step = policy.canary.steps[index]
    r.step_index = index
    r.step_started_at = now
    r.last_look_at = now
    r.looks = 0
    traffic.write_split(
        s,
        r.model,
        stable=r.stable_version,
        canary=r.version,
        canary_weight_pct=step.weight_pct,
        rollout_id=r.id,
        now=now,
    )


def _to_production(s: Session, r: RolloutRecord, now: float, actor: str, why: str) -> None:
    traffic.put_in_production(
        s, r.model, r.version, now=now, via="rollout", actor=actor, reason=why, rollout_id=r.id
    )
    _move(s, r, PRODUCTION, now, actor, why, weight_pct=100.0)


def _traffic_back(s: Session, r: RolloutRecord, now: float) -> None:
    """Stable version takes all traffic again (or the canary's traffic stops, if none)."""
    if r.stable_version is not None:
        traffic.write_split(
            s,
            r.model,
            stable=r.stable_version,
            canary=None,
            canary_weight_pct=0.0,
            rollout_id=r.id,
            now=now,
        )
    else:
        traffic.write_split(
            s, r.model, stable=None, canary=None, canary_weight_pct=0.0, rollout_id=r.id, now=now
        )


def _approvals(s: Session, rollout_id: str, purpose: str) -> list[RolloutApproval]:
    return list(
        s.scalars(
            select(RolloutApproval).where(
                RolloutApproval.rollout_id == rollout_id,
                RolloutApproval.purpose == purpose,
                RolloutApproval.used == 0,
            )
        )
    )


def _start_approved(s: Session, r: RolloutRecord, policy: Policy) -> bool:
    return len({a.actor for a in _approvals(s, r.id, "start")}) >= policy.approvals.start.count


# -- actions ----------------------------------------------------------------------------------


def start_rollout(
    store: Store,
    model: str,
    version: int,
    *,
    actor: str,
    author: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    policy: Policy | None = None,
) -> RolloutView:
    """Begin deploying ``version`` of ``model``; it waits for the approvals its policy demands.

    ``author`` is who made the version (four-eyes: they may not approve it); the registry's
    ``created_by`` when the caller knows it, else the person starting the rollout.
    """
    if version < 1:
        raise InvalidInput(f"version must be a positive number, got {version}")
    policy = policy or load_policy(store, model)
    now = clock.time()
    with store.session(immediate=True) as s:
        active = s.scalar(
            select(RolloutRecord)
            .where(RolloutRecord.model == model, RolloutRecord.state.in_(ACTIVE))
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
        stable = traffic.production_version(s, model)
        if stable == version:
            raise DeployError(f"{model}/{version} is already in production")
        r = RolloutRecord(
            model=model,
            version=version,
            stable_version=stable,
            author=author or actor,
            state=WAITING,
            policy=policy.model_dump(mode="json"),
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        s.add(r)
        s.flush()
        _audit(
            s,
            r,
            now,
            actor,
            "rollout.start",
            f"deploy {model}/{version} (stable: {stable})",
            author=r.author,
            stable_version=stable,
        )
        if policy.approvals.start.count == 0:
            _move(s, r, STAGING, now, actor, "the policy asks no approval to start")
        return _view(s, r)


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
        r = _locked(s, rollout_id)
        if r.state not in ACTIVE:
            raise DeployError(f"rollout {r.id} is {r.state}; there is nothing left to approve")
        if purpose == "start" and r.state != WAITING:
            raise DeployError(f"rollout {r.id} already started ({r.state}); approve 'speedup'")
        policy = policy_from_dict(r.policy)
        rule = getattr(policy.approvals, purpose)
        if rule.four_eyes and actor == r.author:
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
        if any(a.actor == actor for a in _approvals(s, r.id, purpose)):
            raise DeployError(f"{actor} already approved {purpose} of rollout {r.id}")
        s.add(RolloutApproval(rollout_id=r.id, purpose=purpose, actor=actor, roles=roles, ts=now))
        s.flush()
        have = len({a.actor for a in _approvals(s, r.id, purpose)})
        _audit(
            s,
            r,
            now,
            actor,
            f"rollout.approve.{purpose}",
            f"{have} of {rule.count} approvals",
            roles=roles,
        )
        if purpose == "start" and r.state == WAITING and have >= rule.count:
            _move(s, r, STAGING, now, actor, f"{have} of {rule.count} approvals to start")
        return _view(s, r)


def pause(
    store: Store, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Hold the rollout where it is (traffic stays as it is) until someone resumes it."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = _locked(s, rollout_id)
        if r.state not in (WAITING, STAGING, CANARY):
            raise DeployError(f"rollout {r.id} is {r.state}; only a running rollout can pause")
        r.paused_from = r.state
        _move(s, r, PAUSED, now, actor, reason or "paused by hand")
        return _view(s, r)


def resume(
    store: Store, rollout_id: str, *, actor: str, clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    now = clock.time()
    with store.session(immediate=True) as s:
        r = _locked(s, rollout_id)
        if r.state != PAUSED:
            raise DeployError(f"rollout {r.id} is {r.state}, not paused")
        back = r.paused_from or WAITING
        r.paused_from = None
        if back == CANARY:
            r.last_look_at = now
        _move(s, r, back, now, actor, "resumed")
        return _view(s, r)


def promote(
    store: Store, rollout_id: str, *, actor: str, clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Skip the rest of the current canary step (speed-up): needs the policy's speed-up approvals,
    which this promotion uses up."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = _locked(s, rollout_id)
        if r.state != CANARY:
            raise DeployError(
                f"rollout {r.id} is {r.state}; only a rollout in a canary step can be promoted"
            )
        policy = policy_from_dict(r.policy)
        rule = policy.approvals.speedup
        approvals = _approvals(s, r.id, "speedup")
        if len({a.actor for a in approvals}) < rule.count:
            raise ApprovalRequired(
                f"promoting rollout {r.id} early needs {rule.count} speed-up approval(s), has "
                f"{len(approvals)}: `shipyard approve {r.id} --as USER --for speedup`"
            )
        for a in approvals:
            a.used = 1
        approvers = sorted(a.actor for a in approvals)
        _next_step(s, r, policy, now, actor, f"promoted early, approved by {approvers}")
        return _view(s, r)


def _next_step(
    s: Session, r: RolloutRecord, policy: Policy, now: float, actor: str, why: str
) -> None:
    nxt = r.step_index + 1
    if nxt < len(policy.canary.steps):
        _enter_step(s, r, policy, nxt, now)
        _audit(
            s,
            r,
            now,
            actor,
            "rollout.step",
            why,
            step=nxt,
            weight_pct=policy.canary.steps[nxt].weight_pct,
        )
        r.updated_at = now
    else:
        _to_production(s, r, now, actor, why)


def abort(
    store: Store, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = SYSTEM_CLOCK
) -> RolloutView:
    """Stop the rollout: traffic back to the stable version."""
    now = clock.time()
    with store.session(immediate=True) as s:
        r = _locked(s, rollout_id)
        if r.state not in ACTIVE:
            raise DeployError(f"rollout {r.id} is already {r.state}")
        touched_traffic = r.state in (CANARY, PAUSED) and r.step_started_at is not None
        if touched_traffic:
            _traffic_back(s, r, now)
        _move(
            s,
            r,
            ROLLED_BACK,
            now,
            actor,
            reason or "aborted by hand",
            traffic_reverted=touched_traffic,
        )
        return _view(s, r)


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
            _move(s, active, ROLLED_BACK, now, actor, why)
            ended = active.id
        else:
            last = s.scalar(
                select(RolloutRecord)
                .where(RolloutRecord.model == model, RolloutRecord.state == PRODUCTION)
                .order_by(RolloutRecord.ended_at.desc())
            )
            if last is not None and last.version == current:
                _move(s, last, ROLLED_BACK, now, actor, f"rolled back after completion: {why}")
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


# -- the control loop -------------------------------------------------------------------------


@dataclass
class Advance:
    """What one pass of the control loop did to one rollout."""

    rollout_id: str
    action: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Engine:
    """Advances rollouts; the smoke check, the analyzer and the failure hook are seams."""

    store: Store
    clock: Clock
    smoke: SmokeCheck
    analyzer: Analyzer
    on_failure: FailureHook | None = None
    actor: str = "shipyard-daemon"

    def advance_all(self) -> list[Advance]:
        with self.store.session() as s:
            ids = list(
                s.scalars(
                    select(RolloutRecord.id)
                    .where(RolloutRecord.state.in_((WAITING, STAGING, CANARY)))
                    .order_by(RolloutRecord.created_at)
                )
            )
        done: list[Advance] = []
        for rid in ids:
            step = self.advance(rid)
            if step is not None:
                done.append(step)
        return done

    def _snapshot(self, rollout_id: str) -> RolloutRecord:
        with self.store.session() as s:
            r = s.get(RolloutRecord, rollout_id)
            if r is None:
                raise NotFound("rollout", rollout_id)
            s.expunge(r)
            return r

    def advance(self, rollout_id: str) -> Advance | None:
        seen = self._snapshot(rollout_id)
        policy = policy_from_dict(seen.policy)
        if seen.state == WAITING:
            return self._waiting(seen, policy)
        if seen.state == STAGING:
            return self._staging(seen, policy)
        if seen.state == CANARY:
            return self._canary(seen, policy)
        return None

    def _unchanged(self, s: Session, seen: RolloutRecord) -> RolloutRecord | None:
        r = _locked(s, seen.id)
        same = (r.state, r.step_index, r.looks, r.last_look_at) == (
            seen.state,
            seen.step_index,
            seen.looks,
            seen.last_look_at,
        )
        return r if same else None

    def _waiting(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        now = self.clock.time()
        with self.store.session(immediate=True) as s:
            r = self._unchanged(s, seen)
            if r is None or not _start_approved(s, r, policy):
                return None
            _move(s, r, STAGING, now, self.actor, "approvals complete")
            return Advance(r.id, STAGING)

    def _staging(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        evidence: dict[str, Any] = {"smoke": "not configured"}
        passed = True
        if "staging" in policy.environments and policy.staging.smoke:
            try:
                result = self.smoke(seen.model, seen.version, policy)
            except Exception as exc:  # a smoke check that crashes is a failed smoke check
                result = SmokeResult(False, {"error": f"{type(exc).__name__}: {exc}"})
            passed, evidence = result.passed, result.evidence
        now = self.clock.time()
        with self.store.session(immediate=True) as s:
            r = self._unchanged(s, seen)
            if r is None:
                return None
            if not passed:
                _move(s, r, FAILED, now, self.actor, "staging smoke check failed", smoke=evidence)
                return Advance(r.id, FAILED, evidence)
            _audit(
                s,
                r,
                now,
                self.actor,
                "rollout.staging.passed",
                "smoke check passed",
                smoke=evidence,
            )
            if policy.uses_canary() and r.stable_version is not None:
                _enter_step(s, r, policy, 0, now)
                _move(
                    s,
                    r,
                    CANARY,
                    now,
                    self.actor,
                    "staging passed; first canary step",
                    step=0,
                    weight_pct=policy.canary.steps[0].weight_pct,
                )
                return Advance(r.id, CANARY, {"step": 0})
            why = (
                "staging passed; no stable version to compare a canary with"
                if r.stable_version is None
                else "staging passed; the policy has no canary"
            )
            _to_production(s, r, now, self.actor, why)
            return Advance(r.id, PRODUCTION)

    def _canary(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        now = self.clock.time()
        interval = policy.canary.interval_s
        started = seen.step_started_at or seen.updated_at
        if now - (seen.last_look_at or started) < interval:
            return None
        step = policy.canary.steps[seen.step_index]
        elapsed = now - started
        look = seen.looks + 1
        verdicts: list[MetricVerdict] = []
        if policy.analysis.metrics and seen.stable_version is not None:
            verdicts = self.analyzer(
                seen.model,
                seen.version,
                seen.stable_version,
                started,
                now,
                policy,
                seen.step_index,
                look,
            )
        outcome = combine(verdicts) if verdicts else "pass"
        with self.store.session(immediate=True) as s:
            r = self._unchanged(s, seen)
            if r is None:
                return None
            r.last_look_at = now
            if outcome != "extend":
                r.looks = look
            s.add(
                RolloutVerdict(
                    rollout_id=r.id,
                    step_index=r.step_index,
                    look=look,
                    outcome=outcome,
                    window_start=started,
                    window_end=now,
                    metrics=[v.to_dict() for v in verdicts],
                    ts=now,
                )
            )
            failed = [v.to_dict() for v in verdicts if v.outcome == "fail"]
            if outcome == "fail":
                return self._fail(s, r, policy, verdicts, now, failed)
            if outcome == "extend":
                action = policy.analysis.on_no_data
                short = [v.metric for v in verdicts if v.outcome == "extend"]
                if action == "fail":
                    return self._fail(s, r, policy, verdicts, now, [], no_data=short)
                if action == "pause" or elapsed >= step.max_duration(interval):
                    r.paused_from = CANARY
                    _move(
                        s,
                        r,
                        PAUSED,
                        now,
                        self.actor,
                        f"too little data for {short} after {elapsed:.0f}s",
                        no_data=short,
                    )
                    return Advance(r.id, PAUSED, {"no_data": short})
                _audit(s, r, now, self.actor, "rollout.extend", f"too little data for {short}")
                return Advance(r.id, "extend", {"no_data": short})
            if elapsed >= step.min_duration_s:
                _next_step(
                    s,
                    r,
                    policy,
                    now,
                    self.actor,
                    f"step {r.step_index} passed {look} look(s) over {elapsed:.0f}s",
                )
                return Advance(r.id, r.state, {"step": r.step_index})
            return Advance(r.id, "look", {"look": look})

    def _fail(
        self,
        s: Session,
        r: RolloutRecord,
        policy: Policy,
        verdicts: Sequence[MetricVerdict],
        now: float,
        failed: list[dict[str, Any]],
        no_data: list[str] | None = None,
    ) -> Advance:
        why = (
            "canary failed: " + ", ".join(f["metric"] for f in failed)
            if failed
            else f"no data for {no_data} and the policy fails on no data"
        )
        evidence: dict[str, Any] = {"failed_metrics": failed, "no_data": no_data or []}
        if self.on_failure is not None:
            evidence["diagnosis"] = self.on_failure(s, r, verdicts, now)
        if "notify" in policy.on_failure or policy.rollback.notify:
            labels = {"model": r.model, "version": str(r.version), "rollout": r.id}
            s.add(
                MetricPoint(
                    name=ROLLOUT_FAILED_METRIC,
                    labels=labels,
                    labels_key=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                    ts=now,
                    value=1.0,
                )
            )
        if "pause" in policy.on_failure:
            r.paused_from = CANARY
            _move(s, r, PAUSED, now, self.actor, why, **evidence)
            return Advance(r.id, PAUSED, evidence)
        _traffic_back(s, r, now)
        _move(s, r, ROLLED_BACK, now, self.actor, why, **evidence)
        return Advance(r.id, ROLLED_BACK, evidence)


def record_gate(
    s: Session,
    model: str,
    version: int,
    passed: bool,
    evidence: dict[str, Any],
    actor: str,
    now: float,
) -> None:
    s.add(
        GateResult(
            model=model, version=version, passed=int(passed), evidence=evidence, ts=now, actor=actor
        )
    )
    s.add(
        AuditEvent(
            ts=now,
            actor=actor,
            action="gate.passed" if passed else "gate.failed",
            subject_kind="model_version",
            subject_id=f"{model}/{version}",
            detail=evidence,
        )
    )

"""The automated half of the rollout state machine: what the control loop does at each pass.

:class:`Engine` moves a rollout that waits for nothing but time or evidence: approvals complete
→ staging (smoke check, then the replay of the stable version's request log when the policy
has one, then the shadow stage when it has one) → first canary step → a look every interval →
next step → production; a failing replay, shadow or look rolls back (or pauses) with a
diagnosis and an alert series. A replay or shadow that fails has moved no user: the candidate
never answered one. The shadow stage keeps the rollout in staging with ``step_index``
:data:`SHADOW_STEP` and ``last_look_at`` at the stage's start, while the split names the
candidate as the stable version's shadow; each pass reads the shadow log until it holds the
rows to judge. Its seams — the smoke check, the replay, the shadow judge, the analyzer and the
diagnosis — are filled by
:func:`shipyard.deploy.loop.engine_for` with the real registry, request log, serving windows
and diagnoser.

Slow work runs outside the transaction; the decision commits only if the rollout is still in
the state, step and look that the slow work saw (row lock, re-read), so two daemons — or a
daemon restarted after a SIGKILL — never apply a decision twice.

**Revert first, diagnose after.** A failing look takes the canary's traffic away in its own
transaction, which also opens the diagnosis (a cheap row marked pending); the slow part of the
diagnosis (replaying the stable model, comparing profiles) runs only after that commit. A
daemon that dies in between leaves the traffic reverted and the diagnosis pending; every pass
finishes pending diagnoses first (:meth:`Engine.finish_diagnoses`).

**A failing look names its evidence's traces.** The ``traces`` seam gives the W3C trace ids of
the canary's failed and slowest requests over the look's interval; they go into the verdict row
and the rollback's audit event (``trace_ids``), so ``shipyard trace TRACE_ID`` follows a bad
request to the rollback it caused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.checks import Check
from shipyard.clock import Clock
from shipyard.deploy.policy import REPLAY_STEP, SHADOW_STEP, Policy, policy_from_dict
from shipyard.deploy.replay import ReplayOutcome, ReplayUnavailable
from shipyard.deploy.rollout import (
    ROLLOUT_FAILED_METRIC,
    audit,
    enter_shadow,
    enter_step,
    locked,
    move_to,
    next_step,
    stage_evidence,
    start_approved,
    to_production,
    traffic_back,
)
from shipyard.deploy.shadow import ShadowUnavailable
from shipyard.errors import NotFound
from shipyard.observability.logs import bound
from shipyard.stats.canary import MetricVerdict, combine
from shipyard.statuses import ROLLOUT_MOVING, CheckStatus, RolloutState
from shipyard.store import Store
from shipyard.store.deploy import RolloutRecord, RolloutVerdict
from shipyard.store.tables import MetricPoint

log = logging.getLogger(__name__)

# -- seams ------------------------------------------------------------------------------------


SMOKE = "staging.smoke"
SmokeCheck = Callable[[str, int, Policy], Check]
"""(model, version, policy) → did the version load, answer a sample and meet the latency?
(status ``ok``, or not: the check's evidence goes to the audit log)"""


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


Replayer = Callable[[str, int, int, Policy, float], ReplayOutcome]
"""(model, candidate version, stable version, policy, now) → the replay's verdicts and evidence
(:class:`shipyard.deploy.replay.LogReplay`); raises :class:`ReplayUnavailable` when the stable
version's request log is too thin to replay."""

ShadowJudge = Callable[[str, int, int, Policy, float, float], ReplayOutcome | None]
"""(model, candidate, stable, policy, stage start, now) → the shadow's verdicts and evidence,
or None while its log is too thin and the stage may still wait
(:class:`shipyard.deploy.shadow.ShadowLog`); raises :class:`ShadowUnavailable` when it may not."""

TraceFinder = Callable[[str, int, float, float], list[str]]
"""(model, canary version, start, end) → trace ids of its failed, then slowest, requests."""


class FailureDiagnosis(Protocol):
    """Explains a failed canary, in two parts so that the rollback never waits for it."""

    def open(
        self,
        s: Session,
        r: RolloutRecord,
        verdicts: Sequence[MetricVerdict],
        now: float,
        /,
        replay: dict[str, Any] | None = None,
    ) -> int:
        """Record, inside the rollback's transaction, that a diagnosis is due; cheap. A failed
        replay's ``replay`` evidence is the whole diagnosis (nothing was served to look at)."""
        ...

    def complete(self, diagnosis_id: int, /) -> dict[str, Any] | None:
        """The slow analysis, after the rollback committed; None if already complete."""
        ...

    def pending(self) -> list[int]:
        """Diagnoses opened and never completed (a daemon died in between)."""
        ...


# -- the control loop -------------------------------------------------------------------------


@dataclass
class Advance:
    """What one pass of the control loop did to one rollout."""

    rollout_id: str
    action: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Engine:
    """Advances rollouts; the smoke check, the analyzer and the diagnosis are seams."""

    store: Store
    clock: Clock
    smoke: SmokeCheck
    analyzer: Analyzer
    diagnosis: FailureDiagnosis | None = None
    actor: str = "shipyard-daemon"
    traces: TraceFinder | None = None
    replay: Replayer | None = None
    shadow: ShadowJudge | None = None

    def advance_all(self) -> list[Advance]:
        self.finish_diagnoses()
        with self.store.session() as s:
            ids = list(
                s.scalars(
                    select(RolloutRecord.id)
                    .where(RolloutRecord.state.in_(ROLLOUT_MOVING))
                    .order_by(RolloutRecord.created_at)
                )
            )
        done: list[Advance] = []
        for rid in ids:
            step = self.advance(rid)
            if step is not None:
                done.append(step)
        return done

    def finish_diagnoses(self) -> list[dict[str, Any]]:
        """Complete the diagnoses a dead daemon opened (its rollback had already committed)."""
        if self.diagnosis is None:
            return []
        done = []
        for diagnosis_id in self.diagnosis.pending():
            summary = self.diagnosis.complete(diagnosis_id)
            if summary is not None:
                done.append(summary)
        return done

    def snapshot(self, rollout_id: str) -> RolloutRecord:
        """The rollout as stored now, detached: what a decision is based on."""
        with self.store.session() as s:
            r = s.get(RolloutRecord, rollout_id)
            if r is None:
                raise NotFound("rollout", rollout_id)
            s.expunge(r)
            return r

    def advance(self, rollout_id: str) -> Advance | None:
        """Move one rollout on if it can; None when there is nothing to do yet. Every line
        logged meanwhile (the analysis, the diagnosis) names the rollout."""
        with bound(rollout_id=rollout_id):
            return self.decide(self.snapshot(rollout_id))

    def decide(self, seen: RolloutRecord) -> Advance | None:
        """Decide from ``seen`` and commit only if the rollout has not moved since."""
        policy = policy_from_dict(seen.policy)
        if seen.state == RolloutState.WAITING:
            return self._waiting(seen, policy)
        if seen.state == RolloutState.STAGING and seen.step_index == SHADOW_STEP:
            return self._shadowing(seen, policy)
        if seen.state == RolloutState.STAGING:
            return self._staging(seen, policy)
        if seen.state == RolloutState.CANARY:
            return self._canary(seen, policy)
        return None

    def _unchanged(self, s: Session, seen: RolloutRecord) -> RolloutRecord | None:
        r = locked(s, seen.id)
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
            if r is None or not start_approved(s, r, policy):
                return None
            move_to(s, r, RolloutState.STAGING, now, self.actor, "approvals complete")
            return Advance(r.id, RolloutState.STAGING)

    def _staging(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        evidence: dict[str, Any] = {"smoke": "not configured"}
        passed = True
        if "staging" in policy.environments and policy.staging.smoke:
            try:
                result = self.smoke(seen.model, seen.version, policy)
            except Exception as exc:  # a smoke check that crashes is a failed smoke check
                why = f"{type(exc).__name__}: {exc}"
                result = Check.of_model(
                    SMOKE, seen.model, seen.version, CheckStatus.ALERT, why, {"error": why}
                )
            passed, evidence = result.status == CheckStatus.OK, dict(result.evidence)
        replayed: ReplayOutcome | str | None = None
        if passed and policy.replays() and seen.stable_version is not None:
            replayed = self._replay(seen, policy)
        now = self.clock.time()
        with self.store.session(immediate=True) as s:
            r = self._unchanged(s, seen)
            if r is None:
                return None
            if not passed:
                move_to(
                    s,
                    r,
                    RolloutState.FAILED,
                    now,
                    self.actor,
                    "staging smoke check failed",
                    smoke=evidence,
                )
                return Advance(r.id, RolloutState.FAILED, evidence)
            audit(
                s,
                r,
                now,
                self.actor,
                "rollout.staging.passed",
                "smoke check passed",
                smoke=evidence,
            )
            if isinstance(replayed, str):
                why = f"replay: {replayed}"
                move_to(s, r, RolloutState.FAILED, now, self.actor, why, replay=replayed)
                return Advance(r.id, RolloutState.FAILED, {"replay": replayed})
            if replayed is not None:
                failed = self._judge_replay(s, r, policy, replayed, now)
                if failed is not None:
                    return failed
            if policy.shadows() and r.stable_version is not None:
                enter_shadow(s, r, policy, now)
                shadow = policy.stages()[int(policy.replays())]
                move_to(
                    s,
                    r,
                    RolloutState.STAGING,
                    now,
                    self.actor,
                    ("replay passed" if replayed is not None else "staging passed")
                    + f"; shadow: {shadow.description}",
                    stage=shadow.to_json(),
                )
                return Advance(r.id, "shadow", {"stage": shadow.to_json()})
            if policy.uses_canary() and r.stable_version is not None:
                enter_step(s, r, policy, 0, now)
                move_to(
                    s,
                    r,
                    RolloutState.CANARY,
                    now,
                    self.actor,
                    ("replay passed" if replayed is not None else "staging passed")
                    + "; first canary step",
                    step=0,
                    weight_pct=policy.canary.steps[0].weight_pct,
                    **stage_evidence(r, policy, 0),
                )
                return Advance(r.id, RolloutState.CANARY, {"step": 0})
            why = (
                "staging passed; no stable version to compare a canary with"
                if r.stable_version is None
                else "staging passed; the policy has no canary"
            )
            to_production(s, r, now, self.actor, why)
            return Advance(r.id, RolloutState.PRODUCTION)

    def _replay(self, seen: RolloutRecord, policy: Policy) -> ReplayOutcome | str:
        """The replay's outcome, or why there is none (the rollout then ends ``failed``)."""
        assert seen.stable_version is not None
        if self.replay is None:
            return "this control loop cannot replay (no replayer)"
        try:
            return self.replay(
                seen.model, seen.version, seen.stable_version, policy, self.clock.time()
            )
        except ReplayUnavailable as exc:
            return str(exc)
        except Exception as exc:  # a replay that crashes stops the release: nothing was served
            log.exception("replay of %s/%s failed", seen.model, seen.version)
            return f"the replay could not run: {type(exc).__name__}: {exc}"

    def _judge_replay(
        self, s: Session, r: RolloutRecord, policy: Policy, replayed: ReplayOutcome, now: float
    ) -> Advance | None:
        return self._judge_stage(s, r, policy, replayed, now, "replay")

    def _judge_stage(
        self,
        s: Session,
        r: RolloutRecord,
        policy: Policy,
        replayed: ReplayOutcome,
        now: float,
        kind: str,
    ) -> Advance | None:
        """The replay's or shadow's verdict row and audit event; a failing one rolls back (no
        user had been routed to the candidate) with its evidence as the diagnosis. None when it
        passed."""
        verdicts = replayed.verdicts
        outcome = "fail" if combine(verdicts) == "fail" else "pass"
        s.add(
            RolloutVerdict(
                rollout_id=r.id,
                step_index=REPLAY_STEP if kind == "replay" else SHADOW_STEP,
                look=1,
                outcome=outcome,
                window_start=float(replayed.evidence.get("since", now)),
                window_end=now,
                metrics=[v.to_dict() for v in verdicts],
                ts=now,
            )
        )
        stage = next(st for st in policy.stages() if st.kind == kind).to_json()
        if outcome == "fail":
            failed = [v.to_dict() for v in verdicts if v.outcome == "fail"]
            return self._fail(
                s, r, policy, verdicts, now, failed, replay={**replayed.evidence, "stage": stage}
            )
        what = "logged" if kind == "replay" else "shadowed"
        audit(
            s,
            r,
            now,
            self.actor,
            f"rollout.{kind}.passed",
            f"the candidate answered {replayed.evidence.get('rows')} {what} rows of version "
            f"{r.stable_version} within the policy",
            stage=stage,
            metrics=[v.to_dict() for v in verdicts],
            **{kind: replayed.evidence},
        )
        return None

    def _shadowing(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        """One pass of the shadow stage: wait for its rows, then judge them once."""
        assert seen.stable_version is not None and seen.last_look_at is not None
        now = self.clock.time()
        outcome: ReplayOutcome | str | None
        if self.shadow is None:
            outcome = "this control loop cannot judge a shadow (no shadow judge)"
        else:
            try:
                outcome = self.shadow(
                    seen.model, seen.version, seen.stable_version, policy, seen.last_look_at, now
                )
            except ShadowUnavailable as exc:
                outcome = str(exc)
            except Exception as exc:  # a judge that crashes stops the release: no user was served
                log.exception("shadow of %s/%s failed", seen.model, seen.version)
                outcome = f"the shadow could not be judged: {type(exc).__name__}: {exc}"
        if outcome is None:
            return None
        with self.store.session(immediate=True) as s:
            r = self._unchanged(s, seen)
            if r is None:
                return None
            if isinstance(outcome, str):
                traffic_back(s, r, now)  # the shadow stops; the stable version served everyone
                why = f"shadow: {outcome}"
                move_to(s, r, RolloutState.FAILED, now, self.actor, why, shadow=outcome)
                return Advance(r.id, RolloutState.FAILED, {"shadow": outcome})
            failed = self._judge_stage(s, r, policy, outcome, now, "shadow")
            if failed is not None:
                decided = failed
            else:
                enter_step(s, r, policy, 0, now)
                move_to(
                    s,
                    r,
                    RolloutState.CANARY,
                    now,
                    self.actor,
                    "shadow passed; first canary step",
                    step=0,
                    weight_pct=policy.canary.steps[0].weight_pct,
                    **stage_evidence(r, policy, 0),
                )
                return Advance(r.id, RolloutState.CANARY, {"step": 0})
        diagnosis_id = decided.detail.get("diagnosis_id")
        if diagnosis_id is not None and self.diagnosis is not None:
            decided.detail["diagnosis"] = self.diagnosis.complete(diagnosis_id)
        return decided

    def _canary(self, seen: RolloutRecord, policy: Policy) -> Advance | None:
        now = self.clock.time()
        interval = policy.canary.interval_s
        started = seen.step_started_at or seen.updated_at
        if now - (seen.last_look_at or started) < interval:
            return None
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
        trace_ids: list[str] = []
        if outcome == "fail" and self.traces is not None:
            trace_ids = self.traces(seen.model, seen.version, started, now)
        decided = self._judge(seen, policy, verdicts, outcome, look, started, now, trace_ids)
        diagnosis_id = decided.detail.get("diagnosis_id") if decided is not None else None
        if decided is not None and diagnosis_id is not None and self.diagnosis is not None:
            # the traffic is back on the stable version (committed): now the slow part
            decided.detail["diagnosis"] = self.diagnosis.complete(diagnosis_id)
        return decided

    def _judge(
        self,
        seen: RolloutRecord,
        policy: Policy,
        verdicts: list[MetricVerdict],
        outcome: str,
        look: int,
        started: float,
        now: float,
        trace_ids: list[str] | None = None,
    ) -> Advance | None:
        """One transaction: the look's verdict and what it calls for (a rollback included)."""
        step = policy.canary.steps[seen.step_index]
        elapsed = now - started
        interval = policy.canary.interval_s
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
                    trace_ids=trace_ids or None,
                )
            )
            failed = [v.to_dict() for v in verdicts if v.outcome == "fail"]
            if outcome == "fail":
                return self._fail(s, r, policy, verdicts, now, failed, trace_ids=trace_ids)
            if outcome == "extend":
                action = policy.analysis.on_no_data
                short = [v.metric for v in verdicts if v.outcome == "extend"]
                if action == "fail":
                    return self._fail(s, r, policy, verdicts, now, [], no_data=short)
                if action == "pause" or elapsed >= step.max_duration(interval):
                    r.paused_from = RolloutState.CANARY
                    move_to(
                        s,
                        r,
                        RolloutState.PAUSED,
                        now,
                        self.actor,
                        f"too little data for {short} after {elapsed:.0f}s",
                        no_data=short,
                    )
                    return Advance(r.id, RolloutState.PAUSED, {"no_data": short})
                audit(s, r, now, self.actor, "rollout.extend", f"too little data for {short}")
                return Advance(r.id, "extend", {"no_data": short})
            if elapsed >= step.min_duration_s:
                next_step(
                    s,
                    r,
                    policy,
                    now,
                    self.actor,
                    f"step {r.step_index + 1} passed {look} look(s) over {elapsed:.0f}s",
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
        trace_ids: list[str] | None = None,
        replay: dict[str, Any] | None = None,
    ) -> Advance:
        what = (
            str(replay.get("stage", {}).get("kind", "replay")) if replay is not None else "canary"
        )
        why = (
            f"{what} failed: " + ", ".join(f["metric"] for f in failed)
            if failed
            else f"no data for {no_data} and the policy fails on no data"
        )
        evidence: dict[str, Any] = {"failed_metrics": failed, "no_data": no_data or []}
        if trace_ids:
            evidence["trace_ids"] = list(trace_ids)
        if replay is not None:
            evidence[what] = replay
        if self.diagnosis is not None:
            evidence["diagnosis_id"] = self.diagnosis.open(s, r, verdicts, now, replay=replay)
        if "notify" in policy.on_failure or policy.rollback.notify:
            labels = {"model": r.model, "version": str(r.version), "rollout": r.id}
            s.add(MetricPoint.of(ROLLOUT_FAILED_METRIC, labels, now, 1.0))
        if "pause" in policy.on_failure:
            if r.step_index == SHADOW_STEP:
                traffic_back(s, r, now)  # a paused shadow stops shadowing
            r.paused_from = RolloutState.CANARY if replay is None else RolloutState.STAGING
            move_to(s, r, RolloutState.PAUSED, now, self.actor, why, **evidence)
            return Advance(r.id, RolloutState.PAUSED, evidence)
        if r.step_started_at is not None or r.step_index == SHADOW_STEP:
            traffic_back(s, r, now)  # a failed replay had moved no traffic; a shadow stops
        move_to(s, r, RolloutState.ROLLED_BACK, now, self.actor, why, **evidence)
        log.warning(
            "rolled back: %s",
            why,
            extra={
                "rollout_id": r.id,
                "model": r.model,
                "version": r.version,
                "trace_ids": list(trace_ids or []),
            },
        )
        return Advance(r.id, RolloutState.ROLLED_BACK, evidence)

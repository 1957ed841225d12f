"""Drills: proof that an alert really reaches someone and a rollback really moves traffic.

Configuration says what *should* happen; a drill makes it happen on the live workspace, scoped
so that no user is harmed, and records when it ran, how long each signal took and what it
cleaned up (:class:`~shipyard.store.readiness.ReadinessDrill`):

* ``drift`` — a synthetic batch, shifted beyond the range of a data pipeline's reference, is
  judged by the pipeline's own feature-drift monitor (the same kernel a step's ``observe``
  runs); its metric points, labelled ``readiness_drill=<id>``, must raise a drift alert and the
  alert must be delivered to its receiver.
* ``outage`` — the serving monitor's probe of a model server that is stopped (an address
  nothing listens on) writes ``shipyard_serving_probe_up`` 0, labelled likewise; the
  ``ModelOutage`` rule must fire and page its receiver. A rule whose ``for`` is longer than the
  drill's timeout fails the drill at once, saying so.
* ``rollback`` — a rehearsal on a scratch alias: the alias points at the production version,
  is moved to the version a rollback would choose, and that version must load and answer a
  sample built from its own signature within the policy's bound (its canary interval: how
  soon a failing look rolls back). The model's real aliases and split are never touched.
* ``quota`` — a synthetic lease (pipeline ``readiness-drill``, a stranger to the pool, so it
  is capped like one) pushes a pool to the threshold of its quota alert; the pool's usage is
  sampled as the daemon samples it and the alert must fire and be delivered.

Each drill runs the real mechanisms — a rule evaluation cycle
(:func:`shipyard.alerting.evaluate`) and a delivery pass (:func:`shipyard.alerting.deliver_due`)
called directly, within a deadline — rather than waiting for the daemon's next tick (a daemon
that runs meanwhile does the same work; notifications are claimed, never sent twice). Then it
cleans up: the synthetic points are deleted and the rules evaluated again so the drill's alert
resolves (its receiver hears that too), the lease is released, the scratch alias removed; and
it checks that nothing of it is left firing or held. A drill whose alert does not arrive fails
with the stage it stopped at and why.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, select

from shipyard.alerting.config import AlertingConfig, load_config
from shipyard.alerting.rules import Rule
from shipyard.deploy.policy import load_policy
from shipyard.deploy.production import production_version
from shipyard.deploy.rollback import last_healthy_version
from shipyard.deploy.staging import sample_rows
from shipyard.errors import NotFound, QuotaError, ShipyardError
from shipyard.monitoring.data import feature_drift
from shipyard.monitoring.observation import latest_reference
from shipyard.monitoring.serving import ServingMonitor
from shipyard.monitoring.settings import stored_settings
from shipyard.quota.admission import LeaseManager, LeaseRequest, held_total
from shipyard.quota.pools import Pool, list_pools, load_pool
from shipyard.quota.usage import record_usage
from shipyard.readiness.alert_path import POLL_S, AlertPath, DrillFailed, DrillRun
from shipyard.readiness.verdicts import (
    DEFAULT_DRILL_TIMEOUT_S,
    DRIFT_METRICS,
    DRILL_KINDS,
    QUOTA_METRICS,
)
from shipyard.registry import Registry
from shipyard.serving.live import live_states
from shipyard.stats import DatasetProfile
from shipyard.store.alerting import AlertRecord
from shipyard.store.monitoring import MonitorProfile
from shipyard.store.quota import QuotaLease
from shipyard.store.readiness import ReadinessDrill
from shipyard.store.tables import MetricPoint, PipelineRecord
from shipyard.workspace import Workspace

DRILL_LABEL = "readiness_drill"
"""The label every synthetic point (and so every drill alert) carries: ``readiness_drill=<id>``."""
DRILL_PIPELINE = "readiness-drill"
"""The pipeline a quota drill's lease is taken for."""
SCRATCH_ALIAS = "readiness-drill"
DEFAULT_TIMEOUT_S = DEFAULT_DRILL_TIMEOUT_S
SYNTHETIC_ROWS = 200
KINDS = DRILL_KINDS
PROBE_METRIC = "shipyard_serving_probe_up"


@dataclass(frozen=True)
class DrillResult:
    id: str
    kind: str
    subject: str
    passed: bool
    reason: str
    signals: dict[str, float]
    """Seconds from the drill's start to each signal it saw, in order."""
    cleanup: dict[str, Any]
    detail: dict[str, Any]
    started_at: float
    ended_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "passed": self.passed,
            "reason": self.reason,
            "signals": self.signals,
            "cleanup": self.cleanup,
            "detail": self.detail,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class Drills:
    """Runs drills on a workspace with its alerting configuration, each within ``timeout_s``."""

    def __init__(
        self,
        ws: Workspace,
        config: AlertingConfig | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.ws = ws
        self.store = ws.store
        self.clock = ws.clock
        self.config = config or load_config(ws.settings.home)
        self.timeout_s = timeout_s
        self.registry = Registry.of(ws)
        self.path = AlertPath(self.store, self.config, self.clock, timeout_s)
        self._last: DrillResult | None = None

    def _result(self) -> DrillResult:
        assert self._last is not None
        return self._last

    # -- what every drill does: record itself, write and delete its synthetic points ------------
    @contextmanager
    def _recorded(self, kind: str, subject: str) -> Iterator[DrillRun]:
        """Run a drill's body and record its outcome, whatever it is."""
        run = DrillRun(kind, subject, self.clock.time(), self.clock.monotonic())
        reason, passed = "interrupted", False
        try:
            yield run
            passed, reason = True, ""
        except ShipyardError as exc:  # DrillFailed, or a wing's error met on the way
            reason = str(exc)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            ended = self.clock.time()
            with self.store.session() as s:
                s.add(
                    ReadinessDrill(
                        id=run.id,
                        kind=kind,
                        subject=subject,
                        passed=int(passed),
                        reason=reason,
                        signals=run.signals,
                        cleanup=run.cleanup,
                        detail=run.detail,
                        actor=self.ws.actor,
                        started_at=run.started_at,
                        ended_at=ended,
                    )
                )
            self._last = DrillResult(
                run.id, kind, subject, passed, reason, dict(run.signals), dict(run.cleanup),
                dict(run.detail), run.started_at, ended,
            )  # fmt: skip

    def _rules(self, metrics: tuple[str, ...], pool: str | None = None) -> list[Rule]:
        rules = [r for r in self.config.rules if r.enabled and r.metric in metrics]
        if pool is not None:  # a rule that selects pools must select this one
            rules = [
                r
                for r in rules
                if all(m.matches({"pool": pool}) for m in r.matchers if m.name == "pool")
            ]
        return rules

    def _delete_points(self, run: DrillRun, names: tuple[str, ...]) -> None:
        with self.store.session() as s:
            result = s.execute(
                delete(MetricPoint).where(
                    MetricPoint.name.in_(names),
                    MetricPoint.labels_key.like(f"%{DRILL_LABEL}={run.id}%"),
                )
            )
            run.cleanup["points_deleted"] = int(result.rowcount)  # type: ignore[attr-defined]

    def _write_points(
        self, run: DrillRun, points: Sequence[tuple[str, Mapping[str, Any], float]]
    ) -> None:
        now = self.clock.time()
        with self.store.session() as s:
            for name, labels, value in points:
                s.add(MetricPoint.of(name, {**labels, DRILL_LABEL: run.id}, now, value))

    def _labelled(self, run: DrillRun) -> Callable[[AlertRecord], bool]:
        return lambda a: (a.labels or {}).get(DRILL_LABEL) == run.id

    # -- drift -----------------------------------------------------------------------------------
    def drift(self, pipeline: str | None = None) -> DrillResult:
        """A synthetic drifted batch raises its alert and the alert reaches its receiver."""
        name, dataset, reference_row = self._drift_subject(pipeline)
        with self._recorded("drift", name) as run:
            rules = self._rules(DRIFT_METRICS)
            if not rules:
                raise DrillFailed(f"no enabled alert rule reads {' or '.join(DRIFT_METRICS)}")
            reference = DatasetProfile.from_json(
                json.loads(self.ws.artifacts.get_bytes(reference_row.profile_digest))
            )
            batch = drifted_batch(reference, reference_row.label)
            current = DatasetProfile.from_frame(batch, reference=reference)
            with self.store.session(readonly=True) as s:
                kind = s.get(PipelineRecord, name)
                spec = stored_settings(s, name, kind.kind if kind else "data").get("feature_drift")
            check = feature_drift(spec, name, dataset, reference, current, reference_row.label)
            run.mark("batch judged", self.clock)
            run.detail.update(dataset=dataset, verdict=check.summary, rows=len(batch))
            if check.status == "ok":
                raise DrillFailed(f"the synthetic batch was not judged drifted: {check.summary}")
            self._write_points(run, list(check.metrics))
            try:
                self.path.await_alert(run, self._labelled(run), rules)
            finally:
                self._delete_points(run, DRIFT_METRICS)
                self.path.resolve(run, self._labelled(run))
            self.path.left_behind(run)
        return self._result()

    def _drift_subject(self, pipeline: str | None) -> tuple[str, str, MonitorProfile]:
        with self.store.session(readonly=True) as s:
            rows = s.scalars(
                select(MonitorProfile)
                .where(MonitorProfile.role == "reference")
                .order_by(MonitorProfile.ts.desc())
            ).all()
            for row in rows:
                if pipeline is None or row.pipeline == pipeline:
                    return (
                        row.pipeline,
                        row.dataset,
                        latest_reference(s, row.pipeline, row.dataset) or row,
                    )
        raise NotFound(
            "data set reference" + (f" of {pipeline}" if pipeline else ""),
            pipeline or "-",
            "a data pipeline must publish one with observe(..., role='reference') first",
        )

    # -- outage ----------------------------------------------------------------------------------
    def outage(self, model: str | None = None) -> DrillResult:
        """A probe of a stopped model server pages ``ModelOutage``."""
        name = model or self._a_model()
        with self._recorded("outage", name) as run:
            rules = self._rules((PROBE_METRIC,))
            if not rules:
                raise DrillFailed(f"no enabled alert rule reads {PROBE_METRIC} (ModelOutage off)")
            slow = [r for r in rules if r.for_s >= self.timeout_s]
            if len(slow) == len(rules):
                raise DrillFailed(
                    f"{slow[0].name} fires only after for={slow[0].for_s:g} s, longer than the "
                    f"drill's timeout {self.timeout_s:g} s: run with --timeout "
                    f"{slow[0].for_s + 30:g}"
                )
            url = stopped_server()
            monitor = ServingMonitor(self.store, self.registry, self.clock)
            check = monitor.outage(name, url, expect_traffic=False)
            run.mark("probe failed" if check.status != "ok" else "probe answered", self.clock)
            run.detail.update(url=url, probe=check.summary)
            up = [(n, labels, v) for n, labels, v in check.metrics if n == PROBE_METRIC]
            if check.status == "ok" or not up or up[0][2] != 0.0:
                raise DrillFailed(f"the probe of a stopped server did not fail: {check.summary}")
            self._write_points(run, up)
            try:
                self.path.await_alert(run, self._labelled(run), rules)
            finally:
                self._delete_points(run, (PROBE_METRIC,))
                self.path.resolve(run, self._labelled(run))
            self.path.left_behind(run)
        return self._result()

    def _a_model(self) -> str:
        with self.store.session(readonly=True) as s:
            live = sorted(live_states(s))
        if live:
            return live[0]
        names = [m["name"] for m in self.registry.models()]
        if not names:
            raise NotFound("model", "-", "register one first: `shipyard models register`")
        return str(names[0])

    # -- rollback --------------------------------------------------------------------------------
    def rollback(self, model: str | None = None) -> DrillResult:
        """A rollback rehearsal on a scratch alias moves traffic within the policy's bound."""
        name = model or self._a_model()
        with self._recorded("rollback", name) as run:
            before = self.registry.aliases(name)
            with self.store.session(readonly=True) as s:
                state = live_states(s, name).get(name)
                current = production_version(s, name) or (state.sole_version if state else None)
                target = last_healthy_version(s, name, current)
            versions = [v.version for v in self.registry.versions(name)]
            if current is None:
                raise DrillFailed(f"{name} has no version in production to roll back from")
            if target is None:
                earlier = [v for v in versions if v < current]
                if not earlier:
                    raise DrillFailed(
                        f"{name} has no version to roll back to: none before v{current}, and "
                        "none other that was healthy in production"
                    )
                target = earlier[-1]
            bound_s = load_policy(self.store, name).canary.interval_s
            alias = f"{SCRATCH_ALIAS}-{run.id}"
            run.detail.update(alias=alias, current=current, target=target, bound_s=bound_s)
            self.registry.set_alias(name, alias, current, "readiness drill: scratch alias")
            try:
                began = self.clock.monotonic()
                self.registry.set_alias(
                    name, alias, target, f"readiness drill: rehearsed rollback to v{target}"
                )
                run.mark("alias moved", self.clock)
                info, predictor = self.registry.load(name, alias=alias)
                if info.version != target:
                    raise DrillFailed(f"the scratch alias serves v{info.version}, not v{target}")
                answer = predictor.predict(sample_rows(info, 1))
                run.mark(f"answered by v{target}", self.clock)
                took = self.clock.monotonic() - began
                run.detail.update(took_s=round(took, 3), answer=np.asarray(answer).tolist()[:1])
            except ShipyardError as exc:
                raise DrillFailed(f"v{target} could not take the traffic: {exc}") from None
            finally:
                self.registry.set_alias(name, alias, None, "readiness drill: cleanup")
                after = self.registry.aliases(name)
                run.cleanup["scratch_alias_removed"] = alias not in after
                run.cleanup["real_aliases_untouched"] = after == before
                with self.store.session(readonly=True) as s:
                    still = live_states(s, name).get(name)
                run.cleanup["live_unchanged"] = (still.to_json() if still else None) == (
                    state.to_json() if state else None
                )
            if took > bound_s:
                raise DrillFailed(
                    f"v{target} answered after {took:.2f} s, beyond the policy's bound "
                    f"({bound_s:g} s, its canary interval)"
                )
            if not all(run.cleanup.values()):
                raise DrillFailed(f"cleanup left something behind: {run.cleanup}")
        return self._result()

    # -- quota -----------------------------------------------------------------------------------
    def quota(self, pool: str | None = None) -> DrillResult:
        """A synthetic lease pushing a pool toward its cap raises the exhaustion alert."""
        target_pool = self._a_pool(pool)
        with self._recorded("quota", target_pool.name) as run:
            rules = [
                r for r in self._rules(QUOTA_METRICS, target_pool.name) if r.kind == "threshold"
            ]
            rules = [r for r in rules if r.for_s < self.timeout_s]
            if not rules:
                raise DrillFailed(
                    f"no threshold rule on {' or '.join(QUOTA_METRICS)} for pool "
                    f"{target_pool.name} fires within {self.timeout_s:g} s"
                )
            resource, amount, chosen = self._lease_size(target_pool, rules)
            run.detail.update(resource=resource, amount=amount, rules=[r.name for r in chosen])
            leases = LeaseManager(
                self.store, clock=self.clock, lease_ttl_s=self.ws.settings.quota.lease_ttl_s
            )
            request = LeaseRequest(
                DRILL_PIPELINE, {resource: amount}, pool=target_pool.name, step=f"drill-{run.id}"
            )
            try:
                grant = leases.acquire(request, timeout_s=min(5.0, self.timeout_s))
            except QuotaError as exc:
                leases.close()
                raise DrillFailed(f"the drill's lease was not granted: {exc}") from None
            run.mark("lease granted", self.clock)
            pool_name, names = target_pool.name, {r.name for r in chosen}

            def mine(a: AlertRecord) -> bool:
                """The pool's alerts of the chosen rules that the drill's lease raised."""
                labels = a.labels or {}
                return (
                    labels.get("pool") == pool_name
                    and labels.get("alertname") in names
                    and a.active_at >= run.started_at
                )

            try:
                record_usage(self.store, self.clock)
                run.mark("usage sampled", self.clock)
                heartbeat = _Heartbeat(leases, grant, self.clock)
                self.path.await_alert(run, heartbeat.wrap(mine), chosen)
            finally:
                leases.release(grant, "readiness drill: done")
                with self.store.session(readonly=True) as s:
                    held = s.scalars(
                        select(QuotaLease.id).where(
                            QuotaLease.pipeline == DRILL_PIPELINE,
                            QuotaLease.status.in_(("held", "waiting")),
                        )
                    ).all()
                run.cleanup["leases_left_held"] = len(held)
                leases.close()
                self.clock.sleep(POLL_S)  # the pool's next sample, one tick after the last
                record_usage(self.store, self.clock)
                self.path.resolve(run, mine)
            self.path.left_behind(run)
            if held:
                raise DrillFailed(f"{len(held)} drill lease(s) still held")
        return self._result()

    def _a_pool(self, name: str | None) -> Pool:
        pools = list_pools(self.store)
        if name is not None:
            for p in pools:
                if p.name == name:
                    return p
            raise NotFound("pool", name, candidates=[p.name for p in pools])
        for rule in self.config.rules:
            if rule.enabled and rule.metric in QUOTA_METRICS:
                for m in rule.matchers:
                    if m.name == "pool" and m.is_equal and not m.is_regex:
                        found = [p for p in pools if p.name == m.value]
                        if found:
                            return found[0]
        shared = [p for p in pools if p.mode == "shared"]
        if not shared:
            raise NotFound("shared quota pool", "-", "apply one with `shipyard quota apply`")
        return shared[0]

    def _lease_size(self, pool: Pool, rules: list[Rule]) -> tuple[str, float, list[Rule]]:
        """The smallest lease that crosses a rule's threshold and that the pool would grant a
        stranger; :class:`DrillFailed` saying what is missing when none would."""
        with self.store.session(readonly=True) as s:
            held = held_total(s, load_pool(s, pool.name))
        cap = pool.member(DRILL_PIPELINE).cap
        options: list[tuple[float, str, Rule]] = []
        refused = []
        for rule in rules:
            wanted = {m.value for m in rule.matchers if m.name == "resource" and m.is_equal}
            for resource, capacity in pool.capacity.items():
                if (wanted and resource not in wanted) or capacity <= 0:
                    continue
                reserved = held.get(resource, 0.0)
                if rule.metric == "shipyard_quota_used_fraction":
                    needed = rule.threshold * capacity
                elif rule.metric == "shipyard_quota_pool_reserved":
                    needed = rule.threshold
                else:
                    continue  # a time to exhaustion needs a trend, not one lease
                if rule.op not in (">", ">="):
                    continue
                amount = needed - reserved
                if rule.op == ">":
                    amount += max(capacity * 0.01, 1e-6)
                amount = max(amount, 0.0)
                if amount <= 0:
                    options.append((0.0, resource, rule))
                elif amount <= min(cap.get(resource, 0.0), capacity - reserved) + 1e-9:
                    options.append((amount, resource, rule))
                else:
                    refused.append(
                        f"{rule.name} needs {needed:g} {resource} reserved in {pool.name} "
                        f"({reserved:g} held); a drill lease may hold "
                        f"{min(cap.get(resource, 0.0), capacity - reserved):g} (the pool's cap "
                        f"for pipelines it does not name: {pool.default_cap_fraction:.0%}); name "
                        f"{DRILL_PIPELINE} as a member with a larger cap to drill it"
                    )
        positive = sorted(o for o in options if o[0] > 0)
        if not positive:
            if options:
                raise DrillFailed(f"pool {pool.name} is already past the threshold of its alert")
            raise DrillFailed("; ".join(refused) or "no rule threshold a lease can reach")
        amount, resource, _ = positive[0]
        chosen = [r for a, res, r in positive if res == resource and a <= amount + 1e-9]
        return resource, round(amount, 6), chosen

    # -- all of them -----------------------------------------------------------------------------
    def run(self, kinds: tuple[str, ...] = KINDS, subject: str | None = None) -> list[DrillResult]:
        """The drills named (all by default), one after another. ``subject``: the pipeline (drift)
        or model (outage, rollback) to drill; a drill with nothing to drill is skipped."""
        models = [m["name"] for m in self.registry.models()]
        out = []
        for kind in kinds:
            try:
                if kind == "drift":
                    out.append(self.drift(None if subject in models else subject))
                elif kind == "outage":
                    out.append(self.outage(subject if subject in models else None))
                elif kind == "rollback":
                    out.append(self.rollback(subject if subject in models else None))
                elif kind == "quota":
                    out.append(self.quota())
            except NotFound:
                continue
        return out


class _Heartbeat:
    """Keeps the drill's lease alive while the drill waits for its alert."""

    def __init__(self, leases: LeaseManager, grant: Any, clock: Any) -> None:
        self.leases, self.grant, self.clock = leases, grant, clock
        self.last = clock.monotonic()

    def wrap(self, select_: Callable[[AlertRecord], bool]) -> Callable[[AlertRecord], bool]:
        def check(alert: AlertRecord) -> bool:
            if self.clock.monotonic() - self.last > self.leases.lease_ttl_s / 3:
                self.grant = self.leases.heartbeat(self.grant)
                self.last = self.clock.monotonic()
            return select_(alert)

        return check


def drifted_batch(reference: DatasetProfile, label: str | None, rows: int = SYNTHETIC_ROWS) -> Any:
    """A batch far outside the reference: each numeric column shifted past its maximum by its
    whole range, each categorical column one unseen category; the label column as it was."""
    columns: dict[str, Any] = {}
    for name, col in reference.columns.items():
        if name == label:
            freq = col.frequencies or {}
            common = max(freq.items(), key=lambda kv: kv[1])[0] if freq else "0"
            columns[name] = [common] * rows
        elif col.kind == "numeric" and np.isfinite(col.maximum) and np.isfinite(col.minimum):
            span = max(col.maximum - col.minimum, abs(col.maximum), 1.0)
            columns[name] = np.linspace(col.maximum + span, col.maximum + 2 * span, rows)
        elif col.kind == "numeric":
            columns[name] = np.linspace(1e6, 2e6, rows)
        else:
            columns[name] = ["readiness-drill"] * rows
    return pd.DataFrame(columns)


def stopped_server() -> str:
    """The address of a model server that is stopped: a port just bound and closed again,
    so nothing answers there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}"


def last_drills(ws: Workspace) -> list[DrillResult]:
    """The latest drill of each kind and subject."""
    with ws.store.session(readonly=True) as s:
        rows = s.scalars(select(ReadinessDrill).order_by(ReadinessDrill.ended_at)).all()
        latest = {(r.kind, r.subject): r for r in rows}
        return [
            DrillResult(
                r.id,
                r.kind,
                r.subject,
                bool(r.passed),
                r.reason,
                dict(r.signals),
                dict(r.cleanup),
                dict(r.detail),
                r.started_at,
                r.ended_at,
            )
            for r in latest.values()
        ]

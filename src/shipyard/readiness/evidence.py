"""What the workspace knows, read once into typed facts that the readiness items judge.

Readiness is a face: it reads every wing (pipelines, monitoring, alerting, quota, registry,
deploy, serving) through their public functions where they have them and their tables where
they do not, and writes nothing. :func:`gather` takes one snapshot; each item of
:mod:`shipyard.readiness.items` is then a pure function of it, so a score is reproducible from
the facts it prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shipyard.alerting.config import AlertingConfig, load_config
from shipyard.alerting.rules import Rule
from shipyard.deploy.policy import Policy, parse_policy
from shipyard.errors import ShipyardError
from shipyard.monitoring.config import DATASET_MONITORS
from shipyard.monitoring.settings import stored_settings
from shipyard.pipelines.listing import list_pipelines
from shipyard.quota.plan import LiveServer, plan_from_store
from shipyard.quota.pools import Pool, list_pools
from shipyard.registry import Registry, VersionInfo
from shipyard.serving.instances import live_instances
from shipyard.serving.live import LiveState, live_states
from shipyard.store.alerting import AlertRecord, NotificationRecord
from shipyard.store.deploy import DeployPolicyRecord, GateResult, ProductionRecord, RolloutRecord
from shipyard.store.monitoring import MonitorProfile
from shipyard.store.quota import QuotaLease
from shipyard.store.readiness import ReadinessDrill
from shipyard.store.serving import ServingWindow
from shipyard.store.tables import Finding, Run, StepRun
from shipyard.workspace import Workspace


@dataclass(frozen=True)
class Seen:
    """One monitor's latest verdict on one subject."""

    status: str
    summary: str
    at: float
    judged: bool = True
    """The monitor reached a verdict on data (False: "not enough data", "no labels yet"…, which
    the monitors answer with no evidence)."""


@dataclass(frozen=True)
class DatasetFacts:
    """A data set a pipeline published, and the reference it is judged against."""

    name: str
    reference_pipeline: str
    reference_at: float | None
    """When the reference was published (None: there is none)."""
    schema_columns: int
    """Columns in the reference's inferred schema (0: no schema)."""


@dataclass(frozen=True)
class PipelineFacts:
    name: str
    kind: str
    file: str
    schedule: str | None
    runs: int
    last_status: str | None
    last_succeeded_at: float | None
    monitors: Mapping[str, bool]
    """Each monitor of the pipeline's settings: on or off."""
    findings: Mapping[str, Seen]
    """The latest verdict of each monitor (over the pipeline's data sets)."""
    judged_elsewhere: Mapping[str, tuple[str, Seen]]
    """Per data set monitor, the latest verdict on another pipeline's data judged against this
    pipeline's reference, and that pipeline's name."""
    datasets: tuple[DatasetFacts, ...]
    member_of: tuple[str, ...]
    """The pools that name the pipeline as a member (a share and a cap of its own)."""
    pools_used: tuple[str, ...]
    """The pools its runs took leases in."""
    measured_at: float | None
    """When a step of it last recorded its measured usage (CPU seconds, peak memory)."""
    declared: bool
    """Every step of its last run declared the resources it needs."""
    trained: tuple[tuple[str, int], ...] = ()
    """The model versions its runs registered (model, version)."""


@dataclass(frozen=True)
class GateFacts:
    version: int
    passed: bool
    at: float
    baseline: int | None
    """The serving version it was compared with (None: no comparison)."""


@dataclass(frozen=True)
class RolloutFacts:
    id: str
    version: int
    state: str
    created_by: str
    created_at: float
    automated: bool
    """Started by a training pipeline's run (the register → validate → deploy path)."""
    staged: bool
    """It got past staging (its smoke check passed)."""
    canaried: bool
    """It ran at least one canary step."""


@dataclass(frozen=True)
class ModelFacts:
    name: str
    versions: tuple[VersionInfo, ...]
    live: LiveState | None
    production_version: int | None
    production_since: float | None
    policy: Policy | None
    """The model's stored policy (None: none set, so the defaults apply)."""
    policy_set_at: float | None
    policy_set_by: str
    gates: tuple[GateFacts, ...]
    rollouts: tuple[RolloutFacts, ...]
    rollbacks: tuple[float, ...]
    """When production was rolled back."""
    findings: Mapping[str, Seen]
    """The latest verdict of each serving monitor (``serving.input_skew``…)."""
    windows: int
    last_window_at: float | None

    @property
    def serving(self) -> VersionInfo | None:
        """The version in production, else the newest."""
        chosen = self.production_version
        for v in self.versions:
            if v.version == chosen:
                return v
        return self.versions[-1] if self.versions else None


@dataclass(frozen=True)
class ReceiverFacts:
    name: str
    type: str
    describe: str
    delivered: int
    last_delivered_at: float | None
    failed: int
    last_error: str | None
    pending: int


@dataclass(frozen=True)
class AlertingFacts:
    config: AlertingConfig | None
    error: str | None
    """Why the alerting configuration could not be read (None: it was)."""
    receivers: Mapping[str, ReceiverFacts]
    firing: tuple[str, ...]
    """The rules with a firing alert now."""

    def rules_on(self, *metrics: str) -> list[Rule]:
        """The enabled rules that read one of ``metrics``."""
        if self.config is None:
            return []
        return [r for r in self.config.rules if r.enabled and r.metric in metrics]

    def rule(self, name: str) -> Rule | None:
        if self.config is None:
            return None
        return next((r for r in self.config.rules if r.enabled and r.name == name), None)


@dataclass(frozen=True)
class QuotaFacts:
    pools: tuple[Pool, ...]
    plan_fits: bool | None
    """Whether the week's schedules fit with experiment headroom (None: nothing scheduled)."""
    plan_notes: tuple[str, ...]
    headroom_fraction: float
    plan_problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrillFacts:
    kind: str
    subject: str
    passed: bool
    reason: str
    ended_at: float
    signals: Mapping[str, float]


@dataclass(frozen=True)
class Facts:
    """Everything the readiness items judge, read at ``now``."""

    now: float
    home: str
    pipelines: tuple[PipelineFacts, ...]
    models: tuple[ModelFacts, ...]
    alerting: AlertingFacts
    quota: QuotaFacts
    drills: tuple[DrillFacts, ...]
    request_log_sample_rate: float
    settings: Mapping[str, Any] = field(default_factory=dict)

    def last_drill(self, kind: str, subject: str | None = None) -> DrillFacts | None:
        """The newest drill of ``kind`` (of ``subject``, when given)."""
        found = [
            d for d in self.drills if d.kind == kind and (subject is None or d.subject == subject)
        ]
        return max(found, key=lambda d: d.ended_at) if found else None


# -- reading -----------------------------------------------------------------------------------


def _newest(s: Session, *where: Any) -> list[Finding]:
    """The newest finding of each (monitor, subject) that ``where`` selects: the ids are found
    first, so the (large) evidence of older findings is never read."""
    newest = select(func.max(Finding.id)).where(*where).group_by(Finding.monitor, Finding.subject)
    return list(s.scalars(select(Finding).where(Finding.id.in_(newest)).order_by(Finding.ts)))


def _latest_findings(s: Session, prefix: str, exact: str) -> dict[str, Seen]:
    """The latest verdict of each monitor on ``exact`` or on a subject under ``prefix``."""
    rows = _newest(s, (Finding.subject == exact) | Finding.subject.startswith(prefix))
    return {f.monitor: Seen(f.status, f.summary, f.ts, bool(f.evidence)) for f in rows}


def _reference_of(finding: Finding | None) -> str | None:
    """The pipeline whose reference a data set check compared with (its evidence says)."""
    reference = ((finding.evidence or {}) if finding is not None else {}).get("reference")
    return str(reference["pipeline"]) if isinstance(reference, dict) and reference else None


def _datasets(s: Session, pipeline: str, reference_pipeline: str | None) -> list[DatasetFacts]:
    names = s.scalars(
        select(MonitorProfile.dataset).where(MonitorProfile.pipeline == pipeline).distinct()
    ).all()
    out = []
    for name in sorted(names):
        judged = s.scalars(
            select(Finding)
            .where(Finding.subject == f"{pipeline}/{name}")
            .order_by(Finding.ts.desc(), Finding.id.desc())
            .limit(1)
        ).first()
        source = _reference_of(judged) or reference_pipeline or pipeline
        ref = s.scalars(
            select(MonitorProfile)
            .where(
                MonitorProfile.dataset == name,
                MonitorProfile.role == "reference",
                MonitorProfile.pipeline.in_({pipeline, source}),
            )
            .order_by(MonitorProfile.ts.desc(), MonitorProfile.id.desc())
            .limit(1)
        ).first()
        columns = len((ref.schema or {}).get("columns", {})) if ref is not None else 0
        out.append(
            DatasetFacts(
                name,
                ref.pipeline if ref is not None else source,
                ref.ts if ref is not None else None,
                columns,
            )
        )
    return out


def _judged_elsewhere(s: Session) -> dict[str, dict[str, tuple[str, Seen]]]:
    """Per pipeline, the latest verdict of each data set monitor that *another* pipeline's data
    got against this pipeline's reference (a data pipeline publishes the training set; the
    scoring pipeline's batches are judged against it), with that other pipeline's name."""
    out: dict[str, dict[str, tuple[str, Seen]]] = {}
    rows = reversed(_newest(s, Finding.monitor.in_(DATASET_MONITORS)))  # newest first
    for f in rows:
        source = _reference_of(f)
        judged = f.subject.split("/", 1)[0]
        if source is None or source == judged:
            continue
        seen = Seen(f.status, f.summary, f.ts, bool(f.evidence))
        out.setdefault(source, {}).setdefault(f.monitor, (judged, seen))
    return out


def _pipeline(
    s: Session,
    p: Mapping[str, Any],
    pools: list[Pool],
    registered: Mapping[str, list[tuple[str, int]]],
    elsewhere: Mapping[str, Mapping[str, tuple[str, Seen]]],
) -> PipelineFacts:
    name, kind = str(p["name"]), str(p["kind"])
    settings = stored_settings(s, name, kind)
    reference = next(
        (
            str(spec.options["reference_pipeline"])
            for spec in settings.monitors.values()
            if spec.enabled and spec.options.get("reference_pipeline")
        ),
        None,
    )
    runs = s.scalar(select(func.count()).select_from(Run).where(Run.pipeline == name)) or 0
    last_ok = s.scalar(
        select(func.max(Run.ended_at)).where(Run.pipeline == name, Run.status == "succeeded")
    )
    measured = s.scalar(
        select(func.max(StepRun.ended_at))
        .join(Run, Run.id == StepRun.run_id)
        .where(Run.pipeline == name, StepRun.cpu_seconds.is_not(None))
    )
    last_run = p.get("last_run")
    declared = False
    if last_run:
        steps = s.scalars(select(StepRun.resources).where(StepRun.run_id == last_run)).all()
        declared = bool(steps) and all(bool(r) for r in steps)
    run_ids = s.scalars(select(Run.id).where(Run.pipeline == name)).all()
    trained = tuple(mv for run_id in run_ids for mv in registered.get(run_id, []))
    used = s.scalars(select(QuotaLease.pool).where(QuotaLease.pipeline == name).distinct()).all()
    return PipelineFacts(
        name=name,
        kind=kind,
        file=str(p.get("file") or ""),
        schedule=p.get("schedule"),
        runs=int(runs),
        last_status=p.get("last_status"),
        last_succeeded_at=last_ok,
        monitors={n: spec.enabled for n, spec in settings.monitors.items()},
        findings=_latest_findings(s, f"{name}/", exact=name),
        judged_elsewhere=elsewhere.get(name, {}),
        datasets=tuple(_datasets(s, name, reference)),
        member_of=tuple(pool.name for pool in pools if name in pool.members),
        pools_used=tuple(sorted(used)),
        measured_at=measured,
        declared=declared,
        trained=trained,
    )


def _policy(s: Session, model: str) -> tuple[Policy | None, float | None, str]:
    row = s.get(DeployPolicyRecord, model)
    if row is None:
        return None, None, ""
    try:
        return (
            parse_policy(row.text, f"the stored policy of {model}"),
            row.updated_at,
            row.updated_by,
        )
    except ShipyardError:
        return None, row.updated_at, row.updated_by


def _rollouts(s: Session, model: str, versions: tuple[VersionInfo, ...]) -> list[RolloutFacts]:
    by_run = {v.version: v.run_id for v in versions}
    out = []
    for r in s.scalars(
        select(RolloutRecord).where(RolloutRecord.model == model).order_by(RolloutRecord.created_at)
    ):
        out.append(
            RolloutFacts(
                r.id,
                r.version,
                r.state,
                r.created_by,
                r.created_at,
                automated=by_run.get(r.version) is not None,
                staged=r.looks > 0 or r.state in ("canary", "production"),
                canaried=r.looks > 0,
            )
        )
    return out


def _model(s: Session, registry: Registry, name: str, live: LiveState | None) -> ModelFacts:
    versions = tuple(registry.versions(name))
    span = s.execute(
        select(ProductionRecord.version, ProductionRecord.since)
        .where(ProductionRecord.model == name, ProductionRecord.until.is_(None))
        .order_by(ProductionRecord.since.desc())
        .limit(1)
    ).first()
    production = span[0] if span else (live.sole_version if live is not None else None)
    policy, set_at, set_by = _policy(s, name)
    gates = tuple(
        GateFacts(
            g.version,
            bool(g.passed),
            g.ts,
            (g.evidence or {}).get("serving_version"),
        )
        for g in s.scalars(
            select(GateResult).where(GateResult.model == name).order_by(GateResult.ts)
        )
    )
    rollbacks = tuple(
        s.scalars(
            select(ProductionRecord.since).where(
                ProductionRecord.model == name, ProductionRecord.via == "rollback"
            )
        ).all()
    )
    windows = (
        s.scalar(select(func.count()).select_from(ServingWindow).where(ServingWindow.model == name))
        or 0
    )
    last_window = s.scalar(
        select(func.max(ServingWindow.window_end)).where(ServingWindow.model == name)
    )
    return ModelFacts(
        name=name,
        versions=versions,
        live=live,
        production_version=production,
        production_since=span[1] if span else None,
        policy=policy,
        policy_set_at=set_at,
        policy_set_by=set_by,
        gates=gates,
        rollouts=tuple(_rollouts(s, name, versions)),
        rollbacks=rollbacks,
        findings=_latest_findings(s, f"{name}/", exact=name),
        windows=int(windows),
        last_window_at=last_window,
    )


def _alerting(ws: Workspace) -> AlertingFacts:
    try:
        config: AlertingConfig | None = load_config(ws.settings.home)
        error = None
    except ShipyardError as exc:
        config, error = None, str(exc)
    receivers: dict[str, ReceiverFacts] = {}
    with ws.store.session(readonly=True) as s:
        names = set(config.receivers) if config is not None else set()
        names |= set(s.scalars(select(NotificationRecord.receiver).distinct()))
        for name in sorted(names):
            rows = s.execute(
                select(
                    NotificationRecord.status,
                    func.count(),
                    func.max(NotificationRecord.delivered_at),
                )
                .where(NotificationRecord.receiver == name)
                .group_by(NotificationRecord.status)
            ).all()
            counts = {status: (n, last) for status, n, last in rows}
            error_row = s.execute(
                select(NotificationRecord.last_error)
                .where(
                    NotificationRecord.receiver == name,
                    NotificationRecord.last_error.is_not(None),
                )
                .order_by(NotificationRecord.created_at.desc())
                .limit(1)
            ).first()
            receiver = config.receivers.get(name) if config is not None else None
            receivers[name] = ReceiverFacts(
                name=name,
                type=receiver.type if receiver is not None else "(no longer configured)",
                describe=receiver.describe() if receiver is not None else "",
                delivered=counts.get("delivered", (0, None))[0],
                last_delivered_at=counts.get("delivered", (0, None))[1],
                failed=counts.get("failed", (0, None))[0],
                last_error=error_row[0] if error_row else None,
                pending=counts.get("pending", (0, None))[0],
            )
        firing = tuple(
            sorted(set(s.scalars(select(AlertRecord.rule).where(AlertRecord.state == "firing"))))
        )
    return AlertingFacts(config, error, receivers, firing)


def _quota(ws: Workspace, pools: list[Pool]) -> QuotaFacts:
    headroom = ws.settings.quota.experiment_headroom
    now = ws.clock.time()
    # the live servers and their models, as `quota plan` passes them: a server's lease is then
    # part of its model's reservation, not counted a second time beside it
    servers = [
        LiveServer(i.lease_id, tuple(i.models)) for i in live_instances(ws.store, now) if i.lease_id
    ]
    try:
        plan = plan_from_store(
            ws.store,
            headroom_fraction=headroom,
            default_pool=ws.settings.quota.default_pool,
            start=now,
            servers=servers,
        )
    except ShipyardError as exc:
        return QuotaFacts(tuple(pools), False, (str(exc),), headroom, (str(exc),))
    problems = tuple(
        f"pool {line.pool} {line.resource}: needs {line.total:g} of {line.capacity:g}"
        + (f" ({', '.join(line.colliding)} at once)" if line.colliding else "")
        for line in plan.lines
        if not line.fits
    )
    return QuotaFacts(
        tuple(pools),
        plan.fits if plan.lines else None,
        tuple(plan.notes),
        headroom,
        problems,
    )


def gather(ws: Workspace) -> Facts:
    """Read everything readiness judges, now."""
    pools = list_pools(ws.store)
    registry = Registry.of(ws)
    with ws.store.session(readonly=True) as s:
        live = live_states(s)
        names = [m["name"] for m in registry.models()]
        models = tuple(_model(s, registry, name, live.get(name)) for name in names)
        registered: dict[str, list[tuple[str, int]]] = {}
        for m in models:
            for v in m.versions:
                if v.run_id:
                    registered.setdefault(v.run_id, []).append((v.model, v.version))
        elsewhere = _judged_elsewhere(s)
        pipelines = tuple(
            _pipeline(s, p, pools, registered, elsewhere) for p in list_pipelines(ws.store)
        )
        drills = tuple(
            DrillFacts(
                d.kind, d.subject, bool(d.passed), d.reason, d.ended_at, dict(d.signals or {})
            )
            for d in s.scalars(select(ReadinessDrill).order_by(ReadinessDrill.ended_at))
        )
    return Facts(
        now=ws.clock.time(),
        home=str(ws.settings.home),
        pipelines=pipelines,
        models=models,
        alerting=_alerting(ws),
        quota=_quota(ws, pools),
        drills=drills,
        request_log_sample_rate=ws.settings.serving.request_log_sample_rate,
    )

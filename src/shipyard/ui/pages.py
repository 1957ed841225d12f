"""Each page's data, read through the registered operations as the signed-in identity: the
same checks, the same answers as ``/api/v1``. A page function takes the operation context, the
page's path parameters and its query string, and returns JSON-ready data; the template draws it
and ``?format=json`` returns it as it is."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from shipyard.api.operations import Context, resolve
from shipyard.errors import NotFound
from shipyard.identity import APPROVE, DEPLOY, READ, RUNS_WRITE, SILENCES_WRITE
from shipyard.identity.roles import ROLES
from shipyard.ui import attention, charts, graphs, lineage

Query = Mapping[str, str]
MOVING = ["waiting_for_approvals", "staging", "canary", "paused"]
NEAR_EXHAUSTION = 0.8
DAY_S = 86400.0


def call(ctx: Context, name: str, /, **params: Any) -> Any:
    """The operation ``name`` with flat ``params``, as ``ctx.principal``."""
    op = resolve(name)
    return op.func(ctx, **op.bind({k: v for k, v in params.items() if v not in (None, "")}))


def may(ctx: Context, action: str, subject: str | None = None) -> bool:
    return ctx.principal.allows(action, subject)


def may_somewhere(ctx: Context, action: str) -> bool:
    return any(action in ROLES.get(b.role, ()) for b in ctx.principal.bindings)


def _series(ctx: Context, name: str, since: float, buckets: int, **labels: str) -> dict[str, Any]:
    return call(
        ctx, "series.matrix", name=name, label=[f"{k}={v}" for k, v in labels.items()],
        since=since, until=ctx.now, buckets=buckets,
    )  # fmt: skip


def _pick(query: Query, *names: str) -> dict[str, str]:
    return {n: query[n] for n in names if query.get(n)}


# -- overview --------------------------------------------------------------------------------


def overview(ctx: Context, query: Query) -> dict[str, Any]:
    firing = call(ctx, "alerts.list", state="firing", limit=50)["items"]
    moving = call(ctx, "rollouts.list", state=MOVING, limit=20)["items"]
    rollouts = [call(ctx, "rollouts.get", rollout_id=r["id"]) for r in moving]
    pools = []
    for pool in call(ctx, "quota.status")["pools"]:
        for resource, use in pool["resources"].items():
            soon = use.get("time_to_exhaustion_s")
            if (use.get("used_fraction") or 0) >= NEAR_EXHAUSTION or soon is not None:
                pools.append({"pool": pool["name"], "resource": resource, **use,
                              "waiting": pool["waiting"]})  # fmt: skip
    failed = call(ctx, "runs.list", status="failed", limit=10)["items"]
    running = call(ctx, "runs.list", status="running", limit=10)["items"]
    for run in running:
        run["running_s"] = ctx.now - run["started_at"] if run.get("started_at") else None
    findings = [
        f
        for status in ("alert", "warning")
        for f in call(ctx, "monitors.findings", status=status, limit=20)["items"]
    ]
    findings.sort(key=lambda f: -f["ts"])
    recent = call(ctx, "runs.list", limit=attention.HISTORY_RUNS)["items"]
    ctx.require(READ)  # the readiness summary may be one judged a few seconds ago
    return {
        "firing_alerts": firing,
        "rollouts": rollouts,
        "pools_near_exhaustion": pools,
        "failed_runs": failed,
        "running_runs": running,
        "slow_runs": attention.slow_runs(recent, ctx.now),
        "readiness": attention.readiness_summary(functools.partial(call, ctx), id(ctx.ws.store)),
        "findings": findings[:20],
    }


# -- runs ------------------------------------------------------------------------------------


def runs(ctx: Context, query: Query) -> dict[str, Any]:
    filters = _pick(query, "pipeline", "status", "kind", "cursor")
    found = call(ctx, "runs.list", limit=query.get("limit") or 50, **filters)
    by_pipeline: dict[str, list[tuple[float, float]]] = {}
    for r in found["items"]:
        if r.get("duration_s") is not None and r.get("started_at") is not None:
            by_pipeline.setdefault(r["pipeline"], []).append((r["started_at"], r["duration_s"]))
    pipelines = call(ctx, "pipelines.list", limit=200)["items"]
    return {
        "runs": found["items"],
        "next": found["next"],
        "filters": filters,
        "pipelines": [p["name"] for p in pipelines],
        "charts": {"durations": charts.scatter("Run durations", by_pipeline, "seconds")}
        if by_pipeline
        else {},
    }


def run(ctx: Context, query: Query, run_id: str) -> dict[str, Any]:
    info = call(ctx, "runs.show", run_id=run_id)
    bars = [
        {"row": s["step"], "start": s["started_at"], "end": s["ended_at"] or ctx.now,
         "group": s["status"], "text": f"{s['step']}: {s['status']}"}
        for s in info["steps"] if s.get("started_at") is not None
    ]  # fmt: skip
    try:
        specs = call(ctx, "pipelines.show", name=info["pipeline"])["step_specs"]
    except NotFound:  # the run outlived its pipeline's record: its steps, without edges
        specs = {}
    graph = graphs.dag(info["steps"], specs if isinstance(specs, dict) else {})
    figures = {"dag": graphs.dag_figure(graph)} if graph["nodes"] else {}
    if bars:
        figures["steps"] = charts.timeline("Steps over time", bars)
    return {
        "run": info,
        "dag": graph,
        "can_write": may(ctx, RUNS_WRITE, f"pipeline:{info['pipeline']}"),
        "charts": figures,
    }


def run_log(ctx: Context, query: Query, run_id: str, step: str) -> dict[str, Any]:
    page = call(ctx, "runs.logs", run_id=run_id, step=step, offset=query.get("offset") or 0,
                limit=query.get("limit") or 2000)  # fmt: skip
    return {"log": page, "following": page["run_status"] == "running"}


# -- rollouts --------------------------------------------------------------------------------


def rollouts(ctx: Context, query: Query) -> dict[str, Any]:
    filters = _pick(query, "model", "cursor")
    states = [query["state"]] if query.get("state") else []
    found = call(ctx, "rollouts.list", state=states, limit=50, **filters)
    return {"rollouts": found["items"], "next": found["next"],
            "filters": {**filters, **({"state": query["state"]} if states else {})}}  # fmt: skip


def _traffic(view: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(time, canary weight %, what happened) from the rollout's audit events."""
    points: list[tuple[float, float, str]] = []
    weight = 0.0
    for e in sorted(events, key=lambda e: e["seq"]):
        details = e.get("details") or {}
        action = e["action"].removeprefix("rollout.")
        if "weight_pct" in details and isinstance(details["weight_pct"], int | float):
            weight = float(details["weight_pct"])
        elif action in ("production", "promote.production"):
            weight = 100.0
        elif action in ("rolled_back", "abort", "rollback", "failed", "start"):
            weight = 0.0
        state = details.get("state")
        if state == "production":
            weight = 100.0
        elif state in ("rolled_back", "failed", "waiting_for_approvals", "staging"):
            weight = 0.0
        points.append((e["time"], weight, f"{action} by {e['actor']}"))
    if view["state"] in MOVING and points:
        points.append((view["updated_at"], float(view.get("weight_pct") or 0.0), "now"))
    return points


STAGE_SHOWN = {"current": "running"}


def _stages(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The release's stages as the API answers them (``progress_of``), each with the status a
    reader sees: ``current`` reads ``running``, a stage still pending once the rollout has
    ended reads ``not run``, and a failed stage carries the rollout's reason."""
    ended = view["state"] not in MOVING
    rows = []
    for stage in view.get("stages") or []:
        status = STAGE_SHOWN.get(stage["status"], stage["status"])
        if ended and status == "pending":
            status = "not run"
        why = view.get("reason") if status == "failed" else None
        rows.append({**stage, "shown": status, "why": why})
    return rows


def rollout(ctx: Context, query: Query, rollout_id: str) -> dict[str, Any]:
    view = call(ctx, "rollouts.get", rollout_id=rollout_id)
    events = call(ctx, "audit.list", subject_id=view["id"], limit=200)["items"]
    model = f"model:{view['model']}"
    moving = view["state"] in MOVING
    actions = {
        "approve": moving and may(ctx, APPROVE, model),
        "promote": view["state"] == "canary" and may(ctx, DEPLOY, model),
        "pause": view["state"] in ("staging", "canary") and may(ctx, DEPLOY, model),
        "resume": view["state"] == "paused" and may(ctx, DEPLOY, model),
        "abort": moving and may(ctx, DEPLOY, model),
        "rollback": may(ctx, DEPLOY, model),
    }
    traffic = _traffic(view, events)
    return {
        "rollout": view,
        "stages": _stages(view),
        "events": events,
        "actions": actions,
        "charts": {"traffic": charts.steps("Canary traffic", traffic, "canary weight %")}
        if traffic
        else {},
    }


# -- models ----------------------------------------------------------------------------------


def models(ctx: Context, query: Query) -> dict[str, Any]:
    found = call(ctx, "models.list", limit=50, cursor=query.get("cursor"))
    return {"models": found["items"], "next": found["next"]}


def model(ctx: Context, query: Query, name: str) -> dict[str, Any]:
    info = call(ctx, "models.get", name=name)
    versions = call(ctx, "models.versions", name=name, limit=20)["items"]
    aliases = call(ctx, "models.aliases", name=name, limit=30)["items"]
    history = call(ctx, "rollouts.history", model=name, limit=30)
    gates = [call(ctx, "models.version", name=name, version=str(v["version"]))
             for v in versions[:4]]  # fmt: skip
    findings = call(ctx, "monitors.findings", model=name, limit=20)["items"]
    since = ctx.now - DAY_S
    latency = _series(ctx, "shipyard_serving_request_duration_seconds", since, 48, model=name)
    errors = _series(ctx, "shipyard_serving_error_share", since, 48, model=name)
    figures = {}
    if latency["series"]:
        figures["latency"] = charts.lines(
            "Latency percentiles per version", latency["ts"],
            [(f"v{s['labels'].get('version')} p{float(s['labels'].get('quantile', 0)) * 100:g}",
              [None if v is None else v * 1000 for v in s["values"]])
             for s in latency["series"]], "ms",
        )  # fmt: skip
    if errors["series"]:
        figures["errors"] = charts.lines(
            "Error share per version", errors["ts"],
            [(f"v{s['labels'].get('version')}", s["values"]) for s in errors["series"]], "share",
        )  # fmt: skip
    requests = _series(ctx, "shipyard_serving_requests_total", since, 48, model=name)
    traffic = [
        (f"v{s['labels'].get('version')}",
         [None if r is None else r * 60 for r in lineage.rates_per_s(requests["ts"], s["values"])])
        for s in requests["series"]
    ]  # fmt: skip
    if traffic:
        figures["traffic"] = charts.lines(
            "Requests per minute per version", requests["ts"], traffic, "requests/min"
        )
    return {
        "model": info,
        "versions": versions,
        "alias_history": aliases,
        "deployments": history,
        "gates": [{"version": g["version"], "gate_results": g["gate_results"],
                   "metrics": g["metrics"], "lineage": g["lineage"]} for g in gates],
        "lineage": [lineage.version_lineage(functools.partial(call, ctx), g) for g in gates],
        "traffic": {"ts": requests["ts"], "series": [
            {"version": label, "requests_per_min": values} for label, values in traffic]},
        "findings": findings,
        "can_deploy": may(ctx, DEPLOY, f"model:{name}"),
        "charts": figures,
    }  # fmt: skip


# -- quota -----------------------------------------------------------------------------------


def quota(ctx: Context, query: Query) -> dict[str, Any]:
    status = call(ctx, "quota.status")
    plan = call(ctx, "quota.plan")
    waiting = call(ctx, "quota.lease.list", status="waiting", limit=100)["items"]
    since = ctx.now - DAY_S
    pools = []
    figures = {}
    for pool in status["pools"]:
        detail = call(ctx, "quota.pool.show", name=pool["name"])
        used = _series(ctx, "shipyard_quota_pool_reserved", since, 48, pool=pool["name"])
        for resource, use in pool["resources"].items():
            mine = [s for s in used["series"] if s["labels"].get("resource") == resource]
            if mine:
                figures[f"{pool['name']}-{resource}"] = charts.lines(
                    f"{pool['name']}: {resource} reserved", used["ts"],
                    [("reserved", mine[0]["values"])], resource, capacity=use["capacity"],
                )  # fmt: skip
        pools.append({**pool, "members": detail["members"], "borrowers": detail["borrowers"],
                      "reservations": detail["reservations"],
                      "waiters": [w for w in waiting if w["pool"] == pool["name"]]})  # fmt: skip
    return {"pools": pools, "plan": plan, "charts": figures}


# -- alerts ----------------------------------------------------------------------------------


def alerts(ctx: Context, query: Query) -> dict[str, Any]:
    by_state = {s: call(ctx, "alerts.list", state=s, limit=100)["items"]
                for s in ("firing", "pending", "resolved")}  # fmt: skip
    silences = call(ctx, "alerts.silences", limit=100)["items"]
    receivers = call(ctx, "alerts.receivers", limit=100)
    bars = [
        {"row": f"{a['labels'].get('alertname', a['rule'])} {a['fingerprint'][:6]}",
         "start": a["active_at"], "end": a["resolved_at"] or ctx.now, "group": a["state"],
         "text": a["annotations"].get("summary", "")}
        for alerts in by_state.values() for a in alerts
    ]  # fmt: skip
    return {
        "alerts": by_state,
        "silences": silences,
        "receivers": receivers["items"],
        "config": receivers.get("config"),
        "can_silence": may_somewhere(ctx, SILENCES_WRITE),
        "charts": {"timeline": charts.timeline("Alerts over time", bars)} if bars else {},
    }


def about(labels: Mapping[str, Any]) -> list[dict[str, str]]:
    """Links to the pages of what an alert's labels name."""
    links = []
    if labels.get("rollout"):
        links.append(
            {"text": f"rollout {labels['rollout']}", "href": f"/ui/rollouts/{labels['rollout']}"}
        )
    if labels.get("model"):
        links.append({"text": f"model {labels['model']}", "href": f"/ui/models/{labels['model']}"})
    if labels.get("pipeline"):
        p = labels["pipeline"]
        links.append({"text": f"monitors of {p}", "href": f"/ui/monitors/{p}"})
        links.append({"text": f"runs of {p}", "href": f"/ui/runs?pipeline={p}"})
    if labels.get("run_id"):
        links.append({"text": f"run {labels['run_id']}", "href": f"/ui/runs/{labels['run_id']}"})
    if labels.get("pool"):
        links.append({"text": f"pool {labels['pool']}", "href": f"/ui/quota#pool-{labels['pool']}"})
    return links


def alert(ctx: Context, query: Query, fingerprint: str) -> dict[str, Any]:
    info = call(ctx, "alerts.get", fingerprint=fingerprint)
    return {"alert": info, "about": about(info["labels"])}


# -- audit -----------------------------------------------------------------------------------


VERIFIED_FOR_S = 60.0
"""How long the audit page shows one walk of the chain before walking it again (a walk of
10,000 events takes ~0.6 s); ``?verify=now`` walks it at once."""
_verified: dict[int, tuple[float, dict[str, Any]]] = {}


def _verification(ctx: Context, fresh: bool) -> dict[str, Any]:
    key = id(ctx.ws.store)
    now = time.monotonic()
    kept = _verified.get(key)
    if fresh or kept is None or now - kept[0] > VERIFIED_FOR_S:
        kept = (now, {**call(ctx, "audit.verify"), "verified_at": ctx.now})
        _verified[key] = kept
    return kept[1]


def audit(ctx: Context, query: Query) -> dict[str, Any]:
    filters = _pick(query, "actor", "action", "subject_id", "before")
    found = call(ctx, "audit.list", limit=100, **filters)
    verified = _verification(ctx, query.get("verify") == "now")
    return {"events": found["items"], "next_before": found.get("next_before"),
            "filters": filters, "verify": verified}  # fmt: skip

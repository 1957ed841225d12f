"""``shipyard deploy``, ``approve``, ``rollout status|pause|resume|promote|abort``, ``rollback``,
``deployments history|set-policy|policy`` and ``runbook``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shipyard import stats
from shipyard.cli.output import (
    console,
    err_console,
    flag,
    open_workspace,
    print_json,
    require,
    table,
    when,
)
from shipyard.daemon import no_daemon_note
from shipyard.deploy import rollout as ro
from shipyard.deploy.diagnosis import diagnosis_of
from shipyard.deploy.policy import load_policy, policy_text, set_policy
from shipyard.deploy.production import production_history
from shipyard.deploy.rollback import rollback as rollback_production
from shipyard.deploy.runbook import render_runbook
from shipyard.errors import InvalidInput, NotFound
from shipyard.registry import Registry
from shipyard.statuses import ROLLOUT_MOVING, RolloutState
from shipyard.workspace import Workspace

rollout_app = typer.Typer(help="Follow and steer one rollout.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployment history and policies.", no_args_is_help=True)
AS_OPTION = typer.Option(None, "--as", help="Who does this (default: SHIPYARD_USER).")
JSON_OPTION = flag("--json", help="Machine output.")
MODEL_ARG = typer.Argument(..., help="The registered model's name.")
ROLLOUT_ARG = typer.Argument(..., help="The rollout's id (`shipyard deployments history MODEL`).")
REASON_OPTION = typer.Option("", "--reason", help="Why (kept in the audit trail).")


def _actor(ws: Workspace, given: str | None) -> str:
    return given or ws.actor


def _show(view: ro.RolloutView, as_json: bool, ws: Workspace | None = None) -> None:
    if as_json:
        data: dict[str, Any] = view.to_json()
        if ws is not None:
            with ws.store.session(readonly=True) as s:
                data["diagnosis"] = diagnosis_of(s, view.id)
        print_json(data)
        return
    stable = view.stable_version if view.stable_version is not None else "-"
    console.print(
        f"rollout [bold]{view.id}[/]: {view.model} version {view.version} "
        f"(stable {stable}) — [bold]{view.state}[/]"
    )
    if view.state in (RolloutState.CANARY, RolloutState.PAUSED):
        console.print(f"  step {view.step_index + 1}, canary weight {view.weight_pct:g} %")
    console.print(f"  why: {view.reason or '-'}   updated {when(view.updated_at)}")
    if view.approvals:
        got = ", ".join(f"{a['actor']} ({a['purpose']})" for a in view.approvals)
        console.print(f"  approvals: {got}")


@rollout_app.command("status")
def status(rollout_id: str = ROLLOUT_ARG, as_json: bool = JSON_OPTION) -> None:
    """State, approvals, each look's verdict per metric, and the diagnosis if it failed."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    view = ro.get_rollout(ws.store, rollout_id)
    if as_json:
        _show(view, True, ws)
        return
    _show(view, False)
    if view.verdicts:
        verdicts = table(
            "step",
            "look",
            "outcome",
            "metric",
            "result",
            "p",
            "α",
            "effect",
            "CI",
            "n canary/stable",
            "reason",
            free={"reason"},
        )
        for v in view.verdicts[-3:]:
            for m in v["metrics"] or [{"metric": "-", "outcome": v["outcome"]}]:
                verdicts.add_row(
                    str(v["step"] + 1),
                    str(v["look"]),
                    v["outcome"],
                    m.get("metric", "-"),
                    m.get("outcome", "-"),
                    _num(m.get("p_value")),
                    _num(m.get("alpha")),
                    _num(m.get("effect")),
                    f"[{_num(m.get('ci_low'))}, {_num(m.get('ci_high'))}]",
                    f"{m.get('n_canary', '-')}/{m.get('n_stable', '-')}",
                    m.get("reason", ""),
                )
        console.print(verdicts)
    with ws.store.session(readonly=True) as s:
        diag = diagnosis_of(s, view.id)
    if diag:
        console.print("[bold red]diagnosis[/]")
        for f in diag["failed_metrics"]:
            console.print(f"  failed {f['metric']}: {f['reason']}")
        _print_drifting_inputs(diag["drifting_inputs"])
        for ex in diag["failing_requests"]:
            console.print(f"  failing request {ex['request_id']}: {ex['status']} {ex['response']}")
        replay = diag.get("disagreements") or {}
        if replay.get("available"):
            console.print(
                f"  answers vs stable v{replay['stable_version']}: {replay['disagree']} of "
                f"{replay['rows']} sampled canary rows differ ({100 * replay['share']:.0f} %)"
            )
            for ex in replay["examples"]:
                console.print(
                    f"    request {ex['request_id']} row {ex['row']}: canary {ex['canary']}, "
                    f"stable {ex['stable']}"
                )
    _say_if_no_daemon(ws, view)


def _print_drifting_inputs(drift: dict[str, Any], top: int = 8) -> None:
    """The drifted input columns, strongest first, at most ``top`` by name."""
    if not drift.get("available"):
        console.print(f"  drifting inputs: unknown ({drift.get('why')})")
        return
    columns = sorted(drift.get("columns") or [], key=lambda c: -(c.get("effect") or 0.0))
    if not columns:
        console.print(f"  drifting inputs vs {drift.get('against')}: none")
        return
    named = ", ".join(
        f"{c['column']} ({stats.SHORT_NAMES.get(c.get('effect_name'), c.get('effect_name'))} "
        f"{c['effect']:.2g})"
        if c.get("effect") is not None
        else c["column"]
        for c in columns[:top]
    )
    more = f" and {len(columns) - top} more" if len(columns) > top else ""
    console.print(
        f"  drifting inputs vs {drift.get('against')}: {len(columns)} column(s), "
        f"strongest first: {named}{more}"
    )


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


@rollout_app.command("pause")
def pause_cmd(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    reason: str = REASON_OPTION,
) -> None:
    """Hold a rollout where it is; traffic stays as it is."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    _show(ro.pause(ws.store, rollout_id, actor=_actor(ws, actor), reason=reason), False)


@rollout_app.command("resume")
def resume_cmd(rollout_id: str = ROLLOUT_ARG, actor: str | None = AS_OPTION) -> None:
    """Continue a paused rollout."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    view = ro.resume(ws.store, rollout_id, actor=_actor(ws, actor))
    _show(view, False)
    _say_if_no_daemon(ws, view)


@rollout_app.command("promote")
def promote_cmd(rollout_id: str = ROLLOUT_ARG, actor: str | None = AS_OPTION) -> None:
    """Skip the rest of the current canary step (needs the policy's speed-up approvals)."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    _show(ro.promote(ws.store, rollout_id, actor=_actor(ws, actor)), False)


@rollout_app.command("abort")
def abort_cmd(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    reason: str = REASON_OPTION,
) -> None:
    """Stop a rollout now: traffic back to the stable version."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    _show(ro.abort(ws.store, rollout_id, actor=_actor(ws, actor), reason=reason), False)


def deploy(
    model: str = MODEL_ARG,
    version: int = typer.Option(..., "--version", "-v", help="The version to deploy."),
    actor: str | None = AS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a rollout of MODEL's VERSION under the model's policy (approvals → staging →
    canary steps → production)."""
    ws = open_workspace(create=False)
    require(ws, "model", model)
    info = Registry.of(ws).get(model, version)
    view = ro.start_rollout(
        ws.store, model, version, actor=_actor(ws, actor), author=info.created_by or None
    )
    _show(view, as_json)
    if not as_json and view.state == RolloutState.WAITING:
        need = load_policy(ws.store, model).approvals.start
        console.print(
            f"  waiting for {need.count} approval(s): `shipyard approve {view.id} --as USER`"
        )
    if not as_json:
        _say_if_no_daemon(ws, view)


def approve(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    purpose: str = typer.Option("start", "--for", help="start or speedup."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve a rollout, to start it or to speed it up."""
    ws = open_workspace(create=False)
    require(ws, "rollout", rollout_id)
    view = ro.approve(ws.store, rollout_id, actor=_actor(ws, actor), purpose=purpose)
    _show(view, as_json)
    if not as_json:
        _say_if_no_daemon(ws, view)


def rollback(
    model: str = MODEL_ARG,
    to_version: int | None = typer.Option(
        None,
        "--to-version",
        "--version",
        help="Put this version back, even one that was rolled back or aborted (with a warning). "
        "Default: the last version that was healthy in production.",
    ),
    actor: str | None = AS_OPTION,
    reason: str = REASON_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Put the last version of MODEL that was healthy in production (or the named one) back in
    production, at once. A version that was rolled back or aborted is never chosen by itself."""
    ws = open_workspace()
    require(ws, "model", model)
    registry = Registry.of(ws)

    def exists(name: str, v: int) -> bool:
        try:
            registry.get(name, v)
        except NotFound:
            return False
        return True

    result = rollback_production(
        ws.store,
        model,
        actor=_actor(ws, actor),
        to_version=to_version,
        reason=reason,
        version_exists=exists,
    )
    from shipyard.deploy.loop import sync_aliases  # the control loop's modules load scipy

    sync_aliases(ws)  # model servers that route by the default alias follow within 0.5 s
    if as_json:
        print_json(result)
        return
    if result["warning"]:
        err_console.print(f"[bold yellow]warning:[/] {escape(result['warning'])}", soft_wrap=True)
    console.print(
        f"[green]✓[/] {model}: production {result['from']} → {result['to']}"
        + (f" (rollout {result['rollout']} rolled back)" if result["rollout"] else "")
    )


@deployments_app.command("history")
def history(model: str = MODEL_ARG, as_json: bool = JSON_OPTION) -> None:
    """Which version was in production when, and every rollout of MODEL."""
    ws = open_workspace(create=False)
    require(ws, "model", model)
    spans = production_history(ws.store, model)
    rollouts = ro.rollouts_of(ws.store, model)
    if as_json:
        print_json(
            {
                "production": [
                    {
                        "version": p.version,
                        "since": p.since,
                        "until": p.until,
                        "via": p.via,
                        "rollout": p.rollout_id,
                        "actor": p.actor,
                        "reason": p.reason,
                    }
                    for p in spans
                ],
                "rollouts": [r.to_json() for r in rollouts],
            }
        )
        return
    if not spans and not rollouts:
        console.print(f"no deployments of {model}")
        return
    production = table(
        "version", "since", "until", "via", "by", "why", title="production", free={"why"}
    )
    for p in spans:
        production.add_row(
            str(p.version),
            when(p.since),
            when(p.until) if p.until else "now",
            p.via,
            p.actor,
            p.reason,
        )
    console.print(production)
    started = table(
        "rollout", "version", "state", "started", "by", "why", title="rollouts", free={"why"}
    )
    for r in rollouts:
        started.add_row(r.id, str(r.version), r.state, when(r.created_at), r.created_by, r.reason)
    console.print(started)


@deployments_app.command("set-policy")
def set_policy_cmd(
    model: str = MODEL_ARG,
    file: Path = typer.Argument(..., help="The policy, a YAML file."),
    actor: str | None = AS_OPTION,
) -> None:
    """Validate FILE (YAML) and make it MODEL's deployment policy."""
    if not file.is_file():
        raise InvalidInput(f"{file} does not exist")
    ws = open_workspace()
    require(ws, "model", model)
    set_policy(
        ws.store,
        model,
        file.read_text(encoding="utf-8"),
        actor=_actor(ws, actor),
        source=str(file),
    )
    console.print(f"[green]✓[/] policy of {model} set from {file}")


@deployments_app.command("policy")
def show_policy(model: str = MODEL_ARG) -> None:
    """MODEL's policy with every default filled in."""
    ws = open_workspace(create=False)
    if policy_text(ws.store, model) is None:
        require(ws, "model", model)
    typer.echo(load_policy(ws.store, model).to_yaml(), nl=False)


def runbook(
    model: str = MODEL_ARG,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """MODEL's runbook as Markdown, rendered from its policy, with the exact commands."""
    ws = open_workspace(create=False)
    has_policy = policy_text(ws.store, model) is not None
    if not has_policy:
        require(ws, "model", model)
    text = render_runbook(model, load_policy(ws.store, model), has_policy=has_policy)
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror}") from None
    console.print(f"[green]✓[/] runbook of {model} written to {output}")


def _say_if_no_daemon(ws: Workspace, view: ro.RolloutView) -> None:
    """A rollout that waits for the control loop says so when no daemon leads."""
    if view.state not in ROLLOUT_MOVING:
        return
    note = no_daemon_note(ws.store, ws.clock.time())
    if note:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(approve)
    app.command()(rollback)
    app.command()(runbook)
    app.add_typer(rollout_app, name="rollout")
    app.add_typer(deployments_app, name="deployments")

"""``shipyard deploy``, ``approve``, ``rollout status|pause|resume|promote|abort``, ``rollback``,
``deployments history|set-policy|policy`` and ``runbook``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shipyard import stats
from shipyard.cli.output import console, err_console, flag, print_json, table, when
from shipyard.errors import InvalidInput
from shipyard.statuses import ROLLOUT_MOVING, RolloutState

rollout_app = typer.Typer(help="Follow and steer one rollout.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployment history and policies.", no_args_is_help=True)
AS_OPTION = typer.Option(
    None,
    "--as",
    help="Who does this, on the database directly (default: SHIPYARD_USER). With a control "
    "plane (SHIPYARD_URL) you act as your token's identity and --as is refused.",
)
JSON_OPTION = flag("--json", help="Machine output.")
MODEL_ARG = typer.Argument(..., help="The registered model's name.")
ROLLOUT_ARG = typer.Argument(..., help="The rollout's id (`shipyard deployments history MODEL`).")
REASON_OPTION = typer.Option("", "--reason", help="Why (kept in the audit trail).")


def _call(name: str, as_user: str | None = None, **params: Any) -> Any:
    from shipyard.cli.connect import client

    return client(as_user).call(name, **params)


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(view)
        return
    stable = view["stable_version"] if view["stable_version"] is not None else "-"
    console.print(
        f"rollout [bold]{view['id']}[/]: {view['model']} version {view['version']} "
        f"(stable {stable}) — [bold]{view['state']}[/]"
    )
    if view["state"] in (RolloutState.CANARY, RolloutState.PAUSED):
        console.print(f"  step {view['step_index'] + 1}, canary weight {view['weight_pct']:g} %")
    console.print(f"  why: {view['reason'] or '-'}   updated {when(view['updated_at'])}")
    if view["approvals"]:
        got = ", ".join(f"{a['actor']} ({a['purpose']})" for a in view["approvals"])
        console.print(f"  approvals: {got}")


@rollout_app.command("status")
def status(rollout_id: str = ROLLOUT_ARG, as_json: bool = JSON_OPTION) -> None:
    """State, approvals, each look's verdict per metric, what it waits for, and the diagnosis
    if it failed."""
    view = _call("rollouts.get", rollout_id=rollout_id)
    if as_json:
        _show(view, True)
        return
    _show(view, False)
    for line in view["waits_for"]:
        console.print(f"  waits for: {escape(line)}", soft_wrap=True)
    if view.get("stages"):
        stages = table("stage", "kind", "who gets the new version", "looks", "α budget", "status")
        for st in view["stages"]:
            stages.add_row(
                str(st["index"] + 1),
                st["kind"],
                escape(st["description"]),
                f"≤ {st['max_looks']}",
                _num(st["alpha"]),
                st["status"],
            )
        console.print(stages)
    if view["verdicts"]:
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
        for v in view["verdicts"][-3:]:
            for m in v["metrics"] or [{"metric": "-", "outcome": v["outcome"]}]:
                verdicts.add_row(
                    v["stage"] if v.get("stage") in ("replay", "shadow") else str(v["step"] + 1),
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
    diag = view.get("diagnosis")
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
    _say_if_no_daemon(view)


def _print_drifting_inputs(drift: dict[str, Any], top: int = 8) -> None:
    """The drifted input columns, strongest first, at most ``top`` by name."""
    if not drift.get("available"):
        console.print(f"  drifting inputs: unknown ({drift.get('why')})")
        return
    columns = list(drift.get("columns") or [])  # ranked by the diagnosis (deploy/diagnosis.py)
    if not columns:
        console.print(f"  drifting inputs vs {drift.get('against')}: none")
        return

    def shown(c: dict[str, Any]) -> str:
        if c.get("explains") is not None:
            return f"{c['column']} (explains {c['explains']:.0%} of the prediction change)"
        effect = c.get("robust_effect", c.get("effect"))
        if effect is None:
            return str(c["column"])
        name = stats.SHORT_NAMES.get(str(c.get("effect_name")), c.get("effect_name"))
        if "robust_effect" in c and c.get("effect_name") == "wasserstein_normalised":
            name = "W1/max σ"  # stats.attribution.robust_scale
        return f"{c['column']} ({name} {effect:.2g})"

    named = ", ".join(shown(c) for c in columns[:top])
    more = f" and {len(columns) - top} more" if len(columns) > top else ""
    console.print(
        f"  drifting inputs vs {drift.get('against')}: {len(columns)} column(s), "
        f"strongest first: {named}{more}"
    )


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


@rollout_app.command("list")
def list_cmd(
    model: str | None = typer.Option(None, "--model", help="Only this model's rollouts."),
    state: list[str] = typer.Option(
        [], "--state", help="Only rollouts in this state (repeat for several)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
    cursor: str | None = typer.Option(None, "--cursor", help="The `next` of the page before."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Rollouts, newest first: which model and version, where each stands, who started it."""
    found = _call("rollouts.list", model=model, state=state or None, limit=limit, cursor=cursor)
    if as_json:
        print_json(found)
        return
    if not found["items"]:
        console.print("no rollouts match" if model or state or cursor else "no rollouts yet")
        return
    listing = table(
        "rollout", "model", "version", "stable", "state", "weight", "started", "by", "why",
        free={"why"},
    )  # fmt: skip
    for r in found["items"]:
        listing.add_row(
            r["id"],
            r["model"],
            str(r["version"]),
            "-" if r["stable_version"] is None else str(r["stable_version"]),
            r["state"],
            f"{r['weight_pct']:g} %",
            when(r["created_at"]),
            r["created_by"],
            r["reason"],
        )
    console.print(listing)
    if found["next"] is not None:
        console.print(f"older: shipyard rollout list --cursor {found['next']}")


@rollout_app.command("pause")
def pause_cmd(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    reason: str = REASON_OPTION,
) -> None:
    """Hold a rollout where it is; traffic stays as it is."""
    _show(_call("rollouts.pause", actor, rollout_id=rollout_id, reason=reason), False)


@rollout_app.command("resume")
def resume_cmd(rollout_id: str = ROLLOUT_ARG, actor: str | None = AS_OPTION) -> None:
    """Continue a paused rollout."""
    view = _call("rollouts.resume", actor, rollout_id=rollout_id)
    _show(view, False)
    _say_if_no_daemon(view)


@rollout_app.command("promote")
def promote_cmd(rollout_id: str = ROLLOUT_ARG, actor: str | None = AS_OPTION) -> None:
    """Skip the rest of the current canary step (needs the policy's speed-up approvals)."""
    _show(_call("rollouts.promote", actor, rollout_id=rollout_id), False)


@rollout_app.command("abort")
def abort_cmd(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    reason: str = REASON_OPTION,
) -> None:
    """Stop a rollout now: traffic back to the stable version."""
    _show(_call("rollouts.abort", actor, rollout_id=rollout_id, reason=reason), False)


def deploy(
    model: str = MODEL_ARG,
    version: int = typer.Option(..., "--version", "-v", help="The version to deploy."),
    actor: str | None = AS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a rollout of MODEL's VERSION under the model's policy (approvals → staging,
    replay and shadow → canary steps → production)."""
    view = _call("rollouts.deploy", actor, model=model, version=version)
    _show(view, as_json)
    if as_json:
        return
    if view["state"] == RolloutState.WAITING:
        for line in view["waits_for"]:
            console.print(f"  waiting for {escape(line)}", soft_wrap=True)
    _say_if_no_daemon(view)


def approve(
    rollout_id: str = ROLLOUT_ARG,
    actor: str | None = AS_OPTION,
    purpose: str = typer.Option("start", "--for", help="start or speedup."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve a rollout, to start it or to speed it up.

    You approve as yourself (with a control plane: your token's identity), never a version you
    made."""
    if purpose not in ("start", "speedup"):
        raise InvalidInput(f"an approval is for 'start' or 'speedup', not {purpose!r}")
    view = _call("rollouts.approve", actor, rollout_id=rollout_id, purpose=purpose)
    _show(view, as_json)
    if not as_json:
        _say_if_no_daemon(view)


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
    result = _call("rollouts.rollback", actor, model=model, to_version=to_version, reason=reason)
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
    found = _call("rollouts.history", model=model, limit=1000)
    spans, rollouts = found["production"], found["rollouts"]
    if as_json:
        print_json({"production": spans, "rollouts": rollouts})
        return
    if not spans and not rollouts:
        console.print(f"no deployments of {model}")
        return
    production = table(
        "version", "since", "until", "via", "by", "why", title="production", free={"why"}
    )
    for p in spans:
        production.add_row(
            str(p["version"]),
            when(p["since"]),
            when(p["until"]) if p["until"] else "now",
            p["via"],
            p["actor"],
            p["reason"],
        )
    console.print(production)
    started = table(
        "rollout", "version", "state", "started", "by", "why", title="rollouts", free={"why"}
    )
    for r in rollouts:
        started.add_row(
            r["id"], str(r["version"]), r["state"], when(r["created_at"]), r["created_by"],
            r["reason"],
        )  # fmt: skip
    console.print(started)
    if found["truncated"]:
        console.print(f"(the latest 1000: `shipyard rollout list --model {model}` pages further)")


@deployments_app.command("set-policy")
def set_policy_cmd(
    model: str = MODEL_ARG,
    file: Path = typer.Argument(..., help="The policy, a YAML file."),
    actor: str | None = AS_OPTION,
) -> None:
    """Validate FILE (YAML) and make it MODEL's deployment policy."""
    if not file.is_file():
        raise InvalidInput(f"{file} does not exist")
    text = file.read_text(encoding="utf-8")
    _call("rollouts.policy.set", actor, model=model, text=text, source=str(file))
    console.print(f"[green]✓[/] policy of {model} set from {file}")


def _policy(model: str) -> tuple[Any, bool]:
    from shipyard.deploy.policy import Policy

    found = _call("rollouts.policy", model=model)
    return Policy.model_validate(found["policy"]), bool(found["custom"])


@deployments_app.command("policy")
def show_policy(model: str = MODEL_ARG) -> None:
    """MODEL's policy with every default filled in."""
    policy, _ = _policy(model)
    typer.echo(policy.to_yaml(), nl=False)


def runbook(
    model: str = MODEL_ARG,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """MODEL's runbook as Markdown, rendered from its policy, with the exact commands."""
    from shipyard.deploy.runbook import render_runbook

    policy, has_policy = _policy(model)
    text = render_runbook(model, policy, has_policy=has_policy)
    if output is None:
        typer.echo(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror}") from None
    console.print(f"[green]✓[/] runbook of {model} written to {output}")


def _say_if_no_daemon(view: dict[str, Any]) -> None:
    """A rollout that waits for the control loop says so when no daemon leads."""
    if view["state"] not in ROLLOUT_MOVING or view.get("daemon_leads") is not False:
        return
    from shipyard.daemon import NO_DAEMON

    console.print(f"[yellow]note:[/] {NO_DAEMON}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(approve)
    app.command()(rollback)
    app.command()(runbook)
    app.add_typer(rollout_app, name="rollout")
    app.add_typer(deployments_app, name="deployments")

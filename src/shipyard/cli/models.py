"""``shipyard models list|show|register|validate|import-mlflow|alias``: the model registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from shipyard.cli.output import console, flag, open_workspace, print_json, require, table, when
from shipyard.errors import InvalidInput, NotFound
from shipyard.registry import (
    TRUST_FLAG,
    Registry,
    Signature,
    VersionInfo,
    import_mlflow,
    read_model_file,
)
from shipyard.serving.live import LiveState, LiveVersion

models_app = typer.Typer(help="Models, versions and aliases.", no_args_is_help=True)
NAME_ARG = typer.Argument(..., help="The model's name.")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise InvalidInput(f"{what} {item!r}: write it as key=value")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _read_frame(path: Path, what: str = "training data") -> Any:
    import pandas as pd

    if not path.is_file():
        raise InvalidInput(f"{what} {path} does not exist")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None


@models_app.command("list")
def list_models(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Every registered model, its latest version, its aliases and what serves it now."""
    from shipyard.api.client import every
    from shipyard.cli.connect import client

    rows = list(every(client(), "models.list"))
    if as_json:
        print_json(rows)
        return
    models = table("model", "latest", "aliases", "serving", "created")
    for m in rows:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(m["aliases"].items()))
        state = _live_state(m["live"])
        serving = state.brief() if state is not None else "-"
        models.add_row(
            m["name"], str(m["latest_version"]), aliases or "-", serving, when(m["created_at"])
        )
    console.print(models)


def _live_state(live: dict[str, Any] | None) -> LiveState | None:
    """The :class:`LiveState` an operation's ``live`` answer describes."""
    if live is None:
        return None
    versions = tuple(LiveVersion(v["version"], v["weight"], v["canary"]) for v in live["versions"])
    return LiveState(live["model"], versions, live["decided_by"], live["rollout_id"], live["alias"])


@models_app.command()
def show(
    name: str = NAME_ARG,
    version: int = typer.Option(None, "--version", "-v", help="A version number."),
    alias: str = typer.Option(None, "--alias", "-a", help="An alias (default: the default one)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """One version: flavor, artifact, signature, metrics, lineage, and the alias history."""
    from shipyard.api.client import every
    from shipyard.cli.connect import client

    api = client()
    model = api.call("models.get", name=name)
    if version is None and alias is None:
        version = model["default_version"]
        if version is None:
            raise InvalidInput(f"model {name!r} has no versions")
    elif version is None:
        if alias not in model["aliases"]:
            raise NotFound("alias", f"{name}@{alias}", "set it with `shipyard models alias`")
        version = model["aliases"][alias]
    info = api.call("models.version", name=name, version=version)
    gates = info.pop("gate_results")
    info.pop("aliased_as")
    moves = list(every(api, "models.aliases", name=name))[::-1]
    history = [{k: h[k] for k in ("alias", "from", "to", "actor", "reason", "ts")} for h in moves]
    live = _live_state(model["live"])
    if as_json:
        print_json(
            {**info, "aliases": model["aliases"], "alias_history": history,
             "live": model["live"]}
        )  # fmt: skip
        return
    console.print(f"[bold]{info['model']}[/] v{info['version']}  ({info['flavor']})")
    console.print(f"  serving   {live.describe() if live else 'nothing'}", soft_wrap=True)
    console.print(f"  artifact  sha256:{info['artifact_digest']}")
    console.print(f"  created   {when(info['created_at'])} by {info['created_by'] or '-'}")
    inputs = info["signature"]["inputs"]
    cols = ", ".join(f"{c['name']}:{c['type']}" for c in inputs[:6])
    more = f", … ({len(inputs)} columns; --json lists them)" if len(inputs) > 6 else ""
    console.print(f"  inputs    {cols}{more}")
    console.print(f"  metrics   {json.dumps(info['metrics'])}")
    if info["tags"]:
        console.print(f"  tags      {json.dumps(info['tags'])}")
    lineage = info["lineage"]
    data = ", ".join(d[:12] for d in lineage.get("data") or []) or "-"
    console.print(f"  lineage   run {lineage.get('run_id') or '-'}, data {data}")
    console.print(f"  reference {'yes' if info['has_reference_profile'] else 'no'}")
    trust = lineage.get("trust")
    if trust:
        console.print(
            f"  [yellow]trust[/]     pickle {trust['source']} (sha256:{trust['sha256'][:12]}) "
            f"loaded under {trust['flag']} by {trust['by'] or '-'} {when(trust['at'])}"
        )
    if gates:
        _print_gate(gates[0])
    for m in history:
        console.print(
            f"  {when(m['ts'])}  {m['alias']}: {m['from']} → {m['to']}  by {m['actor']}"
            + (f"  ({m['reason']})" if m["reason"] else "")
        )


def _print_gate(gate: dict[str, Any]) -> None:
    """The version's latest validation gate result."""
    evidence = gate["evidence"]
    verdict = "[green]blessed[/]" if gate["passed"] else "[red]not blessed[/]"
    reasons = "; ".join(evidence.get("reasons") or [])
    console.print(f"  gate      {verdict} {when(gate['ts'])} by {gate['actor']}: {reasons}")
    serving = evidence.get("serving_metrics") or {}
    numbers = ", ".join(
        f"{k} {v:.4f}"
        + (f" (v{evidence.get('serving_version')}: {serving[k]:.4f})" if k in serving else "")
        for k, v in sorted((evidence.get("metrics") or {}).items())
    )
    if numbers:
        console.print(f"            on held-out data: {numbers}")


TRUST_HELP = (
    "Load a pickle (.pkl/.joblib, or an MLflow pickle/cloudpickle model) although loading it "
    "runs any code it carries. Only for files you made yourself; recorded on the version and "
    "in the audit log. Without it pickles are refused: register a .skops file instead."
)


@models_app.command("register")
def register_version(
    name: str = NAME_ARG,
    path: Path = typer.Argument(
        ..., help="A .skops or .onnx file (a pickle only with the trust flag)."
    ),
    training_data: Path = typer.Option(
        None, "--training-data", help="CSV/Parquet: signature and reference profile."
    ),
    signature: Path = typer.Option(None, "--signature", help="A signature JSON file."),
    alias: str = typer.Option(None, "--alias", help="Point this alias at the new version."),
    metric: list[str] = typer.Option([], "--metric", help="key=value, repeatable."),
    tag: list[str] = typer.Option([], "--tag", help="key=value, repeatable."),
    trust_pickle: bool = flag(TRUST_FLAG, help=TRUST_HELP),
) -> None:
    """Register a model file as a new version."""
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    metrics = {k: float(v) for k, v in _pairs(metric, "metric").items()}
    frame = _read_frame(training_data) if training_data else None
    sig = None
    if signature is not None:
        try:
            sig = Signature.from_json(json.loads(signature.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"cannot read signature {signature}: {exc}") from None
    file = read_model_file(path, trust_pickle=trust_pickle)
    info = Registry.of(open_workspace()).register(
        name, file.model, flavor=file.flavor, signature=sig, training_data=frame, metrics=metrics,
        tags=_pairs(tag, "tag"), alias=alias, artifact=file.artifact, trust=file.trust,
    )  # fmt: skip
    console.print(f"[green]✓[/] registered {info.model} v{info.version} ({info.flavor})")
    _say_trusted(info)


def _say_trusted(info: VersionInfo) -> None:
    trust = info.lineage.get("trust")
    if trust:
        console.print(
            f"[yellow]![/] {trust['source']} was unpickled under {trust['flag']} by "
            f"{trust['by'] or '-'}; recorded on v{info.version} and in the audit log"
        )


@models_app.command("validate")
def validate(
    name: str = NAME_ARG,
    data: Path = typer.Argument(..., help="CSV/Parquet evaluation data, features and label."),
    version: int = typer.Option(..., "--version", "-v", help="The version to validate."),
    label: str = typer.Option(..., "--label", help="The label column of DATA."),
    deploy: bool = flag(
        "--deploy", help="When blessed, start its rollout (it still waits for approvals)."
    ),
    actor: str | None = typer.Option(None, "--as", help="Who does this (default: SHIPYARD_USER)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Run the validation gate of NAME's policy on VERSION: its absolute thresholds, and no
    regression against the serving version on the same DATA. The result is kept on the version;
    a failed gate blocks `shipyard deploy`. Exit code 3 when the version is not blessed."""
    from shipyard.deploy.gate import validate_and_deploy, validate_version

    ws = open_workspace(create=False)
    require(ws, "model", name)
    frame = _read_frame(data, "evaluation data")
    if label not in frame.columns:
        raise InvalidInput(f"{data} has no column {label!r} (columns: {', '.join(frame.columns)})")
    registry = Registry.of(ws)
    x, y = frame.drop(columns=label), frame[label]
    if deploy:
        outcome, view = validate_and_deploy(registry, name, version, x, y, actor=actor)
    else:
        outcome, view = validate_version(registry, name, version, x, y, actor=actor), None
    if as_json:
        print_json({**outcome.evidence(), "rollout": view.to_json() if view else None})
    else:
        mark = "[green]✓ blessed[/]" if outcome.passed else "[red]✗ not blessed[/]"
        console.print(f"{mark} {name} v{version}: " + "; ".join(outcome.reasons))
        serving = outcome.serving_version
        for metric, value in sorted(outcome.metrics.items()):
            was = outcome.serving_metrics.get(metric)
            versus = f"   (serving v{serving}: {was:.4f})" if was is not None else ""
            console.print(f"  {metric:<10} {value:.4f}{versus}")
        if view is not None:
            console.print(f"rollout {view.id}: {view.state} — `shipyard rollout status {view.id}`")
    if not outcome.passed:
        raise typer.Exit(3)


@models_app.command("import-mlflow")
def import_mlflow_cmd(
    folder: Path = typer.Argument(..., help="The MLflow model folder (with its MLmodel file)."),
    name: str = typer.Option(..., "--name", help="The registered model's name."),
    alias: str = typer.Option(None, "--alias", help="Point this alias at the new version."),
    trust_pickle: bool = flag(TRUST_FLAG, help=TRUST_HELP),
) -> None:
    """Import an MLflow model folder (sklearn flavor) without needing MLflow.

    A skops model is imported as it is; a pickled one only with the trust flag, and it is then
    re-saved as skops. Files the folder names must stay inside it."""
    registry = Registry.of(open_workspace())
    info = import_mlflow(registry, folder, name, alias, trust_pickle=trust_pickle)
    console.print(f"[green]✓[/] imported {folder} as {info.model} v{info.version} ({info.flavor})")
    _say_trusted(info)


@models_app.command()
def alias(
    name: str = NAME_ARG,
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="The alias, e.g. champion."),
    version: int = typer.Argument(None, help="The version; leave out with --delete."),
    delete: bool = flag("--delete", help="Remove the alias."),
    reason: str = typer.Option("", "--reason", help="Why (kept in the history)."),
) -> None:
    """Move an alias (e.g. champion) to a version; the move is kept in the history.

    The default alias decides what a model server serves only while deploy has no traffic split
    for the model: once a version was deployed, `shipyard deploy` and `shipyard rollback` decide,
    and moving the default alias elsewhere is refused (it would change nothing)."""
    from shipyard.cli.connect import client

    if version is None and not delete:
        raise InvalidInput("give a version, or --delete to remove the alias")
    if delete:
        move = client().call("models.alias.delete", name=name, alias=alias_name, reason=reason)
    else:
        move = client().call(
            "models.alias.set", name=name, alias=alias_name, version=version, reason=reason
        )
    live = _live_state(move["live"])
    console.print(f"[green]✓[/] {name}@{alias_name}: {move['from']} → {move['to']}")
    console.print(f"  serving: {live.describe() if live else 'nothing'}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

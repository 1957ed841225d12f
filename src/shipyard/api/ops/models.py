"""``/models``: the model registry read (models, versions, gate results, aliases and their
history) and its aliases moved.

Registering a model file and importing an MLflow folder are not here: they read files on the
machine that runs the command, so ``shipyard models register|import-mlflow|validate`` work on
the workspace directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    decode_cursor,
    encode_cursor,
    operation,
    page,
)
from shipyard.errors import InvalidInput, NotFound
from shipyard.identity import DEPLOY, READ

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.registry import Registry
    from shipyard.serving.live import LiveState

MAX_VERSION = 2**31 - 1
GATE_RESULTS = 20
"""How many of a version's gate results (newest first) its page carries."""


class AliasHistoryQuery(PageQuery):
    alias: str | None = Field(None, max_length=100, description="Only this alias's moves.")


class AliasSet(Params):
    version: int = Field(..., ge=1, le=MAX_VERSION, description="The version to point at.")
    reason: str = Field("", max_length=500, description="Why (kept in the alias history).")


class AliasDelete(Params):
    reason: str = Field("", max_length=500, description="Why (kept in the alias history).")


def _version_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidInput(f"version {text!r}: a version number (1, 2, …)")
    return int(text)


def _live(state: LiveState | None) -> dict[str, Any] | None:
    return state.to_json() if state is not None else None


def _registry(ctx: Context) -> Registry:
    from shipyard.registry import Registry

    ws = ctx.ws
    return Registry(ws.store, ws.artifacts, ws.clock, ctx.actor)


def _gate_results(s: Session, name: str, version: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from shipyard.monitoring.findings import jsonable
    from shipyard.store.deploy import GateResult

    rows = s.scalars(
        select(GateResult)
        .where(GateResult.model == name, GateResult.version == version)
        .order_by(GateResult.ts.desc(), GateResult.id.desc())
        .limit(GATE_RESULTS)
    )
    return [
        {"passed": bool(g.passed), "ts": g.ts, "actor": g.actor, "evidence": jsonable(g.evidence)}
        for g in rows
    ]


def _move(move: Any, live: LiveState | None) -> dict[str, Any]:
    return {
        "model": move.model,
        "alias": move.alias,
        "from": move.from_version,
        "to": move.to_version,
        "actor": move.actor,
        "reason": move.reason,
        "ts": move.ts,
        "live": _live(live),
    }


@operation("GET", "/models", name="models.list")
def list_models(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """Registered models by name: latest version, aliases, and what serves each now.

    Paged by name: `cursor` is the `next` of the previous page."""
    from shipyard.registry.listing import model_page
    from shipyard.serving.live import live_states

    ctx.require(READ)
    after = decode_cursor("models.list", query.cursor, str)
    with ctx.ws.store.session(readonly=True) as s:
        summaries, more = model_page(s, after[0] if after else None, query.limit)
        live = live_states(s, [m.model.name for m in summaries])
    items = [{**m.to_json(), "live": _live(live.get(m.model.name))} for m in summaries]
    return page(items, encode_cursor("models.list", summaries[-1].model.name) if more else None)


@operation("GET", "/models/{name}", name="models.get")
def get_model(ctx: Context, *, name: str) -> dict[str, Any]:
    """One model: its aliases, latest version, the version its default alias names
    (`default_version`; the latest when that alias is unset) and what serves it now."""
    from shipyard.registry import require_model_in
    from shipyard.registry.listing import aliases_in, latest_version_in
    from shipyard.serving.live import live_states

    ctx.require(READ)
    with ctx.ws.store.session(readonly=True) as s:
        model = require_model_in(s, name)
        aliases = aliases_in(s, name)
        latest = latest_version_in(s, name)
        live = live_states(s, name).get(name)
    return {
        "name": model.name,
        "description": model.description,
        "default_alias": model.default_alias,
        "created_at": model.created_at,
        "created_by": model.created_by,
        "latest_version": latest,
        "default_version": aliases.get(model.default_alias, latest),
        "aliases": aliases,
        "live": _live(live),
    }


@operation("GET", "/models/{name}/versions", name="models.versions")
def list_versions(ctx: Context, *, name: str, query: PageQuery) -> dict[str, Any]:
    """A model's versions, newest first, without their signatures (one version's page has it).

    Paged by version number: `cursor` is the `next` of the previous page."""
    from shipyard.registry import require_model_in
    from shipyard.registry.listing import aliases_in, version_page

    ctx.require(READ)
    before = decode_cursor("models.versions", query.cursor, int)
    with ctx.ws.store.session(readonly=True) as s:
        require_model_in(s, name)
        versions, more = version_page(s, name, before[0] if before else None, query.limit)
        aliases = aliases_in(s, name)
    items = []
    for v in versions:
        shown = v.to_json()
        del shown["signature"]
        shown["aliases"] = sorted(a for a, n in aliases.items() if n == v.version)
        items.append(shown)
    following = encode_cursor("models.versions", versions[-1].version) if more else None
    return page(items, following)


@operation("GET", "/models/{name}/versions/{version}", name="models.version")
def get_version(ctx: Context, *, name: str, version: str) -> dict[str, Any]:
    """One version: flavor, artifact digest, signature, metrics, tags, lineage (with how a
    pickle came to be trusted), the aliases naming it, and its validation gate results (newest
    first, the last 20)."""
    from shipyard.registry import require_model_in
    from shipyard.registry.listing import aliases_in, version_in

    ctx.require(READ)
    number = _version_number(version)
    with ctx.ws.store.session(readonly=True) as s:
        require_model_in(s, name)
        info = version_in(s, name, number)
        if info is None:
            raise NotFound("model version", f"{name}/{number}", "see `shipyard models show`")
        aliases = aliases_in(s, name)
        gates = _gate_results(s, name, number)
    return {
        **info.to_json(),
        "aliased_as": sorted(a for a, n in aliases.items() if n == number),
        "gate_results": gates,
    }


@operation("GET", "/models/{name}/aliases", name="models.aliases")
def alias_history(ctx: Context, *, name: str, query: AliasHistoryQuery) -> dict[str, Any]:
    """Where a model's aliases point now (`aliases`) and every move of them, newest first:
    who, when, from which version to which, and why.

    Paged: `cursor` is the `next` of the previous page."""
    from shipyard.registry import require_model_in
    from shipyard.registry.listing import alias_moves_page, aliases_in

    ctx.require(READ)
    before = decode_cursor("models.aliases", query.cursor, int)
    with ctx.ws.store.session(readonly=True) as s:
        require_model_in(s, name)
        moves, more = alias_moves_page(
            s, name, query.alias, before[0] if before else None, query.limit
        )
        aliases = aliases_in(s, name)
    items = [
        {"id": i, "alias": m.alias, "from": m.from_version, "to": m.to_version,
         "actor": m.actor, "reason": m.reason, "ts": m.ts}
        for i, m in moves
    ]  # fmt: skip
    following = encode_cursor("models.aliases", moves[-1][0]) if more else None
    return page(items, following, aliases=aliases)


@operation("PUT", "/models/{name}/aliases/{alias}", name="models.alias.set")
def set_alias(ctx: Context, *, name: str, alias: str, body: AliasSet) -> dict[str, Any]:
    """Point an alias (e.g. champion) at a version; the move is kept in the alias history and
    the audit. Needs the deployer role over the model.

    While deploy's traffic split decides what serves the model, moving its default alias to
    another version is refused (it would change nothing): deploy or roll back instead."""
    from shipyard.serving.live import move_alias

    ctx.require(DEPLOY, f"model:{name}")
    move, live = move_alias(_registry(ctx), name, alias, body.version, body.reason)
    return _move(move, live)


@operation("DELETE", "/models/{name}/aliases/{alias}", name="models.alias.delete")
def delete_alias(ctx: Context, *, name: str, alias: str, query: AliasDelete) -> dict[str, Any]:
    """Remove an alias; kept in the alias history and the audit. Needs the deployer role over
    the model (and is refused for the default alias while a traffic split decides)."""
    from shipyard.serving.live import move_alias

    ctx.require(DEPLOY, f"model:{name}")
    move, live = move_alias(_registry(ctx), name, alias, None, query.reason)
    return _move(move, live)

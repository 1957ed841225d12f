"""The deployment task of the control loop: advance every rollout one step, and keep the
registry's default alias on the production version (what model servers without a split read).
"""

from __future__ import annotations

import logging
from typing import Any

from shipyard.clock import Clock
from shipyard.deploy.canary import ServingAnalyzer
from shipyard.deploy.diagnosis import Diagnoser
from shipyard.deploy.engine import Advance, Engine
from shipyard.deploy.production import production_span
from shipyard.deploy.replay import LogReplay
from shipyard.deploy.shadow import ShadowLog
from shipyard.deploy.staging import RegistrySmokeCheck
from shipyard.deploy.tracing import ServingTraces
from shipyard.errors import ShipyardError
from shipyard.registry import Registry, models_in
from shipyard.store.deploy import ProductionRecord
from shipyard.workspace import Workspace

log = logging.getLogger("shipyard.deploy")


def engine_for(workspace: Workspace, clock: Clock | None = None) -> Engine:
    clock = clock or workspace.clock
    registry = Registry(workspace.store, workspace.artifacts, clock, "shipyard-daemon")
    return Engine(
        store=workspace.store,
        clock=clock,
        smoke=RegistrySmokeCheck(registry),
        analyzer=ServingAnalyzer(workspace.store),
        diagnosis=Diagnoser(workspace.store, workspace.artifacts, registry),
        traces=ServingTraces(workspace.store),
        replay=LogReplay(workspace.store, workspace.artifacts, registry),
        shadow=ShadowLog(workspace.store, workspace.artifacts),
    )


def sync_aliases(
    workspace: Workspace,
    clock: Clock | None = None,
    *,
    actor: str = "shipyard-deploy",
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Point each deployed model's default alias (or only ``model``'s) at its production
    version, as ``actor`` (the control loop's name, or the person whose rollback moved it).

    Only when production changed after the alias last moved. Once deploy's split decides what
    serves a model, ``shipyard models alias`` may move its default alias only to the version the
    split serves alone (``serving.live.move_alias``), so this pass and a person agree.
    """
    registry = Registry(workspace.store, workspace.artifacts, clock or workspace.clock, actor)
    moved = []
    with workspace.store.session() as s:
        models = {r.model for r in s.query(ProductionRecord.model).distinct()}
        if model is not None:
            models &= {model}
        production = {m: production_span(s, m) for m in models}
        defaults = {m.name: m.default_alias for m in models_in(s)}
    for name, span in production.items():
        if span is None or name not in defaults:
            continue
        version, since = span
        alias = defaults[name]
        history = registry.alias_history(name, alias)
        if history and (history[-1].to_version == version or history[-1].ts > since):
            continue
        try:
            registry.set_alias(name, alias, version, reason="deploy: production version")
        except ShipyardError as exc:
            log.warning("cannot move the alias of %s to %s: %s", name, version, exc)
            continue
        moved.append({"model": name, "alias": alias, "to": version})
    return moved


def advance_rollouts(workspace: Workspace, clock: Clock | None = None) -> list[Advance]:
    """One pass: every active rollout moves on if it can; the aliases follow production."""
    done = engine_for(workspace, clock).advance_all()
    sync_aliases(workspace, clock)
    return done

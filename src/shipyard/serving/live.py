"""Which model versions are live, loaded in memory, and kept in step with the store.

:func:`live_versions` is the one place that answers "which versions of model m serve traffic,
with which weight". Today that is the version its default alias (``champion`` unless the model
says otherwise) points to, weight 1. The deployment wing adds traffic splits here — a sticky
canary routes by a stable hash of a routing key (:func:`pick`) — without touching the server.

:class:`LiveModels` polls the store every ``refresh_interval_s`` in a background thread, loads
versions that became live (verifying their sha256 first) and swaps the routing table in one
assignment, so requests never wait on the store and an alias move is served within about one
refresh interval.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from shipyard.errors import ShipyardError
from shipyard.registry import Registry, VersionInfo
from shipyard.registry.flavors import Predictor
from shipyard.store.registry import ModelAlias, RegisteredModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("shipyard.serving")


@dataclass(frozen=True)
class LiveVersion:
    version: int
    weight: float


@dataclass(frozen=True)
class Loaded:
    """A live version in memory."""

    info: VersionInfo
    predictor: Predictor

    @property
    def model(self) -> str:
        return self.info.model

    @property
    def version(self) -> int:
        return self.info.version


def live_versions(session: Session) -> dict[str, list[LiveVersion]]:
    """Every served model and its live versions with their traffic weights (summing to 1)."""
    rows = session.execute(
        select(ModelAlias.model, ModelAlias.version)
        .join(RegisteredModel, RegisteredModel.name == ModelAlias.model)
        .where(ModelAlias.alias == RegisteredModel.default_alias)
    ).all()
    return {model: [LiveVersion(version, 1.0)] for model, version in rows}


def pick(candidates: list[Loaded], weights: list[float], routing_key: str) -> Loaded:
    """The version that serves ``routing_key``: a stable hash into the cumulative weights.

    The same key always lands on the same version while the weights stay the same (sticky).
    """
    if len(candidates) == 1:
        return candidates[0]
    bucket = int.from_bytes(hashlib.blake2b(routing_key.encode(), digest_size=8).digest()) / 2**64
    total, acc = sum(weights), 0.0
    for loaded, weight in zip(candidates, weights, strict=True):
        acc += weight / total
        if bucket < acc:
            return loaded
    return candidates[-1]


@dataclass(frozen=True)
class Route:
    candidates: list[Loaded]
    weights: list[float]


class LiveModels:
    """The routing table of one worker, refreshed from the store in the background."""

    def __init__(self, registry: Registry, refresh_interval_s: float = 0.5) -> None:
        self.registry = registry
        self.refresh_interval_s = refresh_interval_s
        self.routes: dict[str, Route] = {}
        self._cache: dict[tuple[str, int], Loaded] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def refresh(self) -> None:
        """Read the live versions, load what is new, swap the routing table."""
        with self.registry.store.session() as s:
            wanted = live_versions(s)
        routes: dict[str, Route] = {}
        for model, live in wanted.items():
            loaded, weights = [], []
            for lv in live:
                got = self._load(model, lv.version)
                if got is not None:
                    loaded.append(got)
                    weights.append(lv.weight)
            if loaded:
                routes[model] = Route(loaded, weights)
        keep = {(m, x.version) for m, r in routes.items() for x in r.candidates}
        self._cache = {k: v for k, v in self._cache.items() if k in keep}
        self.routes = routes

    def _load(self, model: str, version: int) -> Loaded | None:
        key = (model, version)
        if key in self._cache:
            return self._cache[key]
        if key in self._failed:
            return None
        try:
            info, predictor = self.registry.load(model, version=version)
        except ShipyardError as exc:
            self._failed[key] = str(exc)
            log.error("cannot serve %s/%s: %s", model, version, exc)
            return None
        loaded = Loaded(info, predictor)
        self._cache[key] = loaded
        return loaded

    def failure(self, model: str) -> str | None:
        for (m, _), why in self._failed.items():
            if m == model:
                return why
        return None

    def route(self, model: str, routing_key: str) -> Loaded | None:
        route = self.routes.get(model)
        if route is None:
            return None
        return pick(route.candidates, route.weights, routing_key)

    def version(self, model: str, version: int) -> Loaded | None:
        route = self.routes.get(model)
        if route is None:
            return None
        for loaded in route.candidates:
            if loaded.version == version:
                return loaded
        return None

    # -- background refresh --------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="shipyard-refresh", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_interval_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # the store may be away for a while: keep serving
                self.last_error = str(exc)
                log.warning("refresh of live models failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return {m: [c.version for c in r.candidates] for m, r in self.routes.items()}

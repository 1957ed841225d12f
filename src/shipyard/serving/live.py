"""Which model versions are live, loaded in memory, and kept in step with the store.

:func:`live_versions` is the one place that answers "which versions of model m serve traffic,
with which weight". A model that deploy manages has a live traffic split
(:func:`shipyard.deploy.traffic.live_splits_in`): its stable version and, during a rollout, its
canary with the canary's weight. Any other model is served by the version its default alias
(``champion`` unless the model says otherwise) points to. While a model has a split, the split
decides: move its production version with ``shipyard rollback`` or a rollout, not by hand.

Routing is deploy's sticky canary rule (:func:`shipyard.deploy.routing.choose_version`): a
sha256 bucket of the routing key below the canary's weight goes to the canary. It is a pure
function of the key and the split, so every worker and every replica sends a user to the same
version, and raising the canary's weight only moves users from stable to canary.

:class:`LiveModels` polls the store every ``refresh_interval_s`` in a background thread, loads
versions that became live (verifying their sha256 first) and swaps the routing table in one
assignment, so requests never wait on the store and a split or alias change is served within
about one refresh interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from shipyard.errors import ShipyardError
from shipyard.registry import Registry, VersionInfo
from shipyard.registry.flavors import Predictor
from shipyard.store.registry import ModelAlias, RegisteredModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("shipyard.serving")

ROUTING_HEADERS = (b"x-shipyard-routing-key", b"x-user-id")
"""The headers that carry a routing key, first match wins (the names of
:data:`shipyard.deploy.routing.ROUTING_HEADERS`, as ASGI's lower-case bytes)."""


@dataclass(frozen=True)
class LiveVersion:
    """One live version: its share of the traffic (0–1) and whether it is a rollout's canary."""

    version: int
    weight: float
    canary: bool = False


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
    """Every served model and its live versions with their traffic weights (summing to 1).

    A model with a deploy traffic split is served by the split; any other by its default alias.
    """
    from shipyard.deploy.traffic import live_splits_in  # deploy imports serving: import late

    out: dict[str, list[LiveVersion]] = {}
    for model, split in live_splits_in(session).items():
        total = sum(split.weights.values())
        if total > 0:
            out[model] = [
                LiveVersion(version, pct / total, version == split.canary)
                for version, pct in sorted(split.weights.items())
            ]
    rows = session.execute(
        select(ModelAlias.model, ModelAlias.version)
        .join(RegisteredModel, RegisteredModel.name == ModelAlias.model)
        .where(ModelAlias.alias == RegisteredModel.default_alias)
    ).all()
    for model, version in rows:
        out.setdefault(model, [LiveVersion(version, 1.0)])
    return out


def routing_key(headers: Mapping[bytes, bytes], request_id: str) -> str:
    """The key a request is routed by: the caller's routing-key or user-id header (sticky per
    user), else the request id — the same string :func:`shipyard.deploy.routing.routing_key`
    makes, so deploy and serving agree on who is in the canary."""
    for name in ROUTING_HEADERS:
        value = headers.get(name)
        if value:
            return f"user:{value.decode('latin-1')}"
    return f"request:{request_id}"


@dataclass(frozen=True)
class Route:
    """One model's loaded live versions and the split (version → percent) that routes them."""

    candidates: list[Loaded]
    weights: list[float]
    canary: int | None = None
    split_pct: dict[int, float] = field(default_factory=dict)
    by_version: dict[int, Loaded] = field(default_factory=dict)
    choose: Callable[[str, Mapping[int, float], int | None], int] | None = None


def route_of(live: list[tuple[Loaded, LiveVersion]]) -> Route:
    """The route over the versions that loaded (a canary that failed to load gets no traffic)."""
    from shipyard.deploy.routing import choose_version

    candidates = [loaded for loaded, _ in live]
    canary = next((lv.version for _, lv in live if lv.canary), None)
    return Route(
        candidates=candidates,
        weights=[lv.weight for _, lv in live],
        canary=canary,
        split_pct={lv.version: 100.0 * lv.weight for _, lv in live},
        by_version={loaded.version: loaded for loaded in candidates},
        choose=choose_version,
    )


def pick(route: Route, key: str) -> Loaded:
    """The version that serves ``key``: deploy's sticky rule over the route's split."""
    if len(route.candidates) == 1 or route.choose is None:
        return route.candidates[0]
    return route.by_version[route.choose(key, route.split_pct, route.canary)]


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
            loaded = []
            for lv in live:
                got = self._load(model, lv.version)
                if got is not None:
                    loaded.append((got, lv))
            if loaded:
                routes[model] = route_of(loaded)
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
        return pick(route, routing_key)

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

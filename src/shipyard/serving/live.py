"""Which model versions are live, loaded in memory, and kept in step with the store.

**What "live" means** (issue #19): one rule, :func:`live_states`, that the model server, ``models
list``/``show`` and ``models alias`` all use. A model that deploy manages has a live traffic split
(serving's own, :mod:`shipyard.serving.split`, which deploy commands): its stable version and,
during a rollout, its canary with the canary's weight; the split decides. Any other model is
served by the version its default alias (``champion`` unless the model says otherwise) points to,
read through the registry's views (:func:`shipyard.registry.default_aliases_in`).
:class:`LiveState` says which versions with which weights, and what decided them. While a split
decides, the default alias cannot be moved to another version (:func:`move_alias` refuses,
naming ``shipyard deploy`` and ``shipyard rollback``), so no command reports a change that
serves nothing.

Routing is serving's sticky canary rule (:func:`shipyard.serving.routing.choose_version`): a
request whose headers match a targeted step, or whose sha256 bucket (salted by the model and
the rollout, so each rollout draws a fresh cohort) is below the canary's weight, goes to the
canary. It is a pure function of the request and the split, so every worker and every replica
sends a user to the same version, and raising the canary's weight only moves users from stable
to canary.

:class:`LiveModels` polls the store every ``refresh_interval_s`` in a background thread, loads
versions that became live (verifying their sha256 first) and swaps the routing table in one
assignment, so requests never wait on the store and a split or alias change is served within
about one refresh interval. A live version that failed to load (a tampered or missing artifact, a
store away for a moment) is tried again on a later refresh, after 1 s, then 2, 4… up to 60 s
between tries (:func:`retry_delay_s`), so a fixed artifact is served without a restart and a
broken one costs a read a minute. :meth:`LiveModels.unservable` names each live model that has no
version loaded, and why, as of the last refresh.

A split's **shadow** version is loaded like a live one but routed no user: the route carries it
and its share, for :mod:`shipyard.serving.shadow` to copy requests to. A shadow that fails to
load is retried the same way and shadows nothing meanwhile; it never makes a model unservable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput, ShipyardError
from shipyard.registry import (
    AliasMove,
    Registry,
    VersionInfo,
    default_aliases_in,
    require_model_in,
)
from shipyard.registry.flavors import Predictor
from shipyard.serving.routing import Cohort, asgi_routing_key, choose_version
from shipyard.serving.split import live_splits_in

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

routing_key = asgi_routing_key
"""The key a request is routed by, from its ASGI headers (:mod:`shipyard.serving.routing`)."""

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


def retry_delay_s(failures: int) -> float:
    """Seconds before a version that failed to load ``failures`` times in a row is tried again:
    1 s after the first failure, doubling, at most 60 s."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(failures - 1, 32))


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


@dataclass(frozen=True)
class LiveState:
    """What serves one model now, and what decides it.

    ``decided_by`` is ``"split"`` (deploy's traffic split, of rollout ``rollout_id`` when a
    rollout wrote it) or ``"alias"`` (the model's default alias ``alias``).
    """

    model: str
    versions: tuple[LiveVersion, ...]
    decided_by: Literal["split", "alias"]
    rollout_id: str | None = None
    alias: str | None = None
    cohort: Cohort | None = None
    """How the canary draws its users, during a rollout's canary."""
    shadow: int | None = None
    """The version that answers copies of ``shadow_pct`` percent of the requests, no user."""
    shadow_pct: float = 0.0

    @property
    def sole_version(self) -> int | None:
        """The version that takes all the traffic, if one does."""
        return self.versions[0].version if len(self.versions) == 1 else None

    @property
    def decider(self) -> str:
        if self.decided_by == "alias":
            return f"alias {self.alias}"
        if self.rollout_id:
            return f"the traffic split of rollout {self.rollout_id}"
        return "deploy's traffic split"

    def describe(self) -> str:
        """``v1 100%`` or ``v1 80%, v2 20% (canary)``, and what decides it."""
        targets = self.cohort.targets if self.cohort is not None else ()
        shares = ", ".join(
            f"v{v.version} {100 * v.weight:.4g}%"
            + (" (canary" + "".join(f"; {t.describe()}" for t in targets) + ")" if v.canary else "")
            for v in self.versions
        )
        if self.shadow is not None:
            shares += f", v{self.shadow} shadowing {self.shadow_pct:.4g}% (no user)"
        return f"{shares} by {self.decider}"

    def brief(self) -> str:
        """``v1 (split r-1)``, ``v1 75%, v2 25% (split)``, ``v2 (alias champion)``: for tables."""
        if len(self.versions) == 1:
            shares = f"v{self.versions[0].version}"
        else:
            shares = ", ".join(f"v{v.version} {100 * v.weight:.4g}%" for v in self.versions)
        if self.decided_by == "alias":
            return f"{shares} (alias {self.alias})"
        return f"{shares} (split {self.rollout_id})" if self.rollout_id else f"{shares} (split)"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "versions": [
                {"version": v.version, "weight": v.weight, "canary": v.canary}
                for v in self.versions
            ],
            "decided_by": self.decided_by,
            "rollout_id": self.rollout_id,
            "alias": self.alias,
            "shadow": self.shadow,
            "shadow_pct": self.shadow_pct,
            "description": self.describe(),
        }


def live_states(
    session: Session, model: str | Collection[str] | None = None
) -> dict[str, LiveState]:
    """Every served model (or just ``model``, or those of a collection) and what serves it:
    the one rule of "live".

    A model with a deploy traffic split is served by the split; any other by its default alias.
    """
    only = {model} if isinstance(model, str) else set(model) if model is not None else None
    out: dict[str, LiveState] = {}
    for name, split in live_splits_in(session).items():
        total = sum(split.weights.values())
        if total > 0 and (only is None or name in only):
            versions = tuple(
                LiveVersion(version, pct / total, version == split.canary)
                for version, pct in sorted(split.weights.items())
            )
            out[name] = LiveState(
                name,
                versions,
                "split",
                rollout_id=split.rollout_id,
                cohort=split.cohort,
                shadow=split.shadow,
                shadow_pct=split.shadow_pct,
            )
    for pointer in default_aliases_in(session, only):
        if pointer.model not in out:
            out[pointer.model] = LiveState(
                pointer.model, (LiveVersion(pointer.version, 1.0),), "alias", alias=pointer.alias
            )
    return out


def live_state(store: Store, model: str) -> LiveState | None:
    """What serves ``model`` now (None: nothing does)."""
    with store.session() as s:
        return live_states(s, model).get(model)


def live_versions(session: Session) -> dict[str, list[LiveVersion]]:
    """Every served model and its live versions with their traffic weights (summing to 1)."""
    return {m: list(state.versions) for m, state in live_states(session).items()}


class ServedBySplit(InvalidInput):
    """Moving a model's serving alias while deploy's traffic split decides what it serves."""

    def __init__(self, state: LiveState, alias: str, version: int | None) -> None:
        self.state = state
        self.alias = alias
        self.version = version
        to = f"to v{version}" if version is not None else "away"
        deploy = f"`shipyard deploy {state.model} --version {version}`" if version else ""
        super().__init__(
            f"{state.model} is served by deployment ({state.describe()}): moving {alias} {to} "
            "would not change what is served, so it is not moved; "
            + (f"deploy it under the model's policy with {deploy}, or " if deploy else "")
            + f"go back with `shipyard rollback {state.model}`"
        )


def move_alias(
    registry: Registry, model: str, alias: str, version: int | None, reason: str = ""
) -> tuple[AliasMove, LiveState | None]:
    """Move ``alias`` as :meth:`Registry.set_alias` does, unless it would report a change that
    serves nothing: the default alias of a model whose traffic a deploy split decides may only
    be set to the version the split serves alone. Returns the move and what serves the model
    after it, read in the same transaction."""
    with registry.store.session(immediate=True) as s:
        found = require_model_in(s, model)
        state = live_states(s, model).get(model)
        if (
            state is not None
            and state.decided_by == "split"
            and alias == found.default_alias
            and (version is None or version != state.sole_version)
        ):
            raise ServedBySplit(state, alias, version)
        move = registry.set_alias_in(s, model, alias, version, reason)
        s.flush()
        return move, live_states(s, model).get(model)


@dataclass(frozen=True)
class Route:
    """One model's loaded live versions and the split (version → percent) that routes them."""

    candidates: list[Loaded]
    weights: list[float]
    canary: int | None = None
    split_pct: dict[int, float] = field(default_factory=dict)
    by_version: dict[int, Loaded] = field(default_factory=dict)
    choose: Chooser | None = None
    cohort: Cohort | None = None
    shadow: Loaded | None = None
    """The loaded shadow version: answers copies of ``shadow_pct`` percent of the requests."""
    shadow_pct: float = 0.0


Chooser = Callable[
    [str, Mapping[int, float], int | None, Cohort | None, Mapping[bytes, bytes] | None], int
]


def route_of(
    live: list[tuple[Loaded, LiveVersion]],
    cohort: Cohort | None = None,
    shadow: Loaded | None = None,
    shadow_pct: float = 0.0,
) -> Route:
    """The route over the versions that loaded (a canary that failed to load gets no traffic)."""
    candidates = [loaded for loaded, _ in live]
    canary = next((lv.version for _, lv in live if lv.canary), None)
    if cohort is None and canary is not None:
        cohort = Cohort(candidates[0].model, "")
    return Route(
        candidates=candidates,
        weights=[lv.weight for _, lv in live],
        canary=canary,
        split_pct={lv.version: 100.0 * lv.weight for _, lv in live},
        by_version={loaded.version: loaded for loaded in candidates},
        choose=choose_version,
        cohort=cohort,
        shadow=shadow,
        shadow_pct=shadow_pct if shadow is not None else 0.0,
    )


def pick(route: Route, key: str, headers: Mapping[bytes, bytes] | None = None) -> Loaded:
    """The version that serves the request: the sticky rule over the route's split."""
    if len(route.candidates) == 1 or route.choose is None:
        return route.candidates[0]
    chosen = route.choose(key, route.split_pct, route.canary, route.cohort, headers)
    return route.by_version[chosen]


@dataclass(frozen=True)
class LoadFailure:
    """Why a live version could not be loaded, how many times in a row, and when to try again
    (on the :class:`~shipyard.clock.Clock`'s monotonic time)."""

    why: str
    failures: int
    retry_at: float


class LiveModels:
    """The routing table of one worker, refreshed from the store in the background."""

    def __init__(
        self, registry: Registry, refresh_interval_s: float = 0.5, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.registry = registry
        self.refresh_interval_s = refresh_interval_s
        self.clock = clock
        self.routes: dict[str, Route] = {}
        self._unservable: dict[str, str] = {}
        self._cache: dict[tuple[str, int], Loaded] = {}
        self._failed: dict[tuple[str, int], LoadFailure] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def refresh(self) -> None:
        """Read the live versions, load what is new (and what failed, once its retry is due),
        swap the routing table."""
        with self.registry.store.session() as s:
            wanted = live_states(s)
        routes: dict[str, Route] = {}
        unservable: dict[str, str] = {}
        for model, state in wanted.items():
            loaded = []
            for lv in state.versions:
                got = self._load(model, lv.version)
                if got is not None:
                    loaded.append((got, lv))
            if loaded:
                shadow = None
                if state.shadow is not None and state.shadow_pct > 0:
                    shadow = self._load(model, state.shadow)
                routes[model] = route_of(loaded, state.cohort, shadow, state.shadow_pct)
            else:
                unservable[model] = "; ".join(
                    self._failed[model, lv.version].why for lv in state.versions
                )
        live = {(m, lv.version) for m, state in wanted.items() for lv in state.versions}
        live |= {(m, state.shadow) for m, state in wanted.items() if state.shadow is not None}
        self._failed = {k: v for k, v in self._failed.items() if k in live}
        keep = {(m, x.version) for m, r in routes.items() for x in r.candidates}
        keep |= {(m, r.shadow.version) for m, r in routes.items() if r.shadow is not None}
        self._cache = {k: v for k, v in self._cache.items() if k in keep}
        self._unservable = unservable
        self.routes = routes

    def _load(self, model: str, version: int) -> Loaded | None:
        key = (model, version)
        if key in self._cache:
            return self._cache[key]
        failed = self._failed.get(key)
        now = self.clock.monotonic()
        if failed is not None and now < failed.retry_at:
            return None
        try:
            info, predictor = self.registry.load(model, version=version)
        except Exception as exc:  # one version that cannot load must not stop the others
            why = str(exc) if isinstance(exc, ShipyardError) else f"{type(exc).__name__}: {exc}"
            failures = failed.failures + 1 if failed is not None else 1
            self._failed[key] = LoadFailure(why, failures, now + retry_delay_s(failures))
            log.error(
                "cannot serve %s/%s (failure %d; next try in %.0f s): %s",
                model, version, failures, retry_delay_s(failures), why,
            )  # fmt: skip
            return None
        if failed is not None:
            log.warning("%s/%s loaded after %d failures", model, version, failed.failures)
            del self._failed[key]
        loaded = Loaded(info, predictor)
        self._cache[key] = loaded
        return loaded

    def unservable(self) -> dict[str, str]:
        """Each live model with no version loaded here, and why, as of the last refresh.

        A canary that failed to load does not make its model unservable (its stable version
        takes the traffic); a model that became live since the last refresh is not counted yet.
        """
        return self._unservable

    def failure(self, model: str) -> str | None:
        """Why ``model`` cannot be served here (None: it can, or it is not live)."""
        return self._unservable.get(model)

    def route(
        self, model: str, routing_key: str, headers: Mapping[bytes, bytes] | None = None
    ) -> Loaded | None:
        """The loaded version that serves a request with this key (and these ASGI headers,
        which a targeted step matches on)."""
        route = self.routes.get(model)
        if route is None:
            return None
        return pick(route, routing_key, headers)

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

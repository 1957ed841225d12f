"""The model server's guarded doors: who may post labels, and who may ask a guarded model.

Feedback (``POST /v2/models/{m}/feedback``) always needs a token allowed
:data:`~shipyard.identity.FEEDBACK_WRITE` over ``model:{m}`` (the operator role, or a token
narrowed to it); a label is a claim about the truth that quality monitoring and canary verdicts
rest on, so nobody unnamed may write one. Inference is open unless the server was started with
``--auth MODEL`` (or ``--auth '*'``); then that model's predictions and metadata need
:data:`~shipyard.identity.PREDICT` over ``model:{m}`` (every role has it, scoped or global).
Probes, ``/metrics`` and the repository index stay open: load balancers and Prometheus call them.

Credentials are the control plane's (:class:`~shipyard.identity.authn.Authenticator`: API tokens,
and the identity provider's JWTs where ``server.oidc`` is set). A door is checked from the
request's headers alone, before its body is read, so a refused request costs no model time and
no body bytes. Checking a credential reads the store (and, for a JWT, may fetch the provider's key
set), so it runs on a small pool of its own threads, never on the event loop; a principal that
passed is remembered for ``ttl_s`` (5 s) under the SHA-256 of its credential, at most
``max_entries`` of them (least recently used forgotten first), so a busy client costs one
store read per ``ttl_s``, not one per request. The price is that a revoked token, or a role
taken away, still opens a door of a worker that saw it within the last ``ttl_s``. Concurrent
first requests with one credential share one check. Failures are not remembered: each one goes
to the authenticator, whose limiter refuses (429) an address or token that fails too often.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import ServerSettings
from shipyard.errors import InvalidInput
from shipyard.identity import Principal
from shipyard.identity.authn import Authenticator
from shipyard.identity.roles import check_scope
from shipyard.serving.execution import BoundedPool

EVERY_MODEL = "*"


def doors_settings(settings: ServerSettings) -> ServerSettings:
    """``settings`` for the doors' authenticator: the doors remember principals themselves
    (for ``ttl_s``, on the event loop), so their authenticator remembers none."""
    return settings.model_copy(update={"remember_s": 0.0})


def check_guarded(names: Iterable[str]) -> frozenset[str]:
    """The models named by ``--auth`` (``*``: every model); a name no scope can hold is refused."""
    guarded = frozenset(names)
    for name in guarded - {EVERY_MODEL}:
        try:
            check_scope(f"model:{name}")
        except InvalidInput:
            raise InvalidInput(
                f"--auth {name[:100]!r}: name a model (letters, digits, . _ -) or '*'"
            ) from None
    return guarded


class Doors:
    """Checks a request's ``Authorization`` header against an action over ``model:{name}``.

    ``guarded`` names the models whose inference needs a token (``*``: all); feedback always
    does. ``clock`` times the cache (its ``monotonic``)."""

    def __init__(
        self,
        authenticator: Authenticator,
        guarded: Iterable[str] = (),
        *,
        ttl_s: float = 5.0,
        max_entries: int = 1024,
        threads: int = 2,
        queue: int = 64,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.authenticator = authenticator
        self.guarded = check_guarded(guarded)
        self.every_model = EVERY_MODEL in self.guarded
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.pool = BoundedPool("authn", threads, queue)
        # touched only on the event loop: no lock
        self._known: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._checking: dict[bytes, asyncio.Future[Principal]] = {}

    def guards(self, model: str) -> bool:
        """Whether asking ``model`` for predictions needs a token here."""
        return self.every_model or model in self.guarded

    async def require(
        self, headers: dict[bytes, bytes], address: str, action: str, model: str
    ) -> Principal:
        """The principal of the request, if it may do ``action`` over ``model:{model}``.

        Raises :class:`~shipyard.errors.Unauthenticated` (401) without a valid credential,
        :class:`~shipyard.errors.Forbidden` (403) when its roles do not allow the action,
        :class:`~shipyard.errors.TooManyAttempts` (429) after too many failures, and
        :class:`~shipyard.errors.Overloaded` (503) when the checking threads are all busy."""
        principal = await self.principal(headers.get(b"authorization"), address)
        principal.require(action, f"model:{model}")
        return principal

    async def principal(self, authorization: bytes | None, address: str) -> Principal:
        if not authorization:
            return self.authenticator.authenticate(None, address)  # raises Unauthenticated
        key = hashlib.sha256(authorization).digest()
        now = self.clock.monotonic()
        known = self._known.get(key)
        if known is not None:
            if known[0] > now:
                self._known.move_to_end(key)
                return known[1]
            del self._known[key]
        checking = self._checking.get(key)
        if checking is None:
            header = authorization.decode("latin-1")
            checking = asyncio.ensure_future(self._check(key, header, address))
            self._checking[key] = checking
            checking.add_done_callback(lambda done: self._checked(key, done))
        return await asyncio.shield(checking)

    async def _check(self, key: bytes, header: str, address: str) -> Principal:
        principal = await self.pool.run(lambda: self.authenticator.authenticate(header, address))
        self._known[key] = (self.clock.monotonic() + self.ttl_s, principal)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        return principal

    def _checked(self, key: bytes, done: asyncio.Future[Principal]) -> None:
        self._checking.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so a check whose waiters left logs nothing

    def forget(self) -> None:
        """Drop every remembered principal (the next request of each is checked again)."""
        self._known.clear()

    def shutdown(self) -> None:
        self.pool.shutdown()

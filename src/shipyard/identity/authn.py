"""From an ``Authorization`` header to a :class:`Principal`: API tokens, OIDC bearer tokens,
and the limit on failed sign-ins."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import ServerSettings
from shipyard.errors import InvalidInput, ShipyardError, Unauthenticated
from shipyard.identity.accounts import GROUP_PREFIX, bindings_of, check_name, ensure_principal
from shipyard.identity.limiter import FailureLimiter
from shipyard.identity.oidc import OidcVerifier
from shipyard.identity.principal import Principal
from shipyard.identity.tokens import authenticate_token, looks_like_token, token_id_of
from shipyard.store import Store
from shipyard.store.identity import PrincipalRecord

SCHEME = "bearer"


class Authenticator:
    """Turns a request's credentials into who is acting, or refuses.

    ``Authorization: Bearer shy_…`` is an API token; any other bearer is a JWT for the OIDC
    provider, when one is configured. Identity never comes from anything else: no header, flag
    or variable names a user to the server.

    A verified API token's principal is remembered for ``server.remember_s`` (5 s; keyed by the
    token's SHA-256, at most ``max_remembered``, least recently used forgotten first), so most
    requests cost no store read for who is asking. :meth:`forget` drops them all; the server
    calls it after every change to identities, tokens or roles that it makes.
    """

    def __init__(
        self,
        store: Store,
        settings: ServerSettings | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        settings = settings or ServerSettings()
        self.store = store
        self.clock = clock
        self.oidc = OidcVerifier(settings.oidc) if settings.oidc.enabled else None
        self.limiter = FailureLimiter(settings.login_failures, settings.login_window_s)
        self.remember_s = settings.remember_s
        self.max_remembered = 1024
        self._known: set[str] = set()
        self._remembered: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, address: str = "") -> Principal:
        if not authorization:
            raise Unauthenticated(
                "this needs an API token: send `Authorization: Bearer <token>` "
                "(the CLI does after `shipyard login URL`, or with SHIPYARD_TOKEN)"
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != SCHEME or not credential:
            raise Unauthenticated("the Authorization header must be `Bearer <token>`")
        now = self.clock.time()
        key = hashlib.sha256(credential.encode("utf-8", "surrogateescape")).digest()
        remembered = self._recall(key, now)
        if remembered is not None:
            return remembered
        keys = [f"address:{address}"]
        if looks_like_token(credential):
            token_id = token_id_of(credential)
            if token_id:
                keys.append(f"token:{token_id}")
        self.limiter.check(keys, now)
        try:
            if looks_like_token(credential):
                principal = authenticate_token(self.store, credential, now)
                self._remember(key, principal, now)
                return principal
            if self.oidc is None:
                raise Unauthenticated(
                    "the bearer is not a Shipyard API token (shy_…), and this server has no "
                    "single sign-on configured (server.oidc)"
                )
            return self._oidc_principal(credential, now, keys)
        except Unauthenticated:
            self.limiter.failed(keys, now)
            raise

    def forget(self) -> None:
        """Forget every remembered token (after a change of identities, tokens or roles)."""
        with self._lock:
            self._remembered.clear()

    def _recall(self, key: bytes, now: float) -> Principal | None:
        if self.remember_s <= 0:
            return None
        with self._lock:
            found = self._remembered.get(key)
            if found is None:
                return None
            if found[0] <= now:
                del self._remembered[key]
                return None
            self._remembered.move_to_end(key)
            return found[1]

    def _remember(self, key: bytes, principal: Principal, now: float) -> None:
        """Keep a verified token's principal for ``remember_s`` (never past its expiry), so a
        busy client costs one store read per ``remember_s``; failures are never kept."""
        if self.remember_s <= 0:
            return
        until = now + self.remember_s
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        with self._lock:
            self._remembered[key] = (until, principal)
            self._remembered.move_to_end(key)
            while len(self._remembered) > self.max_remembered:
                self._remembered.popitem(last=False)

    def _oidc_principal(self, credential: str, now: float, keys: list[str]) -> Principal:
        assert self.oidc is not None
        name, groups = self.oidc.verify(credential)
        keys.append(f"user:{name}")
        try:
            check_name(name)
        except InvalidInput:
            raise Unauthenticated(
                f"the identity provider's user name {name[:40]!r} cannot be used"
            ) from None
        names = [name] + [f"{GROUP_PREFIX}{g}" for g in groups]
        try:
            with self.store.session(readonly=True) as s:
                row = s.get(PrincipalRecord, name)
                bindings = bindings_of(s, names)
            if row is not None and row.disabled_at is not None:
                raise Unauthenticated(f"{name} is disabled")
            if row is None and name not in self._known:
                with self.store.session() as s:
                    ensure_principal(s, name, kind="user", actor=name, now=now, mode="server")
            self._known.add(name)
        except ShipyardError as exc:
            if isinstance(exc, Unauthenticated):
                raise
            raise Unauthenticated(f"{name} cannot be signed in: {exc}") from None
        return Principal(name=name, kind="user", mode="server", via="oidc", bindings=bindings)

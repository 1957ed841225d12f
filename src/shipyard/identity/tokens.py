"""API tokens: ``shy_<id>_<secret>``, shown once, stored only as the SHA-256 of the secret.

The id is the token's public half (it names the token in listings and in the audit); the secret
is 32 random bytes (``secrets.token_urlsafe``), so one SHA-256 is enough to store it: there is
nothing to guess that a slow hash would protect (RFC 6750 bearer tokens carry no password). The
stored hash is compared in constant time (``hmac.compare_digest``), and an unknown id costs the
same hashing as a known one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from shipyard import audit
from shipyard.audit import Mode
from shipyard.errors import InvalidInput, NotFound, Unauthenticated
from shipyard.identity.accounts import KINDS, bindings_of, check_name, ensure_principal
from shipyard.identity.principal import Principal
from shipyard.identity.roles import Binding, check_role
from shipyard.store import Store
from shipyard.store.base import new_id
from shipyard.store.identity import ApiTokenRecord, PrincipalRecord

PREFIX = "shy_"
_TOKEN = re.compile(r"^shy_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()
LAST_USED_EVERY_S = 60.0
"""``last_used_at`` is written at most this often per token (not a write per request)."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_token(text: str) -> bool:
    return text.startswith(PREFIX)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    principal: str
    roles: tuple[str, ...]
    description: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "principal": self.principal,
            "roles": list(self.roles),
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "state": self.state(now),
        }

    @classmethod
    def of(cls, r: ApiTokenRecord) -> TokenInfo:
        return cls(
            r.id,
            r.principal,
            tuple(r.roles or ()),
            r.description,
            r.created_at,
            r.created_by,
            r.expires_at,
            r.revoked_at,
            r.last_used_at,
        )


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``secret`` is the whole token, shown this once and never again."""

    info: TokenInfo
    secret: str


def create_token(
    store: Store,
    principal: str,
    *,
    actor: str,
    now: float,
    mode: Mode,
    kind: str = "user",
    roles: tuple[str, ...] = (),
    expires_in_s: float | None = None,
    description: str = "",
) -> NewToken:
    """A new token for ``principal`` (created as ``kind`` if new), narrowed to ``roles`` if
    given, expiring after ``expires_in_s`` if given."""
    check_name(principal)
    if kind not in KINDS:
        raise InvalidInput(f"identity kind {kind!r}: use user or service")
    for role in roles:
        check_role(role)
    if expires_in_s is not None and not expires_in_s > 0:
        raise InvalidInput("a token's lifetime must be positive")
    if len(description) > 500:
        raise InvalidInput("a token's description is at most 500 characters")
    token_id = new_id()
    secret = secrets.token_urlsafe(32)
    expires_at = now + expires_in_s if expires_in_s is not None else None
    with store.session() as s:
        row = ensure_principal(s, principal, kind=kind, actor=actor, now=now, mode=mode)
        if row.disabled_at is not None:
            raise InvalidInput(f"{principal} is disabled; no token can be created for it")
        record = ApiTokenRecord(
            id=token_id,
            principal=principal,
            secret_hash=_digest(secret),
            roles=sorted(set(roles)),
            description=description,
            created_at=now,
            created_by=actor,
            expires_at=expires_at,
        )
        s.add(record)
        audit.token_granted(
            s,
            actor=actor,
            owner=principal,
            token_id=token_id,
            scopes=record.roles or ["*"],
            expires_at=expires_at,
            now=now,
            mode=mode,
        )
        s.flush()
        info = TokenInfo.of(record)
    return NewToken(info=info, secret=f"{PREFIX}{token_id}_{secret}")


def list_tokens(store: Store, principal: str | None = None) -> list[TokenInfo]:
    with store.session(readonly=True) as s:
        query = select(ApiTokenRecord).order_by(ApiTokenRecord.created_at, ApiTokenRecord.id)
        if principal is not None:
            query = query.where(ApiTokenRecord.principal == principal)
        return [TokenInfo.of(r) for r in s.scalars(query)]


def get_token(store: Store, token_id: str) -> TokenInfo:
    with store.session(readonly=True) as s:
        row = s.get(ApiTokenRecord, token_id)
        if row is None:
            raise NotFound("API token", token_id, "see `shipyard token list`")
        return TokenInfo.of(row)


def revoke_token(
    store: Store, token_id: str, *, actor: str, now: float, mode: Mode, reason: str = ""
) -> TokenInfo:
    with store.session() as s:
        row = s.get(ApiTokenRecord, token_id)
        if row is None:
            raise NotFound("API token", token_id, "see `shipyard token list`")
        if row.revoked_at is None:
            row.revoked_at = now
            audit.token_revoked(
                s,
                actor=actor,
                owner=row.principal,
                token_id=token_id,
                now=now,
                reason=reason,
                mode=mode,
            )
        return TokenInfo.of(row)


def token_id_of(bearer: str) -> str | None:
    """The public id of a well-formed token (for rate limiting and messages), else None."""
    found = _TOKEN.match(bearer)
    return found.group(1) if found else None


def authenticate_token(store: Store, bearer: str, now: float) -> Principal:
    """The principal ``bearer`` (a whole token) stands for, with its (narrowed) roles.

    Raises :class:`~shipyard.errors.Unauthenticated` for a malformed, unknown, wrong, expired or
    revoked token, or one of a disabled identity; the message never repeats the secret.
    """
    found = _TOKEN.match(bearer)
    if found is None:
        hmac.compare_digest(_DUMMY_HASH, _digest(bearer[:100]))
        raise Unauthenticated("the API token is malformed: expected shy_<id>_<secret>")
    token_id, secret = found.groups()
    with store.session(readonly=True) as s:
        row = s.get(ApiTokenRecord, token_id)
        stored = row.secret_hash if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(stored, _digest(secret))
        if row is None or not matches:
            raise Unauthenticated(f"API token {token_id} is not valid")
        if row.revoked_at is not None:
            raise Unauthenticated(f"API token {token_id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(f"API token {token_id} has expired")
        owner = s.get(PrincipalRecord, row.principal)
        if owner is None or owner.disabled_at is not None:
            raise Unauthenticated(f"the identity of API token {token_id} is disabled")
        bindings = bindings_of(s, [row.principal])
        narrowed = set(row.roles or ())
        kind = owner.kind
        last_used = row.last_used_at
        expires_at = row.expires_at
    if narrowed:
        bindings = tuple(b for b in bindings if b.role in narrowed)
    if last_used is None or now - last_used >= LAST_USED_EVERY_S:
        _touch(store, token_id, now)
    return Principal(
        name=row.principal,
        kind=kind,
        mode="server",
        via=f"token {token_id}",
        bindings=bindings,
        expires_at=expires_at,
    )


def _touch(store: Store, token_id: str, now: float) -> None:
    try:
        with store.session() as s:
            row = s.get(ApiTokenRecord, token_id)
            if row is not None:
                row.last_used_at = now
    except Exception:
        return


__all__ = [
    "Binding",
    "NewToken",
    "TokenInfo",
    "authenticate_token",
    "create_token",
    "get_token",
    "list_tokens",
    "looks_like_token",
    "revoke_token",
    "token_id_of",
]

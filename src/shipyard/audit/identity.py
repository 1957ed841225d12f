"""The audit events of identity: API tokens granted and revoked, roles bound and unbound.

The control plane calls these inside the transaction that stores the token or the binding, so
the grant and its event commit together. A token's secret never reaches the audit: the event
names the token by its id (its public half), with its scopes and expiry.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from shipyard.audit.chain import Mode, record


def token_granted(
    session: Session,
    *,
    actor: str,
    owner: str,
    token_id: str,
    scopes: Iterable[str],
    expires_at: float | None,
    now: float,
    mode: Mode = "server",
) -> None:
    """``actor`` gave ``owner`` (a user or service account) the API token ``token_id``."""
    details = {"token": token_id, "scopes": sorted(scopes), "expires_at": expires_at}
    record(
        session,
        actor=actor,
        action="token.grant",
        subject=("principal", owner),
        details=details,
        now=now,
        mode=mode,
    )


def token_revoked(
    session: Session,
    *,
    actor: str,
    owner: str,
    token_id: str,
    now: float,
    reason: str = "",
    mode: Mode = "server",
) -> None:
    record(
        session,
        actor=actor,
        action="token.revoke",
        subject=("principal", owner),
        details={"token": token_id, "reason": reason},
        now=now,
        mode=mode,
    )


def role_bound(
    session: Session,
    *,
    actor: str,
    principal: str,
    role: str,
    scope: str,
    now: float,
    mode: Mode = "server",
) -> None:
    """``actor`` gave ``principal`` ``role`` over ``scope`` (``*``, ``model:digits``,
    ``pool:shared``)."""
    record(
        session,
        actor=actor,
        action="role.bind",
        subject=("principal", principal),
        details={"role": role, "scope": scope},
        now=now,
        mode=mode,
    )


def role_unbound(
    session: Session,
    *,
    actor: str,
    principal: str,
    role: str,
    scope: str,
    now: float,
    mode: Mode = "server",
) -> None:
    record(
        session,
        actor=actor,
        action="role.unbind",
        subject=("principal", principal),
        details={"role": role, "scope": scope},
        now=now,
        mode=mode,
    )

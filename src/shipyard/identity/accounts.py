"""Principals (users and service accounts) and their role bindings.

Every change commits with its audit event (:mod:`shipyard.audit.identity`); ``actor`` and
``mode`` are who did it and how they were vouched for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shipyard import audit
from shipyard.audit import Mode
from shipyard.errors import InvalidInput, NotFound
from shipyard.identity.roles import Binding, check_role, check_scope
from shipyard.store import Store
from shipyard.store.identity import PrincipalRecord, RoleBindingRecord

KINDS = ("user", "service")
GROUP_PREFIX = "group:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,99}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"identity name {name!r}: 1-100 letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class Account:
    name: str
    kind: str
    created_at: float
    created_by: str
    disabled_at: float | None
    bindings: tuple[Binding, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "disabled_at": self.disabled_at,
            "roles": [{"role": b.role, "scope": b.scope} for b in self.bindings],
        }


def ensure_principal(
    session: Session, name: str, *, kind: str, actor: str, now: float, mode: Mode
) -> PrincipalRecord:
    """The principal ``name``, created (and audited) if it is new."""
    check_name(name)
    if kind not in KINDS:
        raise InvalidInput(f"identity kind {kind!r}: use user or service")
    row = session.get(PrincipalRecord, name)
    if row is None:
        row = PrincipalRecord(name=name, kind=kind, created_at=now, created_by=actor)
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action="principal.create",
            subject=("principal", name),
            details={"kind": kind},
            now=now,
            mode=mode,
        )
    return row


def bindings_of(session: Session, names: list[str]) -> tuple[Binding, ...]:
    rows = session.scalars(
        select(RoleBindingRecord)
        .where(RoleBindingRecord.principal.in_(names))
        .order_by(RoleBindingRecord.id)
    )
    return tuple(Binding(r.role, r.scope) for r in rows)


def bind_role(
    store: Store, principal: str, role: str, scope: str, *, actor: str, now: float, mode: Mode
) -> bool:
    """Give ``principal`` ``role`` over ``scope``; False if it already had it. A principal that
    is not known yet is created as a user (a ``group:NAME`` principal stands for an OIDC group
    and is not created)."""
    check_role(role)
    check_scope(scope)
    with store.session() as s:
        if principal.startswith(GROUP_PREFIX):
            check_name(principal[len(GROUP_PREFIX) :])
        else:
            ensure_principal(s, principal, kind="user", actor=actor, now=now, mode=mode)
        exists = s.scalars(
            select(RoleBindingRecord.id).where(
                RoleBindingRecord.principal == principal,
                RoleBindingRecord.role == role,
                RoleBindingRecord.scope == scope,
            )
        ).first()
        if exists is not None:
            return False
        s.add(
            RoleBindingRecord(
                principal=principal, role=role, scope=scope, created_at=now, created_by=actor
            )
        )
        audit.role_bound(
            s, actor=actor, principal=principal, role=role, scope=scope, now=now, mode=mode
        )
    return True


def unbind_role(
    store: Store, principal: str, role: str, scope: str, *, actor: str, now: float, mode: Mode
) -> None:
    check_role(role)
    check_scope(scope)
    with store.session() as s:
        gone = s.execute(
            delete(RoleBindingRecord).where(
                RoleBindingRecord.principal == principal,
                RoleBindingRecord.role == role,
                RoleBindingRecord.scope == scope,
            )
        )
        if not gone.rowcount:  # type: ignore[attr-defined]
            raise NotFound("role binding", f"{principal} {role}@{scope}")
        audit.role_unbound(
            s, actor=actor, principal=principal, role=role, scope=scope, now=now, mode=mode
        )


def list_accounts(store: Store) -> list[Account]:
    with store.session(readonly=True) as s:
        rows = list(s.scalars(select(PrincipalRecord).order_by(PrincipalRecord.name)))
        bindings = list(s.scalars(select(RoleBindingRecord).order_by(RoleBindingRecord.id)))
    by_name: dict[str, list[Binding]] = {}
    for b in bindings:
        by_name.setdefault(b.principal, []).append(Binding(b.role, b.scope))
    accounts = [
        Account(
            r.name,
            r.kind,
            r.created_at,
            r.created_by,
            r.disabled_at,
            tuple(by_name.get(r.name, ())),
        )
        for r in rows
    ]
    for name in sorted(n for n in by_name if n.startswith(GROUP_PREFIX)):
        accounts.append(Account(name, "group", 0.0, "", None, tuple(by_name[name])))
    return accounts


def disable_principal(store: Store, name: str, *, actor: str, now: float, mode: Mode) -> None:
    """Refuse every token of ``name`` from now on (its record and audit stay)."""
    with store.session() as s:
        row = s.get(PrincipalRecord, name)
        if row is None:
            raise NotFound("identity", name)
        if row.disabled_at is None:
            row.disabled_at = now
            audit.record(
                s,
                actor=actor,
                action="principal.disable",
                subject=("principal", name),
                now=now,
                mode=mode,
            )

"""The control plane's identities: principals (users and service accounts), their API tokens
(stored only as hashes) and their role bindings. Written by :mod:`shipyard.identity`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base


class PrincipalRecord(Base):
    """A user or a service account. An OIDC user is recorded the first time it signs in."""

    __tablename__ = "principals"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # user | service
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    disabled_at: Mapped[float | None] = mapped_column(Float)


class ApiTokenRecord(Base):
    """An API token: its public id, the SHA-256 of its secret half, and what narrows it."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal: Mapped[str] = mapped_column(String(100), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[Any]] = mapped_column(default=list)  # empty: all the principal's roles
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class RoleBindingRecord(Base):
    """``principal`` holds ``role`` over ``scope`` (``*``, ``model:NAME``, ``pool:NAME``,
    ``pipeline:NAME``). A principal ``group:NAME`` binds every OIDC user of that group."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("principal", "role", "scope"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(String(240))
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(100), default="")

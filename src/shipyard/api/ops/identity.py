"""``/whoami``, ``/identities``, ``/tokens`` and ``/roles``: who is acting and what they may do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import Field

from shipyard.api.operations import Context, PageQuery, Params, operation, slice_page
from shipyard.errors import Forbidden
from shipyard.identity import IDENTITY_ADMIN, READ

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,99}$"
T = TypeVar("T")
ROLE = Literal["viewer", "operator", "deployer", "approver", "quota-admin", "admin"]


class TokenCreate(Params):
    principal: str | None = Field(
        None, pattern=NAME, description="Whose token (default: yours; another's needs admin)."
    )
    kind: Literal["user", "service"] = Field("user", description="If the identity is new.")
    roles: list[ROLE] = Field(
        default_factory=list, max_length=6, description="Narrow the token to these roles."
    )
    expires_in_s: float | None = Field(
        None, gt=0, le=10 * 365 * 86400, description="Lifetime in seconds (default: none)."
    )
    description: str = Field("", max_length=500)


class TokenQuery(PageQuery):
    principal: str | None = Field(None, pattern=NAME, description="Only this identity's tokens.")


class TokenRevoke(Params):
    reason: str = Field("", max_length=500)


class RoleBody(Params):
    principal: str = Field(
        ...,
        pattern=r"^(group:)?[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,99}$",
        description="A user, a service account, or group:NAME (an OIDC group).",
    )
    role: ROLE
    scope: str = Field(
        "*",
        max_length=240,
        description="* (everything), model:NAME, pool:NAME or pipeline:NAME.",
    )


@operation("GET", "/whoami", name="identity.whoami")
def whoami(ctx: Context) -> dict[str, Any]:
    """Who the server takes you for, how it knows, and your roles."""
    return ctx.principal.to_dict()


@operation("GET", "/identities", name="identity.list")
def list_identities(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """Users, service accounts and OIDC groups with their role bindings."""
    from shipyard.identity.accounts import list_accounts

    ctx.require(READ)
    everyone = [a.to_dict() for a in list_accounts(ctx.ws.store)]
    return slice_page("identity.list", everyone, query)


@operation("POST", "/tokens", name="identity.token.create")
def create_token(ctx: Context, *, body: TokenCreate) -> dict[str, Any]:
    """Create an API token; its secret is in this answer and nowhere else, ever.

    Anyone may create a token for themselves (narrowed to some of their roles, or with an
    expiry); a token for another identity needs the admin role."""
    from shipyard.identity.tokens import create_token as create

    owner = body.principal or ctx.actor
    if owner != ctx.actor:
        ctx.require(IDENTITY_ADMIN)
    elif ctx.principal.mode == "server":
        held = {b.role for b in ctx.principal.bindings}
        beyond = sorted(set(body.roles) - held)
        if beyond:
            raise Forbidden(
                f"{ctx.actor} cannot narrow a token to roles it does not hold: {beyond}"
            )
    new = create(
        ctx.ws.store,
        owner,
        actor=ctx.actor,
        now=ctx.now,
        mode=ctx.principal.mode,
        kind=body.kind,
        roles=tuple(body.roles),
        expires_in_s=body.expires_in_s,
        description=body.description,
    )
    return {"token": new.secret, **new.info.to_dict(ctx.now)}


@operation("GET", "/tokens", name="identity.token.list")
def list_tokens(ctx: Context, *, query: TokenQuery) -> dict[str, Any]:
    """API tokens (never their secrets): yours, or anyone's for an admin."""
    from shipyard.identity.tokens import list_tokens as listing

    owner = query.principal
    if not ctx.principal.allows(IDENTITY_ADMIN):
        if owner not in (None, ctx.actor):
            ctx.require(IDENTITY_ADMIN)
        owner = ctx.actor
    now = ctx.now
    tokens = [t.to_dict(now) for t in listing(ctx.ws.store, owner)]
    return slice_page("identity.token.list", tokens, query)


@operation("POST", "/tokens/{token_id}/revoke", name="identity.token.revoke")
def revoke_token(ctx: Context, *, token_id: str, body: TokenRevoke) -> dict[str, Any]:
    """Revoke a token at once: yours, or anyone's for an admin."""
    from shipyard.identity.tokens import get_token
    from shipyard.identity.tokens import revoke_token as revoke

    info = get_token(ctx.ws.store, token_id)
    if info.principal != ctx.actor:
        ctx.require(IDENTITY_ADMIN)
    done = revoke(
        ctx.ws.store,
        token_id,
        actor=ctx.actor,
        now=ctx.now,
        mode=ctx.principal.mode,
        reason=body.reason,
    )
    return done.to_dict(ctx.now)


@operation("POST", "/roles/bind", name="identity.role.bind")
def bind(ctx: Context, *, body: RoleBody) -> dict[str, Any]:
    """Give an identity a role over a scope (admin)."""
    from shipyard.identity.accounts import bind_role

    return {**body.model_dump(), "added": _change_binding(ctx, body, bind_role)}


@operation("POST", "/roles/unbind", name="identity.role.unbind")
def unbind(ctx: Context, *, body: RoleBody) -> dict[str, Any]:
    """Take a role over a scope away from an identity (admin)."""
    from shipyard.identity.accounts import unbind_role

    _change_binding(ctx, body, unbind_role)
    return {**body.model_dump(), "removed": True}


def _change_binding(ctx: Context, body: RoleBody, change: Callable[..., T]) -> T:
    """``change`` (:func:`~shipyard.identity.accounts.bind_role` or ``unbind_role``) of the
    binding ``body`` names, by an admin, audited as the caller."""
    ctx.require(IDENTITY_ADMIN)
    return change(
        ctx.ws.store,
        body.principal,
        body.role,
        body.scope,
        actor=ctx.actor,
        now=ctx.now,
        mode=ctx.principal.mode,
    )

"""``shipyard login|logout|whoami``, ``shipyard token create|list|revoke`` and ``shipyard roles
list|bind|unbind``: who you are to a Shipyard control plane, and what each identity may do."""

from __future__ import annotations

import re
import sys

import typer
from rich.markup import escape

from shipyard.cli.connect import client, forget_login, target, write_login
from shipyard.cli.output import console, err_console, flag, print_json, table, when
from shipyard.errors import InvalidInput

token_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
roles_app = typer.Typer(
    help="Role bindings: viewer, operator, deployer, approver, quota-admin, admin; over *, "
    "model:NAME, pool:NAME or pipeline:NAME.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_lifetime(text: str) -> float:
    found = _DURATION.match(text.strip())
    if not found or float(found.group(1)) <= 0:
        raise InvalidInput(f"--expires {text!r}: a lifetime like 90d, 12h, 30m or seconds")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


def login(
    url: str = typer.Argument(..., help="The control plane, e.g. https://shipyard.example.com"),
    token_stdin: bool = flag("--token-stdin", help="Read the token from stdin (for scripts)."),
) -> None:
    """Log in to a Shipyard server with an API token: check it, then keep it (mode 0600) so
    every command talks to that server as you."""
    from shipyard.api.client import HttpClient

    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{url!r}: give the server's URL, http(s)://HOST[:PORT]")
    if token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = typer.prompt("API token", hide_input=True).strip()
    if not token:
        raise InvalidInput("no token given")
    me = HttpClient(url, token).call("identity.whoami")
    path = write_login(url.rstrip("/"), token)
    roles = ", ".join(f"{r['role']}@{r['scope']}" for r in me["roles"]) or "no roles yet"
    console.print(f"[green]✓[/] logged in to {escape(url)} as {escape(me['name'])} ({roles})")
    console.print(f"  token kept in {path}; `shipyard logout` forgets it")


def logout() -> None:
    """Forget the server and token `shipyard login` kept."""
    if forget_login():
        console.print("logged out: the next commands work on the workspace's database directly")
    else:
        console.print("not logged in")


def whoami(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Who Shipyard takes you for, how it knows (a token, single sign-on, or the embedded
    mode's SHIPYARD_USER), and your roles."""
    me = client().call("identity.whoami")
    if as_json:
        print_json(me)
        return
    where = target()
    place = f"on {where.url}" if where is not None else "embedded (the workspace's database)"
    roles = ", ".join(f"{r['role']}@{r['scope']}" for r in me["roles"]) or "no roles"
    console.print(f"{escape(me['name'])} ({me['kind']}) {place}, via {me['via']}: {roles}")


@token_app.command("create")
def token_create(
    user: str = typer.Option(None, "--user", help="Whose token (default: yours)."),
    service: bool = flag("--service", help="The identity is a service account (CI, bots)."),
    role: list[str] = typer.Option(
        None, "--role", help="Narrow the token to this role (repeat); default: all of theirs."
    ),
    expires: str = typer.Option(None, "--expires", help="Lifetime: 90d, 12h, 30m (default: none)."),
    description: str = typer.Option("", "--description", help="What the token is for."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Create an API token. Its secret is printed this once: Shipyard keeps only its hash."""
    made = client().call(
        "identity.token.create",
        principal=user,
        kind="service" if service else "user",
        roles=list(role or []),
        expires_in_s=parse_lifetime(expires) if expires else None,
        description=description,
    )
    if as_json:
        print_json(made)
        return
    narrowed = ", ".join(made["roles"]) or "all of its identity's roles"
    expiry = when(made["expires_at"]) if made["expires_at"] else "never"
    err_console.print(
        f"token {made['id']} for {escape(made['principal'])} ({narrowed}; expires {expiry}). "
        "It is shown once; keep it now:"
    )
    print(made["token"])


@token_app.command("list")
def token_list(
    user: str = typer.Option(None, "--user", help="Only this identity's (an admin's view)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """API tokens (never their secrets): id, owner, roles, expiry, state, last use."""
    from shipyard.api.client import every

    api = client()
    items = list(every(api, "identity.token.list", principal=user))
    if as_json:
        print_json({"items": items})
        return
    if not items:
        console.print("no API tokens")
        return
    listing = table(
        "id",
        "identity",
        "roles",
        "state",
        "expires",
        "last used",
        "description",
        free={"description"},
    )
    for t in items:
        listing.add_row(
            str(t["id"]),
            str(t["principal"]),
            ", ".join(t["roles"]) or "all",
            str(t["state"]),
            when(t["expires_at"]) if t["expires_at"] else "never",
            when(t["last_used_at"]) if t["last_used_at"] else "-",
            str(t["description"] or ""),
        )
    console.print(listing)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token's id (from `shipyard token list`)."),
    reason: str = typer.Option("", "--reason", help="Why, for the audit."),
) -> None:
    """Revoke a token at once: every request with it is refused from now on."""
    done = client().call("identity.token.revoke", token_id=token_id, reason=reason)
    console.print(f"[green]✓[/] token {done['id']} of {escape(done['principal'])} revoked")


@roles_app.command("list")
def roles_list(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Every identity and OIDC group with its roles."""
    from shipyard.api.client import every

    api = client()
    items = list(every(api, "identity.list"))
    if as_json:
        print_json({"items": items})
        return
    if not items:
        console.print("no identities yet: `shipyard roles bind NAME ROLE` creates one")
        return
    listing = table("identity", "kind", "roles", "since", "disabled")
    for a in items:
        roles = ", ".join(f"{r['role']}@{r['scope']}" for r in a["roles"])
        listing.add_row(
            str(a["name"]),
            str(a["kind"]),
            roles or "-",
            when(a["created_at"]) if a["created_at"] else "-",
            when(a["disabled_at"]) if a["disabled_at"] else "-",
        )
    console.print(listing)


@roles_app.command("bind")
def roles_bind(
    principal: str = typer.Argument(..., help="A user, a service account, or group:NAME."),
    role: str = typer.Argument(
        ..., help="viewer, operator, deployer, approver, quota-admin, admin."
    ),
    scope: str = typer.Option("*", "--scope", help="*, model:NAME, pool:NAME or pipeline:NAME."),
) -> None:
    """Give PRINCIPAL ROLE over a scope (recorded in the audit)."""
    done = client().call("identity.role.bind", principal=principal, role=role, scope=scope)
    if done["added"]:
        console.print(f"[green]✓[/] {escape(principal)} is {role} over {escape(scope)}")
    else:
        console.print(f"{escape(principal)} already is {role} over {escape(scope)}")


@roles_app.command("unbind")
def roles_unbind(
    principal: str = typer.Argument(..., help="A user, a service account, or group:NAME."),
    role: str = typer.Argument(..., help="The role to take away."),
    scope: str = typer.Option("*", "--scope", help="The scope it was bound over."),
) -> None:
    """Take ROLE over a scope away from PRINCIPAL (recorded in the audit)."""
    client().call("identity.role.unbind", principal=principal, role=role, scope=scope)
    console.print(f"[green]✓[/] {escape(principal)} is no longer {role} over {escape(scope)}")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.add_typer(token_app, name="token")
    app.add_typer(roles_app, name="roles")

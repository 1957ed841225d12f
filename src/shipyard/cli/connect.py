"""Which Shipyard a command talks to: a control plane (``SHIPYARD_URL``, or the server of
``shipyard login``) or, without one, the workspace's database directly (the embedded mode).

Every command that goes through :func:`client` has one code path either way
(:mod:`shipyard.api.operations`). When a server is named, who is acting comes only from the
credential (``SHIPYARD_TOKEN`` or the login's token), never from ``--as`` or ``SHIPYARD_USER``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.errors import ConfigError, InvalidInput, Unauthenticated

if TYPE_CHECKING:
    from shipyard.api.client import Client

URL_ENV = "SHIPYARD_URL"
TOKEN_ENV = "SHIPYARD_TOKEN"


def credentials_path() -> Path:
    """Where ``shipyard login`` keeps the server and token (mode 0600)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shipyard" / "credentials.json"


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    source: str  # where the url came from


def read_login() -> dict[str, str] | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}); run `shipyard logout` and log in again"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise ConfigError(f"{path} is not a Shipyard login; run `shipyard logout` and log in again")
    return {k: v for k, v in data.items() if isinstance(v, str)}


def write_login(url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"url": url, "token": token}, out)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def forget_login() -> bool:
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


def target() -> Target | None:
    """The server to talk to, if any: ``SHIPYARD_URL`` (an empty value means none), else the
    login's. The token: ``SHIPYARD_TOKEN``, else the login's when it is for the same server."""
    env_url = os.environ.get(URL_ENV)
    login = read_login() if env_url is None else None
    if env_url is not None and not env_url.strip():
        return None
    if env_url:
        url, source = env_url.strip(), URL_ENV
    elif login is not None:
        url, source = login["url"], str(credentials_path())
    else:
        return None
    token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        saved = login if login is not None else read_login()
        if saved is not None and saved.get("url", "").rstrip("/") == url.rstrip("/"):
            token = saved.get("token")
    return Target(url=url.rstrip("/"), token=token, source=source)


def client(as_user: str | None = None) -> Client:
    """The client for this command: the server's when one is named, else the embedded one
    acting as ``--as``/``SHIPYARD_USER``/the OS user."""
    where = target()
    if where is not None:
        from shipyard.api.client import HttpClient

        if as_user:
            raise InvalidInput(
                f"--as is for the embedded mode only: the server at {where.url} knows who you "
                "are from your token (unset SHIPYARD_URL to work on the database directly)"
            )
        if not where.token:
            raise Unauthenticated(
                f"no token for {where.url}: run `shipyard login {where.url}` or set {TOKEN_ENV}"
            )
        return HttpClient(where.url, where.token)
    from shipyard.api.client import LocalClient
    from shipyard.cli.output import open_workspace
    from shipyard.identity import Principal

    ws = open_workspace(create=False)
    return LocalClient(ws, Principal.embedded(as_user or ws.actor), release=True)

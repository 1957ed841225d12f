"""Who is looking at the dashboard, and whether a form post really comes from it.

Signing in hands the dashboard an API token (``shipyard token create``); the app's
:class:`~shipyard.identity.authn.Authenticator` checks it exactly as it checks a bearer token,
and the token is then kept in a cookie the page's scripts cannot read (``HttpOnly``), sent only
to ``/ui`` and never by another site's page (``SameSite=Strict``). Every request authenticates
it again, so a revoked token or a removed role takes effect as it does for the API (at once
through this worker, within ``server.remember_s`` otherwise). A form post is refused
unless its ``Origin`` (or, lacking one, its ``Referer``) names this host: a page elsewhere
cannot make a signed-in browser act.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from shipyard.errors import Forbidden, Unauthenticated
from shipyard.identity import Principal
from shipyard.identity.authn import Authenticator

COOKIE = "shipyard-ui"  # a hyphen: not to be read as a metric name
PATH = "/ui"


def authenticator(request: Request) -> Authenticator:
    found: Authenticator = request.app.state.authenticator
    return found


def address(request: Request) -> str:
    return request.client.host if request.client else ""


def principal(request: Request) -> Principal:
    """The signed-in identity; :class:`Unauthenticated` when there is none or it no longer
    holds (revoked, expired, disabled)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise Unauthenticated("sign in to see the dashboard")
    return authenticator(request).authenticate(f"Bearer {token}", address(request))


def sign_in(request: Request, token: str) -> Principal:
    """Check ``token`` as the API would; the identity it names."""
    token = token.strip()
    if not token:
        raise Unauthenticated("paste an API token (make one with `shipyard token create`)")
    if any(c.isspace() for c in token) or len(token) > 4096:
        raise Unauthenticated("that is not an API token")
    return authenticator(request).authenticate(f"Bearer {token}", address(request))


def keep(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token.strip(),
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def check_origin(request: Request) -> None:
    """:class:`Forbidden` unless the post's Origin (else Referer) is this host."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    source = origin if origin is not None else request.headers.get("referer")
    if not source or source == "null":
        raise Forbidden("this form post names no origin: send it from the dashboard's own page")
    if urlsplit(source).netloc != host:
        raise Forbidden("this form post comes from another site: send it from the dashboard")

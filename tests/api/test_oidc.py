"""Single sign-on (identity/oidc.py): a control plane that trusts an identity provider's JWTs,
checked against its key set served over a real local socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from apikit import POSTGRES_URL, Plane, plane_on
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from server_testkit import free_port, start_server, stop_server
from shipyard.api.app import create_app
from shipyard.config import OidcSettings, ServerSettings
from shipyard.identity.accounts import bind_role, disable_principal
from shipyard.identity.authn import Authenticator
from shipyard.store.identity import PrincipalRecord

ISSUER = "https://idp.example"
AUDIENCE = "shipyard"


def _new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: RSAPrivateKey, kid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    doc.update(kid=kid, use="sig", alg="RS256")
    return doc


@dataclass
class Provider:
    """An identity provider: its signing keys and a key set served at ``jwks_url``; ``answer``
    says how the key set is served (``keys``, ``html``: a 200 that is not JSON, ``silent``:
    the connection is taken and never answered)."""

    keys: dict[str, RSAPrivateKey]
    jwks_url: str = ""
    published: list[str] = field(default_factory=list)
    answer: str = "keys"
    fetches: int = 0

    def key_set(self) -> bytes:
        return json.dumps({"keys": [_jwk(self.keys[k], k) for k in self.published]}).encode()

    def token(
        self, user: str, *, kid: str = "k1", key: RSAPrivateKey | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"id-{user}",
            "preferred_username": user,
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        signer = key or self.keys[kid]
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid})


def _serve_key_set(provider: Provider) -> tuple[ThreadingHTTPServer, threading.Thread]:
    hold = threading.Event()

    class KeySet(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.fetches += 1
            if provider.answer == "silent":
                hold.wait(20)  # longer than the verifier waits
                return
            body = provider.key_set() if provider.answer == "keys" else b"<html>Sign in</html>"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeySet)
    server.daemon_threads = True
    server.hold = hold  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.jwks_url = f"http://127.0.0.1:{server.server_port}/jwks"
    return server, thread


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    idp = Provider(keys={"k1": _new_key(), "k2": _new_key()}, published=["k1"])
    server, thread = _serve_key_set(idp)
    try:
        yield idp
    finally:
        server.hold.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _oidc(jwks_url: str) -> dict[str, Any]:
    return {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": jwks_url}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def sso(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    provider: Provider,
) -> Iterator[Plane]:
    """A control plane trusting ``provider``; the cast's ``alice`` is an approver, and the
    group ``ml-team`` deploys ``model:digits``."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("SHIPYARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    server = {"oidc": _oidc(provider.jwks_url), "login_failures": 1000}  # fails on purpose
    with plane_on(request.param, tmp_path_factory.mktemp("sso"), server=server) as plane:
        ws, now = plane.ws, plane.clock.time()
        bind_role(ws.store, "alice", "approver", "*", actor="setup", now=now, mode="embedded")
        bind_role(ws.store, "group:ml-team", "deployer", "model:digits", actor="setup", now=now,
                  mode="embedded")  # fmt: skip
        yield plane


def _whoami(plane: Plane, bearer: str) -> httpx.Response:
    with httpx.Client(base_url=plane.api, timeout=30) as api:
        return api.get("/whoami", headers={"Authorization": f"Bearer {bearer}"})


def _refused(answer: httpx.Response, says: str) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["type"] == "Unauthenticated"
    assert says.lower() in answer.json()["error"].lower(), answer.json()


def test_a_valid_token_signs_alice_in_with_her_bindings(sso: Plane, provider: Provider) -> None:
    answer = _whoami(sso, provider.token("alice"))
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert me["name"] == "alice" and me["via"] == "oidc" and me["mode"] == "server"
    assert me["roles"] == [{"role": "approver", "scope": "*"}]


def test_a_group_claim_brings_the_group_s_bindings(sso: Plane, provider: Provider) -> None:
    me = _whoami(sso, provider.token("gina", groups=["ml-team", "other"])).json()
    assert me["name"] == "gina" and me["via"] == "oidc"
    assert me["roles"] == [{"role": "deployer", "scope": "model:digits"}]
    alone = _whoami(sso, provider.token("gina")).json()
    assert alone["roles"] == []  # the group's role is the group's, not gina's
    with sso.ws.store.session(readonly=True) as s:
        row = s.get(PrincipalRecord, "gina")
        assert row is not None and row.kind == "user"  # known after the first sign-in
        assert s.get(PrincipalRecord, "group:ml-team") is None


def test_the_user_name_falls_back_to_sub(sso: Plane, provider: Provider) -> None:
    me = _whoami(sso, provider.token("ignored", preferred_username=None, sub="svc-7")).json()
    assert me["name"] == "svc-7"


def _hs256_with_the_public_key(provider: Provider) -> str:
    """The classic algorithm confusion: an HMAC keyed by the provider's public key (PEM)."""
    pem = (
        provider.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 300}
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(pem, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def _unsigned(provider: Provider) -> str:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 300}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})


def _no_kid(provider: Provider) -> str:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 300}
    return jwt.encode(claims, provider.keys["k1"], algorithm="RS256")


REFUSALS = {
    "expired": (lambda p: p.token("alice", exp=int(time.time()) - 3600), "has expired"),
    "not yet valid": (lambda p: p.token("alice", nbf=int(time.time()) + 3600), "not yet valid"),
    "wrong audience": (lambda p: p.token("alice", aud="someone-else"), "audience"),
    "wrong issuer": (lambda p: p.token("alice", iss="https://evil.example"), "issuer"),
    "no expiry": (lambda p: p.token("alice", exp=None), "exp"),
    "unknown kid": (lambda p: p.token("alice", kid="k9", key=p.keys["k1"]), "k9"),
    "kid of another key": (lambda p: p.token("alice", key=_new_key()), "Signature"),
    "no kid": (_no_kid, "no kid"),
    "alg none": (_unsigned, "alg"),
    "HS256 with the public key": (_hs256_with_the_public_key, "alg"),
    "not a JWT": (lambda p: "not.a.jwt", "not a valid JWT"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_token_that_should_not_pass_is_401(sso: Plane, provider: Provider, case: str) -> None:
    make, says = REFUSALS[case]
    _refused(_whoami(sso, make(provider)), says)


def test_a_disabled_user_is_refused(sso: Plane, provider: Provider) -> None:
    assert _whoami(sso, provider.token("dora")).status_code == 200
    disable_principal(sso.ws.store, "dora", actor="admin", now=sso.clock.time(), mode="embedded")
    _refused(_whoami(sso, provider.token("dora")), "dora is disabled")


def test_a_rotated_key_verifies_and_a_withdrawn_one_stops(sso: Plane, provider: Provider) -> None:
    verifier = _verifier(sso)
    old = provider.token("alice", kid="k1")
    assert _whoami(sso, old).status_code == 200
    provider.published = ["k1", "k2"]
    try:
        verifier._client.get_jwk_set(refresh=True)  # the cached set expires (PyJWT: 5 min)
        assert _whoami(sso, provider.token("alice", kid="k2")).status_code == 200
        provider.published = ["k2"]  # k1 withdrawn, say compromised
        verifier._client.get_jwk_set(refresh=True)
        _refused(_whoami(sso, old), "k1")
        assert _whoami(sso, provider.token("alice", kid="k2")).status_code == 200
    finally:
        provider.published = ["k1"]
        verifier._client.get_jwk_set(refresh=True)


def _verifier(plane: Plane) -> Any:
    authenticator = plane.server.config.app.state.authenticator  # the plane's own
    assert authenticator.oidc is not None and authenticator.oidc._client is not None
    return authenticator.oidc


@pytest.fixture
def lone_plane(sso: Plane) -> Iterator[Any]:
    """Another server over ``sso``'s workspace, trusting a key set at the URL it is given
    (one backend is enough: fetching the key set touches no database)."""
    if sso.ws.settings.database_url.startswith("postgresql"):
        pytest.skip("the key set's fetching is the same on every backend")
    running: list[Any] = []

    def on(jwks_url: str) -> str:
        settings = ServerSettings(oidc=OidcSettings(**_oidc(jwks_url)), login_failures=1000)
        app = create_app(sso.ws, Authenticator(sso.ws.store, settings, sso.clock))
        port = free_port()
        running.append(start_server(app, port, lifespan="off"))
        return f"http://127.0.0.1:{port}/api/v1"

    yield on
    for server, thread in running:
        stop_server(server, thread)


def _whoami_at(api: str, bearer: str) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    with httpx.Client(base_url=api, timeout=60) as client:
        answer = client.get("/whoami", headers={"Authorization": f"Bearer {bearer}"})
    return answer, time.monotonic() - began


def test_a_key_set_that_cannot_be_fetched_is_401_at_once(
    lone_plane: Any, provider: Provider
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens once it is closed
    answer, took_s = _whoami_at(lone_plane(f"http://127.0.0.1:{port}/jwks"), provider.token("a"))
    _refused(answer, "key set cannot be fetched; try again later")
    assert took_s < 5


def test_a_key_set_that_never_answers_is_401_within_the_fetch_timeout(
    lone_plane: Any, provider: Provider
) -> None:
    silent = Provider(keys=provider.keys, published=["k1"], answer="silent")
    server, thread = _serve_key_set(silent)
    try:
        answer, took_s = _whoami_at(lone_plane(silent.jwks_url), provider.token("alice"))
    finally:
        server.hold.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    _refused(answer, "key set cannot be fetched")
    assert silent.fetches == 1
    assert took_s < 20  # the verifier gives up after 5 s; a loaded machine adds some


def test_a_key_set_that_is_not_json_is_401_not_500(lone_plane: Any, provider: Provider) -> None:
    """A proxy's sign-in page where the key set should be was a 500 (JSONDecodeError)."""
    html = Provider(keys=provider.keys, published=["k1"], answer="html")
    server, thread = _serve_key_set(html)
    try:
        answer, _ = _whoami_at(lone_plane(html.jwks_url), provider.token("alice"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    _refused(answer, "key set cannot be read")

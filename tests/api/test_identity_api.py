"""The control plane's doors: who may come in, as whom, and what they may do; over a real
socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from apikit import Plane, plane_on
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token, revoke_token

runner = CliRunner()


def test_a_token_says_who_is_acting(plane: Plane) -> None:
    with plane.http("alice") as api:
        me = api.get("/whoami").json()
    assert me["name"] == "alice" and me["mode"] == "server"
    assert me["via"].startswith("token ")
    assert me["roles"] == [{"role": "approver", "scope": "*"}]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        "Bearer shy_000000000000_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-token",
    ],
)
def test_no_valid_credential_is_401_and_names_no_secret(plane: Plane, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        answer = api.get("/whoami", headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["type"] == "Unauthenticated"
    assert "A" * 43 not in answer.text


def test_a_token_with_a_wrong_secret_is_refused(plane: Plane) -> None:
    real = plane.token["alice"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        answer = api.get("/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
    assert forged[-43:] not in answer.text


def test_revoked_and_expired_tokens_are_refused(plane: Plane) -> None:
    ws, now = plane.ws, plane.clock.time()
    revoked = create_token(ws.store, "alice", actor="admin", now=now, mode="embedded")
    expiring = create_token(
        ws.store, "alice", actor="admin", now=now, mode="embedded", expires_in_s=60
    )
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        for t in (revoked, expiring):
            ok = api.get("/whoami", headers={"Authorization": f"Bearer {t.secret}"})
            assert ok.status_code == 200
        revoke_token(ws.store, revoked.info.id, actor="admin", now=now, mode="embedded")
        gone = api.get("/whoami", headers={"Authorization": f"Bearer {revoked.secret}"})
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]
        plane.clock.advance(61)
        old = api.get("/whoami", headers={"Authorization": f"Bearer {expiring.secret}"})
        assert old.status_code == 401 and "expired" in old.json()["error"]


def test_a_token_revoked_or_a_role_unbound_through_the_server_counts_at_once(
    tmp_path: Path,
) -> None:
    """With tokens remembered (server.remember_s): a change through the server is not."""
    with plane_on("sqlite", tmp_path, remember_s=5.0) as plane:
        _changes_count_at_once(plane)
        bind_role(plane.ws.store, "rita", "operator", "*", actor="a", now=0, mode="embedded")
        token = plane.token["olga"]
        with plane.http("olga") as api:
            assert api.get("/whoami").status_code == 200
            revoke_token(plane.ws.store, token.split("_")[1], actor="a", now=0, mode="embedded")
            assert api.get("/whoami").status_code == 200, "remembered for remember_s"
            plane.clock.advance(5.0)
            assert api.get("/whoami").status_code == 401


def _changes_count_at_once(plane: Plane) -> None:
    ws, now = plane.ws, plane.clock.time()
    bind_role(ws.store, "rita", "operator", "*", actor="admin", now=now, mode="embedded")
    token = create_token(ws.store, "rita", actor="admin", now=now, mode="embedded")
    rita = {"Authorization": f"Bearer {token.secret}"}
    admin = {"Authorization": f"Bearer {plane.token['admin']}"}
    silence = {"matchers": ["alertname=X"], "duration": "1h", "comment": "maintenance"}
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        assert api.get("/whoami", headers=rita).status_code == 200  # now remembered
        unbind = {"principal": "rita", "role": "operator", "scope": "*"}
        assert api.post("/roles/unbind", json=unbind, headers=admin).status_code == 200
        refused = api.post("/silences", json=silence, headers=rita)
        assert refused.status_code == 403, refused.text
        revoke = api.post(f"/tokens/{token.info.id}/revoke", json={}, headers=admin)
        assert revoke.status_code == 200, revoke.text
        gone = api.get("/whoami", headers=rita)
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]


def test_a_viewer_cannot_bind_roles_or_make_tokens_for_others(plane: Plane) -> None:
    with plane.http("vic") as api:
        bind = api.post("/roles/bind", json={"principal": "vic", "role": "admin"})
        assert bind.status_code == 403
        assert "vic may not manage identities" in bind.json()["error"]
        other = api.post("/tokens", json={"principal": "alice"})
        assert other.status_code == 403
        beyond = api.post("/tokens", json={"roles": ["admin"]})
        assert beyond.status_code == 403
        mine = api.post("/tokens", json={"roles": ["viewer"], "expires_in_s": 3600})
        assert mine.status_code == 200, mine.text
    secret = mine.json()["token"]
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        me = api.get("/whoami", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["name"] == "vic"


def test_an_admin_binds_a_role_and_the_audit_names_them_in_server_mode(plane: Plane) -> None:
    with plane.http("admin") as api:
        done = api.post(
            "/roles/bind", json={"principal": "carol", "role": "approver", "scope": "model:digits"}
        )
        assert done.status_code == 200, done.text
        events = api.get("/audit/events", params={"action": "role.bind", "limit": 5}).json()
    latest = events["items"][0]
    assert latest["actor"] == "admin" and latest["mode"] == "server"
    assert latest["subject"] == {"kind": "principal", "id": "carol"}
    assert latest["details"] == {"role": "approver", "scope": "model:digits"}


def test_a_malformed_request_is_400_naming_the_field(plane: Plane) -> None:
    with plane.http("admin") as api:
        bad = api.get("/audit/events", params={"limit": "lots"})
        assert bad.status_code == 400
        assert "limit" in bad.json()["error"]
        extra = api.post("/roles/bind", json={"principal": "x", "role": "king"})
        assert extra.status_code == 400 and "role" in extra.json()["error"]
        not_json = api.post(
            "/roles/bind", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        huge = api.post("/roles/bind", content=b"x" * (2 << 20))
        assert huge.status_code == 413
        missing = api.get("/no/such/thing")
        assert missing.status_code == 404 and missing.json()["type"] == "NotFound"


def test_the_openapi_description_covers_every_operation(plane: Plane) -> None:
    from shipyard.api.operations import load_all

    described = httpx.get(plane.api + "/openapi.json", timeout=10).json()
    ids = {op["operationId"] for path in described["paths"].values() for op in path.values()}
    assert ids == set(load_all())


def test_the_cli_through_the_server_prints_what_the_embedded_mode_prints(plane: Plane) -> None:
    env = {
        "SHIPYARD_HOME": str(plane.ws.settings.home),
        "SHIPYARD_DB_URL": plane.ws.settings.database_url,
    }
    local = runner.invoke(app, ["audit", "list", "--json", "--limit", "5"], env=env)
    remote = runner.invoke(
        app, ["audit", "list", "--json", "--limit", "5"], env={**env, **plane.env("vic")}
    )
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    assert json.loads(local.output) == json.loads(remote.output)


def test_as_is_refused_when_talking_to_a_server(plane: Plane) -> None:
    done = runner.invoke(app, ["token", "list"], env=plane.env("vic"))
    assert done.exit_code == 0, done.output
    who = runner.invoke(app, ["whoami"], env={**plane.env("bob"), "SHIPYARD_USER": "alice"})
    assert who.exit_code == 0 and who.output.startswith("bob ")


def test_failed_sign_ins_are_limited(plane: Plane) -> None:
    plane.clock.advance(61)  # the failures of the tests before have left the window
    forged = "Bearer shy_abcdefabcdef_" + "B" * 43
    with httpx.Client(base_url=plane.api, timeout=10) as api:
        codes = [
            api.get("/whoami", headers={"Authorization": forged}).status_code for _ in range(11)
        ]
        assert codes[:10] == [401] * 10 and codes[10] == 429
        refused = api.get("/whoami", headers={"Authorization": forged})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        # the address is now blocked too, even for a valid token, until the window passes
        good = api.get("/whoami", headers={"Authorization": f"Bearer {plane.token['vic']}"})
        assert good.status_code == 429
        plane.clock.advance(61)
        assert (
            api.get(
                "/whoami", headers={"Authorization": f"Bearer {plane.token['vic']}"}
            ).status_code
            == 200
        )

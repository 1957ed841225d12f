"""The authenticator remembers a verified API token for ``server.remember_s``, never past the
token's expiry, never a failure, and forgets them all on :meth:`Authenticator.forget`."""

from __future__ import annotations

import pytest

from shipyard.clock import FakeClock
from shipyard.config import ServerSettings
from shipyard.errors import Unauthenticated
from shipyard.identity.authn import Authenticator
from shipyard.identity.tokens import create_token, revoke_token
from shipyard.workspace import Workspace


def _token(ws: Workspace, clock: FakeClock, expires_in_s: float | None = None) -> str:
    made = create_token(
        ws.store, "alice", actor="admin", now=clock.time(), mode="embedded",
        expires_in_s=expires_in_s,
    )  # fmt: skip
    return made.secret


def test_a_remembered_token_is_not_read_again_until_remember_s_passes(
    workspace: Workspace,
) -> None:
    clock = FakeClock()
    authn = Authenticator(workspace.store, ServerSettings(remember_s=5), clock)
    secret = _token(workspace, clock)
    assert authn.authenticate(f"Bearer {secret}").name == "alice"
    token_id = secret.split("_")[1]
    revoke_token(workspace.store, token_id, actor="admin", now=clock.time(), mode="embedded")
    assert authn.authenticate(f"Bearer {secret}").name == "alice", "remembered"
    clock.advance(5)
    with pytest.raises(Unauthenticated, match="revoked"):
        authn.authenticate(f"Bearer {secret}")


def test_never_past_the_tokens_expiry_and_never_when_off(workspace: Workspace) -> None:
    clock = FakeClock()
    authn = Authenticator(workspace.store, ServerSettings(remember_s=60), clock)
    short = _token(workspace, clock, expires_in_s=2)
    assert authn.authenticate(f"Bearer {short}").name == "alice"
    clock.advance(2)
    with pytest.raises(Unauthenticated, match="expired"):
        authn.authenticate(f"Bearer {short}")

    off = Authenticator(workspace.store, ServerSettings(remember_s=0), clock)
    secret = _token(workspace, clock)
    assert off.authenticate(f"Bearer {secret}").name == "alice"
    revoke_token(
        workspace.store, secret.split("_")[1], actor="admin", now=clock.time(), mode="embedded"
    )
    with pytest.raises(Unauthenticated, match="revoked"):
        off.authenticate(f"Bearer {secret}")


def test_forget_and_the_bound_on_how_many(workspace: Workspace) -> None:
    clock = FakeClock()
    authn = Authenticator(workspace.store, ServerSettings(remember_s=60), clock)
    authn.max_remembered = 2
    secrets = [_token(workspace, clock) for _ in range(3)]
    for secret in secrets:
        authn.authenticate(f"Bearer {secret}")
    for secret in secrets:
        revoke_token(
            workspace.store, secret.split("_")[1], actor="admin", now=clock.time(),
            mode="embedded",
        )  # fmt: skip
    with pytest.raises(Unauthenticated):  # the oldest was forgotten to keep two
        authn.authenticate(f"Bearer {secrets[0]}")
    assert authn.authenticate(f"Bearer {secrets[2]}").name == "alice"
    authn.forget()
    with pytest.raises(Unauthenticated):
        authn.authenticate(f"Bearer {secrets[2]}")


def test_a_failure_is_never_remembered(workspace: Workspace) -> None:
    clock = FakeClock()
    authn = Authenticator(workspace.store, ServerSettings(remember_s=60), clock)
    secret = _token(workspace, clock)
    wrong = secret[:-3] + ("xyz" if not secret.endswith("xyz") else "abc")
    with pytest.raises(Unauthenticated):
        authn.authenticate(f"Bearer {wrong}")
    with pytest.raises(Unauthenticated):
        authn.authenticate(f"Bearer {wrong}")
    assert authn.authenticate(f"Bearer {secret}").name == "alice"

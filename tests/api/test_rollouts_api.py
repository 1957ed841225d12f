"""Rollouts on the control plane, over a real socket on SQLite and PostgreSQL: who may deploy,
steer and approve, and four-eyes on authenticated identities (bob, the author of a version,
cannot approve it by any flag, header, variable or token; alice can, and the audit names her)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import numpy as np
import pandas as pd
from apikit import Plane
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from typer.testing import CliRunner

from shipyard.api.operations import REGISTRY, resolve
from shipyard.cli import app
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.rollout import approve, get_rollout, start_rollout
from shipyard.identity.accounts import bind_role, disable_principal
from shipyard.identity.tokens import create_token, revoke_token
from shipyard.registry import Registry
from shipyard.store.tables import AuditEvent, Run

runner = CliRunner()
FAST = (
    "approvals: {start: {count: 1}, speedup: {count: 1}}\n"
    "canary: {steps: [{weight_pct: 10, min_duration_s: 600}]}\n"
)
NO_CANARY = "approvals: {start: {count: 1}}\ncanary: {steps: []}\n"
_models = iter(range(1_000_000))


def register(plane: Plane, *, by: str = "bob", name: str | None = None, run_id: str = "") -> str:
    """A fresh model (unless ``name`` is given) with one real version registered by ``by``."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = (x["a"] > 0).astype(int).to_numpy()
    name = name or f"m{next(_models)}"
    registry = Registry(plane.ws.store, plane.ws.artifacts, plane.clock, by)
    registry.register(name, LogisticRegression().fit(x, y), training_data=x, run_id=run_id or None)
    return name


def deploy(plane: Plane, model: str, version: int = 1, who: str = "bob") -> dict[str, Any]:
    with plane.http(who) as api:
        answer = api.post("/rollouts", json={"model": model, "version": version})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def token_for(plane: Plane, name: str, role: str, scope: str = "*") -> str:
    now = plane.clock.time()
    bind_role(plane.ws.store, name, role, scope, actor="setup", now=now, mode="embedded")
    return create_token(plane.ws.store, name, actor="setup", now=now, mode="embedded").secret


def as_token(plane: Plane, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=plane.api, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def approvals_audited(plane: Plane, rollout_id: str) -> list[tuple[str, str]]:
    with plane.ws.store.session(readonly=True) as s:
        rows = s.scalars(
            select(AuditEvent).where(
                AuditEvent.subject_id == rollout_id, AuditEvent.action.like("rollout.approve.%")
            )
        )
        return [(e.actor, e.mode) for e in rows]


def cli(plane: Plane, who: str, *args: str, **env: str) -> Any:
    return runner.invoke(app, list(args), env={**plane.env(who), "COLUMNS": "200", **env})


class TestFourEyes:
    def test_the_author_cannot_approve_his_own_version_by_any_means(self, plane: Plane) -> None:
        """bob registered the version and deployed it: no flag, header, variable or token makes
        his approval count, and nothing is recorded."""
        model = register(plane, by="bob")
        rid = deploy(plane, model)["id"]
        refusals = []
        with plane.http("bob") as api:
            as_bob = api.post(f"/rollouts/{rid}/approve", json={})
            refusals.append(as_bob.status_code)
            assert "bob may not approve rollouts" in as_bob.json()["error"]
            header = api.post(
                f"/rollouts/{rid}/approve", json={}, headers={"X-Shipyard-User": "alice"}
            )
            refusals.append(header.status_code)
            named = api.post(f"/rollouts/{rid}/approve", json={"actor": "alice"})
            assert named.status_code == 400 and "actor" in named.json()["error"]
        flag = cli(plane, "bob", "approve", rid, "--as", "alice")
        assert flag.exit_code != 0 and "--as is for the embedded mode only" in flag.output
        variable = cli(plane, "bob", "approve", rid, SHIPYARD_USER="alice")
        assert variable.exit_code == 4 and "bob may not approve" in variable.output
        assert refusals == [403, 403]

        # with the approver role over this model too, four-eyes still refuses him
        bob_approver = token_for(plane, "bob", "approver", f"model:{model}")
        with as_token(plane, bob_approver) as api:
            own = api.post(f"/rollouts/{rid}/approve", json={"purpose": "start"})
        assert own.status_code == 409 and "four-eyes: bob made" in own.json()["error"]

        assert get_rollout(plane.ws.store, rid).state == "waiting_for_approvals"
        assert get_rollout(plane.ws.store, rid).approvals == []
        assert approvals_audited(plane, rid) == []

    def test_forged_revoked_disabled_and_expired_tokens_cannot_approve(self, plane: Plane) -> None:
        model = register(plane, by="bob")
        rid = deploy(plane, model)["id"]
        real = plane.token["alice"]
        forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
        now = plane.clock.time()
        revoked = create_token(plane.ws.store, "alice", actor="setup", now=now, mode="embedded")
        revoke_token(plane.ws.store, revoked.info.id, actor="setup", now=now, mode="embedded")
        gone = token_for(plane, "ava", "approver")
        disable_principal(plane.ws.store, "ava", actor="setup", now=now, mode="embedded")
        expired = create_token(
            plane.ws.store, "alice", actor="setup", now=now - 120, mode="embedded", expires_in_s=60
        )
        for secret in (forged, revoked.secret, gone, expired.secret):
            with as_token(plane, secret) as api:
                answer = api.post(f"/rollouts/{rid}/approve", json={})
            assert answer.status_code == 401, answer.text
            assert answer.json()["type"] == "Unauthenticated"
        with httpx.Client(base_url=plane.api, timeout=10) as anonymous:
            none = anonymous.post(f"/rollouts/{rid}/approve", json={})
            assert none.status_code == 401
        assert approvals_audited(plane, rid) == []

    def test_the_approver_approves_the_rollout_moves_on_and_the_audit_names_her(
        self, plane: Plane
    ) -> None:
        model = register(plane, by="carol")
        register(plane, by="bob", name=model)
        stable = start_rollout(plane.ws.store, model, 1, actor="carol", clock=plane.clock)
        approve(plane.ws.store, stable.id, actor="alice", clock=plane.clock)
        advance_rollouts(plane.ws, plane.clock)  # version 1 in production, by the services
        with plane.http("bob") as api:
            assert api.put(f"/models/{model}/policy", json={"text": FAST}).status_code == 200
        rid = deploy(plane, model, 2)["id"]
        done = cli(plane, "alice", "approve", rid)
        assert done.exit_code == 0, done.output
        assert "staging" in done.output
        assert approvals_audited(plane, rid) == [("alice", "server")]
        view = get_rollout(plane.ws.store, rid)
        assert [a["actor"] for a in view.approvals] == ["alice"]
        advance_rollouts(plane.ws, plane.clock)  # staging smoke check → the canary step
        status = json.loads(cli(plane, "vic", "rollout", "status", rid, "--json").output)
        assert status["state"] == "canary" and status["step"]["weight_pct"] == 10
        assert any("speed-up approval" in line for line in status["waits_for"])

        # a speed-up by alice, a promotion by bob: production
        with plane.http("alice") as api:
            fast = api.post(f"/rollouts/{rid}/approve", json={"purpose": "speedup"})
            assert fast.status_code == 200, fast.text
        promoted = cli(plane, "bob", "rollout", "promote", rid)
        assert promoted.exit_code == 0 and "production" in promoted.output, promoted.output
        with plane.http("vic") as api:
            events = api.get("/audit/events", params={"subject_id": rid}).json()["items"]
        by_action = {e["action"]: (e["actor"], e["mode"]) for e in events}
        assert by_action["rollout.approve.start"] == ("alice", "server")
        assert by_action["rollout.approve.speedup"] == ("alice", "server")
        assert by_action["rollout.production"] == ("bob", "server")

    def test_a_deployer_without_the_approver_role_cannot_approve(self, plane: Plane) -> None:
        model = register(plane, by="carol")
        rid = deploy(plane, model)["id"]
        with plane.http("bob") as api:
            answer = api.post(f"/rollouts/{rid}/approve", json={})
        assert answer.status_code == 403
        assert "needs the role approver or admin over model:" in answer.json()["error"]
        assert approvals_audited(plane, rid) == []

    def test_the_approver_role_can_be_given_per_model(self, plane: Plane) -> None:
        digits = register(plane, by="bob", name="digits")
        other = register(plane, by="bob")
        rid = deploy(plane, digits)["id"]
        rid_other = deploy(plane, other)["id"]
        narrow = token_for(plane, "amy", "approver", f"model:{other}")
        wide = token_for(plane, "dora", "approver", "model:digits")
        with as_token(plane, narrow) as api:
            assert api.post(f"/rollouts/{rid}/approve", json={}).status_code == 403
        with as_token(plane, wide) as api:
            assert api.post(f"/rollouts/{rid_other}/approve", json={}).status_code == 403
            ok = api.post(f"/rollouts/{rid}/approve", json={})
        assert ok.status_code == 200 and ok.json()["state"] == "staging"
        assert approvals_audited(plane, rid) == [("dora", "server")]
        assert approvals_audited(plane, rid_other) == []

    def test_every_author_of_a_version_is_kept_from_approving_it(self, plane: Plane) -> None:
        """Registered by a service account from carol's run: carol is an author too."""
        with plane.ws.store.session() as s:
            run = Run(
                pipeline="train",
                kind="training",
                file="train.py",
                status="succeeded",
                created_by="carol",
                created_at=plane.clock.time(),
            )
            s.add(run)
            s.flush()
            run_id = run.id
        model = register(plane, by="ci-bot", run_id=run_id)
        view = deploy(plane, model)
        assert view["authors"] == ["ci-bot", "carol"] and view["author"] == "ci-bot"
        carol = token_for(plane, "carol", "approver", f"model:{model}")
        with as_token(plane, carol) as api:
            refused = api.post(f"/rollouts/{view['id']}/approve", json={})
        assert refused.status_code == 409 and "four-eyes: carol" in refused.json()["error"]
        assert any("but ci-bot, carol (four-eyes)" in w for w in view["waits_for"])


def write_operations() -> list[str]:
    resolve("rollouts.list")  # loads the module
    return sorted(
        n for n, op in REGISTRY.items() if n.startswith("rollouts.") and op.method != "GET"
    )


def test_a_viewer_is_refused_every_write(plane: Plane) -> None:
    model = register(plane, by="bob")
    rid = deploy(plane, model)["id"]
    sample = {"model": model, "version": 1, "text": FAST, "rollout_id": rid}
    names = write_operations()
    assert len(names) >= 8  # deploy, approve, pause, resume, promote, abort, rollback, policy
    with plane.http("vic") as api:
        for name in names:
            op = REGISTRY[name]
            path = op.path.format(**{p: sample[p] for p in op.path_params})
            body = (
                {k: sample[k] for k, f in op.body.model_fields.items() if f.is_required()}
                if op.body is not None
                else None
            )
            answer = api.request(op.method, path, json=body)
            assert answer.status_code == 403, (name, answer.text)
            assert answer.json()["type"] == "Forbidden"
        unknown = api.post("/rollouts/0123456789abcdef/pause", json={})
        assert unknown.status_code == 403  # before the lookup: no hint whether it exists
    assert get_rollout(plane.ws.store, rid).state == "waiting_for_approvals"


def test_a_deployer_steers_and_rolls_back_over_http(plane: Plane) -> None:
    model = register(plane, by="carol")
    register(plane, by="carol", name=model)
    with plane.http("bob") as api:
        policy = api.put(f"/models/{model}/policy", json={"text": NO_CANARY, "source": "p.yaml"})
        assert policy.status_code == 200 and policy.json()["custom"] is True
        broken = api.put(
            f"/models/{model}/policy", json={"text": "canary: {steps: [{weight_pct: 0}]}"}
        )
        assert broken.status_code == 400 and "weight_pct" in broken.json()["error"]
        assert api.get(f"/models/{model}/policy").json()["policy"]["canary"]["steps"] == []
    first = deploy(plane, model, 1)
    with plane.http("alice") as api:
        assert api.post(f"/rollouts/{first['id']}/approve", json={}).status_code == 200
    advance_rollouts(plane.ws, plane.clock)  # no stable version yet: straight to production
    assert get_rollout(plane.ws.store, first["id"]).state == "production"
    plane.clock.advance(1)
    second = deploy(plane, model, 2)
    with plane.http("bob") as api:
        paused = api.post(f"/rollouts/{second['id']}/pause", json={"reason": "a look first"})
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        waits = api.get(f"/rollouts/{second['id']}").json()["waits_for"]
        assert len(waits) == 1 and "rollout resume" in waits[0]
        resumed = api.post(f"/rollouts/{second['id']}/resume")
        assert resumed.json()["state"] == "waiting_for_approvals"
        again = api.post("/rollouts", json={"model": model, "version": 2})
        assert again.status_code == 409 and "already has rollout" in again.json()["error"]
        back = api.post(f"/models/{model}/rollback", json={"reason": "drill"})
        assert back.status_code == 200, back.text
        assert (back.json()["from"], back.json()["to"]) == (1, 1)
        assert back.json()["rollout"] == second["id"]
        late = api.post(f"/rollouts/{second['id']}/abort", json={"reason": "not today"})
        assert late.status_code == 409 and "already rolled_back" in late.json()["error"]
        history = api.get(f"/models/{model}/deployments").json()
        nothing = api.get("/models/nothing-like-it/deployments")
    assert [(r["version"], r["state"]) for r in history["rollouts"]] == [
        (1, "production"),
        (2, "rolled_back"),
    ]
    assert [p["via"] for p in history["production"]] == ["rollout", "rollback"]
    assert history["production"][1]["actor"] == "bob" and history["truncated"] is False
    assert nothing.status_code == 404
    with plane.ws.store.session(readonly=True) as s:
        moved = s.scalars(select(AuditEvent).where(AuditEvent.action == "model.rollback")).all()
    assert [(e.actor, e.mode) for e in moved if e.subject_id == model] == [("bob", "server")]


def test_lists_page_by_keyset_and_filter_by_model_and_state(plane: Plane) -> None:
    models = [register(plane, by="carol") for _ in range(3)]
    ids = []
    for m in models:
        plane.clock.advance(1)  # after every rollout of the tests before
        ids.append(deploy(plane, m)["id"])
    with plane.http("vic") as api:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            got = api.get("/rollouts", params=params).json()
            seen += [r["id"] for r in got["items"]]
            assert all("verdicts" not in r for r in got["items"])
            cursor = got["next"]
            if cursor is None:
                break
        assert seen[:3] == ids[::-1] and len(seen) == len(set(seen))
        one = api.get("/rollouts", params={"model": models[1]}).json()
        assert [r["id"] for r in one["items"]] == [ids[1]] and one["next"] is None
        waiting = api.get("/rollouts", params={"state": ["waiting_for_approvals"]}).json()
        assert set(ids) <= {r["id"] for r in waiting["items"]}
        for bad in ({"limit": 0}, {"state": ["done"]}, {"cursor": "x"}, {"model": "a b"}):
            answer = api.get("/rollouts", params=bad)
            assert answer.status_code == 400, (bad, answer.text)
        assert api.get("/rollouts/nope").status_code == 404
    listed = cli(plane, "vic", "rollout", "list", "--model", models[0])
    assert listed.exit_code == 0 and ids[0] in listed.output


def test_the_cli_through_the_server_deploys_and_reads(plane: Plane) -> None:
    model = register(plane, by="carol")
    out = cli(plane, "bob", "deploy", model, "--version", "1", "--json")
    assert out.exit_code == 0, out.output
    view = json.loads(out.output)
    assert view["created_by"] == "bob" and view["author"] == "carol"
    text = cli(plane, "bob", "deploy", model, "--version", "1")
    assert text.exit_code == 1 and "already has rollout" in text.output
    status = cli(plane, "vic", "rollout", "status", view["id"])
    assert status.exit_code == 0 and "waits for: 1 more approval(s) to start" in status.output
    assert "no daemon is running" in status.output
    history = cli(plane, "vic", "deployments", "history", model, "--json")
    assert [r["id"] for r in json.loads(history.output)["rollouts"]] == [view["id"]]
    book = cli(plane, "vic", "runbook", model)
    assert book.exit_code == 0 and "no deployment policy" in book.output
    missing = cli(plane, "vic", "runbook", model + "x")
    assert missing.exit_code == 1 and re.search(r"no model named '.*x'", missing.output)
    refused = cli(plane, "vic", "rollout", "abort", view["id"])
    assert refused.exit_code == 4 and "vic may not deploy" in refused.output

"""Every wing's audited decision lands in the one chain, by its actor, and the chain verifies:
registry (register, alias), deploy (policy, gate, rollout start and approval, rollback),
alerting (silences), quota (pools) and identity (tokens, roles)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard import audit
from shipyard.alerting.matchers import Matcher
from shipyard.alerting.silences import create_silence, expire_silence
from shipyard.clock import FakeClock
from shipyard.deploy.gate import validate_version
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollback import rollback
from shipyard.deploy.rollout import approve, start_rollout
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.registry import Registry
from shipyard.workspace import Workspace

T0 = 1_700_000_000.0
POLICY = """
roles:
  approver: [alice]
approvals:
  start: {count: 1, roles: [approver]}
canary: {interval_s: 60, steps: []}
"""


@pytest.fixture
def ws(migrated_db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.open(clock=FakeClock(T0), home=tmp_path / "home", db_url=migrated_db_url)
    yield workspace
    workspace.store.dispose()


def _data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return x, (x["a"] > 0).astype(int).to_numpy()


def test_each_wings_decision_is_an_event_of_one_verified_chain(ws: Workspace) -> None:
    clock, store = ws.clock, ws.store
    assert isinstance(clock, FakeClock)
    x, y = _data()
    carol = Registry(store, ws.artifacts, clock, "carol")
    for c in (1.0, 0.5):
        carol.register("churn", LogisticRegression(C=c).fit(x, y), training_data=x)
    carol.set_alias("churn", "champion", 1, reason="first")
    set_policy(store, "churn", POLICY, actor="admin", clock=clock)
    validate_version(carol, "churn", 2, x, y, actor="erin", clock=clock)
    rollout = start_rollout(store, "churn", 2, actor="carol", clock=clock)
    clock.advance(5)
    approve(store, rollout.id, actor="alice", clock=clock)
    clock.advance(5)
    rollback(store, "churn", actor="bob", to_version=1, clock=clock)
    with store.session() as s:
        silence = create_silence(
            s,
            [Matcher("model", "churn")],
            starts_at=clock.time(),
            ends_at=clock.time() + 3600,
            created_by="oncall",
            comment="known issue",
            now=clock.time(),
        )
    with store.session() as s:
        expire_silence(s, silence.id, actor="oncall", now=clock.time())
    pool = resolve(
        PoolSpec(name="shared", capacity={"cpu": 4}, members=[MemberSpec(pipeline="train")]),
        0.5,
    )
    apply_pools(store, [pool], clock, actor="quota-admin")
    with store.session() as s:
        audit.token_granted(
            s,
            actor="admin",
            owner="ci-bot",
            token_id="tok_1a2b",
            scopes=["deploy:churn", "read"],
            expires_at=T0 + 86400,
            now=clock.time(),
        )
        audit.role_bound(
            s, actor="admin", principal="alice", role="approver", scope="model:churn",
            now=clock.time(),
        )  # fmt: skip
    with store.session() as s:
        audit.role_unbound(
            s, actor="admin", principal="alice", role="approver", scope="model:churn",
            now=clock.time(),
        )  # fmt: skip
        audit.token_revoked(s, actor="admin", owner="ci-bot", token_id="tok_1a2b", now=clock.time())

    verdict = audit.verify(store)
    assert verdict.ok, verdict.tampering
    events = audit.list_events(store, limit=1000).events
    assert verdict.events == len(events)
    by_action = {e.action: e for e in events}
    expected = {
        "model.register": "carol",
        "model.alias": "carol",
        "policy.set": "admin",
        "rollout.start": "carol",
        "rollout.approve.start": "alice",
        "model.rollback": "bob",
        "silence.create": "oncall",
        "silence.expire": "oncall",
        "pool.apply": "quota-admin",
        "token.grant": "admin",
        "token.revoke": "admin",
        "role.bind": "admin",
        "role.unbind": "admin",
    }
    for action, actor in expected.items():
        assert action in by_action, f"{action} is not in the chain"
        assert by_action[action].actor == actor, action
    assert {"gate.passed", "gate.failed"} & set(by_action)
    assert by_action["rollout.start"].subject_id == rollout.id
    assert by_action["pool.apply"].details["capacity"] == {"cpu": 4}
    assert by_action["token.grant"].details == {
        "token": "tok_1a2b",
        "scopes": ["deploy:churn", "read"],
        "expires_at": T0 + 86400,
    }
    assert by_action["token.grant"].mode == "server"
    assert by_action["model.rollback"].mode == "embedded"

    # filters and pages read the same chain
    rollouts = audit.list_events(store, action="rollout.*").events
    assert rollouts and all(e.action.startswith("rollout.") for e in rollouts)
    assert {e.action for e in audit.list_events(store, actor="admin").events} >= {"policy.set"}
    about = audit.list_events(store, subject_kind="silence", subject_id=silence.id).events
    assert [e.action for e in about] == ["silence.expire", "silence.create"]
    first = audit.list_events(store, limit=3)
    rest = audit.list_events(store, before=first.next_before, limit=1000)
    seqs = [e.seq for e in (*first.events, *rest.events)]
    assert seqs == list(range(verdict.head_seq, 0, -1)) and rest.next_before is None

"""One rule for what "live" means (issue #19): ``models alias``, ``models list/show`` and the
model server agree on which versions serve a model, and say what decides it.

After a model was deployed, deploy's traffic split decides what serves it; moving the default
alias to another version would change nothing, so the command refuses and names the commands
that do (``shipyard deploy`` / ``shipyard rollback``) instead of printing a success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serving.conftest import fit_classifier, free_port, start
from shipyard.artifacts import ArtifactStore
from shipyard.cli import app
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import get_rollout, start_rollout
from shipyard.errors import NotFound
from shipyard.registry import Registry
from shipyard.serving.live import ServedBySplit, live_state, live_states, move_alias
from shipyard.serving.server import build_app
from shipyard.serving.split import set_split
from shipyard.statuses import RolloutState
from shipyard.store import Store
from shipyard.workspace import Workspace

NO_APPROVALS = "approvals: {start: {count: 0}}\ncanary: {interval_s: 1, steps: []}\n"
ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}


@pytest.fixture
def server(workspace: Workspace) -> Iterator[str]:
    """``cancer`` v1 (champion) and v2, and a model server on loopback refreshing every 0.1 s."""
    for seed, author in ((0, "carol"), (1, "dave")):
        clf, x = fit_classifier(seed)
        Registry(workspace.store, workspace.artifacts, actor=author).register(
            "cancer", clf, training_data=x, alias="champion" if seed == 0 else None
        )
    port = free_port()
    uvicorn_server, thread = start(build_app(workspace, refresh_interval_s=0.1), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)


def deploy_to_production(ws: Workspace, version: int) -> str:
    """What ``shipyard deploy`` and the daemon do, under a policy with no approvals or canary."""
    set_policy(ws.store, "cancer", NO_APPROVALS, actor="admin")
    rid = start_rollout(ws.store, "cancer", version, actor="carol").id
    advance_rollouts(ws)
    assert get_rollout(ws.store, rid).state == RolloutState.PRODUCTION
    return rid


def served(client: httpx.Client) -> tuple[str, list[str]]:
    """The version that answers a request, and the versions the server says are live."""
    answer = client.post("/models/cancer/invocations", json=ONE_ROW)
    assert answer.status_code == 200, answer.text
    listed = client.get("/v2/models/cancer").json()["versions"]
    return answer.headers["x-shipyard-model-version"], listed


def serves_within(client: httpx.Client, version: str, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        answered, listed = served(client)
        if answered == version and listed == [version]:
            return listed
        assert time.monotonic() < deadline, f"still serving {answered} ({listed})"
        time.sleep(0.05)


def cli(*args: str) -> tuple[int, str, str]:
    """``shipyard ARGS`` as a user runs it (a real process): exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def test_alias_after_a_deployment_is_refused_and_says_what_the_server_serves(
    workspace: Workspace, server: str
) -> None:
    rid = deploy_to_production(workspace, 1)
    code, out, err = cli("models", "alias", "cancer", "champion", "2")
    assert code != 0 and "✓" not in out
    assert err.startswith("error: cancer is served by deployment (v1 100% by the traffic split")
    assert f"rollout {rid}" in err and "`shipyard deploy cancer --version 2`" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert Registry.of(workspace).aliases("cancer") == {"champion": 1}
    with httpx.Client(base_url=server, timeout=5) as c:
        assert served(c) == ("1", ["1"])
        shown = json.loads(CliRunner().invoke(app, ["models", "show", "cancer", "--json"]).output)
        assert [str(v["version"]) for v in shown["live"]["versions"]] == served(c)[1]
        assert shown["live"]["decided_by"] == "split" and shown["live"]["rollout_id"] == rid


def test_after_a_deployment_other_aliases_move_and_the_output_names_what_serves(
    workspace: Workspace, server: str
) -> None:
    rid = deploy_to_production(workspace, 1)
    runner = CliRunner()
    r = runner.invoke(app, ["models", "alias", "cancer", "challenger", "2"])
    assert r.exit_code == 0, r.output
    assert f"serving: v1 100% by the traffic split of rollout {rid}" in r.output
    r = runner.invoke(app, ["models", "alias", "cancer", "champion", "1"])  # what is served
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "alias", "cancer", "champion", "--delete"])
    assert r.exit_code == ServedBySplit.exit_code and "go back with" in r.output, r.output
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert listed[0]["live"]["description"] == f"v1 100% by the traffic split of rollout {rid}"
    table = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"}).output
    assert f"v1 (split {rid})" in table
    with httpx.Client(base_url=server, timeout=5) as c:
        assert served(c) == ("1", ["1"])


def test_without_a_deployment_the_alias_decides_and_the_output_matches_the_server(
    workspace: Workspace, server: str
) -> None:
    with httpx.Client(base_url=server, timeout=5) as c:
        assert served(c) == ("1", ["1"])
        r = CliRunner().invoke(app, ["models", "alias", "cancer", "champion", "2"])
        assert r.exit_code == 0, r.output
        assert "cancer@champion: 1 → 2" in r.output
        assert "serving: v2 100% by alias champion" in r.output
        assert serves_within(c, "2") == ["2"]


def test_a_canary_split_is_reported_with_its_weights_as_the_server_routes_it(
    workspace: Workspace, server: str
) -> None:
    deploy_to_production(workspace, 1)
    with workspace.store.session(immediate=True) as s:
        set_split(s, "cancer", stable=1, canary=2, canary_weight_pct=25.0, now=time.time())
    state = live_state(workspace.store, "cancer")
    assert state is not None
    assert state.describe() == "v1 75%, v2 25% (canary) by deploy's traffic split"
    assert state.brief() == "v1 75%, v2 25% (split)"
    with httpx.Client(base_url=server, timeout=5) as c:
        deadline = time.monotonic() + 5
        while sorted(c.get("/v2/models/cancer").json()["versions"]) != ["1", "2"]:
            assert time.monotonic() < deadline, "the server did not pick up the canary"
            time.sleep(0.05)
        answered = {served(c)[0] for _ in range(200)}  # a fresh request id each: both answer
    assert answered == {"1", "2"}
    with workspace.store.session() as s:
        assert [(v.version, v.weight, v.canary) for v in live_states(s)["cancer"].versions] == [
            (1, 0.75, False),
            (2, 0.25, True),
        ]


def test_move_alias_checks_and_moves_in_one_transaction_on_both_backends(
    store: Store, tmp_path: Path
) -> None:
    registry = Registry(store, ArtifactStore(str(tmp_path / "art"), store), actor="erin")
    clf, x = fit_classifier()
    for _ in range(3):
        registry.register("m", clf, training_data=x)
    move, live = move_alias(registry, "m", "champion", 2, "first")
    assert (move.from_version, move.to_version) == (None, 2)
    assert live is not None and live.describe() == "v2 100% by alias champion"
    with store.session(immediate=True) as s:
        set_split(s, "m", stable=3, now=1.0)
    with pytest.raises(ServedBySplit, match="shipyard deploy m --version 1"):
        move_alias(registry, "m", "champion", 1)
    move, live = move_alias(registry, "m", "champion", 3, "follow the split")
    assert live is not None and (live.decided_by, live.sole_version) == ("split", 3)
    with pytest.raises(NotFound):
        move_alias(registry, "nope", "champion", 1)
    assert [(m.from_version, m.to_version) for m in registry.alias_history("m")] == [
        (None, 2),
        (2, 3),
    ]

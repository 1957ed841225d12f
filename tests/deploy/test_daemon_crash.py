"""A daemon SIGKILLed mid-rollout: the next one resumes from the stored state and no decision
is applied twice (each transition is one transaction with its audit event)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from deploy_testkit import training_frame
from sqlalchemy import select

from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import audit_trail, get_rollout, start_rollout
from shipyard.serving.split import live_split
from shipyard.statuses import RolloutState
from shipyard.store.deploy import ProductionRecord
from shipyard.workspace import Workspace

FAST_POLICY = """
approvals: {start: {count: 0}}
staging: {sample_rows: 2}
canary:
  interval_s: 0.3
  steps:
    - {weight_pct: 10, min_duration_s: 0.6, min_samples: 0}
    - {weight_pct: 30, min_duration_s: 0.6, min_samples: 0}
    - {weight_pct: 60, min_duration_s: 0.6, min_samples: 0}
analysis: {metrics: []}
"""

DAEMON = """
import sys, time
from shipyard.deploy.loop import advance_rollouts
from shipyard.workspace import Workspace
ws = Workspace.open()
print("ready", flush=True)
while True:
    for a in advance_rollouts(ws):
        print(a.rollout_id, a.action, flush=True)
    time.sleep(0.02)
"""


def _spawn(home: Path, db_url: str) -> subprocess.Popen[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_DB_URL": db_url,
        "SHIPYARD_USER": "daemon",
    }
    if "PYTHONPATH" in os.environ:  # the code under test, not whatever shipyard is installed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.Popen(
        [sys.executable, "-c", DAEMON],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigkilled_daemon_resumes_without_double_actions(
    migrated_db_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ws = Workspace.open(home=home, db_url=migrated_db_url)
    from sklearn.linear_model import LogisticRegression

    from shipyard.registry import Registry

    x, y = training_frame()
    for author in ("carol", "dave"):
        Registry(ws.store, ws.artifacts, actor=author).register(
            "churn", LogisticRegression().fit(x, y), training_data=x
        )
    set_policy(ws.store, "churn", FAST_POLICY, actor="admin")
    first = start_rollout(ws.store, "churn", 1, actor="carol")
    advance_rollouts(ws)
    assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION
    rid = start_rollout(ws.store, "churn", 2, actor="dave").id

    rng = np.random.default_rng(0)
    kills = 0
    deadline = time.monotonic() + 60
    while kills < 2 and get_rollout(ws.store, rid).state != RolloutState.PRODUCTION:
        proc = _spawn(home, migrated_db_url)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        did = proc.stdout.readline().split()  # wait until it has made one decision
        assert did and did[0] == rid
        time.sleep(float(rng.uniform(0.0, 0.4)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += 1
        if kills == 1:
            assert get_rollout(ws.store, rid).state in (
                RolloutState.CANARY,
                RolloutState.PRODUCTION,
            )
    # the next daemon (this process) resumes from what the killed ones committed
    while (
        get_rollout(ws.store, rid).state != RolloutState.PRODUCTION and time.monotonic() < deadline
    ):
        advance_rollouts(ws)
        time.sleep(0.02)
    assert get_rollout(ws.store, rid).state == RolloutState.PRODUCTION, "the rollout never finished"

    actions = Counter(e.action for e in audit_trail(ws.store, rid))
    assert actions["rollout.canary"] == 1
    assert actions["rollout.step"] == 2
    assert actions["rollout.production"] == 1
    assert actions["rollout.staging.passed"] == 1
    with ws.store.session() as s:
        open_spans = list(
            s.scalars(select(ProductionRecord).where(ProductionRecord.until.is_(None)))
        )
    assert [(p.version, p.rollout_id) for p in open_spans] == [(2, rid)]
    split = live_split(ws.store, "churn")
    assert split is not None and split.weights == {2: 100.0}
    ws.store.dispose()

"""The rollout page's stages table, over HTTP and in a real browser: a staged release (replay,
shadow, a header-targeted step, a weighted step) whose skewed candidate the replay stopped
shows its stages in order, the replay failed with the rollout's reason and the later stages
not run, read from the same view the API answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apikit import Plane, live_plane
from deploy_testkit import classifier, training_frame
from sklearn.linear_model import LogisticRegression

from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import get_rollout, start_rollout
from shipyard.registry import Registry
from shipyard.serving.telemetry import Telemetry
from shipyard.statuses import RolloutState

STAGED = """
approvals: {start: {count: 0}, speedup: {count: 0}}
staging: {smoke: true, sample_rows: 3, max_latency_ms: 5000}
canary:
  interval_s: 60
  replay: {min_rows: 100, max_rows: 300}
  shadow: {share_pct: 50, min_rows: 100, max_wait_s: 600}
  steps:
    - {match: {header: X-User-Group, values: [internal]}, min_duration_s: 120, min_samples: 10}
    - {weight_pct: 10, min_duration_s: 120, min_samples: 100}
analysis: {alpha: 0.01}
"""
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Stopped:
    plane: Plane
    rollout: str


@pytest.fixture(scope="module")
def stopped(module_folder: Path) -> Iterator[Stopped]:
    """churn v1 in production with 300 logged rows, v2 (answers the other way round) rolled
    back at its replay."""
    with live_plane(f"sqlite:///{module_folder / 'store.db'}", module_folder) as plane:
        ws, clock = plane.ws, plane.clock
        x, y = training_frame()
        Registry(ws.store, ws.artifacts, clock, "carol").register(
            "churn", classifier(), training_data=x
        )
        Registry(ws.store, ws.artifacts, clock, "erin").register(
            "churn", LogisticRegression().fit(x, 1 - y), training_data=x
        )
        set_policy(ws.store, "churn", STAGED, actor="setup", clock=clock)
        first = start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
        advance_rollouts(ws, clock)
        assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION
        info, model = Registry.of(ws).load("churn", version=1)
        telemetry = Telemetry(ws.store, ws.artifacts, sample_rate=1.0, clock=clock, worker="w")
        rows = training_frame(seed=7)[0].to_numpy()[:300]
        for i in range(0, len(rows), 10):
            batch = rows[i : i + 10]
            telemetry.ok(info, batch, np.asarray(model.predict(batch)), None, 0.002, f"r{i}")
        clock.advance(10)
        telemetry.flush()
        second = start_rollout(ws.store, "churn", 2, actor="erin", clock=clock)
        clock.advance(1)
        advance_rollouts(ws, clock)
        assert get_rollout(ws.store, second.id).state == RolloutState.ROLLED_BACK
        yield Stopped(plane, second.id)


@contextmanager
def signed_in(plane: Plane) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plane.url, timeout=30, follow_redirects=False) as client:
        answer = client.post(
            "/ui/login",
            data={"token": plane.token["admin"], "next": "/ui/"},
            headers={"Origin": plane.url},
        )
        assert answer.status_code == 303, answer.text
        yield client


class TestStagesOverHttp:
    def test_a_rollout_stopped_at_replay_lists_its_stages_with_replay_failed(
        self, stopped: Stopped
    ) -> None:
        with signed_in(stopped.plane) as client, stopped.plane.http("admin") as rest:
            page = client.get(f"/ui/rollouts/{stopped.rollout}")
            data = client.get(f"/ui/rollouts/{stopped.rollout}", params={"format": "json"})
            api = rest.get(f"/rollouts/{stopped.rollout}")
        assert page.status_code == 200 and data.status_code == 200 and api.status_code == 200
        stages = data.json()["stages"]
        assert [(s["kind"], s["shown"]) for s in stages] == [
            ("replay", "failed"),
            ("shadow", "not run"),
            ("targeted", "not run"),
            ("canary", "not run"),
        ]
        reason = api.json()["reason"]
        assert stages[0]["why"] == reason == "replay failed: prediction_shift"
        assert [s["alpha"] for s in stages] == [s["alpha"] for s in api.json()["stages"]]
        table = page.text[page.text.index('<table id="stages">') :]
        table = table[: table.index("</table>")]
        rows = re.findall(r'<tr data-stage="(\w+)">(.*?)</tr>', table, re.S)
        assert [kind for kind, _ in rows] == ["replay", "shadow", "targeted", "canary"]
        replay, shadow, targeted, canary = (cells for _, cells in rows)
        assert "state-failed" in replay and reason in replay and "300 rows" in replay
        assert "50% of live requests" in shadow and "not run" in shadow
        assert "header X-User-Group in [internal]" in targeted
        assert "10 % of users" in canary and "10%" in canary and "not run" in canary


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")
def test_the_browser_shows_the_stages_table(stopped: Stopped) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    plane = stopped.plane
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page: Any = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(plane.url + "/ui/login")
            page.fill("#token", plane.token["admin"])
            page.click("button[type=submit]")
            page.wait_for_url(plane.url + "/ui/")
            page.goto(f"{plane.url}/ui/rollouts/{stopped.rollout}")
            rows = page.locator("#stages tbody tr")
            sync_api.expect(rows).to_have_count(4)
            cells = [rows.nth(i).locator("td").nth(6).inner_text() for i in range(4)]
            assert cells == ["failed", "not run", "not run", "not run"]
        finally:
            browser.close()

"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) over a real
socket: signing in, every page drawn with its charts and no console error, approving as an
approver and being refused as the version's author, rolling back from the button, a viewer
without buttons. A screenshot of each page is kept under build/test-artifacts/ui/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uikit import Seeded

from shipyard.deploy.rollout import get_rollout
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "ui"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
DEADLINE_MS = 15_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


class Tab:
    """A signed-in browser tab that records console errors and uncaught exceptions."""

    def __init__(self, chromium: Any, seeded: Seeded, token: str) -> None:
        self.url = seeded.plane.url
        self.context = chromium.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(DEADLINE_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.url + "/ui/")
        assert self.page.url.startswith(self.url + "/ui/login")
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.url + "/ui/")

    def open(self, path: str) -> Any:
        self.page.goto(self.url + path)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium: Any, seeded: Seeded) -> Iterator[Any]:
    opened: list[Tab] = []

    def signed_in(who: str = "admin", token: str | None = None) -> Tab:
        t = Tab(chromium, seeded, token or seeded.plane.token[who])
        opened.append(t)
        return t

    yield signed_in
    for t in opened:
        t.close()


def pages_of(seeded: Seeded) -> list[tuple[str, str]]:
    return [
        ("overview", "/ui/"),
        ("runs", "/ui/runs"),
        ("run", f"/ui/runs/{seeded.failed_run}"),
        ("log", f"/ui/runs/{seeded.running_run}/logs/fit"),
        ("rollouts", "/ui/rollouts"),
        ("rollout", f"/ui/rollouts/{seeded.failed_rollout}"),
        ("models", "/ui/models"),
        ("model", "/ui/models/churn"),
        ("quota", "/ui/quota"),
        ("monitors", "/ui/monitors"),
        ("monitor", "/ui/monitors/ingest"),
        ("alerts", "/ui/alerts"),
        ("alert", f"/ui/alerts/{seeded.alert}"),
        ("audit", "/ui/audit"),
    ]


def test_every_page_draws_its_charts_with_no_console_error(tab: Any, seeded: Seeded) -> None:
    t = tab("admin")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, path in pages_of(seeded):
        page = t.open(path)
        charts = page.locator("div.plot").count()
        if charts:
            page.wait_for_function(
                "n => document.querySelectorAll('div.plot svg.main-svg').length >= n", arg=charts
            )
        drawn[name] = charts
        assert page.locator("h1").count() == 1, name
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert t.errors == []
    assert {k: v for k, v in drawn.items() if v} == {
        "runs": 1, "run": 2, "rollout": 1, "model": 3, "quota": 2, "monitor": 3, "alerts": 1,
    }  # fmt: skip
    dag = t.open(f"/ui/runs/{seeded.failed_run}").locator("#chart-dag .scatterlayer .point")
    dag.first.wait_for()
    assert dag.count() == 3  # load, fit, evaluate


def test_a_features_and_a_served_models_monitors_draw_with_no_console_error(
    tab: Any, seeded: Seeded
) -> None:
    t = tab("vic")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, path, charts in (("feature", "/ui/monitors/ingest/features/income", 2),
                               ("served", "/ui/monitors/served/churn", 3)):  # fmt: skip
        page = t.open(path)
        assert page.locator("div.plot").count() == charts
        page.wait_for_function(
            "n => document.querySelectorAll('div.plot svg.main-svg').length >= n", arg=charts
        )
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert t.errors == []


def test_a_running_runs_page_updates_itself(tab: Any, seeded: Seeded) -> None:
    """The live script swaps in the fragment: a step that ends shows without a reload."""
    t = tab("vic")
    page = t.open(f"/ui/runs/{seeded.running_run}")
    assert page.locator("text=pending").count() >= 1
    from shipyard.store.tables import StepRun

    with seeded.plane.ws.store.session() as s:
        step = s.query(StepRun).filter_by(run_id=seeded.running_run, step="evaluate").one()
        step.status = "skipped"
    page.wait_for_selector("td >> text=skipped", timeout=DEADLINE_MS)
    assert t.errors == []


def test_a_followed_log_appends_only_the_new_lines(tab: Any, seeded: Seeded) -> None:
    t = tab("vic")
    page = t.open(f"/ui/runs/{seeded.running_run}/logs/evaluate")
    from shipyard.store.tables import StepRun

    with seeded.plane.ws.store.session() as s:
        log = s.query(StepRun).filter_by(run_id=seeded.running_run, step="evaluate").one()
        with open(str(log.log_path), "a") as f:
            f.write('{"message": "evaluate line 5"}\n')
    page.wait_for_selector("pre.log >> text=evaluate line 5", timeout=DEADLINE_MS)
    text = page.locator("pre.log").inner_text()
    assert text.count('"evaluate line 0"') == 1 and text.endswith("evaluate line 5")
    assert t.errors == []


def test_the_approver_approves_and_the_author_is_refused(tab: Any, seeded: Seeded) -> None:
    plane = seeded.plane
    rid = seeded.waiting_rollout
    now = plane.clock.time()
    bind_role(plane.ws.store, "bob", "approver", "model:digits", actor="setup", now=now,
              mode="embedded")  # fmt: skip
    bob_token = create_token(plane.ws.store, "bob", actor="setup", now=now, mode="embedded")
    bob = tab(token=bob_token.secret).open(f"/ui/rollouts/{rid}")
    bob.click("button:has-text('Approve')")
    refusal = bob.locator("p.refused")
    refusal.wait_for()
    assert re.search(r"Approve refused: four-eyes: bob made", refusal.inner_text())
    assert get_rollout(plane.ws.store, rid).approvals == []

    alice = tab("alice").open(f"/ui/rollouts/{rid}")
    alice.click("button:has-text('Approve')")
    alice.locator("p.notice").wait_for()
    assert alice.locator("p.notice").inner_text() == "Approved."
    view = get_rollout(plane.ws.store, rid)
    assert [a["actor"] for a in view.approvals] == ["alice"]
    assert view.state != "waiting_for_approvals"


def test_rolling_back_from_the_button(tab: Any, seeded: Seeded) -> None:
    page = tab("bob").open("/ui/models/churn")
    page.click("button:has-text('Roll back')")
    refused = page.locator("p.refused")
    refused.wait_for()
    assert "no earlier production version that was healthy" in refused.inner_text()
    page.fill("#rb-version", "2")
    page.fill("#rb-reason", "v1 leaks memory")
    page.click("button:has-text('Roll back')")
    page.locator("p.notice").wait_for()
    assert page.locator("p.notice").inner_text() == "Rolled back."
    assert "v2 100%" in page.locator("dl.facts").inner_text()


def test_a_viewer_sees_no_buttons_and_cannot_post_anyway(tab: Any, seeded: Seeded) -> None:
    t = tab("vic")
    rid = seeded.waiting_rollout
    for path in (f"/ui/rollouts/{rid}", "/ui/models/churn", f"/ui/runs/{seeded.running_run}"):
        page = t.open(path)
        assert page.locator("main form[method=post]").count() == 0, path
    forged = t.page.request.post(
        f"{t.url}/ui/models/churn/rollback", headers={"Origin": t.url}, form={"to_version": "1"}
    )
    assert forged.status == 403 and "vic may not" in forged.text()
    foreign = t.page.request.post(
        f"{t.url}/ui/models/churn/rollback", headers={"Origin": "http://evil.example"}
    )
    assert foreign.status == 403 and "another site" in foreign.text()

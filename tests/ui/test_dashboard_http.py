"""The dashboard over HTTP on a real socket: signing in and out, the cookie, refusing form
posts from elsewhere, each page's JSON, and permissions that are the API's own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from uikit import TRAINING_DATA, Seeded

from shipyard.deploy.rollout import get_rollout
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.readiness import gather, readiness
from shipyard.store.tables import Run, StepRun

PAGES = (
    "/ui/", "/ui/runs", "/ui/rollouts", "/ui/models", "/ui/models/churn", "/ui/quota",
    "/ui/monitors", "/ui/monitors/ingest", "/ui/alerts", "/ui/audit",
)  # fmt: skip


def browser(seeded: Seeded) -> httpx.Client:
    return httpx.Client(base_url=seeded.plane.url, timeout=30, follow_redirects=False)


@contextmanager
def signed_in(seeded: Seeded, who: str) -> Iterator[httpx.Client]:
    with browser(seeded) as client:
        answer = client.post(
            "/ui/login",
            data={"token": seeded.plane.token[who], "next": "/ui/"},
            headers={"Origin": seeded.plane.url},
        )
        assert answer.status_code == 303, answer.text
        yield client


@pytest.fixture
def admin(seeded: Seeded) -> Iterator[httpx.Client]:
    with signed_in(seeded, "admin") as client:
        yield client


class TestSignIn:
    def test_a_page_without_a_session_sends_the_browser_to_sign_in(self, seeded: Seeded) -> None:
        with browser(seeded) as client:
            page = client.get("/ui/runs?status=failed")
            assert page.status_code == 303
            assert page.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
            as_json = client.get("/ui/runs", params={"format": "json"})
            assert as_json.status_code == 401 and as_json.json()["type"] == "Unauthenticated"
            assert client.get("/").headers["location"] == "/ui/"
            login = client.get("/ui/login")
            assert "shipyard token create" in login.text

    def test_a_good_token_sets_a_strict_httponly_cookie_and_is_never_shown(
        self, seeded: Seeded
    ) -> None:
        token = seeded.plane.token["alice"]
        with browser(seeded) as client:
            answer = client.post(
                "/ui/login",
                data={"token": token, "next": "/ui/rollouts"},
                headers={"Origin": seeded.plane.url},
            )
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/rollouts"
            cookie = answer.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
            page = client.get("/ui/rollouts")
            assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
            assert token not in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]

    def test_a_bad_token_is_refused_without_echoing_it(self, seeded: Seeded) -> None:
        forged = seeded.plane.token["alice"][:-4] + "AAAA"
        with browser(seeded) as client:
            answer = client.post(
                "/ui/login", data={"token": forged}, headers={"Origin": seeded.plane.url}
            )
            assert answer.status_code == 401
            assert forged not in answer.text and "set-cookie" not in answer.headers
            assert client.get("/ui/").status_code == 303

    def test_a_redirect_after_sign_in_stays_on_the_dashboard(self, seeded: Seeded) -> None:
        with browser(seeded) as client:
            answer = client.post(
                "/ui/login",
                data={"token": seeded.plane.token["vic"], "next": "https://evil.example/ui/"},
                headers={"Origin": seeded.plane.url},
            )
            assert answer.headers["location"] == "/ui/"

    def test_signing_out_clears_the_cookie(self, seeded: Seeded) -> None:
        with signed_in(seeded, "vic") as client:
            assert client.get("/ui/").status_code == 200
            out = client.post("/ui/logout", headers={"Origin": seeded.plane.url})
            assert out.status_code == 303 and 'shipyard-ui=""' in out.headers["set-cookie"]
            assert client.get("/ui/").status_code == 303


class TestForms:
    def test_a_post_from_another_origin_or_none_is_refused_and_changes_nothing(
        self, seeded: Seeded
    ) -> None:
        rid = seeded.waiting_rollout
        with signed_in(seeded, "alice") as client:
            for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"},
                            {"Referer": "http://evil.example/page"}):  # fmt: skip
                answer = client.post(f"/ui/rollouts/{rid}/approve", headers=headers)
                assert answer.status_code == 403, headers
                assert "form post" in answer.text
        assert get_rollout(seeded.plane.ws.store, rid).state == "waiting_for_approvals"

    def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused_by_the_operation(
        self, seeded: Seeded
    ) -> None:
        rid = seeded.waiting_rollout
        with signed_in(seeded, "vic") as client:
            page = client.get(f"/ui/rollouts/{rid}")
            assert (
                page.status_code == 200 and '<form method="post" action="/ui/roll' not in page.text
            )
            model = client.get("/ui/models/churn")
            assert "/rollback" not in model.text
            forged = client.post(
                f"/ui/rollouts/{rid}/approve", headers={"Origin": seeded.plane.url}
            )
            assert forged.status_code == 403
            assert "vic may not approve rollouts" in forged.text
        assert get_rollout(seeded.plane.ws.store, rid).state == "waiting_for_approvals"


class TestJson:
    @pytest.mark.parametrize("path", PAGES)
    def test_each_page_is_its_data_as_json(self, admin: httpx.Client, path: str) -> None:
        by_query = admin.get(path, params={"format": "json"})
        by_accept = admin.get(path, headers={"Accept": "application/json"})
        assert by_query.status_code == 200 and by_accept.status_code == 200
        assert by_query.headers["content-type"] == "application/json"
        assert set(by_query.json()) == set(by_accept.json())
        fragment = admin.get(path, params={"fragment": "live"})
        assert fragment.status_code == 200 and "<h1>" in fragment.text

    @pytest.mark.parametrize("path", PAGES)
    def test_a_hostile_query_string_is_a_4xx_naming_it_never_a_500(
        self, admin: httpx.Client, path: str
    ) -> None:
        names = ("limit", "offset", "status", "state", "pipeline", "since", "dataset", "cursor",
                 "version", "model", "step", "alias", "before")  # fmt: skip
        for value in ("abc", "-1", "1e999", "\x00", "x" * 5000, "[]"):
            answer = admin.get(path, params={**dict.fromkeys(names, value), "format": "json"})
            assert answer.status_code < 500, (path, value[:20], answer.text[:300])

    def test_a_rollout_page_carries_what_the_api_answers(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        rid = seeded.failed_rollout
        page = admin.get(f"/ui/rollouts/{rid}", params={"format": "json"}).json()
        with seeded.plane.http("admin") as api:
            assert page["rollout"] == api.get(f"/rollouts/{rid}").json()
        assert page["rollout"]["diagnosis"]["failed_metrics"][0]["metric"] == "error_rate"
        assert page["charts"]["traffic"]["data"][0]["type"] == "scatter"

    def test_an_unknown_thing_is_404_on_its_page(self, admin: httpx.Client) -> None:
        missing = admin.get("/ui/models/nosuchmodel")
        assert missing.status_code == 404 and "nosuchmodel" in missing.text
        assert admin.get("/ui/runs/deadbeef0000", params={"format": "json"}).status_code == 404

    def test_the_live_fragment_is_the_page_without_its_frame(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        fragment = admin.get(f"/ui/runs/{seeded.running_run}", params={"fragment": "live"})
        assert fragment.status_code == 200
        assert "<html" not in fragment.text and seeded.running_run in fragment.text


class TestMonitors:
    def test_a_pipelines_page_links_each_feature_and_shows_anomalies_and_training_time(
        self, admin: httpx.Client
    ) -> None:
        ingest = admin.get("/ui/monitors/ingest", params={"format": "json"}).json()
        assert ingest["features"][0]["column"] == "income"  # the most drifted first
        assert {len(t["x"]) for t in ingest["charts"]["heatmap"]["data"]} == {24}
        assert {(a["column"], a["kind"]) for a in ingest["anomalies"]} >= {
            ("plan", "nulls_above_expectation")
        }
        assert "problems" in ingest["charts"]
        page = admin.get("/ui/monitors/ingest")
        assert 'href="/ui/monitors/ingest/features/income?dataset=events"' in page.text
        train = admin.get("/ui/monitors/train", params={"format": "json"}).json()
        assert train["training_time"]["evidence"]["history_p95_s"] == 650.0
        names = [t["name"] for t in train["charts"]["training"]["data"]]
        assert names == ["run", "history p95", "limit (2 × p95)"]

    def test_a_features_page_draws_both_distributions_from_the_findings_evidence(
        self, admin: httpx.Client
    ) -> None:
        data = admin.get(
            "/ui/monitors/ingest/features/income", params={"format": "json", "dataset": "events"}
        ).json()
        assert data["dataset"] == "events" and data["drift"]["drifted"] is True
        assert data["finding"]["monitor"] == "feature_drift"
        bars = data["charts"]["distribution"]["data"]
        assert [b["name"] for b in bars] == ["reference", "current"]
        assert bars[0]["x"] == data["drift"]["bins"]
        assert all(abs(sum(b["y"]) - 1) < 1e-4 for b in bars)
        assert bars[1]["y"] != bars[0]["y"]
        assert data["charts"]["score"]["data"][0]["name"] == "events"
        html = admin.get("/ui/monitors/ingest/features/income").text
        assert "wasserstein_normalised" in html and "chi2" in html

    def test_a_feature_with_a_score_but_no_evidence_still_draws_its_score(
        self, admin: httpx.Client
    ) -> None:
        data = admin.get("/ui/monitors/ingest/features/region", params={"format": "json"}).json()
        assert data["drift"] is None and "distribution" not in data["charts"]
        assert "score" in data["charts"]

    def test_an_unknown_feature_or_pipeline_is_404(self, admin: httpx.Client) -> None:
        missing = admin.get("/ui/monitors/ingest/features/incme", params={"format": "json"})
        assert missing.status_code == 404 and "did you mean 'income'" in missing.json()["error"]
        assert admin.get("/ui/monitors/nosuch/features/income").status_code == 404
        assert admin.get("/ui/monitors/served/nosuchmodel").status_code == 404

    def test_a_served_models_page_has_skew_prediction_drift_and_quality_before_labels(
        self, admin: httpx.Client
    ) -> None:
        index = admin.get("/ui/monitors", params={"format": "json"}).json()
        assert "churn" in [m["model"] for m in index["served_models"]]
        data = admin.get("/ui/monitors/served/churn", params={"format": "json"}).json()
        skew = data["latest"]["serving.input_skew"]["evidence"]["columns"]
        assert skew[0]["column"] == "income" and skew[0]["drifted"]
        assert {"skew", "predictions", "quality-accuracy"} <= set(data["charts"])
        quality = {t["name"]: t["y"] for t in data["charts"]["quality-accuracy"]["data"]}
        assert set(quality) == {"labels v1", "estimated v1"}
        measured = [v for v in quality["labels v1"] if v is not None]
        estimated = [v for v in quality["estimated v1"] if v is not None]
        assert 0 < len(measured) < len(estimated)  # the labels come later than the estimate
        page = admin.get("/ui/monitors/served/churn")
        assert page.status_code == 200 and "serving.input_skew" in page.text


def test_plotly_is_served_from_the_installed_package_with_a_long_cache(seeded: Seeded) -> None:
    from importlib import resources

    shipped = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    with browser(seeded) as client:
        answer = client.get("/ui/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.content == shipped
    assert answer.headers["content-encoding"] == "gzip"
    assert "immutable" in answer.headers["cache-control"]


class TestWhatThePagesAdd:
    def test_a_run_page_draws_its_dag_from_the_pipelines_upstream_declarations(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        page = admin.get(f"/ui/runs/{seeded.running_run}", params={"format": "json"}).json()
        nodes = {n["step"]: n for n in page["dag"]["nodes"]}
        assert {s: (n["status"], n["depth"]) for s, n in nodes.items()} == {
            "load": ("succeeded", 0), "fit": ("running", 1), "evaluate": ("pending", 2),
        }  # fmt: skip
        assert sorted(page["dag"]["edges"]) == [["fit", "evaluate"], ["load", "evaluate"],
                                                ["load", "fit"]]  # fmt: skip
        assert nodes["load"]["usage"]["cpu"]["declared"] == 2
        traces = page["charts"]["dag"]["data"]
        assert {t["name"] for t in traces} == {"edges", "succeeded", "running", "pending"}
        assert len(page["charts"]["dag"]["layout"]["annotations"]) == 3  # an arrow per edge
        fit = next(t for t in traces if t["name"] == "running")
        assert "cpu" in fit["hovertext"][0] and "used / declared" in fit["hovertext"][0]

    def test_a_followed_log_reads_only_the_lines_after_its_offset(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        path = f"/ui/runs/{seeded.running_run}/logs/fit"
        first = admin.get(path, params={"format": "json"}).json()
        assert first["following"] and len(first["log"]["items"]) == 5
        offset = first["log"]["offset"]
        nothing = admin.get(path, params={"offset": offset, "fragment": "live"}).text
        assert 'data-lines="0"' in nothing and f'data-offset="{offset}"' in nothing
        log = Path(str(_log_path(seeded, "fit")))
        with log.open("a") as f:
            f.write(json.dumps({"ts": 1.0, "level": "info", "message": "fit line 5"}) + "\n")
        fresh = admin.get(path, params={"offset": offset, "fragment": "live"}).text
        assert 'data-lines="1"' in fresh and "fit line 5" in fresh and "fit line 4" not in fresh

    def test_a_model_page_shows_lineage_and_traffic_per_version(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        page = admin.get("/ui/models/churn", params={"format": "json"}).json()
        lineage = {x["version"]: x for x in page["lineage"]}
        with seeded.plane.ws.store.session() as s:
            trained_by = s.scalars(
                select(Run.id).where(Run.pipeline == "train", Run.status == "succeeded")
                .order_by(Run.created_at.desc()).limit(1)
            ).one()  # fmt: skip
        assert lineage[2]["run"]["id"] == trained_by and lineage[2]["run"]["status"] == "succeeded"
        assert lineage[2]["data"] == [{"digest": TRAINING_DATA, "name": "events.parquet",
                                       "step": "load", "media_type": "application/parquet",
                                       "size_bytes": 3 * 2**20}]  # fmt: skip
        assert lineage[1]["run"] is None and lineage[1]["data"] == []
        per_min = {s["version"]: [v for v in s["requests_per_min"] if v is not None]
                   for s in page["traffic"]["series"]}  # fmt: skip
        assert per_min["v1"] and all(v == pytest.approx(100.0) for v in per_min["v1"])
        assert per_min["v2"] and all(v == pytest.approx(10.0) for v in per_min["v2"])
        assert {t["name"] for t in page["charts"]["traffic"]["data"]} == {"v1", "v2"}
        html = admin.get("/ui/models/churn").text
        assert f'<a href="/ui/runs/{trained_by}">' in html and "events.parquet" in html

    def test_the_overview_shows_slow_runs_and_the_readiness_score(
        self, seeded: Seeded, admin: httpx.Client
    ) -> None:
        page = admin.get("/ui/", params={"format": "json"}).json()
        slow = {r["id"]: r for r in page["slow_runs"]}
        assert seeded.running_run in slow and slow[seeded.running_run]["ratio"] > 2
        assert seeded.failed_run not in slow  # 870 s against train's median of 720 s
        expected = readiness(gather(seeded.plane.ws))
        assert page["readiness"]["score"] == expected.score
        assert {(x["kind"], x["name"]) for x in page["readiness"]["subjects"]} == {
            ("model", "churn"), ("model", "digits"), ("pipeline", "ingest"),
            ("pipeline", "train"),
        }  # fmt: skip
        html = admin.get("/ui/").text
        assert "ML Test Score" in html and f'<a href="/ui/runs/{seeded.running_run}">' in html


def _log_path(seeded: Seeded, step: str) -> str | None:
    with seeded.plane.ws.store.session() as s:
        return s.scalars(
            select(StepRun.log_path).where(
                StepRun.run_id == seeded.running_run, StepRun.step == step
            )
        ).one()


def test_the_quota_plan_shows_the_serving_and_running_demand_its_total_includes(
    seeded: Seeded, admin: httpx.Client
) -> None:
    plane = seeded.plane
    spec = PoolSpec(name="planned", capacity={"cpu": 8})
    apply_pools(plane.ws.store, [resolve(spec, 1.0)], plane.clock, actor="test")
    leases = LeaseManager(plane.ws.store, clock=plane.clock, lease_ttl_s=1e9)
    standing = leases.acquire(LeaseRequest("serve:h:1", {"cpu": 3}, pool="planned"))
    run = leases.acquire(LeaseRequest("train", {"cpu": 1}, pool="planned", run_id="r9"))
    try:
        plan = admin.get("/ui/quota", params={"format": "json"}).json()["plan"]
        page = admin.get("/ui/quota").text
    finally:
        leases.release(run)
        leases.release(standing)
        leases.close()
    cpu = next(x for x in plan["lines"] if x["pool"] == "planned")
    assert (cpu["serving"], cpu["holders"], cpu["running"]) == (3, ["serve:h:1"], 1)
    headers = re.findall(r'<th scope="col">([^<]+)</th>', page[page.index("The week's plan") :])
    assert headers[2:6] == ["Reserved", "Serving", "Running", "Scheduled peak"]
    row = re.search(r"<tr><td>planned</td><td>cpu</td>(.*?)</tr>", page)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:3] == ["0", "3 (serve:h:1)", "1"] and cells[3].endswith(": train (running)")

"""Quota through the control plane: pools, status, leases, plans and estimates read by anyone
with a role; pools applied only by a quota admin over them, audited under their name; a bad
pools file refused whole. Over a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from apikit import Plane
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import apply_pools, list_pools, read_pool_file
from shipyard.store.tables import PipelineRecord, Run, StepRun

runner = CliRunner()

POOLS = """
pools:
  - name: team
    capacity: {cpu: 8, memory: 32Gi}
    members:
      - {pipeline: etl, share: 0.5, cap: 0.75}
      - {pipeline: train, share: 0.25}
  - name: solo
    mode: dedicated
    owner: train
    capacity: {cpu: 2}
"""
WAITERS = 7


@dataclass
class Seeded:
    plane: Plane
    held: str
    waiting: list[str]


@pytest.fixture(scope="module")
def seeded(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """Pools team and solo; etl holds 6 CPUs of team, train waits with 7 requests of 4; etl has
    a run history and a daily schedule."""
    ws = plane.ws
    path = tmp_path_factory.mktemp("pools") / "pools.yaml"
    path.write_text(POOLS)
    apply_pools(ws.store, read_pool_file(path, 0.5), plane.clock, actor="setup")
    leases = LeaseManager(ws.store, clock=plane.clock, lease_ttl_s=3600)
    held = leases.acquire(LeaseRequest("etl", {"cpu": 6, "memory": "8Gi"}, pool="team"))
    waiting = [
        leases.submit(LeaseRequest("train", {"cpu": 4}, pool="team", step=f"s{i}"))
        for i in range(WAITERS)
    ]
    leases.close()
    with ws.store.session() as s:
        s.add(
            PipelineRecord(
                name="etl",
                kind="data",
                file="etl.py",
                schedule="0 2 * * *",
                spec={"pool": "team"},
                updated_at=0.0,
            )
        )
        for i in range(3):
            run = Run(pipeline="etl", kind="data", file="etl.py", status="succeeded", created_at=i)
            s.add(run)
            s.flush()
            s.add(
                StepRun(
                    run_id=run.id,
                    step="load",
                    status="succeeded",
                    started_at=i * 100.0,
                    ended_at=i * 100.0 + 600,
                    # 1 GiB: 2 GiB overflows step_runs.peak_rss_bytes (INTEGER) on PostgreSQL
                    peak_rss_bytes=1024**3,
                    cpu_seconds=300.0 + i,
                )
            )
    yield Seeded(plane, held.lease_id, waiting)


def audit_seq(api: httpx.Client) -> int:
    items = api.get("/audit/events", params={"limit": 1}).json()["items"]
    return int(items[0]["seq"]) if items else 0


class TestReads:
    def test_pools_show_members_guarantees_and_caps(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            listed = api.get("/quota/pools").json()
            team = api.get("/quota/pools/team").json()
            missing = api.get("/quota/pools/tem")
        assert [p["name"] for p in listed["items"]] == ["solo", "team"] and listed["next"] is None
        assert team["capacity"] == {"cpu": 8.0, "memory": 32 * 1024.0**3}
        etl = team["members"]["etl"]
        assert etl["share"]["cpu"] == 4.0 and etl["cap"]["cpu"] == 6.0
        assert etl["held"] == {"cpu": 6.0, "memory": 8 * 1024.0**3} and etl["waiting"] == 0
        assert team["members"]["train"]["waiting"] == WAITERS
        assert team["held"]["cpu"] == 6.0
        assert missing.status_code == 404 and "did you mean 'team'" in missing.json()["error"]

    def test_status_says_who_holds_and_who_waits(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            now = api.get("/quota/status").json()
        team = next(p for p in now["pools"] if p["name"] == "team")
        assert team["resources"]["cpu"]["reserved"] == 6.0
        assert team["resources"]["cpu"]["capacity"] == 8.0
        assert team["waiting"] == WAITERS
        holders = {(h["pipeline"], h["status"]): h for h in team["holders"]}
        assert holders[("etl", "held")]["leases"] == 1
        assert holders[("train", "waiting")]["resources"] == {"cpu": 4.0 * WAITERS}

    def test_status_shows_the_last_recorded_forecast_and_writes_nothing(
        self, seeded: Seeded
    ) -> None:
        from shipyard.quota.usage import POOL_RESERVED, TIME_TO_EXHAUSTION
        from shipyard.store.tables import MetricPoint

        store, t = seeded.plane.ws.store, seeded.plane.clock.time()
        labels = {"pool": "team", "resource": "memory"}

        def memory() -> dict[str, object]:
            with seeded.plane.http("vic") as api:
                now = api.get("/quota/status").json()
            team = next(p for p in now["pools"] if p["name"] == "team")
            return dict(team["resources"]["memory"])

        with store.session() as s:
            s.add(MetricPoint.of(POOL_RESERVED, labels, t - 10, 8.0 * 1024**3))
            s.add(MetricPoint.of(TIME_TO_EXHAUSTION, labels, t - 10, 5400.0))
            s.add(MetricPoint.of(TIME_TO_EXHAUSTION, labels, t - 20, 60.0))  # an older one
        with store.session() as s:
            points = s.query(MetricPoint).count()
        seen = memory()
        assert seen["time_to_exhaustion_s"] == 5400.0 and seen["sampled_at"] == t - 10
        shown = runner.invoke(app, ["quota", "status"], env=seeded.plane.env("vic"))
        assert "exhausted in ~1h30m" in shown.output
        with store.session() as s:
            assert s.query(MetricPoint).count() == points  # a read writes no sample
            s.add(MetricPoint.of(POOL_RESERVED, labels, t - 5, 8.0 * 1024**3))  # no forecast
        assert memory()["time_to_exhaustion_s"] is None

    def test_leases_are_paged_without_gaps_or_repeats(self, seeded: Seeded) -> None:
        seen: list[str] = []
        pages = 0
        cursor = None
        with seeded.plane.http("vic") as api:
            while True:
                params: dict[str, str | int] = {"limit": 3, "pool": "team"}
                if cursor:
                    params["cursor"] = cursor
                got = api.get("/quota/leases", params=params)
                assert got.status_code == 200, got.text
                body = got.json()
                seen += [x["id"] for x in body["items"]]
                pages += 1
                cursor = body["next"]
                if cursor is None:
                    break
            waiting = api.get("/quota/leases", params={"status": "waiting", "limit": 1000})
            bad_cursor = api.get("/quota/leases", params={"cursor": "yesterday"})
            too_many = api.get("/quota/leases", params={"limit": 5000})
        assert sorted(seen) == sorted([seeded.held, *seeded.waiting])
        assert len(seen) == len(set(seen))
        assert pages == 3
        assert sorted(x["id"] for x in waiting.json()["items"]) == sorted(seeded.waiting)
        assert bad_cursor.status_code == 400 and "cursor" in bad_cursor.json()["error"]
        assert too_many.status_code == 400 and "limit" in too_many.json()["error"]

    def test_pools_are_paged(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            first = api.get("/quota/pools", params={"limit": 1}).json()
            second = api.get("/quota/pools", params={"limit": 1, "cursor": first["next"]}).json()
        assert [p["name"] for p in first["items"]] == ["solo"] and first["next"] is not None
        assert [p["name"] for p in second["items"]] == ["team"] and second["next"] is None

    def test_plan_and_estimate_from_history(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            planned = api.get("/quota/plan").json()
            est = api.get("/quota/estimates/etl", params={"margin": 0}).json()
            unknown = api.get("/quota/estimates/etll")
        line = next(x for x in planned["lines"] if (x["pool"], x["resource"]) == ("team", "memory"))
        assert line["colliding"] == ["etl"]
        assert line["scheduled_peak"] == pytest.approx(1.2 * 1024**3)  # p90 + 20 % margin
        assert est["runs"] == 3 and est["steps"][0]["step"] == "load"
        assert est["steps"][0]["memory_bytes"] == pytest.approx(1024**3)
        assert unknown.status_code == 404 and "did you mean 'etl'" in unknown.json()["error"]

    def test_no_role_reads_nothing(self, seeded: Seeded) -> None:
        with seeded.plane.http("nobody") as api:
            for path in ("/quota/pools", "/quota/status", "/quota/leases", "/quota/plan"):
                assert api.get(path).status_code == 403, path

    def test_the_cli_prints_the_same_through_the_server(self, seeded: Seeded) -> None:
        plane = seeded.plane
        env = {
            "SHIPYARD_HOME": str(plane.ws.settings.home),
            "SHIPYARD_DB_URL": plane.ws.settings.database_url,
        }
        for args in (["status"], ["pools"], ["plan"], ["estimate", "etl"]):
            local = runner.invoke(app, ["quota", *args, "--json"], env=env)
            remote = runner.invoke(app, ["quota", *args, "--json"], env={**env, **plane.env("vic")})
            assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
            mine, theirs = json.loads(local.output), json.loads(remote.output)
            if args == ["plan"]:  # the week starts at each one's clock (the server's is fake)
                for whole in (mine, theirs):
                    del whole["start"]
                    for line in whole["lines"]:
                        del line["peak_at"]
            assert mine == theirs, args
        paged = runner.invoke(
            app, ["quota", "leases", "--pool", "team", "--limit", "3"], env=plane.env("vic")
        )
        assert paged.exit_code == 0, paged.output
        assert "more: shipyard quota leases --after " in paged.output
        shown = runner.invoke(app, ["quota", "status"], env={**env, **plane.env("vic")})
        assert "etl holds cpu=6, memory=8.0Gi" in shown.output
        assert f"train waits for cpu={4 * WAITERS} ({WAITERS} leases" in shown.output


def pools_file(name: str, cpu: int, share: float = 0.5) -> str:
    return (
        f"pools:\n  - name: {name}\n    capacity: {{cpu: {cpu}, memory: 4Gi}}\n"
        f"    members:\n      - {{pipeline: etl, share: {share}}}\n"
    )


class TestApply:
    def test_a_viewer_cannot_apply(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            before = audit_seq(api)
            refused = api.post("/quota/pools/apply", json={"text": pools_file("team", 100)})
            new = api.post("/quota/pools/apply", json={"text": pools_file("brand-new", 1)})
            assert audit_seq(api) == before
        assert refused.status_code == 403 and "vic may not change quota pools" in refused.text
        assert new.status_code == 403
        pools = {p.name: p for p in list_pools(seeded.plane.ws.store)}
        assert pools["team"].capacity["cpu"] == 8.0 and "brand-new" not in pools

    def test_a_quota_admin_applies_and_the_audit_names_them(self, seeded: Seeded) -> None:
        with seeded.plane.http("quinn") as api:
            done = api.post(
                "/quota/pools/apply", json={"text": pools_file("gpu-q", 4), "source": "gpu.yaml"}
            )
            assert done.status_code == 200, done.text
            events = api.get("/audit/events", params={"action": "pool.apply", "limit": 1}).json()
            shown = api.get("/quota/pools/gpu-q").json()
        assert done.json()["applied"][0]["created"] is True
        latest = events["items"][0]
        assert latest["actor"] == "quinn" and latest["mode"] == "server"
        assert latest["subject"] == {"kind": "pool", "id": "gpu-q"}
        assert shown["capacity"]["cpu"] == 4.0 and shown["members"]["etl"]["share"]["cpu"] == 2.0

    def test_a_structured_body_is_applied_too(self, seeded: Seeded) -> None:
        body = {"pools": [{"name": "json-q", "capacity": {"cpu": 3, "memory": "1Gi"}}]}
        with seeded.plane.http("quinn") as api:
            done = api.post("/quota/pools/apply", json=body)
        assert done.status_code == 200, done.text
        assert done.json()["applied"][0]["capacity"] == {"cpu": 3.0, "memory": 1024.0**3}

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            ({"text": pools_file("team", 8, share=1.5)}, "a fraction must lie in [0, 1]"),
            ({"text": pools_file("team", 1).replace("cpu: 1", "cpu: lots")}, "not a quantity"),
            ({"text": "pools: [{name: team, capacity: {cpu: 2}"}, "is not valid YAML: line 1"),
            ({"text": "pools: [{name: team, capacity: {cpu: 2}, colour: red}]"}, "colour"),
            ({"text": "- team\n"}, "holds a list, not a mapping"),
            ({"text": ""}, "is empty"),
            ({"text": "a: &x [1]\npools: *x\n"}, "aliases"),
            ({"text": pools_file("team", 2) + pools_file("team", 2)[7:]}, "appears twice"),
            ({"pools": [{"name": "team", "capacity": {"cpu": -1}}]}, "cpu"),
            ({"pools": [{"name": "../x", "capacity": {"cpu": 1}}]}, "body.pools.0.name"),
            ({"text": pools_file("team", 8), "pools": [{"name": "x", "capacity": {}}]}, "not both"),
            ({}, "text"),
        ],
    )
    def test_a_malformed_pools_file_is_400_and_changes_nothing(
        self, seeded: Seeded, body: dict[str, object], problem: str
    ) -> None:
        store = seeded.plane.ws.store
        before = {p.name: p for p in list_pools(store)}
        with seeded.plane.http("quinn") as api:
            seq = audit_seq(api)
            refused = api.post("/quota/pools/apply", json=body)
            assert audit_seq(api) == seq
        assert refused.status_code == 400, refused.text
        assert refused.json()["type"] == "InvalidInput"
        assert problem in refused.json()["error"]
        assert {p.name: p for p in list_pools(store)} == before

    def test_a_pool_scoped_admin_changes_only_its_pool(self, seeded: Seeded) -> None:
        plane = seeded.plane
        ws, now = plane.ws, plane.clock.time()
        bind_role(
            ws.store, "pat", "quota-admin", "pool:solo", actor="setup", now=now, mode="embedded"
        )
        secret = create_token(ws.store, "pat", actor="setup", now=now, mode="embedded").secret
        solo = "pools:\n  - name: solo\n    capacity: {cpu: 3}\n"  # dedicated no more
        both = solo + pools_file("pats-new", 1)[7:]
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=plane.api, headers=headers, timeout=30) as api:
            mixed = api.post("/quota/pools/apply", json={"text": both})
            assert mixed.status_code == 403 and "over *" in mixed.json()["error"]
            assert {p.name: p for p in list_pools(ws.store)}["solo"].capacity == {"cpu": 2.0}
            mine = api.post("/quota/pools/apply", json={"text": solo})
            other = api.post("/quota/pools/apply", json={"text": pools_file("team", 8)})
        assert mine.status_code == 200, mine.text
        assert mine.json()["applied"][0]["created"] is False
        assert other.status_code == 403 and "over pool:team" in other.json()["error"]
        pools = {p.name: p for p in list_pools(ws.store)}
        assert pools["solo"].capacity == {"cpu": 3.0} and pools["solo"].mode == "shared"
        assert "pats-new" not in pools

    def test_the_cli_applies_through_the_server_as_its_token(
        self, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        path = tmp_path_factory.mktemp("cli") / "pools.yaml"
        path.write_text(pools_file("cli-q", 2))
        viewer = runner.invoke(app, ["quota", "apply", str(path)], env=seeded.plane.env("vic"))
        assert viewer.exit_code == 4 and "may not change quota pools" in viewer.output
        admin = runner.invoke(app, ["quota", "apply", str(path)], env=seeded.plane.env("quinn"))
        assert admin.exit_code == 0, admin.output
        assert "pool cli-q (shared): cpu=2, memory=4.0Gi" in admin.output
        path.write_text(pools_file("cli-q", 2, share=2))
        bad = runner.invoke(app, ["quota", "apply", str(path)], env=seeded.plane.env("quinn"))
        assert bad.exit_code == 1 and f"{path}: pool cli-q: member etl: share" in bad.output


class TestOtherWrites:
    def test_a_serving_reservation_needs_quota_admin_and_is_audited(self, seeded: Seeded) -> None:
        body = {"model": "churn", "qps": 200, "latency_ms": 25, "concurrency": 2}
        with seeded.plane.http("vic") as api:
            sized = api.post("/quota/serving", json=body)
            refused = api.post("/quota/serving", json={**body, "reserve": "team"})
        assert sized.status_code == 200 and sized.json()["replicas"] == 6
        assert refused.status_code == 403
        with seeded.plane.http("quinn") as api:
            done = api.post("/quota/serving", json={**body, "reserve": "team"})
            shown = api.get("/quota/pools/team").json()
            events = api.get("/audit/events", params={"action": "pool.reserve", "limit": 1})
        assert done.status_code == 200 and done.json()["reserved_in"] == "team"
        assert shown["reservations"][0]["name"] == "serving:churn"
        assert shown["reservations"][0]["resources"]["cpu"] == 6.0
        latest = events.json()["items"][0]
        assert latest["actor"] == "quinn" and latest["subject"] == {"kind": "pool", "id": "team"}

    def test_reclaim_needs_quota_admin(self, seeded: Seeded) -> None:
        with seeded.plane.http("vic") as api:
            assert api.post("/quota/reclaim").status_code == 403
        with seeded.plane.http("quinn") as api:
            done = api.post("/quota/reclaim")
        assert done.status_code == 200 and done.json() == {"reclaimed": []}  # none expired

"""Pipelines and runs on the control plane: listed in keyset pages, shown, their logs paged,
started as the caller and cancelled by whoever may; over a real socket, on SQLite and
PostgreSQL, through HTTP and through the CLI."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import Plane
from typer.testing import CliRunner

from shipyard.audit import list_events
from shipyard.cli import app
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.store.tables import PipelineRecord, Run

runner = CliRunner()

PIPELINES = """
import time
from shipyard.pipelines import Pipeline, Resources, step, log

@step(resources=Resources(cpu=1, memory="256Mi"))
def make(n: int = 2) -> list[int]:
    log.info("making", n=n)
    for i in range(n):
        print(f"row {i}")
    return list(range(n))

@step()
def count(xs: list[int]) -> int:
    return len(xs)

quick = Pipeline("quick", kind="data")

@quick
def build_quick(n: int = 2):
    return count(make(n))

@step()
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds

slow = Pipeline("slow", kind="training")

@slow
def build_slow(seconds: float = 60.0):
    sleepy(seconds)
"""
DEADLINE_S = 120.0
BULK = 300
BULK_AT = 1_600_000_000.0


def _register(plane: Plane, file: Path) -> None:
    """The two pipelines as a first run would have registered them (the server starts only
    pipelines it has seen)."""
    with plane.ws.store.session() as s:
        for name, kind in (("quick", "data"), ("slow", "training")):
            s.add(PipelineRecord(name=name, kind=kind, file=str(file), spec={}, updated_at=0.0))


def _seed_bulk(plane: Plane) -> list[str]:
    """``BULK`` runs of pipeline ``bulk``, three to a creation time (ties the cursor must
    break by id), statuses and kinds in turn; their ids newest first."""
    rows = []
    for i in range(BULK):
        rows.append(
            Run(
                id=f"b{i:031x}",
                pipeline="bulk",
                kind=("data", "training")[i % 2],
                file="bulk.py",
                status=("succeeded", "failed", "running")[i % 3],
                params={"i": i},
                tags={},
                executor="local",
                created_by="seed",
                created_at=BULK_AT + i // 3,
                started_at=BULK_AT + i // 3,
            )
        )
    with plane.ws.store.session() as s:
        s.add(PipelineRecord(name="bulk", kind="data", file="bulk.py", spec={}, updated_at=0.0))
        s.add_all(rows)
    order = sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)
    return [r.id for r in order]


@pytest.fixture(scope="module")
def world(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("pipelines")
    file = folder / "flows.py"
    file.write_text(textwrap.dedent(PIPELINES), encoding="utf-8")
    _register(plane, file)
    bulk = _seed_bulk(plane)
    yield {"file": file, "bulk": bulk}


def _wait_for(api: httpx.Client, run_id: str, ok: Any) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        info: dict[str, Any] = api.get(f"/runs/{run_id}").json()
        if ok(info):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.1)


@pytest.fixture(scope="module")
def finished(plane: Plane, world: dict[str, Any]) -> dict[str, Any]:
    """A run of ``quick`` started through the server by olga (an operator), once it ended."""
    with plane.http("olga") as api:
        answer = api.post("/pipelines/quick/runs", json={"params": {"n": 3}, "wait_s": 120})
        assert answer.status_code == 200, answer.text
        started = answer.json()
        done = _wait_for(api, started["id"], lambda r: r["status"] != "running")
    return {"started": started, "done": done}


def cli(plane: Plane, who: str, *args: str) -> Any:
    result = runner.invoke(app, list(args), env=plane.env(who))
    return result


class TestStart:
    def test_an_operators_run_is_created_by_that_identity_and_audited(
        self, plane: Plane, finished: dict[str, Any]
    ) -> None:
        started, done = finished["started"], finished["done"]
        assert started["pipeline"] == "quick" and started["params"] == {"n": 3}
        assert started["created_by"] == "olga"
        assert started["runner"]["pid"] > 0
        assert done["status"] == "succeeded", done
        events = list_events(plane.ws.store, action="run.start", limit=10).events
        mine = [e for e in events if e.subject_id == started["id"]]
        assert len(mine) == 1
        assert (mine[0].actor, mine[0].mode) == ("olga", "server")
        assert mine[0].details["pipeline"] == "quick"

    def test_a_viewer_may_not_start_a_run(self, plane: Plane, world: dict[str, Any]) -> None:
        with plane.http("vic") as api:
            answer = api.post("/pipelines/quick/runs", json={})
        assert answer.status_code == 403
        assert "vic may not start or cancel runs over pipeline:quick" in answer.json()["error"]

    def test_an_operator_over_another_pipeline_may_not_start_this_one(
        self, plane: Plane, world: dict[str, Any]
    ) -> None:
        now = plane.clock.time()
        store = plane.ws.store
        bind_role(store, "opal", "operator", "pipeline:slow", actor="t", now=now, mode="embedded")
        token = create_token(store, "opal", actor="t", now=now, mode="embedded").secret
        with httpx.Client(
            base_url=plane.api, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            answer = api.post("/pipelines/quick/runs", json={})
        assert answer.status_code == 403 and "over pipeline:quick" in answer.json()["error"]

    def test_parameters_the_pipeline_refuses_are_400_and_start_nothing(
        self, plane: Plane, world: dict[str, Any]
    ) -> None:
        with plane.http("olga") as api:
            before = api.get("/runs", params={"pipeline": "quick", "limit": 1000}).json()
            answer = api.post(
                "/pipelines/quick/runs", json={"params": {"n": "many"}, "wait_s": 120}
            )
            after = api.get("/runs", params={"pipeline": "quick", "limit": 1000}).json()
        assert answer.status_code == 400, answer.text
        assert "parameter 'n' expects int, got 'many'" in answer.json()["error"]
        assert after["items"] == before["items"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"params": {"bad name": 1}}, "body.params"),
            ({"params": {"n": 1e400}}, "body.params"),
            ({"wait_s": 0}, "body.wait_s"),
            ({"priority": 10**6}, "body.priority"),
            ({"extra": 1}, "body.extra"),
        ],
    )
    def test_a_malformed_start_is_400_naming_the_field(
        self, plane: Plane, world: dict[str, Any], body: dict[str, Any], field: str
    ) -> None:
        with plane.http("olga") as api:
            answer = api.post(
                "/pipelines/quick/runs",
                content=json.dumps(body).replace("Infinity", "1e400"),
                headers={"Content-Type": "application/json"},
            )
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"]

    def test_an_unknown_pipeline_is_404(self, plane: Plane, world: dict[str, Any]) -> None:
        with plane.http("olga") as api:
            answer = api.post("/pipelines/quik/runs", json={})
        assert answer.status_code == 404
        assert "quick" in answer.json()["error"]  # the suggestion


class TestShowAndLogs:
    def test_show_has_steps_states_durations_usage_and_reasons(
        self, plane: Plane, finished: dict[str, Any]
    ) -> None:
        run_id = finished["done"]["id"]
        with plane.http("vic") as api:
            shown = api.get(f"/runs/{run_id[:10]}").json()
        assert shown["id"] == run_id
        assert [s["step"] for s in shown["steps"]] == ["make", "count"]
        make = shown["steps"][0]
        assert make["status"] == "succeeded" and make["attempt"] == 1
        assert make["duration_s"] > 0 and make["exit_code"] == 0
        memory = make["usage"]["memory"]
        assert memory["declared"] == 256 * 2**20
        assert memory["used"] == make["peak_rss_bytes"] > 0
        assert memory["ratio"] == pytest.approx(memory["used"] / memory["declared"])
        assert make["usage"]["cpu"]["declared"] == 1.0
        assert [x["direction"] for x in make["lineage"]] == ["produced"]

    def test_cli_show_through_the_server_prints_the_same_run(
        self, plane: Plane, finished: dict[str, Any]
    ) -> None:
        run_id = finished["done"]["id"]
        result = cli(plane, "vic", "runs", "show", run_id, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["steps"][0]["usage"]["memory"]["declared"] == 256 * 2**20
        human = cli(plane, "vic", "runs", "show", run_id)
        assert human.exit_code == 0 and "make" in human.stdout and "%)" in human.stdout

    def test_logs_come_in_pages_of_lines_from_an_offset(
        self, plane: Plane, finished: dict[str, Any]
    ) -> None:
        run_id = finished["done"]["id"]
        with plane.http("vic") as api:
            whole = api.get(f"/runs/{run_id}/logs", params={"step": "make"}).json()
            assert whole["next"] is None and whole["run_status"] == "succeeded"
            paged: list[dict[str, Any]] = []
            offset = 0
            for _ in range(100):
                one = api.get(
                    f"/runs/{run_id}/logs", params={"step": "make", "offset": offset, "limit": 1}
                ).json()
                paged += one["items"]
                assert len(one["items"]) <= 1
                offset = one["offset"]
                if one["next"] is None:
                    break
            assert paged == whole["items"] and offset == whole["offset"]
            printed = [x["message"] for x in whole["items"] if x.get("stream") == "output"]
            assert printed == ["row 0", "row 1", "row 2"]
            making = [x for x in whole["items"] if x["message"] == "making"]
            assert making and making[0]["n"] == 3 and making[0]["run_id"] == run_id
            unknown = api.get(f"/runs/{run_id}/logs", params={"step": "nope"})
            assert unknown.status_code == 404
            assert "its steps: make, count" in unknown.json()["error"]
            too_many = api.get(f"/runs/{run_id}/logs", params={"step": "make", "limit": 10**6})
            assert too_many.status_code == 400 and "limit" in too_many.json()["error"]

    def test_cli_logs_through_the_server(self, plane: Plane, finished: dict[str, Any]) -> None:
        run_id = finished["done"]["id"]
        result = cli(plane, "vic", "runs", "logs", run_id, "--json")
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert {x["step"] for x in lines} == {"make", "count"}
        assert any(x["message"] == "making" for x in lines)
        human = cli(plane, "vic", "runs", "logs", run_id, "--follow")
        assert human.exit_code == 0 and "[make] row 2" in human.stdout
        wrong = cli(plane, "vic", "runs", "logs", run_id, "--step", "nope")
        assert wrong.exit_code == 1 and "its steps: make, count" in wrong.stderr


class TestList:
    def test_pages_walk_every_run_once_newest_first(
        self, plane: Plane, world: dict[str, Any]
    ) -> None:
        seen: list[str] = []
        cursor = None
        with plane.http("vic") as api:
            for _ in range(BULK):
                params: dict[str, Any] = {"pipeline": "bulk", "limit": 7}
                if cursor:
                    params["cursor"] = cursor
                answer = api.get("/runs", params=params).json()
                seen += [r["id"] for r in answer["items"]]
                cursor = answer["next"]
                if cursor is None:
                    break
        assert seen == world["bulk"]

    def test_filters_by_status_kind_and_since(self, plane: Plane, world: dict[str, Any]) -> None:
        with plane.http("vic") as api:

            def ids(**params: Any) -> list[str]:
                found = api.get("/runs", params={"pipeline": "bulk", "limit": 1000, **params})
                assert found.status_code == 200, found.text
                return [r["id"] for r in found.json()["items"]]

            everything = world["bulk"]
            index = {run_id: int(run_id[1:], 16) for run_id in everything}
            failed = ids(status="failed")
            assert failed == [r for r in everything if index[r] % 3 == 1]
            training = ids(kind="training", status="running")
            assert training == [r for r in everything if index[r] % 6 == 5]
            recent = ids(since=BULK_AT + 90)
            assert recent == [r for r in everything if index[r] // 3 >= 90]
            assert ids(since=BULK_AT + 10_000) == []

    def test_cli_list_through_the_server(self, plane: Plane, world: dict[str, Any]) -> None:
        result = cli(plane, "vic", "runs", "list", "--pipeline", "bulk", "--limit", "5", "--json")
        assert result.exit_code == 0, result.output
        assert [r["id"] for r in json.loads(result.stdout)] == world["bulk"][:5]
        human = cli(plane, "vic", "runs", "list", "--pipeline", "bulk", "--limit", "5")
        assert "older: shipyard runs list --cursor " in human.stdout
        cursor = human.stdout.split("--cursor ")[1].split()[0]
        more = cli(plane, "vic", "runs", "list", "--pipeline", "bulk", "--cursor", cursor, "--json")
        assert [r["id"] for r in json.loads(more.stdout)][:3] == world["bulk"][5:8]

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"status": "queued"}, "status"),
            ({"kind": "batch"}, "kind"),
            ({"since": -1}, "since"),
            ({"pipeline": "no such/name"}, "pipeline"),
            ({"cursor": "yesterday"}, "cursor"),
            ({"cursor": "nan_abc"}, "cursor"),
            ({"colour": "red"}, "colour"),
        ],
    )
    def test_a_bad_query_is_400_naming_the_field(
        self, plane: Plane, params: dict[str, Any], field: str
    ) -> None:
        with plane.http("vic") as api:
            answer = api.get("/runs", params=params)
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"]

    def test_an_unknown_pipeline_is_404_with_a_suggestion(
        self, plane: Plane, world: dict[str, Any]
    ) -> None:
        with plane.http("vic") as api:
            answer = api.get("/runs", params={"pipeline": "bulks"})
        assert answer.status_code == 404 and "bulk" in answer.json()["error"]

    def test_nobody_may_read(self, plane: Plane) -> None:
        with plane.http("nobody") as api:
            assert api.get("/runs").status_code == 403
            assert api.get("/pipelines").status_code == 403


class TestPipelines:
    def test_list_pages_by_name_with_each_latest_run(
        self, plane: Plane, finished: dict[str, Any]
    ) -> None:
        with plane.http("vic") as api:
            first = api.get("/pipelines", params={"limit": 2}).json()
            rest = api.get("/pipelines", params={"cursor": first["next"]}).json()
        names = [p["name"] for p in first["items"] + rest["items"]]
        assert names == ["bulk", "quick", "slow"] and rest["next"] is None
        by_name = {p["name"]: p for p in first["items"] + rest["items"]}
        assert by_name["bulk"]["last_run"] == f"b{BULK - 1:031x}"
        quick = by_name["quick"]
        assert quick["steps"] == 2 and quick["kind"] == "data"
        assert quick["last_run"] is not None

    def test_show_through_http_and_the_cli(self, plane: Plane, finished: dict[str, Any]) -> None:
        with plane.http("vic") as api:
            shown = api.get("/pipelines/quick").json()
            missing = api.get("/pipelines/quik")
        assert list(shown["step_specs"]) == ["make", "count"]
        assert shown["step_specs"]["make"]["resources"]["memory"] == 256 * 2**20
        assert shown["runs_by_status"].get("succeeded", 0) >= 1
        assert shown["recent_runs"][0]["created_by"] == "olga"
        assert missing.status_code == 404
        listed = cli(plane, "vic", "pipelines", "list", "--json")
        assert [p["name"] for p in json.loads(listed.stdout)] == ["bulk", "quick", "slow"]
        human = cli(plane, "vic", "pipelines", "show", "quick")
        assert human.exit_code == 0, human.output
        assert "make" in human.stdout and "olga" in human.stdout


class TestCancel:
    def test_a_viewer_may_not_cancel_and_an_operator_may(
        self, plane: Plane, world: dict[str, Any]
    ) -> None:
        with plane.http("olga") as api:
            answer = api.post("/pipelines/slow/runs", json={"wait_s": 120})
            assert answer.status_code == 200, answer.text
            run_id = answer.json()["id"]
            _wait_for(api, run_id, lambda r: r["steps"][0]["status"] == "running")
        with plane.http("vic") as api:
            refused = api.post(f"/runs/{run_id}/cancel", json={})
        assert refused.status_code == 403
        assert "vic may not start or cancel runs over pipeline:slow" in refused.json()["error"]
        assert cli(plane, "vic", "runs", "cancel", run_id).exit_code == 4
        with plane.http("vic") as api:
            assert api.get(f"/runs/{run_id}").json()["status"] == "running"

        done = cli(plane, "olga", "runs", "cancel", run_id[:12])
        assert done.exit_code == 0, done.output
        assert done.stdout.startswith(f"✓ run {run_id} (slow) cancelled; steps stopped: sleepy")
        with plane.http("vic") as api:
            info = api.get(f"/runs/{run_id}").json()
            again = api.get(f"/runs/{run_id}")
        assert info["status"] == "cancelled"
        assert info["exit_reason"] == "cancelled by olga (shipyard runs cancel)"
        assert again.json()["steps"][0]["status"] == "cancelled"
        events = list_events(plane.ws.store, action="run.cancel", limit=10).events
        assert [(e.actor, e.mode, e.subject_id) for e in events] == [("olga", "server", run_id)]
        with plane.http("olga") as api:
            twice = api.post(f"/runs/{run_id}/cancel", json={})
        assert twice.status_code == 400 and "already ended" in twice.json()["error"]

"""The monitors on the control plane: pipelines' monitors, findings filtered and paged, one
finding's evidence and a metric series in bounded points; over a real socket, on SQLite and
PostgreSQL, through HTTP and through the CLI."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from apikit import Plane
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from shipyard.checks import Check
from shipyard.cli import app
from shipyard.monitoring.findings import add_checks
from shipyard.registry import ColumnSpec, Registry, Signature
from shipyard.statuses import CheckStatus
from shipyard.store.tables import MetricPoint, PipelineRecord

runner = CliRunner()
SERIES = "shipyard_drift_score"
SERIES_LABELS = {"pipeline": "ingest", "dataset": "events", "column": "u"}
POINTS = 120


@pytest.fixture(scope="module")
def seeded(plane: Plane) -> Plane:
    """Pipelines ``ingest`` (data: 12 findings on two data sets) and ``train`` (training: one
    failure), a served model ``digits`` with two findings, and a metric series of 120 points,
    one a minute."""
    ws, t0 = plane.ws, plane.clock.time()
    registry = Registry(ws.store, ws.artifacts, plane.clock, "setup")
    clf = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    registry.register("digits", clf, signature=Signature((ColumnSpec("a", "double"),)))
    with ws.store.session() as s:
        for name, kind in (("ingest", "data"), ("train", "training")):
            s.add(PipelineRecord(name=name, kind=kind, file=f"{name}.py", spec={}, updated_at=t0))
    for i in range(12):
        dataset = "events" if i % 2 == 0 else "labels"
        status = CheckStatus.ALERT if i == 10 else CheckStatus.OK
        check = Check.of_pipeline(
            "feature_drift", "ingest", status, f"drift check {i}", dataset=dataset,
            evidence={"columns": {"u": {"effect": i / 10, "p_value": 0.01}}},
        )  # fmt: skip
        with ws.store.session() as s:
            add_checks(s, [check], t0 + i)
    with ws.store.session() as s:
        add_checks(
            s,
            [
                Check.of_pipeline("training_failures", "train", CheckStatus.ALERT, "2 of 3 failed"),
                Check.of_model("latency", "digits", 1, CheckStatus.WARNING, "p99 300 ms"),
                Check.of_model("outage", "digits", None, CheckStatus.OK, "all answer"),
            ],
            t0 + 20,
        )
        s.add_all(
            MetricPoint.of(SERIES, SERIES_LABELS, t0 + 60 * i, float(i)) for i in range(POINTS)
        )
        s.add(MetricPoint.of(SERIES, {**SERIES_LABELS, "column": "v"}, t0, 99.0))
    return plane


def walk(api: httpx.Client, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Every finding ``params`` select, page after page, and how many pages it took."""
    items: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        answer = api.get("/findings", params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        pages += 1
        cursor = answer.json()["next"]
        if cursor is None:
            return items, pages


def test_findings_are_paged_newest_first_and_filtered(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        ingest, pages = walk(api, {"pipeline": "ingest", "limit": 5})
        events, _ = walk(api, {"pipeline": "ingest", "dataset": "events"})
        anywhere, _ = walk(api, {"dataset": "labels"})
        model, _ = walk(api, {"model": "digits"})
        version, _ = walk(api, {"model": "digits", "version": 1})
        alerts, _ = walk(api, {"status": "alert"})
        recent, _ = walk(api, {"pipeline": "ingest", "since": seeded.clock.time() + 9})
        train, _ = walk(api, {"monitor": "training_failures"})
    assert pages == 3 and len(ingest) == 12
    assert [f["summary"] for f in ingest] == [f"drift check {i}" for i in reversed(range(12))]
    assert "evidence" not in ingest[0]
    assert {f["subject"] for f in events} == {"ingest/events"} and len(events) == 6
    assert {f["subject"] for f in anywhere} == {"ingest/labels"} and len(anywhere) == 6
    assert {f["monitor"] for f in model} == {"latency", "outage"}
    assert [f["subject"] for f in version] == ["digits/1"]
    assert {f["summary"] for f in alerts} == {"drift check 10", "2 of 3 failed"}
    assert [f["summary"] for f in recent] == ["drift check 11", "drift check 10", "drift check 9"]
    assert [f["subject"] for f in train] == ["train"]


def test_one_finding_carries_its_evidence(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        newest = api.get("/findings", params={"pipeline": "ingest", "limit": 1}).json()
        one = api.get(f"/findings/{newest['items'][0]['id']}").json()
        missing = api.get("/findings/999999")
    assert one["summary"] == "drift check 11" and one["labels"]["dataset"] == "labels"
    assert one["evidence"] == {"columns": {"u": {"effect": 1.1, "p_value": 0.01}}}
    assert missing.status_code == 404 and missing.json()["type"] == "NotFound"


def test_monitors_list_pages_pipelines_with_their_last_verdicts(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        first = api.get("/monitors", params={"limit": 1}).json()
        second = api.get("/monitors", params={"limit": 1, "cursor": first["next"]}).json()
        ingest = api.get("/monitors/ingest").json()
    assert [p["pipeline"] for p in first["items"] + second["items"]] == ["ingest", "train"]
    assert second["next"] is None
    drift = {m["monitor"]: m for m in ingest["monitors"]}["feature_drift"]
    assert drift["status"] == "alert"  # the worst of the data sets' last verdicts
    assert {r["subject"] for r in drift["last"]} == {"ingest/events", "ingest/labels"}


def test_a_metric_series_is_raw_when_small_and_bucketed_when_not(seeded: Plane) -> None:
    t0 = seeded.clock.time()
    labels = [f"{k}={v}" for k, v in SERIES_LABELS.items()]
    with seeded.http("vic") as api:
        raw = api.get(
            "/metrics/series",
            params={"name": SERIES, "label": labels, "since": t0, "until": t0 + 600},
        ).json()
        bucketed = api.get(
            "/metrics/series",
            params={"name": SERIES, "label": labels, "since": t0, "until": t0 + 60 * POINTS,
                    "max_points": 12},
        ).json()  # fmt: skip
        other = api.get(
            "/metrics/series",
            params={"name": SERIES, "label": [*labels[:2], "column=v"], "since": t0 - 1,
                    "until": t0 + 1},
        ).json()  # fmt: skip
    assert [p["value"] for p in raw["points"]] == [float(i) for i in range(11)]
    assert raw["step_s"] is None and raw["total_points"] == 11
    assert bucketed["total_points"] == POINTS and bucketed["step_s"] == 600
    points = bucketed["points"]
    assert len(points) == 12 and sum(p["count"] for p in points) == POINTS
    # bucket k holds minutes 10k..10k+9: mean 10k+4.5, min 10k, max 10k+9
    assert [(p["value"], p["min"], p["max"]) for p in points] == [
        (10 * k + 4.5, 10 * k, 10 * k + 9) for k in range(12)
    ]
    assert [p["ts"] for p in points] == [t0 + 600 * k for k in range(12)]
    assert [p["value"] for p in other["points"]] == [99.0]


def test_bad_input_is_400_naming_the_field(seeded: Plane) -> None:
    cases = [
        ("/findings", {"limit": 5000}, "limit"),
        ("/findings", {"status": "dire"}, "status"),
        ("/findings", {"cursor": "later"}, "cursor"),
        ("/findings", {"version": 1}, "model"),
        ("/findings", {"since": -1}, "since"),
        ("/findings/abc", None, "finding_id"),
        ("/monitors", {"colour": "red"}, "colour"),
        ("/metrics/series", {}, "name"),
        ("/metrics/series", {"name": SERIES, "label": "no-equals"}, "label"),
        ("/metrics/series", {"name": SERIES, "max_points": 0}, "max_points"),
        ("/metrics/series", {"name": SERIES, "since": 10, "until": 5}, "since"),
        ("/metrics/series", {"name": SERIES, "label": ["a=1", "a=2"]}, "label"),
    ]
    with seeded.http("vic") as api:
        for path, params, field in cases:
            answer = api.get(path, params=params)
            assert answer.status_code == 400, (path, params, answer.text)
            assert answer.json()["type"] == "InvalidInput"
            assert field in answer.json()["error"], (field, answer.text)


def test_unknown_names_are_404_with_suggestions(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        pipeline = api.get("/monitors/ingets")
        findings = api.get("/findings", params={"pipeline": "ingets"})
        model = api.get("/findings", params={"model": "digts"})
    for answer, line in [
        (pipeline, "no pipeline named 'ingets'; did you mean 'ingest'?"),
        (findings, "no pipeline named 'ingets'; did you mean 'ingest'?"),
        (model, "no model named 'digts'; did you mean 'digits'?"),
    ]:
        assert answer.status_code == 404 and line in answer.json()["error"], answer.text


def test_reading_needs_a_role(seeded: Plane) -> None:
    with seeded.http("nobody") as api:
        answer = api.get("/findings")
    assert answer.status_code == 403 and "nobody may not read" in answer.json()["error"]


def test_the_cli_reads_through_the_server(seeded: Plane) -> None:
    env = {**seeded.env("vic"), "COLUMNS": "200"}
    listed = runner.invoke(app, ["monitors", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [p["pipeline"] for p in json.loads(listed.output)] == ["ingest", "train"]
    shown = runner.invoke(app, ["monitors", "show", "ingest"], env=env)
    assert shown.exit_code == 0 and "ingest/events" in shown.output, shown.output
    found = runner.invoke(
        app, ["monitors", "findings", "--model", "digits", "--status", "warning"], env=env
    )
    assert found.exit_code == 0 and "p99 300 ms" in found.output, found.output
    paged = runner.invoke(
        app, ["monitors", "findings", "--pipeline", "ingest", "--limit", "2", "--json"], env=env
    )
    page = json.loads(paged.output)
    assert len(page["items"]) == 2 and page["next"] is not None
    one = runner.invoke(app, ["monitors", "finding", str(page["items"][0]["id"])], env=env)
    assert one.exit_code == 0 and '"p_value": 0.01' in one.output, one.output
    unknown = runner.invoke(app, ["monitors", "show", "ingets"], env=env)
    assert unknown.exit_code == 1 and "did you mean 'ingest'?" in unknown.output

"""The last verdicts of a page of pipelines, read in one query: the newest finding of each
(monitor, subject), however old, and nothing of a pipeline that only sorts close by."""

from __future__ import annotations

from shipyard.checks import Check
from shipyard.monitoring.findings import add_checks, last_findings_in
from shipyard.monitoring.history import monitors_page, pipeline_monitors
from shipyard.statuses import CheckStatus
from shipyard.store.tables import PipelineRecord
from shipyard.workspace import Workspace

OK, FAIL = CheckStatus.OK, CheckStatus.ALERT


def _check(monitor: str, pipeline: str, status: CheckStatus, dataset: str | None = None) -> Check:
    return Check.of_pipeline(monitor, pipeline, status, f"{monitor} {status}", dataset=dataset)


def test_the_newest_verdict_of_each_subject_and_only_of_the_pipelines_asked(
    ws: Workspace,
) -> None:
    with ws.store.session() as s:
        for name in ("a", "a-b", "a.c", "b"):
            s.add(PipelineRecord(name=name, kind="training", file="p.py", spec={}, updated_at=0))
        add_checks(s, [_check("training_time", "a", FAIL)], ts=1.0)
        add_checks(s, [_check("feature_drift", "a", FAIL, dataset="x")], ts=2.0)
        # 600 newer verdicts of other subjects must not hide a's older ones
        add_checks(s, [_check("training_time", "a-b", FAIL) for _ in range(600)], ts=3.0)
        add_checks(s, [_check("feature_drift", "a-b", OK, dataset="x")], ts=3.5)
        add_checks(s, [_check("training_time", "a", OK)], ts=4.0)  # a's newest run verdict
        add_checks(s, [_check("feature_drift", "b", FAIL, dataset="y")], ts=5.0)
        add_checks(s, [_check("schema_drift_not_a_pipeline_monitor", "a", FAIL)], ts=6.0)

    with ws.store.session() as s:
        only_a = last_findings_in(s, ["a"])
        a_and_b = last_findings_in(s, ["a", "b"])
        assert last_findings_in(s, []) == {}

    assert set(only_a) == {"a"}
    assert [(f["subject"], f["status"]) for f in only_a["a"]["training_time"]] == [("a", "ok")]
    assert [(f["subject"], f["dataset"]) for f in only_a["a"]["feature_drift"]] == [("a/x", "x")]
    assert set(a_and_b) == {"a", "b"}, "a-b and a.c sort between a and b, and are not asked"
    assert a_and_b["a"] == only_a["a"]
    assert [f["subject"] for f in a_and_b["b"]["feature_drift"]] == ["b/y"]

    listed, more = monitors_page(ws.store, None, 2)
    assert [p["pipeline"] for p in listed] == ["a", "a-b"] and more
    by_monitor = {m["monitor"]: m for m in listed[0]["monitors"]}
    assert by_monitor["training_time"]["status"] == "ok"
    assert [f["ts"] for f in by_monitor["training_time"]["last"]] == [4.0]
    assert pipeline_monitors(ws.store, "a") == listed[0]

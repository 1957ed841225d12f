"""The demo's pipelines run end to end: data → training → validation, linked by lineage, and
the scoring batch whose covariate shift the data monitors catch."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from shipyard.cli.runs import run_services
from shipyard.pipelines import Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.store.tables import Finding
from shipyard.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


def run(ws: Workspace, name: str, params: dict[str, object] | None = None) -> dict[str, object]:
    file, pipeline = load_pipeline(str(EXAMPLES / f"{name}.py"))
    with Runner(ws, **run_services(ws)) as runner:
        result = runner.run(file, pipeline, params)
    return get_run(ws.store, result.run_id)


def test_data_training_validation_chain(workspace: Workspace) -> None:
    data = run(workspace, "data")
    assert data["status"] == "succeeded", data["exit_reason"]
    split = next(s for s in data["steps"] if s["step"] == "split")  # type: ignore[attr-defined]
    outputs = {e["name"]: e for e in split["lineage"] if e["direction"] == "produced"}
    assert set(outputs) == {"train", "test"}
    assert outputs["train"]["media_type"] == "application/vnd.apache.parquet"

    training = run(workspace, "training", {"C": 0.5})
    assert training["status"] == "succeeded", training["exit_reason"]
    first = training["steps"][0]  # type: ignore[index]
    assert first["input_rows"] == 1347  # 75% of the 1,797 digits
    assert [e["digest"] for e in first["lineage"] if e["direction"] == "consumed"] == [
        outputs["train"]["digest"]
    ]

    validation = run(workspace, "validation", {"min_accuracy": 0.9})
    assert validation["status"] == "succeeded", validation["exit_reason"]
    failing = run(workspace, "validation", {"min_accuracy": 0.9999})
    assert failing["status"] == "failed"
    assert "is below 0.9999" in str(failing["exit_reason"])

    with workspace.store.session() as s:
        test_set = s.scalars(select(Finding).where(Finding.monitor == "test_set_drift")).all()
    assert [f.status for f in test_set] == ["ok", "ok"]  # the held-out split is i.i.d.

    def verdicts(run_id: str) -> dict[str, Finding]:
        with workspace.store.session() as s:
            found = s.scalars(select(Finding).where(Finding.run_id == run_id)).all()
            return {f.monitor: f for f in found}

    iid = run(workspace, "batch")
    assert iid["status"] == "succeeded", iid["exit_reason"]
    assert {m: f.status for m, f in verdicts(str(iid["id"])).items()} == {
        "feature_drift": "ok",
        "label_drift": "ok",
        "data_problems": "ok",
    }
    shifted = run(workspace, "batch", {"shift": True})
    found = verdicts(str(shifted["id"]))
    assert found["feature_drift"].status != "ok" and found["label_drift"].status != "ok"
    assert "pixel_2_3" in found["feature_drift"].summary  # a central pixel: the selected region
    assert found["data_problems"].status == "ok"


def test_training_ends_with_register_validate_deploy(workspace: Workspace) -> None:
    """The automated path: a blessed version starts its rollout (waiting for approval); a
    version the gate refuses fails the run and starts nothing."""
    from shipyard.deploy import rollouts_of, set_policy
    from shipyard.registry import Registry

    set_policy(
        workspace.store,
        "digits",
        "gate: {required: true, minimum: {accuracy: 0.9}, no_regression: [accuracy]}\n",
        actor="ops",
    )
    data = run(workspace, "data")
    split = next(s for s in data["steps"] if s["step"] == "split")  # type: ignore[attr-defined]
    train = next(e for e in split["lineage"] if e["name"] == "train")

    trained = run(workspace, "training", {"deploy": True})
    assert trained["status"] == "succeeded", trained["exit_reason"]
    info = Registry.of(workspace).get("digits", 1)
    assert info.run_id == trained["id"] and info.lineage["data"] == [train["digest"]]
    assert info.created_by == trained["created_by"] == workspace.actor
    assert info.tags["step"] == "register" and info.reference_profile is not None
    (rollout,) = rollouts_of(workspace.store, "digits")
    assert (rollout.version, rollout.state) == (1, "waiting_for_approvals")

    refused = run(workspace, "training", {"C": 0.00001, "deploy": True})
    assert refused["status"] == "failed"
    assert "digits v2 is not blessed: accuracy" in str(refused["exit_reason"])
    assert [r.version for r in rollouts_of(workspace.store, "digits")] == [1]

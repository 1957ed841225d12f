"""The content-addressed artifact store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.artifacts import JOBLIB, JSON, PARQUET, ArtifactStore, record_lineage, sha256
from shipyard.errors import ArtifactTampered, NotFound
from shipyard.store import Store
from shipyard.store.tables import ArtifactRecord, Lineage, Run, StepRun


def test_an_artifact_is_named_by_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    arts = ArtifactStore(str(tmp_path / "a"))
    ref = arts.put_bytes(b"hello")
    assert ref.digest == sha256(b"hello")
    assert arts.get_bytes(ref.digest) == b"hello"


def test_a_tampered_artifact_is_refused(tmp_path: Path) -> None:
    arts = ArtifactStore(str(tmp_path / "a"))
    ref = arts.put_bytes(b"model weights")
    Path(ref.uri).write_bytes(b"evil weights")
    with pytest.raises(ArtifactTampered, match="tampered"):
        arts.get_bytes(ref.digest)


def test_a_missing_artifact_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        ArtifactStore(str(tmp_path / "a")).get_bytes("0" * 64)


def test_objects_round_trip_by_type(tmp_path: Path) -> None:
    arts = ArtifactStore(str(tmp_path / "a"))
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    ref = arts.put_object(frame)
    assert ref.media_type == PARQUET
    pd.testing.assert_frame_equal(arts.get_object(ref.digest, PARQUET), frame)
    ref = arts.put_object({"accuracy": 0.9})
    assert ref.media_type == JSON and arts.get_object(ref.digest, JSON) == {"accuracy": 0.9}
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    ref = arts.put_object(model)
    assert ref.media_type == JOBLIB
    assert arts.get_object(ref.digest, JOBLIB).predict([[1.0]]).tolist() == [1]


def test_any_fsspec_url_can_hold_artifacts() -> None:
    arts = ArtifactStore("memory://shipyard-test")
    ref = arts.put_bytes(b"remote")
    assert ref.uri.startswith("memory://")
    assert arts.get_bytes(ref.digest) == b"remote"


def test_artifacts_and_lineage_are_recorded(store: Store, tmp_path: Path) -> None:
    arts = ArtifactStore(str(tmp_path / "a"), store)
    ref = arts.put_object(pd.DataFrame({"x": [1, 2, 3]}))
    with store.session() as s:
        s.add(Run(id="r", pipeline="p", kind="data", file="f", status="running", created_at=0.0))
        s.add(StepRun(id="s", run_id="r", step="load", status="running"))
        s.flush()
        record_lineage(s, ref.digest, "s", "produced", "output")
    with store.session() as s:
        record = s.get(ArtifactRecord, ref.digest)
        assert record is not None and record.meta["rows"] == 3
        (edge,) = s.query(Lineage).all()
        assert (edge.step_run_id, edge.direction) == ("s", "produced")

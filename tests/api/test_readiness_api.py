"""Readiness on the control plane: the ML Test Score of the workspace and of one model, read by
any role over a real socket, equal to what ``shipyard readiness --json`` judges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from apikit import Plane
from sklearn.linear_model import LogisticRegression

from shipyard.readiness import gather, readiness
from shipyard.registry import ColumnSpec, Registry, Signature


@pytest.fixture(scope="module")
def seeded(plane: Plane) -> Plane:
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 2)), columns=["a", "b"])
    clf = LogisticRegression().fit(frame.to_numpy(), (frame["a"] > 0).astype(int))
    signature = Signature(tuple(ColumnSpec(c, "double") for c in "ab"))
    Registry(plane.ws.store, plane.ws.artifacts, plane.clock, "setup").register(
        "ranker", clf, signature=signature
    )
    return plane


def test_a_viewer_reads_the_workspace_score_and_each_subjects(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        answer = api.get("/readiness")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["subject"] is None and body["score"] == min(body["sections"].values())
    ranker = next(s for s in body["subjects"] if s["name"] == "ranker")
    expected = readiness(gather(seeded.ws), "ranker")
    assert ranker == {"kind": "model", "name": "ranker", "score": expected.score,
                      "failing": len(expected.failing)}  # fmt: skip
    assert ranker["failing"] > 0  # no policy, no monitors, no rollout: items fail


def test_one_model_is_judged_alone_and_an_unknown_one_is_a_404_with_a_suggestion(
    seeded: Plane,
) -> None:
    with seeded.http("vic") as api:
        one = api.get("/readiness", params={"subject": "ranker"})
        missing = api.get("/readiness", params={"subject": "rankr"})
    assert one.status_code == 200 and "subjects" not in one.json()
    assert {i["subject"] for i in one.json()["items"]} == {"ranker"}
    assert missing.status_code == 404 and "did you mean 'ranker'" in missing.json()["error"]


def test_without_a_token_it_is_refused(seeded: Plane) -> None:
    with seeded.http() as api:
        assert api.get("/readiness").status_code == 401

"""The validation pipeline's monitor: drift of the test set against the training set."""

from __future__ import annotations

import numpy as np
import pandas as pd
from monitoring_testkit import publisher

from shipyard.workspace import Workspace

Split = tuple[pd.DataFrame, pd.DataFrame]


def test_a_held_out_test_set_from_the_same_split_does_not_drift(
    ws: Workspace, digits_split: Split
) -> None:
    train, test = digits_split
    publisher(ws, "data")("digits-data", "digits", train, role="reference", label="target")
    seen = publisher(ws, "validation")(
        "digits-validation", "digits", test, reference_pipeline="digits-data"
    )
    assert [(c.monitor, c.status) for c in seen.checks] == [("test_set_drift", "ok")]
    assert "65 column(s)" in seen.checks[0].summary  # the label is compared too


def test_a_test_set_of_other_classes_drifts_against_the_training_set(
    sqlite_ws: Workspace, digits_split: Split
) -> None:
    train, test = digits_split
    publisher(sqlite_ws, "data")("digits-data", "digits", train, role="reference", label="target")
    skewed = test[test["target"].isin([0, 1, 2])]  # a test set built from three classes only
    seen = publisher(sqlite_ws, "validation")(
        "digits-validation", "digits", skewed, reference_pipeline="digits-data"
    )
    check = seen.checks[0]
    assert check.monitor == "test_set_drift" and check.status != "ok"
    assert "target" in check.evidence["drifted_columns"]
    assert check.evidence["share_drifted"] > 0.1


def test_the_reference_pipeline_can_be_set_in_the_definition(
    sqlite_ws: Workspace, digits_split: Split
) -> None:
    train, test = digits_split
    publisher(sqlite_ws, "data")("digits-data", "digits", train, role="reference", label="target")
    observe = publisher(
        sqlite_ws, "validation", {"test_set_drift": {"reference_pipeline": "digits-data"}}
    )
    seen = observe("digits-validation", "digits", test.assign(target=np.int64(3)))
    assert seen.checks[0].status != "ok" and seen.reference_id is not None

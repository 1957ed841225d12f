"""The data pipeline's monitors: feature drift, label drift and data-type problems, recorded
as findings and metric points in one transaction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from monitoring_testkit import central_ink, publisher
from sqlalchemy import func, select

from shipyard.errors import InvalidInput
from shipyard.store.monitoring import MonitorProfile
from shipyard.store.tables import Finding, MetricPoint
from shipyard.workspace import Workspace

Split = tuple[pd.DataFrame, pd.DataFrame]


def points(ws: Workspace, name: str) -> dict[str, float]:
    """The latest value of each series of ``name``, keyed by its column (or labels key)."""
    with ws.store.session() as s:
        rows = s.scalars(
            select(MetricPoint).where(MetricPoint.name == name).order_by(MetricPoint.id)
        ).all()
        return {str(r.labels.get("column", r.labels_key)): r.value for r in rows}


def count(ws: Workspace, table: type) -> int:
    with ws.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


class TestFeatureDrift:
    def test_a_covariate_shift_is_caught_and_its_columns_named(
        self, ws: Workspace, digits_split: Split
    ) -> None:
        train, test = digits_split
        observe = publisher(ws)
        observe("digits-data", "digits", train, role="reference", label="target")
        ink = central_ink(test)
        shifted = test[ink >= np.quantile(ink, 0.7)]
        seen = observe("digits-data", "digits", shifted, label="target")
        feature = next(c for c in seen.checks if c.monitor == "feature_drift")
        assert feature.status != "ok"
        drifted = feature.evidence["drifted_columns"]
        # the selection was on the central 4×4 pixels: most of the drifted ones are there
        central = {f"pixel_{r}_{c}" for r in range(2, 6) for c in range(2, 6)}
        assert len(drifted) >= 5 and len(central & set(drifted)) >= len(drifted) / 3
        scores = points(ws, "shipyard_drift_score")
        assert max(drifted, key=lambda c: scores[c]) in feature.summary
        assert set(scores) == {c for c in train.columns}
        assert all(scores[c] >= 0.05 for c in drifted)
        assert all(v == 0 for c, v in scores.items() if c not in {*drifted, "target"})
        share = points(ws, "shipyard_dataset_drift_share")
        assert share["dataset=digits,pipeline=digits-data"] == pytest.approx(len(drifted) / 64)

    def test_an_iid_batch_is_not_flagged(self, ws: Workspace, digits_split: Split) -> None:
        train, test = digits_split
        observe = publisher(ws)
        observe("digits-data", "digits", train, role="reference", label="target")
        seen = observe("digits-data", "digits", test, label="target")
        assert [(c.monitor, c.status) for c in seen.checks] == [
            ("feature_drift", "ok"),
            ("label_drift", "ok"),
            ("data_problems", "ok"),
        ]
        with ws.store.session() as s:
            findings = s.scalars(select(Finding)).all()
            assert {f.subject for f in findings} == {"digits-data/digits"}
            assert {f.status for f in findings} == {"ok"}

    def test_chance_effects_of_a_small_iid_batch_do_not_reach_the_drift_score(
        self, sqlite_ws: Workspace, digits_split: Split
    ) -> None:
        train, test = digits_split
        observe = publisher(sqlite_ws)
        observe("digits-data", "digits", train, role="reference", label="target")
        seen = observe("digits-data", "digits", test.sample(137, random_state=0), label="target")
        feature = next(c for c in seen.checks if c.monitor == "feature_drift")
        effects = [c["effect"] for c in feature.evidence["columns"]]
        assert feature.status == "ok" and max(effects) > 0.2  # the default DataDrift threshold
        assert set(points(sqlite_ws, "shipyard_drift_score").values()) == {0.0}

    def test_a_batch_before_any_reference_gets_a_warning_not_a_verdict(
        self, sqlite_ws: Workspace, digits_split: Split
    ) -> None:
        seen = publisher(sqlite_ws)("p", "digits", digits_split[1], label="target")
        assert {c.status for c in seen.checks} == {"warning"}
        assert "no reference of digits" in seen.checks[0].summary
        assert count(sqlite_ws, MonitorProfile) == 1

    def test_the_reference_can_come_from_another_pipeline(
        self, sqlite_ws: Workspace, digits_split: Split
    ) -> None:
        train, test = digits_split
        observe = publisher(sqlite_ws)
        ref = observe("digits-data", "digits", train, role="reference", label="target")
        seen = observe("scoring", "digits", test, reference_pipeline="digits-data")
        assert seen.reference_id == ref.profile_id
        assert "label_drift" in [c.monitor for c in seen.checks]  # label taken from the reference
        assert all(c.evidence["reference"]["pipeline"] == "digits-data" for c in seen.checks)

    def test_an_arrow_reference_and_a_batch_without_labels_yet_are_judged(
        self, sqlite_ws: Workspace, digits_split: Split
    ) -> None:
        train, test = digits_split
        observe = publisher(sqlite_ws)
        observe("p", "digits", pa.Table.from_pandas(train), role="reference", label="target")
        seen = observe("p", "digits", test.drop(columns="target"))  # scoring data: no labels
        verdicts = {c.monitor: (c.status, c.summary) for c in seen.checks}
        assert verdicts == {
            "feature_drift": ("ok", "features of digits: no drift in 64 column(s)"),
            "label_drift": ("ok", "digits has no labels yet (scoring data)"),
            "data_problems": (
                "ok",
                "digits: no missing or corrupted values beyond the reference's",
            ),
        }


class TestLabelDrift:
    def test_a_prior_shift_is_label_drift_and_not_feature_drift(self, ws: Workspace) -> None:
        rng = np.random.default_rng(7)

        def frame(n: int, p_positive: float) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "x": rng.normal(size=n),
                    "z": rng.uniform(size=n),
                    "y": (rng.uniform(size=n) < p_positive).astype(int),
                }
            )

        observe = publisher(ws)
        observe("p", "events", frame(5000, 0.2), role="reference", label="y")
        seen = observe("p", "events", frame(5000, 0.5), label="y")
        verdicts = {c.monitor: c for c in seen.checks}
        assert verdicts["label_drift"].status == "alert"
        assert "y (JS" in verdicts["label_drift"].summary
        assert verdicts["feature_drift"].status == "ok"
        assert points(ws, "shipyard_drift_score")["y"] > 0.1

    def test_label_drift_switched_off_in_the_definition_is_not_run(
        self, sqlite_ws: Workspace, digits_split: Split
    ) -> None:
        train, test = digits_split
        observe = publisher(sqlite_ws, "data", {"label_drift": False})
        observe("p", "digits", train, role="reference", label="target")
        seen = observe("p", "digits", test, label="target")
        assert [c.monitor for c in seen.checks] == ["feature_drift", "data_problems"]


class TestDataProblems:
    def test_nulls_and_strings_in_a_float_column_are_counted_per_column(
        self, ws: Workspace
    ) -> None:
        rng = np.random.default_rng(3)
        ref = pd.DataFrame({"amount": rng.normal(100, 10, 1000), "city": ["Oslo", "Rome"] * 500})
        batch = pd.DataFrame(
            {
                "amount": pd.Series(rng.normal(100, 10, 200), dtype=object),
                "city": ["Oslo", "Rome"] * 100,
            }
        )
        batch.loc[:29, "amount"] = None  # 30 nulls
        batch.loc[30:39, "amount"] = "n/a"  # 10 strings
        observe = publisher(ws)
        observe("p", "payments", ref, role="reference")
        seen = observe("p", "payments", batch)
        problems = next(c for c in seen.checks if c.monitor == "data_problems")
        assert problems.status == "alert"
        assert "amount (20.0%)" in problems.summary
        kinds = {a["kind"] for a in problems.evidence["anomalies"]}
        assert {"nulls_above_expectation", "wrong_type"} <= kinds
        fractions = points(ws, "shipyard_data_problem_fraction")
        assert fractions == {"amount": pytest.approx(40 / 200), "city": 0.0}

    def test_a_missing_column_is_a_problem_of_all_its_rows(self, sqlite_ws: Workspace) -> None:
        observe = publisher(sqlite_ws)
        observe(
            "p", "d", pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}), role="reference"
        )
        seen = observe("p", "d", pd.DataFrame({"a": [1.0, 2.0, 2.5]}))
        problems = next(c for c in seen.checks if c.monitor == "data_problems")
        assert problems.status == "alert" and "b (100.0%)" in problems.summary


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"role": "baseline"}, "role must be 'reference' or 'current'"),
            ({"label": "nope"}, "label column 'nope' is not in d"),
            ({"frame": pd.DataFrame({"a": []})}, "has no rows"),
            ({"frame": [1, 2, 3]}, "needs a pandas DataFrame"),
            ({"dataset": "a b"}, "data set name 'a b'"),
        ],
    )
    def test_bad_input_is_refused_and_writes_nothing(
        self, sqlite_ws: Workspace, kwargs: dict[str, object], message: str
    ) -> None:
        args: dict[str, object] = {"dataset": "d", "frame": pd.DataFrame({"a": [1.0, 2.0]})}
        args |= kwargs
        dataset, frame = args.pop("dataset"), args.pop("frame")
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
            publisher(sqlite_ws)("p", dataset, frame, **args)
        assert count(sqlite_ws, MonitorProfile) == count(sqlite_ws, Finding) == 0

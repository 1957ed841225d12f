"""Schema inference and validation: one anomaly of each kind, with rows and an example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import InvalidInput
from shipyard.stats import Schema, infer_schema, validate


@pytest.fixture
def reference() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 35.0, 50.0, 41.0],
            "city": ["Oslo", "Rome", "Oslo", None],
            "score": [0.1, 0.2, 0.3, 0.4],
        }
    )


def _kinds(anomalies: list) -> dict[tuple[str, str], tuple[int, object]]:
    return {(a.column, a.kind): (a.rows, a.example) for a in anomalies}


class TestInfer:
    def test_infers_kinds_ranges_nullability_and_domains(self, reference: pd.DataFrame) -> None:
        schema = infer_schema(reference)
        age, city = schema.columns["age"], schema.columns["city"]
        assert (age.kind, age.minimum, age.maximum, age.nullable) == ("numeric", 20.0, 50.0, False)
        assert (city.kind, city.domain, city.nullable) == ("categorical", ("Oslo", "Rome"), True)
        assert city.max_null_share == 0.25

    def test_json_round_trip(self, reference: pd.DataFrame) -> None:
        schema = infer_schema(reference)
        assert Schema.from_json(schema.to_json()) == schema

    def test_malformed_schema_json_is_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="not a Shipyard schema"):
            Schema.from_json({"columns": {}})
        with pytest.raises(InvalidInput, match="malformed"):
            Schema.from_json({"format": "shipyard.schema", "columns": {"a": {"kind": "numeric"}}})


class TestValidate:
    def test_clean_batch_has_no_anomaly(self, reference: pd.DataFrame) -> None:
        assert validate(reference.iloc[:2], infer_schema(reference)) == []

    def test_each_anomaly_kind_is_reported_with_rows_and_example(
        self, reference: pd.DataFrame
    ) -> None:
        batch = pd.DataFrame(
            {
                "age": pd.Series([30.0, "old", 99.0, np.inf, None], dtype=object),
                "city": ["Oslo", "Paris", "Paris", "Rome", "Oslo"],
                "extra": [1, 2, 3, 4, 5],
            }
        )
        found = _kinds(validate(batch, infer_schema(reference)))
        assert found[("age", "wrong_type")] == (1, "old")
        assert found[("age", "out_of_range")] == (1, 99.0)
        assert found[("age", "nan_or_inf")] == (1, np.inf)
        assert found[("age", "nulls_above_expectation")] == (1, None)
        assert found[("city", "unseen_category")] == (2, "Paris")
        assert found[("score", "missing_column")] == (5, None)
        assert found[("extra", "new_column")] == (5, 1)
        assert len(found) == 7

    def test_nulls_within_the_reference_share_plus_tolerance_pass(
        self, reference: pd.DataFrame
    ) -> None:
        schema = infer_schema(reference)
        ok = reference.assign(city=["Oslo", None, "Rome", "Rome"])
        assert validate(ok, schema) == []
        too_many = reference.assign(city=[None, None, "Rome", "Rome"])
        assert _kinds(validate(too_many, schema)) == {
            ("city", "nulls_above_expectation"): (2, None)
        }

    def test_numbers_in_a_text_category_column_are_wrong_type(
        self, reference: pd.DataFrame
    ) -> None:
        found = _kinds(validate(reference.assign(city=[1, 2, 3, 4]), infer_schema(reference)))
        assert found == {("city", "wrong_type"): (4, 1)}

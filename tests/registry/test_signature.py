from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import SchemaViolation
from shipyard.registry import Signature

SIG = Signature.from_json(
    {
        "inputs": [
            {"name": "age", "type": "long"},
            {"name": "income", "type": "double"},
            {"name": "score", "type": "double", "required": False},
        ]
    }
)


class TestValidation:
    def test_rows_become_a_float_array(self) -> None:
        arr = SIG.rows_to_array([[30, 1.5, 2.0], [40, 2.5, 3.0]])
        assert arr.dtype == np.float64 and arr.shape == (2, 3)

    def test_records_columns_and_split_agree(self) -> None:
        rows = SIG.rows_to_array([[30, 1.5, 2.0]])
        recs = SIG.records_to_array([{"age": 30, "income": 1.5, "score": 2.0}])
        cols = SIG.columns_to_array({"age": [30], "income": [1.5], "score": [2.0]})
        split = SIG.frame_to_array(["income", "age", "score"], [[1.5, 30, 2.0]])
        for other in (recs, cols, split):
            np.testing.assert_array_equal(rows, other)

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda: SIG.rows_to_array([[30, "x", 1.0]]), "income"),
            (lambda: SIG.rows_to_array([[30.5, 1.0, 1.0]]), "age"),
            (lambda: SIG.rows_to_array([[30, None, 1.0]]), "income"),
            (lambda: SIG.rows_to_array([[30, 1.0]]), "data"),
            (lambda: SIG.records_to_array([{"age": 3, "income": 1.0, "zip": 1}]), "zip"),
            (lambda: SIG.columns_to_array({"income": [1.0]}), "age"),
            (lambda: SIG.rows_to_array([]), "data"),
        ],
    )
    def test_violations_name_the_field(self, call: object, field: str) -> None:
        with pytest.raises(SchemaViolation) as err:
            call()  # type: ignore[operator]
        assert err.value.field == field
        assert field in str(err.value) or field == "data"

    def test_optional_column_may_be_missing(self) -> None:
        arr = SIG.records_to_array([{"age": 3, "income": 1.0}])
        assert np.isnan(arr[0, 2])

    def test_infer_from_frame(self) -> None:
        sig = Signature.infer(pd.DataFrame({"a": [1.0], "b": [1], "c": ["x"], "d": [True]}))
        assert [c.type for c in sig.inputs] == ["double", "long", "string", "boolean"]
        assert Signature.from_json(sig.to_json()) == sig

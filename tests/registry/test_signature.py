from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import InvalidInput, SchemaViolation
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

    def test_infer_from_an_array_says_to_give_a_frame(self) -> None:
        with pytest.raises(InvalidInput, match=r"must be a pandas DataFrame.*not ndarray"):
            Signature.infer(np.ones((3, 2)))


MIXED = Signature.from_json({"inputs": [{"name": "n"}, {"name": "s", "type": "string"}]})


class TestStrictNumbers:
    """A boolean is not a number, and no integer overflows into a 500: each names its column."""

    @pytest.mark.parametrize(
        ("rows", "field"),
        [
            ([[30, True, 1.0]], "income"),  # numpy makes it 1.0
            ([[True, 1.5, 2.0]], "age"),
            ([[30, 1.5, 2.0], [40, 2.5, False]], "score"),  # a 0, in the second row
            ([[1, 2, True]], "score"),  # numpy makes them all int64
        ],
    )
    def test_a_boolean_among_numbers_is_refused_naming_its_column(
        self, rows: list[list[object]], field: str
    ) -> None:
        with pytest.raises(SchemaViolation, match=f"column '{field}'.*bool") as err:
            SIG.rows_to_array(rows)
        assert err.value.field == field

    @pytest.mark.parametrize(
        ("sig", "rows", "field"),
        [
            (SIG, [[30, 10**400, 1.0]], "income"),
            (SIG, [[-(10**400), 1.0, 1.0]], "age"),
            (SIG, [[30, 1.0, 2**1024]], "score"),
            (SIG, [[30, 1.0, 10**5000]], "score"),  # more digits than Python will print
            (MIXED, [[10**400, "x"]], "n"),
            (MIXED, [[math.inf, "x"]], "n"),
        ],
    )
    def test_a_number_beyond_a_float_is_refused_naming_its_column(
        self, sig: Signature, rows: list[list[object]], field: str
    ) -> None:
        with pytest.raises(SchemaViolation, match=f"column '{field}'.*out of range") as err:
            sig.rows_to_array(rows)
        assert err.value.field == field
        assert len(str(err.value)) < 200

    def test_zeros_and_ones_that_are_numbers_stay_on_the_fast_path(self) -> None:
        arr = SIG.rows_to_array([[0, 1.0, 0.0], [1, 0, 1]])
        np.testing.assert_array_equal(arr, [[0, 1, 0], [1, 0, 1]])
        big = SIG.rows_to_array([[2**63, 1e308, -1e308]])
        assert big.dtype == np.float64 and big[0, 0] == 2.0**63

    @given(
        st.lists(
            st.lists(
                st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False)),
                min_size=3,
                max_size=3,
            ),
            min_size=1,
            max_size=5,
        )
    )
    def test_any_rows_give_floats_or_a_schema_violation(self, rows: list[list[object]]) -> None:
        try:
            arr = SIG.rows_to_array(rows)
        except SchemaViolation as exc:
            assert exc.field in SIG.names
            return
        assert arr.dtype == np.float64 and np.isfinite(arr).all()
        assert not any(type(v) is bool for row in rows for v in row)

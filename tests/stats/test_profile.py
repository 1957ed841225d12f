"""Profiles: one pass, merge equals concatenation, JSON round trip, nulls and wrong types."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.errors import InvalidInput
from shipyard.stats import DatasetProfile
from shipyard.stats.profile import CATEGORY_CAP, CATEGORY_TOP_K


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.normal(shift, 1, n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "k": rng.integers(0, 4, n),
            "c": pd.Series(rng.choice(np.array(["a", "b", "c", None], dtype=object), n)),
        }
    )


def _exact_fields(p: DatasetProfile) -> dict:
    d = p.to_json()
    for col in d["columns"].values():
        col.pop("kll", None)
        col.pop("hll", None)
        for k in ("mean", "m2"):
            if k in col:
                col[k] = round(col[k], 6)
        if "bin_sums" in col:
            col["bin_sums"] = [round(v, 6) for v in col["bin_sums"]]
    return d


class TestMerge:
    def test_merge_equals_profiling_the_concatenation(self) -> None:
        rng = np.random.default_rng(3)
        a, b = _frame(rng, 3000), _frame(rng, 2000, shift=0.5)
        ref = DatasetProfile.from_frame(a)
        merged = ref.merge(DatasetProfile.from_frame(b, reference=ref))
        whole = DatasetProfile.from_frame(pd.concat([a, b], ignore_index=True), reference=ref)
        assert _exact_fields(merged) == _exact_fields(whole)
        mx, wx = merged.columns["x"], whole.columns["x"]
        assert mx.mean == pytest.approx(wx.mean, rel=1e-12)
        assert mx.variance == pytest.approx(wx.variance, rel=1e-12)
        assert mx.histogram == wx.histogram
        assert merged.columns["c"].frequencies == whole.columns["c"].frequencies

    def test_merged_quantiles_stay_within_the_sketch_error(self) -> None:
        rng = np.random.default_rng(4)
        parts = [pd.DataFrame({"x": rng.normal(i, 1, 20_000)}) for i in range(4)]
        ref = DatasetProfile.from_frame(parts[0])
        merged = ref
        for part in parts[1:]:
            merged = merged.merge(DatasetProfile.from_frame(part, reference=ref))
        all_x = np.sort(pd.concat(parts)["x"].to_numpy())
        ranks = np.array([0.01, 0.25, 0.5, 0.75, 0.99])
        estimates = merged.columns["x"].quantiles(ranks)
        # KLL guarantee: the estimate's true rank is within ε ≈ 1 % of the asked rank
        true_ranks = np.searchsorted(all_x, estimates) / all_x.size
        assert np.all(np.abs(true_ranks - ranks) < 0.01)

    def test_update_folds_batches_like_merge(self) -> None:
        rng = np.random.default_rng(5)
        a, b = _frame(rng, 1000), _frame(rng, 1000)
        ref = DatasetProfile.from_frame(a)
        grown = DatasetProfile.from_json(ref.to_json()).update(b)
        assert _exact_fields(grown) == _exact_fields(
            ref.merge(DatasetProfile.from_frame(b, reference=ref))
        )

    def test_merge_keeps_rows_of_a_column_absent_from_one_side_as_missing(self) -> None:
        a = DatasetProfile.from_frame(pd.DataFrame({"x": [1.0, 2.0], "y": ["u", "v"]}))
        b = DatasetProfile.from_frame(pd.DataFrame({"x": [3.0]}), reference=a)
        merged = a.merge(b)
        assert merged.rows == 3
        assert merged.columns["y"].count == 3 and merged.columns["y"].missing == 1

    def test_categories_beyond_the_cap_keep_the_top_values_and_an_other_mass(self) -> None:
        values = [f"v{i}" for i in range(CATEGORY_CAP + 500)] + ["hot"] * 50
        profile = DatasetProfile.from_frame(pd.DataFrame({"c": values}))
        col = profile.columns["c"]
        assert col.capped and len(col.frequencies) == CATEGORY_TOP_K
        assert col.frequencies["hot"] == 50
        assert sum(col.frequencies.values()) + col.other == len(values)
        assert col.distinct == pytest.approx(CATEGORY_CAP + 501, rel=0.05)


class TestCounting:
    def test_nan_none_inf_and_wrong_types_are_counted_apart(self) -> None:
        frame = pd.DataFrame(
            {
                "f": [1.0, np.nan, np.inf, -np.inf, 2.0],
                "o": pd.Series([1.5, "oops", None, 3, "x"], dtype=object),
            }
        )
        p = DatasetProfile.from_frame(frame)
        f, o = p.columns["f"], p.columns["o"]
        assert (f.missing, f.infinite, f.type_violations, f.valid) == (1, 2, 0, 2)
        assert f.mean == 1.5 and f.minimum == 1.0 and f.maximum == 2.0
        assert o.kind == "numeric"
        assert (o.missing, o.type_violations, o.valid) == (1, 2, 2)
        assert f.missing_share == pytest.approx(3 / 5)

    def test_numbers_in_a_column_of_labels_are_type_violations(self) -> None:
        frame = pd.DataFrame({"c": pd.Series(["a", 3, "b", None, 4.5, "a"], dtype=object)})
        c = DatasetProfile.from_frame(frame).columns["c"]
        assert c.kind == "categorical"
        assert (c.missing, c.type_violations) == (1, 2)
        assert c.frequencies == {"a": 2, "b": 1}
        assert c.invalid == 3

    def test_moments_equal_numpy(self) -> None:
        x = np.random.default_rng(6).lognormal(3, 1, 10_000) + 1e6
        col = DatasetProfile.from_frame(pd.DataFrame({"x": x})).columns["x"]
        assert col.mean == pytest.approx(x.mean(), rel=1e-12)
        assert col.variance == pytest.approx(x.var(), rel=1e-9)

    def test_histogram_uses_reference_edges_with_open_outer_bins(self) -> None:
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": np.arange(100, dtype=float)}))
        edges = ref.columns["x"].edges
        assert edges is not None and len(edges) == 19
        cur = DatasetProfile.from_frame(pd.DataFrame({"x": [-1e9, 1e9, 50.0]}), reference=ref)
        hist = cur.columns["x"].histogram
        assert hist[0] == 1 and hist[-1] == 1 and sum(hist) == 3

    def test_arrow_tables_are_profiled_like_pandas(self) -> None:
        frame = _frame(np.random.default_rng(8), 500)
        a = DatasetProfile.from_frame(frame)
        b = DatasetProfile.from_frame(pa.Table.from_pandas(frame))
        assert _exact_fields(a) == _exact_fields(b)


def _typed_frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Every column type a Parquet file gives that is profiled without pandas, nulls in most."""
    x = rng.normal(shift, 1, n)
    x[rng.random(n) < 0.05] = np.nan
    with_nulls = pd.array(rng.integers(0, 9, n), dtype="Int64")
    with_nulls[rng.random(n) < 0.1] = pd.NA
    flags = pd.Series(rng.random(n) < 0.3, dtype=object)
    flags[rng.random(n) < 0.1] = None
    return pd.DataFrame(
        {
            "x": x,
            "x32": (x * 2).astype(np.float32),
            "k": rng.integers(-5, 5, n),
            "u8": rng.integers(0, 200, n).astype(np.uint8),
            "k_nulls": with_nulls,
            "b": rng.random(n) < 0.5,
            "b_nulls": flags,
            "c": pd.Series(rng.choice(np.array(["a", "b", "ç", "", None], dtype=object), n)),
        },
        index=pd.Index(rng.permutation(n) + 1000, name="row"),  # stored as a column
    )


def _all_but_kll(p: DatasetProfile) -> dict:
    """Every field of a profile, bit for bit, but its KLL sketches (randomised compaction: two
    sketches of the same values differ)."""
    d = p.to_json()
    for col in d["columns"].values():
        col.pop("kll", None)
    return d


class TestArrowColumns:
    """A Parquet file's Arrow table is profiled from its Arrow columns, without pandas, into
    the profile its pandas frame gets: every field bit for bit, the HLL sketches included."""

    @pytest.mark.parametrize("seed", [11, 12])
    def test_a_parquet_table_profiles_like_its_pandas_frame(
        self, tmp_path: Path, seed: int
    ) -> None:
        rng = np.random.default_rng(seed)
        ref_path, cur_path = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
        _typed_frame(rng, 3000).to_parquet(ref_path)
        _typed_frame(rng, 2000, shift=0.5).to_parquet(cur_path)
        ref_table, cur_table = pq.read_table(ref_path), pq.read_table(cur_path)
        assert "row" in ref_table.column_names  # the pandas index, stored as a column
        by_arrow = DatasetProfile.from_frame(ref_table)
        assert DatasetProfile()._arrow_columns(ref_table) is not None
        by_pandas = DatasetProfile.from_frame(pd.read_parquet(ref_path))
        assert _all_but_kll(by_arrow) == _all_but_kll(by_pandas)
        assert by_pandas._arrow_columns(cur_table) is not None
        cur_by_arrow = DatasetProfile.from_frame(cur_table, reference=by_arrow)
        cur_by_pandas = DatasetProfile.from_frame(pd.read_parquet(cur_path), reference=by_pandas)
        assert _all_but_kll(cur_by_arrow) == _all_but_kll(cur_by_pandas)
        for name, col in cur_by_arrow.columns.items():
            if col.kind == "numeric":  # the sketch saw the same values: count, least, most
                other = cur_by_pandas.columns[name].sketch
                assert col.sketch.n == other.n, name
                assert (col.sketch.get_min_value(), col.sketch.get_max_value()) == (
                    other.get_min_value(),
                    other.get_max_value(),
                ), name

    def test_record_batches_fold_in_like_their_pandas_frames(self) -> None:
        frame = _typed_frame(np.random.default_rng(13), 1000).reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        by_arrow, by_pandas = DatasetProfile(), DatasetProfile()
        for batch in table.to_batches(max_chunksize=300):
            by_arrow.update(batch)
            by_pandas.update(batch.to_pandas())
        assert by_arrow.rows == 1000
        assert _all_but_kll(by_arrow) == _all_but_kll(by_pandas)

    @pytest.mark.parametrize(
        ("column", "why"),
        [
            (pa.array([None, None], type=pa.string()), "no valid value: pandas infers the kind"),
            (pa.array(["2024-01-01", "x"]).cast(pa.dictionary(pa.int8(), pa.string())), "type"),
            (pa.array([1, 2], type=pa.timestamp("s")), "type"),
        ],
    )
    def test_other_tables_go_through_pandas(self, column: pa.Array, why: str) -> None:
        table = pa.table({"x": [1.0, 2.0], "y": column})
        assert DatasetProfile()._arrow_columns(table) is None, why
        by_table = DatasetProfile.from_frame(table)
        assert _all_but_kll(by_table) == _all_but_kll(DatasetProfile.from_frame(table.to_pandas()))

    def test_a_column_whose_type_differs_from_the_references_kind_goes_through_pandas(
        self,
    ) -> None:
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": ["1", "2", "3"]}))  # categorical
        table = pa.table({"x": [1.0, 2.0]})
        assert ref._arrow_columns(table) is None
        cur = DatasetProfile.from_frame(table, reference=ref)
        assert cur.columns["x"].frequencies == {"1.0": 1, "2.0": 1}


class TestJson:
    def test_round_trip_is_lossless_and_compact(self) -> None:
        p = DatasetProfile.from_frame(_frame(np.random.default_rng(9), 50_000))
        text = json.dumps(p.to_json())
        back = DatasetProfile.from_json(json.loads(text))
        assert back.to_json() == p.to_json()
        assert len(text) < 40_000

    def test_empty_like_has_reference_edges_and_no_rows(self) -> None:
        ref = DatasetProfile.from_frame(_frame(np.random.default_rng(10), 1000))
        empty = DatasetProfile.empty_like(ref)
        assert empty.rows == 0
        assert empty.columns["x"].edges == ref.columns["x"].edges
        assert empty.columns["c"].kind == "categorical"

    def test_malformed_json_is_rejected_clearly(self) -> None:
        with pytest.raises(InvalidInput, match="not a Shipyard profile"):
            DatasetProfile.from_json({"rows": 1})
        bad = DatasetProfile.from_frame(pd.DataFrame({"x": [1.0]})).to_json()
        del bad["columns"]["x"]["histogram"]
        with pytest.raises(InvalidInput, match="malformed column profile"):
            DatasetProfile.from_json(bad)

    def test_non_frames_are_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="DataFrame"):
            DatasetProfile.from_frame([1, 2, 3])

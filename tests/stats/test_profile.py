"""Profiles: one pass, merge equals concatenation, JSON round trip, nulls and wrong types."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
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

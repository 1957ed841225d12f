"""compare(): no false alarms at large n, power for small real shifts, nulls and unseen values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from shipyard.errors import InvalidInput
from shipyard.stats import (
    DatasetProfile,
    DriftConfig,
    adjust_p_values,
    compare,
    wasserstein_normalised,
)

N = 200_000
CATS = np.array(list("abcdefgh"), dtype=object)


def _batch(rng: np.random.Generator, n: int = N, shift: float = 0.0) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {f"x{i}": rng.normal(0, 1, n) for i in range(8)}
    cols["x0"] = cols["x0"] + shift
    cols["gamma"] = rng.gamma(2.0, 1.0, n)
    cols["count"] = rng.poisson(3, n)
    cols["cat"] = rng.choice(CATS, n, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01])
    return pd.DataFrame(cols)


@pytest.fixture(scope="module")
def reference() -> DatasetProfile:
    return DatasetProfile.from_frame(_batch(np.random.default_rng(100)))


class TestDefaults:
    def test_ten_iid_batches_of_200k_rows_flag_no_column(self, reference: DatasetProfile) -> None:
        rng = np.random.default_rng(101)
        for _ in range(10):
            report = compare(reference, DatasetProfile.from_frame(_batch(rng), reference=reference))
            assert report.drifted_columns == []
            assert not report.drifted

    def test_a_tenth_of_a_sigma_mean_shift_in_one_column_is_flagged(
        self, reference: DatasetProfile
    ) -> None:
        current = DatasetProfile.from_frame(
            _batch(np.random.default_rng(102), shift=0.1), reference=reference
        )
        report = compare(reference, current)
        assert report.drifted_columns == ["x0"]
        x0 = report.columns[0]
        assert x0.effect == pytest.approx(0.1, abs=0.03)
        assert x0.p_value < 1e-50
        assert report.share_drifted == pytest.approx(1 / len(report.columns))

    def test_dataset_verdict_follows_the_configured_share(self, reference: DatasetProfile) -> None:
        current = DatasetProfile.from_frame(
            _batch(np.random.default_rng(103), shift=0.5), reference=reference
        )
        assert not compare(reference, current).drifted
        assert compare(reference, current, DriftConfig(dataset_drift_share=0.05)).drifted


class TestProfileEstimates:
    def test_profile_wasserstein_is_close_to_the_exact_one(self) -> None:
        rng = np.random.default_rng(11)
        a, b = rng.normal(0, 1, 50_000), rng.normal(0.3, 1.2, 50_000)
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": a}))
        cur = DatasetProfile.from_frame(pd.DataFrame({"x": b}), reference=ref)
        col = compare(ref, cur).columns[0]
        assert col.effect == pytest.approx(wasserstein_normalised(a, b), abs=0.02)

    def test_profile_ks_is_close_to_the_exact_statistic(self) -> None:
        rng = np.random.default_rng(12)
        a, b = rng.normal(0, 1, 50_000), rng.normal(0.2, 1, 50_000)
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": a}))
        cur = DatasetProfile.from_frame(pd.DataFrame({"x": b}), reference=ref)
        d = compare(ref, cur).columns[0].measures["ks_d"]
        exact = sstats.ks_2samp(a, b).statistic
        assert d <= exact + 1e-12
        assert d == pytest.approx(exact, abs=0.01)

    def test_the_same_data_always_give_the_same_report(self) -> None:
        # KLL compactions are random; the verdict and its numbers must not depend on them
        rng = np.random.default_rng(19)
        ref_df = pd.DataFrame({"x": rng.normal(0, 1, 30_000)})
        cur_df = pd.DataFrame({"x": rng.normal(0.05, 1, 30_000)})
        reports = []
        for _ in range(3):
            ref = DatasetProfile.from_frame(ref_df)
            reports.append(compare(ref, DatasetProfile.from_frame(cur_df, reference=ref)).to_json())
        assert reports[0] == reports[1] == reports[2]

    def test_current_on_other_edges_is_rebinned_from_its_sketch(self) -> None:
        rng = np.random.default_rng(13)
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": rng.normal(0, 1, 20_000)}))
        cur = DatasetProfile.from_frame(pd.DataFrame({"x": rng.normal(0, 1, 20_000)}))
        col = compare(ref, cur).columns[0]
        assert not col.drifted
        assert "rebinned" in col.reason
        assert sum(col.current_counts) == pytest.approx(20_000, abs=2)


class TestNullsAndCategories:
    def test_a_column_going_forty_percent_null_drifts_though_its_values_do_not(self) -> None:
        rng = np.random.default_rng(14)
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": rng.normal(0, 1, 20_000)}))
        x = rng.normal(0, 1, 20_000)
        x[rng.random(20_000) < 0.4] = np.nan
        col = compare(
            ref, DatasetProfile.from_frame(pd.DataFrame({"x": x}), reference=ref)
        ).columns[0]
        assert col.drifted
        assert col.missing_ref == 0 and col.missing_cur == pytest.approx(0.4, abs=0.02)
        assert col.effect < 0.05
        assert "invalid share" in col.reason

    def test_strings_in_a_float_column_count_as_invalid(self) -> None:
        rng = np.random.default_rng(15)
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": rng.normal(0, 1, 10_000)}))
        values = rng.normal(0, 1, 10_000).astype(object)
        values[:2000] = "n/a"
        cur = DatasetProfile.from_frame(pd.DataFrame({"x": values}), reference=ref)
        assert cur.columns["x"].type_violations == 2000
        assert compare(ref, cur).columns[0].drifted

    def test_unseen_categories_are_counted_not_dropped(self) -> None:
        rng = np.random.default_rng(16)
        ref_cats = rng.choice(np.array(["a", "b"], dtype=object), 10_000)
        cur_cats = rng.choice(np.array(["a", "b", "zzz"], dtype=object), 10_000, p=[0.4, 0.4, 0.2])
        ref = DatasetProfile.from_frame(pd.DataFrame({"c": ref_cats}))
        cur = DatasetProfile.from_frame(pd.DataFrame({"c": cur_cats}), reference=ref)
        col = compare(ref, cur).columns[0]
        assert col.drifted
        assert col.unseen_categories == {"zzz": int((cur_cats == "zzz").sum())}
        assert "zzz" in col.bins

    def test_a_column_absent_from_the_current_data_drifts(self) -> None:
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]}))
        report = compare(ref, DatasetProfile.from_frame(pd.DataFrame({"x": [1.0, 2.0]})))
        assert report.drifted_columns == ["y"]
        assert report.columns[1].test == "presence"

    def test_report_serialises_without_nan(self, reference: DatasetProfile) -> None:
        import json

        current = DatasetProfile.from_frame(
            _batch(np.random.default_rng(17), 5000), reference=reference
        )
        text = json.dumps(compare(reference, current).to_json(), allow_nan=False)
        assert '"drifted_columns": []' in text


class TestMultipleTesting:
    def test_benjamini_hochberg_equals_scipy(self) -> None:
        p = np.random.default_rng(18).random(40) ** 3
        expected = sstats.false_discovery_control(p, method="bh")
        assert adjust_p_values(p.tolist(), "bh") == pytest.approx(expected.tolist(), abs=1e-12)

    def test_holm_by_hand(self) -> None:
        # sorted 0.01, 0.02, 0.03 → ×3, ×2, ×1 → 0.03, 0.04, 0.04 (running max)
        assert adjust_p_values([0.03, 0.01, 0.02], "holm") == pytest.approx([0.04, 0.03, 0.04])

    def test_empty_profiles_are_rejected(self) -> None:
        ref = DatasetProfile.from_frame(pd.DataFrame({"x": [1.0, 2.0]}))
        with pytest.raises(InvalidInput, match="no rows"):
            compare(ref, DatasetProfile.empty_like(ref))
        with pytest.raises(InvalidInput, match="reference profile is empty"):
            compare(DatasetProfile(), ref)

    def test_bad_config_is_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="alpha"):
            DriftConfig(alpha=0)
        with pytest.raises(InvalidInput, match="correction"):
            DriftConfig(correction="bonferroni")  # type: ignore[arg-type]


def test_drifted_summary_names_the_strongest_first_and_counts_the_rest() -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({f"c{i}": rng.normal(size=2000) for i in range(12)})
    cur = pd.DataFrame({f"c{i}": rng.normal(loc=0.1 * i, size=2000) for i in range(12)})
    reference = DatasetProfile.from_frame(ref)
    report = compare(reference, DatasetProfile.from_frame(cur, reference=reference))
    summary = report.drifted_summary(top=3)
    drifted = sorted((c for c in report.columns if c.drifted), key=lambda c: -c.effect)
    assert len(drifted) >= 5 and drifted[0].column == "c11"
    assert summary.startswith(f"{len(drifted)} of 12 column(s) drifted: c11 (W1/σ ")
    assert summary.endswith(f" and {len(drifted) - 3} more")
    same = compare(reference, DatasetProfile.from_frame(ref, reference=reference))
    assert same.drifted_summary() == "no drift in 12 column(s)"

"""The drift kernels against SciPy on seeded data and against the tools' published numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sstats
from scipy.spatial.distance import jensenshannon

from shipyard.errors import InvalidInput
from shipyard.stats import (
    chi_square,
    chi_square_goodness_of_fit,
    hellinger,
    jensen_shannon,
    ks_2samp,
    ks_binned,
    l_infinity,
    psi,
    wasserstein,
    wasserstein_normalised,
    wasserstein_weighted,
)

TOL = 1e-9


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    """The data of /work/shared/reference/drift-golden.md, drawn in its order."""
    rng = np.random.default_rng(7)
    n = 5000
    num_ref = rng.normal(0, 1, n)
    num_cur = rng.normal(0.3, 1.2, n)
    cats = np.array(list("abcde"))
    cat_ref = rng.choice(cats, n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    cat_cur = rng.choice(cats, n, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    return {
        "num_ref": num_ref,
        "num_cur": num_cur,
        "cat_ref": np.array([(cat_ref == k).sum() for k in cats]),
        "cat_cur": np.array([(cat_cur == k).sum() for k in cats]),
    }


def _sturges(g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    edges = np.histogram_bin_edges(np.concatenate([g["num_ref"], g["num_cur"]]), "sturges")
    return np.histogram(g["num_ref"], edges)[0], np.histogram(g["num_cur"], edges)[0]


def _doane_with_leftover(g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    edges = np.histogram_bin_edges(g["num_ref"], "doane")
    cur = g["num_cur"]
    leftover = int(((cur < edges[0]) | (cur > edges[-1])).sum())
    ref_counts = np.append(np.histogram(g["num_ref"], edges)[0], 0)
    return ref_counts, np.append(np.histogram(cur, edges)[0], leftover)


class TestPublishedNumbers:
    def test_psi_matches_evidently_on_numeric_sturges_bins(self, golden: dict) -> None:
        assert psi(*_sturges(golden)) == pytest.approx(0.1462289251, abs=1e-10)

    def test_psi_matches_evidently_on_categories(self, golden: dict) -> None:
        assert psi(golden["cat_ref"], golden["cat_cur"]) == pytest.approx(0.06751183889, abs=1e-10)

    def test_jensen_shannon_natural_log_matches_evidently(self, golden: dict) -> None:
        assert jensen_shannon(*_sturges(golden), base=np.e) == pytest.approx(
            0.1323087458, abs=1e-10
        )
        cats = jensen_shannon(golden["cat_ref"], golden["cat_cur"], base=np.e)
        assert cats == pytest.approx(0.09137648975, abs=1e-10)

    def test_jensen_shannon_base_2_matches_nannyml_and_its_square_tfdv(self, golden: dict) -> None:
        d = jensen_shannon(golden["cat_ref"], golden["cat_cur"], base=2)
        assert d == pytest.approx(0.1097543495, abs=1e-10)
        assert d**2 == pytest.approx(0.01204601723, abs=1e-11)
        assert jensen_shannon(*_doane_with_leftover(golden)) == pytest.approx(
            0.1609330179, abs=1e-10
        )

    def test_hellinger_matches_nannyml_on_reference_doane_bins(self, golden: dict) -> None:
        assert hellinger(*_doane_with_leftover(golden)) == pytest.approx(0.13654788, abs=1e-8)

    def test_wasserstein_matches_evidently_normalised_and_nannyml_raw(self, golden: dict) -> None:
        ref, cur = golden["num_ref"], golden["num_cur"]
        assert wasserstein_normalised(ref, cur) == pytest.approx(0.3300205272, abs=1e-10)
        assert wasserstein(ref, cur) == pytest.approx(0.3279553972, abs=1e-10)

    def test_ks_matches_nannyml_statistic_and_evidently_p_value(self, golden: dict) -> None:
        result = ks_2samp(golden["num_ref"], golden["num_cur"])
        assert result.statistic == pytest.approx(0.1398, abs=1e-12)
        assert result.p_value == pytest.approx(5.32893598e-43, rel=1e-8)

    def test_chi_square_goodness_of_fit_matches_evidently(self, golden: dict) -> None:
        result = chi_square_goodness_of_fit(golden["cat_ref"], golden["cat_cur"])
        assert result.p_value == pytest.approx(4.162411237e-85, rel=1e-9)

    def test_chi_square_contingency_matches_alibi_and_nannyml(self, golden: dict) -> None:
        result = chi_square(golden["cat_ref"], golden["cat_cur"])
        assert result.statistic == pytest.approx(165.2776939, abs=1e-7)
        assert result.p_value == pytest.approx(1.078481782e-34, rel=1e-9)

    def test_l_infinity_matches_tfdv(self, golden: dict) -> None:
        assert l_infinity(golden["cat_ref"], golden["cat_cur"]) == pytest.approx(0.093, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
class TestAgainstScipy:
    def test_wasserstein_equals_scipy(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        a, b = rng.gamma(2, 1, 3000), rng.normal(2, 1.5, 2000)
        assert wasserstein(a, b) == pytest.approx(sstats.wasserstein_distance(a, b), abs=TOL)

    def test_weighted_wasserstein_equals_scipy(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        u, v = rng.normal(0, 1, 30), rng.normal(1, 2, 25)
        wu, wv = rng.integers(0, 50, 30), rng.random(25)
        expected = sstats.wasserstein_distance(u, v, wu, wv)
        assert wasserstein_weighted(u, wu, v, wv) == pytest.approx(expected, abs=TOL)

    def test_ks_statistic_and_p_equal_scipy(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        a, b = rng.normal(0, 1, 700), rng.normal(0.1, 1, 900)
        expected = sstats.ks_2samp(a, b)
        got = ks_2samp(a, b)
        assert got.statistic == pytest.approx(expected.statistic, abs=TOL)
        assert got.p_value == pytest.approx(expected.pvalue, abs=TOL)

    def test_binned_ks_with_one_bin_per_value_equals_exact_ks(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, 30, 5000), rng.integers(2, 32, 4000)
        support = np.arange(0, 33)
        ra, rb = (np.bincount(x, minlength=support.size) for x in (a, b))
        assert ks_binned(ra, rb).statistic == pytest.approx(
            sstats.ks_2samp(a, b).statistic, abs=TOL
        )

    def test_jensen_shannon_equals_scipy(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        r, c = rng.integers(0, 100, 12), rng.integers(0, 100, 12)
        r[3] = 0
        assert jensen_shannon(r, c) == pytest.approx(jensenshannon(r, c, base=2), abs=TOL)
        assert jensen_shannon(r, c, np.e) == pytest.approx(jensenshannon(r, c), abs=TOL)

    def test_chi_square_equals_scipy(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        r, c = rng.integers(5, 500, 9), rng.integers(5, 500, 9)
        expected = sstats.chi2_contingency(np.vstack([r, c]), correction=False)
        got = chi_square(r, c)
        assert got.statistic == pytest.approx(expected.statistic, abs=TOL)
        assert got.p_value == pytest.approx(expected.pvalue, abs=TOL)
        gof = sstats.chisquare(c, r * c.sum() / r.sum())
        assert chi_square_goodness_of_fit(r, c).p_value == pytest.approx(gof.pvalue, abs=TOL)


class TestHandComputed:
    def test_psi_of_a_two_bin_shift(self) -> None:
        # (0.5-0.4)·ln(0.5/0.4) + (0.5-0.6)·ln(0.5/0.6)
        assert psi([50, 50], [40, 60]) == pytest.approx(0.1 * np.log(1.25) - 0.1 * np.log(5 / 6))

    def test_identical_distributions_have_zero_distance(self) -> None:
        counts = [3, 5, 0, 9]
        for f in (psi, jensen_shannon, hellinger, l_infinity):
            assert f(counts, counts) == pytest.approx(0.0, abs=1e-15)

    def test_disjoint_distributions_have_maximal_distance(self) -> None:
        assert jensen_shannon([1, 0], [0, 1]) == 1.0
        assert hellinger([1, 0], [0, 1]) == pytest.approx(1.0)
        assert l_infinity([1, 0], [0, 1]) == 1.0


class TestBadInput:
    def test_mismatched_count_vectors_are_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="equal length"):
            psi([1, 2], [1, 2, 3])

    def test_negative_or_empty_counts_are_rejected(self) -> None:
        with pytest.raises(InvalidInput):
            hellinger([1, -1], [1, 1])
        with pytest.raises(InvalidInput, match="at least one"):
            jensen_shannon([0, 0], [1, 1])

    def test_nan_in_raw_samples_is_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="NaN"):
            wasserstein([1.0, np.nan], [1.0])

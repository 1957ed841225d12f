"""Canary judge kernels: does a canary behave worse than the stable version it would replace?

Each metric has the test that fits its data, not one test for everything (Kayenta's
Mann–Whitney-only judge misses sparse error bursts and variance increases: kayenta #426, #780):

=====================  ============================================================  ===========
metric                 test                                                          effect
=====================  ============================================================  ===========
error rate             exact conditional test of two Poisson rates (binomial)        Δ rate, pp
latency (location)     Mann–Whitney U + Hodges–Lehmann shift with its CI             shift, ms
latency (spread)       Brown–Forsythe's |x − median| means, saddlepoint-calibrated   MAD ratio
predictions (numeric)  two-sample Kolmogorov–Smirnov                                 D
predictions (classes)  chi-square test of homogeneity                                Cramér's V
=====================  ============================================================  ===========

Every test is one-sided where "worse" has a direction (more errors, slower, wider), and a
metric fails only when the test rejects at the level spent at this look **and** the effect is
at least the floor the policy names, so that a tiny but "significant" difference on a large
sample does not roll a model back.

Repeated looks: the judge looks at the cumulative data of a step after every interval. Each
look k of at most K spends ``alpha_spent(k/K) − alpha_spent((k−1)/K)`` of the metric's
budget (Lan & DeMets 1983 spending functions); testing each look at its increment keeps the
probability of any false rejection over all looks ≤ the budget by the union bound (a
conservative form of group-sequential testing that needs no multivariate normal integrals).
:func:`staged_alpha` lays the looks of every stage of a release end to end under one budget.

No I/O, no clock: numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

Outcome = Literal["pass", "fail", "extend"]
Spending = Literal["pocock", "obrien_fleming"]
Budget = Literal["release", "per_stage"]

HL_MAX_SAMPLE = 1000
"""The Hodges–Lehmann estimate and its interval use at most this many values per side
(an evenly spaced subsample of the sorted data) so that the m·n pairwise differences fit
in memory; the U test itself always uses every value."""


@dataclass(frozen=True)
class TestResult:
    """One test's numbers: the statistic, its one-sided p-value, the effect and its interval."""

    test: str
    statistic: float
    p_value: float
    effect: float
    ci_low: float
    ci_high: float
    n_canary: int
    n_stable: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricVerdict:
    """The judge's word on one metric at one look, with everything needed to see why."""

    metric: str
    outcome: Outcome
    reason: str
    test: str
    statistic: float
    p_value: float
    alpha: float
    effect: float
    effect_floor: float
    ci_low: float
    ci_high: float
    n_canary: int
    n_stable: int

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


# -- repeated looks ---------------------------------------------------------------------------


def alpha_spent(fraction: float, alpha: float, kind: Spending = "pocock") -> float:
    """The share of ``alpha`` spent once a fraction ``t`` of the looks are done.

    Pocock-type:          α·ln(1 + (e − 1)·t)
    O'Brien–Fleming-type: 2·(1 − Φ(z_{1−α/2} / √t))

    Lan, K.K.G. & DeMets, D.L. (1983), "Discrete sequential boundaries for clinical trials",
    Biometrika 70(3):659–663.

    >>> round(alpha_spent(1.0, 0.05), 12)
    0.05
    """
    t = min(max(fraction, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if kind == "pocock":
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    if kind == "obrien_fleming":
        z = float(sps.norm.isf(alpha / 2.0))
        return float(2.0 * sps.norm.sf(z / math.sqrt(t)))
    raise ValueError(f"unknown spending function {kind!r}")


def alpha_at_look(look: int, max_looks: int, alpha: float, kind: Spending = "pocock") -> float:
    """The level to test look ``look`` (1-based) of at most ``max_looks`` at; 0 past the last."""
    if look < 1 or max_looks < 1 or look > max_looks:
        return 0.0
    return alpha_spent(look / max_looks, alpha, kind) - alpha_spent(
        (look - 1) / max_looks, alpha, kind
    )


def staged_alpha(
    stage_looks: Sequence[int],
    stage: int,
    look: int,
    alpha: float,
    kind: Spending = "pocock",
    budget: Budget = "release",
) -> float:
    """The level to test look ``look`` (1-based) of stage ``stage`` (0-based) of a release at.

    A release is a sequence of stages (targeted steps, weighted canary steps; later replay and
    shadow), stage ``i`` taking at most ``stage_looks[i]`` judged looks. One budget ``alpha``
    covers every look of every stage, so adding a stage does not add false rollbacks:

    - ``release``: one spending function over the release's looks laid end to end; look j of
      the L looks in all spends ``alpha_spent(j/L) − alpha_spent((j−1)/L)`` (Lan & DeMets
      1983, with the looks' fraction as the information time). Pocock-type spending gives the
      early, small-audience stages a larger share than an even split would.
    - ``per_stage``: a Bonferroni split, ``alpha / S`` per stage, spent over the stage's own
      looks (what the canary steps did before stages existed).

    Either way the levels of all looks sum to at most ``alpha``, and by the union bound the
    chance of any false rejection over the whole release is at most ``alpha`` whatever the
    correlation between looks (cumulative data) and between stages. A look past its stage's
    maximum, or in a stage that does not exist, gets 0.

    >>> looks = [2, 3, 3]
    >>> round(sum(staged_alpha(looks, i, k, 0.01) for i in range(3)
    ...           for k in range(1, looks[i] + 1)), 12)
    0.01
    """
    if not 0 <= stage < len(stage_looks) or min(stage_looks, default=0) < 1:
        if any(n < 1 for n in stage_looks):
            raise ValueError(f"every stage takes at least one look, got {list(stage_looks)}")
        return 0.0
    if look < 1 or look > stage_looks[stage]:
        return 0.0
    if budget == "per_stage":
        return alpha_at_look(look, stage_looks[stage], alpha / len(stage_looks), kind)
    if budget != "release":
        raise ValueError(f"unknown budget {budget!r}")
    total = sum(stage_looks)
    done = sum(stage_looks[:stage]) + look
    return alpha_spent(done / total, alpha, kind) - alpha_spent((done - 1) / total, alpha, kind)


# -- error rate -------------------------------------------------------------------------------


def rate_test(
    errors_canary: int, n_canary: int, errors_stable: int, n_stable: int, conf_level: float = 0.98
) -> TestResult:
    """Is the canary's error rate higher than the stable one's? Exact, and sound for sparse counts.

    Given k = x_c + x_s errors in total, under H0 (equal rates) x_c ~ Binomial(k, n_c/(n_c+n_s))
    (the conditional test for two Poisson rates; Przyborowski & Wilenski 1940, Biometrika 31).
    p = P(X ≥ x_c). A canary with errors against an error-free stable (kayenta #426) is
    judged on its counts instead of passing as "no difference in medians".

    The effect is the rate difference x_c/n_c − x_s/n_s; its interval comes from the
    Clopper–Pearson interval (π_lo, π_hi) of the binomial share, mapped to a rate ratio
    ρ = π/(1−π)·n_s/n_c and then to a difference ρ·r_s − r_s with r_s the stable rate.
    """
    for name, value in (("errors_canary", errors_canary), ("errors_stable", errors_stable)):
        if value < 0:
            raise ValueError(f"{name} must be ≥ 0, got {value}")
    if n_canary <= 0 or n_stable <= 0:
        raise ValueError("both sides need at least one request")
    if errors_canary > n_canary or errors_stable > n_stable:
        raise ValueError("more errors than requests")
    k = errors_canary + errors_stable
    share = n_canary / (n_canary + n_stable)
    p_value = float(sps.binom.sf(errors_canary - 1, k, share)) if k > 0 else 1.0
    rate_c = errors_canary / n_canary
    rate_s = errors_stable / n_stable
    lo = hi = math.nan
    ratio = math.nan
    if k > 0:
        a = 1.0 - conf_level
        pi_lo = (
            float(sps.beta.ppf(a / 2, errors_canary, k - errors_canary + 1))
            if errors_canary
            else 0.0
        )
        pi_hi = (
            float(sps.beta.ppf(1 - a / 2, errors_canary + 1, k - errors_canary))
            if errors_canary < k
            else 1.0
        )
        odds = n_stable / n_canary
        ratio_lo = pi_lo / (1 - pi_lo) * odds
        ratio_hi = pi_hi / (1 - pi_hi) * odds if pi_hi < 1 else math.inf
        ratio = rate_c / rate_s if rate_s > 0 else math.inf
        base = rate_s if rate_s > 0 else k / (n_canary + n_stable)
        lo, hi = base * ratio_lo - base, base * ratio_hi - base
    return TestResult(
        test="poisson_rate_exact",
        statistic=float(errors_canary),
        p_value=min(p_value, 1.0),
        effect=rate_c - rate_s,
        ci_low=lo,
        ci_high=hi,
        n_canary=n_canary,
        n_stable=n_stable,
        extra={"rate_canary": rate_c, "rate_stable": rate_s, "rate_ratio": ratio},
    )


# -- latency ----------------------------------------------------------------------------------


def _clean(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def mann_whitney_greater(canary: ArrayLike, stable: ArrayLike) -> tuple[float, float]:
    """U of the canary and the one-sided p that the canary tends to be larger.

    U = R_c − n_c(n_c+1)/2 with R_c the canary's rank sum (mid-ranks for ties);
    z = (U − n_c·n_s/2 − ½) / σ, σ² = n_c·n_s/12 · ((n+1) − Σ(t³−t)/(n(n−1)))
    (continuity and tie corrections, as scipy.stats.mannwhitneyu(method="asymptotic")).
    """
    x = _clean(canary, "canary")
    y = _clean(stable, "stable")
    m, n = x.size, y.size
    ranks = sps.rankdata(np.concatenate([x, y]))
    u = float(ranks[:m].sum() - m * (m + 1) / 2.0)
    total = m + n
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    tie = float(((counts.astype(np.float64) ** 3) - counts).sum())
    var = m * n / 12.0 * ((total + 1) - tie / (total * (total - 1)))
    if var <= 0:
        return u, 1.0
    z = (u - m * n / 2.0 - 0.5) / math.sqrt(var)
    return u, float(sps.norm.sf(z))


def _even_subsample(sorted_values: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    if sorted_values.size <= size:
        return sorted_values
    idx = np.round(np.linspace(0, sorted_values.size - 1, size)).astype(np.int64)
    return sorted_values[idx]


def hodges_lehmann(
    canary: ArrayLike, stable: ArrayLike, conf_level: float = 0.98
) -> tuple[float, float, float]:
    """The Hodges–Lehmann shift (canary − stable) and its distribution-free interval.

    Estimate: the median of the m·n differences x_i − y_j (Hodges & Lehmann 1963).
    Interval: the order statistics D_(k) and D_(mn−k+1) of those differences, with
    k = ⌊mn/2 − z_{1−a/2}·√(mn(m+n+1)/12)⌋ (Moses' normal-approximation form;
    Hollander, Wolfe & Chicken, *Nonparametric Statistical Methods*, 3rd ed., §4.3).
    """
    x = np.sort(_clean(canary, "canary"))
    y = np.sort(_clean(stable, "stable"))
    x = _even_subsample(x, HL_MAX_SAMPLE)
    y = _even_subsample(y, HL_MAX_SAMPLE)
    diffs = np.subtract.outer(x, y).ravel()
    m, n = x.size, y.size
    mn = m * n
    z = float(sps.norm.isf((1.0 - conf_level) / 2.0))
    k = math.floor(mn / 2.0 - z * math.sqrt(mn * (m + n + 1) / 12.0))
    mid = [(mn - 1) // 2, mn // 2]
    picks = sorted({*mid, *([k - 1, mn - k] if k >= 1 else [])})
    part = np.partition(diffs, picks)  # the order statistics needed, in O(mn)
    estimate = float((part[mid[0]] + part[mid[1]]) / 2.0)
    if k < 1:
        return estimate, -math.inf, math.inf
    return estimate, float(part[k - 1]), float(part[mn - k])


def latency_shift_test(
    canary: ArrayLike, stable: ArrayLike, conf_level: float = 0.98
) -> TestResult:
    """Mann–Whitney U (one-sided: canary slower) with the Hodges–Lehmann shift and its CI."""
    x = _clean(canary, "canary")
    y = _clean(stable, "stable")
    u, p = mann_whitney_greater(x, y)
    est, lo, hi = hodges_lehmann(x, y, conf_level)
    median_stable = float(np.median(y))
    return TestResult(
        test="mann_whitney_hodges_lehmann",
        statistic=u,
        p_value=p,
        effect=est,
        ci_low=lo,
        ci_high=hi,
        n_canary=int(x.size),
        n_stable=int(y.size),
        extra={"median_canary": float(np.median(x)), "median_stable": median_stable},
    )


def mean_difference_sf(
    values: ArrayLike, counts: ArrayLike, m: int, n: int, difference: float
) -> float:
    """P(X̄_m − Ȳ_n ≥ d): the upper tail of the difference between the means of ``m`` and ``n``
    independent draws from one discrete distribution (``values`` with weights ``counts``).

    This is the two-sample bootstrap null of a difference of means (its variance σ²(1/m + 1/n)
    is the permutation variance), computed without resampling by the Lugannani–Rice saddlepoint
    approximation, which holds its relative accuracy far into the tail however skewed the
    distribution (Lugannani & Rice 1980, Adv. Appl. Prob. 12:475–490; for resampling
    distributions Davison & Hinkley 1988, Biometrika 75:417–431). With K₀(u) = log Σ wᵢ·e^{u·vᵢ}
    the cumulant generating function of one draw, the difference has
    K(s) = m·K₀(s/m) + n·K₀(−s/n); ŝ solves K′(ŝ) = d, and with
    w = sign(ŝ)·√(2(ŝd − K(ŝ))), u = ŝ·√K″(ŝ):  P ≈ 1 − Φ(w) + φ(w)·(1/u − 1/w).

    Rare stalls (0.4 % of requests), 4 of them in a 200-request arm against 3 800 (a
    difference of means of 3.5/200 − 0.004 between lattice points):

    >>> p = mean_difference_sf([0.0, 1.0], [996, 4], 200, 3800, 3.5 / 200 - 0.004)
    >>> round(p, 4)  # exact (binomial convolution) 0.0089; the normal approximation 0.0016
    0.0106
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    w_all = np.asarray(counts, dtype=np.float64).ravel()
    keep = w_all > 0
    v, w_all = v[keep], w_all[keep]
    if m < 1 or n < 1 or v.size == 0:
        raise ValueError("need at least one draw on each side and one value")
    log_w = np.log(w_all / w_all.sum())
    weights = np.exp(log_w)
    mu = float((weights * v).sum())
    sd = math.sqrt(float((weights * (v - mu) ** 2).sum()))
    if sd == 0.0 or not math.isfinite(sd):
        return 1.0 if difference <= 0 else 0.0
    z = (v - mu) / sd  # standardised: the tilting stays inside float range
    d = difference / sd
    lo_v, hi_v = float(z.min()), float(z.max())
    if d <= lo_v - hi_v:  # every difference reaches it
        return 1.0
    if d >= hi_v - lo_v:  # only the extreme draw on both sides reaches it
        if d > hi_v - lo_v + 1e-12:
            return 0.0
        return float(np.exp(m * log_w[z.argmax()] + n * log_w[z.argmin()]))

    def tilted(u: float) -> tuple[float, float, float]:
        a = log_w + u * z
        top = float(a.max())
        e = np.exp(a - top)
        total = float(e.sum())
        mean = float((e * z).sum()) / total
        var = float((e * (z - mean) ** 2).sum()) / total
        return top + math.log(total), mean, var

    def moments(s: float) -> tuple[float, float, float]:
        k_c, mean_c, var_c = tilted(s / m)
        k_s, mean_s, var_s = tilted(-s / n)
        return m * k_c + n * k_s, mean_c - mean_s, var_c / m + var_s / n

    se = math.sqrt(1.0 / m + 1.0 / n)
    if abs(d) < 1e-6 * se:
        return 0.5
    # Newton on K'(s) = d, kept inside a bracket that is widened until it holds the root
    lo, hi = 0.0, 0.0
    step = d / se**2
    for _ in range(64):
        hi = 2 * step if hi == 0.0 else 2 * hi
        if (moments(hi)[1] - d) * step > 0:
            break
    else:  # d within float noise of an end of the range: the tail is nil, or everything
        return 0.0 if d > 0 else 1.0
    lo, hi = min(0.0, hi), max(0.0, hi)
    s = d / se**2
    s = s if lo < s < hi else (lo + hi) / 2
    for _ in range(200):
        k, k1, k2 = moments(s)
        if abs(k1 - d) <= 1e-12 * (1.0 + abs(d)):
            break
        if k1 < d:
            lo = s
        else:
            hi = s
        nxt = s - (k1 - d) / k2 if k2 > 0 else (lo + hi) / 2
        s = nxt if lo < nxt < hi else (lo + hi) / 2
    k, _, k2 = moments(s)
    r = math.copysign(math.sqrt(max(2.0 * (s * d - k), 0.0)), s)
    u = s * math.sqrt(k2)
    if abs(r) < 1e-8 or u == 0.0:
        return float(sps.norm.sf(d / se))
    p = float(sps.norm.sf(r) + sps.norm.pdf(r) * (1.0 / u - 1.0 / r))
    return min(max(p, 0.0), 1.0)


def spread_test(canary: ArrayLike, stable: ArrayLike) -> TestResult:
    """Brown–Forsythe's statistic, calibrated for unbalanced arms: is the canary's spread wider?

    With z = |v − median(arm)|, Brown–Forsythe (Brown & Forsythe 1974, JASA 69:364–367;
    scipy.stats.levene(center="median")) compares the arms' mean z. Its t (or F = t²)
    reference assumes the mean z of each arm is near normal; latency is skewed, so the mean z
    of a small arm is right-skewed, and with a 5 % canary against a 95 % stable arm the
    one-sided t test rejects far more often than its level (simulated A/A, lognormal σ 1.5,
    60 vs 1 140: 3.4 % at α = 1 %, 1.4 % at 0.1 %; one stall among a small arm's requests
    alone gives t ≈ √(n_stable / n_canary)). Here the same difference of means,
    d = z̄_canary − z̄_stable, is referred to its bootstrap distribution under H0 (both arms'
    z drawn from their pooled values), by the saddlepoint approximation
    (:func:`mean_difference_sf`): skewness and rare stalls are in that distribution, and the
    level holds for small, unbalanced arms (the same simulation: 1.05 % and 0.035 %).

    ``statistic`` is Brown–Forsythe's F, ``extra["t"]`` its t (both as scipy computes them,
    for comparison); ``p_value`` is the one-sided saddlepoint p. The effect is the ratio of
    mean absolute deviations from the median, canary / stable.
    """
    x = _clean(canary, "canary")
    y = _clean(stable, "stable")
    zx = np.abs(x - np.median(x))
    zy = np.abs(y - np.median(y))
    m, n = zx.size, zy.size
    mx, my = float(zx.mean()), float(zy.mean())
    pooled = (float(((zx - mx) ** 2).sum()) + float(((zy - my) ** 2).sum())) / (m + n - 2)
    if pooled <= 0:
        t = math.inf if mx > my else (0.0 if mx == my else -math.inf)
    else:
        t = (mx - my) / math.sqrt(pooled * (1.0 / m + 1.0 / n))
    values, counts = np.unique(np.concatenate([zx, zy]), return_counts=True)
    # tied values (histogram bounds) put the canary's mean on a lattice of step gap / m: the
    # tail is taken from half a step below, as a continuity correction (Daniels 1987, §5)
    gap = float(np.diff(values).min()) if values.size > 1 else 0.0
    p = mean_difference_sf(values, counts, m, n, mx - my - gap / (2 * m))
    ratio = mx / my if my > 0 else (math.inf if mx > 0 else 1.0)
    return TestResult(
        test="brown_forsythe_saddlepoint",
        statistic=t * t if math.isfinite(t) else math.inf,
        p_value=p,
        effect=ratio,
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=m,
        n_stable=n,
        extra={"mad_canary": mx, "mad_stable": my, "t": t},
    )


# -- predictions ------------------------------------------------------------------------------


def ks_test(canary: ArrayLike, stable: ArrayLike) -> TestResult:
    """Two-sample Kolmogorov–Smirnov on numeric predictions (two-sided: any shift of shape).

    D = sup_v |F_c(v) − F_s(v)|; p from Smirnov's limit, P(D > d) with the exact one-sample
    distribution at n_e = round(m·n/(m+n)) (as scipy.stats.ks_2samp(method="asymp")).
    """
    x = np.sort(_clean(canary, "canary"))
    y = np.sort(_clean(stable, "stable"))
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / x.size
    cdf_y = np.searchsorted(y, grid, side="right") / y.size
    d = float(np.max(np.abs(cdf_x - cdf_y)))
    big, small = max(x.size, y.size), min(x.size, y.size)
    en = big * small / (big + small)
    p = float(np.clip(sps.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return TestResult(
        test="kolmogorov_smirnov",
        statistic=d,
        p_value=p,
        effect=d,
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=int(x.size),
        n_stable=int(y.size),
    )


def chi_square_test(counts_canary: Sequence[float], counts_stable: Sequence[float]) -> TestResult:
    """Chi-square test of homogeneity on class counts (canary vs stable), no continuity correction.

    X² = Σ (O − E)² / E over the 2×k table, E = row total · column total / n, df = k' − 1 with
    k' the classes seen at all (scipy.stats.chi2_contingency(correction=False)).
    Effect: Cramér's V = √(X² / n) for a 2-row table.
    """
    table = np.asarray([counts_canary, counts_stable], dtype=np.float64)
    if table.ndim != 2 or table.shape[1] < 1 or (table < 0).any():
        raise ValueError("counts must be two equally long lists of non-negative numbers")
    table = table[:, table.sum(axis=0) > 0]
    n_c, n_s = int(table[0].sum()), int(table[1].sum())
    if table.shape[1] < 2 or n_c == 0 or n_s == 0:
        return TestResult("chi_square", 0.0, 1.0, 0.0, math.nan, math.nan, n_c, n_s)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    x2 = float(((table - expected) ** 2 / expected).sum())
    df = table.shape[1] - 1
    p = float(sps.chi2.sf(x2, df))
    return TestResult(
        "chi_square",
        x2,
        p,
        math.sqrt(x2 / table.sum()),
        math.nan,
        math.nan,
        n_c,
        n_s,
        extra={"df": float(df)},
    )


# -- verdicts ---------------------------------------------------------------------------------


def verdict(
    metric: str,
    result: TestResult,
    *,
    alpha: float,
    effect_floor: float,
    min_samples: int,
    effect_from_ci: bool = False,
) -> MetricVerdict:
    """Turn a test into pass / fail / extend.

    extend: fewer than ``min_samples`` on either side (too little traffic to judge).
    fail:   p < alpha and the effect reaches the floor; with ``effect_from_ci`` the whole
            interval must lie at or above the floor (Kayenta's rule for shifts).
    pass:   otherwise — no evidence that the canary is worse at this look.
    """

    def out(outcome: Outcome, reason: str) -> MetricVerdict:
        return MetricVerdict(
            metric=metric,
            outcome=outcome,
            reason=reason,
            test=result.test,
            statistic=result.statistic,
            p_value=result.p_value,
            alpha=alpha,
            effect=result.effect,
            effect_floor=effect_floor,
            ci_low=result.ci_low,
            ci_high=result.ci_high,
            n_canary=result.n_canary,
            n_stable=result.n_stable,
        )

    if min(result.n_canary, result.n_stable) < min_samples:
        return out(
            "extend",
            f"too little traffic: {result.n_canary} canary / {result.n_stable} stable "
            f"samples, {min_samples} needed on each side",
        )
    effect_seen = result.ci_low if effect_from_ci else result.effect
    significant = result.p_value < alpha
    large = effect_seen >= effect_floor
    if significant and large:
        reason = (
            f"canary worse: p={result.p_value:.3g} < α={alpha:.3g} and effect "
            f"{effect_seen:.4g} ≥ floor {effect_floor:.4g}"
        )
        return out("fail", reason)
    if significant:
        reason = f"significant (p={result.p_value:.3g}) but effect {effect_seen:.4g} below floor"
    else:
        reason = f"no evidence of harm: p={result.p_value:.3g} ≥ α={alpha:.3g}"
    return out("pass", reason)


def combine(verdicts: Sequence[MetricVerdict]) -> Outcome:
    """One look's outcome: fail if any metric fails, else extend if any lacks data, else pass."""
    outcomes = {v.outcome for v in verdicts}
    if "fail" in outcomes:
        return "fail"
    if "extend" in outcomes:
        return "extend"
    return "pass"

"""Paired judge kernels: two versions answered the *same* inputs (a replayed request log).

Two independent arms compare distributions; paired answers compare each input's two answers,
which removes the variation between inputs and so sees far smaller changes on far fewer rows.
Each kernel returns the canary judge's :class:`~shipyard.stats.canary.TestResult`, so
:func:`~shipyard.stats.canary.verdict` turns it into pass / fail with the same rule (the test
rejects at the level spent **and** the effect reaches the policy's floor):

======================  ==========================================================  ==========
metric                  test                                                        effect
======================  ==========================================================  ==========
errors                  exact McNemar (discordant pairs, binomial at ½), one-sided  Δ rate
changed classes         exact binomial: changed share > floor, one-sided            share
changed numbers         Wilcoxon signed-rank on |Δ| − floor·σ_stable, one-sided     median |Δ|/σ
latency                 Wilcoxon signed-rank on Δ = candidate − stable, one-sided   median Δ, ms
======================  ==========================================================  ==========

For answers the question is not "did the distribution of answers move" (McNemar's and
Stuart–Maxwell's marginal homogeneity: a model that swaps classes symmetrically passes it) but
"does the candidate answer the same inputs differently more often than the floor allows", so
the changed share itself is tested against the floor. Wilcoxon signed-rank is
``scipy.stats.wilcoxon`` (normal approximation with the tie correction, zero differences
dropped: Wilcoxon 1945; Pratt 1959 for the variants).

No I/O, no clock: numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from shipyard.stats.canary import TestResult


def _clean(values: ArrayLike, name: str) -> NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds a value that is not a finite number")
    return x


def mcnemar_errors(candidate_only: int, stable_only: int, pairs: int) -> TestResult:
    """Does the candidate fail on more of the same inputs than the stable version?

    Only discordant pairs inform: ``b`` inputs only the candidate failed on, ``c`` only the
    stable one did. Under H0 (same error rate) each discordant pair is the candidate's with
    probability ½, so p = P(X ≥ b), X ~ Binomial(b + c, ½) (exact McNemar, one-sided; as
    ``scipy.stats.binomtest(b, b + c, 0.5, alternative="greater")``).
    Effect: (b − c) / pairs, the increase in error rate.

    >>> round(mcnemar_errors(8, 1, 1000).p_value, 6)
    0.019531
    """
    b, c, n = int(candidate_only), int(stable_only), int(pairs)
    if min(b, c) < 0 or b + c > n:
        raise ValueError(f"need 0 ≤ b, c and b + c ≤ pairs, got b={b}, c={c}, pairs={n}")
    p = float(sps.binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0
    return TestResult(
        test="mcnemar_exact",
        statistic=float(b),
        p_value=p,
        effect=(b - c) / n if n else 0.0,
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=n,
        n_stable=n,
        extra={"candidate_only": float(b), "stable_only": float(c)},
    )


def changed_share_test(
    changed: int, pairs: int, floor: float, confidence: float = 0.98
) -> TestResult:
    """Does the candidate change more than ``floor`` of the answers to the same inputs?

    H0: the share of inputs answered differently is ≤ floor; p = P(X ≥ k), X ~ Binomial(n,
    floor) (exact, one-sided; as ``scipy.stats.binomtest(k, n, floor, alternative="greater")``).
    With ``floor`` 0 any change rejects. Effect: k / n, with its Clopper–Pearson interval.

    >>> r = changed_share_test(30, 100, 0.10)
    >>> r.effect, r.p_value < 1e-6
    (0.3, True)
    """
    k, n = int(changed), int(pairs)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ changed ≤ pairs, got {k} of {n}")
    if not 0 <= floor < 1:
        raise ValueError(f"the floor is a share in [0, 1), got {floor}")
    if n == 0:
        return TestResult("changed_answers", 0.0, 1.0, 0.0, math.nan, math.nan, 0, 0)
    p = 1.0 if k == 0 else float(sps.binom.sf(k - 1, n, floor))
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(1.0 - tail, k + 1, n - k))
    return TestResult(
        test="changed_answers",
        statistic=float(k),
        p_value=p,
        effect=k / n,
        ci_low=low,
        ci_high=high,
        n_canary=n,
        n_stable=n,
        extra={"changed": float(k)},
    )


def _signed_rank_greater(d: NDArray[np.float64]) -> tuple[float, float]:
    """(W⁺, one-sided p) of the signed-rank test that d is shifted above 0."""
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0, 1.0
    res = sps.wilcoxon(nonzero, alternative="greater", correction=False, method="approx")
    return float(res.statistic), float(res.pvalue)


def _paired(
    candidate: ArrayLike, stable: ArrayLike, what: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = _clean(candidate, "candidate")
    y = _clean(stable, "stable")
    if x.size != y.size:
        raise ValueError(f"paired {what}: {x.size} candidate values for {y.size} stable ones")
    return x, y


def changed_numbers_test(candidate: ArrayLike, stable: ArrayLike, floor: float) -> TestResult:
    """Do a regressor's answers to the same inputs move by more than ``floor`` × the stable
    answers' standard deviation, typically?

    Paired differences Δᵢ = candidateᵢ − stableᵢ; the signed-rank test (one-sided) that the
    median of |Δᵢ| − floor·σ is above 0, where σ is the standard deviation of the stable
    answers (1 if they are constant). A uniform shift and a scatter both move |Δ|; an identical
    model gives Δ = 0 and p = 1. Effect: median |Δ| / σ.
    """
    x, y = _paired(candidate, stable, "answers")
    if x.size == 0:
        return TestResult("paired_abs_change", 0.0, 1.0, 0.0, math.nan, math.nan, 0, 0)
    sigma = float(y.std()) or 1.0
    change = np.abs(x - y) / sigma
    w, p = _signed_rank_greater(change - floor)
    return TestResult(
        test="paired_abs_change",
        statistic=w,
        p_value=p,
        effect=float(np.median(change)),
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=int(x.size),
        n_stable=int(y.size),
        extra={"sigma_stable": sigma, "mean_abs_change": float(change.mean())},
    )


def paired_latency_test(candidate_ms: ArrayLike, stable_ms: ArrayLike) -> TestResult:
    """Is the candidate slower on the same inputs, timed side by side?

    Δᵢ = candidateᵢ − stableᵢ (ms); the signed-rank test (one-sided, greater) on Δ. Effect: the
    median Δ in ms (compared by the caller with a share of the stable median, as the canary's
    latency floor is).
    """
    x, y = _paired(candidate_ms, stable_ms, "timings")
    if x.size == 0:
        return TestResult("paired_signed_rank", 0.0, 1.0, 0.0, math.nan, math.nan, 0, 0)
    d = x - y
    w, p = _signed_rank_greater(d)
    return TestResult(
        test="paired_signed_rank",
        statistic=w,
        p_value=p,
        effect=float(np.median(d)),
        ci_low=math.nan,
        ci_high=math.nan,
        n_canary=int(x.size),
        n_stable=int(y.size),
        extra={"median_stable": float(np.median(y)), "median_candidate": float(np.median(x))},
    )

"""Compare a current profile with a reference profile: which columns drifted, and by how much.

The verdict for one column needs two things (defaults in :class:`DriftConfig`):

1. **Significance.** A chi-square test of homogeneity on the 2×K table of exact counts over the
   column's bins *including the null bucket* (missing, wrong-type and ±inf values) and, for
   categories, every value seen on either side plus an "other" bucket — so nulls and unseen
   categories count, never vanish. p-values are adjusted across columns with
   Benjamini–Hochberg (1995) by default, or Holm (1979).
2. **An effect above a floor.** At production sample sizes every test is significant for
   trivial changes; a column only drifts when the change also matters: normalised
   Wasserstein-1 ≥ 0.05 σ for numbers, Jensen–Shannon distance (base 2) ≥ 0.1 for categories,
   or a change of the invalid share of ≥ 5 percentage points for either.

Every other measure (PSI, KS D, Hellinger, L∞) is reported in ``ColumnDrift.measures``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from shipyard.errors import InvalidInput
from shipyard.stats import divergence
from shipyard.stats.profile import ColumnProfile, DatasetProfile

Correction = Literal["bh", "holm", "none"]
QUANTILE_RANKS = (np.arange(1000) + 0.5) / 1000
SHORT_NAMES = {"wasserstein_normalised": "W1/σ", "jensen_shannon": "JS₂"}
"""How reports name the effect sizes: W1/σ_ref (numbers), Jensen–Shannon distance base 2."""


@dataclass(frozen=True)
class DriftConfig:
    """How :func:`compare` decides. The defaults and why are in docs/statistics.md."""

    alpha: float = 0.05
    correction: Correction = "bh"
    wasserstein_floor: float = 0.05
    jensen_shannon_floor: float = 0.1
    missing_share_floor: float = 0.05
    dataset_drift_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("bh", "holm", "none"):
            raise InvalidInput(f"correction must be bh, holm or none, got {self.correction!r}")
        for name in ("wasserstein_floor", "jensen_shannon_floor", "missing_share_floor"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be ≥ 0")
        if not 0 < self.dataset_drift_share <= 1:
            raise InvalidInput("dataset_drift_share must be in (0, 1]")


@dataclass
class ColumnDrift:
    """One column's verdict and its evidence.

    ``test``/``statistic``/``p_value`` are the significance test (``p_value`` adjusted across
    columns; the raw one is in ``measures``); ``effect`` is the effect size compared with
    ``threshold``; ``missing_ref``/``missing_cur`` are the invalid shares on each side.
    """

    column: str
    kind: str
    test: str
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    threshold: float
    drifted: bool
    missing_ref: float
    missing_cur: float
    reason: str
    measures: dict[str, float] = field(default_factory=dict)
    unseen_categories: dict[str, int] = field(default_factory=dict)
    bins: list[str] = field(default_factory=list)
    reference_counts: list[int] = field(default_factory=list)
    current_counts: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass
class DriftReport:
    """The data set's verdict: ``drifted`` when ``share_drifted`` ≥ the configured share."""

    columns: list[ColumnDrift]
    share_drifted: float
    drifted: bool
    config: DriftConfig
    new_columns: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def drifted_summary(self, top: int = 10) -> str:
        """``"24 of 64 column(s) drifted: pixel_2_3 (W1/σ 0.68), … and 14 more"``, strongest
        first; ``"no drift in 64 column(s)"`` when none did."""
        drifted = sorted((c for c in self.columns if c.drifted), key=lambda c: -c.effect)
        if not drifted:
            return f"no drift in {len(self.columns)} column(s)"
        named = ", ".join(
            f"{c.column} ({SHORT_NAMES.get(c.effect_name, c.effect_name)} {c.effect:.2f})"
            for c in drifted[:top]
        )
        more = f" and {len(drifted) - top} more" if len(drifted) > top else ""
        return f"{len(drifted)} of {len(self.columns)} column(s) drifted: {named}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "share_drifted": self.share_drifted,
            "drifted_columns": self.drifted_columns,
            "new_columns": self.new_columns,
            "config": asdict(self.config),
            "columns": [c.to_json() for c in self.columns],
        }


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def adjust_p_values(p_values: list[float], method: Correction) -> list[float]:
    """Adjust p-values for testing many columns at once.

    ``bh``: Benjamini & Hochberg (1995), JRSS-B 57(1) — controls the false discovery rate;
    p̃₍ᵢ₎ = min over j ≥ i of m·p₍ⱼ₎/j. ``holm``: Holm (1979), Scand. J. Stat. 6(2) — controls the
    family-wise error; p̃₍ᵢ₎ = max over j ≤ i of (m − j + 1)·p₍ⱼ₎. Both match
    ``scipy.stats.false_discovery_control`` / statsmodels ``multipletests``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0 or method == "none":
        return p.tolist()
    order = np.argsort(p)
    ranked = p[order]
    if method == "bh":
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()


def compare(
    reference: DatasetProfile, current: DatasetProfile, config: DriftConfig | None = None
) -> DriftReport:
    """Test every reference column for drift in the current profile."""
    config = config or DriftConfig()
    if reference.rows == 0 or not reference.columns:
        raise InvalidInput("the reference profile is empty: nothing to compare against")
    if current.rows == 0:
        raise InvalidInput("the current profile has no rows")
    results: list[ColumnDrift] = []
    for name, ref in reference.columns.items():
        cur = current.columns.get(name)
        if cur is None or cur.count == 0:
            results.append(_absent(ref, current.rows))
        elif ref.kind == "numeric" and cur.kind == "numeric":
            results.append(_numeric(ref, cur, config))
        else:
            results.append(_categorical(ref, cur, config))
    tested = [r for r in results if r.test != "presence"]
    for r, p in zip(
        tested, adjust_p_values([r.p_value for r in tested], config.correction), strict=True
    ):
        r.p_value = p
        significant = p < config.alpha
        large = r.effect >= r.threshold
        missing_moved = abs(r.missing_cur - r.missing_ref) >= config.missing_share_floor
        r.drifted = significant and (large or missing_moved)
        why = _reason(r, significant, large, missing_moved, config)
        r.reason = f"{why}; {r.reason}" if r.reason else why
    share = sum(r.drifted for r in results) / len(results) if results else 0.0
    new = [n for n in current.columns if n not in reference.columns]
    return DriftReport(
        results, share, share >= config.dataset_drift_share and share > 0, config, new
    )


def _reason(
    r: ColumnDrift, significant: bool, large: bool, missing_moved: bool, config: DriftConfig
) -> str:
    parts = [f"p={r.p_value:.3g} {'<' if significant else '≥'} α={config.alpha:g}"]
    parts.append(f"{r.effect_name}={r.effect:.3g} {'≥' if large else '<'} {r.threshold:g}")
    if missing_moved:
        parts.append(f"invalid share {r.missing_ref:.1%} → {r.missing_cur:.1%}")
    if r.unseen_categories:
        parts.append(f"{sum(r.unseen_categories.values())} rows of unseen categories")
    return "; ".join(parts)


def _absent(ref: ColumnProfile, rows: int) -> ColumnDrift:
    return ColumnDrift(
        column=ref.name,
        kind=ref.kind,
        test="presence",
        statistic=math.nan,
        p_value=0.0,
        effect=1.0,
        effect_name="missing column",
        threshold=0.0,
        drifted=True,
        missing_ref=ref.missing_share,
        missing_cur=1.0,
        reason=f"column missing from the current data ({rows} rows)",
    )


def _measures(r: np.ndarray, c: np.ndarray) -> dict[str, float]:
    chi = divergence.chi_square(r, c)
    return {
        "chi2": chi.statistic,
        "chi2_p": chi.p_value,
        "psi": divergence.psi(r, c),
        "jensen_shannon": divergence.jensen_shannon(r, c, base=2),
        "hellinger": divergence.hellinger(r, c),
        "l_infinity": divergence.l_infinity(r, c),
    }


def _numeric(ref: ColumnProfile, cur: ColumnProfile, config: DriftConfig) -> ColumnDrift:
    edges = ref.edges or []
    ref_hist = np.asarray(ref.histogram, dtype=np.float64)
    if cur.edges == ref.edges:
        cur_hist = np.asarray(cur.histogram, dtype=np.float64)
        note = ""
    else:
        cur_hist = _rebin(cur, edges)
        note = "current rebinned from its sketch"
    r = np.append(ref_hist, ref.invalid)
    c = np.append(cur_hist, cur.invalid)
    m = _measures(r, c) if r.sum() and c.sum() else {"chi2": 0.0, "chi2_p": 1.0}
    effect = 0.0
    if ref.valid and cur.valid:
        m["ks_d"] = divergence.ks_binned(ref_hist, cur_hist).statistic
        if note:  # no exact bin sums on the reference's edges: fall back on the sketches
            w = divergence.wasserstein_from_quantiles(
                ref.quantiles(QUANTILE_RANKS), cur.quantiles(QUANTILE_RANKS)
            )
        else:
            w = _binned_wasserstein(ref, cur)
        effect = w / max(ref.std, 0.001)
        m["wasserstein_normalised"] = effect
        m["mean_ref"], m["mean_cur"] = ref.mean, cur.mean
    bins = [f"< {edges[0]:.4g}"] if edges else ["all"]
    bins += [f"[{a:.4g}, {b:.4g})" for a, b in itertools.pairwise(edges)]
    bins += [f"≥ {edges[-1]:.4g}"] if edges else []
    return ColumnDrift(
        column=ref.name,
        kind="numeric",
        test="chi2",
        statistic=m["chi2"],
        p_value=m["chi2_p"],
        effect=effect,
        effect_name="wasserstein_normalised",
        threshold=config.wasserstein_floor,
        drifted=False,
        missing_ref=ref.missing_share,
        missing_cur=cur.missing_share,
        reason=note,
        measures=m,
        bins=[*bins, "null/invalid"],
        reference_counts=[int(v) for v in r],
        current_counts=[int(v) for v in c],
    )


def _binned_wasserstein(ref: ColumnProfile, cur: ColumnProfile) -> float:
    # one atom per non-empty bin at the bin's mean: deterministic and exact under merge,
    # unlike a quantile sketch whose compactions are random
    def atoms(col: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
        counts = np.asarray(col.histogram, dtype=np.float64)
        keep = counts > 0
        return np.asarray(col.bin_sums)[keep] / counts[keep], counts[keep]

    (rv, rw), (cv, cw) = atoms(ref), atoms(cur)
    return divergence.wasserstein_weighted(rv, rw, cv, cw)


def _rebin(cur: ColumnProfile, edges: list[float]) -> np.ndarray:
    if not cur.valid:
        return np.zeros(len(edges) + 1)
    if not edges:
        return np.array([float(cur.valid)])
    cdf = np.asarray(cur.sketch.get_cdf(edges, inclusive=False), dtype=np.float64)
    return np.round(np.diff(np.concatenate([[0.0], cdf])) * cur.valid)


def _categorical(ref: ColumnProfile, cur: ColumnProfile, config: DriftConfig) -> ColumnDrift:
    ref_f, cur_f = _as_frequencies(ref), _as_frequencies(cur)
    values = sorted(set(ref_f) | set(cur_f), key=lambda v: -(ref_f.get(v, 0) + cur_f.get(v, 0)))
    unseen = {v: cur_f[v] for v in values if v not in ref_f and not ref.capped}
    r = np.array([ref_f.get(v, 0) for v in values] + [ref.other, ref.invalid], dtype=np.float64)
    c = np.array([cur_f.get(v, 0) for v in values] + [cur.other, cur.invalid], dtype=np.float64)
    m = _measures(r, c)
    return ColumnDrift(
        column=ref.name,
        kind="categorical",
        test="chi2",
        statistic=m["chi2"],
        p_value=m["chi2_p"],
        effect=m["jensen_shannon"],
        effect_name="jensen_shannon",
        threshold=config.jensen_shannon_floor,
        drifted=False,
        missing_ref=ref.missing_share,
        missing_cur=cur.missing_share,
        reason="",
        measures=m,
        unseen_categories=dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:20]),
        bins=[*values, "(other)", "null/invalid"],
        reference_counts=[int(v) for v in r],
        current_counts=[int(v) for v in c],
    )


def _as_frequencies(col: ColumnProfile) -> dict[str, int]:
    if col.kind == "categorical":
        return col.frequencies
    # a numeric column compared as categories (kinds differ): one bin per histogram bin
    return {f"bin{i}": n for i, n in enumerate(col.histogram)}

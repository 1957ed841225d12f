"""Statistics kernels: profiles, drift tests, schemas and the canary judge. Pure: no I/O, no
clock, no store. (The canary judge's own ``TestResult`` stays in :mod:`shipyard.stats.canary`:
the name here is the drift tests'.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.stats.attribution import explained_change, robust_effect
    from shipyard.stats.canary import (
        MetricVerdict,
        alpha_at_look,
        alpha_spent,
        chi_square_test,
        combine,
        ks_test,
        latency_shift_test,
        rate_test,
        spread_test,
        staged_alpha,
        verdict,
    )
    from shipyard.stats.divergence import (
        TestResult,
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
    from shipyard.stats.drift import (
        SHORT_NAMES,
        ColumnDrift,
        DriftConfig,
        DriftReport,
        adjust_p_values,
        compare,
    )
    from shipyard.stats.estimation import DirectLossEstimator, realised_loss
    from shipyard.stats.multivariate import MultivariateResult, ReconstructionDrift, mmd_test
    from shipyard.stats.performance import cbpe, expected_calibration_error, histogram_quantile
    from shipyard.stats.profile import ColumnProfile, DatasetProfile
    from shipyard.stats.schema import Anomaly, ColumnSchema, Schema, infer_schema, validate

_MODULES = {
    "attribution": ("explained_change", "robust_effect"),
    "canary": (
        "MetricVerdict",
        "alpha_at_look",
        "alpha_spent",
        "chi_square_test",
        "combine",
        "ks_test",
        "latency_shift_test",
        "rate_test",
        "spread_test",
        "staged_alpha",
        "verdict",
    ),
    "divergence": (
        "TestResult",
        "chi_square",
        "chi_square_goodness_of_fit",
        "hellinger",
        "jensen_shannon",
        "ks_2samp",
        "ks_binned",
        "l_infinity",
        "psi",
        "wasserstein",
        "wasserstein_normalised",
        "wasserstein_weighted",
    ),
    "drift": (
        "SHORT_NAMES",
        "ColumnDrift",
        "DriftConfig",
        "DriftReport",
        "adjust_p_values",
        "compare",
    ),
    "estimation": ("DirectLossEstimator", "realised_loss"),
    "multivariate": ("MultivariateResult", "ReconstructionDrift", "mmd_test"),
    "performance": ("cbpe", "expected_calibration_error", "histogram_quantile"),
    "profile": ("ColumnProfile", "DatasetProfile"),
    "schema": ("Anomaly", "ColumnSchema", "Schema", "infer_schema", "validate"),
}
__getattr__, __dir__ = lazy_exports(__name__, _MODULES)

__all__ = [
    "SHORT_NAMES",
    "Anomaly",
    "ColumnDrift",
    "ColumnProfile",
    "ColumnSchema",
    "DatasetProfile",
    "DirectLossEstimator",
    "DriftConfig",
    "DriftReport",
    "MetricVerdict",
    "MultivariateResult",
    "ReconstructionDrift",
    "Schema",
    "TestResult",
    "adjust_p_values",
    "alpha_at_look",
    "alpha_spent",
    "cbpe",
    "chi_square",
    "chi_square_goodness_of_fit",
    "chi_square_test",
    "combine",
    "compare",
    "expected_calibration_error",
    "explained_change",
    "hellinger",
    "histogram_quantile",
    "infer_schema",
    "jensen_shannon",
    "ks_2samp",
    "ks_binned",
    "ks_test",
    "l_infinity",
    "latency_shift_test",
    "mmd_test",
    "psi",
    "rate_test",
    "realised_loss",
    "robust_effect",
    "spread_test",
    "staged_alpha",
    "validate",
    "verdict",
    "wasserstein",
    "wasserstein_normalised",
    "wasserstein_weighted",
]

"""Statistics kernels: profiles, drift tests and schemas. Pure: no I/O, no clock, no store."""

from __future__ import annotations

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
from shipyard.stats.drift import ColumnDrift, DriftConfig, DriftReport, adjust_p_values, compare
from shipyard.stats.profile import ColumnProfile, DatasetProfile
from shipyard.stats.schema import Anomaly, ColumnSchema, Schema, infer_schema, validate

__all__ = [
    "Anomaly",
    "ColumnDrift",
    "ColumnProfile",
    "ColumnSchema",
    "DatasetProfile",
    "DriftConfig",
    "DriftReport",
    "Schema",
    "TestResult",
    "adjust_p_values",
    "chi_square",
    "chi_square_goodness_of_fit",
    "compare",
    "hellinger",
    "infer_schema",
    "jensen_shannon",
    "ks_2samp",
    "ks_binned",
    "l_infinity",
    "psi",
    "validate",
    "wasserstein",
    "wasserstein_normalised",
    "wasserstein_weighted",
]

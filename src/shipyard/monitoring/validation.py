"""The monitor of validation pipelines (DESIGN.md's table, "validation"): drift of the test set
against the training set.

A model validated on a test set that no longer looks like its training data is validated on
something else: the accuracy it reports says little about either. The test set is the current
data set; the training set (published as ``role="reference"``, usually by the data pipeline
that split them) is the reference. Every column is compared, the label included, because a
test set whose class balance moved changes the meaning of accuracy as much as moved features.
"""

from __future__ import annotations

from shipyard.checks import Check
from shipyard.monitoring.config import MonitorSpec
from shipyard.monitoring.data import drift_check
from shipyard.stats import DatasetProfile


def drift_of_test_set(
    spec: MonitorSpec,
    pipeline: str,
    dataset: str,
    reference: DatasetProfile,
    current: DatasetProfile,
) -> Check:
    """Drift of every column of the test set (current) against the training set (reference)."""
    return drift_check(
        "test_set_drift",
        spec,
        pipeline,
        dataset,
        reference,
        current,
        list(reference.columns),
        "the test set",
    )

"""A verdict: one type for every check, of a pipeline, a data set or a served model (version).

A :class:`Check` names its monitor, its status (:class:`~shipyard.statuses.CheckStatus`), a
one-line summary, the subject it judged (``labels``, most general first: ``{"pipeline",
"dataset"}`` or ``{"model", "version"}``), the evidence behind it and the metric points it
writes. Monitoring records each one as a ``Finding`` row plus ``MetricPoint`` rows
(:func:`shipyard.monitoring.findings.add_checks`); deploy's validation gate judges each of its
rules as one, and the staging smoke check answers with one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.statuses import CheckStatus

Metric = tuple[str, dict[str, str], float]
"""One metric point a check writes: (name, labels, value)."""


@dataclass(frozen=True)
class Check:
    """One monitor's verdict on one subject, with its evidence and metric points."""

    monitor: str
    status: CheckStatus
    summary: str
    labels: Mapping[str, Any]
    """The subject, most general first; the finding's labels."""
    run_id: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    metrics: Sequence[Metric] = ()

    @classmethod
    def of_pipeline(
        cls,
        monitor: str,
        pipeline: str,
        status: CheckStatus,
        summary: str,
        dataset: str | None = None,
        run_id: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        metrics: Sequence[Metric] = (),
    ) -> Check:
        """A verdict on a pipeline's run (no ``dataset``) or on one data set it published."""
        labels = (
            {"pipeline": pipeline}
            if dataset is None
            else {"pipeline": pipeline, "dataset": dataset}
        )
        return cls(monitor, status, summary, labels, run_id, evidence or {}, tuple(metrics))

    @classmethod
    def of_model(
        cls,
        monitor: str,
        model: str,
        version: int | None,
        status: CheckStatus,
        summary: str,
        evidence: Mapping[str, Any] | None = None,
        metrics: Sequence[Metric] = (),
    ) -> Check:
        """A verdict on a served model's version, or on the model (``version`` None)."""
        labels = {"model": model, "version": version}
        return cls(monitor, status, summary, labels, None, evidence or {}, tuple(metrics))

    @property
    def subject(self) -> str:
        """``pipeline``, ``pipeline/dataset``, ``model`` or ``model/version``: pipeline names
        cannot hold ``/``, so the last verdicts of one are one prefix query."""
        return "/".join(str(v) for v in self.labels.values() if v is not None)

    @property
    def pipeline(self) -> str | None:
        return self.labels.get("pipeline")

    @property
    def dataset(self) -> str | None:
        return self.labels.get("dataset")

    @property
    def model(self) -> str | None:
        return self.labels.get("model")

    @property
    def version(self) -> int | None:
        return self.labels.get("version")

"""What every serving check shares: the settings, and reading the windows
the model servers flushed (through :mod:`shipyard.serving.records`, whose interval convention,
``(since, until]`` by a window's end, every check keeps)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput
from shipyard.registry import Registry, VersionInfo
from shipyard.serving import records
from shipyard.serving.records import FlushedWindow, LabelledPrediction
from shipyard.stats import DatasetProfile, DriftConfig

if TYPE_CHECKING:
    from shipyard.store import Store

log = logging.getLogger("shipyard.monitoring")

LOWER_IS_BETTER = ("mae", "rmse")
QUALITY_DROP = "shipyard_model_quality_drop"
QUOTA_USED_FRACTION = "shipyard_serving_quota_used_fraction"


@dataclass(frozen=True)
class ServingMonitorConfig:
    period_s: float = 300.0
    """How far back "recent" reaches."""
    baseline_windows: int = 5
    """How many of a version's first windows form the baseline for prediction drift."""
    max_data_error_share: float = 0.01
    p99_budget_s: float = 0.1
    min_rows: int = 30
    """Fewer rows than this and a statistical check answers "not enough data" (status ok)."""
    quality_tolerance: float = 0.05
    """An alert when a quality metric falls this far below the one registered with the model."""
    max_calibration_error: float = 0.1
    probe_timeout_s: float = 2.0
    traffic_history_s: float = 86400.0
    """Requests in this span before the recent period make traffic *expected* now."""
    max_quota_fraction: float = 0.9
    """A warning when a server uses more than this share of a resource its lease grants."""
    drift: DriftConfig = field(default_factory=DriftConfig)
    max_logged_rows: int = 10_000
    """Rows of the request log read per check (the newest files first)."""
    max_loss_ratio: float = 1.2
    """Estimated (or realised) loss over the reference's that alerts, as the data pipelines'
    ``performance_estimation`` monitor's ``max_ratio``."""
    loss_tolerance: float = 0.2
    """Relative gap between the estimated and the realised loss that marks the estimate
    unreliable."""
    multivariate_max_columns: int = 50
    """Multivariate drift is judged for versions with at most this many inputs (costs:
    docs/statistics.md)."""
    variance_kept: float = 0.65
    mmd_sample_rows: int = 500
    mmd_permutations: int = 200
    mmd_alpha: float = 0.01


class ServingReader:
    """Reads what the model servers flushed for a model: its windows, merged profiles."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock = SYSTEM_CLOCK,
        config: ServingMonitorConfig | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.config = config or ServingMonitorConfig()

    def _windows(self, model: str, version: int | None, since: float) -> list[FlushedWindow]:
        """The windows that ended after ``since``, oldest first."""
        with self.store.session() as s:
            return records.windows(s, model, version, since)

    def _first_windows(self, model: str, version: int, n: int) -> list[FlushedWindow]:
        with self.store.session() as s:
            return records.first_windows(s, model, version, n)

    @staticmethod
    def _merged(profiles: list[dict[str, Any] | None]) -> tuple[DatasetProfile | None, int]:
        merged, skipped = None, 0
        for p in profiles:
            if not p:
                continue
            try:
                prof = DatasetProfile.from_json(p)
                merged = prof if merged is None else merged.merge(prof)
            except InvalidInput:
                skipped += 1  # binned on other edges (a version without a reference profile)
        return merged, skipped

    def _joined(self, info: VersionInfo) -> list[LabelledPrediction]:
        """The recent period's predictions whose late labels arrived."""
        with self.store.session() as s:
            return records.labelled_predictions(s, info.model, info.version, self._since())

    def _since(self) -> float:
        return self.clock.time() - self.config.period_s

"""Which monitors a pipeline gets, and how each is set: its kind's defaults, changed in its
definition.

DESIGN.md's table gives each pipeline kind its monitors; ``Pipeline(..., monitors={...})``
changes one (``{"feature_drift": {"wasserstein_floor": 0.1}}``), switches one off
(``{"label_drift": False}``) or switches on a monitor its kind does not get by default
(``{"data_problems": True}`` on a validation pipeline).

The settings are part of the pipeline definition language, read by three wings: the DSL
validates ``monitors=`` with it at definition time, the run keeps the resolved settings it was
created with (``runs.monitors``), and monitoring judges by them. So it sits in the base (it
imports nothing heavy and no service; ``shipyard.monitoring.config`` re-exports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import PipelineDefinitionError

if TYPE_CHECKING:
    from shipyard.stats import DriftConfig

DRIFT_OPTIONS = {
    "alpha": float,
    "correction": str,
    "wasserstein_floor": float,
    "jensen_shannon_floor": float,
    "missing_share_floor": float,
    "dataset_drift_share": float,
}
"""Options of every drift monitor: the fields of :class:`shipyard.stats.DriftConfig`."""

OPTIONS: dict[str, dict[str, type]] = {
    "feature_drift": {**DRIFT_OPTIONS, "reference_pipeline": str},
    "label_drift": {**DRIFT_OPTIONS, "reference_pipeline": str},
    "test_set_drift": {**DRIFT_OPTIONS, "reference_pipeline": str},
    "data_problems": {"max_fraction": float, "reference_pipeline": str},
    "training_time": {"factor": float, "min_history": int, "history": int},
    "training_failures": {},
    "multivariate_drift": {
        "max_columns": int,
        "sample_rows": int,
        "permutations": int,
        "alpha": float,
        "variance_kept": float,
        "reference_pipeline": str,
    },
    "performance_estimation": {"max_ratio": float, "tolerance": float, "reference_pipeline": str},
    "run_progress": {"factor": float, "stall_s": float, "min_history": int, "history": int},
}
"""Every monitor of a pipeline and the options it takes."""

DEFAULTS: dict[str, dict[str, Any]] = {
    # 0.05 is the alerting wing's default DataQuality threshold.
    "data_problems": {"max_fraction": 0.05},
    # factor 2.0 matches the default TrainingSlow rule (ratio > 2); 5 runs before judging;
    # the history is the last 30 succeeded runs.
    "training_time": {"factor": 2.0, "min_history": 5, "history": 30},
    # on for data sets of at most 50 numeric features (costs: docs/statistics.md)
    "multivariate_drift": {
        "max_columns": 50,
        "sample_rows": 500,
        "permutations": 200,
        "alpha": 0.01,
        "variance_kept": 0.65,
    },
    # estimated loss over the reference's realised loss that alerts (as serving.quality's 1.2);
    # relative gap between estimate and realised loss that marks the estimate unreliable
    "performance_estimation": {"max_ratio": 1.2, "tolerance": 0.2},
    # a running run past its history's p95, or silent (no step log output) for 30 minutes
    "run_progress": {"factor": 1.0, "stall_s": 1800.0, "min_history": 5, "history": 30},
}

KIND_MONITORS: dict[str, tuple[str, ...]] = {
    "data": (
        "feature_drift",
        "label_drift",
        "data_problems",
        "multivariate_drift",
        "performance_estimation",
        "run_progress",
    ),
    "validation": ("test_set_drift", "run_progress"),
    "training": ("training_time", "training_failures", "run_progress"),
    "serving": (),  # served by shipyard.monitoring.serving.ServingMonitor
}

DATASET_MONITORS = (
    "feature_drift",
    "label_drift",
    "test_set_drift",
    "data_problems",
    "multivariate_drift",
    "performance_estimation",
)
RUN_MONITORS = ("training_time", "training_failures", "run_progress")


@dataclass(frozen=True)
class MonitorSpec:
    """One monitor of one pipeline: on or off, and its options (defaults filled in)."""

    name: str
    enabled: bool
    options: dict[str, Any] = field(default_factory=dict)

    def drift_config(self) -> DriftConfig:
        """The :class:`~shipyard.stats.DriftConfig` of a drift monitor."""
        from shipyard.stats import DriftConfig

        return DriftConfig(**{k: v for k, v in self.options.items() if k in DRIFT_OPTIONS})


@dataclass(frozen=True)
class MonitorSet:
    """The monitors of one pipeline, in a stable order (its kind's first)."""

    kind: str
    monitors: dict[str, MonitorSpec]

    def enabled(self, name: str) -> bool:
        spec = self.monitors.get(name)
        return spec is not None and spec.enabled

    def get(self, name: str) -> MonitorSpec:
        return self.monitors.get(name) or MonitorSpec(name, False, dict(DEFAULTS.get(name, {})))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "monitors": {
                n: {"enabled": s.enabled, "options": s.options} for n, s in self.monitors.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MonitorSet:
        return cls(
            str(data["kind"]),
            {
                n: MonitorSpec(n, bool(s["enabled"]), dict(s.get("options", {})))
                for n, s in dict(data["monitors"]).items()
            },
        )


def _option(monitor: str, key: str, value: Any, wanted: type) -> Any:
    if wanted is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if wanted is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if wanted is str and isinstance(value, str) and value:
        return value
    raise PipelineDefinitionError(
        f"monitor {monitor!r}: option {key!r} must be a {wanted.__name__}, got {value!r}"
    )


def resolve_monitors(kind: str, configured: Mapping[str, Any] | None = None) -> MonitorSet:
    """The monitors of a pipeline of ``kind`` with ``configured`` (``Pipeline(monitors=…)``).

    Values: ``False`` switches a monitor off, ``True`` on with its defaults, a mapping on with
    those options. :class:`PipelineDefinitionError` for an unknown monitor or option.

    >>> resolve_monitors("data", {"label_drift": False}).enabled("label_drift")
    False
    >>> resolve_monitors("training").get("training_time").options["factor"]
    2.0
    """
    if kind not in KIND_MONITORS:
        raise PipelineDefinitionError(f"unknown pipeline kind {kind!r}")
    configured = dict(configured or {})
    names = list(KIND_MONITORS[kind]) + [n for n in OPTIONS if n not in KIND_MONITORS[kind]]
    out: dict[str, MonitorSpec] = {}
    for name in configured:
        if name not in OPTIONS:
            raise PipelineDefinitionError(
                f"unknown monitor {name!r}; monitors: {', '.join(sorted(OPTIONS))}"
            )
    for name in names:
        options = dict(DEFAULTS.get(name, {}))
        enabled = name in KIND_MONITORS[kind]
        value = configured.get(name)
        if name in configured:
            if isinstance(value, bool):
                enabled = value
            elif isinstance(value, Mapping):
                enabled = True
                for key, given in value.items():
                    if key not in OPTIONS[name]:
                        known = ", ".join(sorted(OPTIONS[name])) or "none"
                        raise PipelineDefinitionError(
                            f"monitor {name!r} has no option {key!r} (options: {known})"
                        )
                    options[key] = _option(name, key, given, OPTIONS[name][key])
            else:
                raise PipelineDefinitionError(
                    f"monitor {name!r}: give True, False or a mapping of options, not {value!r}"
                )
        if enabled or name in configured:
            spec = MonitorSpec(name, enabled, options)
            drift = name in ("feature_drift", "label_drift", "test_set_drift")
            if drift and isinstance(value, Mapping):  # defaults are valid: skip the import
                try:
                    spec.drift_config()
                except ValueError as exc:
                    raise PipelineDefinitionError(f"monitor {name!r}: {exc}") from None
            out[name] = spec
    if out.get("training_time") and out["training_time"].options["factor"] <= 0:
        raise PipelineDefinitionError("monitor 'training_time': factor must be > 0")
    progress = out.get("run_progress")
    if progress and (progress.options["factor"] <= 0 or progress.options["stall_s"] <= 0):
        raise PipelineDefinitionError("monitor 'run_progress': factor and stall_s must be > 0")
    return MonitorSet(kind, out)


__all__ = [
    "DATASET_MONITORS",
    "KIND_MONITORS",
    "RUN_MONITORS",
    "MonitorSet",
    "MonitorSpec",
    "resolve_monitors",
]

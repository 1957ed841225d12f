"""Pipelines: the DSL, the runner, executors, run records and step logs.

The public names load on first use (:mod:`shipyard.lazy`): ``shipyard runs list`` imports
``shipyard.pipelines.records``, which must not pay for the DSL, the runner and quota admission
on the way through this package.

>>> from shipyard.pipelines import Pipeline, Resources, step   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.pipelines.context import latest_output
    from shipyard.pipelines.dsl import Pipeline, PipelineKind, Resources, Step, step
    from shipyard.pipelines.executor import (
        Admission,
        Enforcer,
        Executor,
        Grant,
        LocalAdmission,
        NoEnforcement,
        ProcessLimits,
        StepRequest,
        UsageSample,
    )
    from shipyard.pipelines.logs import log
    from shipyard.pipelines.runner import Runner, RunResult

_MODULES = {
    "context": ("latest_output",),
    "dsl": ("Pipeline", "PipelineKind", "Resources", "Step", "step"),
    "executor": (
        "Admission",
        "Enforcer",
        "Executor",
        "Grant",
        "LocalAdmission",
        "NoEnforcement",
        "ProcessLimits",
        "StepRequest",
        "UsageSample",
    ),
    "logs": ("log",),
    "runner": ("Runner", "RunResult"),
}
__getattr__, __dir__ = lazy_exports(__name__, _MODULES)

__all__ = [
    "Admission",
    "Enforcer",
    "Executor",
    "Grant",
    "LocalAdmission",
    "NoEnforcement",
    "Pipeline",
    "PipelineKind",
    "ProcessLimits",
    "Resources",
    "RunResult",
    "Runner",
    "Step",
    "StepRequest",
    "UsageSample",
    "latest_output",
    "log",
    "step",
]

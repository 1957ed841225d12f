"""Pipelines: the DSL, the runner, executors, run records and step logs.

>>> from shipyard.pipelines import Pipeline, Resources, step   # doctest: +SKIP
"""

from __future__ import annotations

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

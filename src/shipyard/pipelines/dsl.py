"""The pipeline DSL: ``@step``, :class:`Resources`, :class:`Pipeline` and the four kinds.

A pipeline is a build function. Calling it under :class:`Pipeline` does not run any step: each
call of a step records a node and returns :class:`OutputRef` placeholders, so the DAG comes from
how step outputs feed step inputs::

    @step(resources=Resources(cpu=2, memory="4Gi"), retries=1, timeout_s=600)
    def load(rows: int = 1000) -> pd.DataFrame: ...

    @step()
    def train(data: pd.DataFrame, C: float = 1.0) -> Model: ...

    pipeline = Pipeline("train-breast-cancer", kind="training", schedule="0 3 * * *")

    @pipeline
    def build(C: float = 1.0):
        return train(load(), C=C)

Outside a build, a step is its plain function (``load(rows=5)`` runs it), which keeps steps
testable on their own.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shipyard.errors import PipelineDefinitionError
from shipyard.monitor_config import MonitorSet, resolve_monitors
from shipyard.pipelines.graph import Graph, Node, OutputRef
from shipyard.quantities import parse_quantity


class PipelineKind(StrEnum):
    DATA = "data"
    TRAINING = "training"
    VALIDATION = "validation"
    SERVING = "serving"


def quantity(value: object, what: str) -> float:
    """``"4Gi"`` → 4294967296.0, ``"500m"`` → 0.5, ``2`` → 2.0 (Kubernetes' notation, one parser
    for the DSL and the quota pools: :func:`shipyard.quantities.parse_quantity`)."""
    return parse_quantity(value, what=what)


@dataclass(frozen=True)
class Resources:
    """What one step run needs: CPU cores, memory, GPUs and any named accelerator.

    ``memory`` takes bytes or a Kubernetes quantity (``"4Gi"``); ``cpu`` takes cores or
    millicores (``"500m"``).
    """

    cpu: float | str = 1
    memory: int | float | str = 0
    gpu: int = 0
    accelerators: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.amounts()  # validate now, at declaration

    @property
    def cpu_cores(self) -> float:
        return quantity(self.cpu, "resources.cpu")

    @property
    def memory_bytes(self) -> float:
        return quantity(self.memory, "resources.memory")

    def amounts(self) -> dict[str, float]:
        """``{resource: amount}``: cores for cpu, bytes for memory, devices otherwise."""
        out = {"cpu": self.cpu_cores, "memory": self.memory_bytes}
        out["gpu"] = quantity(self.gpu, "resources.gpu")
        for name, count in self.accelerators.items():
            out[name] = quantity(count, f"resources.accelerators[{name!r}]")
        return out


@dataclass
class _Build:
    graph: Graph


_BUILDING: ContextVar[_Build | None] = ContextVar("shipyard_pipeline_build", default=None)


class Step:
    """A function declared as a pipeline step; see :func:`step`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        resources: Resources,
        retries: int,
        timeout_s: float | None,
        outputs: tuple[str, ...],
        retry_backoff_s: float,
    ) -> None:
        if retries < 0:
            raise PipelineDefinitionError(f"step {fn.__name__!r}: retries must be ≥ 0")
        if timeout_s is not None and timeout_s <= 0:
            raise PipelineDefinitionError(f"step {fn.__name__!r}: timeout_s must be > 0")
        if not outputs or len(set(outputs)) != len(outputs):
            raise PipelineDefinitionError(f"step {fn.__name__!r}: outputs must be unique names")
        self.fn = fn
        self.name = fn.__name__
        self.resources = resources
        self.retries = retries
        self.timeout_s = timeout_s
        self.outputs = outputs
        self.retry_backoff_s = retry_backoff_s
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        build = _BUILDING.get()
        if build is None:
            return self.fn(*args, **kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(f"step {self.name!r} called wrongly: {exc}") from None
        node = build.graph.add(self, dict(bound.arguments))
        refs = tuple(OutputRef(node.name, out) for out in self.outputs)
        return refs[0] if len(refs) == 1 else refs


def step(
    *,
    resources: Resources | None = None,
    retries: int = 0,
    timeout_s: float | None = None,
    outputs: tuple[str, ...] = ("output",),
    retry_backoff_s: float = 1.0,
) -> Callable[[Callable[..., Any]], Step]:
    """Declare a step. Each run of it is one OS process.

    ``retries``: extra attempts after a failure, ``retry_backoff_s × 2^(attempt-1)`` apart.
    ``timeout_s``: an attempt running longer is killed (SIGTERM, then SIGKILL).
    ``outputs``: names of the artifacts the function returns (a tuple when more than one).
    """

    def wrap(fn: Callable[..., Any]) -> Step:
        return Step(fn, resources or Resources(), retries, timeout_s, outputs, retry_backoff_s)

    return wrap


class Pipeline:
    """A named pipeline of one kind; decorate its build function with the instance.

    ``monitors`` changes the monitors its kind gets by default (DESIGN.md's table):
    ``{"label_drift": False}`` switches one off, ``{"training_time": {"factor": 3}}`` sets one,
    ``{"data_problems": True}`` adds one; see :mod:`shipyard.monitor_config`. Each run keeps the
    resolved settings it was created with, which is what monitoring judges it by.
    ``pool`` names the quota pool its runs are admitted in when ``--pool`` does not name one
    (a scheduled pipeline's runs go there too).
    """

    def __init__(
        self,
        name: str,
        kind: str = "data",
        schedule: str | None = None,
        build: Callable[..., Any] | None = None,
        monitors: Mapping[str, Any] | None = None,
        pool: str | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name):
            raise PipelineDefinitionError(
                f"pipeline name {name!r}: use letters, digits, '.', '_' or '-'"
            )
        try:
            self.kind = PipelineKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in PipelineKind)
            raise PipelineDefinitionError(
                f"pipeline {name!r}: kind {kind!r} is not one of {known}"
            ) from None
        if schedule is not None:
            from croniter import croniter

            if not croniter.is_valid(schedule):
                raise PipelineDefinitionError(
                    f"pipeline {name!r}: schedule {schedule!r} is not a cron expression"
                )
        self.name = name
        self.schedule = schedule
        self.pool = pool
        self.build_fn = build
        try:
            self.monitors: MonitorSet = resolve_monitors(self.kind.value, monitors)
        except PipelineDefinitionError as exc:
            raise PipelineDefinitionError(f"pipeline {name!r}: {exc}") from None

    def __call__(self, fn: Callable[..., Any]) -> Pipeline:
        self.build_fn = fn
        return self

    def __repr__(self) -> str:
        return f"<pipeline {self.name} ({self.kind.value})>"

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        if self.build_fn is None:
            return {}
        return dict(inspect.signature(self.build_fn).parameters)

    def build(self, params: Mapping[str, Any] | None = None) -> Graph:
        """Trace the build function with ``params`` into a DAG of step calls."""
        if self.build_fn is None:
            raise PipelineDefinitionError(f"pipeline {self.name!r} has no build function")
        graph = Graph()
        token = _BUILDING.set(_Build(graph))
        try:
            self.build_fn(**dict(params or {}))
        finally:
            _BUILDING.reset(token)
        if not graph.nodes:
            raise PipelineDefinitionError(f"pipeline {self.name!r} calls no step")
        return graph


__all__ = ["Node", "OutputRef", "Pipeline", "PipelineKind", "Resources", "Step", "step"]

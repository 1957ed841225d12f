"""The hardware advisor: measured throughput here, a roofline model elsewhere, ranked.

**Measured.** Dense matrix multiplication (``numpy.matmul``, float32 and float64) at 1…n BLAS
threads (``threadpoolctl`` limits the pool): GFLOP/s = 2·n³ / seconds for an n×n product.
That is the figure for *this* machine, marked ``measured``.

**Modelled.** For each catalogue entry (``catalogue.yaml``; every figure with its source), the
roofline model (Williams, Waterman & Patterson, "Roofline: an insightful visual performance model
for multicore architectures", CACM 52(4), 2009): attainable FLOP/s = min(peak, arithmetic
intensity × memory bandwidth), so time ≥ max(FLOPs / peak, bytes / bandwidth). A roofline time is
a best case (real kernels reach a fraction of peak) and is marked ``modelled``.

**What the model's size asks for.** Inference in fp16: 2 bytes per parameter. Training with Adam
in mixed precision: 16 bytes per parameter (fp16 weights and gradients, fp32 master weights and
two moments: Rajbhandari et al., "ZeRO", SC 2020, §3.1), activations not counted.

Options are ranked by time and by cost per run (time × price per hour); an option whose memory
is smaller than the model asks for is listed as not fitting.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from threadpoolctl import threadpool_limits

from shipyard.errors import ConfigError, InvalidInput

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
INFERENCE_BYTES_PER_PARAM = 2.0
TRAINING_BYTES_PER_PARAM = 16.0


class CatalogueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str
    precision: str
    peak_flops: float
    fp32_flops: float | None = None
    memory_bandwidth: float
    memory: float
    price_per_hour: float | None = None
    sources: dict[str, str]


def load_catalogue(path: Path = CATALOGUE) -> list[CatalogueEntry]:
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = [CatalogueEntry.model_validate(e) for e in raw["entries"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"hardware catalogue {path} cannot be read: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"hardware catalogue {path}: {exc.errors()[0]['msg']}") from None
    for e in entries:
        if "compute" not in e.sources:
            raise ConfigError(f"hardware catalogue {path}: {e.name} names no source for compute")
    return entries


@dataclass(frozen=True)
class ThreadMeasurement:
    threads: int
    dtype: str
    gflops: float


def measure_cpu(
    max_threads: int | None = None, size: int = 512, seconds: float = 0.3
) -> list[ThreadMeasurement]:
    """GFLOP/s of an n×n matmul at 1…max_threads BLAS threads, float32 and float64."""
    max_threads = max_threads or len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    out: list[ThreadMeasurement] = []
    for dtype in ("float32", "float64"):
        a = rng.standard_normal((size, size)).astype(dtype)
        b = rng.standard_normal((size, size)).astype(dtype)
        for threads in range(1, max_threads + 1):
            with threadpool_limits(limits=threads, user_api="blas"):
                a @ b  # warm up
                reps, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds or reps < 3:
                    a @ b
                    reps += 1
                elapsed = time.perf_counter() - start
            out.append(ThreadMeasurement(threads, dtype, 2 * size**3 * reps / elapsed / 1e9))
    return out


@dataclass(frozen=True)
class Workload:
    """What one run of the step does: floating-point operations, bytes moved, model size."""

    flops: float
    bytes_moved: float = 0.0
    parameters: float = 0.0
    training: bool = True
    basis: str = "given"

    @property
    def memory_needed(self) -> float:
        per = TRAINING_BYTES_PER_PARAM if self.training else INFERENCE_BYTES_PER_PARAM
        return self.parameters * per


@dataclass(frozen=True)
class Option:
    name: str
    seconds: float
    cost_per_run: float | None
    fits_memory: bool
    provenance: str  # "measured" | "modelled"
    detail: str


def roofline_seconds(work: Workload, peak_flops: float, bandwidth: float) -> float:
    """Best-case time: max(FLOPs / peak, bytes / bandwidth)."""
    return max(work.flops / peak_flops, work.bytes_moved / bandwidth if bandwidth else 0.0)


def advise(
    work: Workload,
    measured: list[ThreadMeasurement],
    catalogue: list[CatalogueEntry],
    *,
    local_memory: float,
    local_price_per_hour: float | None = None,
) -> list[Option]:
    """All options, fastest first (see the module docstring)."""
    if work.flops <= 0:
        raise InvalidInput("the workload needs a positive number of FLOPs")
    options: list[Option] = []
    for m in measured:
        if m.dtype != "float32":
            continue
        secs = work.flops / (m.gflops * 1e9)
        cost = secs / 3600 * local_price_per_hour if local_price_per_hour else None
        options.append(
            Option(
                f"this machine, {m.threads} thread{'s' if m.threads > 1 else ''}",
                secs,
                cost,
                work.memory_needed <= local_memory,
                "measured",
                f"{m.gflops:.1f} GFLOP/s float32 matmul measured here",
            )
        )
    for e in catalogue:
        secs = roofline_seconds(work, e.peak_flops, e.memory_bandwidth)
        options.append(
            Option(
                e.name,
                secs,
                secs / 3600 * e.price_per_hour if e.price_per_hour else None,
                work.memory_needed <= e.memory,
                "modelled",
                f"roofline on {e.peak_flops / 1e12:g} TFLOP/s {e.precision}, "
                f"{e.memory_bandwidth / 1e9:g} GB/s ({e.sources['compute'].split(' (')[0]})",
            )
        )
    return sorted(options, key=lambda o: (not o.fits_memory, o.seconds))


def by_cost(options: list[Option]) -> list[Option]:
    """Options with a price, cheapest per run first (those that fit the model first)."""
    priced = [o for o in options if o.cost_per_run is not None]
    return sorted(priced, key=lambda o: (not o.fits_memory, o.cost_per_run or 0.0))

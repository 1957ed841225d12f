"""The hardware advisor: training and serving, each on the hardware that fits, ranked by cost.

It answers four questions, each with its basis:

1. **What does the model's size ask for?** Training with Adam in mixed precision keeps 16 bytes
   per parameter (fp16 weights and gradients, fp32 master weights and two moments: Rajbhandari
   et al., "ZeRO", SC 2020, §3.1; activations are not counted, so leave room); serving in
   fp16/bf16 keeps 2 bytes per parameter.
2. **Can it run on cheaper hardware?** and 3. **Would other hardware be faster?** Every device
   of the catalogue (``catalogue.yaml``: GPUs, TPUs and CPU machines, every figure with its
   source) and this machine (measured) is sized: the smallest number N of devices whose memory
   holds the model, rounded up to a group that can be rented (``group_sizes``). N = 1 is one
   device; N > 1 is **model parallel** (the weights, gradients and optimizer state sharded over
   the N devices: ZeRO-3/FSDP, or tensor parallel inside the machine). Beyond that, more devices
   are **data parallel**: under ideal scaling they divide the time and leave the cost per run
   unchanged. An option that cannot hold the model (it needs more devices than any group
   offers) is **infeasible**: listed apart with the reason, never ranked.
4. **Where to train, where to serve?** The two are advised separately, because they are
   bound by different things:

   * *training* is compute-bound: time = FLOPs / (N × peak × MFU), where MFU (model FLOPs
     utilisation) is the share of peak that published large runs reach on that class of device
     (``utilisation`` in the catalogue, with sources: 38–43 % on H100 for Llama 3, 46.2 % on
     TPU v4 for PaLM …). Feasible options are ranked by **cost per run** (time × N × price per
     device-hour), which is throughput per dollar turned over; the FLOPs are given
     (``--flops``), or 6 × parameters × tokens (Kaplan et al., "Scaling Laws for Neural
     Language Models", 2020, §2.1), with 20 tokens per parameter when no token count is given
     (Hoffmann et al., "Training Compute-Optimal Large Language Models", 2022);
   * *serving* one request at a time reads every weight once per generated token: latency =
     tokens × max(2 × parameters / (N × peak × MFU), weight bytes / (N × bandwidth × MBU)),
     MBU being the published share of peak memory bandwidth (the roofline model: Williams,
     Waterman & Patterson, CACM 52(4), 2009). Replicas for the predicted QPS come from Little's
     law (:func:`shipyard.quota.estimate.serving_replicas`, N+1 included), and feasible options
     are ranked by **cost per hour at that QPS**; an option slower than the p99 target is
     infeasible, since more replicas do not make one request faster.

**Measured.** This machine's figure is a dense float32 matmul (``numpy.matmul``) at 1…n BLAS
threads (``threadpoolctl``): GFLOP/s = 2·n³ / seconds, and its memory bandwidth a large array
copy (bytes read + written / seconds). Both are marked ``measured``; no utilisation factor is
applied to them (a matmul is the best case of a training step). Catalogue options are
``modelled``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from threadpoolctl import threadpool_limits

from shipyard.errors import ConfigError, InvalidInput
from shipyard.quota.estimate import serving_replicas

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
INFERENCE_BYTES_PER_PARAM = 2.0
TRAINING_BYTES_PER_PARAM = 16.0
TRAINING_FLOPS_PER_PARAM_TOKEN = 6.0  # Kaplan et al. 2020, §2.1: C ≈ 6·N·D
FORWARD_FLOPS_PER_PARAM_TOKEN = 2.0  # one forward pass: 2·N per token (ibid.)
CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022
SERVING_TARGET_UTILISATION = 0.7

Purpose = Literal["training", "serving"]


class Utilisation(BaseModel):
    """The share of peak a real job reaches on one class of device, with its sources."""

    model_config = ConfigDict(extra="forbid")
    training: float = Field(gt=0, le=1)
    serving: float = Field(gt=0, le=1)
    sources: dict[str, str]


class CatalogueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["gpu", "tpu", "cpu"]
    precision: str
    peak_flops: float = Field(gt=0)
    fp32_flops: float | None = None
    memory_bandwidth: float = Field(gt=0)
    memory: float = Field(gt=0)
    price_per_hour: float | None = None
    group_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    sources: dict[str, str]


@dataclass(frozen=True)
class Catalogue:
    entries: list[CatalogueEntry]
    utilisation: dict[str, Utilisation]


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    utilisation: dict[str, Utilisation]
    entries: list[CatalogueEntry]


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    """The catalogue, checked: every entry names a source for its compute (and its price and
    groups when it has them), and every device class has a utilisation with sources."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = _CatalogueFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"hardware catalogue {path} cannot be read: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"hardware catalogue {path}: {where}: {first['msg']}") from None
    for e in parsed.entries:
        if "compute" not in e.sources:
            raise ConfigError(f"hardware catalogue {path}: {e.name} names no source for compute")
        if e.price_per_hour is not None and "price" not in e.sources:
            raise ConfigError(f"hardware catalogue {path}: {e.name} names no source for price")
        if e.group_sizes != [1] and "groups" not in e.sources:
            raise ConfigError(f"hardware catalogue {path}: {e.name} names no source for groups")
        if sorted(set(e.group_sizes)) != e.group_sizes or e.group_sizes[0] < 1:
            raise ConfigError(
                f"hardware catalogue {path}: {e.name}: group_sizes must rise from 1 or more"
            )
        use = parsed.utilisation.get(e.kind)
        if use is None:
            raise ConfigError(f"hardware catalogue {path}: no utilisation for {e.kind} devices")
        if not {"training", "serving"} <= set(use.sources):
            raise ConfigError(
                f"hardware catalogue {path}: the {e.kind} utilisation names no source for "
                "training and serving"
            )
    return Catalogue(parsed.entries, parsed.utilisation)


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


def measure_bandwidth(size_bytes: int = 128 * 1024**2, seconds: float = 0.2) -> float:
    """Bytes per second of a large array copy (each copy reads and writes ``size_bytes``)."""
    src = np.ones(size_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch both
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or reps < 2:
        np.copyto(dst, src)
        reps += 1
    return 2.0 * src.nbytes * reps / (time.perf_counter() - start)


@dataclass(frozen=True)
class ThisMachine:
    """What was measured here: the best float32 matmul rate, memory bandwidth and size."""

    gflops: float
    threads: int
    bandwidth: float
    memory: float
    price_per_hour: float | None = None

    @classmethod
    def of(
        cls,
        measured: list[ThreadMeasurement],
        *,
        bandwidth: float,
        memory: float,
        price_per_hour: float | None = None,
    ) -> ThisMachine:
        best = max((m for m in measured if m.dtype == "float32"), key=lambda m: m.gflops)
        return cls(best.gflops, best.threads, bandwidth, memory, price_per_hour)


@dataclass(frozen=True)
class TrainingJob:
    """One training run: its FLOPs, bytes moved and the model's parameters (0: unknown)."""

    flops: float
    parameters: float = 0.0
    bytes_moved: float = 0.0
    basis: str = "given"

    @property
    def memory_needed(self) -> float:
        return self.parameters * TRAINING_BYTES_PER_PARAM

    @classmethod
    def from_size(cls, parameters: float, tokens: float | None = None) -> TrainingJob:
        """6 × parameters × tokens, with 20 tokens per parameter when none are given."""
        if parameters <= 0:
            raise InvalidInput("--params must be a positive number of parameters")
        if tokens is not None and tokens <= 0:
            raise InvalidInput("--tokens must be a positive number of tokens")
        chosen = tokens if tokens is not None else CHINCHILLA_TOKENS_PER_PARAM * parameters
        why = (
            f"{chosen:.3g} tokens given"
            if tokens is not None
            else f"{chosen:.3g} tokens: 20 per parameter, compute-optimal (Hoffmann et al. 2022)"
        )
        flops = TRAINING_FLOPS_PER_PARAM_TOKEN * parameters * chosen
        return cls(flops, parameters, 0.0, f"6 × {parameters:.3g} params × {why}")


@dataclass(frozen=True)
class ServingJob:
    """Serving a model of ``parameters`` at ``qps``, ``tokens_per_request`` forward passes
    each, one request at a time per replica; ``p99_target_s`` makes slower options infeasible."""

    parameters: float
    qps: float = 1.0
    tokens_per_request: float = 1.0
    p99_target_s: float | None = None

    def __post_init__(self) -> None:
        if self.parameters <= 0:
            raise InvalidInput("serving advice needs --params (the model's parameters)")
        if self.qps <= 0 or self.tokens_per_request <= 0:
            raise InvalidInput("--qps and --tokens-per-request must be positive")
        if self.p99_target_s is not None and self.p99_target_s <= 0:
            raise InvalidInput("--p99-ms must be positive")

    @property
    def memory_needed(self) -> float:
        return self.parameters * INFERENCE_BYTES_PER_PARAM

    @property
    def flops_per_request(self) -> float:
        return FORWARD_FLOPS_PER_PARAM_TOKEN * self.parameters * self.tokens_per_request

    @property
    def bytes_per_request(self) -> float:
        return self.memory_needed * self.tokens_per_request


@dataclass(frozen=True)
class Option:
    """One way to run the job: ``devices`` × ``name``, split as ``split``.

    Training: ``seconds`` per run, ``cost`` in USD per run, ``per_dollar`` FLOPs per USD.
    Serving: ``seconds`` of latency per request, ``replicas`` for the QPS, ``cost`` in USD per
    hour at that QPS, ``per_dollar`` requests per USD."""

    name: str
    kind: str
    devices: int
    split: str
    seconds: float
    cost: float | None
    per_dollar: float | None
    feasible: bool
    why_not: str
    provenance: str  # "measured" | "modelled"
    detail: str
    replicas: int = 0


@dataclass(frozen=True)
class Advice:
    purpose: Purpose
    memory_needed: float
    basis: str
    ranked: list[Option]  # feasible, best first
    infeasible: list[Option]
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Option | None:
        return self.ranked[0] if self.ranked else None

    @property
    def fastest(self) -> Option | None:
        return min(self.ranked, key=lambda o: o.seconds) if self.ranked else None


def devices_needed(memory_needed: float, device_memory: float, groups: list[int]) -> int | None:
    """The smallest rentable group whose memory holds ``memory_needed`` (None: none does)."""
    least = max(1, math.ceil(memory_needed / device_memory - 1e-12))
    return next((g for g in groups if g >= least), None)


def _split(memory_needed: float, device_memory: float, devices: int, what: str) -> str:
    if devices == 1:
        return "one device"
    least = max(1, math.ceil(memory_needed / device_memory - 1e-12))
    split = f"model parallel over {devices}: {what} sharded (ZeRO-3/FSDP or tensor parallel)"
    if least < devices:
        split += f"; {least} would hold it, machines come in groups of {devices}"
    return split


def _infeasible(
    name: str, kind: str, needed: float, memory: float, groups: list[int], provenance: str
) -> Option:
    least = math.ceil(needed / memory)
    why = f"needs {least} devices of {memory / 1e9:.0f} GB to hold {needed / 1e9:.1f} GB; " + (
        f"the largest group is {groups[-1]}" if groups[-1] > 1 else "it is one machine"
    )
    return Option(name, kind, least, "", math.inf, None, None, False, why, provenance, "")


def _rank(options: list[Option]) -> tuple[list[Option], list[Option]]:
    feasible = [o for o in options if o.feasible]
    ranked = sorted(feasible, key=lambda o: (o.cost is None, o.cost or 0.0, o.seconds))
    return ranked, [o for o in options if not o.feasible]


def advise_training(job: TrainingJob, here: ThisMachine, catalogue: Catalogue) -> Advice:
    """Every option for one training run; feasible ones cheapest per run first."""
    if job.flops <= 0:
        raise InvalidInput("the workload needs a positive number of FLOPs")
    what = "weights, gradients and Adam state"
    options: list[Option] = []
    if job.memory_needed > here.memory:
        options.append(
            _infeasible("this machine", "cpu", job.memory_needed, here.memory, [1], "measured")
        )
    else:
        secs = max(job.flops / (here.gflops * 1e9), job.bytes_moved / here.bandwidth)
        cost = secs / 3600 * here.price_per_hour if here.price_per_hour else None
        options.append(
            Option(
                f"this machine, {here.threads} thread{'s' if here.threads > 1 else ''}",
                "cpu",
                1,
                "one device",
                secs,
                cost,
                job.flops / cost if cost else None,
                True,
                "",
                "measured",
                f"{here.gflops:.1f} GFLOP/s float32 matmul measured here (no factor: a best case)",
            )
        )
    for e in catalogue.entries:
        n = devices_needed(job.memory_needed, e.memory, e.group_sizes)
        if n is None:
            options.append(
                _infeasible(e.name, e.kind, job.memory_needed, e.memory, e.group_sizes, "modelled")
            )
            continue
        mfu = catalogue.utilisation[e.kind].training
        secs = max(job.flops / (n * e.peak_flops * mfu), job.bytes_moved / (n * e.memory_bandwidth))
        cost = secs / 3600 * n * e.price_per_hour if e.price_per_hour else None
        options.append(
            Option(
                e.name,
                e.kind,
                n,
                _split(job.memory_needed, e.memory, n, what),
                secs,
                cost,
                job.flops / cost if cost else None,
                True,
                "",
                "modelled",
                f"{mfu:.0%} of {e.peak_flops / 1e12:g} TFLOP/s {e.precision} "
                f"({e.kind} training MFU, published)",
            )
        )
    ranked, infeasible = _rank(options)
    notes = []
    if job.parameters <= 0:
        notes.append("no --params: memory not checked, every option assumed to hold the model")
    return Advice("training", job.memory_needed, job.basis, ranked, infeasible, notes)


def advise_serving(job: ServingJob, here: ThisMachine, catalogue: Catalogue) -> Advice:
    """Every option for serving at ``job.qps``; feasible ones cheapest per hour first."""
    options: list[Option] = []

    def option(
        name: str,
        kind: str,
        n: int,
        split: str,
        latency: float,
        price: float | None,
        provenance: str,
        detail: str,
    ) -> Option:
        sized = serving_replicas(
            job.qps, latency, target_utilisation=SERVING_TARGET_UTILISATION, headroom=0.0
        )
        per_hour = sized.replicas * n * price if price else None
        slow = job.p99_target_s is not None and latency > job.p99_target_s
        why = (
            f"one request takes {latency * 1000:.3g} ms, over the "
            f"{(job.p99_target_s or 0) * 1000:g} ms target: more replicas do not fix that"
            if slow
            else ""
        )
        return Option(
            name,
            kind,
            n,
            split,
            latency,
            per_hour,
            job.qps * 3600 / per_hour if per_hour else None,
            not slow,
            why,
            provenance,
            detail,
            sized.replicas,
        )

    if job.memory_needed > here.memory:
        options.append(
            _infeasible("this machine", "cpu", job.memory_needed, here.memory, [1], "measured")
        )
    else:
        latency = max(
            job.flops_per_request / (here.gflops * 1e9), job.bytes_per_request / here.bandwidth
        )
        options.append(
            option(
                "this machine",
                "cpu",
                1,
                "one device",
                latency,
                here.price_per_hour,
                "measured",
                f"{here.gflops:.1f} GFLOP/s matmul, {here.bandwidth / 1e9:.1f} GB/s copy, "
                "measured here",
            )
        )
    for e in catalogue.entries:
        n = devices_needed(job.memory_needed, e.memory, e.group_sizes)
        if n is None:
            options.append(
                _infeasible(e.name, e.kind, job.memory_needed, e.memory, e.group_sizes, "modelled")
            )
            continue
        use = catalogue.utilisation[e.kind]
        compute_s = job.flops_per_request / (n * e.peak_flops * use.training)
        memory_s = job.bytes_per_request / (n * e.memory_bandwidth * use.serving)
        bound = "memory-bound" if memory_s >= compute_s else "compute-bound"
        options.append(
            option(
                e.name,
                e.kind,
                n,
                _split(job.memory_needed, e.memory, n, "weights"),
                max(compute_s, memory_s),
                e.price_per_hour,
                "modelled",
                f"{bound}: {use.serving:.0%} of {e.memory_bandwidth / 1e9:g} GB/s (MBU), "
                f"{use.training:.0%} of {e.peak_flops / 1e12:g} TFLOP/s (MFU), published",
            )
        )
    ranked, infeasible = _rank(options)
    basis = (
        f"{job.qps:g} QPS, {job.tokens_per_request:g} forward pass"
        f"{'es' if job.tokens_per_request != 1 else ''} of 2 × params FLOPs per request, "
        f"one request at a time per replica, replicas by Little's law at "
        f"{SERVING_TARGET_UTILISATION:.0%} utilisation + 1"
    )
    return Advice("serving", job.memory_needed, basis, ranked, infeasible)

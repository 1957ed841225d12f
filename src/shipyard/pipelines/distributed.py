"""Profiling a data set stored as many Parquet files: one task per file, profiles merged.

Profiles are mergeable by design (:meth:`shipyard.stats.profile.DatasetProfile.merge`): counts,
histograms and category frequencies add exactly, moments combine exactly (Chan, Golub, LeVeque
1979), KLL sketches merge with the same rank-error guarantee as one sketch of all rows (Karnin,
Lang, Liberty 2016). So a profile built from per-file profiles equals the one-process profile:
the counts exactly, the quantiles within the sketch's stated error. All partitions must bin
numbers on the same edges, hence ``reference`` (a reference profile, typically the training
data's); without one, the first file's profile supplies the edges.

>>> profile = profile_parquet_files(["part-0.parquet", "part-1.parquet"])   # doctest: +SKIP
>>> profile = profile_parquet_files(paths, reference=ref, executor="ray")    # doctest: +SKIP

With ``executor="ray"`` each file is one Ray task (``num_cpus=1``) on the cluster this process
is connected to (or a local Ray started for the call); the paths must be readable by the nodes
(a shared file system or an fsspec URL such as ``s3://…``). A task returns its profile as JSON
(a few KB per column), never the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shipyard.errors import InvalidInput
from shipyard.stats.profile import DatasetProfile

EXECUTORS = ("local", "ray")


def profile_parquet_file(path: str, reference: dict[str, Any] | None) -> dict[str, Any]:
    """The profile (as JSON) of one Parquet file, binned on the reference's edges."""
    import pyarrow.parquet as pq

    ref = DatasetProfile.from_json(reference) if reference is not None else None
    table = pq.read_table(path)
    return DatasetProfile.from_frame(table, reference=ref).to_json()


def merge_profiles(profiles: Sequence[DatasetProfile]) -> DatasetProfile:
    """Merge partition profiles in order (empty input: an empty profile)."""
    merged = DatasetProfile()
    for profile in profiles:
        merged = merged.merge(profile)
    return merged


def profile_parquet_files(
    paths: Sequence[str],
    reference: DatasetProfile | None = None,
    executor: str = "local",
    num_cpus_per_task: float = 1.0,
) -> DatasetProfile:
    """Profile every file (one task each on ``executor``) and merge; see the module docstring."""
    if executor not in EXECUTORS:
        raise InvalidInput(f"unknown executor {executor!r}; available: {', '.join(EXECUTORS)}")
    if not paths:
        raise InvalidInput("no Parquet files to profile")
    paths = [str(p) for p in paths]
    if reference is None:
        reference = DatasetProfile.from_json(profile_parquet_file(paths[0], None))
    ref_json = reference.to_json()
    if executor == "local":
        parts = [profile_parquet_file(path, ref_json) for path in paths]
    else:
        parts = _on_ray(paths, ref_json, num_cpus_per_task)
    return merge_profiles([DatasetProfile.from_json(p) for p in parts])


def _on_ray(
    paths: list[str], reference: dict[str, Any], num_cpus_per_task: float
) -> list[dict[str, Any]]:
    from shipyard.pipelines.ray_executor import import_ray

    ray = import_ray()
    owns = not ray.is_initialized()
    if owns:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=num_cpus_per_task, max_retries=1)(profile_parquet_file)
        ref = ray.put(reference)
        parts: list[dict[str, Any]] = ray.get([task.remote(path, ref) for path in paths])
        return parts
    finally:
        if owns:
            ray.shutdown()

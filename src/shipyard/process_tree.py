"""One way to measure a process and everything it started: resident memory and CPU time.

The step executors (local processes, Ray workers on this machine), quota's memory watchdog and
the model server's usage report all sample a process tree: the root and its descendants, listed
with ``psutil`` (children of children included), each read once (``oneshot``). A descendant that
ends between the listing and its reading is left out of that sample; a root that is gone (or a
zombie) gives no sample at all.

>>> import os
>>> sample = sample_tree(os.getpid())
>>> sample is not None and sample.rss_bytes > 0 and sample.processes >= 1
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class TreeSample:
    """One reading of a process tree."""

    rss_bytes: int
    """Σ resident set size of the processes read (bytes)."""
    cpu_seconds: float
    """Σ user + system CPU seconds of the processes read."""
    processes: int
    cpu_seconds_by_pid: dict[int, float] = field(default_factory=dict)
    """Each process's own CPU seconds (for rates between two samples)."""


def sample_tree(root: int | psutil.Process) -> TreeSample | None:
    """RSS and CPU time of ``root`` (a pid or a ``psutil.Process``) and all its descendants;
    ``None`` once the root is gone."""
    try:
        proc = root if isinstance(root, psutil.Process) else psutil.Process(root)
        try:
            tree = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            raise
        except psutil.Error:  # its children cannot be listed (another user's): the root alone
            tree = [proc]
    except psutil.NoSuchProcess:
        return None
    rss = 0
    cpu: dict[int, float] = {}
    for member in tree:
        try:
            with member.oneshot():
                times = member.cpu_times()
                used = float(times.user + times.system)
                resident = int(member.memory_info().rss)
        except psutil.Error:
            if member is proc:
                return None  # the root ended (or is a zombie): no sample
            continue  # a descendant ended between the listing and its reading
        rss += resident
        cpu[member.pid] = used
    return TreeSample(rss, sum(cpu.values()), len(cpu), cpu)


def tree_rss_bytes(pid: int) -> int | None:
    """RSS of a process and all its descendants; ``None`` once the process is gone."""
    sample = sample_tree(pid)
    return sample.rss_bytes if sample is not None else None


__all__ = ["TreeSample", "sample_tree", "tree_rss_bytes"]

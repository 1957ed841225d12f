"""Sticky canary routing: a pure function of the routing key, so every replica agrees.

bucket(key) = first 8 bytes of sha256(key) as a big-endian integer, mod 10 000.
A request goes to the canary iff bucket < weight_pct × 100. Because the comparison is a
threshold on a fixed bucket, raising the weight only moves users from stable to canary, never
back, and a user sees one version for the whole of a step. sha256 is the same in every process,
machine and Python version (Python's own ``hash`` is salted per process, so it cannot be used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

BUCKETS = 10_000
ROUTING_HEADERS = ("x-shipyard-routing-key", "x-user-id")
"""Request headers that carry the routing key, first match wins (the model server's names);
without one the request id is used, which is sticky per request only."""


def bucket(key: str) -> int:
    """The key's bucket in [0, 10 000)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(key: str, canary_weight_pct: float) -> bool:
    """Whether the key's requests are served by the canary at this weight."""
    return bucket(key) < round(canary_weight_pct * BUCKETS / 100)


def routing_key(headers: Mapping[str, str], request_id: str) -> str:
    """The routing-key or user-id header when the caller sends one (sticky per user), else the
    request id."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ROUTING_HEADERS:
        if lowered.get(name):
            return f"user:{lowered[name]}"
    return f"request:{request_id}"


def choose_version(key: str, split: Mapping[int, float], canary: int | None) -> int:
    """The version that serves ``key`` given the live split (version → percent).

    With a canary, the canary gets the keys below its weight and the stable version the rest;
    without one, the version with the largest weight serves everything.
    """
    if not split:
        raise ValueError("no live version")
    if canary is not None and canary in split and len(split) > 1:
        if in_canary(key, split[canary]):
            return canary
        others = {v: w for v, w in split.items() if v != canary}
        return max(others, key=lambda v: (others[v], v))
    return max(split, key=lambda v: (split[v], v))

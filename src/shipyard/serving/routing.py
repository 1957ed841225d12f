"""Sticky canary routing: a pure function of the routing key, so every replica agrees.

Serving owns the rule (the model server routes every request by it); deploy and clients import
it from here to know which version a user is served.

bucket(key) = first 8 bytes of sha256(key) as a big-endian integer, mod 10 000.
A request goes to the canary iff bucket < weight_pct × 100. Because the comparison is a
threshold on a fixed bucket, raising the weight only moves users from stable to canary, never
back, and a user sees one version for the whole of a step. sha256 is the same in every process,
machine and Python version (Python's own ``hash`` is salted per process, so it cannot be used).

The routing key is the caller's routing-key or user-id header (sticky per user), else the
request id (sticky per request only): :func:`routing_key` reads it from headers as strings in
any case, :func:`asgi_routing_key` from a server's raw ASGI headers; both build it with
:func:`key_of`, so a client and the server agree on who is in the canary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

BUCKETS = 10_000
ROUTING_HEADERS = ("x-shipyard-routing-key", "x-user-id")
"""Request headers that carry the routing key, first match wins."""
ASGI_ROUTING_HEADERS = tuple(name.encode("ascii") for name in ROUTING_HEADERS)
"""The same names as ASGI hands them to a server: lower-case bytes."""


def bucket(key: str) -> int:
    """The key's bucket in [0, 10 000)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(key: str, canary_weight_pct: float) -> bool:
    """Whether the key's requests are served by the canary at this weight."""
    return bucket(key) < round(canary_weight_pct * BUCKETS / 100)


def key_of(caller_key: str | None, request_id: str) -> str:
    """The routing key: the caller's key when it sent a non-empty one, else the request id."""
    return f"user:{caller_key}" if caller_key else f"request:{request_id}"


def routing_key(headers: Mapping[str, str], request_id: str) -> str:
    """The routing key of a request whose headers are strings, named in any case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return key_of(next((lowered[n] for n in ROUTING_HEADERS if lowered.get(n)), None), request_id)


def asgi_routing_key(headers: Mapping[bytes, bytes], request_id: str) -> str:
    """The routing key of a request as an ASGI server sees it (lower-case byte names, latin-1
    values)."""
    value = next((headers[n] for n in ASGI_ROUTING_HEADERS if headers.get(n)), None)
    return key_of(value.decode("latin-1") if value else None, request_id)


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

"""Sticky canary routing: a pure function of the request and the split, so every replica agrees.

Serving owns the rule (the model server routes every request by it); deploy and clients import
it from here to know which version a user is served.

**Cohorts are drawn afresh per rollout.** A key's bucket is
``first 8 bytes of sha256(len:model ‖ len:rollout ‖ key)`` as a big-endian integer, mod 10 000
(:func:`cohort_bucket`): the model and the rollout salt the hash, so two rollouts draw
independent cohorts (two 10 % cohorts overlap in about 1 % of users, not in all of them), while
within one rollout a key keeps one bucket. A request goes to the canary iff its bucket is below
the weight's threshold; raising the weight only moves users from stable to canary, never back.
sha256 is the same in every process, machine and Python version (Python's ``hash`` is salted per
process), so replicas agree without talking.

**Targeted steps** route by a header or cookie match (:class:`Match`) before any weight: a
request that matches a target of the steps entered so far goes to the canary whatever its
bucket, so a targeted user stays in the canary as the weights grow.

**Excluding recent canary users** (optional): the cohort names earlier rollouts of the model
with the largest canary threshold each reached; a key was possibly in one of those canaries iff
its bucket *for that rollout* is below that threshold (recomputed from the hash: no user table).
Eligible keys (share ``e``, the product of ``1 − threshold`` over the excluded rollouts, as the
hashes are independent) fill the canary first: an eligible key is in at weight ``w`` iff its
bucket < ``w / e``; an excluded key only once ``w > e``, iff its bucket < ``(w − e)/(1 − e)``.
Both thresholds grow with ``w`` (monotone), and the expected canary share is
``min(w, e) + max(0, w − e) = w``, so the weight still means the share of users. A rollout
that itself excluded users was in for keys with bucket < ``w / e`` at most, so that is the
threshold a later rollout excludes below (a superset: never a recent canary user let in).

The routing key is the caller's routing-key or user-id header (sticky per user), else the
request id (sticky per request only): :func:`routing_key` reads it from headers as strings in
any case, :func:`asgi_routing_key` from a server's raw ASGI headers; both build it with
:func:`key_of`, so a client and the server agree on who is in the canary.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BUCKETS = 10_000
ROUTING_HEADERS = ("x-shipyard-routing-key", "x-user-id")
"""Request headers that carry the routing key, first match wins."""
ASGI_ROUTING_HEADERS = tuple(name.encode("ascii") for name in ROUTING_HEADERS)
"""The same names as ASGI hands them to a server: lower-case bytes."""
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
"""An HTTP header or cookie name (RFC 9110 §5.6.2 token), at most 100 characters."""
MAX_EXCLUDED = 16
"""At most this many earlier rollouts are excluded (one hash each per request)."""


def bucket(key: str) -> int:
    """The string's bucket in [0, 10 000)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def cohort_bucket(model: str, rollout_id: str, key: str) -> int:
    """The key's bucket in rollout ``rollout_id`` of ``model``; length prefixes keep
    ``("a", "bc")`` and ``("ab", "c")`` apart."""
    return bucket(f"{len(model)}:{model}{len(rollout_id)}:{rollout_id}{key}")


def _threshold(weight_pct: float) -> int:
    return round(weight_pct * BUCKETS / 100)


@dataclass(frozen=True)
class Match:
    """A targeted step's rule: the header (or cookie) ``name`` has one of ``values`` (exact)."""

    kind: str  # "header" | "cookie"
    name: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("header", "cookie"):
            raise ValueError(f"a match is on a header or a cookie, not {self.kind!r}")
        if not TOKEN.match(self.name):
            raise ValueError(f"{self.kind} name {self.name!r} is not an HTTP token")
        if not self.values or any(not isinstance(v, str) or not v for v in self.values):
            raise ValueError(f"{self.kind} {self.name} needs at least one non-empty value")

    def matches(self, headers: Mapping[bytes, bytes]) -> bool:
        """Whether a request with these (ASGI: lower-case byte names) headers matches."""
        if self.kind == "header":
            raw = headers.get(self.name.lower().encode("ascii"))
            return raw is not None and raw.decode("latin-1").strip() in self.values
        return cookie_value(headers, self.name) in self.values

    def describe(self) -> str:
        return f"{self.kind} {self.name} in [{', '.join(self.values)}]"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Match:
        return cls(str(data["kind"]), str(data["name"]), tuple(str(v) for v in data["values"]))


def cookie_value(headers: Mapping[bytes, bytes], name: str) -> str | None:
    """The value of cookie ``name`` in the request's ``cookie`` header (RFC 6265 §5.4 pairs
    separated by ``;``; a quoted value unquoted), None when absent."""
    raw = headers.get(b"cookie")
    if not raw:
        return None
    for pair in raw.decode("latin-1").split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


@dataclass(frozen=True)
class Cohort:
    """How one rollout's canary draws its users: the salt, the targets, the exclusions.

    ``excluded`` holds (earlier rollout id, the bucket threshold in percent below which a key
    was possibly in its canary)."""

    model: str
    rollout_id: str
    targets: tuple[Match, ...] = ()
    excluded: tuple[tuple[str, float], ...] = ()
    eligible: float = field(init=False)

    def __post_init__(self) -> None:
        if len(self.excluded) > MAX_EXCLUDED:
            raise ValueError(f"at most {MAX_EXCLUDED} earlier rollouts can be excluded")
        share = 1.0
        for _, pct in self.excluded:
            if not 0 <= pct < 100:
                raise ValueError(f"an excluded canary threshold is in [0, 100), got {pct}")
            share *= 1.0 - pct / 100
        object.__setattr__(self, "eligible", share)

    def was_in_recent_canary(self, key: str) -> bool:
        return any(
            cohort_bucket(self.model, rid, key) < pct * BUCKETS / 100 for rid, pct in self.excluded
        )

    def in_canary(self, key: str, weight_pct: float) -> bool:
        """Whether ``key`` is in the canary at this weight by its bucket (targets aside)."""
        b = cohort_bucket(self.model, self.rollout_id, key)
        if not self.excluded:
            return b < _threshold(weight_pct)
        w, e = weight_pct / 100, self.eligible
        if not self.was_in_recent_canary(key):
            return b < min(1.0, w / e) * BUCKETS
        return w > e and b < (w - e) / (1 - e) * BUCKETS

    def targeted(self, headers: Mapping[bytes, bytes]) -> bool:
        return any(t.matches(headers) for t in self.targets)

    def exposure_pct(self, weight_pct: float) -> float:
        """The bucket threshold (percent) below which a key may have been in this canary at
        ``weight_pct``: what a later rollout that excludes this one's users excludes below."""
        return min(100.0, weight_pct / self.eligible) if self.excluded else weight_pct

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "rollout_id": self.rollout_id,
            "targets": [t.to_json() for t in self.targets],
            "excluded": [[rid, pct] for rid, pct in self.excluded],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cohort:
        return cls(
            model=str(data["model"]),
            rollout_id=str(data["rollout_id"]),
            targets=tuple(Match.from_json(t) for t in data.get("targets", ())),
            excluded=tuple((str(rid), float(pct)) for rid, pct in data.get("excluded", ())),
        )


def in_canary(
    key: str,
    canary_weight_pct: float,
    cohort: Cohort,
    headers: Mapping[bytes, bytes] | None = None,
) -> bool:
    """Whether the request is served by the canary: a target matches, or its bucket is in."""
    if cohort.targets and headers is not None and cohort.targeted(headers):
        return True
    return canary_weight_pct > 0 and cohort.in_canary(key, canary_weight_pct)


def key_of(caller_key: str | None, request_id: str) -> str:
    """The routing key: the caller's key when it sent a non-empty one, else the request id."""
    return f"user:{caller_key}" if caller_key else f"request:{request_id}"


def asgi_headers(headers: Mapping[str, str]) -> dict[bytes, bytes]:
    """String headers (any case) as an ASGI server sees them: lower-case byte names."""
    return {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in headers.items()}


def routing_key(headers: Mapping[str, str], request_id: str) -> str:
    """The routing key of a request whose headers are strings, named in any case."""
    return asgi_routing_key(asgi_headers(headers), request_id)


def asgi_routing_key(headers: Mapping[bytes, bytes], request_id: str) -> str:
    """The routing key of a request as an ASGI server sees it (lower-case byte names, latin-1
    values)."""
    value = next((headers[n] for n in ASGI_ROUTING_HEADERS if headers.get(n)), None)
    return key_of(value.decode("latin-1") if value else None, request_id)


def choose_version(
    key: str,
    split: Mapping[int, float],
    canary: int | None,
    cohort: Cohort | None = None,
    headers: Mapping[bytes, bytes] | None = None,
) -> int:
    """The version that serves the request given the live split (version → percent).

    With a canary and its cohort, the canary gets the requests :func:`in_canary` admits and
    the stable version the rest; without one, the version with the largest weight serves
    everything (a canary without a cohort, never written by deploy, gets no traffic).
    """
    if not split:
        raise ValueError("no live version")
    if canary is not None and canary in split and len(split) > 1:
        others = {v: w for v, w in split.items() if v != canary}
        if cohort is not None and in_canary(key, split[canary], cohort, headers):
            return canary
        return max(others, key=lambda v: (others[v], v))
    return max(split, key=lambda v: (split[v], v))

"""Sticky canary routing: monotone in the weight, the same in every process, close to the weight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import shipyard
from shipyard.serving.routing import (
    Cohort,
    asgi_routing_key,
    bucket,
    choose_version,
    in_canary,
    routing_key,
)

KEYS = [f"user:{i}" for i in range(20_000)]
COHORT = Cohort("m", "r1")


def test_users_only_move_from_stable_to_canary_as_the_weight_grows() -> None:
    before: set[str] = set()
    for weight in (1, 5, 10, 25, 50, 75, 99):
        now = {k for k in KEYS if in_canary(k, weight, COHORT)}
        assert before <= now, f"someone left the canary when the weight grew to {weight}"
        before = now


def test_canary_share_is_close_to_its_weight() -> None:
    for weight in (1, 10, 50):
        share = sum(in_canary(k, weight, COHORT) for k in KEYS) / len(KEYS)
        # binomial standard error at n = 20 000 is at most 0.0036; allow 4 of them
        assert abs(share - weight / 100) < 0.015


def test_every_process_puts_a_key_in_the_same_bucket() -> None:
    """sha256, not Python's per-process salted hash: another interpreter agrees."""
    source = str(Path(shipyard.__file__).parents[1])  # the code under test, not an installed copy
    code = (
        "from shipyard.serving.routing import bucket;"
        "print(','.join(str(bucket(f'user:{i}')) for i in range(200)))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": source},
        ).stdout.strip()
        assert out == ",".join(str(bucket(f"user:{i}")) for i in range(200))


def test_user_header_wins_over_request_id_and_is_case_insensitive() -> None:
    assert routing_key({"X-User-Id": "ann"}, "req-1") == "user:ann"
    assert routing_key({"x-user-id": "ann", "X-Shipyard-Routing-Key": "k"}, "r") == "user:k"
    assert routing_key({}, "req-1") == "request:req-1"
    assert routing_key({"x-user-id": ""}, "req-2") == "request:req-2"


def test_a_server_reads_the_same_key_from_raw_asgi_headers() -> None:
    """ASGI hands a server lower-case byte names and latin-1 values."""
    assert asgi_routing_key({b"x-user-id": b"ann"}, "req-1") == "user:ann"
    both = {b"x-user-id": b"ann", b"x-shipyard-routing-key": b"k"}
    assert asgi_routing_key(both, "r") == "user:k"
    assert asgi_routing_key({}, "req-1") == "request:req-1"
    assert asgi_routing_key({b"x-user-id": b""}, "req-2") == "request:req-2"
    assert (
        asgi_routing_key({b"x-user-id": "J\u00fcrgen".encode("latin-1")}, "r") == "user:J\u00fcrgen"
    )


def test_choose_version_sends_a_user_to_one_version_for_the_whole_step() -> None:
    split = {1: 90.0, 2: 10.0}
    for k in KEYS[:500]:
        first = choose_version(k, split, canary=2, cohort=COHORT)
        assert all(choose_version(k, split, canary=2, cohort=COHORT) == first for _ in range(3))
        assert first == (2 if in_canary(k, 10.0, COHORT) else 1)
    assert choose_version("user:x", {3: 100.0}, canary=None) == 3

"""The shadow helper's loop on a real socket pair, in this process: it answers the copies that
wait with one ``predict`` of all their rows, and where that call fails, each copy on its own, so
the failure is the failing copy's and the others are answered as they would be alone."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from serving.conftest import EXPLODE_SIGNATURE
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.shadow import ShadowCopy, decode_copy, decode_counts, encode_copy
from shipyard.serving.shadow_helper import ShadowHelper
from shipyard.workspace import Workspace

MODEL = "churn"
POISON = 13.0
CALLS: list[int] = []
"""The rows of each call the candidate got (the helper runs in this process here)."""


def doubled(x: np.ndarray) -> np.ndarray:
    return x[:, 0] * 2


def tripled_but_poisoned(x: np.ndarray) -> np.ndarray:
    """Three times the first feature; raises on any call holding a row whose first is 13."""
    CALLS.append(len(x))
    if (x[:, 0] == POISON).any():
        raise ValueError("poisoned row")
    return x[:, 0] * 3


def _helper_answers(ws: Workspace, firsts: list[float]) -> tuple[records.ShadowPairs, dict]:
    """Send one copy per first feature (two rows each), let the helper answer all of them in
    one drain, and return the shadow log it wrote and the counts it reported."""
    registry = Registry.of(ws)
    registry.register(MODEL, doubled, flavor="python", signature=EXPLODE_SIGNATURE)
    registry.register(MODEL, tripled_but_poisoned, flavor="python", signature=EXPLODE_SIGNATURE)
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for i, first in enumerate(firsts):
        x = np.array([[first, 0.5, -0.5], [first + 100.0, 1.0, 1.0]])
        copy = ShadowCopy(MODEL, 1, 2, f"r{i}", time.time(), x, doubled(x))
        near.send(encode_copy(copy))
    near.shutdown(socket.SHUT_WR)  # the helper drains what waits, answers, flushes, ends
    CALLS.clear()
    helper = ShadowHelper(far, registry, ws.artifacts, flush_interval_s=0.5)
    thread = threading.Thread(target=helper.run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the helper ends at the end of its socket"
    near.settimeout(5)
    counts = {outcome: n for _, _, outcome, n in decode_counts(near.recv(1 << 16))}
    near.close()
    far.close()
    with ws.store.session(readonly=True) as s:
        pairs = records.shadow_pairs(s, ws.artifacts, MODEL, 2, 1, since=0.0)
    return pairs, counts


class TestBatchedPrediction:
    def test_copies_that_wait_are_answered_with_one_predict_of_all_their_rows(
        self, workspace: Workspace
    ) -> None:
        firsts = [1.0, 2.0, 3.0, 4.0, 5.0]
        pairs, counts = _helper_answers(workspace, firsts)
        assert CALLS == [10], "one call for the 5 copies' 10 rows"
        assert counts == {"answered": 5}
        assert pairs.requests == 5 and pairs.errors == []
        assert pairs.shadow == [1.5 * y for y in pairs.stable]
        assert sorted(pairs.stable) == sorted(2 * f + d for f in firsts for d in (0.0, 200.0))

    def test_a_batch_that_fails_is_answered_copy_by_copy_and_the_failure_is_the_copys_own(
        self, workspace: Workspace
    ) -> None:
        firsts = [1.0, 2.0, POISON, 4.0, 5.0]
        pairs, counts = _helper_answers(workspace, firsts)
        assert CALLS == [10, 2, 2, 2, 2, 2], "the batch failed: then each copy alone"
        assert counts == {"answered": 4, "failed": 1}
        assert pairs.requests == 5
        assert pairs.errors == ["request r2: ValueError: poisoned row"] * 2, "both its rows"
        answered = [(y, got) for y, got in zip(pairs.stable, pairs.shadow, strict=True)]
        failed = [y for y, got in answered if got is None]
        assert sorted(failed) == [2 * POISON, 2 * POISON + 200.0]
        assert all(got == 1.5 * y for y, got in answered if got is not None)


class TestWireFormat:
    def test_a_copy_crosses_as_sent_numbers_raw_and_anything_else_as_json(self) -> None:
        sent = [
            ShadowCopy("m", 1, 2, "r1", 12.5, np.arange(6, dtype=np.float32).reshape(2, 3),
                       np.array([0, 1])),
            ShadowCopy("m", 1, 2, "r2", 13.5, np.array([[1.0, "x"]], dtype=object),
                       np.array(["yes"], dtype=object)),
            ShadowCopy("m", 1, 2, "r3", 14.5, np.ones((2, 3), dtype=np.float32), np.ones(2)),
        ]  # fmt: skip
        for copy in sent:
            got = decode_copy(encode_copy(copy))
            assert (got.model, got.stable_version, got.shadow_version) == ("m", 1, 2)
            assert (got.request_id, got.ts) == (copy.request_id, copy.ts)
            assert got.x.dtype == copy.x.dtype and got.x.tolist() == copy.x.tolist()
            assert got.stable_answer.tolist() == copy.stable_answer.tolist()

    def test_a_malformed_message_is_a_value_error(self) -> None:
        message = encode_copy(ShadowCopy("m", 1, 2, "r1", 1.0, np.ones((1, 3)), np.ones(1)))
        for bad in (message[:-3], message[: message.index(b"\n") + 4], b"[1, 2]\n", b"no head"):
            with pytest.raises(ValueError):
                decode_copy(bad)

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
from shipyard.serving.shadow import (
    MAX_ROWS_PER_COPY,
    CopyBatch,
    ShadowCopy,
    decode_batch,
    decode_counts,
    encode_batch,
)
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


def halved_but_not_a_number_on_seven(x: np.ndarray) -> np.ndarray:
    """Half the first feature, NaN for a row whose first is 7."""
    return np.where(x[:, 0] == 7.0, np.nan, x[:, 0] / 2)


def _helper_answers(
    ws: Workspace, firsts: list[float], shadow: int = 2
) -> tuple[records.ShadowPairs, dict]:
    """Send one copy per first feature (two rows each), let the helper answer all of them in
    one drain, and return the shadow log it wrote and the counts it reported."""
    registry = Registry.of(ws)
    registry.register(MODEL, doubled, flavor="python", signature=EXPLODE_SIGNATURE)
    registry.register(MODEL, tripled_but_poisoned, flavor="python", signature=EXPLODE_SIGNATURE)
    registry.register(
        MODEL, halved_but_not_a_number_on_seven, flavor="python", signature=EXPLODE_SIGNATURE
    )
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    copies = []
    for i, first in enumerate(firsts):
        x = np.array([[first, 0.5, -0.5], [first + 100.0, 1.0, 1.0]])
        copies.append(ShadowCopy(MODEL, 1, shadow, f"r{i}", time.time(), x, doubled(x)))
    near.send(encode_batch(copies[:2]))  # two batches, as the worker's sender sends them
    near.send(encode_batch(copies[2:]))
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
        pairs = records.shadow_pairs(s, ws.artifacts, MODEL, shadow, 1, since=0.0)
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

    def test_an_answer_that_is_not_a_number_fails_its_own_copy_only(
        self, workspace: Workspace
    ) -> None:
        pairs, counts = _helper_answers(workspace, [1.0, 7.0, 3.0], shadow=3)
        assert counts == {"answered": 2, "failed": 1}
        assert pairs.requests == 3
        assert pairs.errors == ["request r1: ValueError: answered a value that is not finite"] * 2
        answered = [
            (y, got) for y, got in zip(pairs.stable, pairs.shadow, strict=True) if got is not None
        ]
        assert sorted(y for y, _ in answered) == [2.0, 6.0, 202.0, 206.0]
        assert all(got == y / 4 for y, got in answered)


def _copies(batch: CopyBatch) -> list[ShadowCopy]:
    """A batch copy by copy, each with its own rows and answer."""
    bounds = np.cumsum(batch.rows)[:-1]
    return [
        ShadowCopy(batch.model, batch.stable_version, batch.shadow_version, rid, float(ts), x, y)
        for rid, ts, x, y in zip(
            batch.request_ids,
            batch.ts,
            np.split(batch.x, bounds),
            np.split(batch.stable_answer, bounds),
            strict=True,
        )
    ]


class TestWireFormat:
    def test_a_batch_crosses_as_sent_numbers_raw_and_anything_else_as_json(self) -> None:
        batches = [
            [
                ShadowCopy("m", 1, 2, "r1", 12.5, np.arange(6, dtype=np.float32).reshape(2, 3),
                           np.array([0, 1])),
                ShadowCopy("m", 1, 2, "r-é", 13.0, np.ones((1, 3), dtype=np.float32),
                           np.array([7])),
            ],
            [
                ShadowCopy("m", 1, 2, "r2", 13.5, np.array([[1.0, "x"]], dtype=object),
                           np.array(["yes"], dtype=object)),
                ShadowCopy("m", 1, 2, "r3", 14.5, np.array([[2.0, "y"], [3.0, None]],
                           dtype=object), np.array(["no", "yes"], dtype=object)),
            ],
            [ShadowCopy("m", 3, 4, "r4", 15.5, np.ones((2, 3), dtype=">f8"), np.ones((2, 2)))],
        ]  # fmt: skip
        for sent in batches:
            batch = decode_batch(encode_batch(sent))
            assert (batch.model, batch.stable_version, batch.shadow_version) == (
                "m",
                sent[0].stable_version,
                sent[0].shadow_version,
            )
            assert len(batch) == len(sent) and batch.rows.tolist() == [len(c.x) for c in sent]
            for copy, got in zip(sent, _copies(batch), strict=True):
                assert (got.request_id, got.ts) == (copy.request_id, copy.ts)
                assert got.x.tolist() == copy.x.tolist()
                assert got.stable_answer.tolist() == copy.stable_answer.tolist()
                if copy.x.dtype.kind == "f" and copy.x.dtype.isnative:
                    assert got.x.dtype == copy.x.dtype, "numbers cross raw, as they were"

    def test_a_copy_keeps_its_first_rows_only(self) -> None:
        copy = ShadowCopy("m", 1, 2, "r1", 1.0, np.ones((250, 2)), np.ones(250))
        batch = decode_batch(encode_batch([copy]))
        assert batch.rows.tolist() == [MAX_ROWS_PER_COPY] and len(batch.x) == MAX_ROWS_PER_COPY

    def test_a_malformed_message_is_a_value_error(self) -> None:
        copies = [ShadowCopy("m", 1, 2, f"r{i}", 1.0, np.ones((1, 3)), np.ones(1)) for i in (1, 2)]
        message = encode_batch(copies)
        head = message.index(b"\n") + 1
        wrong_rows = bytearray(message)
        wrong_rows[head + 4 + 16] = 5  # the first copy says it has 5 rows
        for bad in (
            message[:-3],
            message[: head + 4],
            b"[1, 2]\n",
            b"no head",
            b'["m"]\n',
            bytes(wrong_rows),
            message.replace(b'"raw"', b'"pkl"'),
            message.replace(b'"<f8"', b'"|O"'),
            message.replace(b'"<f8"', b'","'),
        ):
            with pytest.raises(ValueError):
                decode_batch(bad)

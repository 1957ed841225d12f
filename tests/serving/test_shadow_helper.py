"""The shadow helper's loop on a real socket pair, in this process: it answers the copies that
wait with one ``predict`` of all their rows, and where that call fails, each copy on its own, so
the failure is the failing copy's and the others are answered as they would be alone."""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from serving.conftest import EXPLODE_SIGNATURE
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.shadow import (
    MAX_ROWS_PER_COPY,
    SHADOW_LOG_KIND,
    SHADOW_LOG_MEDIA_TYPE,
    CopyBatch,
    ShadowCopy,
    decode_batch,
    decode_counts,
    encode_batch,
)
from shipyard.serving.shadow_helper import ShadowHelper, _json, _rows_column
from shipyard.store.tables import ArtifactRecord
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


def signed(x: np.ndarray) -> np.ndarray:
    """Words, not numbers: the sign of the first feature."""
    return np.where(x[:, 0] >= 0, "plus", "minus")


def _helper_answers(
    ws: Workspace, firsts: list[float], shadow: int = 2, stable: Any = None
) -> tuple[records.ShadowPairs, dict]:
    """Send one copy per first feature (two rows each), let the helper answer all of them in
    one drain, and return the shadow log it wrote and the counts it reported."""
    registry = Registry.of(ws)
    registry.register(MODEL, doubled, flavor="python", signature=EXPLODE_SIGNATURE)
    registry.register(MODEL, tripled_but_poisoned, flavor="python", signature=EXPLODE_SIGNATURE)
    registry.register(
        MODEL, halved_but_not_a_number_on_seven, flavor="python", signature=EXPLODE_SIGNATURE
    )
    registry.register(MODEL, signed, flavor="python", signature=EXPLODE_SIGNATURE)
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    copies = []
    for i, first in enumerate(firsts):
        x = np.array([[first, 0.5, -0.5], [first + 100.0, 1.0, 1.0]])
        answer = doubled(x) if stable is None else stable(x)
        copies.append(ShadowCopy(MODEL, 1, shadow, f"r{i}", time.time(), x, answer))
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


class TestShadowLog:
    def test_numbers_come_back_as_numbers_from_arrow_lists(self, workspace: Workspace) -> None:
        pairs, _ = _helper_answers(workspace, [1.5, -2.0, 3.0])
        assert pairs.stable == [3.0, 203.0, -4.0, 196.0, 6.0, 206.0]
        assert pairs.shadow == [1.5 * y for y in pairs.stable]
        assert all(type(v) is float for v in pairs.stable + pairs.shadow)
        with workspace.store.session(readonly=True) as s:
            (table,) = _log_tables(s, workspace)
        assert pa.types.is_list(table.schema.field("shadow").type), "not JSON text"
        assert table.column("request").to_pylist()[0] == [[1.5, 0.5, -0.5], [101.5, 1.0, 1.0]]

    def test_answers_that_are_not_numbers_are_logged_as_json_text(
        self, workspace: Workspace
    ) -> None:
        pairs, counts = _helper_answers(workspace, [1.0, -1.0, 2.0], shadow=4, stable=doubled)
        assert counts == {"answered": 3}
        assert pairs.shadow == ["plus", "plus", "minus", "plus", "plus", "plus"]
        assert pairs.stable == [2.0, 202.0, -2.0, 198.0, 4.0, 204.0]
        with workspace.store.session(readonly=True) as s:
            (table,) = _log_tables(s, workspace)
        assert table.schema.field("shadow").type == pa.string()
        assert pa.types.is_list(table.schema.field("stable").type)

    def test_a_flush_that_fails_halfway_writes_no_pair_twice(
        self, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Numbers and words go to two files; when the second cannot be written, the next
        flush writes it alone, not the first again."""
        near, far = socket.socketpair()
        helper = ShadowHelper(far, Registry.of(workspace), workspace.artifacts)
        x = np.ones((1, 3))
        for rid, answer in (("n", np.array([1.0])), ("w", np.array(["yes"], dtype=object))):
            batch = decode_batch(encode_batch([ShadowCopy(MODEL, 1, 2, rid, 1.0, x, answer)]))
            helper._record([batch], batch.x, [0, 1], _rows_column(answer, [0, 1]), [None], 0.1)
        put = workspace.artifacts.put_bytes
        calls: list[int] = []

        def second_fails(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise OSError("disk full")
            return put(*args, **kwargs)

        monkeypatch.setattr(workspace.artifacts, "put_bytes", second_fails)
        with pytest.raises(OSError):
            helper.flush()
        assert helper.flush() == 1, "only the file that failed"
        with workspace.store.session(readonly=True) as s:
            pairs = records.shadow_pairs(s, workspace.artifacts, MODEL, 2, 1, since=0.0)
            assert len(_log_tables(s, workspace)) == 2
        assert sorted(map(str, pairs.stable)) == ["1.0", "yes"]
        near.close()
        far.close()

    def test_a_log_written_as_json_text_reads_the_same(self, workspace: Workspace) -> None:
        """The logs written before numbers were kept as Arrow lists held JSON text."""
        table = pa.table({
            "request_id": ["r0", "r1"], "ts": [10.0, 11.0],
            "request": ["[[1.0, 2.0]]", "[[3.0, 4.0]]"], "stable": ["[1]", "[0]"],
            "shadow": ["[1]", None], "error": [None, "ValueError: no"], "shadow_ms": [0.1, None],
        })  # fmt: skip
        buf = io.BytesIO()
        pq.write_table(table, buf)
        meta = {"kind": SHADOW_LOG_KIND, "model": MODEL, "version": 2, "stable_version": 1,
                "rows": 2, "first_ts": 10.0}  # fmt: skip
        workspace.artifacts.put_bytes(buf.getvalue(), SHADOW_LOG_MEDIA_TYPE, meta)
        with workspace.store.session(readonly=True) as s:
            pairs = records.shadow_pairs(s, workspace.artifacts, MODEL, 2, 1, since=0.0)
        assert (pairs.stable, pairs.shadow, pairs.requests) == ([1, 0], [1, None], 2)
        assert pairs.errors == ["request r1: ValueError: no"]


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(["<i8", "<i4", "<u2", "<f8", "<f4", "<f2", ">f8", "|b1"]),
    row_shape=st.sampled_from([(), (1,), (3,), (2, 2)]),
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_column_of_numbers_holds_what_json_text_would(
    dtype: str, row_shape: tuple[int, ...], sizes: list[int], data: st.DataObject
) -> None:
    """Each copy's rows read back from the Arrow list column are the rows its JSON text holds,
    value for value (NaN and infinities too), and a failed copy is null."""
    rows = sum(sizes)
    values = data.draw(
        st.lists(
            st.floats(width=16) if "f" in dtype else st.integers(0, 1 if "b" in dtype else 60_000),
            min_size=rows * math.prod(row_shape),
            max_size=rows * math.prod(row_shape),
        )
    )
    a = np.array(values, dtype=dtype).reshape((rows, *row_shape))
    failed = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    cuts = [0, *np.cumsum(sizes).tolist()]
    got = _rows_column(a, cuts, failed).to_pylist()
    want = [
        None if bad else json.loads(_json(a[lo:hi]))
        for lo, hi, bad in zip(cuts[:-1], cuts[1:], failed, strict=True)
    ]
    assert json.dumps(got) == json.dumps(want)


def _log_tables(s: Any, workspace: Workspace) -> list[pa.Table]:
    """The shadow log's files, as tables."""
    rows = s.execute(select(ArtifactRecord.digest, ArtifactRecord.meta)).all()
    return [
        pq.read_table(io.BytesIO(workspace.artifacts.get_bytes(digest)))
        for digest, meta in rows
        if (meta or {}).get("kind") == SHADOW_LOG_KIND
    ]


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

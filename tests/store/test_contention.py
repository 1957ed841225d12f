"""Concurrent writers: every writing transaction holds the write lock from its start, waits for
it within a bound, and past the bound fails as :class:`StoreBusy`, never "database is locked"."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from serving.conftest import fit_classifier
from shipyard.clock import SYSTEM_CLOCK
from shipyard.errors import StoreBusy, StoreError
from shipyard.registry import Registry
from shipyard.serving.feedback import record_feedback
from shipyard.serving.telemetry import Telemetry
from shipyard.store import Store
from shipyard.store.serving import FeedbackRecord, ServingWindow
from shipyard.store.tables import AuditEvent
from shipyard.workspace import Workspace

WRITERS = 4
TRANSACTIONS = 25


def _read_then_write(url: str, writer: str, transactions: int) -> list[str]:
    """Feedback-like work: read what is there, then write a row that depends on it."""
    store = Store(url)
    problems: list[str] = []
    try:
        for i in range(transactions):
            try:
                with store.session() as s:
                    seen = s.scalar(select(func.count()).select_from(AuditEvent)) or 0
                    time.sleep(0.001)  # widen the gap between the read and the write
                    s.add(
                        AuditEvent(
                            ts=float(seen),
                            actor=writer,
                            action="feedback",
                            subject_kind="model",
                            subject_id=str(i),
                        )
                    )
            except Exception as exc:  # every failure is what the test reports
                problems.append(f"{writer}/{i}: {type(exc).__name__}: {exc}")
    finally:
        store.dispose()
    return problems


def _process_writer(url: str, writer: str, transactions: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(_read_then_write(url, writer, transactions))


class TestConcurrentWriters:
    def test_read_then_write_from_threads_and_processes_never_sees_a_locked_database(
        self, tmp_path: Path
    ) -> None:
        """Threads of one process and separate processes all read then write the same file."""
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        Store(url).dispose()  # migrated once, before the writers start
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        processes = [
            ctx.Process(target=_process_writer, args=(url, f"p{k}", TRANSACTIONS, queue))
            for k in range(WRITERS // 2)
        ]
        for p in processes:
            p.start()
        results: list[list[str]] = []
        threads = [
            threading.Thread(
                target=lambda k=k: results.append(_read_then_write(url, f"t{k}", TRANSACTIONS))
            )
            for k in range(WRITERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        results.extend(queue.get(timeout=120) for _ in processes)
        for p in processes:
            p.join(timeout=30)
            assert p.exitcode == 0
        problems = [p for r in results for p in r]
        assert problems == []
        store = Store(url)
        with store.session(readonly=True) as s:
            stamps = sorted(s.scalars(select(AuditEvent.ts)))
        store.dispose()
        writers = WRITERS + WRITERS // 2
        assert len(stamps) == writers * TRANSACTIONS
        # each transaction saw every row committed before it: the counts are 0, 1, 2, … exactly
        assert stamps == [float(i) for i in range(writers * TRANSACTIONS)]

    def test_a_lock_held_past_the_bound_is_store_busy_and_changes_nothing(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "held.db"
        store = Store(f"sqlite:///{path}", busy_timeout_s=0.3)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreBusy) as caught, store.session() as s:
                s.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
            waited = time.monotonic() - started
            assert caught.value.retry_after_s >= 1.0
            assert "busy" in str(caught.value) and "locked" not in str(caught.value)
            assert 0.25 <= waited < 10
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with store.session(readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(AuditEvent)) == 0
        with store.session() as s:  # the lock is free again: the next writer goes through
            s.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
        store.dispose()

    def test_readers_do_not_wait_for_a_writer(self, tmp_path: Path) -> None:
        path = tmp_path / "read.db"
        store = Store(f"sqlite:///{path}", busy_timeout_s=0.3)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with store.session(readonly=True) as s:
                assert s.scalar(select(func.count()).select_from(AuditEvent)) == 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        store.dispose()

    def test_a_write_inside_a_readonly_session_is_refused(self, tmp_path: Path) -> None:
        store = Store(f"sqlite:///{tmp_path / 'ro.db'}")
        with pytest.raises(StoreError, match="readonly"), store.session(readonly=True) as s:
            s.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
        with store.session() as s:  # the same pooled connection writes again afterwards
            s.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
        with store.session(readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(AuditEvent)) == 1
        store.dispose()


@pytest.mark.postgres
def test_a_postgres_row_lock_held_past_the_bound_is_store_busy(migrated_postgres_url: str) -> None:
    store = Store(migrated_postgres_url, busy_timeout_s=0.3)
    with store.session() as s:
        s.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
    holder = store.engine.connect()
    holder.execute(text("SELECT id FROM audit_events FOR UPDATE"))
    try:
        with pytest.raises(StoreBusy), store.session() as s:
            s.execute(text("UPDATE audit_events SET actor = 'b'"))
    finally:
        holder.rollback()
        holder.close()
    with store.session(readonly=True) as s:
        assert s.scalar(select(AuditEvent.actor)) == "a"
    store.dispose()


def test_a_lookup_inside_a_writing_session_reads_instead_of_waiting_for_itself(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nested.db'}", busy_timeout_s=5)
    started = time.monotonic()
    with store.session() as outer:
        outer.add(AuditEvent(ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
        with store.session() as inner:  # e.g. a registry lookup made mid-transaction
            assert inner.scalar(select(func.count()).select_from(AuditEvent)) == 0
    assert time.monotonic() - started < 4
    with store.session() as s:  # a writer again once the outer one ended
        s.add(AuditEvent(ts=2.0, actor="a", action="x", subject_kind="m", subject_id="2"))
    with store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 2
    store.dispose()


def test_a_constraint_violation_reaches_the_caller_as_itself(tmp_path: Path) -> None:
    """Only busy, damaged and operational errors become store errors: a caller that treats a
    duplicate row as "already written" (the telemetry flush) still sees an IntegrityError."""
    store = Store(f"sqlite:///{tmp_path / 'dup.db'}")
    with store.session() as s:
        s.add(AuditEvent(id=1, ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(AuditEvent(id=1, ts=1.0, actor="a", action="x", subject_kind="m", subject_id="1"))
    store.dispose()


def test_feedback_posted_while_the_server_flushes_never_sees_a_locked_database(
    workspace: Workspace,
) -> None:
    """The issue's case with the real functions: record_feedback (read the model, then write
    the labels) from several threads while telemetry flushes windows with predictions."""
    clf, x = fit_classifier()
    info = Registry.of(workspace).register("m", clf, training_data=x, alias="champion")
    telemetry = Telemetry(workspace.store, workspace.artifacts, sample_rate=0.0)
    rows = x.to_numpy()[:20]
    problems: list[str] = []

    def post_feedback(k: int) -> None:
        for i in range(15):
            body = json.dumps({"request_ids": [f"r{k}-{i}"], "labels": [1]}).encode()
            try:
                record_feedback(workspace.store, "m", body, SYSTEM_CLOCK)
            except Exception as exc:  # every failure is what the test reports
                problems.append(f"feedback {k}/{i}: {exc}")

    def flush() -> None:
        for i in range(15):
            for j, row in enumerate(rows):
                telemetry.ok(info, row[None, :], clf.predict(row[None, :]), None, 0.001, f"{i}-{j}")
            telemetry.flush()
            if telemetry._pending:
                problems.append(f"flush {i} left windows pending")

    threads = [threading.Thread(target=post_feedback, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=flush))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert problems == []
    with workspace.store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRecord)) == 45
        assert s.scalar(select(func.sum(ServingWindow.requests))) == 15 * len(rows)


def test_the_cli_says_busy_in_one_line_when_the_lock_is_held_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from shipyard.cli import main
    from shipyard.store import db

    (tmp_path / "home").mkdir()
    Store(f"sqlite:///{tmp_path / 'home' / 'shipyard.db'}").dispose()
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    # a command that writes (reads no longer wait for the write lock)
    monkeypatch.setattr("sys.argv", ["shipyard", "roles", "bind", "carol", "viewer"])
    holder = sqlite3.connect(tmp_path / "home" / "shipyard.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capfd.readouterr().err
    assert exited.value.code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the metadata database")
    assert "is busy" in lines[0] and "try again" in lines[0]

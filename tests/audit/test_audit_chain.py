"""The audit chain on SQLite and PostgreSQL: appends, the append-only triggers, and verify
naming each kind of tampering by the event it touched."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from shipyard import audit
from shipyard.audit.chain import row_hash
from shipyard.errors import InvalidInput
from shipyard.store import Store
from shipyard.store.tables import AuditChainHead, AuditEvent

T0 = 1_700_000_000.0
SQLITE_TRIGGERS = ("audit_events_no_update", "audit_events_no_delete", "audit_chain_keep_head")


def append(store: Store, n: int, actor: str = "alice") -> None:
    """``n`` events, one transaction each, as the wings write them."""
    for i in range(n):
        with store.session() as s:
            audit.record(
                s,
                actor=actor,
                action="model.alias",
                subject=("model", "digits"),
                details={"alias": "champion", "to": i + 1, "score": 0.1 * i},
                now=T0 + i,
            )


@contextmanager
def tamperer(store: Store) -> Iterator[Connection]:
    """A connection as someone holding the database's keys: the append-only triggers off."""
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            for name in SQLITE_TRIGGERS:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        else:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield conn


def set_seq(conn: Connection, old: int, new: int) -> None:
    conn.execute(update(AuditEvent).where(AuditEvent.seq == old).values(seq=new))


def broken(store: Store) -> audit.Tampering:
    verdict = audit.verify(store)
    assert verdict.tampering is not None, "the tampering went unnoticed"
    return verdict.tampering


class TestAnHonestChain:
    def test_verifies_and_links_every_event_to_the_one_before(self, store: Store) -> None:
        append(store, 5)
        verdict = audit.verify(store)
        assert verdict.ok and verdict.events == 5 and verdict.head_seq == 5
        events = sorted(audit.list_events(store).events, key=lambda e: e.seq)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == audit.GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert verdict.head_hash == events[-1].hash
        assert {e.mode for e in events} == {"embedded"}

    def test_an_empty_chain_verifies(self, store: Store) -> None:
        verdict = audit.verify(store)
        assert verdict.ok and verdict.events == 0 and verdict.head_hash == audit.GENESIS

    def test_the_hash_covers_the_rfc8785_encoding_of_the_fields(self, store: Store) -> None:
        append(store, 1)
        (event,) = audit.list_events(store).events
        assert event.hash == audit.event_hash(
            seq=1,
            time=T0,
            actor="alice",
            mode="embedded",
            action="model.alias",
            subject=("model", "digits"),
            details={"alias": "champion", "to": 1, "score": 0.0},
            prev_hash=audit.GENESIS,
        )

    def test_events_of_a_rolled_back_transaction_never_enter_the_chain(self, store: Store) -> None:
        append(store, 1)
        with pytest.raises(RuntimeError), store.session() as s:
            audit.record(s, actor="bob", action="x.y", subject=("m", "1"), now=T0)
            raise RuntimeError("the change failed")
        append(store, 1)
        verdict = audit.verify(store)
        assert verdict.ok and verdict.events == 2
        assert "bob" not in {e.actor for e in audit.list_events(store).events}

    def test_an_anchor_kept_from_an_earlier_verify_still_holds(self, store: Store) -> None:
        append(store, 3)
        first = audit.verify(store)
        append(store, 2)
        assert audit.verify(store, anchor=(first.head_seq, first.head_hash)).ok

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"action": "Approve!"}, "dotted lower-case"),
            ({"subject": ("", "x")}, "subject kind"),
            ({"mode": "cli"}, "mode"),
            ({"details": {"when": object()}}, "JSON cannot carry"),
            ({"mode": "server", "actor": ""}, "authenticated actor"),
        ],
    )
    def test_a_bad_event_is_refused_before_anything_commits(
        self, store: Store, fields: dict[str, Any], message: str
    ) -> None:
        event: dict[str, Any] = {
            "actor": "alice",
            "action": "model.alias",
            "subject": ("model", "m"),
            "now": T0,
        }
        with pytest.raises(InvalidInput, match=message), store.session() as s:
            audit.record(s, **{**event, **fields})
        assert audit.verify(store).events == 0


class TestTheTableIsAppendOnly:
    def test_update_and_delete_are_refused_by_the_database(self, store: Store) -> None:
        append(store, 2)
        with pytest.raises(DBAPIError, match="append-only"), store.session() as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 1).values(actor="mallory"))
        with pytest.raises(DBAPIError, match="append-only"), store.session() as s:
            s.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
        with pytest.raises(DBAPIError, match="append-only"), store.session() as s:
            s.execute(delete(AuditChainHead))
        assert audit.verify(store).ok and audit.verify(store).events == 2

    @pytest.mark.postgres
    def test_postgresql_refuses_truncate_too(self, migrated_postgres_url: str) -> None:
        store = Store(migrated_postgres_url)
        try:
            append(store, 1)
            with pytest.raises(DBAPIError, match="append-only"), store.session() as s:
                s.execute(text("TRUNCATE audit_events"))
            assert audit.verify(store).events == 1
        finally:
            store.dispose()


class TestVerifyNamesTheTampering:
    def test_an_edited_event(self, store: Store) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
        found = broken(store)
        assert (found.kind, found.seq) == ("edited", 3)
        assert "event 3" in found.message

    def test_an_edited_event_whose_hash_was_recomputed(self, store: Store) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(detail={"to": 99}))
        with store.session(readonly=True) as s:
            row = s.scalars(select(AuditEvent).where(AuditEvent.seq == 3)).one()
            forged = row_hash(row)
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(hash=forged))
        found = broken(store)
        assert (found.kind, found.seq) == ("edited", 3)

    def test_the_last_event_edited_and_rehashed_is_caught_by_the_head(self, store: Store) -> None:
        append(store, 3)
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
        with store.session(readonly=True) as s:
            forged = row_hash(s.scalars(select(AuditEvent).where(AuditEvent.seq == 3)).one())
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(hash=forged))
        found = broken(store)
        assert (found.kind, found.seq) == ("edited", 3)

    @pytest.mark.parametrize("seq", [1, 3, 5])
    def test_a_deleted_event_first_in_the_middle_or_last(self, store: Store, seq: int) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            conn.execute(delete(AuditEvent).where(AuditEvent.seq == seq))
        found = broken(store)
        assert (found.kind, found.seq) == ("deleted", seq)

    def test_a_deleted_event_with_the_rest_renumbered(self, store: Store) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            conn.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
            set_seq(conn, 4, 3)
            set_seq(conn, 5, 4)
            conn.execute(update(AuditChainHead).values(seq=4))
        found = broken(store)
        assert (found.kind, found.seq) == ("deleted", 3)

    def test_two_events_swapped(self, store: Store) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            set_seq(conn, 2, -2)
            set_seq(conn, 4, 2)
            set_seq(conn, -2, 4)
        found = broken(store)
        assert (found.kind, found.seq) == ("reordered", 2)
        assert "written as event 4" in found.message

    def test_two_neighbours_swapped(self, store: Store) -> None:
        append(store, 5)
        with tamperer(store) as conn:
            set_seq(conn, 3, -3)
            set_seq(conn, 4, 3)
            set_seq(conn, -3, 4)
        found = broken(store)
        assert (found.kind, found.seq) == ("reordered", 3)
        assert "written as event 4" in found.message

    def test_a_row_written_around_record(self, store: Store) -> None:
        append(store, 2)
        with store.session() as s:
            s.execute(
                insert(AuditEvent).values(
                    ts=T0, actor="mallory", action="policy.set", subject_kind="model",
                    subject_id="digits", detail={},
                )
            )  # fmt: skip
        found = broken(store)
        assert found.kind == "inserted" and "mallory" in found.message

    def test_a_rewritten_tail_is_caught_by_an_anchor(self, store: Store) -> None:
        """Recomputing every hash from an event on (and the head) fools the chain alone; the
        head kept from an earlier verify does not move."""
        append(store, 4)
        kept = audit.verify(store)
        with tamperer(store) as conn:
            conn.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
        with store.session(readonly=True) as s:
            rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        with tamperer(store) as conn:
            prev = rows[0].hash
            for row in rows[1:]:
                row.prev_hash = prev
                prev = row_hash(row)
                conn.execute(
                    update(AuditEvent)
                    .where(AuditEvent.seq == row.seq)
                    .values(prev_hash=row.prev_hash, hash=prev)
                )
            conn.execute(update(AuditChainHead).values(hash=prev))
        assert audit.verify(store).ok
        found = audit.verify(store, anchor=(kept.head_seq, kept.head_hash)).tampering
        assert found is not None and (found.kind, found.seq) == ("edited", 4)


class TestConcurrentAppenders:
    def test_many_writers_make_one_unbroken_chain(self, store: Store) -> None:
        """Eight threads, each with its own connection and transactions, append at once."""
        writers, each = 8, 25
        start = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                start.wait(timeout=60)
                append(store, each, actor=f"writer-{n}")
            except BaseException as exc:  # reported below, with the chain's state
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors[:3]
        verdict = audit.verify(store)
        assert verdict.ok, verdict.tampering
        assert verdict.events == verdict.head_seq == writers * each
        with store.session(readonly=True) as s:
            seqs = list(s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
        assert seqs == list(range(1, writers * each + 1))

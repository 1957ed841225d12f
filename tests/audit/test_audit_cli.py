"""``shipyard audit list|verify`` as a user runs them: a real process on a real workspace."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from cli_testkit import shipyard
from shipyard import audit
from shipyard.store.tables import AuditEvent
from shipyard.workspace import Workspace

T0 = 1_700_000_000.0


def _workspace_with_events() -> Workspace:
    ws = Workspace.open()
    for i, (actor, action) in enumerate(
        [("carol", "model.register"), ("alice", "model.alias"), ("bob", "rollout.start")]
    ):
        with ws.store.session() as s:
            audit.record(
                s,
                actor=actor,
                action=action,
                subject=("model", "digits"),
                details={"n": i},
                now=T0 + i,
            )
    return ws


def test_list_pages_and_filters_newest_first(tmp_path: Path) -> None:
    _workspace_with_events().store.dispose()
    out = shipyard("audit", "list", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert [e["seq"] for e in listing["events"]] == [3, 2, 1]
    assert listing["events"][0]["subject"] == {"kind": "model", "id": "digits"}
    assert listing["next_before"] is None

    out = shipyard("audit", "list", "--action", "model.*", "--limit", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "model.alias" in out.stdout and "model.register" not in out.stdout
    assert "shipyard audit list --before 2" in out.stdout

    out = shipyard("audit", "list", "--since", "yesterday", cwd=tmp_path)
    assert out.returncode == 1 and "--since 'yesterday'" in out.stderr
    assert "Traceback" not in out.stderr


def test_verify_passes_then_names_the_edited_event_and_exits_3(tmp_path: Path) -> None:
    ws = _workspace_with_events()
    out = shipyard("audit", "verify", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "intact: 3 events" in out.stdout
    head = audit.verify(ws.store)
    assert f"{head.head_seq}:{head.head_hash}" in out.stdout

    with ws.store.engine.begin() as conn:  # as someone with the database file would
        conn.exec_driver_sql("DROP TRIGGER audit_events_no_update")
        conn.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
    ws.store.dispose()
    out = shipyard("audit", "verify", cwd=tmp_path)
    assert out.returncode == 3
    assert "edited: event 2 (model.alias by mallory" in out.stderr
    assert "Traceback" not in out.stderr

    out = shipyard("audit", "verify", "--json", cwd=tmp_path)
    assert out.returncode == 3
    verdict = json.loads(out.stdout)
    assert verdict["ok"] is False
    assert verdict["tampering"]["kind"] == "edited" and verdict["tampering"]["seq"] == 2

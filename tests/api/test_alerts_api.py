"""Alerts, rules, receivers and silences through the control plane: over a real socket, on SQLite
and PostgreSQL, as the identities of the cast (olga operates, vic only views)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from apikit import Plane
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.daemon.leadership import record_config
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.store.alerting import AlertRecord, DaemonConfigRecord, NotificationRecord

runner = CliRunner()


def _seed_alerts(
    plane: Plane, rule: str, states: list[str], *, same_start: int = 0
) -> list[tuple[str, str]]:
    """Alerts of ``rule`` in these states, active one second apart (the first ``same_start`` at
    the same instant, so the cursor must break ties); (fingerprint, state), oldest first."""
    t0 = plane.clock.time() - 3600
    rows = []
    for i, state in enumerate(states):
        at = t0 + max(0, i - same_start + 1) if i >= same_start else t0
        fp = uuid.uuid4().hex[:16]
        rows.append(
            AlertRecord(
                fingerprint=fp,
                rule=f"{rule}/ticket",
                labels={"alertname": rule, "column": f"c{i}"},
                annotations={"summary": f"{rule} on c{i}"},
                state=state,
                value=float(i),
                active_at=at,
                fired_at=at + 60 if state != "pending" else None,
                last_true_at=at + 60,
                resolved_at=at + 120 if state == "resolved" else None,
            )
        )
    with plane.ws.store.session() as s:
        s.add_all(rows)
    return [
        (r.fingerprint, r.state) for r in sorted(rows, key=lambda r: (r.active_at, r.fingerprint))
    ]


def _pages(plane: Plane, who: str, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    with plane.http(who) as api:
        cursor = None
        while True:
            answer = api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            yield body
            cursor = body["next"]
            if cursor is None:
                return


def _audit(plane: Plane, action: str, silence_id: str) -> dict[str, Any]:
    with plane.http("admin") as api:
        found = api.get("/audit/events", params={"action": action, "subject_id": silence_id})
    [event] = found.json()["items"]
    return event  # type: ignore[no-any-return]


def _silence(plane: Plane, who: str, *matchers: str, duration: str = "2h") -> dict[str, Any]:
    with plane.http(who) as api:
        made = api.post(
            "/silences", json={"matchers": list(matchers), "duration": duration, "comment": "why"}
        )
    assert made.status_code == 200, made.text
    return made.json()  # type: ignore[no-any-return]


def _silence_count(plane: Plane) -> int:
    return sum(len(p["items"]) for p in _pages(plane, "vic", "/silences", limit=1000))


def test_alerts_page_by_a_keyset_cursor_and_filter_by_state(plane: Plane) -> None:
    states = ["firing", "pending", "resolved", "firing", "firing", "pending", "resolved"]
    expected = _seed_alerts(plane, "PagedDrift", states, same_start=3)
    pages = list(_pages(plane, "vic", "/alerts", limit=2))
    seen = [a["fingerprint"] for p in pages for a in p["items"] if a["rule"] == "PagedDrift/ticket"]
    assert seen == [fp for fp, _ in expected]
    assert all(len(p["items"]) <= 2 for p in pages) and len(pages) >= 4
    firing = [
        a for p in _pages(plane, "vic", "/alerts", state="firing", limit=1) for a in p["items"]
    ]
    assert [a["fingerprint"] for a in firing if a["rule"] == "PagedDrift/ticket"] == [
        fp for fp, state in expected if state == "firing"
    ]
    assert all(a["state"] == "firing" for a in firing)
    with plane.http("vic") as api:
        assert api.get("/alerts", params={"state": "angry"}).status_code == 400
        bad = api.get("/alerts", params={"cursor": "yesterday"})
        assert bad.status_code == 400 and "query.cursor" in bad.json()["error"]
        assert api.get("/alerts", params={"limit": 1001}).status_code == 400


def test_one_alert_shows_its_timeline_and_the_silences_muting_it(plane: Plane) -> None:
    [(fp, _)] = _seed_alerts(plane, "TimelineDrift", ["firing"])
    with plane.ws.store.session() as s:
        alert = s.get(AlertRecord, fp)
        assert alert is not None
        sent_at = alert.fired_at
        s.add(
            NotificationRecord(
                idempotency_key=uuid.uuid4().hex,
                receiver="oncall",
                group_key="oncall:{}",
                payload={"alerts": [{"fingerprint": fp, "status": "firing"}]},
                status="delivered",
                attempts=2,
                created_at=sent_at,
                next_attempt_at=sent_at,
                delivered_at=sent_at,
            )
        )
    muting = _silence(plane, "olga", 'alertname="TimelineDrift"')
    with plane.http("vic") as api:
        shown = api.get(f"/alerts/{fp}")
        assert shown.status_code == 200, shown.text
        missing = api.get("/alerts/0000000000000000")
    body = shown.json()
    assert body["annotations"] == {"summary": "TimelineDrift on c0"}
    assert [e["event"] for e in body["timeline"]] == ["pending", "firing", "notification"]
    assert body["timeline"][2]["receiver"] == "oncall" and body["timeline"][2]["attempts"] == 2
    assert [s["id"] for s in body["silenced_by"]] == [muting["id"]]
    assert missing.status_code == 404 and missing.json()["type"] == "NotFound"

    shown_cli = runner.invoke(app, ["alerts", "show", fp], env=plane.env("vic"))
    assert shown_cli.exit_code == 0, shown_cli.output
    assert "TimelineDrift" in shown_cli.output and f"silenced by {muting['id']}" in shown_cli.output


def test_an_operators_silence_is_recorded_under_their_identity(plane: Plane) -> None:
    made = _silence(plane, "olga", 'alertname="OlgasDrift"', 'severity=~"page|ticket"')
    assert made["createdBy"] == "olga" and made["active"] is True
    assert made["ends_at"] - made["starts_at"] == 7200
    event = _audit(plane, "silence.create", made["id"])
    assert (event["actor"], event["mode"]) == ("olga", "server")

    done = runner.invoke(
        app,
        ["alerts", "silence", 'alertname="OlgasOtherDrift"', "-c", "backfill"],
        env={**plane.env("olga"), "SHIPYARD_USER": "mallory"},
    )
    assert done.exit_code == 0, done.output
    listed = runner.invoke(app, ["alerts", "silences", "--json"], env=plane.env("vic"))
    assert listed.exit_code == 0, listed.output
    [via_cli] = [
        s for s in json.loads(listed.output) if s["matchers"][0]["value"] == "OlgasOtherDrift"
    ]
    assert via_cli["createdBy"] == "olga" and via_cli["comment"] == "backfill"
    assert set(via_cli) == {
        "id", "matchers", "startsAt", "endsAt", "createdBy", "comment", "active"
    }  # fmt: skip
    assert _audit(plane, "silence.create", via_cli["id"])["actor"] == "olga"


def test_a_viewer_may_neither_silence_nor_expire(plane: Plane) -> None:
    olgas = _silence(plane, "olga", 'alertname="ViewerDrift"')
    before = _silence_count(plane)
    with plane.http("vic") as api:
        made = api.post(
            "/silences", json={"matchers": ['alertname="X"'], "duration": "1h", "comment": "x"}
        )
        ended = api.post(f"/silences/{olgas['id']}/expire")
    assert made.status_code == 403 and "vic may not create or expire silences" in made.text
    assert ended.status_code == 403
    assert _silence_count(plane) == before
    [still] = [
        s
        for p in _pages(plane, "vic", "/silences", active=True, limit=1000)
        for s in p["items"]
        if s["id"] == olgas["id"]
    ]
    assert still["active"] is True
    cli = runner.invoke(
        app, ["alerts", "silence", 'alertname="X"', "-c", "x"], env=plane.env("vic")
    )
    assert cli.exit_code == 4 and "vic may not create or expire silences" in cli.output


def test_an_operator_over_one_model_silences_that_model_only(plane: Plane) -> None:
    store, now = plane.ws.store, plane.clock.time()
    bind_role(store, "mona", "operator", "model:digits", actor="setup", now=now, mode="embedded")
    token = create_token(store, "mona", actor="setup", now=now, mode="embedded").secret
    plane.token["mona"] = token
    made = _silence(plane, "mona", 'model="digits"', 'alertname="ModelLatency"')
    assert made["createdBy"] == "mona"
    with plane.http("mona") as api:
        for matchers in (['model="cancer"'], ['model=~"digits"'], ['alertname="ModelLatency"']):
            refused = api.post(
                "/silences", json={"matchers": matchers, "duration": "1h", "comment": "x"}
            )
            assert refused.status_code == 403, (matchers, refused.text)
        olgas = _silence(plane, "olga", 'model="cancer"')
        assert api.post(f"/silences/{olgas['id']}/expire").status_code == 403
        assert api.post(f"/silences/{made['id']}/expire").status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"matchers": ["nonsense"]}, "body.matchers", "bad matcher 'nonsense'"),
        ({"matchers": ['a=~"("']}, "body.matchers", "bad regular expression"),
        ({"matchers": []}, "body.matchers", "at least 1"),
        ({"matchers": ["x" * 501]}, "body.matchers", "at most 500"),
        ({"duration": "forever"}, "body.duration", "bad duration 'forever'"),
        ({"duration": "400d"}, "body.duration", "at most 366d"),
        ({"duration": "0s"}, "body.duration", "more than 0s"),
        ({"comment": ""}, "body.comment", "at least 1"),
        ({"until": "tomorrow"}, "body.until", "Extra inputs"),
    ],
)
def test_a_malformed_silence_is_400_naming_the_field(
    plane: Plane, body: dict[str, Any], field: str, says: str
) -> None:
    before = _silence_count(plane)
    full = {"matchers": ['alertname="Y"'], "duration": "1h", "comment": "y", **body}
    with plane.http("olga") as api:
        answer = api.post("/silences", json=full)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "InvalidInput"
    assert field in error["error"] and says in error["error"]
    assert _silence_count(plane) == before


def test_a_silence_muting_everything_is_refused(plane: Plane) -> None:
    with plane.http("olga") as api:
        answer = api.post(
            "/silences", json={"matchers": ['a=~".*"'], "duration": "1h", "comment": "all"}
        )
    assert answer.status_code == 400 and "match every alert" in answer.json()["error"]


def test_expiring_a_silence_ends_it_now_and_records_who(plane: Plane) -> None:
    made = _silence(plane, "olga", 'alertname="ExpiringDrift"')
    plane.clock.advance(30)
    with plane.http("admin") as api:
        ended = api.post(f"/silences/{made['id']}/expire")
        missing = api.post("/silences/nope/expire")
    assert ended.status_code == 200, ended.text
    assert ended.json()["active"] is False
    assert ended.json()["ends_at"] == pytest.approx(plane.clock.time())
    assert missing.status_code == 404 and "no silence named 'nope'" in missing.json()["error"]
    event = _audit(plane, "silence.expire", made["id"])
    assert (event["actor"], event["mode"]) == ("admin", "server")
    inactive = [
        s["id"] for p in _pages(plane, "vic", "/silences", active=False) for s in p["items"]
    ]
    assert made["id"] in inactive

    again = _silence(plane, "olga", 'alertname="ExpiringDrift"')
    cli = runner.invoke(app, ["alerts", "unsilence", again["id"]], env=plane.env("olga"))
    assert cli.exit_code == 0 and f"silence {again['id']} expired" in cli.output
    assert _audit(plane, "silence.expire", again["id"])["actor"] == "olga"


SLACK_SECRET = "T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"
HOOK_TOKEN = "s3cr3t-t0k3n-0123456789abcdef"
CONFIG = f"""
receivers:
  - {{name: team-slack, type: slack, url: "https://hooks.slack.example/services/{SLACK_SECRET}"}}
  - name: team-hook
    type: webhook
    url: "https://bot:hunter2@hooks.example:8443/alert/{HOOK_TOKEN}?token=abc&team=ml"
    headers: {{Authorization: "Bearer very-secret"}}
rules: [{{name: FeatureDrift, metric: drift, threshold: 0.3}}]
"""


@pytest.fixture
def recorded(plane: Plane) -> Iterator[None]:
    """A daemon's recorded configuration (as `shipyard daemon` records it when it leads)."""
    record_config(
        plane.ws.store, "alerting", "daemon-1", "/etc/shipyard/alerting.yaml", CONFIG,
        plane.clock.time(),
    )  # fmt: skip
    yield
    with plane.ws.store.session() as s:
        row = s.get(DaemonConfigRecord, "alerting")
        if row is not None:
            s.delete(row)


@pytest.mark.usefixtures("recorded")
def test_receivers_never_show_their_secrets(plane: Plane) -> None:
    [page] = list(_pages(plane, "vic", "/receivers"))
    assert page["config"]["source"] == "/etc/shipyard/alerting.yaml"
    assert page["config"]["daemon"] == "daemon-1" and page["config"]["running"] is False
    by_name = {r["name"]: r for r in page["items"]}
    assert by_name["team-slack"]["destination"] == "https://hooks.slack.example/***"
    assert by_name["team-hook"]["destination"] == (
        "https://***@hooks.example:8443/alert/***?token=***&team=***"
    )
    assert by_name["team-hook"]["headers"] == {"Authorization": "***"}
    cli = runner.invoke(app, ["alerts", "receivers"], env=plane.env("vic"))
    assert cli.exit_code == 0, cli.output
    assert "team-hook" in cli.output and "as loaded by daemon daemon-1" in cli.output
    for secret in (SLACK_SECRET, "XXXXXXXX", "hunter2", "bot:", HOOK_TOKEN, "abc", "very-secret"):
        assert secret not in json.dumps(page) and secret not in cli.output


@pytest.mark.usefixtures("recorded")
def test_rules_and_export_are_the_configuration_in_force(plane: Plane) -> None:
    pages = list(_pages(plane, "vic", "/alert-rules", limit=5))
    rules = {r["name"]: r for p in pages for r in p["items"]}
    assert len(pages) > 1 and rules["FeatureDrift"]["origin"] == "/etc/shipyard/alerting.yaml"
    assert rules["ModelOutage"]["promql"] == "shipyard_serving_probe_up < 1"
    with plane.http("vic") as api:
        exported = api.get("/alert-rules/export").json()
    assert "alert: FeatureDrift" in exported["text"]
    cli = runner.invoke(app, ["alerts", "export"], env=plane.env("vic"))
    assert cli.exit_code == 0 and cli.output == exported["text"]


def test_the_cli_through_the_server_prints_what_the_embedded_mode_prints(plane: Plane) -> None:
    _seed_alerts(plane, "SameDrift", ["firing", "pending"])
    env = {
        "SHIPYARD_HOME": str(plane.ws.settings.home),
        "SHIPYARD_DB_URL": plane.ws.settings.database_url,
    }
    for args in (["alerts", "list", "--json"], ["alerts", "rules", "--json"]):
        local = runner.invoke(app, args, env=env)
        remote = runner.invoke(app, args, env={**env, **plane.env("vic")})
        assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
        assert json.loads(local.output) == json.loads(remote.output)
    listed = runner.invoke(app, ["alerts", "list", "--state", "firing"], env=plane.env("vic"))
    assert listed.exit_code == 0 and "SameDrift" in listed.output
    refused = runner.invoke(app, ["alerts", "test", "log"], env=plane.env("admin"))
    assert refused.exit_code == 1 and "never hands out a receiver's secrets" in refused.output

"""The model registry on the control plane: models, versions and aliases read a page at a time,
and an alias moved only by a deployer, recorded under the authenticated name; over a real
socket, on SQLite and PostgreSQL, through HTTP and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from apikit import Plane
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.deploy.gate import record_gate
from shipyard.errors import Forbidden
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.registry import ColumnSpec, Registry, Signature

runner = CliRunner()
OTHERS = ("aa-0", "aa-1", "aa-2", "aa-3", "aa-4")


@pytest.fixture(scope="module")
def seeded(plane: Plane) -> Plane:
    """``digits`` with three versions (champion → v2, a gate result on v3) and five more
    models of one version each."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    clf = LogisticRegression().fit(frame.to_numpy(), (frame["a"] > 0).astype(int))
    signature = Signature(tuple(ColumnSpec(c, "double") for c in "abc"))
    registry = Registry(plane.ws.store, plane.ws.artifacts, plane.clock, "setup")
    for v in (1, 2, 3):  # only v3 profiles its training data (the slow part)
        registry.register(
            "digits", clf, metrics={"accuracy": v / 4}, tags={"team": "vision"},
            alias="champion" if v <= 2 else None,
            **({"training_data": frame} if v == 3 else {"signature": signature}),
        )  # fmt: skip
    for name in OTHERS:
        registry.register(name, clf, signature=signature)
    with plane.ws.store.session() as s:
        evidence = {"reasons": ["accuracy 0.83 >= 0.8"], "metrics": {"accuracy": 0.83}}
        record_gate(s, "digits", 3, True, evidence, "setup", plane.clock.time())
    return plane


def test_models_are_listed_by_name_a_page_at_a_time(seeded: Plane) -> None:
    names: list[str] = []
    pages = 0
    cursor = None
    with seeded.http("vic") as api:
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            answer = api.get("/models", params=params)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert len(body["items"]) <= 2
            names += [m["name"] for m in body["items"]]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
        digits = api.get("/models", params={"limit": 1000}).json()["items"][-1]
    assert names == sorted([*OTHERS, "digits"]) and pages == 3
    assert digits["latest_version"] == 3 and digits["aliases"] == {"champion": 2}
    assert digits["live"]["versions"] == [{"version": 2, "weight": 1.0, "canary": False}]
    assert digits["live"]["decided_by"] == "alias"


def test_versions_come_newest_first_in_pages_without_signatures(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        first = api.get("/models/digits/versions", params={"limit": 2}).json()
        second = api.get(
            "/models/digits/versions", params={"limit": 2, "cursor": first["next"]}
        ).json()
    assert [v["version"] for v in first["items"]] == [3, 2] and first["next"] is not None
    assert [v["version"] for v in second["items"]] == [1] and second["next"] is None
    assert all("signature" not in v for v in first["items"])
    assert first["items"][1]["aliases"] == ["champion"]
    assert first["items"][0]["metrics"] == {"accuracy": 0.75}


def test_one_version_carries_signature_lineage_and_gate_results(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        v3 = api.get("/models/digits/versions/3").json()
        model = api.get("/models/digits").json()
    assert [c["name"] for c in v3["signature"]["inputs"]] == ["a", "b", "c"]
    assert v3["tags"] == {"team": "vision"} and v3["created_by"] == "setup"
    assert v3["has_reference_profile"] is True and "lineage" in v3
    [gate] = v3["gate_results"]
    assert gate["passed"] is True and gate["actor"] == "setup"
    assert gate["evidence"]["metrics"] == {"accuracy": 0.83}
    assert model["default_alias"] == "champion" and model["default_version"] == 2
    assert model["latest_version"] == 3


def test_a_viewer_cannot_move_an_alias_and_a_deployer_can_under_their_own_name(
    seeded: Plane,
) -> None:
    with seeded.http("vic") as api:
        refused = api.put("/models/digits/aliases/challenger", json={"version": 3})
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"] == "Forbidden"
        assert "vic may not deploy, steer or roll back over model:digits" in refused.text
        assert "challenger" not in api.get("/models/digits").json()["aliases"]
    with seeded.http("bob") as api:
        moved = api.put(
            "/models/digits/aliases/challenger", json={"version": 3, "reason": "try v3"}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["from"] is None and moved.json()["to"] == 3
        assert moved.json()["actor"] == "bob"
        history = api.get("/models/digits/aliases", params={"alias": "challenger"}).json()
        events = api.get("/audit/events", params={"action": "model.alias", "limit": 1}).json()
    assert history["aliases"]["challenger"] == 3
    assert [(h["to"], h["actor"], h["reason"]) for h in history["items"]] == [(3, "bob", "try v3")]
    latest = events["items"][0]
    assert latest["actor"] == "bob" and latest["mode"] == "server"
    assert latest["subject"] == {"kind": "model", "id": "digits"}
    assert latest["details"]["to"] == 3 and latest["details"]["reason"] == "try v3"


def test_a_deployer_over_another_model_may_not_move_this_ones_aliases(seeded: Plane) -> None:
    ws, now = seeded.ws, seeded.clock.time()
    bind_role(ws.store, "dora", "deployer", "model:aa-0", actor="setup", now=now, mode="embedded")
    token = create_token(ws.store, "dora", actor="setup", now=now, mode="embedded").secret
    with seeded.http() as api:
        api.headers["Authorization"] = f"Bearer {token}"
        other = api.put("/models/digits/aliases/challenger", json={"version": 1})
        own = api.put("/models/aa-0/aliases/challenger", json={"version": 1})
        gone = api.delete("/models/aa-0/aliases/challenger", params={"reason": "done"})
    assert other.status_code == 403 and "over model:digits" in other.json()["error"]
    assert own.status_code == 200, own.text
    assert gone.status_code == 200 and gone.json()["from"] == 1 and gone.json()["to"] is None


BAD_INPUT = [
    ("PUT", "/models/digits/aliases/challenger", {"version": "three"}, "version"),
    ("PUT", "/models/digits/aliases/challenger", {"version": 0}, "version"),
    ("PUT", "/models/digits/aliases/challenger", {"version": 1, "colour": "red"}, "colour"),
    ("PUT", "/models/digits/aliases/challenger", {"version": 1, "reason": "x" * 501}, "reason"),
    ("PUT", "/models/digits/aliases/9lives", {"version": 1}, "alias"),
    ("GET", "/models", {"limit": 0}, "limit"),
    ("GET", "/models/digits/versions", {"cursor": "yesterday"}, "cursor"),
    ("GET", "/models/digits/aliases", {"cursor": "-1"}, "cursor"),
    ("GET", "/models/digits/versions/three", None, "version"),
]


def test_bad_input_is_400_naming_the_field_and_changes_nothing(seeded: Plane) -> None:
    with seeded.http("bob") as api:
        before = api.get("/models/digits/aliases").json()
        for method, path, payload, field in BAD_INPUT:
            if method == "PUT":
                answer = api.put(path, json=payload)
            else:
                answer = api.get(path, params=payload)
            assert answer.status_code == 400, (path, payload, answer.text)
            assert answer.json()["type"] == "InvalidInput"
            assert field in answer.json()["error"], (field, answer.text)
        after = api.get("/models/digits/aliases").json()
    assert after == before


def test_an_unknown_model_is_404_with_suggestions(seeded: Plane) -> None:
    with seeded.http("bob") as api:
        for method, path in [
            ("GET", "/models/digts"),
            ("GET", "/models/digts/versions"),
            ("GET", "/models/digts/versions/1"),
            ("GET", "/models/digts/aliases"),
            ("PUT", "/models/digts/aliases/champion"),
            ("DELETE", "/models/digts/aliases/champion"),
        ]:
            answer = api.request(method, path, json={"version": 1} if method == "PUT" else None)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["type"] == "NotFound"
            assert "no model named 'digts'; did you mean 'digits'?" in answer.json()["error"]


def test_an_unknown_version_is_404(seeded: Plane) -> None:
    with seeded.http("vic") as api:
        missing = api.get("/models/digits/versions/99")
    assert missing.status_code == 404 and "digits/99" in missing.json()["error"]
    with seeded.http("bob") as api:
        moved = api.put("/models/digits/aliases/champion", json={"version": 99})
    assert moved.status_code == 404 and "digits/99" in moved.json()["error"]


def test_the_cli_reads_and_moves_through_the_server(seeded: Plane) -> None:
    listed = runner.invoke(app, ["models", "list", "--json"], env=seeded.env("vic"))
    assert listed.exit_code == 0, listed.output
    with seeded.http("vic") as api:
        assert (
            json.loads(listed.output) == api.get("/models", params={"limit": 1000}).json()["items"]
        )
    shown = runner.invoke(app, ["models", "show", "digits", "--json"], env=seeded.env("vic"))
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["version"] == 2 and body["aliases"]["champion"] == 2
    assert body["alias_history"][0]["to"] == 1  # oldest first, as the embedded CLI prints it
    human = runner.invoke(
        app,
        ["models", "show", "digits", "--version", "3"],
        env={**seeded.env("vic"), "COLUMNS": "200"},
    )
    assert human.exit_code == 0, human.output
    assert "digits v3" in human.output and "blessed" in human.output

    refused = runner.invoke(
        app, ["models", "alias", "digits", "shadow", "1"], env=seeded.env("vic")
    )
    assert refused.exit_code == Forbidden.exit_code
    assert "error: vic may not deploy" in refused.output
    moved = runner.invoke(
        app, ["models", "alias", "digits", "shadow", "1", "--reason", "cli"], env=seeded.env("bob")
    )
    assert moved.exit_code == 0, moved.output
    assert "digits@shadow: None → 1" in moved.output
    assert "serving: v2 100% by alias champion" in moved.output

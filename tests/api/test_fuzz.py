"""Property-based fuzzing of the whole control plane from its own OpenAPI description.

Schemathesis reads ``/api/v1/openapi.json`` from a live server (a real socket, seeded data) and
generates requests for every operation the registry holds, whoever added it: valid ones and
invalid ones as an admin, and valid ones with no, a malformed or a forged credential. Every
answer must come within :data:`TIMEOUT_S`, never be a 5xx, and be the house's error shape when
it is an error; without a valid credential it must be a 401. After the fuzz the server still
answers ``/healthz`` and its audit chain is intact (every write the fuzz made was audited in its
own transaction).

The budget is fixed per run, not per operation (:data:`BUDGET` requests split across the
operations, at least :data:`MIN_PER_OP` each), so the test's time does not grow with the API.
Generation is derandomized: the same API gives the same requests on every run.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from apikit import POSTGRES_URL, Plane, plane_on
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from shipyard.api.app import API_PREFIX
from shipyard.api.operations import Operation, load_all
from shipyard.audit import record
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.store.registry import ModelAlias, ModelVersion, RegisteredModel
from shipyard.store.tables import Finding, MetricPoint, PipelineRecord, Run, StepRun

BUDGET = {"sqlite": 1200, "postgresql": 150}  # PostgreSQL: the same operations, a sample
"""Generated requests per backend, split across the operations (PostgreSQL's run is there for
what only it refuses, such as an integer past its column's 32 bits, and costs 4 times less)."""
AT_LEAST = {"sqlite": 1000, "postgresql": 250}
"""Requests actually sent: fewer than the budget where an operation has fewer distinct inputs
than its share (``GET /whoami`` has one valid request)."""
MIN_PER_OP = 6
TIMEOUT_S = 5.0
"""Every answer within this: a request that makes the server work unboundedly fails here."""
SHARES = {"valid": 0.5, "invalid": 0.3, "unauthenticated": 0.2}
MAX_REPORTED = 5

OPERATIONS = sorted(load_all().values(), key=lambda o: o.name)


@dataclass
class Fuzz:
    backend: str
    plane: Plane
    schema: Any
    known: dict[str, list[str]]
    """Path parameter values that name seeded things, harvested from the lists."""
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    slowest_s: float = 0.0


def seed(plane: Plane) -> None:
    """A little of everything a list can show: pipelines, runs with steps, models with versions
    and aliases, metric points, findings, and audit events on a valid chain."""
    now = plane.clock.time()
    with plane.ws.store.session() as s:
        for p in range(3):
            s.add(
                PipelineRecord(
                    name=f"train-{p}", kind="training", file=f"pipelines/train_{p}.py",
                    schedule=None, spec={"steps": [], "params": {}}, updated_at=now,
                )
            )  # fmt: skip
        s.flush()
        for r in range(30):
            run = Run(
                pipeline=f"train-{r % 3}", kind="training", file="pipelines/train.py",
                status=("succeeded", "failed", "running")[r % 3], params={"lr": 0.1, "n": r},
                tags={"team": "é-ß"}, created_by="bob", created_at=now - 3600 + r,
                started_at=now - 3600 + r, ended_at=None if r % 3 == 2 else now - 3000 + r,
            )  # fmt: skip
            s.add(run)
            s.flush()
            for step in ("load", "fit"):
                s.add(
                    StepRun(
                        run_id=run.id, step=step, status=run.status, attempt=1,
                        started_at=run.started_at, ended_at=run.ended_at,
                        resources={"cpu": 1, "memory": 2**30}, enforcement={},
                    )
                )  # fmt: skip
            s.add_all(
                MetricPoint.of("loss", {"run_id": run.id}, now - 3600 + r + i, 1.0 / (i + 1))
                for i in range(10)
            )
            s.add(
                Finding(
                    monitor="training_time", subject=f"train-{r % 3}", run_id=run.id,
                    status="ok", summary="within bounds", evidence={"seconds": 12.5},
                    labels={}, ts=now - 3000 + r,
                )
            )  # fmt: skip
        for m in range(5):
            name = f"model-{m}"
            s.add(RegisteredModel(name=name, description="d", created_at=now, created_by="bob"))
            s.flush()
            for v in (1, 2, 3):
                s.add(
                    ModelVersion(
                        model=name, version=v, flavor="sklearn", artifact_digest="0" * 64,
                        signature={}, metrics={"accuracy": 0.9}, tags={}, lineage={},
                        run_id=None, created_at=now + v, created_by="bob",
                    )
                )  # fmt: skip
                record(
                    s, actor="bob", action="model.register", details={"flavor": "sklearn"},
                    subject=("model_version", f"{name}/{v}"), now=now + v, mode="embedded",
                )  # fmt: skip
            s.add(ModelAlias(model=name, alias="champion", version=2, updated_at=now))


def harvest(plane: Plane, token: str) -> dict[str, list[str]]:
    """Values for each path parameter, read from the list its path hangs under.

    ``/tokens/{token_id}/revoke`` hangs under ``GET /tokens``: the ``token_id`` (else ``id``,
    else ``name``) of that list's first page's items. Parameters further down a path are read
    with the ones before them filled in (``/models/{name}/versions/{version}`` reads
    ``/models/model-0/versions``). So operations added later are fed real names too."""
    lists = {op.path for op in OPERATIONS if op.method == "GET"}
    known: dict[str, list[str]] = {}
    with httpx.Client(
        base_url=plane.api, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S
    ) as api:
        for op in OPERATIONS:
            for param in op.path_params:
                if param in known:
                    continue
                parent = op.path.split("/{" + param + "}")[0]
                if parent not in lists:
                    continue
                filled = parent
                for earlier in op.path_params:
                    if "{" + earlier + "}" in filled:
                        if not known.get(earlier):
                            break
                        filled = filled.replace("{" + earlier + "}", known[earlier][0])
                else:
                    answer = api.get(filled)
                    if answer.status_code != 200:
                        continue
                    values = []
                    for item in answer.json().get("items", [])[:20]:
                        if not isinstance(item, dict):
                            continue
                        for key in (param, "id", "name"):
                            if isinstance(item.get(key), str | int):
                                values.append(str(item[key]))
                                break
                    if values:
                        known[param] = values
    return known


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fuzz(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzz]:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("SHIPYARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    home = tmp_path_factory.mktemp("fuzz")
    # forged credentials must reach the token check, not the limit on failed sign-ins
    with plane_on(request.param, home, server={"login_failures": 1_000_000}) as plane:
        seed(plane)
        schema = schemathesis.openapi.from_url(plane.api + "/openapi.json", timeout=TIMEOUT_S)
        yield Fuzz(request.param, plane, schema, harvest(plane, plane.token["admin"]))


def fresh_admin(plane: Plane, label: str) -> str:
    """A token of an admin of its own for one operation's fuzz: a generated request that revokes
    tokens or unbinds roles cannot lock the next operation's fuzz out (no generated or harvested
    value names it)."""
    name = f"fuzzer-{label.replace('.', '-')}"
    now = plane.clock.time()
    bind_role(plane.ws.store, name, "admin", "*", actor="setup", now=now, mode="embedded")
    return create_token(plane.ws.store, name, actor="setup", now=now, mode="embedded").secret


def share(backend: str, kind: str) -> int:
    per_op = max(MIN_PER_OP, math.ceil(BUDGET[backend] / max(1, len(OPERATIONS))))
    return max(1, round(per_op * SHARES[kind]))


def credentials() -> st.SearchStrategy[dict[str, str]]:
    """No credential, a malformed one, a well-formed unknown token, or any printable bearer."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    fixed = st.sampled_from(
        [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
            {"Authorization": "Bearer shy_000000000000_" + "A" * 43},
            {"Authorization": "Bearer not-a-token"},
        ]
    )
    return fixed | printable.map(lambda s: {"Authorization": f"Bearer {s}"})


def strategy(fuzz: Fuzz, op: Operation, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """Cases for ``op``: path parameters generated, or (half the time, for positive cases) the
    names of seeded things, so that operations on one thing get past their 404."""
    target = fuzz.schema[API_PREFIX + op.path][op.method]
    generated = target.as_strategy(generation_mode=mode)
    if mode is not GenerationMode.POSITIVE or not all(p in fuzz.known for p in op.path_params):
        return generated
    combos = [{p: fuzz.known[p][i % len(fuzz.known[p])] for p in op.path_params} for i in range(4)]
    real = [target.as_strategy(path_parameters=c) for c in combos]
    return st.one_of(generated, st.one_of(*real))


def problems_of(response: schemathesis.Response, *, unauthenticated: bool) -> list[str]:
    found = []
    if response.status_code >= 500:
        found.append(f"{response.status_code}: {response.text[:200]}")
    if unauthenticated and response.status_code != 401:
        found.append(f"{response.status_code} without a valid credential (401 expected)")
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and {"error", "type"} <= body.keys()):
            found.append(f"{response.status_code} is not {{error, type}}: {response.text[:200]}")
    return found


def run_fuzz(fuzz: Fuzz, op: Operation, kind: str) -> list[str]:
    """Send :func:`share` generated requests of ``kind`` to ``op``; the problems found, each
    with a curl command that repeats it."""
    plane = fuzz.plane
    token = fresh_admin(plane, f"{op.name}.{kind}")
    mode = GenerationMode.NEGATIVE if kind == "invalid" else GenerationMode.POSITIVE
    cases = strategy(fuzz, op, mode)
    unauthenticated = kind == "unauthenticated"
    auth = credentials() if unauthenticated else st.just({"Authorization": f"Bearer {token}"})
    problems: list[str] = []
    session = requests.Session()

    @settings(
        max_examples=share(fuzz.backend, kind),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, headers=auth)
    def send(case: Any, headers: dict[str, str]) -> None:
        try:
            response = case.call(
                base_url=plane.url, session=session, headers=headers, timeout=TIMEOUT_S
            )
        except requests.Timeout:
            problems.append(f"no answer within {TIMEOUT_S} s: {case.as_curl_command(headers)}")
            return
        fuzz.sent[op.name] += 1
        fuzz.slowest_s = max(fuzz.slowest_s, response.elapsed)
        for problem in problems_of(response, unauthenticated=unauthenticated):
            problems.append(f"{problem}\n    {case.as_curl_command(headers)}")

    try:
        send()
    finally:
        session.close()
    return problems


CASES = [
    pytest.param(op, kind, id=f"{kind}-{op.name}")
    for kind in SHARES
    for op in OPERATIONS
    # an operation without parameters cannot be sent anything invalid
    if kind != "invalid" or op.path_params or op.query or op.body
]


@pytest.mark.parametrize(("op", "kind"), CASES)
def test_generated_requests_get_a_bounded_answer_and_no_server_error(
    fuzz: Fuzz, op: Operation, kind: str
) -> None:
    problems = run_fuzz(fuzz, op, kind)
    assert not problems, f"{len(problems)} bad answers from {op.name} ({kind}):\n" + "\n".join(
        problems[:MAX_REPORTED]
    )


def test_the_server_is_well_after_the_fuzz(fuzz: Fuzz) -> None:
    """Still answering at once, its audit chain intact, and the fuzz as large as promised."""
    started = time.monotonic()
    with httpx.Client(base_url=fuzz.plane.url, timeout=TIMEOUT_S) as plain:
        assert plain.get("/healthz").json() == {"status": "ok"}
    assert time.monotonic() - started < TIMEOUT_S
    token = fresh_admin(fuzz.plane, "after")
    with httpx.Client(base_url=fuzz.plane.api, timeout=TIMEOUT_S) as api:
        answer = api.get("/audit/verify", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["ok"], verdict["tampering"]
    if set(fuzz.sent) != {op.name for op in OPERATIONS}:
        pytest.skip("only part of the fuzz ran (-k): its size is not checked")
    sent = sum(fuzz.sent.values())
    print(f"\n{fuzz.backend}: {sent} generated requests, slowest answer {fuzz.slowest_s:.3f} s")
    assert sent >= AT_LEAST[fuzz.backend], dict(fuzz.sent)


def test_a_seq_past_32_bits_is_a_bad_request_not_a_server_error(fuzz: Fuzz) -> None:
    """Found by this fuzz: PostgreSQL refused `before=2**62` against the INTEGER seq column and
    the audit list answered 500."""
    token = fresh_admin(fuzz.plane, "seq")
    with httpx.Client(base_url=fuzz.plane.api, timeout=TIMEOUT_S) as api:
        auth = {"Authorization": f"Bearer {token}"}
        for path, query in (
            ("/audit/events", {"before": 2**62}),
            ("/audit/verify", {"anchor_seq": 2**31, "anchor_hash": "0" * 64}),
        ):
            answer = api.get(path, params=query, headers=auth)
            assert answer.status_code == 400, answer.text
            assert next(iter(query)) in answer.json()["error"]
        assert api.get("/audit/events", params={"before": 2**31 - 1}, headers=auth).is_success

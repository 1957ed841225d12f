"""Large bodies are decoded in a helper process: same answers, same refusals, no orphan helper."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from serving.conftest import fit_classifier, free_port, start
from serving.processes import kill_and_await_helper
from shipyard.errors import Overloaded, SchemaViolation
from shipyard.registry import Registry
from shipyard.registry.signature import Signature
from shipyard.serving import LiveModels, Telemetry, protocol_mlflow
from shipyard.serving.app import ServingApp
from shipyard.serving.decoding import HELPER_NICENESS, Decoded, Decoder
from shipyard.serving.limits import RequestLimits, RequestTooLarge
from shipyard.workspace import Workspace

SIGNATURE = Signature.from_json({"inputs": [{"name": c} for c in ("a", "b", "c")]})
LIMITS = RequestLimits()


def _body(rows: list[list[object]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["a", "b", "c"], "data": rows}}).encode()


def held_until(body: bytes, opened: str) -> int:
    """In the helper: hold it busy until the file ``opened`` exists (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not Path(opened).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(body)


def frozen_objects(body: bytes) -> int:
    """In the helper: how many objects its heap has frozen out of the cycle collector's reach."""
    return gc.get_freeze_count()


def ahead(decoder: Decoder, body: bytes, limits: RequestLimits = LIMITS) -> Decoded | None:
    return asyncio.run(
        decoder.decode_ahead(protocol_mlflow.parse, body, "application/json", SIGNATURE, limits)
    )


@pytest.fixture(scope="module")
def shared() -> Iterator[Decoder]:
    """One helper for the tests that leave it alive (each start is a second or more)."""
    d = Decoder(offload_bytes=1024)
    try:
        yield d
    finally:
        d.shutdown()


@pytest.fixture
def decoder() -> Iterator[Decoder]:
    d = Decoder(offload_bytes=1024)
    try:
        yield d
    finally:
        d.shutdown()


def test_a_large_body_decodes_in_the_helper_to_the_same_array(shared: Decoder) -> None:
    rows = np.random.default_rng(0).normal(size=(500, 3)).tolist()
    body = _body(rows)
    here = protocol_mlflow.parse(body, "application/json", SIGNATURE, LIMITS)
    there = shared.decode(protocol_mlflow.parse, body, "application/json", SIGNATURE, LIMITS)
    assert shared.started
    assert np.array_equal(here, there) and there.dtype == here.dtype


def test_a_small_body_never_starts_the_helper(decoder: Decoder) -> None:
    got = decoder.decode(protocol_mlflow.parse, _body([[1, 2, 3]]), "", SIGNATURE, LIMITS)
    assert got.tolist() == [[1.0, 2.0, 3.0]] and not decoder.started


@pytest.mark.parametrize(
    ("bad", "kind"),
    [("x", SchemaViolation), (True, SchemaViolation), (10**400, SchemaViolation)],
)
def test_a_refusal_in_the_helper_is_the_same_error_with_the_same_field(
    shared: Decoder, bad: object, kind: type[Exception]
) -> None:
    rows: list[list[object]] = [[0.5, 0.5, 0.5] for _ in range(300)]
    rows[217][1] = bad
    body = _body(rows)
    with pytest.raises(kind) as here:
        protocol_mlflow.parse(body, "application/json", SIGNATURE, LIMITS)
    with pytest.raises(kind) as there:
        shared.decode(protocol_mlflow.parse, body, "application/json", SIGNATURE, LIMITS)
    assert type(there.value) is type(here.value)
    assert str(there.value) == str(here.value)
    assert there.value.field == here.value.field  # type: ignore[attr-defined]


def test_a_cost_bound_refusal_keeps_its_limit(shared: Decoder) -> None:
    tight = RequestLimits(max_rows=10)
    body = _body([[1, 2, 3]] * 200)
    with pytest.raises(RequestTooLarge) as got:
        shared.decode(protocol_mlflow.parse, body, "application/json", SIGNATURE, tight)
    assert got.value.limit == "max_rows=10" and got.value.field == "data"


def test_a_dead_helper_costs_one_request_decoded_here_and_is_replaced(decoder: Decoder) -> None:
    body = _body([[1.0, 2.0, 3.0]] * 200)
    decoder.decode(protocol_mlflow.parse, body, "application/json", SIGNATURE, LIMITS)
    helper = psutil.Process(decoder.helper_pid())
    helper.kill()
    helper.wait(10)
    for _ in range(2):
        got = decoder.decode(protocol_mlflow.parse, body, "application/json", SIGNATURE, LIMITS)
        assert got.shape == (200, 3)
    assert decoder.started


class TestHelperYieldsTheCpu:
    """The helper spends as little CPU as it can and gives way to its worker's requests."""

    def test_the_helper_runs_below_its_worker_priority(self, shared: Decoder) -> None:
        helper = psutil.Process(shared.helper_pid())
        assert helper.nice() == min(19, os.nice(0) + HELPER_NICENESS) > os.nice(0)

    def test_a_level_helper_keeps_its_worker_priority(self) -> None:
        level = Decoder(offload_bytes=1024, helper_niceness=0)
        try:
            assert psutil.Process(level.helper_pid()).nice() == os.nice(0)
        finally:
            level.shutdown()

    def test_a_helper_above_its_worker_is_refused(self) -> None:
        with pytest.raises(ValueError, match="helper_niceness"):
            Decoder(helper_niceness=-1)

    def test_the_helper_freezes_what_it_imported_before_decoding(self, shared: Decoder) -> None:
        """Its imports are out of the collector's reach, so the lists a large body decodes into
        do not make it walk them."""
        assert shared.decode(frozen_objects, b"x" * 2048) > 10_000


class TestDecodeAhead:
    """A large body sent ahead from the event loop: the same array, the same refusal."""

    def test_a_body_sent_ahead_comes_back_as_the_same_array(self, shared: Decoder) -> None:
        body = _body(np.random.default_rng(2).normal(size=(300, 3)).tolist())
        got = ahead(shared, body)
        assert got is not None and not got.here
        here = protocol_mlflow.parse(body, "application/json", SIGNATURE, LIMITS)
        assert np.array_equal(got.get(), here) and got.get().dtype == here.dtype

    def test_a_small_body_is_left_to_decode_where_it_is_used(self, decoder: Decoder) -> None:
        assert ahead(decoder, _body([[1, 2, 3]])) is None and not decoder.started

    def test_a_refusal_sent_ahead_is_raised_where_it_is_used(self, shared: Decoder) -> None:
        rows: list[list[object]] = [[0.5, 0.5, 0.5] for _ in range(300)]
        rows[123][2] = "7"
        body = _body(rows)
        got = ahead(shared, body)
        assert got is not None
        with pytest.raises(SchemaViolation) as here:
            protocol_mlflow.parse(body, "application/json", SIGNATURE, LIMITS)
        with pytest.raises(SchemaViolation) as there:
            got.get()
        assert str(there.value) == str(here.value) and there.value.field == here.value.field

    def test_a_helper_dying_on_a_body_costs_that_body_decoded_here(
        self, decoder: Decoder, tmp_path: Path
    ) -> None:
        helper = psutil.Process(decoder.helper_pid())
        opened = tmp_path / "opened"

        async def killed_while_held() -> Decoded | None:
            waiting = asyncio.ensure_future(
                decoder.decode_ahead(held_until, b"x" * 2048, str(opened))
            )
            await asyncio.sleep(0)  # it is now waiting for the helper
            helper.kill()
            return await asyncio.wait_for(waiting, 30)

        got = asyncio.run(killed_while_held())
        assert got == Decoded(here=True) and not decoder.started
        again = ahead(decoder, _body([[1.0, 2.0, 3.0]] * 200))
        assert again is not None and again.get().shape == (200, 3) and decoder.started

    def test_more_bodies_than_may_wait_are_refused_with_overloaded(self, tmp_path: Path) -> None:
        decoder = Decoder(offload_bytes=1024, max_waiting=1)
        opened = tmp_path / "opened"

        async def two() -> None:
            first = asyncio.ensure_future(
                decoder.decode_ahead(held_until, b"x" * 2048, str(opened))
            )
            await asyncio.sleep(0)  # the first one is now waiting for the helper
            with pytest.raises(Overloaded, match="1 decoding jobs"):
                await decoder.decode_ahead(held_until, b"x" * 2048, str(opened))
            opened.touch()
            got = await asyncio.wait_for(first, 60)
            assert got is not None and got.get() == 2048

        try:
            asyncio.run(two())
        finally:
            decoder.shutdown()


def test_the_helper_dies_with_its_worker() -> None:
    script = textwrap.dedent(
        """
        import json, os, sys, time
        from shipyard.registry.signature import Signature
        from shipyard.serving import protocol_mlflow
        from shipyard.serving.decoding import HELPER_NICENESS, Decoded, Decoder
        from shipyard.serving.limits import RequestLimits
        sig = Signature.from_json({"inputs": [{"name": c} for c in ("a", "b", "c")]})
        body = json.dumps({"instances": [[1, 2, 3]] * 500}).encode()
        decoder = Decoder(1024)
        decoder.decode(protocol_mlflow.parse, body, "application/json", sig, RequestLimits())
        print(decoder.helper_pid(), flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    kill_and_await_helper(proc, "decoding")


def _iris_app(workspace: Workspace) -> ServingApp:
    """A server of a registered iris classifier, telemetry off, with a decoding helper."""
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    telemetry = Telemetry(workspace.store, workspace.artifacts, enabled=False)
    return ServingApp(LiveModels(Registry.of(workspace), 0.1), telemetry, decoder=Decoder(4096))


@pytest.fixture
def served(workspace: Workspace) -> Iterator[str]:
    app = _iris_app(workspace)
    port = free_port()
    server, thread = start(app, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not app.decoder.started, "shutting the app down stops its helper"


def test_the_server_answers_large_bodies_alike_on_both_protocols(served: str) -> None:
    rows = np.random.default_rng(1).normal(size=(400, 3)).tolist()
    with httpx.Client(base_url=served, timeout=30) as c:
        one = [c.post("/models/iris/invocations", json={"instances": [r]}) for r in rows[:5]]
        small = [r.json()["predictions"][0] for r in one]
        big = c.post("/models/iris/invocations", json={"instances": rows})
        assert big.status_code == 200 and big.json()["predictions"][:5] == small
        v2 = {"inputs": [{"name": "x", "shape": [400, 3], "datatype": "FP64",
                          "data": np.asarray(rows).ravel().tolist()}]}  # fmt: skip
        got = c.post("/v2/models/iris/infer", json=v2)
        assert got.status_code == 200 and got.json()["outputs"][0]["data"][:5] == small
        rows[399][2] = "7"
        bad = c.post("/models/iris/invocations", json={"instances": rows})
        assert bad.status_code == 400 and "399" in bad.json()["message"], bad.text


def test_a_large_body_waiting_for_the_helper_holds_no_prediction_thread(
    workspace: Workspace, tmp_path: Path
) -> None:
    """While the helper decodes, the pool stays idle and small requests are answered; the large
    answer is byte for byte the one decoded in the worker."""
    app = _iris_app(workspace)
    port = free_port()
    server, thread = start(app, port)
    body = json.dumps({"instances": np.random.default_rng(3).normal(size=(400, 3)).tolist()})
    opened = tmp_path / "opened"
    pending = ThreadPoolExecutor(2)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            path = "/models/iris/invocations"
            headers = {"content-type": "application/json"}
            app.decoder.offload_bytes = 0
            in_worker = c.post(path, content=body, headers=headers)
            app.decoder.offload_bytes = 4096
            held = pending.submit(app.decoder.decode, held_until, b"x" * 8192, str(opened))
            large = pending.submit(c.post, path, content=body, headers=headers)
            deadline = time.monotonic() + 30
            while app.decoder.waiting == 0:
                assert time.monotonic() < deadline, "the large body never reached the helper"
                time.sleep(0.01)
            for _ in range(3):
                assert c.post(path, json={"instances": [[0.1, 0.2, 0.3]]}).status_code == 200
            assert app.pool.admitted == 0 and not large.done()
            opened.touch()
            assert held.result(60) == 8192
            answer = large.result(60)
        assert answer.status_code == in_worker.status_code == 200
        assert answer.content == in_worker.content
        assert answer.headers["x-shipyard-model-version"] == "1"
    finally:
        opened.touch()
        pending.shutdown(wait=True)
        server.should_exit = True
        thread.join(timeout=10)


def test_a_helper_that_cannot_start_is_tried_once_and_said_so(tmp_path: Path) -> None:
    """A script without a main guard: ``spawn`` re-runs it in the helper, which then fails."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            from shipyard.registry.signature import Signature
            from shipyard.serving import protocol_mlflow
            from shipyard.serving.decoding import HELPER_NICENESS, Decoded, Decoder
            from shipyard.serving.limits import RequestLimits
            if "__mp_main__" == __name__:
                raise SystemExit("re-imported in the helper")
            sig = Signature.from_json({"inputs": [{"name": c} for c in ("a", "b", "c")]})
            body = json.dumps({"instances": [[1, 2, 3]] * 500}).encode()
            decoder = Decoder(1024)
            for _ in range(3):
                x = decoder.decode(protocol_mlflow.parse, body, "", sig, RequestLimits())
                assert x.shape == (500, 3)
            print(decoder.offload_bytes, decoder.started)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False"]
    assert done.stderr.count("could not start") == 1, done.stderr

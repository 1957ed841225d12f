"""Numbers a float cannot hold are a 400 naming the column for any model, over a real socket.

A model whose signature mixes strings and numbers gets an object array, so nothing converted its
numbers to floats: ``10**400`` or ``1e400`` (which JSON decoding makes infinite) reached the model
and came back as a 500. The signature now refuses them by column before the model runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from serving.conftest import free_port, start
from shipyard.registry import Registry, Signature
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace

MIXED = Signature.from_json({"inputs": [{"name": "n"}, {"name": "s", "type": "string"}]})


def scaled(x: np.ndarray) -> np.ndarray:
    """A python-flavor model of a number and a string: the number as a float, times two."""
    return np.asarray([2 * float(v) for v in x[:, 0]])


@pytest.fixture
def client(workspace: Workspace) -> Iterator[httpx.Client]:
    Registry.of(workspace).register(
        "mixed", scaled, flavor="python", signature=MIXED, alias="champion"
    )
    app = build_app(workspace, monitoring=False, refresh_interval_s=0.2)
    port = free_port()
    server, thread = start(app, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        workspace.store.dispose()


@pytest.mark.parametrize("number", [b"1" + b"0" * 400, b"-1e400", b"Infinity"])
def test_a_number_beyond_a_float_is_a_400_naming_its_column(
    client: httpx.Client, number: bytes
) -> None:
    body = b'{"dataframe_split": {"columns": ["n", "s"], "data": [[' + number + b', "x"]]}}'
    r = client.post(
        "/models/mixed/invocations", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "n" and "out of range" in r.json()["message"]
    ok = client.post("/models/mixed/invocations", json={"instances": [[1.5, "x"]]})
    assert ok.status_code == 200 and ok.json() == {"predictions": [3.0]}

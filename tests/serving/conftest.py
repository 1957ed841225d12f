"""A real Uvicorn server on 127.0.0.1 serving models registered in a real workspace."""

from __future__ import annotations

import copy
import functools
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from sklearn.linear_model import LogisticRegression

from server_testkit import free_port, start_server, stop_server
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.registry import Registry, Signature
from shipyard.serving.app import ServingApp
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace

COLUMNS = ["a", "b", "c"]


def first_answer(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 30) -> httpx.Response:
    """The first answer of a ``shipyard serve`` subprocess to a one-row scoring request,
    retried while it starts; fails with its stderr if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.post(
                f"http://127.0.0.1:{port}/invocations",
                json={"instances": [[0.1, 0.2, 0.3]]},
                timeout=2,
            )
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "shipyard serve did not start"
            time.sleep(0.2)


def training_frame(seed: int = 0, n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, 3)), columns=COLUMNS)
    y = (x["a"] + 0.5 * x["b"] > 0).astype(int).to_numpy()
    return x, y


@functools.cache
def _fitted(seed: int) -> tuple[LogisticRegression, pd.DataFrame]:
    x, y = training_frame(seed)
    return LogisticRegression().fit(x.to_numpy(), y), x


def fit_classifier(seed: int = 0) -> tuple[LogisticRegression, pd.DataFrame]:
    """A logistic regression fitted on ``training_frame(seed)``, and that frame: fitted once
    per seed (a fit takes ~0.15 s), each caller given copies of its own."""
    clf, x = _fitted(seed)
    return copy.deepcopy(clf), x.copy()


def explode(x: np.ndarray) -> np.ndarray:
    """A python-flavor model that raises on negative first features."""
    if (x[:, 0] < 0).any():
        raise RuntimeError("negative input blew the model up")
    return x[:, 0] * 2


def bearer(ws: Workspace, name: str, role: str | None = None, scope: str = "*") -> dict[str, str]:
    """The ``Authorization`` header of a new token of ``name``, given ``role`` over ``scope``
    first (feedback needs an operator: :mod:`shipyard.serving.doors`)."""
    now = time.time()
    if role is not None:
        bind_role(ws.store, name, role, scope, actor="setup", now=now, mode="embedded")
    token = create_token(ws.store, name, actor="setup", now=now, mode="embedded").secret
    return {"Authorization": f"Bearer {token}"}


EXPLODE_SIGNATURE = Signature.from_json({"inputs": [{"name": c} for c in COLUMNS]})


@dataclass
class Running:
    url: str
    app: ServingApp
    ws: Workspace
    registry: Registry
    server: uvicorn.Server

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


def start(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """A model server's app on ``port``, as ``shipyard serve`` runs it (httptools, lifespan)."""
    return start_server(app, port, http="httptools", lifespan="on", timeout_s=10)


def serve(workspace: Workspace) -> Iterator[Running]:
    """Models iris (a classifier) and boom (raises on a negative first feature) served from
    ``workspace`` on a free port until the generator is closed."""
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion", metrics={"acc": 0.9})
    registry.register(
        "boom", explode, flavor="python", signature=EXPLODE_SIGNATURE, alias="champion"
    )
    app = build_app(workspace, flush_interval_s=0.2, refresh_interval_s=0.1, sample_rate=1.0)
    port = free_port()
    server, thread = start(app, port)
    try:
        yield Running(f"http://127.0.0.1:{port}", app, workspace, registry, server)
    finally:
        stop_server(server, thread)
        workspace.store.dispose()


@pytest.fixture
def served(workspace: Workspace) -> Iterator[Running]:
    """A server of the test's own: for a test that reads what the server wrote or changes it."""
    yield from serve(workspace)


@pytest.fixture(scope="module")
def served_module(module_folder: Path) -> Iterator[Running]:
    """One server for the tests of a module that only ask it questions: what one test sends
    changes no answer another test checks. (Starting one costs ~0.8 s.)"""
    yield from serve(Workspace.open(home=module_folder / "home"))

"""What the serving monitors' tests share: requests answered by a real model server over a
socket (``served``, tests/serving/conftest.py), and waiting for its windows to be flushed."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
from sqlalchemy import func, select

from serving.conftest import Running
from shipyard.store.serving import ServingWindow


def wait_flushed(served: Running, requests: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with served.ws.store.session() as s:
            if (s.scalar(select(func.sum(ServingWindow.requests))) or 0) >= requests:
                return
        time.sleep(0.1)
    raise AssertionError("windows were not flushed")


def infer(c: httpx.Client, rows: np.ndarray[Any, Any], prefix: str) -> list[str]:
    ids = []
    for i, row in enumerate(rows):
        rid = f"{prefix}{i}"
        r = c.post("/models/iris/invocations", json={"instances": [row.tolist()]},
                   headers={"x-request-id": rid})  # fmt: skip
        assert r.status_code == 200
        ids.append(rid)
    return ids

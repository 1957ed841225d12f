"""``shipyard serve`` as a real process: it serves, it fails fast on a port in use, and the README's
serve commands run on the README's pools file."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from serving.conftest import first_answer, fit_classifier, free_port
from serving.processes import SERVE_COMMANDS, START_S, shipyard_serve
from shipyard.errors import InvalidInput
from shipyard.quota import LeaseManager, LeaseRequest, apply_pools, read_pool_file
from shipyard.registry import Registry
from shipyard.serving.server import check_port
from shipyard.store.quota import QuotaLease
from shipyard.store.serving import ServingInstance
from shipyard.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024**2


def test_serve_command_serves_the_champion_until_terminated(
    workspace: Workspace, tmp_path: Path
) -> None:
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    args = ["serve", "--port", str(port), "--model", "iris", "--log-level", "info"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_COMMANDS, *args],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "SHIPYARD_LOG_FORMAT"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        r = first_answer(proc, port, START_S)
        assert r.status_code == 200
        assert r.json() == {"predictions": clf.predict([[0.1, 0.2, 0.3]]).tolist()}
        refused = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"instances": [[0.1, 0.2]]},  # a column short
            headers={"x-request-id": "short-row", "traceparent": traceparent},
            timeout=5,
        )
        assert refused.status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # Uvicorn re-raises the signal it caught once it has shut down cleanly
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert b"Traceback" not in err
    assert f"serving on http://127.0.0.1:{port}" in out.decode()
    # stderr is JSON lines by default, Uvicorn's own included; the refusal names its request
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert any(d["logger"].startswith("uvicorn") for d in lines)
    (line,) = [d for d in lines if d.get("request_id") == "short-row"]
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and line["level"] == "info"
    assert (line["model"], line["version"], line["status"]) == ("iris", 1, 400)


def _readme_serve_command() -> list[str]:
    """The arguments of the README's own ``shipyard serve`` line (from its bash blocks)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    (line,) = [x for b in blocks for x in b.splitlines() if x.startswith("shipyard serve ")]
    words = [w for w in shlex.split(line, comments=True) if w != "&"]
    assert words[:2] == ["shipyard", "serve"] and "--pool" in words
    return words[2:]


def _with_port(args: list[str], port: int) -> list[str]:
    at = args.index("--port")
    return [*args[: at + 1], str(port), *args[at + 2 :]]


def test_the_readme_serve_commands_run_on_the_readme_pools_file(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Issue #19: the README's `--pool serving --cpu 1 --memory 1Gi` was refused by the README's
    own examples/pools.yaml; both it and a plain `--pool serving` now fit, side by side."""
    apply_pools(
        workspace.store,
        read_pool_file(
            ROOT / "examples" / "pools.yaml", workspace.settings.quota.default_cap_fraction
        ),
    )
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    readme_port, plain_port = free_port(), free_port()
    readme = shipyard_serve(tmp_path, *_with_port(_readme_serve_command(), readme_port))
    plain = shipyard_serve(tmp_path, "--port", str(plain_port), "--pool", "serving")
    try:
        assert first_answer(readme, readme_port, START_S).status_code == 200
        assert first_answer(plain, plain_port, START_S).status_code == 200
        with workspace.store.session() as s:
            granted = {
                x.pipeline: x.resources
                for x in s.scalars(select(QuotaLease).where(QuotaLease.status == "held"))
            }
        assert granted == {
            f"serve:127.0.0.1:{readme_port}": {"cpu": 1.0, "memory": 1024.0 * MiB},
            f"serve:127.0.0.1:{plain_port}": {"cpu": 1.0, "memory": 512.0 * MiB},
        }
    finally:
        for proc in (readme, plain):
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            assert b"Traceback" not in err
            assert b"in pool serving" in out, err


@pytest.mark.parametrize("pool", [False, True], ids=["plain", "--pool of a full pool"])
def test_serve_on_a_port_in_use_fails_at_once_naming_the_port(
    workspace: Workspace, tmp_path: Path, pool: bool
) -> None:
    """Issue #19: it said "serving on …", then uvicorn's Errno 98, and left a record; with
    --pool it first waited 60 s for the lease. Now: one line, before any lease or record."""
    blocker = LeaseManager(workspace.store, lease_ttl_s=120)
    if pool:
        apply_pools(
            workspace.store,
            read_pool_file(ROOT / "examples" / "pools.yaml", 0.5),
        )
        for holder in ("batch-a", "batch-b"):  # the pool is full
            blocker.acquire(LeaseRequest(holder, {"cpu": 1}, pool="serving"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--port", str(port), *(["--pool", "serving"] if pool else [])]
        proc = shipyard_serve(tmp_path, *args)
        out, err = proc.communicate(timeout=30)  # a lease wait would take 60 s
    blocker.close()
    assert proc.returncode == 1
    assert out == b""
    (line,) = err.decode().strip().splitlines()
    assert line == (
        f"error: port {port} on 127.0.0.1 is already in use (another server?): stop it, or "
        "choose another port with --port (0: any free one)"
    )
    with workspace.store.session() as s:
        assert list(s.scalars(select(ServingInstance))) == []
        leases = sorted(x.pipeline for x in s.scalars(select(QuotaLease)))
    assert leases == (["batch-a", "batch-b"] if pool else [])


def test_check_port_names_the_address_it_cannot_listen_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"^port {port} on 127.0.0.1 is already in use"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # free again
    with pytest.raises(InvalidInput, match=r"^cannot listen on 192\.0\.2\.1: it is not an address"):
        check_port("192.0.2.1", port)  # TEST-NET-1 (RFC 5737): never this machine's

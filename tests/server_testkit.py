"""A real Uvicorn server on 127.0.0.1 for tests: a free port, the server in a thread of its own,
waited for with a deadline, and stopped at the end."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import uvicorn


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(
    app: Any, port: int, *, timeout_s: float = 20, **config: Any
) -> tuple[uvicorn.Server, threading.Thread]:
    """``app`` served on ``port``, once Uvicorn says it has started; ``config`` sets options
    of :class:`uvicorn.Config` (``lifespan``, ``http``…) over quiet defaults. Fails when the
    server has not started within ``timeout_s`` or its thread ended first."""
    options: dict[str, Any] = {"log_level": "warning", "ws": "none", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options | config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.02)
    return server, thread


def stop_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)


@contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """``app`` served on a free port while the block runs; its base URL."""
    port = free_port()
    server, thread = start_server(app, port, **config)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server, thread)


def until(condition: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    """``condition()``'s first truthy answer, asked every 0.1 s; fails naming ``what`` once
    ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def gone(p: psutil.Process) -> bool:
    """Whether ``p`` has ended (a zombie waiting for its parent counts)."""
    try:
        return bool(p.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def uvicorn_workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The Uvicorn worker processes of a multi-worker server (spawned by multiprocessing)."""
    return [
        p
        for p in psutil.Process(proc.pid).children()
        if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in p.cmdline()[-1]
    ]

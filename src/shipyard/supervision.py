"""A worker process that ends with its supervisor.

``shipyard serve --workers N`` and ``shipyard server --workers N`` run N Uvicorn worker
processes that share the listening socket of their supervisor. When the supervisor is killed
(SIGKILL, the OOM killer) nothing tells the workers: they would go on answering with no
supervisor (a model server's would do so with nobody heartbeating its quota lease, so the pool
would count their capacity as free). Each worker therefore watches its parent
(:class:`ParentWatch`):

* on Linux it asks the kernel for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
  see prctl(2)), which wakes the watch at once (through a :class:`SignalWake`: a handler must
  not take a lock);
* a thread compares ``os.getppid()`` with the supervisor's pid every ``poll_s`` (this covers a
  parent that died before the ``prctl``, and systems without it).

When the parent is gone the watch runs ``on_orphaned`` (a model server's worker closes the
server's record and releases its lease), then sends its own process SIGTERM: Uvicorn's graceful
shutdown stops accepting, finishes the requests in flight and lets the app flush. A worker that
still runs ``grace_s`` later is ended with ``os._exit``.

The supervisor binds the workers' listening socket itself (:func:`bind_tcp`), so that each
answer leaves at once (see there).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("shipyard.supervision")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WAKE_SIGNAL = signal.SIGUSR1


class SignalWake:
    """A wake-up that a signal handler may give: one byte on a non-blocking pipe.

    A Python signal handler runs in the main thread between two bytecodes, wherever that thread
    was. ``threading.Event.set`` takes the event's lock, so a handler that interrupts its own
    thread while that thread holds (or is taking) the lock waits for itself forever; a second
    signal inside the first handler does exactly that (seen: a worker killed by SIGKILL sends its
    helper the parent-death signal more than once). ``os.write`` takes no lock."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self, *_: object) -> None:
        """Wake the waiter (usable as a signal handler as it is)."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            os.write(self._write, b"\0")

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for ever) for a wake-up; True if there was one."""
        try:
            ready, _, _ = select.select([self._read], [], [], timeout)
        except (OSError, ValueError):  # closed
            return True
        if not ready:
            return False
        try:
            while os.read(self._read, 512):
                pass
        except OSError:  # drained
            pass
        return True

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux only).
    Returns whether it was set. The kernel clears it on fork, so each worker sets its own."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def bind_tcp(host: str, port: int) -> socket.socket:
    """The listening socket that a supervisor hands its Uvicorn workers.

    It is made with ``IPPROTO_TCP`` as its protocol: asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on an accepted socket whose ``proto`` says TCP, and an accepted socket
    takes its listener's. Uvicorn's own ``Config.bind_socket`` leaves it 0, so with several
    workers every answer written in two parts (its head, then its body) waited for the client's
    delayed ACK: about 40 ms for a request that took 3 ms (measured on the control plane).
    Raises ``OSError`` when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ParentWatch:
    """Ends this process soon after the process ``parent_pid`` (its parent) is gone."""

    def __init__(
        self,
        parent_pid: int,
        on_orphaned: Callable[[], object],
        *,
        poll_s: float = 0.5,
        grace_s: float = 10.0,
    ) -> None:
        self.parent_pid = parent_pid
        self.on_orphaned = on_orphaned
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.kernel_signal = False
        self._wake = SignalWake()
        self._thread: threading.Thread | None = None

    def start(self) -> ParentWatch:
        """Arm the kernel's signal (from the main thread only: Python runs signal handlers
        there) and start the watch thread."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(WAKE_SIGNAL, self._wake.set)
            self.kernel_signal = set_parent_death_signal(WAKE_SIGNAL)
        self._thread = threading.Thread(
            target=self._watch, name="shipyard-parent-watch", daemon=True
        )
        self._thread.start()
        return self

    def orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def _watch(self) -> None:
        while not self.orphaned():
            self._wake.wait(self.poll_s)
        log.warning("the supervisor (pid %d) is gone: stopping worker", self.parent_pid)
        try:
            self.on_orphaned()
        except Exception as exc:  # the store may be away: ending the worker matters more
            log.error("could not close the server's record: %s", exc)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.grace_s)
        os._exit(1)

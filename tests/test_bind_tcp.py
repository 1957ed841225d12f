"""The socket a supervisor hands its Uvicorn workers answers at once: asyncio turns Nagle's
algorithm off on each accepted connection only when the listener says it is TCP
(:func:`shipyard.supervision.bind_tcp`). With Uvicorn's own ``bind_socket`` it did not, and
every answer of a multi-worker server waited for the client's delayed ACK (about 40 ms)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from shipyard.supervision import bind_tcp


async def _nodelay_of_accepted(listener: socket.socket) -> int:
    """TCP_NODELAY of the connection asyncio accepts on ``listener`` (as a worker would)."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await loop.create_server(Probe, sock=listener)
    port = listener.getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(seen, 10)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def test_a_worker_answers_without_waiting_for_the_clients_ack() -> None:
    listener = bind_tcp("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(_nodelay_of_accepted(listener)) != 0


def test_uvicorns_own_listener_would_leave_nagle_on() -> None:
    """Why :func:`bind_tcp` exists: if this starts failing, Uvicorn fixed it upstream."""
    listener = uvicorn.Config("x:app", host="127.0.0.1", port=0).bind_socket()
    assert asyncio.run(_nodelay_of_accepted(listener)) == 0


def test_an_address_in_use_is_an_error_and_leaks_no_socket() -> None:
    first = bind_tcp("127.0.0.1", 0)
    first.listen()
    try:
        with pytest.raises(OSError):
            bind_tcp("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()

"""Request/response over many connections at once: the server and the clients.

Every client opens ``CONNS`` connections (plain, or TLS from the start), then (timed) each
connection sends a short line and reads the one-line answer, ``ROUND_TRIPS`` times, all
connections at once. This is what a service talking to a backend, or a test suite driving
many sessions, does; a single connection spends its time waiting for the peer and shows
little of the client's own cost.

The server (:func:`serve`) is an asyncio protocol in its own process that answers every
line at once, so the client's CPU decides how many round trips a second there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from multiprocessing.connection import Connection

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

import janusnet

from ._server import server_process_setup

HOST = "127.0.0.1"
PING = b"PING 1234567890"
PONG = b"+OK pong 0123456789abcdef\r\n"
CONNS = 50
ROUND_TRIPS = 200


class _LineAnswer(asyncio.Protocol):
    """One ``PONG`` per line received."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        lines = data.count(b"\n")
        if lines:
            self.transport.write(PONG * lines)  # type: ignore[attr-defined]


def serve(pipe: Connection, cert_chain_pem: bytes, cpu: int | None) -> None:
    """Listen on loopback (plain and TLS), report both ports, serve until told to stop."""
    context = server_process_setup(cert_chain_pem, cpu)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        plain = await loop.create_server(_LineAnswer, HOST, 0, backlog=1024)
        tls = await loop.create_server(_LineAnswer, HOST, 0, backlog=1024, ssl=context)
        ports = [s.sockets[0].getsockname()[1] for s in (plain, tls)]
        pipe.send(tuple(ports))
        async with plain, tls:
            while not await loop.run_in_executor(None, pipe.poll, 0.5):
                pass

    asyncio.run(main())


async def _asyncio_streams(port: int, context: ssl.SSLContext | None) -> tuple[float, int]:
    pairs = [await asyncio.open_connection(HOST, port, ssl=context) for _ in range(CONNS)]
    wrong = 0

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal wrong
        for _ in range(ROUND_TRIPS):
            writer.write(PING + b"\r\n")
            await writer.drain()
            if await reader.readuntil(b"\r\n") != PONG:
                wrong += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(r, w) for r, w in pairs))
    elapsed = time.perf_counter() - started
    for _, writer in pairs:
        writer.close()
    for _, writer in pairs:
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return elapsed, wrong


async def _janusnet(port: int, context: ssl.SSLContext | None) -> tuple[float, int]:
    client_port = janusnet.ClientPort("PINGPONG", ssl_context=context)
    socks = [
        await janusnet.Socket.connect(
            HOST,
            port,
            client_port=client_port,
            tls=context is not None,
            server_hostname="localhost",
        )
        for _ in range(CONNS)
    ]
    wrong = 0
    expected = PONG[:-2]

    async def one(sock: janusnet.Socket) -> None:
        nonlocal wrong
        for _ in range(ROUND_TRIPS):
            await sock.send_line(PING)
            if (await sock.recv_parsed()).data != expected:
                wrong += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for sock in socks:
            tg.start_soon(one, sock)
    elapsed = time.perf_counter() - started
    for sock in socks:
        await sock.aclose()
    return elapsed, wrong


async def _anyio_streams(port: int, context: ssl.SSLContext | None) -> tuple[float, int]:
    streams = []
    for _ in range(CONNS):
        stream: anyio.abc.ByteStream
        if context is None:
            stream = await anyio.connect_tcp(HOST, port)
        else:
            stream = await anyio.connect_tcp(
                HOST,
                port,
                tls=True,
                ssl_context=context,
                tls_hostname="localhost",
                tls_standard_compatible=False,
            )
        streams.append((stream, BufferedByteReceiveStream(stream)))
    wrong = 0

    async def one(stream: anyio.abc.ByteStream, buffered: BufferedByteReceiveStream) -> None:
        nonlocal wrong
        for _ in range(ROUND_TRIPS):
            await stream.send(PING + b"\r\n")
            if await buffered.receive_until(b"\r\n", 65536) != PONG[:-2]:
                wrong += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for stream, buffered in streams:
            tg.start_soon(one, stream, buffered)
    elapsed = time.perf_counter() - started
    for stream, _ in streams:
        await stream.aclose()
    return elapsed, wrong


#: client name -> (coroutine function, anyio backend)
CLIENTS = {
    "asyncio_streams": (_asyncio_streams, "asyncio"),
    "janusnet_asyncio": (_janusnet, "asyncio"),
    "janusnet_trio": (_janusnet, "trio"),
    "anyio_streams": (_anyio_streams, "asyncio"),
}


def run(port: int, context: ssl.SSLContext | None, client: str) -> tuple[float, str | None]:
    """One timed run: round trips per second, and what went wrong (``None``: nothing)."""
    function, backend = CLIENTS[client]
    elapsed, wrong = anyio.run(function, port, context, backend=backend)
    error = f"{wrong} wrong answers" if wrong else None
    return CONNS * ROUND_TRIPS / elapsed, error

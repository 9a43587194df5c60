"""TLS bulk clients: plain greeting, ``STARTTLS``, upgrade in place, read ``nbytes``.

Each client reads the greeting and the go-ahead in plain text, upgrades the live
connection (janusnet ``ssl_on()``, asyncio ``StreamWriter.start_tls``, anyio
``TLSStream.wrap``, a blocking ``SSLContext.wrap_socket``), then (timed) reads until it has
``nbytes`` bytes with the stack's ordinary receive call (64 KiB asked per call). It checks
the byte count and that the stream ends with the server's trailer.

``memory_bio`` is a ceiling, not a client: the same TLS session bytes decrypted by
``ssl.SSLObject`` from memory, with no socket and no event loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable

import anyio
from anyio.streams.tls import TLSStream

import janusnet

from ._server import BULK_TRAILER, bulk_payload

HOST = "127.0.0.1"
SERVER_HOSTNAME = "localhost"
READ_SIZE = 65536

#: The clock every client is timed with. ``time.perf_counter`` gives wall-clock MB/s;
#: ``time.process_time`` gives MB per client CPU-second, which is what a client library
#: controls when the server (on its own core) caps the wall-clock rate for everyone.
CLOCK: Callable[[], float] = time.perf_counter


def check(got: int, tail: bytes, nbytes: int) -> str | None:
    """``None`` when exactly ``nbytes`` arrived and the trailer is intact."""
    if got != nbytes:
        return f"read {got} bytes, expected {nbytes}"
    if not tail.endswith(BULK_TRAILER[-min(len(tail), len(BULK_TRAILER)) :]):
        return "the stream does not end with the server's trailer"
    return None


async def _janusnet(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    client_port = janusnet.ClientPort("BENCH-TLS", ssl_context=context)
    sock = await janusnet.Socket.connect(
        HOST, port, client_port=client_port, server_hostname=SERVER_HOSTNAME
    )
    async with sock:
        await sock.recv_parsed()  # greeting
        await sock.send_line(f"STARTTLS {nbytes}")
        await sock.recv_parsed()  # go ahead
        await sock.ssl_on()
        recv = sock.recv
        got = 0
        data = b""
        start = CLOCK()
        while got < nbytes:
            data = await recv()
            if not data:
                break
            got += len(data)
        elapsed = CLOCK() - start
    return elapsed, got, data


def janusnet_asyncio(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    return anyio.run(_janusnet, port, nbytes, context, backend="asyncio")


def janusnet_trio(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    return anyio.run(_janusnet, port, nbytes, context, backend="trio")


async def _asyncio(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await reader.readuntil(b"\r\n")
        writer.write(f"STARTTLS {nbytes}\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n")
        await writer.start_tls(context, server_hostname=SERVER_HOSTNAME)
        read = reader.read
        got = 0
        data = b""
        start = CLOCK()
        while got < nbytes:
            data = await read(READ_SIZE)
            if not data:
                break
            got += len(data)
        elapsed = CLOCK() - start
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    return elapsed, got, data


def asyncio_start_tls(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    return asyncio.run(_asyncio(port, nbytes, context))


async def _anyio(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    tcp = await anyio.connect_tcp(HOST, port)
    async with tcp:
        # Byte-at-a-time plain reads, so nothing past the go-ahead is taken from the wire.
        for _ in range(2):
            line = b""
            while not line.endswith(b"\n"):
                line += await tcp.receive(1)
            if line.startswith(b"220 janusnet"):
                await tcp.send(f"STARTTLS {nbytes}\r\n".encode())
        tls = await TLSStream.wrap(
            tcp, hostname=SERVER_HOSTNAME, ssl_context=context, standard_compatible=False
        )
        receive = tls.receive
        got = 0
        data = b""
        start = CLOCK()
        try:
            while got < nbytes:
                data = await receive(READ_SIZE)
                got += len(data)
        except anyio.EndOfStream:
            pass
        elapsed = CLOCK() - start
    return elapsed, got, data


def anyio_tlsstream(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    return anyio.run(_anyio, port, nbytes, context, backend="asyncio")


def blocking_ssl(port: int, nbytes: int, context: ssl.SSLContext) -> tuple[float, int, bytes]:
    with socket.create_connection((HOST, port)) as raw:
        reader = raw.makefile("rb", buffering=0)
        reader.readline()
        raw.sendall(f"STARTTLS {nbytes}\r\n".encode())
        reader.readline()
        reader.close()
        with context.wrap_socket(raw, server_hostname=SERVER_HOSTNAME) as tls:
            recv = tls.recv
            got = 0
            data = b""
            start = CLOCK()
            while got < nbytes:
                data = recv(READ_SIZE)
                if not data:
                    break
                got += len(data)
            elapsed = CLOCK() - start
    return elapsed, got, data


class MemoryBIOCeiling:
    """Decrypt a recorded TLS session from memory: OpenSSL plus the ``ssl`` module, no I/O."""

    def __init__(self, nbytes: int, client: ssl.SSLContext, cert_chain_pem: bytes) -> None:
        import os
        import tempfile

        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile(suffix=".pem", delete=False) as pem:
            pem.write(cert_chain_pem)
        try:
            server.load_cert_chain(pem.name)
        finally:
            os.unlink(pem.name)
        self._client_context = client
        self._server_context = server
        self._nbytes = nbytes

    def run(self) -> tuple[float, int, bytes]:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = self._client_context.wrap_bio(c_in, c_out, server_hostname=SERVER_HOSTNAME)
        server = self._server_context.wrap_bio(s_in, s_out, server_side=True)
        done = [False, False]
        while not all(done):
            for k, obj in enumerate((client, server)):
                if not done[k]:
                    try:
                        obj.do_handshake()
                        done[k] = True
                    except ssl.SSLWantReadError:
                        pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        payload = memoryview(bulk_payload(self._nbytes))
        wire: list[bytes] = []
        for at in range(0, self._nbytes, 1 << 20):
            server.write(payload[at : at + (1 << 20)])
            wire.append(s_out.read())
        ciphertext = memoryview(b"".join(wire))
        # Include the session ticket records sent after the handshake.
        c_in.write(s_out.read())
        read = client.read
        got = 0
        data = b""
        start = CLOCK()
        for at in range(0, len(ciphertext), 1 << 18):
            c_in.write(ciphertext[at : at + (1 << 18)])
            while True:
                try:
                    data = read(READ_SIZE)
                except ssl.SSLWantReadError:
                    break
                got += len(data)
        elapsed = CLOCK() - start
        return elapsed, got, data

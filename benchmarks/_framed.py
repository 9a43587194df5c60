"""Length-prefixed messages: a hex length line, then that many bytes and ``\\r\\n`` (HTTP/1.1
chunked framing, and the shape of many line-plus-payload protocols).

Each client reads the length line with its delimiter reader and the payload with its
exact-count reader, one call each per message: ``recv_parsed`` + ``recv_exactly`` for
janusnet, ``readuntil`` + ``readexactly`` for asyncio, ``receive_until`` +
``receive_exactly`` for anyio, and a hand-written buffer over a blocking socket. The two
calls alternate, so no reader can cut many records ahead and hand them out later.
"""

from __future__ import annotations

import asyncio
import socket
import time

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

import janusnet

from ._records import HOST, READ_SIZE, Tally, _command


def _tally(got: int, size: int, first: bytes, last: bytes) -> Tally:
    return Tally(count=got, data_bytes=size, first=first, last=last)


async def _janusnet(port: int, count: int) -> tuple[float, Tally]:
    sock = await janusnet.Socket.connect(HOST, port)
    async with sock:
        await sock.send(_command("framed", count))
        recv_parsed, recv_exactly = sock.recv_parsed, sock.recv_exactly
        got = size = 0
        first = body = b""
        start = time.perf_counter()
        while got < count:
            line = (await recv_parsed()).data
            if not line:
                break
            body = (await recv_exactly(int(line, 16) + 2))[:-2]
            if not got:
                first = body
            got += 1
            size += len(body)
        elapsed = time.perf_counter() - start
    return elapsed, _tally(got, size, first, body)


def janusnet_asyncio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_janusnet, port, count, backend="asyncio")


def janusnet_trio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_janusnet, port, count, backend="trio")


async def _asyncio(port: int, count: int) -> tuple[float, Tally]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(_command("framed", count))
        await writer.drain()
        readuntil, readexactly = reader.readuntil, reader.readexactly
        got = size = 0
        first = body = b""
        start = time.perf_counter()
        try:
            while got < count:
                line = await readuntil(b"\r\n")
                body = (await readexactly(int(line[:-2], 16) + 2))[:-2]
                if not got:
                    first = body
                got += 1
                size += len(body)
        except asyncio.IncompleteReadError:
            pass
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
        await writer.wait_closed()
    return elapsed, _tally(got, size, first, body)


def asyncio_streams(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return asyncio.run(_asyncio(port, count))


async def _anyio(port: int, count: int) -> tuple[float, Tally]:
    stream = await anyio.connect_tcp(HOST, port)
    async with stream:
        await stream.send(_command("framed", count))
        buffered = BufferedByteReceiveStream(stream)
        receive_until, receive_exactly = buffered.receive_until, buffered.receive_exactly
        got = size = 0
        first = body = b""
        start = time.perf_counter()
        try:
            while got < count:
                line = await receive_until(b"\r\n", READ_SIZE)
                body = (await receive_exactly(int(line, 16) + 2))[:-2]
                if not got:
                    first = body
                got += 1
                size += len(body)
        except anyio.IncompleteRead:
            pass
        elapsed = time.perf_counter() - start
    return elapsed, _tally(got, size, first, body)


def anyio_streams(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_anyio, port, count, backend="asyncio")


def blocking_socket(port: int, variant: str, count: int) -> tuple[float, Tally]:
    """The Python limit: ``bytes.find`` and slices over a blocking socket's reads."""
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(_command("framed", count))
        recv = sock.recv
        buf = b""
        pos = 0
        got = size = 0
        first = body = b""
        start = time.perf_counter()
        while got < count:
            end = buf.find(b"\r\n", pos)
            while end < 0:
                chunk = recv(READ_SIZE)
                if not chunk:
                    break
                buf = buf[pos:] + chunk
                pos = 0
                end = buf.find(b"\r\n")
            if end < 0:
                break
            need = int(buf[pos:end], 16) + 2
            pos = end + 2
            while len(buf) - pos < need:
                chunk = recv(READ_SIZE)
                if not chunk:
                    break
                buf = buf[pos:] + chunk
                pos = 0
            if len(buf) - pos < need:
                break
            body = buf[pos : pos + need - 2]
            pos += need
            if not got:
                first = body
            got += 1
            size += len(body)
        elapsed = time.perf_counter() - start
    return elapsed, _tally(got, size, first, body)

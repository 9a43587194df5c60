"""Record-parsing clients: read ~64-byte records one at a time, as fast as each stack can.

Every client connects, sends ``RECORDS <variant> <count>``, then (timed) reads ``count``
records one call per record, adding up the body bytes (and, with three tokens, the token
bytes) and keeping the first and last body. :func:`check` compares that with what the
server sent; a wrong count is reported in the table, never hidden.

With one token (``\\r\\n``) the peers use their own delimiter readers. With three tokens
(``\\r\\n``, ``\\n``, ``|``) neither asyncio 3.11 (``readuntil`` takes one separator) nor
anyio (``receive_until`` takes one delimiter) has a multi-token reader, so those columns
use the best simple hand-written reader over the stack's own receive call
(:class:`ThreeTokenReader`): cached next positions of ``\\n`` and ``|``, earliest wins, a
``\\r`` before ``\\n`` makes it ``\\r\\n``. It is specialised to these tokens and to bodies
that never contain them; janusnet implements the general rule (any tokens, earliest start,
longest at a tie, wait on a partial match, limits), so the comparison favours the peers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import trio
from anyio.streams.buffered import BufferedByteReceiveStream

import janusnet

from ._server import TOKENS_ONE, TOKENS_THREE, RecordSet

HOST = "127.0.0.1"
READ_SIZE = 65536


@dataclass
class Tally:
    """What a client read: compared with the :class:`RecordSet` by :func:`check`."""

    count: int = 0
    data_bytes: int = 0
    token_bytes: int = 0
    first: bytes = b""
    last: bytes = b""


def check(tally: Tally, expected: RecordSet, three: bool) -> str | None:
    """``None`` when the client read exactly the records sent, else what went wrong."""
    if tally.count != expected.count:
        return f"read {tally.count} records, expected {expected.count}"
    if tally.data_bytes != expected.data_bytes:
        return f"read {tally.data_bytes} body bytes, expected {expected.data_bytes}"
    if three and tally.token_bytes != expected.token_bytes:
        return f"read {tally.token_bytes} token bytes, expected {expected.token_bytes}"
    if (tally.first, tally.last) != (expected.first, expected.last):
        return "first or last record differs"
    return None


# ---------------------------------------------------------------- hand-written readers


class OneTokenReader:
    """The best simple ``\\r\\n`` reader: ``bytes.find`` from an offset, one slice per record."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._buf = b""
        self._pos = 0

    async def read(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\r\n", pos)
        while end < 0:
            chunk = await self._receive()
            if not chunk:
                return None
            buf = self._buf = buf[pos:] + chunk
            pos = 0
            end = buf.find(b"\r\n")
        self._pos = end + 2
        return buf[pos:end]


class ThreeTokenReader:
    """The best simple ``\\r\\n`` | ``\\n`` | ``|`` reader (see the module docstring)."""

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._buf = b""
        self._pos = 0
        self._nl = 0  # next b"\n" at or after _pos, or len(_buf) when there is none
        self._bar = 0  # the same for b"|"

    async def read(self) -> tuple[bytes, bytes | None]:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        nl = self._nl
        if nl < pos:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                nl = size
        bar = self._bar
        if bar < pos:
            bar = buf.find(b"|", pos)
            if bar < 0:
                bar = size
        while bar == nl:  # both == size: neither token is buffered
            chunk = await self._receive()
            if not chunk:
                return b"", None
            buf = self._buf = buf[pos:] + chunk
            pos = 0
            size = len(buf)
            nl = buf.find(b"\n")
            if nl < 0:
                nl = size
            bar = buf.find(b"|")
            if bar < 0:
                bar = size
        self._nl = nl
        self._bar = bar
        if bar < nl:
            self._pos = bar + 1
            return buf[pos:bar], b"|"
        self._pos = nl + 1
        if nl > pos and buf[nl - 1] == 13:
            return buf[pos : nl - 1], b"\r\n"
        return buf[pos:nl], b"\n"


class BlockingOneTokenReader:
    """:class:`OneTokenReader` on a blocking socket: the Python limit."""

    def __init__(self, sock: socket.socket) -> None:
        self._recv = sock.recv
        self._buf = b""
        self._pos = 0

    def read(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\r\n", pos)
        while end < 0:
            chunk = self._recv(READ_SIZE)
            if not chunk:
                return None
            buf = self._buf = buf[pos:] + chunk
            pos = 0
            end = buf.find(b"\r\n")
        self._pos = end + 2
        return buf[pos:end]


class BlockingThreeTokenReader:
    """:class:`ThreeTokenReader` on a blocking socket: the Python limit."""

    def __init__(self, sock: socket.socket) -> None:
        self._recv = sock.recv
        self._buf = b""
        self._pos = 0
        self._nl = 0
        self._bar = 0

    def read(self) -> tuple[bytes, bytes | None]:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        nl = self._nl
        if nl < pos:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                nl = size
        bar = self._bar
        if bar < pos:
            bar = buf.find(b"|", pos)
            if bar < 0:
                bar = size
        while bar == nl:
            chunk = self._recv(READ_SIZE)
            if not chunk:
                return b"", None
            buf = self._buf = buf[pos:] + chunk
            pos = 0
            size = len(buf)
            nl = buf.find(b"\n")
            if nl < 0:
                nl = size
            bar = buf.find(b"|")
            if bar < 0:
                bar = size
        self._nl = nl
        self._bar = bar
        if bar < nl:
            self._pos = bar + 1
            return buf[pos:bar], b"|"
        self._pos = nl + 1
        if nl > pos and buf[nl - 1] == 13:
            return buf[pos : nl - 1], b"\r\n"
        return buf[pos:nl], b"\n"


# ---------------------------------------------------------------- timed loops
# The loops are written out per client (not shared through a callback) so that each pays
# only its own per-record cost: one call, one length, one comparison.


def _command(variant: str, count: int) -> bytes:
    return f"RECORDS {variant} {count}\r\n".encode()


async def _janusnet(port: int, variant: str, count: int) -> tuple[float, Tally]:
    tokens = TOKENS_ONE if variant == "one" else TOKENS_THREE
    client_port = janusnet.ClientPort("BENCH", parse_tokens=tokens)
    tally = Tally()
    sock = await janusnet.Socket.connect(HOST, port, client_port=client_port)
    async with sock:
        await sock.send(_command(variant, count))
        recv = sock.recv_parsed
        start = time.perf_counter()
        data, token, _ = await recv()
        tally.first = data
        got = 0
        size = 0
        token_size = 0
        if variant == "one":
            while token is not None:
                got += 1
                size += len(data)
                if got == count:
                    break
                data, token, _ = await recv()
            token_size = 2 * got
        else:
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token, _ = await recv()
        elapsed = time.perf_counter() - start
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally


async def _janusnet_per_call(port: int, variant: str, count: int) -> tuple[float, Tally]:
    """The same, with the tokens passed as a new list on every call (the port's default
    tokens left alone), the way code without a configured port reads records."""
    tally = Tally()
    sock = await janusnet.Socket.connect(HOST, port)
    async with sock:
        await sock.send(_command(variant, count))
        recv = sock.recv_parsed
        start = time.perf_counter()
        got = 0
        size = 0
        token_size = 0
        if variant == "one":
            data, token, _ = await recv([b"\r\n"])
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                if got == count:
                    break
                data, token, _ = await recv([b"\r\n"])
            token_size = 2 * got
        else:
            data, token, _ = await recv([b"\r\n", b"\n", b"|"])
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token, _ = await recv([b"\r\n", b"\n", b"|"])
        elapsed = time.perf_counter() - start
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally


def janusnet_per_call(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_janusnet_per_call, port, variant, count, backend="asyncio")


def janusnet_asyncio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_janusnet, port, variant, count, backend="asyncio")


def janusnet_trio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_janusnet, port, variant, count, backend="trio")


async def _asyncio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    tally = Tally()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(_command(variant, count))
        await writer.drain()
        got = size = token_size = 0
        data = b""
        start = time.perf_counter()
        if variant == "one":
            readuntil = reader.readuntil
            try:
                data = await readuntil(b"\r\n")
                tally.first = data[:-2]
                while True:
                    got += 1
                    size += len(data)
                    if got == count:
                        break
                    data = await readuntil(b"\r\n")
            except asyncio.IncompleteReadError:
                data = b"\r\n"
            size -= 2 * got
            token_size = 2 * got
            data = data[:-2]
        else:

            async def receive() -> bytes:
                return await reader.read(READ_SIZE)

            read = ThreeTokenReader(receive).read
            data, token = await read()
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token = await read()
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
        await writer.wait_closed()
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally


def asyncio_streams(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return asyncio.run(_asyncio(port, variant, count))


async def _anyio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    tally = Tally()
    stream = await anyio.connect_tcp(HOST, port)
    async with stream:
        await stream.send(_command(variant, count))
        got = size = token_size = 0
        data = b""
        start = time.perf_counter()
        if variant == "one":
            receive_until = BufferedByteReceiveStream(stream).receive_until
            try:
                data = await receive_until(b"\r\n", READ_SIZE)
                tally.first = data
                while True:
                    got += 1
                    size += len(data)
                    if got == count:
                        break
                    data = await receive_until(b"\r\n", READ_SIZE)
            except anyio.IncompleteRead:
                data = b""
            token_size = 2 * got
        else:

            async def receive() -> bytes:
                try:
                    return await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    return b""

            read = ThreeTokenReader(receive).read
            data, token = await read()
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token = await read()
        elapsed = time.perf_counter() - start
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally


def anyio_streams(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return anyio.run(_anyio, port, variant, count, backend="asyncio")


async def _trio(port: int, variant: str, count: int) -> tuple[float, Tally]:
    tally = Tally()
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(_command(variant, count))

        async def receive() -> bytes:
            return await stream.receive_some(READ_SIZE)

        got = size = token_size = 0
        start = time.perf_counter()
        if variant == "one":
            read_one = OneTokenReader(receive).read
            line = await read_one()
            tally.first = line or b""
            while line is not None:
                got += 1
                size += len(line)
                if got == count:
                    break
                line = await read_one()
            data = line or b""
            token_size = 2 * got
        else:
            read = ThreeTokenReader(receive).read
            data, token = await read()
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token = await read()
        elapsed = time.perf_counter() - start
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally


def trio_handwritten(port: int, variant: str, count: int) -> tuple[float, Tally]:
    return trio.run(_trio, port, variant, count)


def blocking_socket(port: int, variant: str, count: int) -> tuple[float, Tally]:
    tally = Tally()
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(_command(variant, count))
        got = size = token_size = 0
        start = time.perf_counter()
        if variant == "one":
            read_one = BlockingOneTokenReader(sock).read
            line = read_one()
            tally.first = line or b""
            while line is not None:
                got += 1
                size += len(line)
                if got == count:
                    break
                line = read_one()
            data = line or b""
            token_size = 2 * got
        else:
            read = BlockingThreeTokenReader(sock).read
            data, token = read()
            tally.first = data
            while token is not None:
                got += 1
                size += len(data)
                token_size += len(token)
                if got == count:
                    break
                data, token = read()
        elapsed = time.perf_counter() - start
    tally.count, tally.data_bytes, tally.token_bytes, tally.last = got, size, token_size, data
    return elapsed, tally

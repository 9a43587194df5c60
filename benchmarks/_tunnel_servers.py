"""The tunnel benchmark's servers, each in its own process (``spawn``): a CONNECT proxy and a
TLS origin, both plain asyncio protocols so they cost as little CPU per tunnel as possible.

* :func:`serve_proxy` -- an HTTP/1.1 ``CONNECT`` proxy: reads the request head, connects to
  the target (loopback only), answers ``200 Connection established`` and relays both ways,
  half-close aware. Nothing else (no auth, no other methods): it is a load generator's
  counterpart, not a test fixture.
* :func:`serve_origin` -- a TLS server (trustme certificate, the ``ssl`` module's defaults,
  so TLS 1.3 with its two session tickets) that reads one HTTP request head and answers
  :data:`RESPONSE`, then closes (``close_notify`` + FIN). A request for ``/keep`` gets
  :data:`KEEP_RESPONSE` and the connection stays open (for the idle-memory measurement of
  clients that only open connections through a request, like httpcore).

Both report their port through the pipe and stop when the pipe receives anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import ssl
import tempfile
from multiprocessing.connection import Connection
from typing import Final

HOST: Final = "127.0.0.1"
BODY: Final = b"hello through the tunnel\n"
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + BODY
)
KEEP_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
CONNECT_OK: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
#: A head larger than this is refused (the clients send ~100 bytes).
MAX_HEAD: Final = 8192
#: Enough backlog for 100 clients connecting at once, and 2000 for the memory run.
BACKLOG: Final = 4096


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- proxy ------------------------------------------------------------------------------------


class _Relay(asyncio.Protocol):
    """One side of a relayed pair; ``peer`` is the other side's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if peer.eof:
                peer.transport.close()
                return False
            peer.transport.write_eof()
        return True  # keep our write side open until the peer is done too

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    # flow control: a slow reader on one side pauses reading on the other
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _ProxyClientSide(_Relay):
    def __init__(self) -> None:
        super().__init__()
        self.head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return
        assert self.transport is not None
        self.transport.pause_reading()
        rest = bytes(self.head[end + 4 :])
        line = bytes(self.head[: self.head.find(b"\r\n")])
        self.head = bytearray()
        asyncio.get_running_loop().create_task(self._connect(line, rest))

    async def _connect(self, line: bytes, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        try:
            method, target, _ = line.split(b" ", 2)
            host, _, port = target.decode("ascii").rpartition(":")
            if method != b"CONNECT" or host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(line)
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(_Relay, host.strip("[]"), int(port))
        except (OSError, ValueError):
            transport.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
            transport.close()
            return
        if transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.peer = self
        self.peer = upstream
        transport.write(CONNECT_OK)
        if rest and upstream.transport is not None:
            upstream.transport.write(rest)
        transport.resume_reading()


async def _serve_until_told(pipe: Connection, server: asyncio.AbstractServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)
    async with server:
        await stop.wait()
    loop.remove_reader(pipe.fileno())


def _listener() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose ``proto``
    # says TCP (base_events._set_nodelay), and they inherit it from the listener. With
    # Nagle left on, the origin's close_notify waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(BACKLOG)
    return sock


def serve_proxy(pipe: Connection) -> None:
    """Run the CONNECT proxy until ``pipe`` receives something; its port goes to ``pipe``."""
    raise_nofile_limit()

    async def main() -> None:
        sock = _listener()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_ProxyClientSide, sock=sock, backlog=BACKLOG)
        pipe.send(sock.getsockname()[1])
        await _serve_until_told(pipe, server)

    asyncio.run(main())


# -- origin -----------------------------------------------------------------------------------


class _Origin(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return
        assert self.transport is not None
        keep = self.head.startswith(b"GET /keep ")
        del self.head[: end + 4]
        if keep:
            self.transport.write(KEEP_RESPONSE)
        else:
            self.transport.write(RESPONSE)
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # close when the client does


def server_context(cert_chain_pem: bytes) -> ssl.SSLContext:
    """The origin's context: the trustme certificate, the ``ssl`` module's defaults."""
    with tempfile.NamedTemporaryFile(suffix=".pem", delete=False) as pem:
        pem.write(cert_chain_pem)
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pem.name)
    finally:
        os.unlink(pem.name)
    return context


def serve_origin(pipe: Connection, cert_chain_pem: bytes) -> None:
    """Run the TLS origin until ``pipe`` receives something; its port goes to ``pipe``."""
    raise_nofile_limit()
    context = server_context(cert_chain_pem)

    async def main() -> None:
        sock = _listener()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Origin, sock=sock, backlog=BACKLOG, ssl=context)
        pipe.send(sock.getsockname()[1])
        await _serve_until_told(pipe, server)

    asyncio.run(main())

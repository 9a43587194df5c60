"""Tunnel clients: TCP to the proxy, ``CONNECT``, TLS to the origin, one small request and
its response read to the end, close.

Every client is an async context manager factory ``client(env)`` that sets up what a real
application would keep between tunnels (the janusnet ``ProxyTunnel``, the httpcore pool,
the python-socks ``Proxy``) and yields two coroutine functions:

* ``fetch()`` -- one whole tunnel; raises :class:`WrongResponse` when the bytes differ;
* ``open_idle()`` -- an established tunnel with TLS done and nothing sent, returned with
  an async ``close`` callable (used by the idle-memory measurement).

Fairness notes. The hand-written clients do what a careful programmer writes by hand:
read the CONNECT reply head, check for ``200``, upgrade (``StreamWriter.start_tls``, anyio
``TLSStream.wrap``), send, read until EOF. httpcore uses one ``AsyncHTTPProxy`` per run
with ``max_keepalive_connections=0`` (so every request opens a fresh tunnel: no keep-alive
reuse), ``max_connections=None``; it checks the status and body rather than raw bytes
(that is its API). For idle memory, httpcore cannot open a connection without a request:
its "idle tunnel" is a pooled keep-alive connection after one request to ``/keep``.
python-socks uses ``python_socks.async_.asyncio.v2.Proxy.connect(dest_ssl=...)``.

``floor`` is not a library: the least an anyio program can do per tunnel -- a non-blocking
socket, ``anyio.wait_readable``/``wait_writable`` and ``ssl.SSLSocket`` on the same file
descriptor (OpenSSL reads and writes the socket itself: no transport, no stream layers, no
memory BIOs), with no error mapping, deadlines or limits. It shows how much of a ratio
any anyio-based client could reach on the machine at hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.streams.tls import TLSStream

import janusnet

from ._tunnel_servers import BODY, HOST, KEEP_RESPONSE, RESPONSE

READ_SIZE = 65536
Close = Callable[[], Awaitable[None]]


class WrongResponse(Exception):
    """A client read something other than the origin's exact response."""


@dataclass(frozen=True)
class Env:
    """Where the servers are and what the clients trust."""

    proxy_host: str
    proxy_port: int
    origin_port: int
    context: ssl.SSLContext
    origin_host: str = HOST

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy_host}:{self.proxy_port}"

    @property
    def connect_request(self) -> bytes:
        authority = f"{self.origin_host}:{self.origin_port}".encode()
        return b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"

    def request(self, path: str = "/") -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.origin_host}:{self.origin_port}\r\n"
            f"Connection: close\r\n\r\n"
        ).encode()


@dataclass
class Handle:
    fetch: Callable[[], Awaitable[None]]
    open_idle: Callable[[], Awaitable[Close]]


ClientFactory = Callable[[Env], contextlib.AbstractAsyncContextManager[Handle]]


def _check(data: bytes, expected: bytes = RESPONSE) -> None:
    if data != expected:
        raise WrongResponse(f"got {data[:60]!r}... ({len(data)} bytes)")


def _check_connect_head(head: bytes) -> None:
    if not (head.startswith(b"HTTP/1.") and head[8:13] == b" 200 "):
        raise WrongResponse(f"proxy refused: {head[:40]!r}")


# -- janusnet ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def janusnet_client(env: Env) -> AsyncIterator[Handle]:
    port = janusnet.ClientPort("BENCH-TUNNEL", ssl_context=env.context)
    tunnel = janusnet.ProxyTunnel(env.proxy_url, client_port=port)
    request = env.request()
    host, origin_port = env.origin_host, env.origin_port

    async def fetch() -> None:
        sock = await tunnel.open_tls(host, origin_port)
        async with sock:
            await sock.send(request)
            chunks = []
            while data := await sock.recv(READ_SIZE):
                chunks.append(data)
        _check(b"".join(chunks))

    async def open_idle() -> Close:
        sock = await tunnel.open_tls(host, origin_port)
        return sock.aclose

    yield Handle(fetch, open_idle)


# -- hand-written asyncio ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def asyncio_client(env: Env) -> AsyncIterator[Handle]:
    connect_request = env.connect_request
    request = env.request()

    async def establish() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(env.proxy_host, env.proxy_port)
        try:
            writer.write(connect_request)
            head = await reader.readuntil(b"\r\n\r\n")
            _check_connect_head(head)
            await writer.start_tls(  # type: ignore[attr-defined,unused-ignore]  # 3.11+
                env.context, server_hostname=env.origin_host
            )
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    async def fetch() -> None:
        reader, writer = await establish()
        try:
            writer.write(request)
            data = await reader.read()  # until EOF
        finally:
            await close(writer)
        _check(data)

    async def open_idle() -> Close:
        _, writer = await establish()
        return lambda: close(writer)

    yield Handle(fetch, open_idle)


# -- hand-written anyio -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def anyio_client(env: Env) -> AsyncIterator[Handle]:
    connect_request = env.connect_request
    request = env.request()

    async def establish() -> TLSStream:
        stream = await anyio.connect_tcp(env.proxy_host, env.proxy_port)
        try:
            await stream.send(connect_request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            _check_connect_head(head)
            if not head.endswith(b"\r\n\r\n"):
                raise WrongResponse("bytes after the CONNECT reply")
            return await TLSStream.wrap(
                stream,
                hostname=env.origin_host,
                ssl_context=env.context,
                standard_compatible=False,
            )
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def fetch() -> None:
        tls = await establish()
        async with tls:
            await tls.send(request)
            chunks = []
            try:
                while True:
                    chunks.append(await tls.receive(READ_SIZE))
            except anyio.EndOfStream:
                pass
        _check(b"".join(chunks))

    async def open_idle() -> Close:
        return (await establish()).aclose

    yield Handle(fetch, open_idle)


# -- httpcore ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def httpcore_client(env: Env) -> AsyncIterator[Handle]:
    import httpcore

    url = f"https://{env.origin_host}:{env.origin_port}/"
    async with httpcore.AsyncHTTPProxy(
        proxy_url=env.proxy_url,
        ssl_context=env.context,
        max_connections=None,
        max_keepalive_connections=0,
    ) as pool:

        async def fetch() -> None:
            response = await pool.request("GET", url)
            if response.status != 200 or response.content != BODY:
                raise WrongResponse(f"status {response.status}, body {response.content[:40]!r}")

        # One keep-alive pool per idle connection: a shared pool would reuse the first.
        async def open_idle() -> Close:
            keep = httpcore.AsyncHTTPProxy(
                proxy_url=env.proxy_url, ssl_context=env.context, max_connections=1
            )
            response = await keep.request("GET", url + "keep")
            if response.content != BODY:
                raise WrongResponse("bad /keep response")
            return keep.aclose

        yield Handle(fetch, open_idle)


# -- python-socks -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def python_socks_client(env: Env) -> AsyncIterator[Handle]:
    from python_socks.async_.asyncio.v2 import Proxy

    proxy = Proxy.from_url(env.proxy_url)
    request = env.request()

    async def fetch() -> None:
        stream = await proxy.connect(env.origin_host, env.origin_port, dest_ssl=env.context)
        try:
            await stream.write(request)
            chunks = []
            while data := await stream.read(READ_SIZE):
                chunks.append(data)
        finally:
            await stream.close()
        _check(b"".join(chunks))

    async def open_idle() -> Close:
        stream = await proxy.connect(env.origin_host, env.origin_port, dest_ssl=env.context)
        return stream.close

    yield Handle(fetch, open_idle)


# -- the floor: non-blocking socket + ssl.SSLSocket, anyio only to wait ----------------------


async def _fd_recv(sock: socket.socket, size: int) -> bytes:
    while True:
        try:
            return sock.recv(size)
        except (BlockingIOError, ssl.SSLWantReadError):
            await anyio.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await anyio.wait_writable(sock)


async def _fd_sendall(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, ssl.SSLWantWriteError):
            await anyio.wait_writable(sock)
        except ssl.SSLWantReadError:
            await anyio.wait_readable(sock)


@contextlib.asynccontextmanager
async def floor_client(env: Env) -> AsyncIterator[Handle]:
    connect_request = env.connect_request
    request = env.request()

    async def establish() -> ssl.SSLSocket:
        raw = socket.socket()
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.connect_ex((env.proxy_host, env.proxy_port))
            await anyio.wait_writable(raw)
            await _fd_sendall(raw, connect_request)
            head = b""
            while b"\r\n\r\n" not in head:
                more = await _fd_recv(raw, READ_SIZE)
                if not more:
                    raise WrongResponse("the proxy closed before its reply head")
                head += more
            _check_connect_head(head)
            if not head.endswith(b"\r\n\r\n"):
                raise WrongResponse("bytes after the CONNECT reply")
            tls = env.context.wrap_socket(
                raw, server_hostname=env.origin_host, do_handshake_on_connect=False
            )
        except BaseException:
            raw.close()
            raise
        try:
            while True:
                try:
                    tls.do_handshake()
                    return tls
                except ssl.SSLWantReadError:
                    await anyio.wait_readable(tls)
                except ssl.SSLWantWriteError:
                    await anyio.wait_writable(tls)
        except BaseException:
            tls.close()
            raise

    async def fetch() -> None:
        tls = await establish()
        try:
            await _fd_sendall(tls, request)
            chunks = []
            while True:
                try:
                    data = await _fd_recv(tls, READ_SIZE)
                except ssl.SSLEOFError:  # the origin closes without close_notify
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            tls.close()
        _check(b"".join(chunks))

    async def open_idle() -> Close:
        tls = await establish()

        async def close() -> None:
            tls.close()

        return close

    yield Handle(fetch, open_idle)


#: name -> (factory, anyio backend)
CLIENTS: dict[str, tuple[ClientFactory, str]] = {
    "asyncio (hand-written)": (asyncio_client, "asyncio"),
    "janusnet (asyncio)": (janusnet_client, "asyncio"),
    "janusnet (trio)": (janusnet_client, "trio"),
    "anyio (hand-written)": (anyio_client, "asyncio"),
    "python-socks (asyncio v2)": (python_socks_client, "asyncio"),
    "httpcore AsyncHTTPProxy": (httpcore_client, "asyncio"),
    "floor: fd + SSLSocket (asyncio)": (floor_client, "asyncio"),
}

assert KEEP_RESPONSE.endswith(BODY)

"""Socket.detach(): a plain connection (a tunnel, above all) handed over as a socket.socket
to another library, on asyncio and trio; and every refusal leaving the socket as it was."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import anyio
import pytest

import janusnet
from janusnet import (
    BusyError,
    ClientPort,
    PendingDataError,
    ProxyTunnel,
    SocketClosedError,
    SocketResetError,
    TLSMode,
    UsageError,
)
from janusnet.testing import ConnectProxy, ProxyBehaviour, TLSOrigin
from loopback import reset_connection, serve

pytestmark = pytest.mark.anyio

REQUEST = b"GET /handed-over HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
ANSWER = b"hello from janusnet origin: GET /handed-over\n"


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def shared_proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture
def proxy(shared_proxy: ConnectProxy) -> Iterator[ConnectProxy]:
    shared_proxy.behaviour = ProxyBehaviour.NORMAL
    yield shared_proxy
    shared_proxy.behaviour = ProxyBehaviour.NORMAL


@pytest.fixture(scope="module")
def port(origin: TLSOrigin) -> ClientPort:
    return ClientPort("DETACH", ssl_context=origin.client_context())


def blocking_get(raw: socket.socket, context: ssl.SSLContext) -> bytes:
    """TLS and one request on the handed-over socket, with the standard library only."""
    raw.settimeout(10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(REQUEST)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return answer


async def test_detached_tunnel_carries_tls_of_another_library(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    assert port.open_sockets == 1
    raw = sock.detach()
    try:
        assert sock.closed
        assert sock.remote_address is None
        assert port.open_sockets == 0
        assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
        assert raw.getblocking() and raw.gettimeout() is None
        assert raw.getpeername()[1] == proxy.port
        await sock.aclose()  # closing the Socket leaves the handed-over socket alone
        assert raw.fileno() >= 0
        with pytest.raises(SocketClosedError):
            await sock.recv()
        with pytest.raises(SocketClosedError, match="detach: the socket is closed"):
            sock.detach()
        answer = await anyio.to_thread.run_sync(blocking_get, raw, origin.client_context())
    finally:
        raw.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(ANSWER)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_detached_tunnel_into_asyncio_streams(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    """What websockets' and aiohttp-style ``sock=`` parameters do: asyncio's own TLS."""
    sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    reader, writer = await asyncio.open_connection(
        sock=sock.detach(), ssl=origin.client_context(), server_hostname="localhost"
    )
    try:
        writer.write(REQUEST)
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(ANSWER)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_detached_tunnel_into_trio_ssl_stream(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    import trio

    sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock.detach()))
    tls = trio.SSLStream(stream, origin.client_context(), server_hostname="localhost")
    async with tls:
        await tls.send_all(REQUEST)
        answer = b""
        while chunk := await tls.receive_some():
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(ANSWER)


async def test_detached_tunnel_into_anyio_tls_stream(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    from anyio.abc import SocketStream
    from anyio.streams.tls import TLSStream

    sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    stream = await SocketStream.from_socket(sock.detach())
    tls = await TLSStream.wrap(
        stream,
        hostname="localhost",
        ssl_context=origin.client_context(),
        standard_compatible=False,
    )
    async with tls:
        await tls.send(REQUEST)
        answer = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                answer += await tls.receive()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(ANSWER)


async def test_detach_after_a_plain_exchange_keeps_the_byte_stream(anyio_backend: str) -> None:
    """Bytes still in the kernel go with the socket; what was read stays read."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"220 ready\r\n")
        await stream.send(await stream.receive())

    async with serve(handler) as number:
        sock = await janusnet.Socket.connect("127.0.0.1", number)
        assert await sock.recv_parsed() == (b"220 ready", b"\r\n", 1)
        raw = sock.detach()
        with raw:
            raw.settimeout(10)
            raw.sendall(b"echo me")
            assert await anyio.to_thread.run_sync(raw.recv, 100) == b"echo me"


async def test_detach_refuses_buffered_bytes_then_works_once_read(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES  # b"INJECTED" in the reply's write
    async with await ProxyTunnel(proxy.url, client_port=port).open(
        "localhost", origin.port
    ) as sock:
        assert sock.pending == len(b"INJECTED")
        with pytest.raises(PendingDataError) as info:
            sock.detach()
        assert info.value.code == janusnet.ReturnCode.PENDING_DATA
        assert info.value.pending == len(b"INJECTED")
        assert str(info.value).startswith("detach: 8 received byte(s) are buffered unread")
        assert not sock.closed and sock.pending == len(b"INJECTED")  # unchanged
        assert port.open_sockets == 1
        assert await sock.recv() == b"INJECTED"
        sock.detach().close()
        assert sock.closed and port.open_sockets == 0


async def test_detach_refuses_a_record_cut_ahead(anyio_backend: str) -> None:
    """Records ``recv_parsed`` cut ahead are received bytes too: nothing is dropped."""
    sent = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"one\r\ntwo\r\n")  # on loopback: in our kernel once sent
        sent.set()
        await stream.receive()

    async with serve(handler) as number:
        async with await janusnet.Socket.connect("127.0.0.1", number) as sock:
            await sent.wait()
            assert await sock.recv_parsed() == (b"one", b"\r\n", 1)
            assert sock.pending == len(b"two\r\n")
            with pytest.raises(PendingDataError):
                sock.detach()
            assert await sock.recv_parsed() == (b"two", b"\r\n", 1)
            sock.detach().close()


async def test_detach_refuses_tls(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    async with await ProxyTunnel(proxy.url, client_port=port).open_tls(
        "localhost", origin.port
    ) as sock:
        with pytest.raises(UsageError, match="the connection is TLS"):
            sock.detach()
        assert not sock.closed
        await sock.send(REQUEST)  # still usable
        assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"


async def test_detach_refuses_a_tls_port_from_connect(
    anyio_backend: str, origin: TLSOrigin
) -> None:
    always = ClientPort("ALWAYS", tls=TLSMode.ALWAYS, ssl_context=origin.client_context())
    async with await janusnet.Socket.connect("localhost", origin.port, client_port=always) as sock:
        with pytest.raises(UsageError, match="the connection is TLS"):
            sock.detach()
        assert not sock.closed


async def test_detach_refuses_a_tunnel_inside_tls_to_an_https_proxy(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(ssl_context=origin.server_context) as tls_proxy:
        tunnel = ProxyTunnel(
            f"https://localhost:{tls_proxy.port}",
            client_port=port,
            proxy_ssl_context=origin.client_context(),
        )
        async with await tunnel.open("localhost", origin.port) as sock:
            with pytest.raises(UsageError, match=r"inside TLS to an https:// proxy"):
                sock.detach()
            await sock.ssl_on()  # unchanged: the tunnel still works
            await sock.send(REQUEST)
            assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"


async def test_detach_refuses_a_stream_it_did_not_make(anyio_backend: str) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()

    async with serve(handler) as number:
        stream = await anyio.connect_tcp("127.0.0.1", number)
        async with janusnet.Socket(stream) as sock:
            with pytest.raises(UsageError, match="wraps an anyio stream it did not make"):
                sock.detach()
            assert not sock.closed
            await sock.send(b"x")


async def test_detach_refuses_while_another_task_receives(anyio_backend: str) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()
        await stream.send(b"late\r\n")

    async with serve(handler) as number:
        async with await janusnet.Socket.connect("127.0.0.1", number) as sock:
            got: list[janusnet.Parsed] = []

            async def receive() -> None:
                got.append(await sock.recv_parsed())

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(BusyError, match="detach: another task"):
                    sock.detach()
                await sock.send(b"go")
            assert got == [(b"late", b"\r\n", 1)]


async def read_until_error(sock: janusnet.Socket) -> None:
    while True:
        await sock.recv()


async def test_detach_refuses_a_broken_connection(anyio_backend: str) -> None:
    async with serve(reset_connection) as number:
        async with await janusnet.Socket.connect("127.0.0.1", number) as sock:
            with anyio.fail_after(5), pytest.raises(SocketResetError):
                await read_until_error(sock)
            with pytest.raises(SocketResetError, match="detach: the connection broke") as info:
                sock.detach()
            assert isinstance(info.value.__cause__, ConnectionResetError)
            assert not sock.closed


# -- stop_at_head: nothing read past the proxy's reply, for a server that speaks first -------

BANNER = b"SSH-2.0-janusnet-test\r\n"


async def banner_then_echo(stream: anyio.abc.SocketStream) -> None:
    await stream.send(BANNER)  # the server speaks first, as SSH, SMTP and FTP do
    await stream.send(await stream.receive())


def read_banner(raw: socket.socket) -> bytes:
    raw.settimeout(10)
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = raw.recv(100)
        if not chunk:
            break
        got += chunk
    return got


async def test_stop_at_head_hands_over_a_greeting_that_came_with_the_reply(
    anyio_backend: str, proxy: ConnectProxy
) -> None:
    """On loopback the banner mostly arrives with the 200: without stop_at_head it would
    sit in janusnet's buffer and detach() would refuse it; with it, it stays in the
    kernel for the library that takes the socket."""
    async with serve(banner_then_echo) as number:
        tunnel = ProxyTunnel(proxy.url)
        for _ in range(10):
            sock = await tunnel.open("127.0.0.1", number, stop_at_head=True)
            assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
            assert sock.pending == 0
            with sock.detach() as raw:
                assert await anyio.to_thread.run_sync(read_banner, raw) == BANNER
                raw.sendall(b"ping")
                assert await anyio.to_thread.run_sync(raw.recv, 100) == b"ping"


async def test_stop_at_head_through_basic_auth(anyio_backend: str) -> None:
    """A 407 first (its body taken whole, for the drain), then the 2xx read exactly."""
    with ConnectProxy(auth=("alice", "s3cret")) as guarded:
        async with serve(banner_then_echo) as number:
            tunnel = ProxyTunnel(guarded.url, auth=("alice", "s3cret"), preemptive_basic=False)
            sock = await tunnel.open("127.0.0.1", number, stop_at_head=True)
            assert [r.status for r in guarded.log] == [407, 200]
            with sock.detach() as raw:
                assert await anyio.to_thread.run_sync(read_banner, raw) == BANNER


async def test_stop_at_head_keeps_injected_bytes_from_tls(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    """The bytes a proxy sends after its 200 stay in the kernel: ssl_on() still refuses
    them (-112), and they are still there to read."""
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES
    async with await ProxyTunnel(proxy.url, client_port=port).open(
        "localhost", origin.port, stop_at_head=True
    ) as sock:
        assert sock.pending == 0  # not in janusnet's buffer
        with pytest.raises(PendingDataError) as info:
            await sock.ssl_on()
        assert info.value.pending == len(b"INJECTED")
        assert await sock.recv() == b"INJECTED"


@pytest.mark.parametrize("kind", ["https-proxy", "always-port"])
async def test_stop_at_head_needs_a_plain_tunnel(
    anyio_backend: str, origin: TLSOrigin, kind: str
) -> None:
    if kind == "https-proxy":
        tunnel = ProxyTunnel("https://localhost:1", proxy_ssl_context=origin.client_context())
    else:
        always = ClientPort("ALWAYS", tls=TLSMode.ALWAYS, ssl_context=origin.client_context())
        tunnel = ProxyTunnel("http://127.0.0.1:1", client_port=always)
    with pytest.raises(UsageError, match="stop_at_head"):
        await tunnel.open("localhost", origin.port, stop_at_head=True)

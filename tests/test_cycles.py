"""Failures leave no reference cycle holding janusnet's objects: a busy service would
otherwise keep sockets, TLS engines and buffers alive until the garbage collector runs,
and a socket dropped without ``aclose()`` would keep its descriptor until then.

Each test runs a failure path a few times with the collector off, then asks it what it
would have had to free (``DEBUG_SAVEALL``)."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

import janusnet
from janusnet import ProxyTunnel
from janusnet.testing import ConnectProxy, TLSOrigin
from loopback import cycles_left, reset_connection, serve, stall_after_hello

pytestmark = pytest.mark.anyio

#: Client-side objects that must never be left to the collector.
WATCHED = {"Socket", "FdStream", "FdTLSStream", "ConnectReplyReader", "SSLObject", "MemoryBIO"}


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


async def left_in_cycles(attempt: Callable[[], Awaitable[None]], times: int = 20) -> list[str]:
    """The watched objects the collector would free after ``times`` attempts."""
    await attempt()  # warm-up: caches, lazy imports
    with cycles_left(WATCHED) as found:
        for _ in range(times):
            await attempt()
    return found


def open_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


async def descriptors_back_to(count: int) -> bool:
    """Whether this process's descriptors come back to ``count`` within 5 s (the
    in-process servers close their side of a connection in their own time)."""
    for _ in range(100):
        if open_descriptors() <= count:
            return True
        await anyio.sleep(0.05)
    return False


async def test_a_handshake_that_times_out(anyio_backend: str, origin: TLSOrigin) -> None:
    port = janusnet.ClientPort("CYCLES", ssl_context=origin.client_context())
    async with serve(stall_after_hello) as number:

        async def attempt() -> None:
            sock = await janusnet.Socket.connect("localhost", number, client_port=port)
            with pytest.raises(TimeoutError):
                await sock.ssl_on(timeout=0.05)

        assert await left_in_cycles(attempt, times=10) == []


async def test_a_handshake_that_is_cancelled(anyio_backend: str, origin: TLSOrigin) -> None:
    port = janusnet.ClientPort("CYCLES", ssl_context=origin.client_context())
    async with serve(stall_after_hello) as number:

        async def attempt() -> None:
            with anyio.move_on_after(0.05):
                await janusnet.Socket.connect("localhost", number, client_port=port, tls=True)

        assert await left_in_cycles(attempt, times=10) == []


async def test_a_reset_met_by_a_receive(anyio_backend: str) -> None:
    """And a socket dropped unclosed after it closes its descriptor at once."""
    async with serve(reset_connection) as number:
        kept: list[janusnet.Socket] = []

        async def attempt() -> None:
            sock = await janusnet.Socket.connect("127.0.0.1", number)
            with anyio.fail_after(5), pytest.raises(janusnet.SocketResetError):
                await sock.recv()
            with pytest.raises(janusnet.SocketResetError):
                await sock.recv()  # the sticky error, raised again from what was kept
            kept.append(sock)
            await sock.aclose()
            kept.clear()

        assert await left_in_cycles(attempt) == []

        before = open_descriptors()
        gc.disable()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                for _ in range(10):
                    sock = await janusnet.Socket.connect("127.0.0.1", number)
                    with anyio.fail_after(5), pytest.raises(janusnet.SocketResetError):
                        await sock.recv()
                    del sock  # dropped without aclose()
            # Closed by the finaliser, not the collector (which is off).
            assert await descriptors_back_to(before)
        finally:
            gc.enable()


async def test_a_malformed_proxy_reply(anyio_backend: str, origin: TLSOrigin) -> None:
    with ConnectProxy(behaviour="malformed") as proxy:
        tunnel = ProxyTunnel(proxy.url, timeout=5)

        async def attempt() -> None:
            with pytest.raises(janusnet.ProxyProtocolError):
                await tunnel.open("localhost", origin.port)

        assert await left_in_cycles(attempt) == []


async def test_a_refused_connect(anyio_backend: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    number = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now

    async def attempt() -> None:
        with pytest.raises(janusnet.ConnectError):
            await janusnet.Socket.connect("127.0.0.1", number)

    before = open_descriptors()
    assert await left_in_cycles(attempt) == []
    assert open_descriptors() <= before


async def test_a_tunnel_inside_tls_dropped_unclosed_closes_its_descriptor(
    anyio_backend: str, origin: TLSOrigin
) -> None:
    """Under the TLS inside an https:// proxy's, the socket is still janusnet's own: the
    finaliser closes it, even while a warnings recorder keeps the Socket's warning."""
    port = janusnet.ClientPort("CYCLES", ssl_context=origin.client_context())
    with ConnectProxy(ssl_context=origin.server_context) as tls_proxy:
        tunnel = ProxyTunnel(
            f"https://localhost:{tls_proxy.port}",
            client_port=port,
            proxy_ssl_context=origin.client_context(),
        )
        async with await tunnel.open_tls("localhost", origin.port):
            pass  # warm-up: contexts, caches
        gc.collect()
        before = open_descriptors()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(5):
                sock = await tunnel.open_tls("localhost", origin.port)
                assert isinstance(sock.tls, janusnet.TLSInfo)
                del sock
            assert await descriptors_back_to(before)
        unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert {str(w.message) for w in unclosed} == {
            "unclosed janusnet.Socket on client port 'CYCLES'"
        }


async def test_aclose_lets_the_receive_buffer_go(anyio_backend: str) -> None:
    sent = anyio.Event()

    async def big(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"x" * 200_000 + b"\r\npartial")  # in our kernel once sent
        sent.set()
        await stream.receive()

    async with serve(big) as number:
        sock = await janusnet.Socket.connect("127.0.0.1", number)
        await sent.wait()
        with anyio.fail_after(5):
            assert len((await sock.recv_parsed(max_bytes=300_000)).data) == 200_000
        assert sock.pending == len(b"partial")  # read with the record's end
        await sock.aclose()
        assert sock.pending == 0  # nothing can be read any more: the buffer is gone

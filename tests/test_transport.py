"""The TCP hop itself: IP addresses connect without anyio's happy-eyeballs task group,
names keep it; failures close the socket and name the address."""

from __future__ import annotations

import gc
import socket
from typing import Any, NoReturn

import anyio
import pytest

import janusnet
from janusnet._transport import open_tcp
from loopback import serve

pytestmark = pytest.mark.anyio


async def greet(stream: Any) -> None:
    await stream.send(b"hello\r\n")
    await anyio.sleep(0.5)


@pytest.mark.skipif(
    not hasattr(anyio.abc.SocketStream, "from_socket"),
    reason="anyio < 4.10 has no SocketStream.from_socket(): connect_tcp is used",
)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
async def test_ip_address_connects_without_connect_tcp(
    anyio_backend: str, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("an IP address needs no happy eyeballs")

    monkeypatch.setattr(anyio, "connect_tcp", refuse)
    async with serve(greet, host=host.strip("[]")) as port:
        stream = await open_tcp(host, port)
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert await stream.receive() == b"hello\r\n"


async def test_name_still_uses_happy_eyeballs(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = anyio.connect_tcp

    async def spy(host: str, port: int, **kwargs: Any) -> Any:
        asked.append(host)
        return await real(host, port, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", spy)
    async with serve(greet) as port:
        async with await open_tcp("localhost", port) as stream:
            assert await stream.receive() == b"hello\r\n"
    assert asked == ["localhost"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_refused_ip_address_raises_and_closes(anyio_backend: str, host: str) -> None:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        await open_tcp(host, port)
    tunnel = janusnet.ProxyTunnel(f"http://{'[::1]' if ':' in host else host}:{port}")
    with pytest.raises(janusnet.ConnectError, match=f"proxy .*{port}") as refused:
        await tunnel.open("example.com", 443)
    assert refused.value.role == "proxy"


async def test_bytes_sent_at_once_wait_for_the_first_receive(anyio_backend: str) -> None:
    """Nothing is read before the first receive (as anyio.connect_tcp leaves a stream),
    and bytes that came before an upgrade are still refused by ssl_on (-112)."""
    async with serve(greet) as port:
        sock = await janusnet.Socket.connect("127.0.0.1", port)
        async with sock:
            await anyio.sleep(0.1)
            with pytest.raises(janusnet.PendingDataError):
                await sock.ssl_on(server_hostname="localhost")
            assert await sock.recv_parsed() == (b"hello", b"\r\n", 1)


async def test_cancelled_connect_leaves_nothing_open(anyio_backend: str) -> None:
    """A connect cancelled at its first checkpoint closes its socket (filterwarnings =
    error turns a leaked socket into a failure when it is collected)."""
    async with serve(greet) as port:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await open_tcp("127.0.0.1", port)
        assert scope.cancelled_caught
    gc.collect()

"""``local_address`` and ``socket_options`` on Socket.connect, SocketGroup.connect and
ProxyTunnel: what the peer sees, what the socket carries, and the errors, on asyncio and
trio. The socket's options are read off the socket ``detach()`` hands over."""

from __future__ import annotations

import errno
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

import janusnet
from janusnet import ConnectError, ProxyTunnel, SocketGroup, UsageError
from loopback import serve

pytestmark = pytest.mark.anyio

KEEPALIVE = (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


class Peers:
    """A server that notes the address each client connected from."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._noted = anyio.Event()

    def _add(self, stream: SocketStream) -> None:
        self.seen.append(str(stream.extra(SocketAttribute.remote_address)[0]))
        self._noted.set()

    async def until(self, count: int) -> list[str]:
        """The addresses seen, once ``count`` clients have been noted."""
        with anyio.fail_after(5):
            while len(self.seen) < count:
                await self._noted.wait()
                self._noted = anyio.Event()
        return self.seen

    async def note(self, stream: SocketStream) -> None:
        self._add(stream)
        await stream.receive()

    async def proxy(self, stream: SocketStream) -> None:
        """A minimal CONNECT proxy: notes the client, reads the head, answers 200."""
        self._add(stream)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await stream.receive()


async def test_connect_from_a_local_address(anyio_backend: str) -> None:
    peers = Peers()
    async with serve(peers.note) as number:
        sock = await janusnet.Socket.connect("127.0.0.1", number, local_address="127.0.0.2")
        with sock.detach() as raw:
            assert raw.getsockname()[0] == "127.0.0.2"
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # janusnet's own
            raw.sendall(b"x")
        assert await peers.until(1) == ["127.0.0.2"]


async def test_socket_options_are_set_and_win_over_janusnet_s(anyio_backend: str) -> None:
    peers = Peers()
    nagle_on = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    async with serve(peers.note) as number:
        sock = await janusnet.Socket.connect(
            "127.0.0.1", number, socket_options=[KEEPALIVE, nagle_on]
        )
        with sock.detach() as raw:
            assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            raw.sendall(b"x")
        plain = await janusnet.Socket.connect("127.0.0.1", number)
        with plain.detach() as raw:
            assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            raw.sendall(b"x")


async def test_happy_eyeballs_attempts_get_the_options(anyio_backend: str) -> None:
    """A name with several addresses is raced; every attempt gets the options (the
    first address refuses here, the second wins)."""
    from janusnet._transport import _happy_eyeballs, tcp_options

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    refused = (socket.AF_INET, socket.SOCK_STREAM, 6, "", listener.getsockname())
    listener.close()  # nothing listens there
    peers = Peers()
    async with serve(peers.note) as number:
        good = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", number))
        options = tcp_options("127.0.0.6", [KEEPALIVE])
        with anyio.fail_after(5):
            stream = await _happy_eyeballs([refused, good], options)
        async with stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            await stream.send(b"x")
            assert await peers.until(1) == ["127.0.0.6"]


async def test_socket_option_with_a_bytes_value(anyio_backend: str) -> None:
    linger = (socket.SOL_SOCKET, socket.SO_LINGER, bytes(8))  # struct linger {0, 0}
    async with serve(Peers().note) as number:
        sock = await janusnet.Socket.connect("127.0.0.1", number, socket_options=(linger,))
        with sock.detach() as raw:
            assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == bytes(8)
            raw.sendall(b"x")


async def test_tunnel_connects_to_the_proxy_from_a_local_address(anyio_backend: str) -> None:
    peers = Peers()
    async with serve(peers.proxy) as number:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{number}", local_address="127.0.0.3", socket_options=[KEEPALIVE]
        )
        sock = await tunnel.open("example.com", 443)
        assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
        with sock.detach() as raw:
            assert raw.getsockname()[0] == "127.0.0.3"
            assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            raw.sendall(b"x")
        assert await peers.until(1) == ["127.0.0.3"]


async def test_from_env_and_group_pass_them_on(anyio_backend: str) -> None:
    peers = Peers()
    async with serve(peers.proxy) as proxy_port, serve(peers.note) as number:
        tunnel = ProxyTunnel.from_env(
            "example.com",
            443,
            environ={"HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}"},
            local_address="127.0.0.4",
        )
        assert tunnel is not None
        with (await tunnel.open("example.com", 443)).detach() as raw:
            raw.sendall(b"x")
        async with SocketGroup() as group:
            sock = await group.connect("127.0.0.1", number, local_address="127.0.0.5")
            assert sock in group
            await sock.send(b"x")
            assert sorted(await peers.until(2)) == ["127.0.0.4", "127.0.0.5"]


async def test_local_address_not_on_this_machine(anyio_backend: str) -> None:
    async with serve(Peers().note) as number:
        with pytest.raises(ConnectError) as info:
            await janusnet.Socket.connect("127.0.0.1", number, local_address="192.0.2.1")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "cannot bind local address 192.0.2.1" in str(info.value)
    # The caller's choice, not this machine running out of ports.
    assert "no local address or port is free" not in str(info.value)


async def test_tunnel_local_address_not_on_this_machine_names_the_proxy(
    anyio_backend: str,
) -> None:
    async with serve(Peers().proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", local_address="192.0.2.1")
        with pytest.raises(ConnectError) as info:
            await tunnel.open("example.com", 443)
    assert info.value.role == "proxy"
    assert f"cannot connect to proxy 127.0.0.1:{number}" in str(info.value)
    assert "cannot bind local address 192.0.2.1" in str(info.value)


async def test_local_address_of_the_other_family(anyio_backend: str) -> None:
    with pytest.raises(ConnectError, match="::1 has no IPv4 address, the family of local"):
        await janusnet.Socket.connect("::1", 9, local_address="127.0.0.1")
    with pytest.raises(ConnectError, match=r"127\.0\.0\.1 has no IPv6 address"):
        await janusnet.Socket.connect("127.0.0.1", 9, local_address="::")


async def test_socket_option_the_os_refuses(anyio_backend: str) -> None:
    async with serve(Peers().note) as number:
        with pytest.raises(ConnectError) as info:
            await janusnet.Socket.connect(
                "127.0.0.1", number, socket_options=[(socket.SOL_SOCKET, 9999, 1)]
            )
    assert info.value.errno == errno.ENOPROTOOPT
    assert "socket option (1, 9999, 1) refused" in str(info.value)


BAD_ARGUMENTS: list[Any] = [
    pytest.param({"local_address": "localhost"}, "must be an IP address", id="name"),
    pytest.param({"local_address": "127.0.0.1:80"}, "must be an IP address", id="with-port"),
    pytest.param({"local_address": 2130706433}, "must be an IP address string", id="int"),
    pytest.param({"socket_options": [(1, 2)]}, "a socket option must be", id="two-items"),
    pytest.param({"socket_options": [("1", 2, 3)]}, "a socket option must be", id="str-level"),
    pytest.param({"socket_options": [(1, 2, "on")]}, "a socket option must be", id="str-value"),
    pytest.param({"socket_options": [[1, 2, 3]]}, "a socket option must be", id="list-item"),
    pytest.param({"socket_options": (1, 2, 3)}, "a socket option must be", id="flat-tuple"),
    pytest.param({"socket_options": b"\x01"}, "must be a list of", id="bytes"),
    pytest.param({"socket_options": 7}, "must be a list of", id="int"),
    pytest.param({"socket_options": [(1, 9, 2**31)]}, "tuple of C ints", id="value-too-big"),
    pytest.param({"socket_options": [(1, 9, -(2**40))]}, "tuple of C ints", id="value-too-low"),
    pytest.param({"socket_options": [(2**40, 9, 1)]}, "tuple of C ints", id="level-too-big"),
    pytest.param({"local_address": "[127.0.0.1]"}, "must be an IP address", id="v4-brackets"),
    pytest.param({"local_address": "[[::1]]"}, "must be an IP address", id="double-brackets"),
    pytest.param({"local_address": "::1]"}, "must be an IP address", id="one-bracket"),
    pytest.param({"local_address": "fe80::1%no-such-if"}, "zone", id="unknown-zone"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS)
def test_from_env_refuses_bad_arguments_even_without_a_proxy(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        ProxyTunnel.from_env("example.com", 443, environ={}, **arguments)


async def test_ipv6_local_address_in_brackets(anyio_backend: str) -> None:
    from janusnet._transport import tcp_options

    options = tcp_options("[::1]", None)
    assert options is not None and options.local_address == "::1"


async def test_every_address_failing_alike_keeps_the_errno(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with two addresses, a local address this machine lacks: both attempts fail
    with EADDRNOTAVAIL, and the error says so (not a shortage of this machine's)."""
    resolved = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 9))
        for address in ("127.0.0.2", "127.0.0.1")
    ]

    async def fake_getaddrinfo(host: str, port: int, **kwargs: object) -> object:
        return resolved

    monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ConnectError) as info:
        await janusnet.Socket.connect("two.test", 9, local_address="192.0.2.1")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "all 2 addresses failed" in str(info.value)
    assert "no local address or port is free" not in str(info.value)


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS)
async def test_bad_arguments_are_usage_errors_before_any_packet(
    anyio_backend: str, arguments: dict[str, Any], message: str
) -> None:
    peers = Peers()
    async with serve(peers.note) as number:
        with pytest.raises(UsageError, match=message):
            await janusnet.Socket.connect("127.0.0.1", number, **arguments)
        with pytest.raises(UsageError, match=message):
            ProxyTunnel(f"http://127.0.0.1:{number}", **arguments)
        await anyio.sleep(0.05)
    assert peers.seen == []

"""STARTTLS-style injection (CVE-2011-0411, CVE-2020-14954, CVE-2021-22947) and CR/LF
injection, on asyncio and trio.

Bytes that reach the client over the plaintext hop — with the proxy's 200 in one
segment, in a later segment before ``ssl_on()``, or after a STARTTLS go-ahead — must
never be returned as if they came over TLS: ``ssl_on()`` refuses them (-112) and leaves
the socket usable; once they are drained, the data read over TLS is only the origin's.

CR, LF and NUL in a host, port, header or credential are refused with ``UsageError``
before anything is sent: the proxy sees no connection at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from janusnet import ClientPort, PendingDataError, ProxyTunnel, Socket, UsageError
from janusnet.testing import ConnectProxy, OriginMode, ProxyBehaviour, TLSOrigin
from loopback import read_line, serve

pytestmark = pytest.mark.anyio

INJECTED = b"250 INJECTED\r\n"


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def starttls_origin(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    with TLSOrigin(ca=origin.ca, mode=OriginMode.STARTTLS, inject=INJECTED) as server:
        yield server


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture
def port(origin: TLSOrigin) -> ClientPort:
    return ClientPort("INJECTION", ssl_context=origin.client_context())


async def refuse_then_drain(sock: Socket) -> bytes:
    """``ssl_on()`` until it works, draining what it refuses; returns the drained bytes."""
    drained = b""
    for _ in range(10):
        try:
            await sock.ssl_on()
        except PendingDataError as exc:
            assert exc.code == -112  # noqa: PT017 - the loop needs the exception itself
            assert not sock.closed, "-112 leaves the socket usable"
            assert sock.tls is None
            drained += await sock.recv()
        else:
            return drained
    raise AssertionError("ssl_on() kept refusing")


async def origin_get(sock: Socket) -> bytes:
    await sock.send(b"GET /after-tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
    received = b""
    while chunk := await sock.recv():
        received += chunk
    return received


async def test_injection_with_the_200_same_segment(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES
    try:
        sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    finally:
        proxy.behaviour = ProxyBehaviour.NORMAL
    async with sock:
        assert sock.pending == len(b"INJECTED")
        with pytest.raises(PendingDataError) as info:
            await sock.ssl_on()
        assert info.value.pending == len(b"INJECTED")
        assert await refuse_then_drain(sock) == b"INJECTED"
        received = await origin_get(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"hello from janusnet origin: GET /after-tls\n")
    assert b"INJECTED" not in received


async def late_injecting_proxy(origin_port: int, late: bytes) -> Any:
    """A loopback CONNECT proxy that answers 200, then sends ``late`` in a later segment,
    then relays to the origin."""

    async def handler(client: SocketStream) -> None:
        buf = bytearray()
        while await read_line(client, buf):
            pass
        upstream = await anyio.connect_tcp("127.0.0.1", origin_port)
        async with upstream:
            await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await anyio.sleep(0.05)
            await client.send(late)

            async def pump(source: Any, sink: Any) -> None:
                try:
                    while True:
                        await sink.send(await source.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass
                finally:
                    group.cancel_scope.cancel()

            async with anyio.create_task_group() as group:
                group.start_soon(pump, client, upstream)
                group.start_soon(pump, upstream, client)

    return serve(handler)


async def test_injection_in_a_later_segment_before_ssl_on(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    late = b"LATE INJECTED BYTES\r\n"
    async with await late_injecting_proxy(origin.port, late) as proxy_port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{proxy_port}", client_port=port)
        async with await tunnel.open("localhost", origin.port) as sock:
            assert sock.pending == 0
            await anyio.sleep(0.3)  # the late segment is in the kernel, not in our buffer
            assert sock.pending == 0
            with pytest.raises(PendingDataError):
                await sock.ssl_on()
            drained = await refuse_then_drain(sock)
            assert drained == late
            received = await origin_get(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"INJECTED" not in received


async def starttls_exchange(sock: Socket) -> None:
    assert (await sock.recv_parsed()).data == b"220 ready"
    await sock.send_line("STARTTLS")
    assert (await sock.recv_parsed()).data == b"220 go ahead"


async def test_injection_during_direct_starttls(
    anyio_backend: str, starttls_origin: TLSOrigin, port: ClientPort
) -> None:
    async with await Socket.connect("localhost", starttls_origin.port, client_port=port) as sock:
        await starttls_exchange(sock)
        with pytest.raises(PendingDataError):
            await sock.ssl_on()
        assert await refuse_then_drain(sock) == INJECTED
        assert sock.tls is not None
        await sock.send(b"ping over tls\r\n")
        echoed = await sock.recv_parsed()
    assert echoed.data == b"ping over tls"


async def test_injection_during_starttls_through_a_tunnel(
    anyio_backend: str, proxy: ConnectProxy, starttls_origin: TLSOrigin, port: ClientPort
) -> None:
    tunnel = ProxyTunnel(proxy.url, client_port=port)
    async with await tunnel.open("localhost", starttls_origin.port) as sock:
        await starttls_exchange(sock)
        with pytest.raises(PendingDataError):
            await sock.ssl_on()
        assert await refuse_then_drain(sock) == INJECTED
        await sock.send(b"ping\r\n")
        assert (await sock.recv_parsed()).data == b"ping"


# --------------------------------------------------------------------------- CR / LF / NUL

BAD_CHARS = {"cr": "\r", "lf": "\n", "crlf": "\r\n", "nul": "\x00"}


def bad_cases() -> list[Any]:
    cases = []
    for tag, bad in BAD_CHARS.items():
        cases += [
            pytest.param({"host": f"evil{bad}.example"}, id=f"host-middle-{tag}"),
            pytest.param({"host": f"localhost{bad}"}, id=f"host-end-{tag}"),
            pytest.param({"host": f"{bad}localhost"}, id=f"host-start-{tag}"),
            pytest.param({"port": f"443{bad}"}, id=f"port-str-{tag}"),
            pytest.param({"headers": {"X-Test": f"a{bad}Injected: 1"}}, id=f"header-value-{tag}"),
            pytest.param({"headers": {f"X{bad}Test": "a"}}, id=f"header-name-{tag}"),
            pytest.param({"auth": (f"al{bad}ice", "secret")}, id=f"auth-user-{tag}"),
            pytest.param({"auth": ("alice", f"sec{bad}ret")}, id=f"auth-password-{tag}"),
            pytest.param({"auth": ("alice", f"secret{bad}")}, id=f"auth-password-end-{tag}"),
            pytest.param({"userinfo": f"al{bad}ice:secret"}, id=f"url-user-{tag}"),
            pytest.param({"userinfo": f"alice:sec{bad}ret"}, id=f"url-password-{tag}"),
        ]
    return cases


@pytest.mark.parametrize("case", bad_cases())
async def test_injection_control_characters_refused_before_sending(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, case: dict[str, Any]
) -> None:
    from urllib.parse import quote

    connections, logged = proxy.connections, len(proxy.log)
    url = proxy.url
    if "userinfo" in case:
        user, _, password = case["userinfo"].partition(":")
        url = proxy.url_with_auth(user, password)
        assert "%" in url and quote("\r") not in proxy.url
    with pytest.raises(UsageError) as info:  # noqa: PT012 - refused at either step
        tunnel = ProxyTunnel(url, headers=case.get("headers"), auth=case.get("auth"))
        await tunnel.open(case.get("host", "localhost"), case.get("port", origin.port))
    for bad in BAD_CHARS.values():
        assert bad not in str(info.value).replace("\\r", "").replace("\\n", "")
    await anyio.sleep(0.05)  # a connection, had one been made, would be counted by now
    assert proxy.connections == connections, "the proxy saw a connection"
    assert len(proxy.log) == logged


@pytest.mark.parametrize("tag", list(BAD_CHARS))
async def test_injection_control_characters_in_direct_host_refused(
    anyio_backend: str, origin: TLSOrigin, tag: str
) -> None:
    connections = origin.connections
    with pytest.raises(UsageError):
        await Socket.connect(f"local{BAD_CHARS[tag]}host", origin.port)
    await anyio.sleep(0.05)
    assert origin.connections == connections

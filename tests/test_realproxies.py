"""ProxyTunnel + ssl_on() through REAL squid and tinyproxy, on asyncio and trio.

The proxies are started once per session by ``conftest.py`` (see ``realproxies.py``); they
skip when the binaries are missing, unless ``JANUSNET_REQUIRE_REAL_PROXIES`` is set. The
origin is a local :class:`~janusnet.testing.TLSOrigin`; nothing leaves loopback.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Generator, Iterator

import pytest
import spnego

import janusnet
from janusnet import (
    ClientPort,
    ProxyAuth,
    ProxyAuthenticationRequired,
    ProxyRefusedError,
    ProxyReply,
    ProxyTunnel,
    ReturnCode,
)
from janusnet.testing import TLSOrigin, byte_pattern
from loopback import has_ipv6_loopback
from realproxies import NON_ASCII_USERS, RealProxy

pytestmark = [pytest.mark.anyio, pytest.mark.realproxy]

# 16 MiB: enough to cross many TCP windows and TLS records through the proxy's relay loop.
BIG = 16 * 1024 * 1024
# Real proxies answer well within this; it only bounds a hang.
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def port(origin: TLSOrigin) -> ClientPort:
    return ClientPort("REALPROXY", ssl_context=origin.client_context())


@pytest.fixture(scope="module")
def origin6(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    with TLSOrigin(host="::1", ca=origin.ca) as server:
        yield server


@pytest.fixture(params=["squid", "tinyproxy"])
def open_proxy(request: pytest.FixtureRequest) -> RealProxy:
    """Each real proxy without authentication, in turn."""
    proxy: RealProxy = request.getfixturevalue(str(request.param))
    return proxy


def tunnel(url: str, port: ClientPort, **kwargs: object) -> ProxyTunnel:
    return ProxyTunnel(url, client_port=port, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


async def get(sock: janusnet.Socket, path: str) -> list[bytes]:
    """Send a GET over ``sock``; return the response head lines (status first)."""
    await sock.send_line(f"GET {path} HTTP/1.1")
    await sock.send_line("Host: localhost")
    await sock.send_line("Connection: close")
    await sock.send_line()
    head = []
    while (line := await sock.recv_parsed()).data:
        head.append(line.data)
    return head


async def fetch_hello(proxy: RealProxy, url: str, port: ClientPort, origin: TLSOrigin) -> None:
    async with await tunnel(url, port).open("localhost", origin.port) as sock:
        reply = sock.proxy_reply
        assert reply is not None and reply.status == 200, proxy.logs()
        await sock.ssl_on()
        assert sock.tls is not None and sock.tls.server_hostname == "localhost"
        head = await get(sock, "/real")
        assert head[0] == b"HTTP/1.1 200 OK"
        assert (await sock.recv_parsed()).data == b"hello from janusnet origin: GET /real\n"


async def test_realproxy_tunnel_ssl_on_get(
    anyio_backend: str, open_proxy: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    await fetch_hello(open_proxy, open_proxy.url, port, origin)


@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_realproxy_ipv6_target_in_brackets(
    anyio_backend: str, open_proxy: RealProxy, origin6: TLSOrigin, port: ClientPort, host: str
) -> None:
    async with await tunnel(open_proxy.url, port).open_tls(host, origin6.port) as sock:
        assert sock.tls is not None and sock.tls.server_hostname == "::1"
        assert (await get(sock, "/v6"))[0] == b"HTTP/1.1 200 OK"


async def test_realproxy_squid_basic_auth_from_percent_encoded_url(
    anyio_backend: str, squid_basic: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    url = squid_basic.url_with_auth()
    assert "%3A" in url and "%40" in url  # the ':' and '@' of the password are encoded
    await fetch_hello(squid_basic, url, port, origin)


async def test_realproxy_squid_basic_auth_from_auth_argument(
    anyio_backend: str, squid_basic: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    assert squid_basic.username is not None and squid_basic.password is not None
    async with await tunnel(
        squid_basic.url, port, auth=(squid_basic.username, squid_basic.password)
    ).open("localhost", origin.port) as sock:
        await sock.ssl_on()
        head = await get(sock, "/auth")
        assert head[0] == b"HTTP/1.1 200 OK"


async def test_realproxy_squid_digest_auth_is_answered(
    anyio_backend: str, squid_digest: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    await fetch_hello(squid_digest, squid_digest.url_with_auth(), port, origin)


@pytest.mark.parametrize("user", NON_ASCII_USERS)
async def test_realproxy_squid_digest_auth_with_a_non_ascii_user_name(
    anyio_backend: str, squid_digest: RealProxy, origin: TLSOrigin, port: ClientPort, user: str
) -> None:
    # squid refuses RFC 7616's username*=UTF-8''... form; the UTF-8 bytes it takes.
    await fetch_hello(squid_digest, squid_digest.url_with_auth(user=user), port, origin)


@pytest.mark.parametrize("scheme", ["basic", "digest"])
async def test_realproxy_squid_wrong_password_raises_407_with_challenge(
    anyio_backend: str,
    scheme: str,
    request: pytest.FixtureRequest,
    origin: TLSOrigin,
    port: ClientPort,
) -> None:
    proxy: RealProxy = request.getfixturevalue(f"squid_{scheme}")
    with pytest.raises(ProxyAuthenticationRequired) as info:
        await tunnel(proxy.url, port, auth=("alice", "wrong:password")).open(
            "localhost", origin.port
        )
    assert info.value.status == 407
    assert any(
        challenge.lower().startswith(scheme) and 'realm="janusnet"' in challenge
        for challenge in info.value.challenges
    ), info.value.challenges
    assert "wrong:password" not in str(info.value)


class NTLMProxyAuth(ProxyAuth):
    """NTLM with pyspnego, as the guide shows it; ``type3`` replaces the final message
    (a forged one, to be refused)."""

    def __init__(self, type3: bytes | None = None) -> None:
        self.type3 = type3
        self.replies: list[ProxyReply] = []

    def auth_flow(
        self, *, proxy_host: str, target: str
    ) -> Generator[str | None, ProxyReply, None]:
        client = spnego.client("bob", "pw", hostname=proxy_host, protocol="ntlm")
        token = client.step()
        while token:
            reply = yield "NTLM " + base64.b64encode(token).decode("ascii")
            self.replies.append(reply)
            offered = [
                c for c in reply.get_all("proxy-authenticate") if c.lower().startswith("ntlm ")
            ]
            if not offered or client.complete:
                return
            token = self.type3 or client.step(base64.b64decode(offered[0].split()[1]))


async def test_realproxy_squid_ntlm_through_a_proxy_auth_flow(
    anyio_backend: str, squid_ntlm: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    """NTLM takes two requests on one connection: type 1, the 407 with type 2, type 3."""
    flow = NTLMProxyAuth()
    async with await tunnel(squid_ntlm.url, port, auth=flow).open(
        "localhost", origin.port
    ) as sock:
        assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
        await sock.ssl_on()
        assert (await get(sock, "/ntlm"))[0] == b"HTTP/1.1 200 OK"
    assert [reply.status for reply in flow.replies] == [407]
    assert flow.replies[0].get_all("proxy-authenticate")[0].startswith("NTLM TlRMTVNTUAACAAAA")


async def test_realproxy_squid_ntlm_refused_raises_407(
    anyio_backend: str, squid_ntlm: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    forged = b"NTLMSSP\0\x03\0\0\0" + bytes(40)
    flow = NTLMProxyAuth(type3=forged)
    with pytest.raises(ProxyAuthenticationRequired) as info:
        await tunnel(squid_ntlm.url, port, auth=flow).open("localhost", origin.port)
    assert info.value.challenges == ("NTLM",)
    assert "the proxy auth flow NTLMProxyAuth gave up after 2" in str(info.value)
    assert base64.b64encode(forged).decode() not in str(info.value)


async def test_realproxy_squid_without_credentials_raises_407(
    anyio_backend: str, squid_basic: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    with pytest.raises(ProxyAuthenticationRequired) as info:
        await tunnel(squid_basic.url, port).open("localhost", origin.port)
    assert info.value.challenges


async def test_realproxy_squid_denied_port_raises_403(
    anyio_backend: str, squid: RealProxy, port: ClientPort
) -> None:
    assert squid.denied_port is not None
    with pytest.raises(ProxyRefusedError) as info:
        await tunnel(squid.url, port).open("127.0.0.1", squid.denied_port)
    assert type(info.value) is ProxyRefusedError
    assert info.value.status == 403
    assert info.value.proxy == f"{squid.host}:{squid.port}"


async def test_realproxy_16_mib_through_the_tunnel(
    anyio_backend: str, open_proxy: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    async with await tunnel(open_proxy.url, port).open_tls("localhost", origin.port) as sock:
        assert sock.tls is not None
        head = await get(sock, f"/bytes/{BIG}")
        assert head[0] == b"HTTP/1.1 200 OK"
        assert f"Content-Length: {BIG}".encode() in head
        digest = hashlib.sha256()
        received = 0
        while received < BIG:
            chunk = await sock.recv(min(1 << 20, BIG - received))
            assert chunk, f"stream ended after {received} bytes"
            digest.update(chunk)
            received += len(chunk)
        assert await sock.recv() == b""
    assert digest.hexdigest() == hashlib.sha256(byte_pattern(BIG)).hexdigest()


async def test_realproxy_second_ssl_on_is_refused_and_socket_stays_usable(
    anyio_backend: str, squid: RealProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    """After a real tunnel, ``ssl_on`` twice is -149 and leaves the TLS socket usable."""
    async with await tunnel(squid.url, port).open_tls("localhost", origin.port) as sock:
        with pytest.raises(janusnet.SSLOnOtherError) as info:
            await sock.ssl_on()
        assert info.value.code == ReturnCode.OTHER
        head = await get(sock, "/twice")
        assert head[0] == b"HTTP/1.1 200 OK"

"""ProxyTunnel against the in-process CONNECT proxy and TLS origin, on asyncio and trio."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import janusnet
from janusnet import (
    ClientPort,
    ConnectError,
    PendingDataError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTunnel,
    SSLOnOtherError,
    UsageError,
)
from janusnet.testing import ConnectProxy, ProxyBehaviour, TLSOrigin, byte_pattern
from loopback import has_ipv6_loopback, serve

pytestmark = pytest.mark.anyio

PASSWORD = "pa:ss@w%rd"


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def origin6(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    with TLSOrigin(host="::1", ca=origin.ca) as server:
        yield server


@pytest.fixture(scope="module")
def shared_proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture
def proxy(shared_proxy: ConnectProxy) -> Iterator[ConnectProxy]:
    shared_proxy.behaviour = ProxyBehaviour.NORMAL
    shared_proxy.log.clear()
    yield shared_proxy
    shared_proxy.behaviour = ProxyBehaviour.NORMAL


@pytest.fixture(scope="module")
def port(origin: TLSOrigin) -> ClientPort:
    return ClientPort("TUNNEL", ssl_context=origin.client_context())


async def get(sock: janusnet.Socket, path: str = "/") -> list[bytes]:
    await sock.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    lines = []
    while (line := await sock.recv_parsed()).index:
        lines.append(line.data)
    lines.append(line.data)
    return lines


async def test_tunnel_open_then_ssl_on_reaches_origin(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    tunnel = ProxyTunnel(proxy.url, client_port=port)
    async with await tunnel.open("localhost", origin.port) as sock:
        reply = sock.proxy_reply
        assert reply is not None
        assert (reply.status, reply.reason, reply.http_version) == (
            200,
            "Connection established",
            "1.1",
        )
        assert sock.tls is None
        # remote is the proxy; repr names the target as well
        assert f"remote=('127.0.0.1', {proxy.port}) target='localhost:{origin.port}'" in repr(sock)
        await sock.ssl_on()
        assert sock.tls is not None and sock.tls.server_hostname == "localhost"
        lines = await get(sock, "/x")
        assert lines[0] == b"HTTP/1.1 200 OK"
        assert lines[-1] == b"hello from janusnet origin: GET /x\n"
    [record] = proxy.log
    assert record.method == "CONNECT"
    assert record.target == f"localhost:{origin.port}"
    assert record.http_version == "1.1"
    assert record.header("Host") == f"localhost:{origin.port}"
    assert not record.proxy_authorization


async def test_tunnel_open_tls_and_extra_headers(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    tunnel = ProxyTunnel(proxy.url, client_port=port, headers={"X-Trace": "abc"})
    async with await tunnel.open_tls("localhost", origin.port) as sock:
        assert sock.tls is not None
        assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
    assert proxy.log[0].header("X-Trace") == "abc"


@pytest.mark.parametrize(
    ("behaviour", "reason", "headers"),
    [
        pytest.param(ProxyBehaviour.HTTP10_NO_REASON, "", (), id="http10-no-reason"),
        pytest.param(ProxyBehaviour.SPLIT_HEAD, "Connection established", (), id="split-head"),
        pytest.param(
            ProxyBehaviour.OBS_FOLD,
            "Connection established",
            (("X-Folded", "a b"),),
            id="obs-fold",
        ),
        pytest.param(
            ProxyBehaviour.CHUNKED_2XX,
            "Connection established",
            (("Transfer-Encoding", "chunked"), ("Content-Length", "5")),
            id="2xx-with-te-and-cl",
        ),
    ],
)
async def test_tunnel_accepts_odd_but_valid_2xx(
    anyio_backend: str,
    proxy: ConnectProxy,
    origin: TLSOrigin,
    port: ClientPort,
    behaviour: ProxyBehaviour,
    reason: str,
    headers: tuple[tuple[str, str], ...],
) -> None:
    proxy.behaviour = behaviour
    sock = await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    async with sock:
        assert sock.proxy_reply is not None
        assert sock.proxy_reply.status == 200
        assert sock.proxy_reply.reason == reason
        assert sock.proxy_reply.headers == headers
        assert sock.pending == 0
        await sock.ssl_on()
        assert (await get(sock))[0] == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        pytest.param(ProxyBehaviour.STATUS_403, 403, id="403"),
        pytest.param(ProxyBehaviour.STATUS_502, 502, id="502"),
    ],
)
async def test_tunnel_non_2xx_is_proxy_refused(
    anyio_backend: str,
    proxy: ConnectProxy,
    origin: TLSOrigin,
    behaviour: ProxyBehaviour,
    status: int,
) -> None:
    proxy.behaviour = behaviour
    with pytest.raises(ProxyRefusedError) as info:
        await ProxyTunnel(proxy.url).open("localhost", origin.port)
    assert info.value.status == status
    assert not isinstance(info.value, ProxyAuthenticationRequired)
    assert proxy.address[1] and f"{proxy.port}" in str(info.value)


@pytest.mark.parametrize("behaviour", [ProxyBehaviour.NORMAL, ProxyBehaviour.AUTH_WITH_BODY])
async def test_tunnel_407_carries_challenges(
    anyio_backend: str, origin: TLSOrigin, behaviour: ProxyBehaviour
) -> None:
    with ConnectProxy(auth=("alice", PASSWORD), behaviour=behaviour) as proxy:
        with pytest.raises(ProxyAuthenticationRequired) as info:
            await ProxyTunnel(proxy.url).open("localhost", origin.port)
    assert info.value.status == 407
    assert info.value.challenges
    assert info.value.challenges[0].lower().startswith("basic")


async def test_tunnel_basic_auth_from_url_with_colon_in_password(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(auth=("alice", PASSWORD)) as proxy:
        tunnel = ProxyTunnel(proxy.url_with_auth("alice", PASSWORD), client_port=port)
        assert PASSWORD not in repr(tunnel)
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
        assert proxy.log[-1].proxy_authorization


async def test_tunnel_wrong_password_is_407_without_secret(
    anyio_backend: str, origin: TLSOrigin
) -> None:
    with ConnectProxy(auth=("alice", PASSWORD)) as proxy:
        tunnel = ProxyTunnel(proxy.url, auth=("alice", "wrong-secret"))
        with pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("localhost", origin.port)
    assert "wrong-secret" not in repr(info.value) + str(info.value) + repr(tunnel)


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(ProxyBehaviour.MALFORMED, id="malformed-status"),
        pytest.param(ProxyBehaviour.ENDLESS_HEAD, id="endless-head"),
        pytest.param(ProxyBehaviour.CLOSE_MID_HEAD, id="close-mid-head"),
        pytest.param(ProxyBehaviour.RESET, id="reset"),
    ],
)
async def test_tunnel_bad_reply_is_protocol_error(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, behaviour: ProxyBehaviour
) -> None:
    proxy.behaviour = behaviour
    with anyio.fail_after(10):
        with pytest.raises(ProxyProtocolError) as info:
            await ProxyTunnel(proxy.url, max_head_bytes=16384).open("localhost", origin.port)
    assert info.value.proxy == proxy.authority


async def test_tunnel_silent_proxy_hits_deadline(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.behaviour = ProxyBehaviour.NEVER_ANSWER
    start = anyio.current_time()
    # The message says which deadline and what it was waiting for.
    with pytest.raises(
        TimeoutError, match=r"0\.5 s deadline expired while waiting for the proxy"
    ) as info:
        await ProxyTunnel(proxy.url, timeout=0.5).open("localhost", origin.port)
    assert anyio.current_time() - start < 5
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "janusnet"]
    assert ("WARNING", str(info.value)) in logged


@pytest.mark.parametrize("stop_at_head", [False, True])
@pytest.mark.parametrize("then", ["silence", "close"])
async def test_tunnel_interim_reply_then_nothing_says_so(
    anyio_backend: str, then: str, stop_at_head: bool
) -> None:
    """A proxy that sends ``100 Continue`` and then nothing, or closes: the error says an
    interim reply came and the final one did not (it said "waiting for the proxy's
    reply", or "closed inside the reply head": found by a differential check)."""
    from loopback import read_line, serve

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while await read_line(stream, buf):
            pass
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if then == "silence":
            await anyio.sleep(5)

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", timeout=0.5)
        expected = (TimeoutError, ProxyProtocolError)[then == "close"]
        with anyio.fail_after(10), pytest.raises(expected) as info:
            await tunnel.open("localhost", 443, stop_at_head=stop_at_head)
    if then == "silence":
        assert str(info.value).endswith(
            "expired while waiting for the proxy's final reply (it sent an interim 100 reply)"
        )
    else:
        assert str(info.value) == (
            f"proxy 127.0.0.1:{number} closed the connection after an interim 100 reply, "
            "before its final reply to CONNECT was complete (25 bytes)"
        )


async def test_tunnel_deadline_while_the_proxy_reads_nothing_says_so(
    anyio_backend: str,
) -> None:
    """A proxy that accepts and never reads: a CONNECT too large for the kernel buffers
    (megabytes of extra headers) cannot go out, and the deadline says that, not that it
    waited for a reply."""

    headers = {f"X-Filler-{i}": "x" * 60000 for i in range(300)}  # 18 MB
    # Never accepted: the kernel takes the connection and as much as its buffer holds.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", headers=headers, timeout=0.5)
        with anyio.fail_after(10), pytest.raises(TimeoutError) as info:
            await tunnel.open("localhost", 443)
    assert "while sending CONNECT: the proxy is not reading it" in str(info.value)


async def test_tunnel_refusal_of_a_large_request_is_not_held_up_by_the_close(
    anyio_backend: str,
) -> None:
    """A proxy that refuses a CONNECT of a megabyte after reading its start, and then
    reads nothing more: the refusal comes as it is, not after the close waited for the
    rest of the request to go out (it would, for a plain aclose(): see test_linger)."""

    done = threading.Event()

    def refuse_early(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
            done.wait(10)  # reading nothing more

    headers = {f"X-Filler-{i}": "x" * 60000 for i in range(16)}  # ~1 MB
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=refuse_early, args=(listener,))
        thread.start()
        try:
            port = listener.getsockname()[1]
            tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", headers=headers, timeout=1)
            with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
                await tunnel.open("localhost", 443)
        finally:
            done.set()
            thread.join(10)
    assert info.value.status == 431


async def test_tunnel_open_tls_deadline_names_the_handshake(
    anyio_backend: str, proxy: ConnectProxy
) -> None:
    with TLSOrigin(mode="stall") as stalling:
        tunnel = ProxyTunnel(proxy.url, timeout=0.5)
        with pytest.raises(TimeoutError, match="while doing the TLS handshake with the target"):
            await tunnel.open_tls("localhost", stalling.port)


async def test_tunnel_extra_bytes_after_200_refused_by_ssl_on(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES
    async with await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port) as s:
        assert s.pending == len(b"INJECTED")
        with pytest.raises(PendingDataError) as info:
            await s.ssl_on()
        assert info.value.code == -112
        assert await s.recv() == b"INJECTED"


async def test_tunnel_open_tls_refuses_injected_bytes(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES
    with pytest.raises(PendingDataError) as info:
        await ProxyTunnel(proxy.url, client_port=port).open_tls("localhost", origin.port)
    # Not ssl_on()'s "read them first": open_tls() has closed the socket.
    assert info.value.code == -112 and info.value.pending == len(b"INJECTED")
    assert f"8 byte(s) came through proxy {proxy.authority} after its reply" in str(info.value)
    assert "socket is closed" in str(info.value) and "read them first" not in str(info.value)


async def test_tunnel_ipv6_proxy_and_target(
    anyio_backend: str, origin6: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(host="::1") as proxy6:
        assert proxy6.url.startswith("http://[::1]:")
        tunnel = ProxyTunnel(proxy6.url, client_port=port)
        async with await tunnel.open("::1", origin6.port) as sock:
            await sock.ssl_on()
            assert sock.tls is not None and sock.tls.server_hostname == "::1"
            assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
        assert proxy6.log[0].target == f"[::1]:{origin6.port}"


@pytest.mark.parametrize(
    "host",
    ["evil.example\r\nX-Injected: 1", "evil.example\n", "a\x00b", "ex ample.com", ""],
    ids=["crlf-header", "lf", "nul", "space", "empty"],
)
async def test_tunnel_control_bytes_in_host_refused_before_sending(
    anyio_backend: str, proxy: ConnectProxy, host: str
) -> None:
    before = proxy.connections
    with pytest.raises(UsageError):
        await ProxyTunnel(proxy.url).open(host, 443)
    assert proxy.connections == before


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Bad": "a\r\nInjected: 1"},
        {"Bad\r\nName": "x"},
        {"X-Nul": "a\x00"},
        {"Content-Length": "5"},
        {"transfer-encoding": "chunked"},
    ],
    ids=["crlf-value", "crlf-name", "nul-value", "content-length", "transfer-encoding"],
)
def test_tunnel_bad_headers_refused_at_construction(headers: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        ProxyTunnel("http://127.0.0.1:3128", headers=headers)


async def test_tunnel_unreachable_proxy_names_the_proxy(anyio_backend: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    free = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(ConnectError) as info:
        await ProxyTunnel(f"http://bob:{PASSWORD}@127.0.0.1:{free}".replace("%", "%25")).open(
            "example.com", 443
        )
    assert info.value.role == "proxy"
    assert info.value.port == free
    assert f"127.0.0.1:{free}" in str(info.value)
    assert "example.com" not in str(info.value)
    assert "pa:ss" not in str(info.value)


async def test_tunnel_16_mib_through_tunnel(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    size = 16 * 1024 * 1024
    async with await ProxyTunnel(proxy.url, client_port=port).open_tls(
        "localhost", origin.port
    ) as sock:
        await sock.send(f"GET /bytes/{size} HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while (await sock.recv_parsed()).data:
            pass
        digest = hashlib.sha256()
        received = 0
        while chunk := await sock.recv():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(byte_pattern(size)).hexdigest()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, None, id="nothing"),
        pytest.param({"HTTPS_PROXY": "http://p:3128"}, "p:3128", id="https-proxy"),
        pytest.param(
            {"https_proxy": "http://p:1", "HTTPS_PROXY": "http://q:2"}, "p:1", id="lower-case-wins"
        ),
        pytest.param({"ALL_PROXY": "http://a:8080"}, "a:8080", id="all-proxy"),
        pytest.param({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, None, id="no-proxy-star"),
        pytest.param(
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.com"}, None, id="no-proxy-domain"
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://p:3128", "no_proxy": ".example.com"},
            None,
            id="no-proxy-dot-suffix",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.com,10.0.0.0/8"},
            "p:3128",
            id="no-proxy-other",
        ),
    ],
)
def test_tunnel_from_env(environ: dict[str, str], expected: str | None) -> None:
    tunnel = ProxyTunnel.from_env("www.example.com", 443, environ=environ)
    assert (tunnel.proxy if tunnel else None) == expected


def test_tunnel_from_env_cidr_no_proxy() -> None:
    environ = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8, ::1"}
    assert ProxyTunnel.from_env("10.1.2.3", 443, environ=environ) is None
    assert ProxyTunnel.from_env("::1", 443, environ=environ) is None
    assert ProxyTunnel.from_env("11.1.2.3", 443, environ=environ) is not None


async def test_tunnel_from_env_passes_the_tunnel_arguments(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(auth=("alice", PASSWORD)) as proxy:
        environ = {"HTTPS_PROXY": proxy.url}
        tunnel = ProxyTunnel.from_env(
            origin.host,
            origin.port,
            environ=environ,
            auth=("alice", PASSWORD),
            client_port=port,
            headers={"X-Trace": "from-env"},
        )
        assert tunnel is not None
        async with await tunnel.open_tls(origin.host, origin.port) as sock:
            assert sock.tls is not None
        assert proxy.log[-1].header("x-trace") == "from-env"
        assert proxy.log[-1].proxy_authorization


def test_tunnel_from_env_rejects_unknown_arguments() -> None:
    with pytest.raises(TypeError, match="colour"):
        ProxyTunnel.from_env("example.com", 443, environ={}, colour="blue")  # type: ignore[call-arg]


def https_tunnel(tls_proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort) -> ProxyTunnel:
    """A tunnel through ``tls_proxy`` as an ``https://`` proxy (trusting origin's CA)."""
    return ProxyTunnel(
        f"https://localhost:{tls_proxy.port}",
        client_port=port,
        proxy_ssl_context=origin.client_context(),
    )


async def test_tunnel_https_proxy_tls_in_tls(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(ssl_context=origin.server_context) as tls_proxy:
        tunnel = https_tunnel(tls_proxy, origin, port)
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
        assert tls_proxy.log[0].target == f"localhost:{origin.port}"


@pytest.mark.parametrize("offered", [["h2", "http/1.1"], ["http/1.1"]])
async def test_tunnel_https_proxy_that_chooses_h2_gets_no_connect(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort, offered: list[str]
) -> None:
    """A ``proxy_ssl_context`` made for an HTTP/2 client offers h2, and a proxy that
    speaks it chooses it: an HTTP/1.1 CONNECT (with its credentials) must not follow,
    where the proxy expects HTTP/2's preface (it did, and the proxy's answer was named
    "binary data, not HTTP"). UsageError naming ALPN; offering http/1.1 alone works."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin.ca.issue_cert("localhost").configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = origin.client_context()
    client.set_alpn_protocols(offered)
    with ConnectProxy(ssl_context=server, auth=("alice", PASSWORD)) as tls_proxy:
        tunnel = ProxyTunnel(
            f"https://localhost:{tls_proxy.port}",
            auth=("alice", PASSWORD),
            client_port=port,
            proxy_ssl_context=client,
        )
        with anyio.fail_after(10):
            if offered == ["http/1.1"]:
                async with await tunnel.open_tls("localhost", origin.port) as sock:
                    assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
                return
            with pytest.raises(UsageError) as info:
                await tunnel.open_tls("localhost", origin.port)
        assert tls_proxy.log == []  # no CONNECT went
        label = f"proxy localhost:{tls_proxy.port}"
    assert f"{label} agreed on the ALPN protocol 'h2'" in str(info.value)
    assert "context.set_alpn_protocols(['http/1.1'])" in str(info.value)


@pytest.mark.parametrize("closes", ["at-once", "later"])
@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_tunnel_https_proxy_that_wants_a_client_certificate(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort, version: str, closes: str
) -> None:
    """An ``https://`` proxy that requires a client certificate, given none: -111
    naming the proxy, on both TLS versions. With TLS 1.3 the proxy refuses after our
    side of the handshake is done, with an alert the reply's read meets: that read as
    "reset the connection during CONNECT" (a ProxyProtocolError), with TLS 1.2 as the
    handshake failing (found by a differential check against curl)."""
    import socketserver

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin.ca.issue_cert("localhost").configure_cert(server)
    origin.ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    server.maximum_version = ssl.TLSVersion[version]

    class Refuse(socketserver.BaseRequestHandler):
        def handle(self) -> None:  # a blocking SSLSocket: it sends its alert
            self.request.settimeout(5)
            # (It closes with our CONNECT unread: its kernel resets the connection,
            # which the send of CONNECT meets, or, closing later, the reply's read
            # meets the alert first.)
            tls = server.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
            with contextlib.suppress(OSError), tls:
                try:
                    tls.do_handshake()
                finally:
                    if closes == "later":
                        time.sleep(0.3)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuse) as proxy:
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        label = f"proxy localhost:{proxy.server_address[1]}"
        tunnel = ProxyTunnel(
            f"https://localhost:{proxy.server_address[1]}",
            client_port=port,
            proxy_ssl_context=origin.client_context(),
        )
        try:
            with anyio.fail_after(10), pytest.raises(janusnet.HandshakeError) as info:
                await tunnel.open_tls("localhost", origin.port)
        finally:
            proxy.shutdown()
            thread.join()
    assert info.value.code == -111
    assert str(info.value).startswith(f"TLS handshake with {label} failed: "), info.value
    if version == "TLSv1_3":
        assert "CERTIFICATE_REQUIRED: it wants a client certificate" in str(info.value)


def test_tunnel_names_a_broken_proxy_tls_not_a_reset() -> None:
    """Another TLS error on an ``https://`` proxy's connection during CONNECT (a record
    that is not TLS, injected on the way) is named, not called a reset; a reset alone
    still is one."""
    tunnel = ProxyTunnel("https://proxy.test:3128")
    broken = janusnet.SocketResetError("connection broke while receiving")
    broken.__cause__ = ssl.SSLError(1, "[SSL: BAD_RECORD_TYPE] bad record type")
    error = tunnel._broke_during_connect(broken)
    assert isinstance(error, ProxyProtocolError)
    assert str(error) == (
        "proxy proxy.test:3128's TLS broke during CONNECT: [SSL: BAD_RECORD_TYPE] bad record type"
    )
    reset = janusnet.SocketResetError("connection broke while receiving")
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert str(tunnel._broke_during_connect(reset)) == (
        "proxy proxy.test:3128 reset the connection during CONNECT"
    )


async def test_tunnel_open_tls_resumes_a_session(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    tunnel = ProxyTunnel(proxy.url, client_port=port)
    async with await tunnel.open_tls("localhost", origin.port) as first:
        assert (await get(first))[0] == b"HTTP/1.1 200 OK"  # (TLS 1.3: tickets read)
        session = first.tls_session
    async with await tunnel.open_tls("localhost", origin.port, session=session) as second:
        assert second.tls is not None and second.tls.session_reused
        assert (await get(second))[0] == b"HTTP/1.1 200 OK"


async def test_tunnel_session_inside_an_https_proxy_is_refused(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    async with await ProxyTunnel(proxy.url, client_port=port).open_tls(
        "localhost", origin.port
    ) as first:
        await get(first)
        session = first.tls_session
    assert session is not None
    with ConnectProxy(ssl_context=origin.server_context) as tls_proxy:
        tunnel = https_tunnel(tls_proxy, origin, port)
        with pytest.raises(UsageError, match="nothing was sent"):
            await tunnel.open_tls("localhost", origin.port, session=session)
        assert tls_proxy.log == []
        async with await tunnel.open("localhost", origin.port) as sock:
            with pytest.raises(UsageError, match="not inside another TLS layer"):
                await sock.ssl_on(session=session)
            assert not sock.closed and sock.tls is None
            await sock.ssl_on()  # the tunnel still works
            assert (await get(sock))[0] == b"HTTP/1.1 200 OK"


async def test_tunnel_plain_through_an_https_proxy_has_no_close_notify_of_its_own(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    """A plain tunnel inside an https:// proxy's TLS: when the target's end comes, the
    proxy ends its TLS cleanly; that close_notify is the hop's, not the target's."""

    async def say_bye(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"bye\r\n")

    async with serve(say_bye) as target:
        with ConnectProxy(ssl_context=origin.server_context) as tls_proxy:
            tunnel = https_tunnel(tls_proxy, origin, port)
            async with await tunnel.open("127.0.0.1", target) as sock:
                with anyio.fail_after(10):
                    assert (await sock.recv_parsed()).data == b"bye"
                    assert await sock.recv() == b""
                assert sock.tls is None and not sock.close_notify_received


async def test_tunnel_https_proxy_that_ends_tls_after_its_reply(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    """An ``https://`` proxy that answers 200 and ends its TLS at once (close_notify,
    then it waits for ours): ``ssl_on()`` sees the end (-149) at once and closes nothing
    it should not; reading gives the end of stream."""
    from anyio.streams.tls import TLSStream

    from loopback import read_line, serve

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        tls = await TLSStream.wrap(stream, server_side=True, ssl_context=origin.server_context)
        buf = bytearray()
        while await read_line(tls, buf):
            pass
        await tls.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await tls.aclose()  # close_notify right behind the reply

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(
            f"https://localhost:{number}",
            client_port=port,
            proxy_ssl_context=origin.client_context(),
        )
        for step in ("ssl_on", "recv"):
            with anyio.fail_after(10):
                async with await tunnel.open("localhost", origin.port) as sock:
                    await anyio.sleep(0.2)  # the close_notify is there before we look
                    if step == "ssl_on":
                        with pytest.raises(
                            SSLOnOtherError, match="the proxy ended the tunnel after its 200"
                        ):
                            await sock.ssl_on()
                    assert await sock.recv() == b""
        # In one call: -111, saying the proxy ended the tunnel, whenever its end arrives.
        for _ in range(5):
            with anyio.fail_after(10), pytest.raises(janusnet.HandshakeError) as info:
                await tunnel.open_tls("localhost", origin.port)
            assert f"closed the tunnel to localhost:{origin.port}" in str(info.value)


@pytest.mark.parametrize("how", ["fin-after-407", "reset-on-answer"])
async def test_tunnel_answer_on_a_kept_connection_the_proxy_then_closed(
    anyio_backend: str, how: str
) -> None:
    """The 407 says keep-alive and its body is drained, so the Digest answer goes on the
    same connection; the proxy has closed it meanwhile (a keep-alive connection gone
    stale). The answer is sent again, once, on a new connection, as HTTP clients do. (It
    was a ProxyProtocolError saying the proxy closed without replying to CONNECT.)"""
    from loopback import read_line, reset_connection, serve

    heads: list[list[bytes]] = []

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while True:
            head = []
            while line := await read_line(stream, buf):
                head.append(line)
            heads.append(head)
            authorization = [h for h in head if h.lower().startswith(b"proxy-authorization:")]
            if len(heads) == 1:
                await stream.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Digest realm="r", nonce="n1", qop="auth"\r\n'
                    b"Content-Length: 3\r\n\r\nno!"
                )
                if how == "fin-after-407":
                    return  # closed (FIN) though the reply said keep-alive
                continue
            if len(heads) == 2 and how == "reset-on-answer":
                await reset_connection(stream)
                return
            assert authorization and b"Digest" in authorization[0]
            await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await stream.send(await stream.receive())  # echo once
            return

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{number}", auth=("alice", "pw"), preemptive_basic=False
        )
        with anyio.fail_after(10):
            async with await tunnel.open("target.example", 443) as sock:
                assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
                await sock.send(b"ping")
                assert await sock.recv() == b"ping"
    assert len(heads) == (2 if how == "fin-after-407" else 3)


async def test_tunnel_refusals_with_malformed_framing_are_refusals(anyio_backend: str) -> None:
    """A 403 whose Content-Length is malformed is a ProxyRefusedError with status 403
    (it was a ProxyProtocolError with the status only in its text); a 407 with one is
    answered on a new connection, since its body has no length to drain."""
    from loopback import read_line, serve

    heads: list[list[bytes]] = []

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        head = []
        while line := await read_line(stream, buf):
            head.append(line)
        heads.append(head)
        target = head[0].split()[1]
        if target.startswith(b"denied"):
            await stream.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: abc\r\n\r\nno")
        elif not any(h.lower().startswith(b"proxy-authorization:") for h in head):
            await stream.send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Digest realm="r", nonce="n1", qop="auth"\r\n'
                b"Transfer-Encoding: bogus\r\n\r\nno!"
            )
        else:
            await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await stream.send(await stream.receive())  # echo once
        await stream.aclose()

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{number}", auth=("alice", "pw"), preemptive_basic=False
        )
        with anyio.fail_after(10):
            with pytest.raises(ProxyRefusedError) as info:
                await tunnel.open("denied.example", 443)
            assert info.value.status == 403
            assert ("Content-Length", "abc") in info.value.headers
            async with await tunnel.open("target.example", 443) as sock:
                assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
                await sock.send(b"ping")
                assert await sock.recv() == b"ping"
    assert len(heads) == 3  # the 403; the 407, then the answer on a connection of its own


async def test_tunnel_proxy_that_closes_without_replying(anyio_backend: str) -> None:
    """pproxy reads CONNECT and closes without a word when it cannot reach the target:
    ``ProxyProtocolError`` says so, with no h11 error as its cause, and the socket is
    closed (no ResourceWarning)."""
    from loopback import read_line, serve

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while await read_line(stream, buf):
            pass
        await stream.aclose()

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}")
        with anyio.fail_after(10), pytest.raises(ProxyProtocolError) as info:
            await tunnel.open("target.example", 443)
    assert str(info.value).startswith(f"proxy 127.0.0.1:{number} closed the connection")
    assert "without replying to CONNECT" in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_tunnel_open_tls_through_a_tunnel_closed_before_the_handshake(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort, how: str
) -> None:
    """A proxy that answers 200 before it reaches the target, then ends the tunnel
    (Apache Traffic Server, a closed target port): -111 naming proxy and target, every
    time. It was -149 ("ssl_on: the peer has closed the connection") when the FIN was
    there before the ClientHello and -111 when it came just after: a race. A proxy that
    closes with the ClientHello unread makes its kernel reset the connection; that was
    -149 too ("TLS handshake ... broke"), for the same end of the same tunnel."""
    from loopback import read_line, reset_connection, serve

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while await read_line(stream, buf):
            pass
        await stream.send(b"HTTP/1.1 200 OK\r\n\r\n")
        if how == "reset":
            await anyio.sleep(0.02)  # the ClientHello arrives, unread
            await reset_connection(stream)
            return
        await stream.send_eof()  # its FIN, but no reset for a ClientHello that follows
        while await stream.receive():
            pass

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", client_port=port)
        for _ in range(20):
            with anyio.fail_after(10):
                with pytest.raises(janusnet.HandshakeError) as info:
                    await tunnel.open_tls("localhost", origin.port)
            assert info.value.code == -111
        assert f"127.0.0.1:{number}" in str(info.value), info.value
        assert f"localhost:{origin.port}" in str(info.value), info.value


async def test_tunnel_open_tls_through_a_proxy_that_answers_and_closes_at_once(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    """A proxy that answers 200 and closes the moment it accepts, before reading: when
    its FIN goes out before our CONNECT arrives, its kernel answers the CONNECT with a
    reset, and Linux then says EPIPE, not ECONNRESET, to our ClientHello. The same end
    of the same tunnel: -111 saying the proxy closed it, as for the FIN or the reset
    alone. (It was -149 "TLS handshake ... broke: BrokenPipeError", in 20-45 % of the
    runs; found by a differential check against curl.) A thread accepts, so that the
    answer races the request as a quick proxy's does."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    runs = 20

    def answer_and_close() -> None:
        for _ in range(runs):
            try:
                conn, _ = listener.accept()
            except OSError:  # (the test failed: no more connections come)
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

    thread = threading.Thread(target=answer_and_close)
    thread.start()
    try:
        number = listener.getsockname()[1]
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", client_port=port)
        for _ in range(runs):
            with anyio.fail_after(10), pytest.raises(janusnet.JanusnetError) as info:
                await tunnel.open_tls("localhost", origin.port)
            if isinstance(info.value, ProxyProtocolError):
                assert "reset the connection during CONNECT" in str(info.value), info.value
                continue
            assert isinstance(info.value, janusnet.HandshakeError), repr(info.value)
            assert info.value.code == -111
            assert f"proxy 127.0.0.1:{number} " in str(info.value), info.value
            assert f"the tunnel to localhost:{origin.port}" in str(info.value), info.value
    finally:
        thread.join(10)
        listener.close()


def test_tunnel_context_not_mutated(origin: TLSOrigin) -> None:
    context = origin.client_context()
    before = (context.options, context.verify_mode, context.check_hostname)
    ProxyTunnel("http://127.0.0.1:1", proxy_ssl_context=context)
    assert (context.options, context.verify_mode, context.check_hostname) == before
    assert isinstance(context, ssl.SSLContext)


async def test_tunnel_waits_for_challenge_without_preemptive_basic(
    anyio_backend: str, origin: TLSOrigin, port: ClientPort
) -> None:
    with ConnectProxy(auth=("alice", PASSWORD)) as proxy:
        tunnel = ProxyTunnel(
            proxy.url, auth=("alice", PASSWORD), client_port=port, preemptive_basic=False
        )
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
        first, second = proxy.log
    assert (first.proxy_authorization, first.status) == (False, 407)
    assert (second.proxy_authorization, second.status) == (True, 200)


async def test_tunnel_port_limit_checked_before_contacting_proxy(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    limited = ClientPort("ONE", ssl_context=port.ssl_context, max_sockets=1)
    tunnel = ProxyTunnel(proxy.url, client_port=limited)
    async with await tunnel.open("localhost", origin.port):
        before = proxy.connections
        with pytest.raises(janusnet.PortLimitError) as info:
            await tunnel.open("localhost", origin.port)
        assert info.value.code == -109
        assert proxy.connections == before
    async with await tunnel.open("localhost", origin.port):
        pass


async def test_tunnel_proxy_connect_timeout_is_timeout_error(anyio_backend: str) -> None:
    # A listener whose accept queue is full drops further SYNs: the connect hangs.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    number = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", number))
            except BlockingIOError:
                pass
            fillers.append(filler)
        await anyio.sleep(0.1)
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", connect_timeout=0.4, timeout=10)
        start = anyio.current_time()
        with pytest.raises(
            TimeoutError, match=r"connecting to proxy .* longer than 0\.4 s"
        ) as info:
            await tunnel.open("example.com", 443)
        assert not isinstance(info.value, ConnectError)
        assert anyio.current_time() - start < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize(
    "challenge",
    [
        b'Digest realm="r\x7f", nonce="n"',  # DEL
        b'Digest realm="r", nonce="n", opaque="o\x1b"',  # ESC
        b'Digest realm="r", nonce="n\x01"',
    ],
    ids=["del-in-realm", "esc-in-opaque", "c0-in-nonce"],
)
async def test_tunnel_unanswerable_digest_echo_is_407_not_usage_error(
    anyio_backend: str, challenge: bytes
) -> None:
    """A challenge whose echoed parameters janusnet would refuse to send is a 407 it cannot
    answer, not a usage error of the caller's."""
    from loopback import serve

    heads: list[bytes] = []

    async def refuse(stream: anyio.abc.ByteStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        heads.append(head)
        await stream.send(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: "
            + challenge
            + b"\r\nContent-Length: 0\r\n\r\n"
        )
        await anyio.sleep(1)

    async with serve(refuse) as port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", auth=("alice", PASSWORD))
        with anyio.fail_after(5), pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("localhost", 443)
    assert info.value.status == 407
    assert info.value.challenges
    assert len(heads) == 1  # the first CONNECT (preemptive Basic); no Digest answer followed


@pytest.mark.parametrize(
    ("second_stale", "third_stale", "heads_sent", "opens"),
    [(True, False, 3, True), (False, False, 2, False), (True, True, 3, False)],
    ids=["stale-retried-once", "not-stale-no-retry", "stale-twice-gives-up"],
)
async def test_tunnel_digest_stale_nonce_is_answered_once(
    anyio_backend: str, second_stale: bool, third_stale: bool, heads_sent: int, opens: bool
) -> None:
    """RFC 7616 §3.3: a 407 with ``stale=true`` after our Digest answer means the nonce
    expired, not the password: answer the new nonce, once."""
    from loopback import serve

    heads: list[bytes] = []

    def challenge(nonce: str, stale: bool) -> bytes:
        extra = ", stale=true" if stale else ""
        return (
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Digest "
            + f'realm="r", nonce="{nonce}", qop="auth"{extra}'.encode()
            + b"\r\nContent-Length: 0\r\n\r\n"
        )

    replies = [
        challenge("n1", False),
        challenge("n2", second_stale),
        challenge("n3", True) if third_stale else b"HTTP/1.1 200 OK\r\n\r\n",
    ]

    async def proxy(stream: anyio.abc.ByteStream) -> None:
        buf = b""
        for reply in replies:
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive()
            head, _, buf = buf.partition(b"\r\n\r\n")
            heads.append(head)
            await stream.send(reply)
        await anyio.sleep(1)

    async with serve(proxy) as port:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{port}", auth=("alice", PASSWORD), preemptive_basic=False
        )
        with anyio.fail_after(5):
            if opens:
                async with await tunnel.open("localhost", 443) as sock:
                    assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
            else:
                with pytest.raises(ProxyAuthenticationRequired) as info:
                    await tunnel.open("localhost", 443)
                # Not "the credentials were rejected" when the proxy said only "stale".
                assert ("stale again" in str(info.value)) is third_stale
    assert len(heads) == heads_sent
    assert b"Proxy-Authorization" not in heads[0]
    assert b'nonce="n1"' in heads[1]
    if heads_sent == 3:
        assert b'nonce="n2"' in heads[2]


@pytest.mark.parametrize("connect_timeout", [None, 300.0])
async def test_tunnel_kernel_connect_timeout_is_connect_error(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch, connect_timeout: float | None
) -> None:
    """The kernel giving up on a SYN (ETIMEDOUT, ~2 minutes, so simulated here: the error
    as Python raises it) is a failed connect to the proxy, not our deadline."""
    import errno

    async def syn_unanswered(host: str, port: int, options: object = None) -> None:
        raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    monkeypatch.setattr("janusnet._transport.open_tcp", syn_unanswered)
    tunnel = ProxyTunnel("http://127.0.0.1:9", connect_timeout=connect_timeout, timeout=None)
    with pytest.raises(ConnectError, match="timed out") as info:
        await tunnel.open("example.com", 443)
    assert info.value.role == "proxy"


async def test_tunnel_port_tls_modes(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    """ALWAYS: ``open()`` hands back a TLS socket, as ``Socket.connect`` does. NEVER:
    ``open_tls()`` is refused before anything reaches the proxy."""
    from janusnet import NotSSLPortError, TLSMode

    always = ClientPort("ALWAYS", tls=TLSMode.ALWAYS, ssl_context=port.ssl_context)
    async with await ProxyTunnel(proxy.url, client_port=always).open(
        "localhost", origin.port
    ) as sock:
        assert sock.tls is not None and sock.proxy_reply is not None
    never = ClientPort("NEVER", tls=TLSMode.NEVER)
    before = len(proxy.log)
    with pytest.raises(NotSSLPortError):
        await ProxyTunnel(proxy.url, client_port=never).open_tls("localhost", origin.port)
    assert len(proxy.log) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": "3"},
        {"timeout": -1},
        {"connect_timeout": float("nan")},
        {"client_port": "P"},
        {"headers": "X-A: b"},
        {"headers": [("X-A",)]},
        {"headers": ["X-A"]},
        {"headers": [("X-A", "b", "c")]},
        {"headers": 5},
        {"proxy_ssl_context": "ctx"},
    ],
    ids=[
        "timeout-str",
        "timeout-negative",
        "nan",
        "port-name",
        "headers-str",
        "one-item",
        "str-item",
        "three-items",
        "headers-int",
        "ctx",
    ],
)
def test_tunnel_refuses_wrong_argument_types_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        ProxyTunnel("http://127.0.0.1:3128", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda: [["X-A", "b"]],  # what a JSON or YAML configuration gives
        lambda: {"X-A": "b"}.items(),
        lambda: (pair for pair in [("X-A", "b")]),
        lambda: (["X-A", "b"],),
    ],
    ids=["list-of-lists", "dict-items", "generator", "tuple-of-lists"],
)
async def test_tunnel_takes_header_pairs_in_any_iterable(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, make_headers: Any
) -> None:
    tunnel = ProxyTunnel(proxy.url, headers=make_headers())
    async with await tunnel.open("localhost", origin.port) as sock:
        assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
    assert proxy.log[-1].header("X-A") == "b"


async def test_tunnel_open_tls_refuses_a_context_that_is_not_one(
    anyio_backend: str, proxy: ConnectProxy
) -> None:
    before = len(proxy.log)
    with pytest.raises(UsageError, match="ssl_context"):
        await ProxyTunnel(proxy.url).open_tls("localhost", 443, ssl_context="x")  # type: ignore[arg-type]
    assert len(proxy.log) == before


@pytest.mark.parametrize("bad", ["64", 1.5, None, True, 0])
def test_tunnel_max_head_bytes_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(UsageError):
        ProxyTunnel("http://127.0.0.1:3128", max_head_bytes=bad)  # type: ignore[arg-type]


HOSTILE_REASON = b"Forbidden \x1b]0;PWNED\x07\x1b[2J\x1b[31mTLS verified OK\x1b[0m\x08\x7f"


async def test_tunnel_proxy_text_cannot_drive_a_terminal(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Control characters in a proxy's reason phrase reach messages and log records
    escaped (``\\x1b``), never raw; the exception keeps the reason as sent, and a huge
    one is cut in the message."""
    import logging

    from loopback import serve

    async def refuse(stream: anyio.abc.ByteStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        await stream.send(b"HTTP/1.1 403 " + HOSTILE_REASON + b"x" * 5000 + b"\r\n\r\n")
        await anyio.sleep(1)

    caplog.set_level(logging.INFO, logger="janusnet")
    async with serve(refuse) as port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}")
        with anyio.fail_after(5), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("localhost", 443)
    text = str(info.value) + "".join(record.getMessage() for record in caplog.records)
    assert "\\x1b]0;PWNED\\x07\\x1b[2J" in text
    assert not any(ch in text for ch in "\x1b\x07\x08\x7f")
    assert info.value.reason.startswith(HOSTILE_REASON.decode("latin-1"))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("preemptive", [False, True])
async def test_tunnel_407_after_a_digest_answer_offering_only_basic_says_rejected(
    anyio_backend: str, preemptive: bool
) -> None:
    """A proxy that answers janusnet's Digest answer with a 407 offering Basic only:
    the credentials were rejected (it said "it offers basic; janusnet answers Basic and
    Digest", which contradicts itself)."""
    from loopback import serve

    replies = [
        b'HTTP/1.1 407 A\r\nProxy-Authenticate: Digest realm="r", nonce="n", qop="auth"\r\n'
        b"Content-Length: 0\r\n\r\n",
        b'HTTP/1.1 407 A\r\nProxy-Authenticate: Basic realm="r"\r\nContent-Length: 0\r\n\r\n',
    ]

    async def proxy(stream: anyio.abc.ByteStream) -> None:
        for reply in replies:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            await stream.send(reply)

    async with serve(proxy) as port:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{port}", auth=("alice", PASSWORD), preemptive_basic=preemptive
        )
        with anyio.fail_after(5), pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("localhost", 443)
    # Both answers were rejected when Basic went with the first request.
    sent = "Basic, then Digest" if preemptive else "Digest"
    assert info.value.detail == f"the credentials sent ({sent}) were rejected"


@pytest.mark.parametrize(
    ("auth", "challenge", "detail"),
    [
        (None, b'Basic realm="r"', "no credentials were given"),
        (("alice", PASSWORD), b'Basic realm="r"', "the credentials sent (Basic) were rejected"),
        (
            ("alice", PASSWORD),
            b"NTLM, Negotiate",
            "it offers ntlm, negotiate; janusnet answers Basic and Digest itself, and any "
            "scheme through a janusnet.ProxyAuth flow passed as auth=",
        ),
        # Without credentials too: giving some would not help (squid with Negotiate only).
        (None, b"Negotiate, NTLM", "it offers negotiate, ntlm; janusnet answers"),
        (None, b"NTLM, Basic", "no credentials were given"),
        (
            ("alice", PASSWORD),
            b'Digest realm="r", nonce="n", qop="auth-conf"',
            "its Digest challenge asks for what janusnet does not answer",
        ),
        (
            ("alice", PASSWORD),
            b", ".join(b"S%d" % k for k in range(3000)),
            "it offers s0, s1, s2, s3, s4 and 2995 more; janusnet answers",
        ),
    ],
    ids=[
        "no-credentials",
        "rejected",
        "unanswerable-scheme",
        "unanswerable-without-credentials",
        "answerable-without-credentials",
        "unknown-qop",
        "many-schemes",
    ],
)
async def test_tunnel_407_says_why(
    anyio_backend: str, auth: tuple[str, str] | None, challenge: bytes, detail: str
) -> None:
    await _check_why_407(auth, challenge, detail, preemptive=True)


async def _check_why_407(
    auth: tuple[str, str] | None, challenge: bytes, detail: str, *, preemptive: bool
) -> None:
    """A proxy answering every request with a 407 offering ``challenge``: its
    ``detail`` starts with ``detail``, and the message is short and holds no password."""
    from loopback import serve

    async def refuse(stream: anyio.abc.ByteStream) -> None:
        while True:  # every request on the connection: the same 407
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive()
                head += data
            await stream.send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: "
                + challenge
                + b"\r\nContent-Length: 0\r\n\r\n"
            )

    async with serve(refuse) as port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", auth=auth, preemptive_basic=preemptive)
        with anyio.fail_after(5), pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("localhost", 443)
    assert info.value.detail.startswith(detail)
    assert str(info.value).endswith(info.value.detail)
    assert len(str(info.value)) < 400
    assert PASSWORD not in str(info.value) + repr(info.value)


@pytest.mark.parametrize(
    ("challenge", "detail"),
    [
        (b"===", "it offers no scheme janusnet can read (Proxy-Authenticate: '===')"),
        # Escaped once, as everywhere (not repr() on top: "\\x1b" twice over).
        (
            b"=\x1b[2J\xa0x",
            "it offers no scheme janusnet can read (Proxy-Authenticate: '=\\x1b[2J\xa0x')",
        ),
        # Quoting the credentials back there: withheld, as everywhere.
        (
            b"=" + PASSWORD.encode(),
            "it offers no scheme janusnet can read (Proxy-Authenticate: "
            "'=[credentials withheld]')",
        ),
    ],
    ids=["unreadable", "escaped-once", "unreadable-quoting-the-password"],
)
async def test_tunnel_407_with_no_readable_challenge_says_what_it_said(
    anyio_backend: str, challenge: bytes, detail: str
) -> None:
    """A ``Proxy-Authenticate`` that holds no challenge janusnet can read: the message
    quotes it (it said "it offers no scheme", while ``challenges`` held it)."""
    await _check_why_407(("alice", PASSWORD), challenge, detail, preemptive=False)


async def test_tunnel_407_body_that_stalls_costs_a_second_then_a_new_connection(
    anyio_backend: str,
) -> None:
    """A Digest 407 whose body never finishes: after ``DRAIN_TIMEOUT`` the answer goes on
    a new connection, instead of the whole deadline going by."""
    from janusnet._tunnel import DRAIN_TIMEOUT
    from loopback import serve

    answers: list[bytes] = []

    async def proxy(stream: anyio.abc.ByteStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        if b"Proxy-Authorization: Digest" in head:
            answers.append(head)
            await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            await stream.send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Digest realm="r", nonce="n", qop="auth"\r\n'
                b"Content-Length: 10\r\n\r\nabc"  # 7 bytes short, for ever
            )
        await anyio.sleep(30)

    async with serve(proxy) as port:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{port}", auth=("alice", PASSWORD), preemptive_basic=False,
            timeout=DRAIN_TIMEOUT * 10,
        )  # fmt: skip
        with anyio.fail_after(DRAIN_TIMEOUT * 5):
            async with await tunnel.open("localhost", 443) as sock:
                assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
    assert len(answers) == 1


# ------------------------------------------------------------- resolve_locally


async def test_resolve_locally_holds_ip_rules_for_names(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    """Through a tunnel the proxy resolves names, so IP rules meet only IP literals: a
    name that resolves to loopback passes them. ``resolve_locally`` resolves it here,
    checks every address, and sends nothing when one is denied."""
    relay = ClientPort(
        "RELAY",
        ssl_context=origin.client_context(),
        rules=[janusnet.deny("127.0.0.0/8"), janusnet.deny("::1"), janusnet.allow("*")],
    )
    # The documented limit, without it: the proxy resolves "localhost" and connects.
    async with await ProxyTunnel(proxy.url, client_port=relay).open("localhost", origin.port):
        assert proxy.log[-1].target == f"localhost:{origin.port}"
    proxy.log.clear()
    before = proxy.connections
    guarded = ProxyTunnel(proxy.url, client_port=relay, resolve_locally=True)
    with pytest.raises(janusnet.AccessDeniedError, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        await guarded.open_tls("localhost", origin.port)
    with pytest.raises(janusnet.AccessDeniedError):
        await guarded.open("localhost", origin.port)
    assert proxy.connections == before and proxy.log == []  # the proxy never heard of it
    # An IP literal is judged as before (no resolution).
    with pytest.raises(janusnet.AccessDeniedError):
        await guarded.open("127.0.0.1", origin.port)


async def test_resolve_locally_admits_a_name_by_its_addresses(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    """With ``resolve_locally`` an IP allow rule admits a name that resolves into it, as
    on a direct connect; without it the proxy resolves, so the name is refused."""
    rules = [janusnet.allow("127.0.0.0/8"), janusnet.allow("::1")]
    port = ClientPort("BY-ADDRESS", ssl_context=origin.client_context(), rules=rules)
    before = proxy.connections
    with pytest.raises(janusnet.AccessDeniedError, match="does not allow localhost"):
        await ProxyTunnel(proxy.url, client_port=port).open("localhost", origin.port)
    assert proxy.connections == before
    tunnel = ProxyTunnel(proxy.url, client_port=port, resolve_locally=True)
    async with await tunnel.open_tls("localhost", origin.port) as sock:
        assert proxy.log[-1].target in (f"127.0.0.1:{origin.port}", f"[::1]:{origin.port}")
        assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
    elsewhere = ClientPort("ELSEWHERE", rules=[janusnet.allow("10.0.0.0/8")])
    with pytest.raises(janusnet.AccessDeniedError, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        await ProxyTunnel(proxy.url, client_port=elsewhere, resolve_locally=True).open(
            "localhost", origin.port
        )


async def test_resolve_locally_connects_to_the_address_and_verifies_the_name(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, port: ClientPort
) -> None:
    tunnel = ProxyTunnel(proxy.url, client_port=port, resolve_locally=True)
    assert repr(tunnel).endswith(", resolve_locally=True)")
    async with await tunnel.open_tls("localhost", origin.port) as sock:
        assert proxy.log[-1].target in (f"127.0.0.1:{origin.port}", f"[::1]:{origin.port}")
        assert sock.tls is not None and sock.tls.server_hostname == "localhost"
        assert (await get(sock))[0] == b"HTTP/1.1 200 OK"
    # open() + ssl_on(): the socket still names the target, so ssl_on() verifies it.
    async with await tunnel.open("localhost", origin.port) as sock:
        await sock.ssl_on()
        assert sock.tls is not None and sock.tls.server_hostname == "localhost"


async def test_resolve_locally_failures_send_nothing(
    anyio_backend: str, proxy: ConnectProxy
) -> None:
    before = proxy.connections
    tunnel = ProxyTunnel(proxy.url, resolve_locally=True)
    with pytest.raises(janusnet.ConnectError, match=r"cannot resolve no-such-host\.invalid"):
        await tunnel.open("no-such-host.invalid", 443)
    assert proxy.connections == before
    with pytest.raises(UsageError, match="resolve_locally must be a bool"):
        ProxyTunnel(proxy.url, resolve_locally="yes")  # type: ignore[arg-type]
    from_env = ProxyTunnel.from_env(
        "example.com", 443, environ={"HTTPS_PROXY": proxy.url}, resolve_locally=True
    )
    assert from_env is not None and "resolve_locally=True" in repr(from_env)


async def test_tunnel_digest_answer_uses_the_challenge_as_written(anyio_backend: str) -> None:
    """A proxy whose Digest realm holds the password (echoed back) is answered over the
    realm it wrote, not over the copy with the credentials withheld (that answer was
    computed over ``realm="echo [credentials withheld]"`` and refused). Found by a live
    hostile-proxy check."""
    import re

    from loopback import read_line, serve

    password = "Secretpass99"
    realm = f"echo {password}"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while True:
            lines = []
            while line := await read_line(stream, buf):
                lines.append(line.decode())
            answer = [x for x in lines if x.lower().startswith("proxy-authorization: digest")]
            if not answer:  # (the Basic janusnet sends first, unasked, is refused)
                await stream.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    + f'Proxy-Authenticate: Digest realm="{realm}", nonce="n0nce", '
                    'qop="auth", algorithm=MD5\r\nContent-Length: 0\r\n\r\n'.encode()
                )
                continue
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', answer[0].split(" ", 2)[2]))
            ha1 = md5(f"alice:{params['realm']}:{password}")
            ha2 = md5(f"CONNECT:{params['uri']}")
            expected = md5(f"{ha1}:n0nce:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
            ok = params["realm"] == realm and params["response"] == expected
            await stream.send(
                b"HTTP/1.1 200 OK\r\n\r\n" if ok else b"HTTP/1.1 403 Forbidden\r\n\r\n"
            )
            await stream.aclose()
            return

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=("alice", password))
        with anyio.fail_after(10):
            async with await tunnel.open("origin.test", 443) as sock:
                assert sock.proxy_reply.status == 200


@pytest.mark.parametrize(
    ("password", "echo"),
    [
        # the Basic token as a header name
        ("Secretpass99", lambda token, pw: f"{token}: x"),
        # a password with " and \ in a quoted string, escaped
        (
            'Secret"pass\\99',
            lambda token, pw: 'X-Echo: realm="{}"'.format(
                pw.replace("\\", "\\\\").replace('"', '\\"')
            ),
        ),
        # a password with a space at its end, at the end of a header value (trimmed)
        ("Secretpass99 ", lambda token, pw: f"X-Echo: alice:{pw}"),
    ],
)
async def test_tunnel_credentials_echoed_in_other_spellings_are_withheld(
    anyio_backend: str, password: str, echo: Any
) -> None:
    """Found by a live hostile-proxy check: a proxy echoing the credentials as a header
    name, in a quoted string's escapes, or trimmed at a header value's end."""
    import base64

    from loopback import read_line, serve

    token = base64.b64encode(f"alice:{password}".encode()).decode()

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while await read_line(stream, buf):
            pass
        line = echo(token, password)
        await stream.send(f"HTTP/1.1 403 Forbidden\r\n{line}\r\n\r\n".encode())
        await stream.aclose()

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=("alice", password))
        with anyio.fail_after(10), pytest.raises(janusnet.ProxyRefusedError) as info:
            await tunnel.open("origin.test", 443)
    shown = f"{info.value} {info.value!r} {info.value.headers!r}"
    assert "[credentials withheld]" in shown
    for secret in (token, password.strip(), password.strip().replace('"', '\\"')):
        assert secret not in shown

"""The in-process test servers (and the real-proxy fixtures), driven by plain blocking sockets.

No janusnet client is involved: these tests pin down what the servers promise, byte for byte,
so the client's tests can rely on them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from janusnet.testing import (
    ConnectProxy,
    OriginMode,
    ProxyBehaviour,
    TLSOrigin,
    byte_pattern,
)
from janusnet.testing._origin import GARBAGE
from loopback import bio_handshake, has_ipv6_loopback, needs_ipv6
from realproxies import SQUID_DENIED_PORT, RealProxy

TIMEOUT = 5.0
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


# -- helpers ----------------------------------------------------------------------------------


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def recv_until(sock: socket.socket | ssl.SSLSocket, marker: bytes, limit: int = 1 << 20) -> bytes:
    """Read until ``marker`` has been seen (or EOF); returns everything read."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_exactly(sock: socket.socket | ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def send_connect(sock: socket.socket, target: str, *headers: str) -> None:
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers, "", ""]
    sock.sendall("\r\n".join(lines).encode())


def open_tunnel(
    proxy_address: tuple[str, int], target: str, *headers: str
) -> tuple[socket.socket, bytes]:
    """CONNECT through a proxy; returns the socket and the reply head (bytes after it kept)."""
    sock = connect(proxy_address)
    try:
        send_connect(sock, target, *headers)
        head = b""
        while b"\r\n\r\n" not in head:  # one byte at a time: never read past the head
            byte = sock.recv(1)
            if not byte:
                break
            head += byte
    except BaseException:
        sock.close()
        raise
    return sock, head


def status_of(head: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    assert match is not None, head
    return int(match.group(1))


def basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Proxy-Authorization: Basic {token}"


def wait_until(predicate: object, timeout: float = TIMEOUT) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def get(sock: socket.socket | ssl.SSLSocket, path: str) -> tuple[bytes, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head, _, body = recv_all(sock).partition(b"\r\n\r\n")
    return head, body


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server
    assert server.errors == []


@pytest.fixture(scope="module")
def plain_origin() -> Iterator[TLSOrigin]:
    with TLSOrigin(mode="plain") as server:
        yield server
    assert server.errors == []


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server
    assert server.errors == []


def tls_connect(origin: TLSOrigin, sock: socket.socket | None = None) -> ssl.SSLSocket:
    raw = sock if sock is not None else connect(origin.address)
    return origin.client_context().wrap_socket(raw, server_hostname="localhost")


# -- TLSOrigin --------------------------------------------------------------------------------


def test_origin_get_answers_hello_over_tls(origin: TLSOrigin) -> None:
    with tls_connect(origin) as tls:
        head, body = get(tls, "/some/path?q=1")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain" in head
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b"hello from janusnet origin: GET /some/path?q=1\n"


def test_origin_echoes_until_eof(origin: TLSOrigin) -> None:
    with tls_connect(origin) as tls:
        tls.sendall(b"ping\n")
        assert recv_exactly(tls, 5) == b"ping\n"
        tls.sendall(b"GET is only special first\r\n")
        assert recv_exactly(tls, 27) == b"GET is only special first\r\n"


def test_origin_bytes_path_serves_the_pattern(origin: TLSOrigin) -> None:
    size = 100_003
    with tls_connect(origin) as tls:
        head, body = get(tls, f"/bytes/{size}")
    assert f"Content-Length: {size}".encode() in head
    assert body == byte_pattern(size)
    assert body[:3] == b"\x00\x01\x02"
    assert body[256:259] == b"\x00\x01\x02"


def test_byte_pattern_offsets_continue_the_pattern() -> None:
    assert byte_pattern(300) == byte_pattern(100) + byte_pattern(200, offset=100)
    assert byte_pattern(0) == b""
    with pytest.raises(ValueError, match=">= 0"):
        byte_pattern(-1)


def test_origin_certificate_covers_loopback_names_only(origin: TLSOrigin) -> None:
    for name in ("localhost", "127.0.0.1"):
        with origin.client_context().wrap_socket(connect(origin.address), server_hostname=name):
            pass
    with pytest.raises(ssl.SSLCertVerificationError):
        origin.client_context().wrap_socket(
            connect(origin.address), server_hostname="example.com"
        ).close()
    with pytest.raises(ssl.SSLCertVerificationError):  # failure twin: a CA nobody trusts
        ssl.create_default_context().wrap_socket(
            connect(origin.address), server_hostname="localhost"
        ).close()


def test_origin_client_context_trusts_its_ca_and_nothing_else(origin: TLSOrigin) -> None:
    """No system store: a test cannot pass on a certificate from the machine it runs on."""
    context = origin.client_context()
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_failed_handshake_is_no_longer_active_at_once() -> None:
    """The connection stops counting as active when the handshake fails, not
    ``CLOSE_TIMEOUT`` later: a test may assert ``active == 0`` right after a failure."""
    from janusnet.testing._servers import CLOSE_TIMEOUT

    with TLSOrigin() as origin:
        with connect(origin.address) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain text where TLS was due
            while raw.recv(4096):  # the server's alert, then its close
                pass
        started = time.monotonic()
        assert wait_until(lambda: origin.active == 0)
        assert time.monotonic() - started < CLOSE_TIMEOUT / 2


def test_proxy_log_records_keep_credentials_out_of_their_repr() -> None:
    with ConnectProxy(auth=("alice", "pa:ss-word")) as proxy:
        with socket.create_connection(proxy.address) as raw:
            token = base64.b64encode(b"alice:pa:ss-word")
            raw.sendall(
                b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
                b"Proxy-Authorization: Basic " + token + b"\r\n\r\n"
            )
            raw.recv(4096)
        assert wait_until(lambda: len(proxy.log) == 1)
        record = proxy.log[0]
    assert record.header("Proxy-Authorization") == "Basic " + token.decode()
    assert token.decode() not in repr(record) and "<hidden>" in repr(record)


def test_origin_plain_mode_speaks_http_and_echo_without_tls(plain_origin: TLSOrigin) -> None:
    with connect(plain_origin.address) as sock:
        head, body = get(sock, "/")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"hello from janusnet origin: GET /\n"
    with connect(plain_origin.address) as sock:
        sock.sendall(b"G")  # a prefix of "GET " keeps the server waiting for more
        sock.sendall(b"ood day")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"Good day"


@needs_ipv6
def test_origin_serves_ipv6_loopback() -> None:
    with TLSOrigin(host="::1") as origin:
        assert origin.address == ("::1", origin.port)
        assert origin.authority == f"[::1]:{origin.port}"
        raw = socket.create_connection(origin.address, timeout=TIMEOUT)
        with origin.client_context().wrap_socket(raw, server_hostname="::1") as tls:
            _, body = get(tls, "/v6")
        assert body == b"hello from janusnet origin: GET /v6\n"


@pytest.mark.parametrize("inject", [b"", b"250 INJECTED\r\n"], ids=["clean", "injected"])
def test_origin_starttls_upgrades_the_same_connection(inject: bytes) -> None:
    with TLSOrigin(mode="starttls", inject=inject) as origin, connect(origin.address) as sock:
        assert recv_until(sock, b"\r\n") == b"220 ready\r\n"
        sock.sendall(b"NOOP\r\n")
        assert recv_until(sock, b"\r\n") == b"500 expected STARTTLS\r\n"
        sock.sendall(b"STARTTLS\r\n")
        expected = b"220 go ahead\r\n" + inject
        assert recv_exactly(sock, len(expected)) == expected
        with tls_connect(origin, sock) as tls:
            tls.sendall(b"secret")
            assert recv_exactly(tls, 6) == b"secret"
        assert origin.errors == []


def test_origin_logs_nothing_when_clients_close_right_after_the_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that closes as soon as its handshake is done can deliver EOF before the
    server's stream protocol learns it is on TLS; asyncio then logged "returning true
    from eof_received() has no effect when using ssl" into the user's test output."""
    with caplog.at_level(logging.WARNING, logger="asyncio"), TLSOrigin() as origin:
        for _ in range(40):
            with connect(origin.address) as sock:
                tls, _, outgoing = bio_handshake(
                    sock, origin.client_context(), server_hostname="localhost", flush=False
                )
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.unwrap()
                # The client's Finished and its close_notify in one write, then FIN.
                sock.sendall(outgoing.read())
        deadline = time.monotonic() + TIMEOUT
        while origin.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert origin.errors == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_origin_starttls_quit_closes() -> None:
    with TLSOrigin(mode="starttls") as origin, connect(origin.address) as sock:
        recv_until(sock, b"\r\n")
        sock.sendall(b"QUIT\r\n")
        assert recv_all(sock) == b"221 bye\r\n"


def test_origin_reset_handshake_resets() -> None:
    with TLSOrigin(mode="reset_handshake") as origin, connect(origin.address) as sock:
        with pytest.raises((ConnectionResetError, ssl.SSLError)):
            tls_connect(origin, sock)


def test_origin_garbage_is_not_tls() -> None:
    with TLSOrigin(mode=OriginMode.GARBAGE) as origin:
        with connect(origin.address) as sock:
            assert recv_exactly(sock, len(GARBAGE)) == GARBAGE
        with connect(origin.address) as sock, pytest.raises(ssl.SSLError):
            tls_connect(origin, sock)


def test_origin_stall_never_answers() -> None:
    with TLSOrigin(mode="stall") as origin, connect(origin.address) as sock:
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            tls_connect(origin, sock)


def test_origin_mode_is_assignable_and_connections_are_counted() -> None:
    with TLSOrigin(mode="plain") as origin:
        with connect(origin.address) as sock:
            get(sock, "/")
        origin.mode = "stall"
        assert origin.mode is OriginMode.STALL
        with connect(origin.address) as sock:
            assert wait_until(lambda: origin.connections == 2)
        with pytest.raises(ValueError, match="nope"):
            origin.mode = "nope"


def test_servers_can_restart() -> None:
    proxy = ConnectProxy()
    for _ in range(2):
        with proxy:
            with connect(proxy.address) as sock:
                sock.sendall(b"OPTIONS * HTTP/1.1\r\n\r\n")
                assert status_of(recv_all(sock)) == 405
        with pytest.raises(RuntimeError):
            _ = proxy.port
    assert len(proxy.log) == 2


# -- history (errors, connections) and dual stack ---------------------------------------------


def fail_origin_handler(origin: TLSOrigin, sock: socket.socket) -> None:
    """Make the origin's handler for ``sock`` (a ``starttls`` connection) raise for real.

    ``inject`` is not validated on assignment, so a ``str`` there makes ``b"220 go ahead"
    + inject`` raise ``TypeError`` in the server thread: an unexpected handler failure.
    """
    origin.inject = "not bytes"  # type: ignore[assignment]
    sock.sendall(b"STARTTLS\r\n")
    with contextlib.suppress(OSError):
        recv_all(sock)  # the handler aborts the connection: EOF or reset
    assert wait_until(lambda: origin.active == 0)


def test_reset_history_clears_errors_and_connections() -> None:
    with TLSOrigin(mode="starttls") as origin:
        with connect(origin.address) as sock:
            assert recv_until(sock, b"\r\n") == b"220 ready\r\n"
            fail_origin_handler(origin, sock)
        assert len(origin.errors) == 1
        assert "TypeError" in origin.errors[0]
        assert origin.connections == 1
        origin.reset_history()
        assert origin.errors == []
        assert origin.connections == 0
        origin.inject = b""
        with connect(origin.address) as sock:
            assert recv_until(sock, b"\r\n") == b"220 ready\r\n"
        assert wait_until(lambda: origin.active == 0)
        assert origin.connections == 1
        assert origin.errors == []


def test_a_failure_from_before_reset_history_is_logged_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TLSOrigin(mode="starttls") as origin, connect(origin.address) as sock:
        assert recv_until(sock, b"\r\n") == b"220 ready\r\n"
        origin.reset_history()  # the next test starts while this connection is still open
        fail_origin_handler(origin, sock)
        assert origin.errors == []
    assert any(
        "accepted before the last reset_history()" in record.getMessage()
        and record.exc_info is not None
        and record.exc_info[0] is TypeError
        for record in caplog.records
    )


def test_proxy_reset_history_also_empties_the_log(proxy: ConnectProxy) -> None:
    proxy.ssl_context = "not a context"  # type: ignore[assignment]  # makes the handler raise
    with connect(proxy.address) as sock:
        send_connect(sock, "127.0.0.1:9", basic("u", "p"))
        with contextlib.suppress(OSError):
            recv_all(sock)
    assert wait_until(lambda: proxy.errors != [] and proxy.active == 0)
    assert "SSLContext" in proxy.errors[0]
    proxy.ssl_context = None
    with connect(proxy.address) as sock:
        sock.sendall(b"OPTIONS * HTTP/1.1\r\n\r\n")
        assert status_of(recv_all(sock)) == 405
    assert (len(proxy.log), proxy.connections) == (1, 2)
    proxy.reset_history()
    assert (proxy.log, proxy.errors, proxy.connections) == ([], [], 0)


def test_hosts_lists_the_listening_addresses() -> None:
    origin = TLSOrigin(mode="plain")
    with pytest.raises(RuntimeError, match="not started"):
        _ = origin.hosts
    with origin:
        assert origin.hosts == ("127.0.0.1",)
    with pytest.raises(RuntimeError, match="not started"):
        _ = origin.hosts


@needs_ipv6
@pytest.mark.parametrize(
    ("host", "hosts"), [("127.0.0.1", ("127.0.0.1", "::1")), ("::1", ("::1", "127.0.0.1"))]
)
def test_dual_stack_listens_on_both_loopbacks_with_one_port(
    host: str, hosts: tuple[str, ...]
) -> None:
    origin = TLSOrigin(host=host, dual_stack=True)
    for expected in (2, 4):  # and again after a restart, on a new port
        with origin:
            assert origin.hosts == hosts
            assert origin.address == (host, origin.port)
            for address in hosts:
                raw = connect((address, origin.port))
                with origin.client_context().wrap_socket(raw, server_hostname=address) as tls:
                    assert get(tls, f"/{address}")[1].endswith(f"GET /{address}\n".encode())
            assert origin.connections == expected  # each answered: its handler has started
        assert origin.errors == []


@needs_ipv6
def test_dual_stack_proxy_reaches_either_family(plain_origin: TLSOrigin) -> None:
    with TLSOrigin(host="::1", mode="plain") as v6_origin, ConnectProxy(dual_stack=True) as proxy:
        assert proxy.hosts == ("127.0.0.1", "::1")
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        for proxy_host, target in [
            ("::1", plain_origin.authority),
            ("127.0.0.1", v6_origin.authority),
        ]:
            sock, head = open_tunnel((proxy_host, proxy.port), target)
            with sock:
                assert head == ESTABLISHED
                sock.sendall(b"ping")
                assert recv_exactly(sock, 4) == b"ping"
        assert [record.status for record in proxy.log] == [200, 200]
    assert proxy.errors == v6_origin.errors == []


def _localhost_addresses() -> list[str]:
    """The addresses ``localhost`` resolves to that can be listened on here (``::1``
    may be in /etc/hosts on a machine without IPv6)."""
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    addresses = dict.fromkeys(str(info[4][0]) for info in infos)
    return [a for a in addresses if a != "::1" or has_ipv6_loopback()]


@pytest.mark.skipif(
    len(_localhost_addresses()) < 2, reason="localhost resolves to a single address here"
)
@pytest.mark.parametrize("address", _localhost_addresses())
def test_proxy_tries_every_address_of_localhost(proxy: ConnectProxy, address: str) -> None:
    # localhost may resolve to ::1 first while the origin listens on 127.0.0.1 only.
    with TLSOrigin(host=address, mode="plain") as origin:
        sock, head = open_tunnel(proxy.address, f"localhost:{origin.port}")
        with sock:
            assert head == ESTABLISHED
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"


def test_origin_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TLSOrigin(host="0.0.0.0")
    with pytest.raises(ValueError, match="IP literal"):
        TLSOrigin(host="localhost")


def test_origin_with_own_context_has_no_ca() -> None:
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with TLSOrigin(context) as origin:
        with pytest.raises(RuntimeError, match="ca"):
            origin.client_context()
        client = ssl.create_default_context()
        ca.configure_trust(client)
        with client.wrap_socket(connect(origin.address), server_hostname="localhost") as tls:
            assert get(tls, "/")[0].startswith(b"HTTP/1.1 200")
    shared = TLSOrigin(ca=ca)
    assert shared.ca is ca


def test_servers_leave_no_socket_behind_when_clients_connect_while_they_stop() -> None:
    """asyncio builds each accepted connection's transport in a task of its own; one that
    ran after the listener closed could not attach to the server and left its socket to
    the garbage collector (seen with a real proxy resumed after SIGSTOP). A client
    hammering connections while the server stops must leave nothing unclosed."""
    import gc
    import warnings

    clients: list[socket.socket] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(6):
            origin = TLSOrigin().__enter__()
            address = origin.address
            stop = threading.Event()

            def hammer(address: tuple[str, int], stop: threading.Event) -> None:
                while not stop.is_set():
                    with contextlib.suppress(OSError):
                        clients.append(socket.create_connection(address, timeout=1))

            thread = threading.Thread(target=hammer, args=(address, stop))
            thread.start()
            try:
                time.sleep(0.02)
                origin.stop()
            finally:
                stop.set()
                thread.join()
            assert origin.errors == []
        for client in clients:
            client.close()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], f"{len(leaked)} left to the garbage collector, e.g. {leaked[:2]}"
    assert len(clients) > 100  # the stop did meet a burst of connections


def test_servers_stop_quickly_with_connections_open() -> None:
    def server_threads() -> int:
        return sum(t.name.startswith("janusnet-test") for t in threading.enumerate())

    before = server_threads()
    origin = TLSOrigin(mode="stall")
    proxy = ConnectProxy(behaviour="never_answer")
    with origin, proxy:
        assert server_threads() == before + 2
        socks = [connect(origin.address) for _ in range(5)]
        socks += [connect(proxy.address) for _ in range(5)]
        for sock in socks[5:]:
            send_connect(sock, origin.authority)
        assert wait_until(lambda: origin.active == 5 and len(proxy.log) == 5)
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert server_threads() == before
    for sock in socks:
        with sock:
            try:
                assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
    with pytest.raises(RuntimeError, match="not started"):
        _ = origin.port
    assert origin.errors == proxy.errors == []


# -- ConnectProxy: the normal path --------------------------------------------------------------


def test_proxy_tunnels_tls_to_the_origin(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    sock, head = open_tunnel(proxy.address, origin.authority, "X-Test: yes")
    assert head == ESTABLISHED
    with tls_connect(origin, sock) as tls:
        _, body = get(tls, "/through")
    assert body == b"hello from janusnet origin: GET /through\n"
    [record] = proxy.log
    assert record.method == "CONNECT"
    assert record.target == origin.authority
    assert record.http_version == "1.1"
    assert record.headers == (("Host", origin.authority), ("X-Test", "yes"))
    assert record.header("x-test") == "yes"
    assert record.proxy_authorization is False
    assert record.status == 200
    assert record.behaviour is ProxyBehaviour.NORMAL


def test_proxy_relays_16_mib_intact(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    size = 16 * 1024 * 1024
    sock, head = open_tunnel(proxy.address, origin.authority)
    assert head == ESTABLISHED
    with tls_connect(origin, sock) as tls:
        _, body = get(tls, f"/bytes/{size}")
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(byte_pattern(size)).hexdigest()


def test_proxy_passes_half_close_on(proxy: ConnectProxy, plain_origin: TLSOrigin) -> None:
    sock, head = open_tunnel(proxy.address, plain_origin.authority)
    with sock:
        assert head == ESTABLISHED
        sock.sendall(b"echo me")
        sock.shutdown(socket.SHUT_WR)  # origin sees EOF, echoes, then closes its side
        assert recv_all(sock) == b"echo me"


def test_proxy_forwards_bytes_pipelined_after_the_request(
    proxy: ConnectProxy, plain_origin: TLSOrigin
) -> None:
    with connect(proxy.address) as sock:
        target = plain_origin.authority
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nearly".encode())
        assert recv_exactly(sock, len(ESTABLISHED) + 5) == ESTABLISHED + b"early"


@needs_ipv6
def test_proxy_and_origin_work_on_ipv6() -> None:
    with TLSOrigin(host="::1") as origin, ConnectProxy(host="::1") as proxy:
        assert proxy.url == f"http://[::1]:{proxy.port}"
        sock, head = open_tunnel(proxy.address, origin.authority)
        assert head == ESTABLISHED
        with tls_connect(origin, sock) as tls:
            assert get(tls, "/")[1].startswith(b"hello")
        assert proxy.log[0].target == f"[::1]:{origin.port}"


def test_https_proxy_speaks_connect_inside_tls(origin: TLSOrigin, plain_origin: TLSOrigin) -> None:
    with ConnectProxy(ssl_context=origin.server_context) as proxy:
        assert proxy.url == f"https://127.0.0.1:{proxy.port}"
        with tls_connect(origin, connect(proxy.address)) as tls:
            target = plain_origin.authority
            tls.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            assert recv_exactly(tls, len(ESTABLISHED)) == ESTABLISHED
            # The origin closes after answering; the proxy cannot half-close TLS, so it
            # closes the client's connection, and the client sees the end of the answer.
            head, body = get(tls, "/in-tls")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert body == b"hello from janusnet origin: GET /in-tls\n"
        assert proxy.log[0].status == 200


def test_proxy_handles_500_concurrent_tunnels(plain_origin: TLSOrigin) -> None:
    with ConnectProxy() as proxy:
        tunnels = []
        try:
            for _ in range(500):
                sock, head = open_tunnel(proxy.address, plain_origin.authority)
                tunnels.append(sock)
                assert head == ESTABLISHED
            for i, sock in enumerate(tunnels):
                sock.sendall(b"%05d" % i)
            for i, sock in enumerate(tunnels):
                assert recv_exactly(sock, 5) == b"%05d" % i
        finally:
            for sock in tunnels:
                sock.close()
        assert proxy.errors == []


# -- ConnectProxy: refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["192.0.2.1:443", "example.com:443", "[2001:db8::1]:443", "127.0.0.1:0"]
)
def test_proxy_refuses_non_loopback_targets_without_connecting(
    proxy: ConnectProxy, target: str
) -> None:
    started = time.monotonic()
    sock, head = open_tunnel(proxy.address, target)
    with sock:
        assert status_of(head) == 403
        assert b"Connection: close" in head
        assert recv_all(sock) == b"janusnet test proxy: loopback only\n"
    # 192.0.2.1 (TEST-NET-1) would take the full connect timeout to fail.
    assert time.monotonic() - started < 2.0
    assert proxy.log[0].status == 403


def test_proxy_answers_405_to_other_methods(proxy: ConnectProxy) -> None:
    with connect(proxy.address) as sock:
        sock.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = recv_all(sock)
    assert status_of(head) == 405
    assert b"Allow: CONNECT\r\n" in head
    assert proxy.log[0].method == "GET"


def test_proxy_answers_400_to_garbage_and_431_to_huge_heads(proxy: ConnectProxy) -> None:
    with connect(proxy.address) as sock:
        sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert status_of(recv_all(sock)) == 400
    with connect(proxy.address) as sock:
        sock.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n" + b"X: " + b"a" * 70_000)
        assert status_of(recv_until(sock, b"\r\n\r\n")) == 431


def test_proxy_answers_502_when_the_target_refuses(proxy: ConnectProxy) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = unused.getsockname()[1]
        sock, head = open_tunnel(proxy.address, f"127.0.0.1:{port}")
    with sock:
        assert status_of(head) == 502


def test_proxy_requires_basic_auth(origin: TLSOrigin) -> None:
    user, password = "alice", "pa:ss@wörd"
    with ConnectProxy(auth=(user, password)) as proxy:
        for headers in ([], [basic(user, "wrong")], ["Proxy-Authorization: Bearer x"]):
            sock, head = open_tunnel(proxy.address, origin.authority, *headers)
            with sock:
                assert status_of(head) == 407
                assert b'Proxy-Authenticate: Basic realm="janusnet"\r\n' in head
                assert recv_all(sock) == b""
        sock, head = open_tunnel(proxy.address, origin.authority, basic(user, password))
        with sock:
            assert head == ESTABLISHED
        assert [r.proxy_authorization for r in proxy.log] == [False, True, True, True]
        assert [r.status for r in proxy.log] == [407, 407, 407, 200]
        assert proxy.url_with_auth(user, password) == (
            f"http://alice:pa%3Ass%40w%C3%B6rd@127.0.0.1:{proxy.port}"
        )
        assert password not in repr(proxy)


# -- ConnectProxy: misbehaviour, byte for byte -------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected_head", "after"),
    [
        ("extra_bytes", ESTABLISHED, b"INJECTED"),
        ("http10_no_reason", b"HTTP/1.0 200\r\n\r\n", b""),
        ("obs_fold", b"HTTP/1.1 200 Connection established\r\nX-Folded: a\r\n b\r\n\r\n", b""),
        (
            "chunked_2xx",
            b"HTTP/1.1 200 Connection established\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"",
        ),
    ],
)
def test_proxy_tunnelling_misbehaviours_still_relay(
    proxy: ConnectProxy,
    plain_origin: TLSOrigin,
    behaviour: str,
    expected_head: bytes,
    after: bytes,
) -> None:
    proxy.behaviour = behaviour
    sock, head = open_tunnel(proxy.address, plain_origin.authority)
    with sock:
        assert head == expected_head
        assert recv_exactly(sock, len(after)) == after
        sock.sendall(b"raw relay")
        assert recv_exactly(sock, 9) == b"raw relay"
    assert proxy.log[0].behaviour == behaviour


def test_proxy_split_head_arrives_in_pieces(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    proxy.behaviour = ProxyBehaviour.SPLIT_HEAD
    with connect(proxy.address) as sock:
        send_connect(sock, origin.authority)
        pieces: list[bytes] = []
        while sum(map(len, pieces)) < len(ESTABLISHED):
            pieces.append(sock.recv(4096))
        assert b"".join(pieces) == ESTABLISHED
        assert len(pieces) > 1
        with tls_connect(origin, sock) as tls:
            assert get(tls, "/")[1].startswith(b"hello")


def test_proxy_auth_with_body(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    proxy.behaviour = "auth_with_body"
    sock, head = open_tunnel(proxy.address, origin.authority, basic("any", "thing"))
    with sock:
        assert status_of(head) == 407
        assert b'Proxy-Authenticate: Basic realm="janusnet"' in head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = recv_all(sock)
    assert length > 0
    assert len(body) == length


@pytest.mark.parametrize(
    ("behaviour", "status", "body"),
    [
        ("status_403", 403, b"janusnet test proxy: forbidden\n"),
        ("status_502", 502, b"janusnet test proxy: bad gateway\n"),
    ],
)
def test_proxy_error_statuses(
    proxy: ConnectProxy, origin: TLSOrigin, behaviour: str, status: int, body: bytes
) -> None:
    proxy.behaviour = behaviour
    sock, head = open_tunnel(proxy.address, origin.authority)
    with sock:
        assert status_of(head) == status
        assert f"Content-Length: {len(body)}".encode() in head
        assert recv_all(sock) == body
    assert origin.connections == 0 or proxy.log[0].status == status


@pytest.mark.parametrize(
    ("behaviour", "everything"),
    [("close_mid_head", b"HTTP/1.1 200 Conn"), ("malformed", b"HTTP/1.1 2x0 OK\r\n\r\n")],
)
def test_proxy_cut_short_replies(
    proxy: ConnectProxy, origin: TLSOrigin, behaviour: str, everything: bytes
) -> None:
    proxy.behaviour = behaviour
    with connect(proxy.address) as sock:
        send_connect(sock, origin.authority)
        assert recv_all(sock) == everything


def test_proxy_never_answer_waits_for_the_client(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    proxy.behaviour = "never_answer"
    with connect(proxy.address) as sock:
        send_connect(sock, origin.authority)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert proxy.log[0].status is None
        assert proxy.active == 1
    assert wait_until(lambda: proxy.active == 0)


def test_proxy_reset_sends_rst(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    proxy.behaviour = "reset"
    with connect(proxy.address) as sock:
        send_connect(sock, origin.authority)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_proxy_endless_head_stops_when_the_client_goes(
    proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    proxy.behaviour = "endless_head"
    with connect(proxy.address) as sock:
        send_connect(sock, origin.authority)
        data = recv_exactly(sock, 1 << 20)
        assert data.startswith(b"HTTP/1.1 200 Connection established\r\nX-Endless: ")
        assert b"\r\n\r\n" not in data
    assert wait_until(lambda: proxy.active == 0)


def test_proxy_behaviour_must_be_known() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        ConnectProxy(behaviour="sometimes")
    assert {b.value for b in ProxyBehaviour} >= {"normal", "endless_head", "chunked_2xx"}


# -- the servers from async tests, on any event loop -------------------------------------------


async def _through_proxy_with_anyio(proxy: ConnectProxy, origin: TLSOrigin) -> bytes:
    import anyio
    from anyio.streams.tls import TLSStream

    stream = await anyio.connect_tcp(*proxy.address)
    async with stream:
        await stream.send(f"CONNECT {origin.authority} HTTP/1.1\r\n\r\n".encode())
        assert await stream.receive() == ESTABLISHED
        tls = await TLSStream.wrap(
            stream, hostname="localhost", ssl_context=origin.client_context()
        )
        await tls.send(b"GET /async HTTP/1.1\r\n\r\n")
        received = b""
        while True:
            try:
                received += await tls.receive()
            except anyio.EndOfStream:
                return received


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_servers_serve_anyio_tests(
    proxy: ConnectProxy, origin: TLSOrigin, anyio_backend: str
) -> None:
    received = await _through_proxy_with_anyio(proxy, origin)
    assert received.endswith(b"hello from janusnet origin: GET /async\n")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is 3.11+")
@pytest.mark.asyncio
async def test_servers_serve_pytest_asyncio_tests(proxy: ConnectProxy, origin: TLSOrigin) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        writer.write(f"CONNECT {origin.authority} HTTP/1.1\r\n\r\n".encode())
        assert await reader.readexactly(len(ESTABLISHED)) == ESTABLISHED
        await writer.start_tls(  # type: ignore[attr-defined,unused-ignore]
            origin.client_context(), server_hostname="localhost"
        )
        writer.write(b"\x00\x01echo")
        assert await reader.readexactly(6) == b"\x00\x01echo"
    finally:
        writer.close()
        await writer.wait_closed()


# -- real proxies -----------------------------------------------------------------------------


@pytest.mark.realproxy
@pytest.mark.parametrize("name", ["squid", "tinyproxy"])
def test_real_proxy_tunnels_tls_to_the_origin(
    request: pytest.FixtureRequest, origin: TLSOrigin, name: str
) -> None:
    real: RealProxy = request.getfixturevalue(name)
    sock, head = open_tunnel(real.address, origin.authority)
    assert status_of(head) == 200, real.logs()
    with tls_connect(origin, sock) as tls:
        _, body = get(tls, "/real")
    assert body == b"hello from janusnet origin: GET /real\n"


@pytest.mark.realproxy
def test_squid_basic_requires_credentials(squid_basic: RealProxy, origin: TLSOrigin) -> None:
    assert squid_basic.username is not None
    assert squid_basic.password is not None
    assert ":" in squid_basic.password
    sock, head = open_tunnel(squid_basic.address, origin.authority)
    sock.close()
    assert status_of(head) == 407
    assert b'Proxy-Authenticate: Basic realm="janusnet"' in head
    sock, head = open_tunnel(
        squid_basic.address, origin.authority, basic(squid_basic.username, "wrong")
    )
    sock.close()
    assert status_of(head) == 407
    credentials = basic(squid_basic.username, squid_basic.password)
    sock, head = open_tunnel(squid_basic.address, origin.authority, credentials)
    assert status_of(head) == 200, squid_basic.logs()
    with tls_connect(origin, sock) as tls:
        assert get(tls, "/")[1].startswith(b"hello")
    assert squid_basic.url_with_auth() == (
        f"http://alice:s3%3Acr3t%40x@127.0.0.1:{squid_basic.port}"
    )


@pytest.mark.realproxy
def test_squid_digest_requires_digest_credentials(
    squid_digest: RealProxy, origin: TLSOrigin
) -> None:
    sock, head = open_tunnel(squid_digest.address, origin.authority)
    sock.close()
    assert status_of(head) == 407
    challenge = re.search(rb"Proxy-Authenticate: Digest (.*)\r\n", head)
    assert challenge is not None
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.group(1).decode()))
    assert params["realm"] == squid_digest.realm == "janusnet"
    user, password = squid_digest.username, squid_digest.password
    assert user is not None
    assert password is not None
    uri, nc, cnonce = origin.authority, "00000001", "0a4f113b"
    ha1 = hashlib.md5(f"{user}:{params['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"CONNECT:{uri}".encode()).hexdigest()
    response = hashlib.md5(
        f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()
    ).hexdigest()
    authorization = (
        f'Proxy-Authorization: Digest username="{user}", realm="{params["realm"]}", '
        f'nonce="{params["nonce"]}", uri="{uri}", qop=auth, nc={nc}, cnonce="{cnonce}", '
        f'response="{response}"'
    )
    sock, head = open_tunnel(squid_digest.address, origin.authority, authorization)
    assert status_of(head) == 200, squid_digest.logs()
    with tls_connect(origin, sock) as tls:
        assert get(tls, "/")[1].startswith(b"hello")


@pytest.mark.realproxy
def test_squid_denies_its_denied_port_and_non_loopback(squid: RealProxy) -> None:
    assert squid.denied_port == SQUID_DENIED_PORT
    for target in (f"127.0.0.1:{SQUID_DENIED_PORT}", "192.0.2.1:443"):
        sock, head = open_tunnel(squid.address, target)
        sock.close()
        assert status_of(head) == 403, target


def test_origin_stops_sending_to_a_client_that_went_away(caplog: pytest.LogCaptureFixture) -> None:
    """A client that closes during ``GET /bytes/<big>``: the origin stops writing instead
    of having asyncio drop (and log) every remaining chunk; nothing counts as an error."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    with TLSOrigin() as origin:
        context = origin.client_context()
        with socket.create_connection(("127.0.0.1", origin.port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /bytes/50000000 HTTP/1.0\r\n\r\n")
                assert tls.recv(1024)  # the transfer has started
        time.sleep(1.0)  # the origin meets the closed connection meanwhile
        assert origin.errors == []
    noise = [r for r in caplog.records if "socket.send() raised exception" in r.getMessage()]
    assert noise == []


def test_proxy_settings_are_checked_when_assigned() -> None:
    """``auth`` and ``behaviour`` are read per request: a wrong one must fail where it is
    assigned, not as a 407 to every request or an error in the server's thread."""
    proxy = ConnectProxy()
    for wrong in ["alice:hunter2", ("alice",), ("alice", b"hunter2"), ["a", "b", "c"]]:
        with pytest.raises(TypeError, match=r"auth must be None or a \(user, password\)") as info:
            proxy.auth = wrong  # type: ignore[assignment]
        assert "hunter2" not in str(info.value)
    proxy.auth = ["alice", "hunter2"]  # type: ignore[assignment]  # a list, as from a config
    assert proxy.auth == ("alice", "hunter2")
    with pytest.raises(ValueError, match="unknown behaviour 'nope'; valid values: 'normal', "):
        proxy.behaviour = "nope"
    with pytest.raises(ValueError, match="unknown mode 'tsl'; valid values: 'tls', 'plain'"):
        TLSOrigin(mode="tsl")

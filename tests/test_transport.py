"""The TCP hop itself: IP addresses connect without anyio's happy-eyeballs task group,
names keep it; failures close the socket and name the address; the direct stream
(:class:`FdStream`) behaves as anyio's own socket streams do."""

from __future__ import annotations

import gc
import os
import socket
from typing import Any, NoReturn

import anyio
import pytest

import janusnet
from janusnet._transport import FdStream, open_tcp
from loopback import (
    BACKENDS_WITH_UVLOOP,
    Backend,
    needs_ipv6,
    reset_connection,
    serve,
    unanswering_listener,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS_WITH_UVLOOP)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio, trio, and asyncio on uvloop."""
    return request.param


async def greet(stream: Any) -> None:
    await stream.send(b"hello\r\n")
    await anyio.sleep(0.5)


@pytest.mark.parametrize(
    ("host", "listen"),
    [
        ("127.0.0.1", "127.0.0.1"),
        pytest.param("::1", "::1", marks=needs_ipv6),
        pytest.param("[::1]", "::1", marks=needs_ipv6),
        ("localhost", "127.0.0.1"),
    ],
)
async def test_connects_directly_without_connect_tcp(
    anyio_backend: Backend, host: str, listen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IP addresses and names alike: a direct non-blocking socket with TCP_NODELAY, no
    ``anyio.connect_tcp`` (and its task group) involved."""

    async def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("janusnet connects by itself")

    monkeypatch.setattr(anyio, "connect_tcp", refuse)
    async with serve(greet, host=listen) as port, await open_tcp(host, port) as stream:
        assert isinstance(stream, FdStream)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert await stream.receive() == b"hello\r\n"


def test_addresses_are_interleaved_ipv6_first() -> None:
    from janusnet._transport import _interleaved

    v4, v6 = socket.AF_INET, socket.AF_INET6
    infos = [
        (v4, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 1)),
        (v4, socket.SOCK_STREAM, 6, "", ("192.0.2.2", 1)),
        (v4, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 1)),  # a duplicate
        (v6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 1, 0, 0)),
    ]
    assert [info[4][0] for info in _interleaved(infos)] == [
        "2001:db8::1",
        "192.0.2.1",
        "192.0.2.2",
    ]


async def test_happy_eyeballs_skips_an_address_that_hangs(anyio_backend: Backend) -> None:
    """The first address never answers (a listener whose backlog is full); 250 ms later
    the second is tried and wins, and the pending attempt is closed."""
    from janusnet._transport import HAPPY_EYEBALLS_DELAY, _happy_eyeballs

    async with unanswering_listener() as hanging_port, serve(greet) as port:
        hanging = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", hanging_port))
        good = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
        started = anyio.current_time()
        with anyio.fail_after(5):
            stream = await _happy_eyeballs([hanging, good])
            async with stream:
                assert await stream.receive() == b"hello\r\n"
        assert anyio.current_time() - started >= HAPPY_EYEBALLS_DELAY * 0.9
    gc.collect()


async def test_happy_eyeballs_reports_every_failure(anyio_backend: Backend) -> None:
    from janusnet._transport import _happy_eyeballs

    closed = []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        closed.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", listener.getsockname()))
        listener.close()  # nothing listens there
    with anyio.fail_after(5), pytest.raises(OSError, match="all 2 addresses failed") as info:
        await _happy_eyeballs(closed)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_refused_ip_address_raises_and_closes(anyio_backend: Backend, host: str) -> None:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        await open_tcp(host, port)
    tunnel = janusnet.ProxyTunnel(f"http://{'[::1]' if ':' in host else host}:{port}")
    with pytest.raises(janusnet.ConnectError, match=f"proxy .*{port}") as refused:
        await tunnel.open("example.com", 443)
    assert refused.value.role == "proxy"


async def test_bytes_sent_at_once_wait_for_the_first_receive(anyio_backend: Backend) -> None:
    """Nothing is read before the first receive (as anyio.connect_tcp leaves a stream),
    and bytes that came before an upgrade are still refused by ssl_on (-112)."""
    async with serve(greet) as port:
        sock = await janusnet.Socket.connect("127.0.0.1", port)
        async with sock:
            await anyio.sleep(0.1)
            with pytest.raises(janusnet.PendingDataError):
                await sock.ssl_on(server_hostname="localhost")
            assert await sock.recv_parsed() == (b"hello", b"\r\n", 1)


async def test_cancelled_connect_leaves_nothing_open(anyio_backend: Backend) -> None:
    """A connect cancelled at its first checkpoint closes its socket (filterwarnings =
    error turns a leaked socket into a failure when it is collected)."""
    async with serve(greet) as port:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await open_tcp("127.0.0.1", port)
        assert scope.cancelled_caught
    gc.collect()


# -- FdStream: the stream an IP-address connect gives ----------------------------------------


async def echo_until_eof(stream: Any) -> None:
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except anyio.EndOfStream:
        pass
    await stream.send(b"".join(chunks))


async def test_direct_stream_carries_bulk_both_ways_with_backpressure(
    anyio_backend: Backend,
) -> None:
    """8 MiB out (more than the socket buffers: send() waits for the peer to read), the
    half-close reaches the peer, all of it comes back, then EOF."""
    payload = bytes(range(256)) * (8 * 4096)
    async with serve(echo_until_eof) as port:
        stream = await open_tcp("127.0.0.1", port)
        assert isinstance(stream, FdStream)
        async with stream:
            await stream.send(payload)
            await stream.send_eof()
            got = bytearray()
            with anyio.fail_after(10):
                try:
                    while True:
                        got += await stream.receive()
                except anyio.EndOfStream:
                    pass
            assert got == payload
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def refuses_a_second_receiver_and_wakes_it_on_close(stream: Any) -> None:
    """A second concurrent receive is refused; closing wakes the first, which must not
    hang on a closed socket."""
    outcome: list[type[BaseException]] = []

    async def waiter() -> None:
        try:
            await stream.receive()
        except Exception as exc:
            outcome.append(type(exc))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await stream.receive()
            await stream.aclose()
    assert outcome == [anyio.ClosedResourceError]


async def test_direct_stream_refuses_a_second_receiver_and_wakes_on_close(
    anyio_backend: Backend,
) -> None:
    async with serve(greet) as port:
        stream = await open_tcp("127.0.0.1", port)
        assert await stream.receive() == b"hello\r\n"
        await refuses_a_second_receiver_and_wakes_it_on_close(stream)
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"x")


async def test_cancelled_receive_takes_nothing(anyio_backend: Backend) -> None:
    async def late(stream: Any) -> None:
        await anyio.sleep(0.3)
        await stream.send(b"late\r\n")
        await anyio.sleep(0.5)

    async with serve(late) as port, await open_tcp("127.0.0.1", port) as stream:
        with anyio.move_on_after(0.05) as scope:
            await stream.receive()
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            assert await stream.receive() == b"late\r\n"


async def test_reset_peer_is_a_broken_resource(anyio_backend: Backend) -> None:
    async with serve(reset_connection) as port, await open_tcp("127.0.0.1", port) as stream:
        await anyio.sleep(0.2)  # the reset has arrived
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as broken:
            await stream.receive()
        assert isinstance(broken.value.__cause__, ConnectionResetError)


async def test_direct_stream_typed_attributes(anyio_backend: Backend) -> None:
    async with serve(greet) as port, await open_tcp("127.0.0.1", port) as stream:
        assert stream.extra(anyio.abc.SocketAttribute.remote_address) == ("127.0.0.1", port)
        assert stream.extra(anyio.abc.SocketAttribute.remote_port) == port
        assert stream.extra(anyio.abc.SocketAttribute.family) == socket.AF_INET


# -- FdTLSStream: ssl_on() over a direct socket ------------------------------------------------


async def test_https_proxy_bytes_in_a_later_tls_record_are_refused_and_kept(
    anyio_backend: Backend, ca: Any, server_context: Any
) -> None:
    """Through an https:// proxy, bytes sent after the 200 in a *separate* TLS record are
    still undecrypted when ssl_on() is called: they must be refused (-112) and stay
    readable, never fed to the origin's handshake."""
    import ssl

    from loopback import tls_server_side

    async def proxy(stream: Any) -> None:
        tls = await tls_server_side(stream, server_context)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await tls.receive()
        await tls.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await anyio.sleep(0.05)
        await tls.send(b"INJECT")  # its own record
        await anyio.sleep(1)

    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with serve(proxy) as port:
        tunnel = janusnet.ProxyTunnel(f"https://127.0.0.1:{port}", proxy_ssl_context=client)
        async with await tunnel.open("localhost", 443) as sock:
            await anyio.sleep(0.3)  # the record has arrived, not yet decrypted
            with pytest.raises(janusnet.PendingDataError) as refused:
                await sock.ssl_on()
            assert refused.value.pending == len(b"INJECT")
            assert not sock.closed
            assert await sock.recv() == b"INJECT"


async def test_tls_over_direct_socket_has_tls_attributes_and_closes_waiters(
    anyio_backend: Backend, server_context: Any, ca: Any
) -> None:
    import ssl

    from anyio.streams.tls import TLSAttribute

    from janusnet._transport import FdTLSStream, start_tls
    from loopback import tls_server_side

    async def origin(stream: Any) -> None:
        tls = await tls_server_side(stream, server_context)
        await tls.send(b"hello")
        await anyio.sleep(1)

    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with serve(origin) as port:
        plain = await open_tcp("127.0.0.1", port)
        tls = await start_tls(plain, hostname="localhost", ssl_context=client)
        assert isinstance(tls, FdTLSStream)
        assert tls.extra(TLSAttribute.tls_version).startswith("TLSv1.")
        assert tls.extra(TLSAttribute.peer_certificate)["subjectAltName"]
        assert tls.extra(anyio.abc.SocketAttribute.remote_port) == port
        assert await tls.receive() == b"hello"
        await refuses_a_second_receiver_and_wakes_it_on_close(tls)
        await plain.aclose()  # its socket went to the TLS layer: nothing left to close


async def test_tls_plaintext_a_sender_read_comes_first(
    anyio_backend: Backend, server_context: Any, ca: Any
) -> None:
    """A send that had to read (``_take_incoming``, in a renegotiation) keeps the
    plaintext for the receives. It comes out in order: before what the TLS engine still
    holds, also when a receive hands out a full record and ``Socket`` would otherwise
    drain more from the engine (``_drain_tls``)."""
    import ssl

    from janusnet import ClientPort, Socket, TLSMode
    from janusnet._transport import FdTLSStream
    from loopback import tls_server_side

    total = 256 << 10
    payload = os.urandom(total)  # no period: records out of order would show
    done = anyio.Event()

    async def origin(stream: Any) -> None:
        tls = await tls_server_side(stream, server_context)
        await tls.send(payload)
        await done.wait()

    client = ssl.create_default_context()
    ca.configure_trust(client)
    port = ClientPort("ORDER", tls=TLSMode.OPTIONAL, ssl_context=client)
    async with serve(origin) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=port) as sock:
            await sock.ssl_on(server_hostname="localhost")
            stream = sock._stream
            assert isinstance(stream, FdTLSStream)
            await anyio.sleep(0.2)  # the ciphertext is there
            await stream._feed()
            stream._take_incoming()  # as a send would: the plaintext is kept ...
            assert stream.holds_plaintext
            await stream._feed()  # ... and more ciphertext waits behind it in OpenSSL
            received = bytearray()
            with anyio.fail_after(10):
                while len(received) < total:
                    received += await sock.recv()
            done.set()
    assert received == payload


async def test_tls_over_direct_socket_failure_closes_the_socket(
    anyio_backend: Backend, server_context: Any
) -> None:
    import ssl

    from janusnet._transport import start_tls
    from loopback import tls_server_side

    async def origin(stream: Any) -> None:
        await tls_server_side(stream, server_context)

    async with serve(origin) as port:
        plain = await open_tcp("127.0.0.1", port)
        raw = plain.extra(anyio.abc.SocketAttribute.raw_socket)
        with pytest.raises(ssl.SSLCertVerificationError):  # certifi does not trust trustme
            await start_tls(plain, hostname="localhost", ssl_context=ssl.create_default_context())
        assert raw.fileno() == -1
    gc.collect()


class CountingSocket(socket.socket):
    """A socket that counts its ``recv`` and ``send`` system calls, and those refused
    because they would block (``EAGAIN``)."""

    calls = 0
    refused = 0
    sends_refused = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.calls += 1
        try:
            return super().recv(size, flags)
        except BlockingIOError:
            self.refused += 1
            raise

    def send(self, data: Any, flags: int = 0) -> int:
        self.calls += 1
        try:
            return super().send(data, flags)
        except BlockingIOError:
            self.sends_refused += 1
            raise


async def test_a_receive_that_waits_asks_the_socket_once_before_and_once_after(
    anyio_backend: Backend,
) -> None:
    """Found empty, then waited for, then read: two recv calls, not three (each one is a
    system call, and under a sandbox such as gVisor a costly one)."""
    ours, theirs = socket.socketpair()
    counting = CountingSocket(fileno=ours.detach())
    counting.setblocking(False)
    stream = FdStream(counting)
    with theirs:
        async with stream, anyio.create_task_group() as tg:

            async def later() -> None:
                await anyio.wait_all_tasks_blocked()
                theirs.send(b"late")

            tg.start_soon(later)
            with anyio.fail_after(5):
                assert await stream.receive() == b"late"
            assert (counting.calls, counting.refused) == (2, 1)  # (before the close's drain)


async def test_a_send_that_fills_the_buffer_waits_before_trying_again(
    anyio_backend: Backend,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # TCP, as janusnet's are
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    counting = CountingSocket(fileno=ours.detach())
    counting.setblocking(False)
    stream = FdStream(counting)
    payload = b"x" * (16 << 20)  # more than the socket buffers hold
    received = bytearray()

    async def drain() -> None:
        theirs.setblocking(False)
        while len(received) < len(payload):
            await anyio.wait_readable(theirs)
            received.extend(theirs.recv(1 << 20))

    with theirs:
        async with stream, anyio.create_task_group() as tg:
            tg.start_soon(drain)
            with anyio.fail_after(10):
                await stream.send(payload)
    assert bytes(received) == payload
    # Every send after a partial one followed a wait that said the socket takes more:
    # none was refused (EAGAIN) only to learn what the partial send had just said.
    assert counting.calls > 2 and counting.sends_refused == 0

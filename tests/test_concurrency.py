"""Tasks sharing one socket: nothing interleaves with ssl_on(), a refused send breaks
nothing, a close from another task wins, and ``sock.tls`` outlives the session.

The peers here hold the TLS handshake until the client has made its concurrent move, so
the order of events is set by the peer, not by timing.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator

import anyio
import pytest
import trustme
from anyio.abc import SocketStream
from anyio.streams.tls import TLSStream

from janusnet import (
    BusyError,
    ClientPort,
    ProxyTunnel,
    Socket,
    SocketClosedError,
    SSLOnOtherError,
    TLSMode,
)
from janusnet._transport import SEND_YIELD_EVERY
from janusnet.testing import ConnectProxy
from loopback import read_line, serve, tls_server_side

pytestmark = pytest.mark.anyio

GO_AHEAD = b"220 go ahead\r\n"


def client_port(ca: trustme.CA, **settings: object) -> ClientPort:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return ClientPort("SHARED", tls=TLSMode.OPTIONAL, ssl_context=context, **settings)  # type: ignore[arg-type]


class HeldHandshake:
    """A STARTTLS peer that records every plaintext byte after ``STARTTLS`` up to the
    ClientHello, then holds the handshake until :meth:`release`."""

    def __init__(self, server_context: ssl.SSLContext) -> None:
        self.server_context = server_context
        self.hello_seen = anyio.Event()
        self.released = anyio.Event()
        self.plaintext = b""  # bytes before the first TLS record
        self.received = b""  # bytes over TLS

    def release(self) -> None:
        self.released.set()

    async def __call__(self, stream: SocketStream) -> None:
        buf = bytearray()
        assert await read_line(stream, buf) == b"STARTTLS"
        await stream.send(GO_AHEAD)
        first = bytes(buf) or await stream.receive()
        # Whatever comes before the handshake record (0x16) went out in clear.
        start = first.find(b"\x16\x03")
        self.plaintext = first if start < 0 else first[:start]
        self.hello_seen.set()
        await self.released.wait()
        if start < 0:
            return
        # Hand the ClientHello back to a TLS layer: replay it through a memory pipe.
        tls = await tls_server_side(_Replay(stream, first[start:]), self.server_context)  # type: ignore[arg-type]
        try:
            while True:
                self.received += await tls.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
            pass


class _Replay:
    """A stream that gives ``first`` before what ``stream`` receives (for the TLS layer)."""

    def __init__(self, stream: SocketStream, first: bytes) -> None:
        self._stream = stream
        self._first = first

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> dict[object, Callable[[], object]]:
        return {}

    def extra(self, attribute: object, default: object = None) -> object:
        return default


async def start_upgrade(
    sock: Socket, peer: HeldHandshake, tg: anyio.abc.TaskGroup, done: anyio.Event | None = None
) -> list[BaseException]:
    """Ask for STARTTLS and start ``ssl_on()`` in ``tg``; return once the peer holds the
    ClientHello. The list receives what ``ssl_on()`` raised, if anything; ``done`` is set
    when it returns."""
    errors: list[BaseException] = []
    await sock.send_line("STARTTLS")
    assert (await sock.recv_parsed()).data == b"220 go ahead"

    async def upgrade() -> None:
        try:
            await sock.ssl_on(server_hostname="localhost")
        except Exception as exc:  # inspected by the test
            errors.append(exc)
        finally:
            if done is not None:
                done.set()

    tg.start_soon(upgrade)
    with anyio.fail_after(10):
        await peer.hello_seen.wait()
    return errors


@pytest.mark.parametrize("call", ["send", "send_line", "send_eof"])
async def test_nothing_is_sent_in_clear_while_ssl_on_handshakes(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, call: str
) -> None:
    peer = HeldHandshake(server_context)
    port = client_port(ca)
    async with serve(peer) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=port)
        async with sock, anyio.create_task_group() as tg:
            errors = await start_upgrade(sock, peer, tg)
            attempt = sock.send_eof() if call == "send_eof" else getattr(sock, call)(b"SECRET")
            with pytest.raises(BusyError):
                await attempt
            peer.release()
        assert errors == []
        assert sock.tls is not None
    assert peer.plaintext == b""
    assert b"SECRET" not in peer.received


async def test_ssl_on_refused_while_another_task_sends(anyio_backend: str) -> None:
    blocked = anyio.Event()

    async def sink(stream: SocketStream) -> None:
        await blocked.wait()  # read nothing until the test is done: the sender blocks

    async with serve(sink) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            async with anyio.create_task_group() as tg:
                ended: list[Exception] = []

                async def flood() -> None:
                    try:
                        while True:  # until the buffers on the way are full and send waits
                            await sock.send(b"x" * 1024 * 1024)
                    except SocketClosedError as exc:
                        ended.append(exc)

                tg.start_soon(flood)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(SSLOnOtherError, match="sending"):
                    await sock.ssl_on(server_hostname="localhost")
                assert not sock.closed and sock.tls is None
                await sock.aclose()  # ends the flood
            assert len(ended) == 1
            blocked.set()


async def test_aclose_from_another_task_stops_the_handshake(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    peer = HeldHandshake(server_context)
    port = client_port(ca, max_sockets=1)
    async with serve(peer) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=port)
        async with anyio.create_task_group() as tg:
            finished = anyio.Event()
            errors = await start_upgrade(sock, peer, tg, finished)
            with anyio.fail_after(5):  # the handshake waits on the peer: close must wake it
                await sock.aclose()
                await finished.wait()
            peer.release()  # the peer would now complete the handshake
        assert len(errors) == 1 and isinstance(errors[0], SSLOnOtherError)
        assert "closed" in str(errors[0])
        assert sock.closed and sock.tls is None
        assert port.open_sockets == 0
        # The slot is free exactly once: a new socket fits, a second one does not.
        async with await Socket.connect("127.0.0.1", number, client_port=port):
            assert port.open_sockets == 1
        assert port.open_sockets == 0


# -- TLS in TLS: a refused write must not reach the TLS engine --------------------------


@pytest.fixture(scope="module")
def https_proxy(server_context: ssl.SSLContext) -> Iterator[ConnectProxy]:
    with ConnectProxy(ssl_context=server_context) as proxy:
        yield proxy


async def test_refused_concurrent_send_leaves_tls_in_tls_usable(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, https_proxy: ConnectProxy
) -> None:
    received = bytearray()
    go = anyio.Event()

    async def origin(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, server_context)
        await go.wait()  # read nothing yet: the flood below ends up waiting in send()
        while not received.endswith(b"END\r\n"):
            received.extend(await tls.receive())
        await tls.send(b"done\r\n")

    port = client_port(ca)
    tunnel = ProxyTunnel(
        f"https://localhost:{https_proxy.port}",
        client_port=port,
        proxy_ssl_context=port.ssl_context,
    )
    chunk = b"a" * (1024 * 1024)
    sent = 0
    async with serve(origin) as number:
        async with await tunnel.open_tls("127.0.0.1", number) as sock:

            async def flood() -> None:
                nonlocal sent
                while not go.is_set():
                    await sock.send(chunk)
                    sent += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(flood)
                await anyio.wait_all_tasks_blocked()  # the flood is inside send()
                with pytest.raises(BusyError):
                    await sock.send(b"b" * 1024)
                go.set()
            await sock.send_line("END")
            with anyio.fail_after(10):
                assert (await sock.recv_parsed()).data == b"done"
    assert sent > 0
    assert received == chunk * sent + b"END\r\n"


# -- sock.tls after the session is gone ----------------------------------------------------


@pytest.mark.parametrize("ending", ["ragged-eof", "close-notify", "our-close"])
async def test_tls_description_outlives_the_session(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, ending: str
) -> None:
    async def peer(stream: SocketStream) -> None:
        tls = await TLSStream.wrap(
            stream,
            server_side=True,
            ssl_context=server_context,
            standard_compatible=ending == "close-notify",
        )
        await tls.send(b"hello\r\n")
        if ending == "our-close":
            await anyio.sleep_forever()
        await tls.aclose()  # close_notify only when standard_compatible

    port = client_port(ca)
    async with serve(peer) as number:
        sock = await Socket.connect("localhost", number, client_port=port, tls=True)
        async with sock:
            assert (await sock.recv_parsed()).data == b"hello"
            if ending != "our-close":
                assert await sock.recv() == b""  # the session ends here
        # Never asked while the session was alive: still described, repr too.
        info = sock.tls
        assert info is not None and info.version in ("TLSv1.2", "TLSv1.3")
        assert info.cipher and info.server_hostname == "localhost"
        assert info.peer_certificate is not None
        assert ("DNS", "localhost") in info.peer_certificate.subject_alt_names
        assert "tls=TLSv1." in repr(sock)


async def send_until_blocked_then_cancel(sock: Socket) -> bool:
    """Send 1 MiB at a time until every task is blocked (the peer reads nothing), then
    cancel the send; whether the cancellation was caught."""
    with anyio.CancelScope() as scope:

        async def cancel_when_blocked() -> None:
            await anyio.wait_all_tasks_blocked()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_blocked)
            while True:
                await sock.send(b"x" * 1024 * 1024)
    return scope.cancelled_caught


async def test_a_cancelled_send_cuts_no_record_and_the_connection_goes_on(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    """A send cancelled while the peer reads nothing: what OpenSSL already encrypted is
    sent in order by the next flush, so the peer's TLS sees whole records only (a cut
    record would fail its decryption), and both directions go on."""
    go = anyio.Event()
    done = anyio.Event()
    received = bytearray()

    async def peer(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, server_context)
        await go.wait()  # read nothing: the client's send fills the buffers and waits
        await tls.send(b"still here\r\n")
        while not received.endswith(b"END"):
            received.extend(await tls.receive())
        done.set()
        await anyio.sleep_forever()

    port = client_port(ca)
    async with serve(peer) as number:
        async with await Socket.connect("localhost", number, client_port=port, tls=True) as sock:
            assert await send_until_blocked_then_cancel(sock)
            go.set()
            with anyio.fail_after(10):
                assert (await sock.recv_parsed()).data == b"still here"
                await sock.send(b"END")
                await done.wait()
    assert received.endswith(b"xEND")
    assert received[:-3].count(b"x") == len(received) - 3 >= 1024 * 1024


async def test_close_right_after_a_large_send_delivers_all_of_it(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    """``send()`` then ``aclose()`` at once, while the peer is still reading: the peer gets
    every byte. The server's TLS 1.3 session tickets sit unread in our kernel buffer; a
    close with unread bytes is a reset on Linux, and a reset makes the peer's kernel drop
    what it had not read yet (it lost megabytes before janusnet read them first)."""
    total = 20 * 1024 * 1024
    received = [0]
    done = anyio.Event()

    async def sink(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, server_context)
        try:
            while True:
                received[0] += len(await tls.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            done.set()

    port = client_port(ca)
    async with serve(sink) as number:
        sock = await Socket.connect("localhost", number, client_port=port, tls=True)
        await sock.send(b"x" * total)
        await sock.aclose()
        with anyio.fail_after(10):
            await done.wait()
    assert received[0] == total


async def test_receive_after_a_cancelled_send_does_not_wait_to_write(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    """A send cancelled while the peer read nothing leaves encrypted bytes to send. A
    receive must still return what the peer sent, without first waiting for the socket
    to take those bytes: this peer reads nothing until the client has its line (an echo
    server blocked on its own write behaves the same)."""
    got_line = anyio.Event()
    received = bytearray()
    done = anyio.Event()

    async def peer(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, server_context)
        await tls.send(b"hello\r\n")
        await got_line.wait()
        while not received.endswith(b"END"):
            received.extend(await tls.receive())
        done.set()
        await anyio.sleep_forever()

    port = client_port(ca)
    async with serve(peer) as number:
        async with await Socket.connect("localhost", number, client_port=port, tls=True) as sock:
            await send_until_blocked_then_cancel(sock)
            with anyio.fail_after(5):
                assert (await sock.recv_parsed()).data == b"hello"
                got_line.set()
                await sock.send(b"END")
                await done.wait()
    assert received.endswith(b"xEND") and received[:-3].count(b"x") == len(received) - 3


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_sends_in_a_cancelled_scope_write_nothing(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, tls: bool
) -> None:
    """Every send is a cancellation point, including the ones that do not yield to
    other tasks (SEND_YIELD_EVERY): in a cancelled scope it raises before writing."""
    received = bytearray()
    done = anyio.Event()

    async def sink(stream: SocketStream) -> None:
        peer = await tls_server_side(stream, server_context) if tls else stream
        with anyio.fail_after(10):
            while not received.endswith(b"END"):
                received.extend(await peer.receive())
        done.set()
        await anyio.sleep_forever()

    async with serve(sink) as number:
        async with await Socket.connect(
            "localhost", number, client_port=client_port(ca), tls=tls
        ) as sock:
            for k in range(2 * SEND_YIELD_EVERY + 1):
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await sock.send(b"lost")
                assert scope.cancelled_caught, f"send {k} wrote in a cancelled scope"
                await sock.send(b"%d," % k)
            await sock.send(b"END")
            with anyio.fail_after(10):
                await done.wait()
    expected = b"".join(b"%d," % k for k in range(2 * SEND_YIELD_EVERY + 1)) + b"END"
    assert bytes(received) == expected


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_task_that_sends_without_waiting_still_lets_others_run(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, tls: bool
) -> None:
    """Sends that never wait (the peer keeps up) yield to other tasks once every
    SEND_YIELD_EVERY calls, so a busy sender cannot starve its neighbours."""

    async def sink(stream: SocketStream) -> None:
        peer = await tls_server_side(stream, server_context) if tls else stream
        with (
            anyio.CancelScope(),
            contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError),
        ):
            while True:
                await peer.receive()

    ran = anyio.Event()

    async def neighbour() -> None:
        ran.set()

    async with serve(sink) as number:
        async with await Socket.connect(
            "localhost", number, client_port=client_port(ca), tls=tls
        ) as sock:
            async with anyio.create_task_group() as tg:
                tg.start_soon(neighbour)  # runs only when the sender yields
                sends = 0
                while not ran.is_set():
                    # trio may run the sender again first in the batch after its yield
                    assert sends <= 2 * SEND_YIELD_EVERY, "the sender never yielded"
                    await sock.send(b"tick")
                    sends += 1
    assert 1 <= sends <= 2 * SEND_YIELD_EVERY

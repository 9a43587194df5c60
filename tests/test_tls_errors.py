"""A peer whose TLS records fail to decrypt (a flipped tag byte), or that ends TLS without
close_notify: the receive that meets a bad record raises ``SocketResetError``, every
later receive and send too, and the answer never depends on how the bytes were split
into segments -- it is never a clean end of stream, which would let a tampered body that
is read to its end pass for a whole one."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

import anyio
import pytest
import trustme

from janusnet import (
    ClientPort,
    HandshakeError,
    PendingDataError,
    ProxyTunnel,
    Socket,
    SocketResetError,
    SSLOnOtherError,
    TLSMode,
    compat,
)
from loopback import bio_handshake, cycles_left

pytestmark = pytest.mark.anyio

Script = Callable[[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, socket.socket], None]


class ScriptedTLSPeer:
    """A TLS server in a thread over memory BIOs, so it can corrupt what it sends: after
    the handshake it runs ``script(tls, incoming, outgoing, conn)``, then keeps TCP open
    until the client closes."""

    def __init__(self, context: ssl.SSLContext, script: Script) -> None:
        self.context, self.script = context, script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn, self.listener:
            conn.settimeout(10)
            tls, incoming, outgoing = bio_handshake(conn, self.context)
            self.script(tls, incoming, outgoing, conn)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def record(
    tls: ssl.SSLObject, outgoing: ssl.MemoryBIO, data: bytes, *, bad: bool = False
) -> bytes:
    """``data`` as TLS records on the wire; ``bad``: with the last tag byte flipped."""
    tls.write(data)
    wire = bytearray(outgoing.read())
    if bad:
        wire[-1] ^= 0xFF
    return bytes(wire)


def read_head(tls: ssl.SSLObject, incoming: ssl.MemoryBIO, conn: socket.socket) -> bytes:
    """Read a request head through ``tls`` (a scripted https:// proxy's CONNECT)."""
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            head += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(conn.recv(65536))
    return head


def send_then_bad(
    tls: ssl.SSLObject, out: ssl.MemoryBIO, conn: socket.socket, good: bytes, together: bool
) -> None:
    """``good`` (already on the wire), then a bad record: in one segment or 0.3 s later."""
    bad = record(tls, out, b"tampered\r\n", bad=True)
    if together:
        conn.sendall(good + bad)
    else:
        conn.sendall(good)
        threading.Event().wait(0.3)
        conn.sendall(bad)


def good_then_bad(good: bytes, *, together: bool) -> Script:
    def script(
        tls: ssl.SSLObject, _: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
    ) -> None:
        send_then_bad(tls, out, conn, record(tls, out, good) if good else b"", together)

    return script


def ragged_end(
    tls: ssl.SSLObject, _: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
) -> None:
    conn.sendall(record(tls, out, b"hello\r\n"))
    conn.shutdown(socket.SHUT_RDWR)  # FIN without close_notify, as many HTTP servers do


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def port(ca: trustme.CA) -> ClientPort:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return ClientPort("BADTLS", tls=TLSMode.OPTIONAL, ssl_context=client)


def server_context(ca: trustme.CA, version: str = "1.3") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    pinned = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    context.minimum_version = context.maximum_version = pinned
    return context


async def connect(peer: ScriptedTLSPeer, port: ClientPort, stack: str) -> Socket:
    """Over janusnet's own TLS stream, or over anyio's ``TLSStream`` on a caller's stream
    (what the origin's layer of TLS in TLS is)."""
    if stack == "direct":
        return await Socket.connect(
            "127.0.0.1", peer.port, client_port=port, tls=True, server_hostname="localhost"
        )
    sock = Socket(await anyio.connect_tcp("127.0.0.1", peer.port), client_port=port)
    await sock.ssl_on(server_hostname="localhost")
    return sock


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("together", [False, True], ids=["bad-later", "bad-same-segment"])
@pytest.mark.parametrize("stack", ["direct", "anyio-stream"])
async def test_a_bad_record_behind_a_full_one_is_an_error_not_an_end(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, version: str, together: bool, stack: str
) -> None:
    """A full 16 KiB record, then a bad one: reading to the end gives the 16 KiB, then
    ``SocketResetError`` (again at once, and for a send), whether the bad record came
    with the good one -- the read that drains full records meets it -- or later."""
    peer = ScriptedTLSPeer(
        server_context(ca, version), good_then_bad(b"A" * 16384, together=together)
    )
    async with await connect(peer, port, stack) as sock:
        if together:
            await anyio.sleep(0.3)  # everything is in the kernel before the first read
        got = bytearray()

        async def read_to_the_end() -> None:
            while data := await sock.recv():
                got.extend(data)

        with anyio.fail_after(10):
            with pytest.raises(SocketResetError):
                await read_to_the_end()
            assert got == b"A" * 16384
            with pytest.raises(SocketResetError):
                await sock.recv()  # again at once: no wait for the peer to close
            with pytest.raises(SocketResetError):
                await sock.send(b"more\r\n")
    peer.thread.join(10)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_every_receive_after_a_bad_record_fails_at_once(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, version: str
) -> None:
    peer = ScriptedTLSPeer(server_context(ca, version), good_then_bad(b"", together=True))
    async with await connect(peer, port, "direct") as sock:
        with anyio.fail_after(10):
            for _ in range(3):
                with pytest.raises(SocketResetError, match=r"BAD_RECORD_MAC|DECRYPT"):
                    await sock.recv()
    peer.thread.join(10)


async def test_plain_text_after_tls_is_named(
    anyio_backend: str, ca: trustme.CA, port: ClientPort
) -> None:
    """A server that writes plain text on a TLS connection (vsftpd's "500 OOPS" after a
    failed data connection): the reset says plain text came, not only OpenSSL's words."""

    def plain_after(
        tls: ssl.SSLObject, _: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
    ) -> None:
        conn.sendall(record(tls, out, b"hello\r\n") + b"500 OOPS: vsftpd\r\n")

    peer = ScriptedTLSPeer(server_context(ca), plain_after)
    async with await connect(peer, port, "direct") as sock:
        with anyio.fail_after(10):
            assert (await sock.recv_parsed()).data == b"hello"
            with pytest.raises(SocketResetError, match="plain text came where TLS records"):
                await sock.recv_parsed()
    peer.thread.join(10)


@pytest.mark.parametrize("stack", ["direct", "anyio-stream"])
async def test_a_send_after_a_ragged_end_is_a_reset(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, stack: str
) -> None:
    """The peer ends TCP without close_notify: the reads give its bytes and then the end;
    a send after that is ``SocketResetError`` (anyio's ``TLSStream`` says ``EndOfStream``
    there), and compat's ``$Sock_Send`` answers -1."""
    peer = ScriptedTLSPeer(server_context(ca), ragged_end)
    sock = await connect(peer, port, stack)
    compat.registry.add(sock)
    num = compat.registry.number_of(sock)
    try:
        with anyio.fail_after(10):
            assert await sock.recv() == b"hello\r\n"
            assert not sock.close_notify_received
            assert await sock.recv() == b""
            assert not sock.close_notify_received  # TCP ended: maybe a truncation
            with pytest.raises(SocketResetError, match="the peer had ended the connection"):
                await sock.send(b"after\r\n")
            assert await compat.sock_send(num, b"after") == -1
    finally:
        await compat.sock_close(num)
    peer.thread.join(10)


@pytest.mark.parametrize("together", [False, True], ids=["bad-later", "bad-same-segment"])
async def test_a_bad_record_from_an_https_proxy_behind_injected_bytes(
    anyio_backend: str, ca: trustme.CA, together: bool
) -> None:
    """An ``https://`` proxy answers 200, injects bytes and then a bad record. ``ssl_on``
    refuses the bytes (-112), the caller drains them, and the next receive is
    ``SocketResetError`` -- also when ``ssl_on``'s look at what arrived met the bad
    record first."""

    def proxy(
        tls: ssl.SSLObject, incoming: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
    ) -> None:
        read_head(tls, incoming, conn)
        good = record(tls, out, b"HTTP/1.1 200 OK\r\n\r\n") + record(tls, out, b"junk")
        send_then_bad(tls, out, conn, good, together)

    client = ssl.create_default_context()
    ca.configure_trust(client)
    peer = ScriptedTLSPeer(server_context(ca), proxy)
    tunnel = ProxyTunnel(
        f"https://localhost:{peer.port}",
        client_port=ClientPort("HOP", tls=TLSMode.OPTIONAL),
        proxy_ssl_context=client,
    )
    async with await tunnel.open("origin.example", 443) as sock:
        await anyio.sleep(0.2)  # the reply, the junk and (same segment) the bad record
        with pytest.raises(PendingDataError):
            await sock.ssl_on(server_hostname="origin.example")
        with anyio.fail_after(10):
            assert await sock.recv() == b"junk"
            with pytest.raises(SocketResetError):
                await sock.recv()
    peer.thread.join(10)


@pytest.mark.parametrize("when", ["before-ssl_on", "during-handshake"])
async def test_a_bad_record_from_an_https_proxy_is_not_a_close(
    anyio_backend: str, ca: trustme.CA, when: str
) -> None:
    """A record on the hop to an ``https://`` proxy that does not decrypt (tampering, or
    a broken proxy) is named as such: before ``ssl_on()`` it is -149 (the stream was
    broken before the call), during the origin's handshake -111 naming the hop; neither
    says the peer closed the connection."""

    def proxy(
        tls: ssl.SSLObject, incoming: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
    ) -> None:
        read_head(tls, incoming, conn)
        conn.sendall(record(tls, out, b"HTTP/1.1 200 OK\r\n\r\n"))
        if when == "during-handshake":
            conn.recv(65536)  # the ClientHello to the origin, inside our TLS
        conn.sendall(record(tls, out, b"tampered", bad=True))
        conn.recv(65536)  # until the client closes

    client = ssl.create_default_context()
    ca.configure_trust(client)
    peer = ScriptedTLSPeer(server_context(ca), proxy)
    tunnel = ProxyTunnel(f"https://localhost:{peer.port}", proxy_ssl_context=client)
    with anyio.fail_after(10):
        if when == "during-handshake":
            with pytest.raises(HandshakeError, match=r"runs in \(to the proxy\) broke") as info:
                await tunnel.open_tls("origin.example", 443, ssl_context=client)
            assert "closed" not in str(info.value)
        else:
            async with await tunnel.open("origin.example", 443) as sock:
                await anyio.sleep(0.2)  # the bad record is here
                with pytest.raises(SSLOnOtherError, match="did not decrypt") as other:
                    await sock.ssl_on(ssl_context=client)
                assert isinstance(other.value.__cause__, ssl.SSLError)
                assert not sock.closed
                with pytest.raises(SocketResetError, match=r"BAD_RECORD_MAC|DECRYPT"):
                    await sock.recv()
    peer.thread.join(10)


def small_records_then(end: str) -> Script:
    """100 records of one 64-byte line each, in one segment, then ``end``: a bad record
    in the same segment, close_notify, or nothing (the connection stays open)."""

    def script(
        tls: ssl.SSLObject, _: ssl.MemoryBIO, out: ssl.MemoryBIO, conn: socket.socket
    ) -> None:
        wire = b"".join(record(tls, out, b"%062d\r\n" % i) for i in range(100))
        if end == "bad":
            wire += record(tls, out, b"tampered\r\n", bad=True)
        elif end == "close_notify":
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            wire += out.read()
        conn.sendall(wire)

    return script


LINES = b"".join(b"%062d\r\n" % i for i in range(100))


@pytest.mark.parametrize("end", ["open", "close_notify", "bad"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_small_records_already_here_come_in_one_receive(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, version: str, end: str
) -> None:
    """A peer that writes a record per line: the records already received come out of one
    ``recv()`` (not one receive, a trip through the event loop, per record), in order;
    then what followed them: nothing yet, the end, or -- never an end -- the bad record."""
    peer = ScriptedTLSPeer(server_context(ca, version), small_records_then(end))
    async with await connect(peer, port, "direct") as sock:
        await anyio.sleep(0.3)  # all of it is in the kernel before the first read
        with anyio.fail_after(10):
            assert await sock.recv(65536) == LINES
            assert not sock.close_notify_received
            if end == "close_notify":
                assert await sock.recv() == b""
                assert sock.close_notify_received  # a clean end: nothing was cut off
            elif end == "bad":
                for _ in range(2):
                    with pytest.raises(SocketResetError, match=r"BAD_RECORD_MAC|DECRYPT"):
                        await sock.recv()
            else:
                with anyio.move_on_after(0.2) as scope:
                    await sock.recv()
                assert scope.cancelled_caught
    peer.thread.join(10)


async def test_small_records_in_one_receive_keep_to_a_smaller_limit(
    anyio_backend: str, ca: trustme.CA, port: ClientPort
) -> None:
    peer = ScriptedTLSPeer(server_context(ca), small_records_then("close_notify"))
    async with await connect(peer, port, "direct") as sock:
        await anyio.sleep(0.3)
        with anyio.fail_after(10):
            assert await sock.recv(100) == LINES[:100]  # across two records
            assert (await sock.recv_parsed()).data == LINES[100:126]  # the rest of the 2nd
            assert await sock.recv_exactly(len(LINES) - 128) == LINES[128:]
            assert await sock.recv() == b""
    peer.thread.join(10)


async def test_a_bad_record_leaves_no_cycle_holding_the_socket(
    anyio_backend: str, ca: trustme.CA, port: ClientPort
) -> None:
    """The error kept for the next receives is a copy without its traceback, whose frames
    would hold the stream: the socket, its TLS engine and buffers go as soon as they are
    dropped, not when the garbage collector runs."""
    watched = {"Socket", "FdTLSStream", "SSLObject", "MemoryBIO"}
    for together in (True, False):  # met by the drain after a record, or by a read
        peer = ScriptedTLSPeer(server_context(ca), good_then_bad(b"A" * 100, together=together))
        with cycles_left(watched) as left:
            sock = await connect(peer, port, "direct")
            if together:
                await anyio.sleep(0.3)  # the bad record arrives with the good one
            with anyio.fail_after(10), pytest.raises(SocketResetError):
                await read_until_error(sock)
            with pytest.raises(SocketResetError):
                await sock.recv()  # raised again, from the kept copy
            await sock.aclose()
            peer.thread.join(10)
            del sock
        assert left == [], together


async def read_until_error(sock: Socket) -> None:
    while True:
        await sock.recv()

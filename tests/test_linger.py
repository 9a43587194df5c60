"""Closing after a large send loses nothing: ``aclose()`` waits (Linux) while the kernel
still holds bytes of ours it has not sent, so that a peer writing after our close (a TLS
1.3 server's late session tickets, a greeting) cannot make the kernel reset the
connection and drop them. Found against proftpd and vsftpd: an FTPS upload stored 98 KiB
of 2 MB and the server answered 226.

The peers are blocking sockets in a thread, each on its own loopback connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
import trustme

import janusnet
import janusnet._transport
from janusnet import Socket, compat

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform != "linux", reason="the kernel says what is unsent on Linux"),
]

#: Taken by the kernel at once (its send buffer grows to 4 MiB), sent only as the peer
#: reads.
UPLOAD = 2_000_000


class Peer:
    """A loopback peer that accepts one connection, waits, writes a line (after our
    close, when the client closed at once), then reads to the end and records what it
    got: ``("eof", n)`` or the error's name and ``n``."""

    def __init__(
        self, context: ssl.SSLContext | None, *, wait: float = 0.1, read: bool = True
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.context = context
        self.wait = wait
        self.read = read
        self.outcome: tuple[str, int] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        raw, _ = self.listener.accept()
        conn: socket.socket = raw
        got = 0
        try:
            if self.context is not None:
                # A close without close_notify raises here (no ragged EOF taken as an end).
                conn = self.context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            time.sleep(self.wait)  # busy: the upload waits in the client's kernel
            conn.sendall(b"hello\r\n")
            if not self.read:
                self.done.wait(10)
                return
            while data := conn.recv(65536):
                got += len(data)
            self.outcome = ("eof", got)
        except OSError as exc:  # (ssl.SSLError is one)
            self.outcome = (type(exc).__name__, got)
        finally:
            conn.close()
            raw.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = janusnet.create_ssl_context(cadata=ca.cert_pem.bytes().decode())
    return server, client


@contextlib.contextmanager
def peer(
    context: ssl.SSLContext | None, *, wait: float = 0.1, read: bool = True
) -> Iterator[Peer]:
    server = Peer(context, wait=wait, read=read)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_close_right_after_a_large_send_loses_nothing(
    anyio_backend: str, tls: bool, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    with peer(server_context if tls else None) as server:
        sock = await Socket.connect("127.0.0.1", server.port)
        if tls:
            await sock.ssl_on(server_hostname="localhost", ssl_context=client_context)
        await sock.send(b"x" * UPLOAD)
        await sock.aclose()
        server.thread.join(10)
        # Every byte, and (TLS) a clean end: close_notify, not a reset or a bare FIN.
        assert server.outcome == ("eof", UPLOAD)


async def test_close_gives_up_on_a_peer_that_takes_nothing(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that never reads: the close waits only while bytes move, says what it
    left behind, and closes."""
    monkeypatch.setattr(janusnet._transport, "LINGER_STALL", 0.2)
    caplog.set_level(logging.WARNING, logger="janusnet")
    with peer(None, wait=0, read=False) as server:
        sock = await Socket.connect("127.0.0.1", server.port)
        await sock.send(b"x" * UPLOAD)
        with anyio.fail_after(10):  # (a bound for a broken build, not a measurement)
            await sock.aclose()
        assert sock.closed
    [record] = [r for r in caplog.records if "not sent yet" in r.getMessage()]
    assert record.levelno == logging.WARNING


async def test_cancelling_the_wait_still_closes(anyio_backend: str) -> None:
    with peer(None, wait=0, read=False) as server:
        sock = await Socket.connect("127.0.0.1", server.port)
        await sock.send(b"x" * UPLOAD)
        with anyio.move_on_after(0.1) as scope:
            await sock.aclose()
        assert scope.cancelled_caught  # the close was waiting for the peer
        assert sock.closed
        await sock.aclose()  # idempotent


async def test_cancelling_a_group_close_closes_every_member(anyio_backend: str) -> None:
    with peer(None, wait=0, read=False) as one, peer(None, wait=0, read=False) as two:
        group = janusnet.SocketGroup()
        for server in (one, two):
            sock = await Socket.connect("127.0.0.1", server.port)
            group.add(sock)
            await sock.send(b"x" * UPLOAD)
        members = list(group)
        with anyio.move_on_after(0.1) as scope:
            await group.aclose()
        assert scope.cancelled_caught
        assert all(sock.closed for sock in members)
        assert len(group) == 0


async def test_compat_close_while_another_close_waits(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sock_close(n)`` waiting for unsent bytes while ``sock_close(-1)`` closes every
    socket: both answer 1 (the first found its number already freed)."""
    monkeypatch.setattr(janusnet._transport, "LINGER_STALL", 0.3)
    with peer(None, wait=0, read=False) as server:
        sock = await Socket.connect("127.0.0.1", server.port)
        compat.registry.add(sock)
        num = compat.registry.number_of(sock)
        await sock.send(b"x" * UPLOAD)
        codes: list[int] = []

        async def close_one() -> None:
            codes.append(await compat.sock_close(num))

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_one)
            await anyio.sleep(0.05)  # sock_close(num) is waiting now
            codes.append(await compat.sock_close(-1))
        assert sorted(codes) == [1, 1]
        assert sock.closed and len(compat.registry) == 0

"""A TLS 1.2 server that renegotiates while data flows both ways, one client task sending
and another receiving.

The server (pyOpenSSL over memory BIOs, in a thread: the ``ssl`` module cannot start a
renegotiation) asks for a new handshake every few records and goes on sending
application data until the client's ClientHello reaches it, as TLS 1.2 allows. On the
client those records arrive in the middle of its handshake. OpenSSL accepts them only
through ``SSL_read``; when the sending task's ``SSL_write`` met one, the connection died
with ``UNEXPECTED_RECORD`` (or a false EOF).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path

import anyio
import pytest
import trustme

from janusnet import ClientPort, Socket, TLSMode
from loopback import BACKENDS_WITH_UVLOOP, Backend

SSL = pytest.importorskip("OpenSSL.SSL")

pytestmark = pytest.mark.anyio

SIZE = 4 << 20


@pytest.fixture(params=BACKENDS_WITH_UVLOOP)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio, trio, and asyncio on uvloop."""
    return request.param


class RenegotiatingServer:
    """Sends ``SIZE`` random bytes, asking for a renegotiation every ``every`` bytes, and
    reads what the client sends, until the client closes (or 30 s)."""

    def __init__(self, ca: trustme.CA, tmp_path: Path, every: int) -> None:
        pem = tmp_path / "server.pem"
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.set_max_proto_version(SSL.TLS1_2_VERSION)
        self.context.use_certificate_chain_file(str(pem))
        self.context.use_privatekey_file(str(pem))
        self.every = every
        self.data = os.urandom(SIZE)
        self.received = hashlib.sha256()
        self.received_bytes = 0
        self.renegotiations = 0
        self.error: BaseException | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self._serve(conn)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.listener.close()

    def _serve(self, conn: socket.socket) -> None:
        tls = SSL.Connection(self.context, None)
        tls.set_accept_state()
        conn.setblocking(False)
        out = b""
        sent = 0
        next_renegotiation = self.every
        deadline = time.monotonic() + 30
        handshaken = False
        while time.monotonic() < deadline:
            if not handshaken:
                try:
                    tls.do_handshake()
                    handshaken = True
                except SSL.WantReadError:
                    pass
            elif sent < SIZE and len(out) < (256 << 10):
                if sent >= next_renegotiation and not tls.renegotiate_pending():
                    tls.renegotiate()
                    next_renegotiation += self.every
                    try:
                        tls.do_handshake()  # the HelloRequest; data may follow it
                    except SSL.WantReadError:
                        pass
                try:
                    sent += tls.send(self.data[sent : sent + 16384])
                except SSL.WantReadError:
                    pass  # the renegotiation must go on first
            try:
                while True:
                    out += tls.bio_read(65536)
            except SSL.WantReadError:
                pass
            readable, writable, _ = select.select([conn], [conn] if out else [], [], 0.2)
            if writable:
                out = out[conn.send(out) :]
            if readable:
                data = conn.recv(65536)
                if not data:  # the client is done (closing first would reset what it
                    break  # has not received yet)
                tls.bio_write(data)
                try:
                    while True:
                        chunk = tls.recv(65536)
                        self.received.update(chunk)
                        self.received_bytes += len(chunk)
                except SSL.WantReadError:
                    pass
                except SSL.ZeroReturnError:  # the client's close_notify
                    break
        self.renegotiations = tls.total_renegotiations()


@pytest.mark.parametrize("every", [16 << 10, 256 << 10], ids=["every-record", "every-256k"])
async def test_renegotiation_during_a_concurrent_send_and_receive(
    anyio_backend: Backend, ca: trustme.CA, tmp_path: Path, every: int
) -> None:
    server = RenegotiatingServer(ca, tmp_path, every)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = ClientPort("RENEG", tls=TLSMode.OPTIONAL, ssl_context=context)
    payload = os.urandom(SIZE)
    received = hashlib.sha256()
    count = 0

    async def send() -> None:
        for start in range(0, SIZE, 65536):
            await sock.send(payload[start : start + 65536])

    async def receive() -> None:
        nonlocal count
        while count < SIZE:
            data = await sock.recv()
            assert data, "the server ended the stream early"
            received.update(data)
            count += len(data)

    async with await Socket.connect("127.0.0.1", server.port, client_port=port) as sock:
        await sock.ssl_on(server_hostname="localhost")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                tg.start_soon(receive)
            assert sock.tls is not None and sock.tls.version == "TLSv1.2"
    await anyio.to_thread.run_sync(server.thread.join, 30.0)
    assert server.error is None
    assert (count, received.digest()) == (SIZE, hashlib.sha256(server.data).digest())
    assert server.received_bytes == SIZE
    assert server.received.digest() == hashlib.sha256(payload).digest()
    assert server.renegotiations >= 2  # (each one asked for completes before the next)

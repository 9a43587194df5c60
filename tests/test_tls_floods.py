"""TLS peers that flood: records without data after the handshake, and an ``https://``
proxy that sends data right behind its 200.

* A TLS 1.3 server that sends thousands of session tickets before its data keeps the
  socket readable for as long as they last. A receive decrypting them must still yield
  to the event loop, or no other task runs and no deadline fires until they end (found
  by a hostile-peer check: 8 s of tickets held ``recv()`` under ``fail_after(1)`` for
  8 s).
* An ``https://`` proxy that floods right after its 200: ``ssl_on()`` looks for data
  before the handshake (-112) and took everything that could be read, into memory,
  without yielding (hundreds of MB under a fast peer). Now the first data is enough;
  the rest stays in the socket, and nothing is lost.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import anyio
import pytest
import trustme

from janusnet import ClientPort, PendingDataError, ProxyTunnel, Socket, TLSMode
from loopback import bio_handshake, read_line, serve

pytestmark = pytest.mark.anyio

TICKETS = 1_600  # ~400 KB of ciphertext (OpenSSL writes them all after the handshake)
BUFFER = 1 << 20  # socket buffers that hold them all (capped at twice rmem_max/wmem_max)


@pytest.fixture
def ticket_server(ca: trustme.CA) -> Iterator[tuple[int, threading.Event]]:
    """A TLS 1.3 server that sends ``TICKETS`` session tickets, then ``b"data\\n"``, and
    sets the event once the kernel has taken all of it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    ca.issue_cert("localhost").configure_cert(context)
    context.num_tickets = TICKETS
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sent = threading.Event()

    def serve_one() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            tls, _, outgoing = bio_handshake(conn, context, flush=False)
            tls.write(b"data\n")
            try:
                conn.sendall(outgoing.read())
                sent.set()
                conn.recv(1)  # until the client closes
            except OSError:
                pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], sent
    finally:
        listener.close()
        thread.join(10)


async def test_receive_yields_while_session_tickets_stream_in(
    anyio_backend: str, ticket_server: tuple[int, threading.Event], ca: trustme.CA
) -> None:
    """With the tickets all there to read at once, the receive reads through them (the
    data arrives) and lets another task run while it decrypts them, so a deadline
    around it would fire."""
    number, sent = ticket_server
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    port = ClientPort("FLOOD", tls=TLSMode.OPTIONAL, ssl_context=context)
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)]
    turns = 0
    async with await Socket.connect(
        "127.0.0.1", number, client_port=port, socket_options=options
    ) as sock:
        with anyio.fail_after(30):
            await sock.ssl_on(server_hostname="localhost")
            assert await anyio.to_thread.run_sync(sent.wait, 20)
            async with anyio.create_task_group() as tg:

                async def other_task() -> None:
                    nonlocal turns
                    while True:
                        turns += 1
                        await anyio.lowlevel.checkpoint()

                tg.start_soon(other_task)
                await anyio.lowlevel.checkpoint()  # let it start: its first turn
                data = await sock.recv(100)
                tg.cancel_scope.cancel()
    assert data == b"data\n"
    # Without the yields: 2 turns (the first, and the receive's own checkpoint on
    # entry); with them, one more per 64 KiB of tickets read after the first.
    assert turns >= 4


async def test_https_proxy_flooding_after_its_200_is_refused_early_and_loses_nothing(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    """-112 as soon as data is seen, with only the first of it read into memory; the
    whole flood is then read, in order."""
    from anyio.streams.tls import TLSStream

    flood = bytes(range(256)) * (8 * 4096)  # 8 MiB
    sent = anyio.Event()

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        tls = await TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
        buf = bytearray()
        while await read_line(tls, buf):
            pass
        await tls.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        sent.set()
        await tls.send(flood)
        await tls.aclose()

    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"https://localhost:{number}", proxy_ssl_context=client_context)
        with anyio.fail_after(30):
            async with await tunnel.open("origin.test", 443) as sock:
                await sent.wait()
                await anyio.sleep(0.3)  # let the flood fill the socket buffers
                with pytest.raises(PendingDataError) as info:
                    await sock.ssl_on()
                # The first record's data (and what came with the reply head), not the
                # megabytes the socket holds.
                assert 0 < info.value.pending <= 64 * 1024
                received = bytearray()
                while chunk := await sock.recv():
                    received += chunk
    assert received == flood

"""A peer whose TLS records fail to decrypt (a flipped tag byte): the receive that meets
the bad record raises ``SocketResetError``, every later receive too, and the answer never
depends on how the bytes were split into segments -- it is never a clean end of stream,
which would let a tampered body that is read to its end pass for a whole one."""

from __future__ import annotations

import socket
import ssl
import threading

import anyio
import pytest
import trustme

from janusnet import ClientPort, Socket, SocketResetError, TLSMode

pytestmark = pytest.mark.anyio


class BadRecordPeer:
    """A TLS server in a thread (memory BIOs, so it can corrupt what it sends): after the
    handshake it sends ``good`` bytes as records, then one record with a flipped tag byte,
    in the same segment (``together``) or a moment later; then it keeps TCP open until the
    client closes."""

    def __init__(self, context: ssl.SSLContext, good: bytes, *, together: bool) -> None:
        self.context, self.good, self.together = context, good, together
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn, self.listener:
            conn.settimeout(10)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    conn.sendall(outgoing.read())
                    incoming.write(conn.recv(65536))
            conn.sendall(outgoing.read())
            if self.good:
                tls.write(self.good)
            good = outgoing.read()
            tls.write(b"tampered\r\n")
            bad = bytearray(outgoing.read())
            bad[-1] ^= 0xFF
            if self.together:
                conn.sendall(good + bytes(bad))
            else:
                conn.sendall(good)
                threading.Event().wait(0.3)
                conn.sendall(bytes(bad))
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


@pytest.fixture(scope="module")
def pieces() -> tuple[trustme.CA, ClientPort]:
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return ca, ClientPort("BADTLS", tls=TLSMode.OPTIONAL, ssl_context=client)


def server_context(ca: trustme.CA, version: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    pinned = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    context.minimum_version = context.maximum_version = pinned
    return context


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("together", [False, True], ids=["bad-later", "bad-same-segment"])
@pytest.mark.parametrize("stack", ["direct", "anyio-stream"])
async def test_a_bad_record_behind_a_full_one_is_an_error_not_an_end(
    anyio_backend: str,
    pieces: tuple[trustme.CA, ClientPort],
    version: str,
    together: bool,
    stack: str,
) -> None:
    """A full 16 KiB record, then a bad one: reading to the end gives the 16 KiB, then
    ``SocketResetError`` (twice), whether the bad record came with the good one -- the
    read that drains full records meets it -- or later; over janusnet's own stream and
    over anyio's ``TLSStream`` (a caller's stream, as under TLS-in-TLS)."""
    ca, port = pieces
    peer = BadRecordPeer(server_context(ca, version), b"A" * 16384, together=together)
    if stack == "direct":
        sock = await Socket.connect(
            "127.0.0.1", peer.port, client_port=port, tls=True, server_hostname="localhost"
        )
    else:
        sock = Socket(await anyio.connect_tcp("127.0.0.1", peer.port), client_port=port)
        await sock.ssl_on(server_hostname="localhost")
    async with sock:
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
    peer.thread.join(10)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_every_receive_after_a_bad_record_fails_at_once(
    anyio_backend: str, pieces: tuple[trustme.CA, ClientPort], version: str
) -> None:
    ca, port = pieces
    peer = BadRecordPeer(server_context(ca, version), b"", together=True)
    async with await Socket.connect(
        "127.0.0.1", peer.port, client_port=port, tls=True, server_hostname="localhost"
    ) as sock:
        with anyio.fail_after(10):
            for _ in range(3):
                with pytest.raises(SocketResetError, match=r"BAD_RECORD_MAC|DECRYPT"):
                    await sock.recv()
    peer.thread.join(10)

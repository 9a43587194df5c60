"""Post-handshake messages from a real ``openssl s_server`` while both directions are in
use: a TLS 1.3 KeyUpdate that asks for ours, and TLS 1.2 renegotiations.

* A send blocked on a full socket (the peer reads nothing for a while) while the peer
  rekeys: the receiver goes on receiving, and once the peer reads again the whole upload
  arrives, in order, under the new keys.
* One task sending, one receiving, while the server renegotiates with its handshake
  records held back: the send has to wait for the renegotiation, which the receiving
  task drives. Over OpenSSL-on-the-socket this failed the send with a false
  ``BusyError`` (two waiters on one socket); a send blocked inside OpenSSL can also make
  an answer the receiver writes fail with ``BAD_LENGTH`` (seen in review, not
  reproducible on demand here). ``FdTLSStream`` now runs TLS over memory BIOs.

``openssl s_server`` takes ``K`` (KeyUpdate, update requested) and ``r`` (renegotiate) on
its stdin and writes everything it receives to its stdout. A relay between the client
and the server holds back the client's records, or the server's handshake records.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme

from janusnet import ClientPort, Socket, TLSMode

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        shutil.which("openssl") is None or shutil.which("stdbuf") is None,
        reason="needs the openssl and stdbuf commands",
    ),
]

END = b"END-OF-UPLOAD"


class SServer:
    """``openssl s_server`` on a free loopback port, one connection."""

    def __init__(self, ca: trustme.CA, tmp: Path, version: str) -> None:
        leaf = ca.issue_cert("localhost")
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.out = tmp / "s_server.out"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                # stdbuf: s_server printf()s its command acknowledgements
                ["stdbuf", "-o0", "openssl", "s_server", "-accept", f"127.0.0.1:{self.port}",
                 "-naccept", "1", "-cert", str(cert), "-key", str(key), "-nbio", version],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_for(b"ACCEPT")

    def output(self) -> bytes:
        return self.out.read_bytes()

    def wait_for(self, marker: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                tail = self.output()[-300:]
                raise AssertionError(f"s_server never printed {marker!r}: {tail!r}")
            time.sleep(0.02)

    def command(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait(5)


class Relay:
    """Forwards one connection to ``port``; client-to-server records wait while
    ``flowing`` is clear (so the client's sends fill the buffers and block)."""

    def __init__(self, port: int, *, hold_handshake: float = 0.0) -> None:
        self.hold_handshake = hold_handshake  # delay for server handshake records (0x16)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = port
        self.flowing = threading.Event()
        self.flowing.set()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target))
        self.sockets += [client, server]
        for source, sink, gated in ((client, server, True), (server, client, False)):
            pump = threading.Thread(target=self._pump, args=(source, sink, gated), daemon=True)
            pump.start()
            self.threads.append(pump)

    def _pump(self, source: socket.socket, sink: socket.socket, gated: bool) -> None:
        """Copy ``source`` to ``sink``; gated, whole TLS records only (s_server would spin
        on a partial record and never read its stdin), and none while held."""
        buffered = b""
        seen_data = False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    sink.sendall(buffered)
                    sink.shutdown(socket.SHUT_WR)
                    return
                if not gated and not self.hold_handshake:
                    sink.sendall(data)
                    continue
                buffered += data
                while len(buffered) >= 5:
                    end = 5 + int.from_bytes(buffered[3:5], "big")
                    if len(buffered) < end:
                        break
                    if gated:
                        self.flowing.wait()
                    elif buffered[0] == 0x17:
                        seen_data = True
                    elif buffered[0] == 0x16 and seen_data:  # a renegotiation's records
                        time.sleep(self.hold_handshake)
                    sink.sendall(buffered[:end])
                    buffered = buffered[end:]
        except OSError:
            return

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def sserver(request: pytest.FixtureRequest, ca: trustme.CA, tmp_path: Path) -> Iterator[SServer]:
    server = SServer(ca, tmp_path, request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("sserver", "command"),
    [
        pytest.param("-tls1_3", b"K", id="tls13-keyupdate-requested"),
        pytest.param("-tls1_2", b"r", id="tls12-renegotiation"),
    ],
    indirect=["sserver"],
)
async def test_peer_rekeys_while_a_send_is_blocked(
    anyio_backend: str, ca: trustme.CA, sserver: SServer, command: bytes
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = ClientPort("DUPLEX", tls=TLSMode.OPTIONAL, ssl_context=context)
    relay = Relay(sserver.port)
    received = bytearray()
    errors: list[BaseException] = []
    sending_since: list[float | None] = [None]  # when the send in progress started
    sent = [0]
    stop = anyio.Event()
    chunk = b"u" * 65536
    try:
        sock = await Socket.connect("127.0.0.1", relay.port, client_port=port, tls=True,
                                    server_hostname="localhost")  # fmt: skip
        async with sock:
            # The server has the client's Finished (the relay holds nothing back yet):
            await anyio.to_thread.run_sync(sserver.wait_for, b"CIPHER is")
            relay.flowing.clear()  # from now on the server reads nothing

            async def upload() -> None:
                try:
                    while not stop.is_set():  # until a send blocks, and a while after
                        sending_since[0] = time.monotonic()
                        await sock.send(chunk)
                        sending_since[0] = None
                        sent[0] += len(chunk)
                    await sock.send(b"\n" + END + b"\n")
                except BaseException as exc:  # reported below, with the receiver's
                    errors.append(exc)
                    raise

            async def download() -> None:
                try:
                    while b"after-update" not in received:
                        data = await sock.recv()
                        if not data:
                            return
                        received.extend(data)
                except BaseException as exc:
                    errors.append(exc)
                    raise

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(upload)
                    tg.start_soon(download)
                    # until a send has been blocked for 0.5 s (polled: nothing signals it)
                    while (since := sending_since[0]) is None or time.monotonic() - since < 0.5:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(sserver.command, command)
                    await anyio.to_thread.run_sync(sserver.wait_for, b"SSL_do_handshake -> ")
                    await anyio.sleep(0.3)  # the request reached the receiving task
                    await anyio.to_thread.run_sync(sserver.command, b"after-update")
                    while b"after-update" not in received and not errors:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                    stop.set()
                    relay.flowing.set()  # the server reads again: the upload completes
            await anyio.to_thread.run_sync(sserver.wait_for, END)
    finally:
        relay.close()
    assert not errors
    assert b"after-update" in received
    output = sserver.output()
    assert output.count(b"u") >= sent[0] > 0  # the whole upload, decrypted by the server


@pytest.mark.parametrize("sserver", ["-tls1_2"], indirect=True)
async def test_peer_renegotiates_while_both_directions_run(
    anyio_backend: str, ca: trustme.CA, sserver: SServer
) -> None:
    """One task sends a line every millisecond, another receives, and the server
    renegotiates with its handshake records held back 0.3 s: the sender has to wait for
    the renegotiation while the receiver waits too. That used to fail the send with a
    false ``BusyError`` (two waiters on the socket)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = ClientPort("DUPLEX", tls=TLSMode.OPTIONAL, ssl_context=context)
    relay = Relay(sserver.port, hold_handshake=0.3)
    received = bytearray()
    try:
        sock = await Socket.connect("127.0.0.1", relay.port, client_port=port, tls=True,
                                    server_hostname="localhost")  # fmt: skip
        async with sock:
            await sock.send(b"warm-up\n")

            async def receive() -> None:
                while b"Z" * 2000 not in received:
                    data = await sock.recv()
                    assert data, "the server closed early"
                    received.extend(data)

            async def send() -> None:
                for number in range(1500):
                    await sock.send(b"line %d\n" % number)
                    await anyio.sleep(0.001)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive)
                    tg.start_soon(send)
                    await anyio.to_thread.run_sync(sserver.command, b"hello")
                    await anyio.sleep(0.2)
                    await anyio.to_thread.run_sync(sserver.command, b"r")
                    await anyio.to_thread.run_sync(sserver.wait_for, b"SSL_do_handshake -> ")
                    await anyio.sleep(1.0)
                    await anyio.to_thread.run_sync(sserver.command, b"Z" * 2000)
            await anyio.to_thread.run_sync(sserver.wait_for, b"line 1499\n")
    finally:
        relay.close()
    assert received.startswith(b"hello\n")
    output = sserver.output()
    assert output.index(b"line 0\n") < output.index(b"line 750\n") < output.index(b"line 1499\n")

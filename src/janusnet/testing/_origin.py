"""``TLSOrigin``: a trustme-backed origin server on loopback, in its own thread and loop.

What a connection gets depends on :class:`OriginMode`. In the modes that talk (``tls``,
``plain`` and ``starttls`` after the upgrade) the first bytes decide: a request that starts
with ``GET `` gets one HTTP/1.1 answer and the connection closes; anything else is echoed back
byte for byte until the client closes its side. A client that sends a prefix of ``GET `` (say
``b"GE"``) and waits is left waiting until it sends more: the server cannot tell yet.
"""

from __future__ import annotations

import asyncio
import enum
import re
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ._servers import (
    DEFAULT_CONNECTION_TIMEOUT,
    PATTERN_CHUNK,
    READ_SIZE,
    BackgroundServer,
    Connection,
    discard_until_eof,
    member_of,
    pause_reading,
    reset_transport,
)

if TYPE_CHECKING:
    import trustme

__all__ = ["OriginMode", "TLSOrigin", "new_ca"]

INSTALL_HINT: Final = "pip install 'janusnet[testing]'"


def new_ca() -> trustme.CA:
    """A fresh throw-away ``trustme.CA``.

    Raises:
        ModuleNotFoundError: trustme is missing, with the install command in the message.
    """
    try:
        import trustme  # lazily: only the testing extra needs it
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"janusnet.testing needs trustme for its certificates: {INSTALL_HINT}",
            name="trustme",
        ) from exc
    return trustme.CA()


DEFAULT_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")
"""Names in the default certificate: every way a test may spell loopback."""

MAX_HEAD: Final = 65536
"""Cap on an HTTP request head the origin reads; beyond it the connection is dropped."""

MAX_PATTERN_BYTES: Final = 1 << 30
"""Cap on ``GET /bytes/<n>``: 1 GiB is far beyond any test and bounds a typo."""

GARBAGE: Final = b"janusnet test origin: this is not TLS\r\n\x00\xff\xfe garbage \x15\x16\r\n"
"""What ``mode="garbage"`` writes on connect: not a TLS record (0x6a is no content type)."""

_GET_PREFIX: Final = b"GET "
_REQUEST_LINE: Final = re.compile(rb"GET (\S+) HTTP/1\.\d")
_BYTES_PATH: Final = re.compile(r"/bytes/(\d{1,10})")


class OriginMode(str, enum.Enum):
    """How :class:`TLSOrigin` treats each connection.

    Attributes:
        TLS: TLS handshake at once, then the GET-or-echo behaviour.
        PLAIN: No TLS at all; the GET-or-echo behaviour in plaintext.
        STARTTLS: Plaintext line protocol: the server sends ``220 ready``, waits for the line
            ``STARTTLS``, answers ``220 go ahead`` (plus ``inject``, in the same write), then
            upgrades the same connection to TLS and goes on with GET-or-echo. ``QUIT`` gets
            ``221 bye``; any other line gets ``500 expected STARTTLS``. Bytes the client
            pipelined after ``STARTTLS`` are discarded, as a correct server must.
        RESET_HANDSHAKE: Accept, read up to 5 bytes (a TLS record header), then reset (RST).
        GARBAGE: Write :data:`GARBAGE` (not TLS) on connect, then read until the client goes.
        STALL: Accept and never answer; read and drop bytes until the client goes.
    """

    TLS = "tls"
    PLAIN = "plain"
    STARTTLS = "starttls"
    RESET_HANDSHAKE = "reset_handshake"
    GARBAGE = "garbage"
    STALL = "stall"


def context_trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context (TLS >= 1.2, host names checked) whose only trusted
    certificate is ``ca``'s: given CA data, ``create_default_context`` loads no system
    store, so a test cannot pass on a certificate from the machine it runs on."""
    return ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cadata=ca.cert_pem.bytes().decode("ascii")
    )


class TLSOrigin(BackgroundServer):
    """A local origin server with a certificate from a throw-away trustme CA.

    Start and stop it synchronously (``with TLSOrigin() as origin:``); it serves on its own
    thread and loop, so any test (sync, asyncio or trio) can use it::

        with TLSOrigin() as origin:
            raw = socket.create_connection(origin.address)
            tls = origin.client_context().wrap_socket(raw, server_hostname="localhost")

    Requests and answers:

    * ``GET <path> HTTP/1.x`` → ``200 OK``, ``text/plain``, body
      ``hello from janusnet origin: GET <path>\\n``, then the connection closes.
    * ``GET /bytes/<n> HTTP/1.x`` → ``n`` bytes of :func:`byte_pattern` (``i % 256``).
    * Anything else is echoed until the client closes its side.

    ``mode`` and ``inject`` are read per connection, so they may be changed while running.

    Args:
        server_context: The server-side context to use. Default: a fresh one holding a
            certificate for ``hostnames`` issued by ``ca``.
        host: Loopback IP literal to listen on (``"127.0.0.1"`` or ``"::1"``).
        dual_stack: Also listen on the other family's loopback address (``::1`` for
            ``127.0.0.1``), on the same port, where the machine has it; see :attr:`hosts`.
        ca: The ``trustme.CA`` issuing the certificate; a new one by default. Pass your own to
            share trust between servers. Without it, a given ``server_context`` leaves
            :attr:`ca` and :meth:`client_context` unavailable.
        mode: An :class:`OriginMode` (or its string value).
        inject: ``starttls`` mode only: bytes sent in the same write as ``220 go ahead``.
        hostnames: Names and IPs in the issued certificate.
        connection_timeout: Overall seconds one connection may last before it is aborted.

    Raises:
        ValueError: ``host`` is not a loopback IP literal, or ``mode`` is unknown.

    Attributes:
        server_context: the server-side context in use (also what makes a
            :class:`ConnectProxy` an HTTPS proxy with this certificate).
        inject: the bytes ``starttls`` mode sends with ``220 go ahead`` (assignable).
        errors: unexpected handler exceptions and loop errors, as text (empty when the
            server itself behaved).
    """

    _kind = "origin"

    def __init__(
        self,
        server_context: ssl.SSLContext | None = None,
        *,
        host: str = "127.0.0.1",
        dual_stack: bool = False,
        ca: trustme.CA | None = None,
        mode: OriginMode | str = OriginMode.TLS,
        inject: bytes = b"",
        hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
    ) -> None:
        super().__init__(host, connection_timeout=connection_timeout, dual_stack=dual_stack)
        self.mode = mode
        self.inject = inject
        if server_context is None:
            if ca is None:
                ca = new_ca()
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(*hostnames).configure_cert(server_context)
        self._ca = ca
        self.server_context = server_context

    @property
    def mode(self) -> OriginMode:
        """The :class:`OriginMode` for connections accepted from now on (assignable)."""
        return self._mode

    @mode.setter
    def mode(self, value: OriginMode | str) -> None:
        self._mode = member_of(OriginMode, value, "mode")

    @property
    def ca(self) -> trustme.CA:
        """The trustme CA that issued the server certificate.

        Raises:
            RuntimeError: A ``server_context`` was given without its ``ca``.
        """
        if self._ca is None:
            raise RuntimeError("TLSOrigin was given a server_context without its ca")
        return self._ca

    def client_context(self) -> ssl.SSLContext:
        """A new verifying client context that trusts :attr:`ca` (and nothing else).

        Returns:
            A fresh ``ssl.SSLContext``; the caller may change it.

        Raises:
            RuntimeError: A ``server_context`` was given without its ``ca``.
        """
        return context_trusting(self.ca)

    # -- per connection -----------------------------------------------------------------------

    def _pause_on_accept(self) -> bool:
        return self._mode is OriginMode.TLS

    async def _handle(self, conn: Connection) -> None:
        mode = self._mode
        if mode is OriginMode.TLS:
            await conn.start_tls(self.server_context)
            await self._converse(conn)
        elif mode is OriginMode.PLAIN:
            await self._converse(conn)
        elif mode is OriginMode.STARTTLS:
            if await self._starttls_dialogue(conn):
                await conn.start_tls(self.server_context)
                await self._converse(conn)
        elif mode is OriginMode.RESET_HANDSHAKE:
            await conn.reader.read(5)
            reset_transport(conn.writer)
        elif mode is OriginMode.GARBAGE:
            conn.writer.write(GARBAGE)
            await conn.writer.drain()
            await discard_until_eof(conn.reader)
        else:  # STALL
            await discard_until_eof(conn.reader)

    async def _starttls_dialogue(self, conn: Connection) -> bool:
        """The plaintext part of ``starttls`` mode; True when the client asked to upgrade."""
        conn.writer.write(b"220 ready\r\n")
        await conn.writer.drain()
        while True:
            line = await conn.reader.readline()
            if not line:
                return False
            command = line.strip().upper()
            if command == b"STARTTLS":
                # Nothing may reach the old reader once the client is told to go ahead.
                pause_reading(conn.writer)
                conn.writer.write(b"220 go ahead\r\n" + self.inject)
                return True
            if command == b"QUIT":
                conn.writer.write(b"221 bye\r\n")
                await conn.writer.drain()
                return False
            conn.writer.write(b"500 expected STARTTLS\r\n")
            await conn.writer.drain()

    async def _converse(self, conn: Connection) -> None:
        """GET-or-echo, on whatever the connection is now (TLS or plaintext)."""
        reader, writer = conn.reader, conn.writer
        received = b""
        # Undecided while what we have could still become "GET ".
        while len(received) < len(_GET_PREFIX) and _GET_PREFIX.startswith(received):
            data = await reader.read(READ_SIZE)
            if not data:
                return
            received += data
        if received.startswith(_GET_PREFIX):
            await self._answer_get(conn, received)
            return
        while received:
            writer.write(received)
            await writer.drain()
            received = await reader.read(READ_SIZE)
        if writer.can_write_eof():
            writer.write_eof()

    async def _answer_get(self, conn: Connection, received: bytes) -> None:
        reader, writer = conn.reader, conn.writer
        while b"\r\n\r\n" not in received and b"\n\n" not in received:
            if len(received) > MAX_HEAD:
                raise ConnectionAbortedError("request head too large")
            data = await reader.read(READ_SIZE)
            if not data:
                return
            received += data
        request_line = received.split(b"\n", 1)[0].rstrip(b"\r")
        match = _REQUEST_LINE.fullmatch(request_line)
        if match is None:
            await _respond(writer, b"400 Bad Request", b"bad request line\n")
            return
        path = match.group(1).decode("ascii", "replace")
        size_match = _BYTES_PATH.fullmatch(path)
        if size_match is None:
            await _respond(writer, b"200 OK", f"hello from janusnet origin: GET {path}\n".encode())
            return
        size = int(size_match.group(1))
        if size > MAX_PATTERN_BYTES:
            await _respond(writer, b"400 Bad Request", b"too many bytes asked for\n")
            return
        writer.write(_head(b"200 OK", size, b"application/octet-stream"))
        remaining = size
        while remaining:
            chunk = PATTERN_CHUNK[: min(remaining, len(PATTERN_CHUNK))]
            writer.write(chunk)
            # drain() does not yield while the buffer is below its limit, and then the
            # loss of a client that went away is never processed: every later write
            # would be dropped with a logged warning. One yield per chunk lets it in.
            await asyncio.sleep(0)
            await writer.drain()
            remaining -= len(chunk)
        await writer.drain()


def _head(status: bytes, length: int, content_type: bytes = b"text/plain") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )


async def _respond(writer: asyncio.StreamWriter, status: bytes, body: bytes) -> None:
    writer.write(_head(status, len(body)) + body)
    await writer.drain()

"""``ConnectProxy``: an in-process HTTP CONNECT proxy that can misbehave on purpose.

Each connection carries one ``CONNECT`` request. The proxy reads the head (capped at 64 KiB),
parses ``CONNECT host:port HTTP/1.x`` (IPv6 in brackets), logs a :class:`ProxyLogRecord`, then
answers according to :attr:`ConnectProxy.behaviour`. The checks run in this order, each one
ending the exchange when it fails:

1. an unreadable head gets ``400`` (``431`` when over 64 KiB); a method other than
   ``CONNECT`` gets ``405``;
2. with ``auth`` set, missing or wrong Basic credentials get ``407`` with
   ``Proxy-Authenticate: Basic realm="janusnet"``;
3. a target that is not loopback (``127.0.0.0/8``, ``::1`` or ``localhost``) gets ``403``:
   a test proxy must never be an open relay;
4. the behaviour. Those that tunnel connect to the target first (``502`` if that fails),
   then relay both ways, half-close aware, until both sides are done.

Final non-2xx answers carry ``Connection: close``; the proxy then half-closes and waits (a
little) for the client to hang up, so the client reads the whole answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import hmac
import ipaddress
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from ._servers import (
    CLOSE_TIMEOUT,
    DEFAULT_CONNECTION_TIMEOUT,
    READ_SIZE,
    STREAM_LIMIT,
    BackgroundServer,
    Connection,
    discard_until_eof,
    member_of,
    reset_transport,
)

_log = logging.getLogger("janusnet.testing")

__all__ = ["ConnectProxy", "ProxyBehaviour", "ProxyLogRecord"]

REALM: Final = "janusnet"
"""The Basic realm in every ``407`` challenge."""

ENDLESS_HEAD_CAP: Final = 64 * 1024 * 1024
"""``endless_head`` stops after 64 MiB: far past any sane client cap, yet bounded."""

TARGET_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to reach a loopback target; refusal is immediate, so this only bounds a hang."""

SPLIT_HEAD_DELAY: Final = 0.001
"""Pause between the one-byte writes of ``split_head``, so they leave as separate segments."""

ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"

_REQUEST_LINE: Final = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d\.\d)")
_AUTHORITY: Final = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]/@]+):(\d{1,5})")


class ProxyBehaviour(str, enum.Enum):
    """What :class:`ConnectProxy` does once a request has passed its checks.

    Attributes:
        NORMAL: ``HTTP/1.1 200 Connection established``, then relay.
        EXTRA_BYTES: The 200 head and ``b"INJECTED"`` in the same write, then relay.
        SPLIT_HEAD: The 200 head one byte per write (TCP_NODELAY, 1 ms apart), then relay.
        AUTH_WITH_BODY: ``407`` with a ``Proxy-Authenticate`` challenge and a
            ``Content-Length`` body, whatever the credentials, then close.
        HTTP10_NO_REASON: ``HTTP/1.0 200`` (no reason phrase), then relay.
        OBS_FOLD: A 200 head with an obs-folded header ``X-Folded: a`` / `` b``, then relay.
        ENDLESS_HEAD: A 200 status line, then headers at full speed, never the empty line;
            stops when the client goes away, or after 64 MiB.
        CLOSE_MID_HEAD: ``HTTP/1.1 200 Conn``, then close (FIN).
        NEVER_ANSWER: Read the request, never answer; wait until the client goes.
        RESET: Read the request, then reset the connection (RST).
        STATUS_403: ``403 Forbidden`` with a small body, then close.
        STATUS_502: ``502 Bad Gateway`` with a small body, then close.
        MALFORMED: ``HTTP/1.1 2x0 OK`` and an empty line, then close.
        CHUNKED_2XX: 200 with ``Transfer-Encoding: chunked`` and ``Content-Length: 5``, then
            relay raw bytes: RFC 9110 §9.3.6 says a client ignores both on a 2xx to CONNECT.
    """

    NORMAL = "normal"
    EXTRA_BYTES = "extra_bytes"
    SPLIT_HEAD = "split_head"
    AUTH_WITH_BODY = "auth_with_body"
    HTTP10_NO_REASON = "http10_no_reason"
    OBS_FOLD = "obs_fold"
    ENDLESS_HEAD = "endless_head"
    CLOSE_MID_HEAD = "close_mid_head"
    NEVER_ANSWER = "never_answer"
    RESET = "reset"
    STATUS_403 = "status_403"
    STATUS_502 = "status_502"
    MALFORMED = "malformed"
    CHUNKED_2XX = "chunked_2xx"


_TUNNEL_HEADS: Final[dict[ProxyBehaviour, bytes]] = {
    ProxyBehaviour.NORMAL: ESTABLISHED,
    ProxyBehaviour.EXTRA_BYTES: ESTABLISHED + b"INJECTED",
    ProxyBehaviour.SPLIT_HEAD: ESTABLISHED,
    ProxyBehaviour.HTTP10_NO_REASON: b"HTTP/1.0 200\r\n\r\n",
    ProxyBehaviour.OBS_FOLD: (b"HTTP/1.1 200 Connection established\r\nX-Folded: a\r\n b\r\n\r\n"),
    ProxyBehaviour.CHUNKED_2XX: (
        b"HTTP/1.1 200 Connection established\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    ),
}
"""The behaviours that tunnel, and the exact bytes each one answers with."""


@dataclass(frozen=True)
class ProxyLogRecord:
    """One request as :class:`ConnectProxy` saw it, logged before any answer is sent.

    Attributes:
        request_line: The first line, decoded as Latin-1, without its line end.
        method: The method (``""`` when the request line did not parse).
        target: The request target, e.g. ``"127.0.0.1:443"`` or ``"[::1]:443"``.
        http_version: ``"1.1"``, ``"1.0"``… (``""`` when the request line did not parse).
        headers: ``(name, value)`` pairs in order, as received (values stripped).
        proxy_authorization: Whether a ``Proxy-Authorization`` header was present.
        status: The status code answered (``None`` when none was, or it was malformed).
        behaviour: The behaviour in force for this request.
    """

    request_line: str
    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    proxy_authorization: bool
    status: int | None
    behaviour: ProxyBehaviour

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def __repr__(self) -> str:
        # A failing assertion prints records: the credentials stay out of test reports
        # (``header("Proxy-Authorization")`` still gives the value to a test that checks it).
        headers = tuple(
            (name, "<hidden>" if name.lower() == "proxy-authorization" else value)
            for name, value in self.headers
        )
        shown = ", ".join(
            f"{f.name}={headers if f.name == 'headers' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"ProxyLogRecord({shown})"


class ConnectProxy(BackgroundServer):
    """A local HTTP CONNECT proxy, in its own thread and loop, that can misbehave on purpose.

    ``behaviour`` and ``auth`` are read per request, so one running proxy can serve several
    tests: assign ``proxy.behaviour = "extra_bytes"`` between them. ``log`` gets one
    :class:`ProxyLogRecord` per request, appended before the proxy answers.

    Args:
        host: Loopback IP literal to listen on (``"127.0.0.1"`` or ``"::1"``).
        dual_stack: Also listen on the other family's loopback address (``::1`` for
            ``127.0.0.1``), on the same port, where the machine has it; see :attr:`hosts`.
        auth: ``(user, password)`` to require as Basic credentials, or ``None``.
        behaviour: A :class:`ProxyBehaviour` (or its string value).
        ssl_context: A server-side context to make this an HTTPS proxy: every connection
            starts with a TLS handshake and the CONNECT exchange (and the tunnel) run inside
            it, as for an ``https://`` proxy URL. ``TLSOrigin(...).server_context`` will do.
        connection_timeout: Overall seconds one connection (tunnel included) may last.

    Raises:
        ValueError: ``host`` is not a loopback IP literal, or ``behaviour`` is unknown.
        TypeError: ``auth`` is not ``None`` or a pair of ``str``.

    Attributes:
        log: one :class:`ProxyLogRecord` per request, in order (emptied by
            :meth:`reset_history`).
        errors: unexpected handler exceptions and loop errors, as text.
    """

    _kind = "proxy"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        dual_stack: bool = False,
        auth: tuple[str, str] | None = None,
        behaviour: ProxyBehaviour | str = ProxyBehaviour.NORMAL,
        ssl_context: ssl.SSLContext | None = None,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
    ) -> None:
        super().__init__(host, connection_timeout=connection_timeout, dual_stack=dual_stack)
        self.ssl_context = ssl_context
        self.auth = auth
        self.behaviour = behaviour
        self.log: list[ProxyLogRecord] = []

    def __repr__(self) -> str:  # no credentials in reprs, even in test tooling
        return f"<ConnectProxy {self.url if self._port else self.host} {self._behaviour.value}>"

    @property
    def behaviour(self) -> ProxyBehaviour:
        """The :class:`ProxyBehaviour` for requests read from now on (assignable)."""
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: ProxyBehaviour | str) -> None:
        self._behaviour = member_of(ProxyBehaviour, value, "behaviour")

    @property
    def auth(self) -> tuple[str, str] | None:
        """The ``(user, password)`` required as Basic credentials, or ``None``
        (assignable; read per request).

        Raises:
            TypeError: on assignment, a value that is not ``None`` or two ``str``.
        """
        return self._auth

    @auth.setter
    def auth(self, value: tuple[str, str] | None) -> None:
        if value is not None:
            if (
                isinstance(value, (str, bytes))
                or not isinstance(value, (tuple, list))
                or len(value) != 2
                or not all(isinstance(part, str) for part in value)
            ):
                # The value stays out of the message: part of it is a password.
                raise TypeError(
                    'auth must be None or a (user, password) pair of str, such as ("alice", '
                    f'"s3cret"); got a {type(value).__name__}'
                )
            value = (value[0], value[1])
        self._auth = value

    def reset_history(self) -> None:
        """Start afresh, as before a new test: empty ``errors`` and ``log``, zero ``connections``.

        Connections the OS had already accepted are taken in first (they count for the
        test that opened them). A request that comes later on a connection accepted
        before this call is not served (the connection is closed), so what a test gave
        up on cannot open a tunnel in the next one; nor is it added to ``log``, and a
        failure there is logged instead of joining ``errors``. ``behaviour`` and ``auth``
        are left alone.

        Raises:
            RuntimeError: The proxy's loop did not take the reset in time.
        """
        super().reset_history()

    def _clear_history(self) -> None:
        super()._clear_history()
        self.log.clear()

    @property
    def scheme(self) -> str:
        """``"https"`` with ``ssl_context`` (TLS to the proxy itself), else ``"http"``."""
        return "http" if self.ssl_context is None else "https"

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with ``ssl_context``; IPv6 in brackets)."""
        return f"{self.scheme}://{self.authority}"

    def url_with_auth(self, user: str, password: str) -> str:
        """``http://user:password@host:port`` with both parts percent-encoded (RFC 3986).

        Args:
            user: The user name; ``:``, ``@`` and the like are encoded.
            password: The password; likewise.

        Returns:
            The proxy URL with userinfo.
        """
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"{self.scheme}://{userinfo}@{self.authority}"

    # -- per connection -----------------------------------------------------------------------

    def _pause_on_accept(self) -> bool:
        return self.ssl_context is not None

    async def _handle(self, conn: Connection) -> None:
        if self.ssl_context is not None:
            await conn.start_tls(self.ssl_context)
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _refuse(conn, 431, "Request Header Fields Too Large")
            return
        except asyncio.IncompleteReadError:
            return  # the client went away before finishing its request
        if self._stale(conn):
            return
        behaviour = self._behaviour
        request = _parse_head(head)
        if request is None:
            self._record(conn, _unparsed(head), 400, behaviour)
            await _refuse(conn, 400, "Bad Request")
            return
        record_base, target = request
        if record_base.method != "CONNECT":
            self._record(conn, record_base, 405, behaviour)
            await _refuse(conn, 405, "Method Not Allowed", b"Allow: CONNECT\r\n")
            return
        if self.auth is not None and not _authorized(record_base.headers, self.auth):
            self._record(conn, record_base, 407, behaviour)
            await _refuse(conn, 407, "Proxy Authentication Required", _challenge())
            return
        address = await _loopback_address(target)
        if address is None:
            self._record(conn, record_base, 403, behaviour)
            await _refuse(conn, 403, "Forbidden", body=b"janusnet test proxy: loopback only\n")
            return
        await self._behave(conn, behaviour, record_base, address)

    async def _behave(
        self,
        conn: Connection,
        behaviour: ProxyBehaviour,
        record: ProxyLogRecord,
        address: tuple[tuple[str, ...], int],
    ) -> None:
        reader, writer = conn.reader, conn.writer
        tunnel_head = _TUNNEL_HEADS.get(behaviour)
        if tunnel_head is not None:
            if self._stale(conn):  # (the target's name took a lookup, the reset came)
                return
            try:
                upstream_reader, upstream_writer = await _open_upstream(*address)
            except (OSError, asyncio.TimeoutError):
                self._record(conn, record, 502, behaviour)
                await _refuse(conn, 502, "Bad Gateway", body=b"janusnet test proxy: no target\n")
                return
            conn.adopt(upstream_writer)
            self._record(conn, record, 200, behaviour)
            if behaviour is ProxyBehaviour.SPLIT_HEAD:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(tunnel_head)):
                    writer.write(tunnel_head[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(SPLIT_HEAD_DELAY)
            else:
                writer.write(tunnel_head)
            await relay(reader, writer, upstream_reader, upstream_writer)
        elif behaviour is ProxyBehaviour.AUTH_WITH_BODY:
            self._record(conn, record, 407, behaviour)
            body = b"<html><body>janusnet test proxy: authentication required</body></html>\n"
            await _refuse(conn, 407, "Proxy Authentication Required", _challenge(), body)
        elif behaviour is ProxyBehaviour.ENDLESS_HEAD:
            self._record(conn, record, 200, behaviour)
            await _endless_head(reader, writer)
        elif behaviour is ProxyBehaviour.CLOSE_MID_HEAD:
            self._record(conn, record, 200, behaviour)
            writer.write(b"HTTP/1.1 200 Conn")
            await _hang_up(reader, writer)
        elif behaviour is ProxyBehaviour.NEVER_ANSWER:
            self._record(conn, record, None, behaviour)
            await discard_until_eof(reader)
        elif behaviour is ProxyBehaviour.RESET:
            self._record(conn, record, None, behaviour)
            reset_transport(writer)
        elif behaviour is ProxyBehaviour.STATUS_403:
            self._record(conn, record, 403, behaviour)
            await _refuse(conn, 403, "Forbidden", body=b"janusnet test proxy: forbidden\n")
        elif behaviour is ProxyBehaviour.STATUS_502:
            self._record(conn, record, 502, behaviour)
            await _refuse(conn, 502, "Bad Gateway", body=b"janusnet test proxy: bad gateway\n")
        else:  # MALFORMED
            self._record(conn, record, None, behaviour)
            writer.write(b"HTTP/1.1 2x0 OK\r\n\r\n")
            await _hang_up(reader, writer)

    def _stale(self, conn: Connection) -> bool:
        """Whether ``conn`` was accepted before the last :meth:`reset_history`: then its
        request is not served, so what an earlier test gave up on cannot open a tunnel (a
        connection to the origin) in the middle of the next test."""
        if conn.generation == self._generation:
            return False
        _log.debug("janusnet test proxy: a request on an earlier test's connection")
        return True

    def _record(
        self,
        conn: Connection,
        base: ProxyLogRecord,
        status: int | None,
        behaviour: ProxyBehaviour,
    ) -> None:
        if conn.generation != self._generation:  # an earlier test's connection
            _log.debug("janusnet test proxy: %s on an earlier test's connection", base)
            return
        self.log.append(
            ProxyLogRecord(
                request_line=base.request_line,
                method=base.method,
                target=base.target,
                http_version=base.http_version,
                headers=base.headers,
                proxy_authorization=base.proxy_authorization,
                status=status,
                behaviour=behaviour,
            )
        )


# -- relaying ---------------------------------------------------------------------------------


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(READ_SIZE):
        sink.write(data)
        await sink.drain()
    if sink.transport.is_closing():
        return
    if sink.can_write_eof():
        sink.write_eof()  # pass the half-close on
    else:
        sink.close()  # TLS cannot half-close: end that connection, as its peer must learn


async def relay(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until both sides have closed; EOF on one side half-closes the other.

    Raises:
        OSError: One side failed (reset…); the caller aborts both.
    """
    pumps = [
        asyncio.ensure_future(_pump(a_reader, b_writer)),
        asyncio.ensure_future(_pump(b_reader, a_writer)),
    ]
    try:
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        for pump in done:
            pump.result()  # re-raise the failure, if that is why we woke up
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


# -- answers ----------------------------------------------------------------------------------


def _challenge() -> bytes:
    return f'Proxy-Authenticate: Basic realm="{REALM}"\r\n'.encode()


async def _refuse(
    conn: Connection, status: int, reason: str, extra: bytes = b"", body: bytes = b""
) -> None:
    """Answer with a final status, ``Connection: close``, then hang up politely."""
    conn.writer.write(
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + extra
        + b"Content-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )
    await _hang_up(conn.reader, conn.writer)


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Flush, send FIN, then give the client a moment to close first.

    Closing with unread bytes in the receive buffer would send a RST, and a RST can make the
    client lose the answer it has not read yet.
    """
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    try:
        await asyncio.wait_for(discard_until_eof(reader), CLOSE_TIMEOUT)
    except asyncio.TimeoutError:
        pass


async def _endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = b"X-Endless: " + b"a" * 1000 + b"\r\n"
    chunk = line * (READ_SIZE // len(line))
    client_gone = asyncio.ensure_future(discard_until_eof(reader))
    try:
        writer.write(b"HTTP/1.1 200 Connection established\r\n")
        sent = 0
        while sent < ENDLESS_HEAD_CAP and not client_gone.done():
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
    finally:
        client_gone.cancel()
        await asyncio.gather(client_gone, return_exceptions=True)


# -- parsing ----------------------------------------------------------------------------------


def _parse_head(head: bytes) -> tuple[ProxyLogRecord, str] | None:
    """Parse a request head ending in an empty line; ``None`` when it is not HTTP/1.x."""
    lines = head.decode("latin-1").split("\r\n")[:-2]
    match = _REQUEST_LINE.fullmatch(lines[0]) if lines else None
    if match is None:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.append((name, value.strip(" \t")))
    method, target, version = match.groups()
    record = ProxyLogRecord(
        request_line=lines[0],
        method=method,
        target=target,
        http_version=version,
        headers=tuple(headers),
        proxy_authorization=any(k.lower() == "proxy-authorization" for k, _ in headers),
        status=None,
        behaviour=ProxyBehaviour.NORMAL,
    )
    return record, target


def _unparsed(head: bytes) -> ProxyLogRecord:
    first = head.decode("latin-1").split("\r\n", 1)[0]
    return ProxyLogRecord(
        request_line=first,
        method="",
        target="",
        http_version="",
        headers=(),
        proxy_authorization=b"\r\nproxy-authorization:" in head.lower(),
        status=None,
        behaviour=ProxyBehaviour.NORMAL,
    )


def _authorized(headers: tuple[tuple[str, str], ...], auth: tuple[str, str]) -> bool:
    for name, value in headers:
        if name.lower() != "proxy-authorization":
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            continue
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        expected = f"{auth[0]}:{auth[1]}"
        if hmac.compare_digest(decoded.encode(), expected.encode()):
            return True
    return False


async def _loopback_address(target: str) -> tuple[tuple[str, ...], int] | None:
    """The loopback IPs to try, in order, and the port for ``target``; ``None`` to refuse.

    Only IP literals on loopback and the name ``localhost`` are accepted; ``localhost`` is
    resolved and every address it yields must itself be loopback. All of them are tried, as a
    client would: ``localhost`` may resolve to ``::1`` first while the target listens on
    ``127.0.0.1`` only.
    """
    match = _AUTHORITY.fullmatch(target)
    if match is None:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        return None
    if host.lower() == "localhost":
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
            return None
        return addresses, port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_loopback or (":" in host) != bool(match.group(1)):
        return None
    return (str(address),), port


async def _open_upstream(
    hosts: tuple[str, ...], port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first of ``hosts`` that accepts, each within the target timeout.

    Raises:
        OSError: No address accepted (the last failure).
        asyncio.TimeoutError: The last address did not answer in time.
    """
    for host in hosts[:-1]:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=STREAM_LIMIT), TARGET_CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError):
            continue
    return await asyncio.wait_for(
        asyncio.open_connection(hosts[-1], port, limit=STREAM_LIMIT), TARGET_CONNECT_TIMEOUT
    )

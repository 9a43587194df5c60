"""The :class:`Socket`: the only module that touches anyio streams and ``ssl`` errors.

Theory of operation
-------------------
A socket wraps one anyio byte stream (TCP, or TLS over TCP once ``ssl_on()`` ran, or TLS
over TLS through an ``https://`` proxy). Received bytes flow one way: from the stream into
the socket's :class:`~janusnet._scan.Scanner` buffer, from which ``recv``,
``recv_exactly`` and ``recv_parsed`` take them. A receive only awaits the stream when the
buffer cannot answer it, so reading many small records costs no event-loop round trips.

``ssl_on()`` refuses to start while any byte is buffered (-112): bytes that came over the
plaintext hop must never be read as if they had come over TLS (CVE-2011-0411,
CVE-2021-22947). It also looks, without reading, at what the transport has received but
not handed over yet, so injected bytes that arrived in a later segment are refused the
same way instead of being fed to the TLS engine.

The receive window (Janus ``RECVLIM``) is enforced at the buffer's door: bytes beyond the
window are held back, so the scanner sees "end of stream" exactly at the window's edge and
every receive (parse tokens included) counts against it.

Cancellation: every coroutine here may be cancelled. A cancelled receive loses nothing
(bytes already read stay buffered); a cancelled ``connect`` or ``ssl_on`` closes the
socket, because a half-done handshake cannot be resumed.
"""

from __future__ import annotations

import codecs
import enum
import logging
import socket as _stdsocket
import ssl
import warnings
from collections.abc import Callable, Iterable  # at run time: get_type_hints() needs them
from types import TracebackType
from typing import Final, TypeVar

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSStream

from ._connect import ProxyReply, wire_name
from ._exceptions import (
    BusyError,
    EncodeError,
    HandshakeError,
    IncompleteReadError,
    JanusnetError,
    NotSSLPortError,
    PendingDataError,
    SocketClosedError,
    SocketResetError,
    SSLOnOtherError,
    UsageError,
    check_server_hostname,
    check_size,
    check_ssl_context,
    check_timeout,
    show_address,
    withhold_from_error,
)
from ._ports import DEFAULT_PORT, ClientPort, TLSMode, check_encoding, host_form_problem
from ._scan import Parsed, Scanner, TokenSet, _new_parsed, as_token_set
from ._tls import TLSInfo, TLSSnapshot, default_context_for
from ._transport import (
    QUICKACK,
    TLS_RECORD,
    TRANSPORT_READ,
    FdStream,
    FdTLSStream,
    WideReceive,
    allowed_addresses,
    connect_tcp,
    kept_error,
    kernel_closed,
    kernel_pending,
    linger,
    raise_handshake_error,
    raw_socket_of,
    ssl_object_of,
    start_tls,
    tcp_options,
    tls_name_for,
)

__all__ = ["Socket", "SocketState"]

logger = logging.getLogger("janusnet")

#: How much ``recv()`` returns at most by default: what asyncio and trio read per system
#: call for a socket, large enough that bulk transfers are not syscall-bound.
RECEIVE_SIZE: Final = 65536
#: Only a receive that returned (nearly) a full TLS record (16 KiB of plaintext at most)
#: suggests more records are waiting; small messages skip the extra read attempt.
TLS_FULL_RECORD: Final = TLS_RECORD - 256
#: Default deadline for TCP connect (+ TLS when the port asks for it), as httpx's 5 s is
#: too short for a corporate proxy's first DNS lookup and curl's 300 s too long.
DEFAULT_CONNECT_TIMEOUT: Final = 30.0
#: Default deadline for ``ssl_on()``'s handshake: asyncio's ``start_tls`` default.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 60.0

#: How ``Socket.connect``'s deadline message names the handshake phase (compat reads it
#: to answer -103 rather than -102).
TLS_PHASE: Final = "TLS handshake"
#: The buffer of every socket that has not received a byte yet, shared and never written
#: to: ``_own_scanner()`` swaps in a socket's own before anything could change it. A
#: service may hold thousands of idle tunnels (benchmarks/tunnel.py measures them).
_NO_BYTES_YET: Final = Scanner()
#: _ready_key() for ``tokens=None``: the key is None itself.
_NO_KEY: Final = object()


def _ready_key(tokens: TokenSet | Iterable[bytes] | str) -> object:
    """What later ``recv_parsed`` arguments must equal to get records cut for these
    (``None``: no fast path for them).

    A list is copied (the caller may change it); one holding anything but ``bytes`` (a
    ``bytearray`` could change in place), and any other iterable or subclass, get none.
    """
    if type(tokens) is list or type(tokens) is tuple:
        if not all(type(token) is bytes for token in tokens):
            return None
        return list(tokens) if type(tokens) is list else tokens
    if type(tokens) is str or type(tokens) is TokenSet:
        return tokens
    return None


class SocketState(enum.Enum):
    """Where a connection stands (Janus ``Info('STAT')``)."""

    CONNECTED = "CONN"
    FIN_RECEIVED = "FINR"
    FIN_SENT = "FINS"
    FIN_BOTH = "FINBOTH"
    RESET = "RESET"


def _original(exc: BaseException) -> BaseException:
    """The OS or TLS error under anyio's bare ``BrokenResourceError`` wrapper, else
    ``exc``: what a ``SocketResetError``'s ``__cause__`` is."""
    cause = exc.__cause__
    if isinstance(exc, anyio.BrokenResourceError) and not exc.args and cause is not None:
        return cause
    return exc


#: The name each session :attr:`Socket.tls_session` handed out was verified for, and the
#: certificate then verified, by session ID. A resumed handshake checks no certificate
#: (OpenSSL trusts the session), so a session may resume only for the name its
#: certificate was checked against, and only with that certificate (a server picks its
#: session IDs: another session could carry the same one).
_SESSION_NAMES: dict[bytes, tuple[str | None, bytes | None]] = {}
_SESSION_NAMES_MAX: Final = 4096


def _check_session(
    session: ssl.SSLSession,
    context: ssl.SSLContext,
    stream: ByteStream,
    tls_name: str | None,
) -> None:
    """Refuse, before any I/O, a session ``ssl_on`` could not offer.

    Raises:
        UsageError: it belongs to another context, the stream is not a direct socket
            (anyio's TLS layer, inside an ``https://`` proxy's TLS, cannot resume one),
            or (host names checked) it was not verified for ``tls_name`` by janusnet.
    """
    if context.check_hostname:
        known = _SESSION_NAMES.get(session.id)
        if known is None and not session.id:
            raise UsageError(
                "ssl_on(session=...): the session is not resumable yet (no ticket): with "
                "TLS 1.3 the server sends its tickets after the handshake; read a reply on "
                "that connection first, then take its tls_session again"
            )
        if known is None:
            raise UsageError(
                "ssl_on(session=...): resume a session from Socket.tls_session (a resumed "
                "handshake checks no certificate, so janusnet must know the name the "
                "session's certificate was verified for)"
            )
        verified = known[0]
        if str(verified).lower() != str(tls_name).lower():  # (names match in any case)
            raise UsageError(
                f"ssl_on(session=...): the session was verified for {verified!r}, not "
                f"{tls_name!r}: a resumed handshake checks no certificate; pass "
                f"server_hostname={verified!r} (for FTPS: the control connection's name)"
            )
    if not isinstance(stream, FdStream):
        raise UsageError(
            "ssl_on(session=...): resuming a TLS session is supported on a direct "
            "connection or a tunnel through an http:// proxy, not inside another TLS layer"
        )
    try:
        context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False, session=session)
    except ValueError as exc:
        raise UsageError(
            f"ssl_on(session=...): {exc} (a session resumes only with the context of the "
            "connection it came from)"
        ) from None


def _why(exc: BaseException) -> str:
    """What broke, for a message: the OS or TLS error under anyio's bare wrapper."""
    if isinstance(exc, anyio.EndOfStream):  # anyio's TLS stream, writing after a ragged end
        return "the peer ended the TLS session (without close_notify)"
    original = _original(exc)
    if isinstance(original, ssl.SSLError) and original.reason == "WRONG_VERSION_NUMBER":
        # (an FTPS server's "500 OOPS" after a failed data connection, say)
        return f"{original!r}: plain text came where TLS records were expected"
    return repr(original)


def _is_peer_reset(exc: BaseException) -> bool:
    """``exc`` is, or was caused by, the peer resetting the connection (``ECONNRESET``).

    Not ``EPIPE``: Linux says that when the peer's FIN came before its reset, and then the
    end of stream a read meets is the peer's real, clean end (see :func:`_is_broken_pipe`).
    """
    return _caused_by(exc, ConnectionResetError)


def _is_broken_pipe(exc: BaseException) -> bool:
    """``exc`` is, or was caused by, ``EPIPE``: on a socket whose sending side we did not
    shut down, the peer closed (its FIN), then reset what we sent after."""
    return _caused_by(exc, BrokenPipeError)


_E = TypeVar("_E", bound=BaseException)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return _cause_of(exc, kind) is not None


def _cause_of(
    exc: BaseException, kind: type[_E], but: tuple[type[BaseException], ...] = ()
) -> _E | None:
    """``exc``, or the first error of ``kind`` (and not of ``but``) it was caused by."""
    seen: BaseException | None = exc
    for _ in range(8):  # anyio and janusnet wrap it a level or two deep
        if seen is None:
            return None
        if isinstance(seen, kind) and not isinstance(seen, but):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _client_port(client_port: object) -> ClientPort:
    """``client_port``, or the default port for ``None``.

    Raises:
        UsageError: not a :class:`ClientPort` (a port's name, say).
    """
    if client_port is None:
        return DEFAULT_PORT
    if not isinstance(client_port, ClientPort):
        raise UsageError(f"client_port must be a ClientPort or None, not {client_port!r}")
    return client_port


def _validate_target(host: str, port: int) -> None:
    if not isinstance(host, str) or not host:
        raise UsageError("host must be a non-empty str")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in host):
        raise UsageError(f"host {host!r} contains a control character or a space")
    problem = host_form_problem(host)
    if problem is not None:
        raise UsageError(f"host {host!r}: {problem}")
    if not host.isascii():
        wire_name(host.strip("[]"))
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"port must be an int in 1-65535, not {port!r}")


class Socket:
    """An async client socket with Janus semantics: send, parse, upgrade in place.

    Create one with :meth:`connect`, or wrap an existing anyio byte stream with
    ``Socket(stream, client_port=...)``. Use it as an async context manager, or call
    :meth:`aclose`.

    Args:
        stream: a connected anyio byte stream (the socket takes ownership).
        client_port: the port definition; defaults to ``ClientPort()``.
        server_hostname: the name ``ssl_on()`` verifies by default.

    Attributes:
        proxy_reply: on a socket a :class:`ProxyTunnel` opened, the proxy's reply to
            ``CONNECT`` (``ProxyReply``: status, reason, HTTP version, headers); else
            ``None``.

    Raises:
        UsageError: ``stream`` is not an anyio byte stream, or ``client_port`` or
            ``server_hostname`` is of the wrong type (nothing is taken or counted).
        PortLimitError: the client port already has ``max_sockets`` open sockets.
    """

    # Slots: a service may hold thousands of idle tunnels; a __dict__ per socket is
    # measurable there (benchmarks/tunnel.py, "resident memory per idle tunnel").
    __slots__ = (
        "__weakref__",
        "_ack_due",
        "_acks",
        "_allot",
        "_close_notify",
        "_encoding",
        "_eof",
        "_fin_sent",
        "_held",
        "_line_end",
        "_port",
        "_raw_socket",
        "_ready",
        "_ready_args",
        "_ready_key",
        "_ready_limit",
        "_ready_type",
        "_receive_error",
        "_receiving",
        "_reset",
        "_scanner",
        "_secrets",
        "_send_reset",
        "_sending",
        "_server_hostname",
        "_ssl_object",
        "_stream",
        "_target",
        "_tls",
        "_tokens",
        "proxy_reply",
    )

    def __init__(
        self,
        stream: ByteStream,
        *,
        client_port: ClientPort | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if not isinstance(stream, ByteStream):
            raise UsageError(f"stream must be an anyio byte stream, not {stream!r}")
        check_server_hostname(server_hostname)
        port = _client_port(client_port)
        port._acquire()
        self._port = port
        self._stream: ByteStream | None = stream
        # Shared and empty until the first byte arrives: an idle tunnel has no buffer.
        self._scanner = _NO_BYTES_YET
        self._held = b""  # bytes beyond the receive window (rare: kept immutable)
        self._allot: int | None = None
        self._eof = False
        self._fin_sent = False
        self._reset = False
        self._receiving = False
        # A send happened since the last read: ask for prompt ACKs before the next read
        # (see _ack_promptly). janusnet's own streams do it themselves, and only when the
        # read has to wait (no system call when the answer is already there).
        self._ack_due = False
        self._acks = not isinstance(stream, (FdStream, FdTLSStream))
        # Set while a send or the TLS handshake writes: nothing may interleave with them
        # (a send during ssl_on() would go out in clear; in TLS-in-TLS a refused write
        # would already have been encrypted).
        self._sending = False
        # Described from _ssl_object when first read: decoding the peer certificate
        # (getpeercert + date parsing) is ~8% of a proxied tunnel's client CPU, and most
        # callers never look at it. Until then, a TLSSnapshot in case the session is gone
        # by the time someone asks (closed, or a ragged EOF).
        self._tls: TLSInfo | TLSSnapshot | None = None
        # The TLS engine once ssl_on() succeeded: _fill drains it (see _drain_tls), and
        # ``tls`` is described from it (with _server_hostname, then the verified name).
        self._ssl_object: ssl.SSLObject | ssl.SSLSocket | None = None
        # What broke receiving (a reset, or the TLS layer's error: a bad record, met by a
        # read or by _drain_tls after bytes it returned): every later read raises it (the
        # OS, or OpenSSL, would answer a later read with a mere EOF, and anyio's TLSStream
        # would pass that on as the end of the stream).
        self._receive_error: BaseException | None = None
        # A send met the peer's reset (ECONNRESET): the OS reports it once, and the next
        # read of the socket then says end of stream; that end is the reset (see _read).
        self._send_reset: BaseException | None = None
        # Looked up once: anyio builds its attribute mapping on every extra() call.
        self._raw_socket = raw_socket_of(stream)
        self._server_hostname = server_hostname
        self._line_end: bytes = port.line_end
        self._tokens: TokenSet = port.tokens
        # Records cut ahead for the default tokens and limit (see recv_parsed).
        self._ready: Iterable[Parsed] = ()
        # Records cut ahead for the arguments the last call passed (tokens of type
        # _ready_type equal to _ready_key, max_bytes equal to _ready_limit).
        self._ready_args: Iterable[Parsed] = ()
        self._ready_type: type = type(None)
        self._ready_key: object = None
        self._ready_limit: int | None = None
        self._encoding: str = port.encoding
        #: The proxy's reply to CONNECT when a :class:`~janusnet.ProxyTunnel` made this
        #: socket, else ``None``.
        self.proxy_reply: ProxyReply | None = None
        self._target: str | None = None  # the CONNECT target, for repr
        self._close_notify = False  # the end of stream read was TLS's close_notify
        # A tunnel's credential forms: withheld from handshake errors, which may quote
        # the proxy's plain-text answer to our ClientHello.
        self._secrets: tuple[str, ...] = ()

    def __del__(
        self,
        _warn: Callable[..., None] = warnings.warn,
        _direct: tuple[type[FdStream], type[FdTLSStream]] = (FdStream, FdTLSStream),
        _layers: tuple[type[TLSStream], type[WideReceive]] = (TLSStream, WideReceive),
    ) -> None:
        # Dropped without aclose(): the client port would count this socket as open for
        # ever (max_sockets). janusnet's own streams are closed here (no task can be
        # waiting on a socket nobody holds), also under the TLS inside an https://
        # proxy's; others are left to their own finalizers. (The defaults are bound at
        # definition, as the socket module does: at interpreter shutdown module globals
        # may already be gone.)
        stream = getattr(self, "_stream", None)
        if stream is None:
            return
        self._stream = None
        self._port._release()
        if isinstance(stream, _layers[0]):  # TLS in TLS: TLSStream(WideReceive(FdTLSStream))
            stream = stream.transport_stream
            if isinstance(stream, _layers[1]):
                stream = stream.inner
        if isinstance(stream, _direct):
            stream._close_now(notify=False)  # nobody can be waiting on it
        _warn(
            f"unclosed janusnet.Socket on client port {self._port.name!r}",
            ResourceWarning,
            source=self,
            stacklevel=2,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_port: ClientPort | None = None,
        tls: bool | None = None,
        timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
    ) -> Socket:
        """Open a TCP connection (happy eyeballs over IPv4 and IPv6).

        When the port has IP access rules and ``host`` is a name, janusnet resolves it,
        refuses it if any address is denied, and races the allowed addresses.

        Args:
            host: a host name, an IPv4 address or an IPv6 address.
            port: the TCP port.
            client_port: the port definition (TLS mode, line end, tokens, rules...).
            tls: ``True`` to handshake at once on an ``OPTIONAL`` port; ``None`` follows
                the port (``ALWAYS`` handshakes, the others do not).
            timeout: one deadline over TCP connect and the TLS handshake, in seconds;
                ``None`` for none.
            server_hostname: the name to verify; defaults to ``host``.
            ssl_context: the context for an immediate handshake (default: the port's).
            local_address: the IP address to connect from (``"0.0.0.0"`` or ``"::"``
                for any of a family; httpx's ``local_address``, curl's
                ``--interface``); only the host's addresses of that family are tried.
            socket_options: ``(level, option, value)`` tuples set on the socket before
                it connects, after janusnet's own ``TCP_NODELAY`` (httpcore's
                ``socket_options``), e.g. ``[(socket.SOL_SOCKET, socket.SO_KEEPALIVE,
                1)]`` for Janus ``TcpKeepAlive``.

        Returns:
            The connected socket.

        Raises:
            UsageError: bad host or port, ``tls=False`` on an ``ALWAYS`` port, or an
                argument of the wrong type (``client_port``, ``ssl_context``,
                ``server_hostname``, ``timeout``, ``local_address`` not an IP address,
                ``socket_options`` not ``(int, int, int | bytes)`` tuples).
            NotSSLPortError: ``tls=True`` on a ``NEVER`` port.
            AccessDeniedError: the port's rules forbid the target (nothing was sent).
            PortLimitError: the port's ``max_sockets`` is reached.
            ConnectError: the TCP connection failed (``__cause__`` says why), the host
                has no address of ``local_address``'s family, or the OS refused the
                local address or a socket option.
            HandshakeError: the immediate TLS handshake failed (-111).
            SSLOnOtherError: the connection broke during that handshake (-149), or TLS
                is wanted and the host name (or ``server_hostname``) is not one TLS can
                verify (nothing was sent).
            TimeoutError: ``timeout`` expired; nothing is left open.

        Cancellation closes whatever was opened and propagates.
        """
        client_port = _client_port(client_port)
        _validate_target(host, port)
        check_timeout(timeout)
        check_ssl_context(ssl_context)
        check_server_hostname(server_hostname)
        options = tcp_options(local_address, socket_options)
        if tls and client_port.tls is TLSMode.NEVER:
            raise NotSSLPortError(f"client port {client_port.name!r} does not allow TLS")
        if tls is False and client_port.tls is TLSMode.ALWAYS:
            raise UsageError(f"client port {client_port.name!r} always uses TLS")
        want_tls = client_port.tls is TLSMode.ALWAYS or bool(tls)
        if want_tls:
            tls_name_for(server_hostname or host)  # a name TLS cannot verify: before any packet
        client_port._check_target(host, port, resolves=True)
        client_port._check_capacity()  # -109 before any packet; __init__ still reserves
        phase = "TCP connect"
        try:
            with anyio.fail_after(timeout):
                targets = await allowed_addresses(client_port, host, port)
                stream = await connect_tcp(targets, host, port, options)
                try:
                    sock = cls(
                        stream, client_port=client_port, server_hostname=server_hostname or host
                    )
                except BaseException:
                    await anyio.aclose_forcefully(stream)
                    raise
                logger.debug("connected to %s:%s on port %s", host, port, client_port.name)
                if want_tls:
                    phase = TLS_PHASE
                    try:
                        await sock.ssl_on(ssl_context=ssl_context, timeout=None)  # ours governs
                    except PendingDataError as exc:
                        # Plaintext before our ClientHello: a server that does not speak TLS
                        # here. -111 whether or not those bytes won the race with the peek.
                        await sock.aclose()
                        raise HandshakeError(
                            f"TLS handshake with {host} failed: the server sent {exc.pending} "
                            "byte(s) of plaintext before the handshake"
                        ) from exc
                    except SSLOnOtherError as exc:
                        # The server's FIN came before our ClientHello went out (with
                        # happy eyeballs' hand-off it often does): the handshake would
                        # have met that end, so -111, as when it arrives a moment later.
                        ended = sock._closed_before_tls()
                        await sock.aclose()
                        if ended:
                            raise HandshakeError(
                                f"TLS handshake with {host} failed: the server closed the "
                                "connection before the handshake"
                            ) from exc
                        raise
                    except BaseException:
                        await sock.aclose()
                        raise
        except TimeoutError as exc:
            if exc.args or timeout is None:
                raise
            raise TimeoutError(
                f"connecting to {show_address(host, port)}: the {timeout:g} s deadline "
                f"expired during the {phase}"
            ) from None
        return sock

    # ------------------------------------------------------------------ settings

    @property
    def client_port(self) -> ClientPort:
        """The port definition this socket was made with."""
        return self._port

    @property
    def parse_tokens(self) -> TokenSet:
        """The default tokens for ``recv_parsed`` (settable: list of bytes, TokenSet or a
        PRSTOK string)."""
        return self._tokens

    @parse_tokens.setter
    def parse_tokens(self, tokens: TokenSet | Iterable[bytes] | str) -> None:
        self._tokens = as_token_set(tokens)
        self._ready = self._ready_args = ()

    @property
    def line_end(self) -> bytes:
        """The bytes ``send_line`` appends (Janus ``LINEND``; settable, non-empty bytes).

        Raises:
            UsageError: (on assignment) not bytes, or empty.
        """
        return self._line_end

    @line_end.setter
    def line_end(self, line_end: bytes) -> None:
        if not isinstance(line_end, bytes) or not line_end:
            raise UsageError(
                f"line_end must be non-empty bytes such as b'\\r\\n', not {line_end!r}"
            )
        self._line_end = line_end

    @property
    def encoding(self) -> str:
        """The codec for ``str`` payloads (settable)."""
        return self._encoding

    @encoding.setter
    def encoding(self, encoding: str) -> None:
        check_encoding(encoding)
        self._encoding = encoding

    @property
    def pending(self) -> int:
        """How many received bytes are buffered and unread."""
        return self._scanner.pending + len(self._held)

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS session (version, cipher, ALPN, peer certificate), or ``None``."""
        tls = self._tls
        if not isinstance(tls, TLSSnapshot):
            return tls
        info = None
        if self._ssl_object is not None:  # the session; closing the socket leaves it be
            try:
                info = TLSInfo.from_ssl_object(self._ssl_object, self._server_hostname)
            except (ValueError, OSError):  # gone after a ragged EOF: use the snapshot
                info = None
        if info is None:
            info = tls.describe(self._server_hostname)
        self._tls = info
        return info

    @property
    def close_notify_received(self) -> bool:
        """True once a receive has returned the end of a TLS stream that the peer ended
        with ``close_notify``: TLS vouches that nothing was cut off.

        False before the end is read, on a plain connection, after a ragged end (TCP
        closed without ``close_notify``: many servers end so, and so does an attacker
        cutting a transfer short), and inside an ``https://`` proxy's TLS or on a
        ``Socket(stream)`` of your own, where anyio's TLS layer does not tell. A
        protocol that reads "until the end" (FTPS stream mode, HTTP/1.0 bodies) checks
        it to tell a whole transfer from a truncated one.
        """
        return self._close_notify

    @property
    def tls_session(self) -> ssl.SSLSession | None:
        """The TLS session, to resume on another connection (``ssl_on(session=...)``,
        for the same server name: a resumed handshake checks no certificate); ``None``
        before TLS. With TLS 1.3 a server sends the tickets that make it resumable after
        the handshake: read something first (a reply).
        """
        ssl_object = self._ssl_object
        if ssl_object is None:
            return None
        session = ssl_object.session
        if session is not None and session.id:
            if len(_SESSION_NAMES) >= _SESSION_NAMES_MAX:
                _SESSION_NAMES.clear()
            # (the name verified, and the certificate that was)
            _SESSION_NAMES[session.id] = (
                self._server_hostname,
                ssl_object.getpeercert(binary_form=True),
            )
        return session

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran (or a failed handshake closed the socket)."""
        return self._stream is None

    @property
    def state(self) -> SocketState:
        """The connection state (CONNECTED, FIN_RECEIVED, FIN_SENT, FIN_BOTH, RESET)."""
        if self._stream is None or self._reset:
            return SocketState.RESET
        if self._eof and self._fin_sent:
            return SocketState.FIN_BOTH
        if self._eof:
            return SocketState.FIN_RECEIVED
        if self._fin_sent:
            return SocketState.FIN_SENT
        return SocketState.CONNECTED

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` at the TCP level (the proxy, for a tunnel)."""
        if self._stream is None:
            return None
        try:
            address = self._stream.extra(SocketAttribute.remote_address)
        except (anyio.TypedAttributeLookupError, OSError, ValueError, AttributeError):
            # (uvloop's socket of a closed transport says "negative file descriptor", or
            # the transport has none left and anyio trips over the None it gets)
            return None
        return (str(address[0]), int(address[1])) if isinstance(address, tuple) else None

    @property
    def receive_window(self) -> int | None:
        """Bytes that receives may still return (Janus ``RECVLIM``); ``None`` = unlimited.

        Every receive counts against it, parse tokens included; at 0, receives behave as at
        end of stream. Set it to a number of bytes, or ``None`` to lift it.
        """
        if self._allot is None:
            return None
        return self._allot + self._scanner.pending

    @receive_window.setter
    def receive_window(self, limit: int | None) -> None:
        if limit is not None:
            check_size(limit, "receive_window")
        scanner = self._own_scanner()
        data = scanner.take(scanner.pending) + self._held
        self._held = b""
        self._allot = limit
        self._feed(data)

    # ------------------------------------------------------------------ sending

    def _encode(self, data: str | bytes | bytearray | memoryview, encoding: str | None) -> bytes:
        if isinstance(data, str):
            if encoding is not None:
                check_encoding(encoding)
            codec = self._encoding if encoding is None else encoding
            try:
                return data.encode(codec)
            except UnicodeEncodeError as exc:
                # (named by the socket's encoding: cp037's own error says "charmap")
                raise EncodeError(codec, data, exc.start, exc.end, exc.reason) from exc
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        raise UsageError(f"send takes str or bytes, not {type(data).__name__}")

    async def send(
        self, data: str | bytes | bytearray | memoryview, *, encoding: str | None = None
    ) -> None:
        """Send bytes as they are, or a ``str`` encoded with the socket's encoding.

        Args:
            data: the payload.
            encoding: overrides the socket's encoding for this call.

        Raises:
            UsageError: ``data`` is neither str nor bytes, or ``encoding`` is not a codec.
            EncodeError: ``data`` has characters the encoding cannot represent
                (nothing is sent; also a ``UnicodeEncodeError``).
            BusyError: another task is sending on this socket, or ``ssl_on()`` is
                handshaking (nothing is written in clear while TLS starts).
            SocketClosedError: the socket is closed, or ``send_eof()`` was called.
            SocketResetError: the connection broke.

        Cancellation may leave part of ``data`` sent.
        """
        await self._send(self._encode(data, encoding))

    async def send_line(
        self,
        data: str | bytes | bytearray | memoryview = b"",
        *,
        line_end: bytes | None = None,
        encoding: str | None = None,
    ) -> None:
        """Send ``data`` followed by the line end, in one write.

        Args:
            data: the payload (``str`` is encoded; the line end is always raw bytes).
            line_end: overrides the socket's ``line_end`` for this call.
            encoding: overrides the socket's encoding for this call.

        Raises:
            UsageError: bad payload, an empty line end, or ``encoding`` is not a codec.
            EncodeError: ``data`` has characters the encoding cannot represent
                (nothing is sent; also a ``UnicodeEncodeError``).
            BusyError: another task is sending on this socket, or ``ssl_on()`` is
                handshaking (nothing is written in clear while TLS starts).
            SocketClosedError: the socket is closed, or ``send_eof()`` was called.
            SocketResetError: the connection broke.
        """
        end = self._line_end if line_end is None else line_end
        if not isinstance(end, bytes) or not end:
            raise UsageError(f"line_end must be non-empty bytes, not {end!r}")
        await self._send(self._encode(data, encoding) + end)

    def _check_send(self) -> ByteStream:
        stream = self._stream
        if stream is None:
            raise SocketClosedError("the socket is closed")
        if self._sending:
            raise BusyError("another task is sending on this socket (or ssl_on() is handshaking)")
        if self._fin_sent:
            raise SocketClosedError("cannot send after send_eof() (FIN sent)")
        return stream

    async def _send(self, payload: bytes) -> None:
        stream = self._check_send()
        self._sending = True
        try:
            await stream.send(payload)
        except (anyio.BrokenResourceError, OSError, anyio.EndOfStream) as exc:
            # (anyio's TLSStream says EndOfStream when OpenSSL's write meets the end of a
            # broken or raggedly ended TLS session)
            self._broke_while_sending(exc, stream)
            why = _why(exc)
            if self._eof or isinstance(_original(exc), ssl.SSLEOFError):
                # The peer ended the connection before this send (an FTP or SMTP server
                # after QUIT, openssl s_server's Q): not an attack, not a network fault.
                why = f"the peer had ended the connection ({why})"
            raise SocketResetError(f"connection broke while sending: {why}") from _original(exc)
        except anyio.ClosedResourceError as exc:
            raise SocketClosedError("the socket was closed during send") from exc
        except anyio.BusyResourceError as exc:
            # _sending rules out a second sender, so this is the TLS layer of a stream
            # passed to Socket() (anyio's TLSStream) needing to read for the send (a
            # renegotiation) while another task is receiving.
            raise BusyError(
                "the TLS layer had to read to send (the peer is renegotiating) while "
                "another task was receiving on this socket"
            ) from exc
        finally:
            self._sending = False
        if self._acks:
            if self._receiving:
                self._ack_promptly()  # a read already waits (full duplex): now
            else:
                self._ack_due = True  # before the next read (_fill)

    def _broke_while_sending(self, exc: BaseException, stream: ByteStream) -> None:
        """Note a connection a send (or FIN) found broken. A peer's reset is kept for the
        receives (the OS reports it once; their next read would say end of stream), on a
        plain stream only: a TLS stream tells a clean end by close_notify. An end of
        stream a receive already noted was this reset's (a peer's FIN before it makes a
        send say EPIPE, not a reset): the next receive reads again, meets the end again,
        and raises."""
        self._reset = True
        if _is_peer_reset(exc) and not isinstance(stream, (TLSStream, FdTLSStream)):
            self._send_reset = kept_error(_original(exc))
            self._eof = False

    def _ack_promptly(self) -> None:
        """Have the kernel ACK the peer's next segments at once (Linux ``TCPQUICKACK``).

        Why: having just sent, we wait for the answer; Linux is then in delayed-ACK
        "pingpong" mode and holds its ACK of what arrives ~40 ms, hoping to piggyback it on
        our next send. A peer that leaves Nagle on -- tinyproxy does, on the client side of
        a CONNECT tunnel -- will not send its next small segment while one is unacked. With
        TLS 1.3 the origin's session tickets (sent after the handshake) or the response
        arrive first, and the response or the ``close_notify`` behind them waited for our
        delayed ACK: ~44 ms per tunnel through tinyproxy, where the work takes ~3 ms (seen
        with tcpdump; TLS 1.2 has no tickets after the handshake, hence no stall there).
        ``TCP_NODELAY`` on our side cannot help: the segment held back is the peer's.
        ``TCPQUICKACK`` is not sticky: the kernel re-enters pingpong mode when we send
        soon after receiving, so it is set again after every handshake, and after a send
        before the next read waits (``_ack_due``; setting it also sends an ACK the kernel
        was holding back).
        Measured (benchmarks/tunnel.py, sequential through tinyproxy, TLS 1.3): p50
        44 ms -> ~3 ms. Best effort: ignored where the option or the socket is missing.
        """
        raw = self._raw_socket
        if QUICKACK and raw is not None:
            try:
                raw.setsockopt(_stdsocket.IPPROTO_TCP, QUICKACK, 1)
            except (OSError, ValueError):  # closed, or not a TCP socket after all
                self._raw_socket = None

    async def send_eof(self) -> None:
        """Send FIN: this side will send nothing more; receiving goes on.

        Raises:
            SocketClosedError: the socket is closed.
            BusyError: another task is sending, or ``ssl_on()`` is handshaking.
            UsageError: the stream cannot half-close (TLS has no half-close).
            SocketResetError: the connection broke.
        """
        if self._fin_sent and self._stream is not None:
            return
        stream = self._check_send()
        if self._reset:  # (a stream of the caller's may take a FIN on a broken connection)
            raise SocketResetError("cannot send FIN: the connection broke earlier") from (
                self._receive_error or self._send_reset
            )
        try:
            await stream.send_eof()
        except NotImplementedError as exc:
            raise UsageError("a TLS stream cannot send FIN; close it instead") from exc
        except (anyio.BrokenResourceError, OSError, RuntimeError) as exc:
            # (uvloop's transport says RuntimeError once the connection is gone)
            self._broke_while_sending(exc, stream)
            raise SocketResetError(
                f"connection broke while sending FIN: {_why(exc)}"
            ) from _original(exc)
        self._fin_sent = True

    # ------------------------------------------------------------------ receiving

    def _own_scanner(self) -> Scanner:
        """This socket's buffer, made on first use (see ``_NO_BYTES_YET``)."""
        scanner = self._scanner
        if scanner is _NO_BYTES_YET:
            scanner = self._scanner = Scanner()
        return scanner

    def _shed_scanner(self) -> None:
        """Give back an empty buffer, so an idle socket holds none (after CONNECT)."""
        scanner = self._scanner
        if scanner is not _NO_BYTES_YET and not scanner.pending:
            self._scanner = _NO_BYTES_YET
            self._ready = self._ready_args = ()

    def _feed(self, data: bytes) -> None:
        allot = self._allot
        scanner = self._own_scanner()
        if allot is None:
            scanner.feed(data)
        elif len(data) <= allot:
            scanner.feed(data)
            self._allot = allot - len(data)
        else:
            scanner.feed(data[:allot])
            self._held += data[allot:]  # bytes + bytes: only past the window
            self._allot = 0

    def _unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (they count as already received)."""
        self._own_scanner().unread(data)

    async def _fill(self, size: int = TRANSPORT_READ) -> None:
        """Read once from the stream into the buffer, up to ``size`` bytes (or note EOF)."""
        data = await self._read(size)
        if data:
            self._feed(data)

    async def _read(self, size: int = TRANSPORT_READ) -> bytes:
        """Read once from the stream, up to ``size`` bytes; ``b""`` (and ``_eof`` set)
        at end of stream. The caller buffers what it does not hand out."""
        stream = self._stream
        if stream is None:
            raise SocketClosedError("the socket is closed")
        if self._receive_error is not None:
            # Sticky: after a reset the OS (or OpenSSL after a bad record) would say end
            # of stream next time, and truncated data would pass for complete.
            self._reset = True
            raise SocketResetError(
                f"connection broke while receiving: {_why(self._receive_error)}"
            ) from self._receive_error
        if self._ack_due:
            self._ack_due = False
            self._ack_promptly()
        self._receiving = True
        try:
            data = await stream.receive(size)
        except anyio.EndOfStream:
            if self._sending and self._ssl_object is None and not isinstance(stream, FdStream):
                # A send in flight on a stream of the caller's may be meeting the reset
                # this end hides (the OS reports it once, to whichever call comes first),
                # and trio's stream yields before raising it: let it report first.
                for _ in range(2):
                    await anyio.lowlevel.cancel_shielded_checkpoint()
            if self._send_reset is not None:  # not the peer's FIN: the reset a send met
                self._reset = True
                self._receive_error = self._send_reset
                raise SocketResetError(
                    f"connection was reset (a send met it first): {_why(self._send_reset)}"
                ) from self._send_reset
            self._eof = True
            if self._ssl_object is not None and isinstance(stream, FdTLSStream):
                # (not the TLS to an https:// proxy under a plain tunnel: the target's
                # end is not that hop's)
                self._close_notify = stream.close_notify_received
            return b""
        except (anyio.BrokenResourceError, OSError) as exc:
            self._reset = True
            self._receive_error = kept_error(_original(exc))
            raise SocketResetError(
                f"connection broke while receiving: {_why(exc)}"
            ) from _original(exc)
        except anyio.ClosedResourceError as exc:
            raise SocketClosedError("the socket was closed while receiving") from exc
        except anyio.BusyResourceError as exc:  # as in _send, the other way round
            raise BusyError(
                "the TLS layer had to write to receive (the peer is renegotiating or "
                "updating keys) while another task was sending on this socket"
            ) from exc
        finally:
            self._receiving = False
        if type(data) is not bytes:  # a stream of the caller's may hand out a bytearray
            data = bytes(data)
        if self._ssl_object is not None and TLS_FULL_RECORD <= len(data) < size:
            data = self._drain_tls(data, size)
        return data

    def _drain_tls(self, data: bytes, size: int) -> bytes:
        """Add the plaintext the TLS engine can already give without more I/O.

        One ``receive()`` on a TLS stream yields one TLS record (16 KiB at most) even when
        the transport delivered several; asking the ``SSLObject`` directly for the rest,
        up to ``size`` bytes in all, saves a coroutine round trip per record, which is a
        large share of the cost of bulk transfers. Anything unusual (a KeyUpdate to
        answer, close_notify, an error) is left for the next ``receive()`` to handle.
        """
        stream = self._stream
        if isinstance(stream, FdTLSStream) and stream.holds_plaintext:
            return data  # a sender's read kept it: it comes before what OpenSSL holds
        read = self._ssl_object.read  # type: ignore[union-attr]
        chunks = [data]
        total = len(data)
        try:
            while total < size:
                more = read(min(TLS_RECORD, size - total))  # a record's worth at most
                if not more:  # close_notify (the ssl module's b"")
                    self._read_again()
                    break
                chunks.append(more)
                total += len(more)
        except ssl.SSLWantReadError:  # nothing more without I/O
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # the end: OpenSSL says it again
            self._read_again()
        except ssl.SSLError as exc:  # a bad record: the next read raises it, not an EOF
            self._receive_error = kept_error(exc)
            if isinstance(stream, FdTLSStream):
                stream.fail(exc)  # broken for sends too, and OpenSSL's alert goes out
        return data if len(chunks) == 1 else b"".join(chunks)

    def _read_again(self) -> None:
        """``_drain_tls`` met the end of TLS: the next receive must meet it too. OpenSSL
        says it again when asked, but janusnet's own TLS stream skips asking
        when it has no ciphertext to give (see ``FdTLSStream.receive``): tell it."""
        stream = self._stream
        if isinstance(stream, FdTLSStream):
            stream.read_again()

    def _check_receive(self) -> None:
        if self._receiving:
            raise BusyError("another task is already receiving on this socket")
        if self._stream is None:
            raise SocketClosedError("the socket is closed")

    async def recv(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        """Return up to ``max_bytes`` bytes: what is buffered, or one read's worth.

        Args:
            max_bytes: the most bytes to return (>= 1).

        Returns:
            The bytes; ``b""`` at end of stream or when the receive window is spent.

        Raises:
            UsageError: ``max_bytes`` < 1.
            BusyError: another task is receiving on this socket.
            SocketClosedError: the socket is closed.
            SocketResetError: the connection broke.

        Cancellation loses no bytes.
        """
        if type(max_bytes) is not int or max_bytes < 1:
            check_size(max_bytes, "max_bytes", 1)
        if self._receiving or self._stream is None:
            self._check_receive()
        # Taking from the shared empty buffer (_NO_BYTES_YET) changes nothing in it.
        data = self._scanner.take(max_bytes)
        while not data:
            if self._eof or self._allot == 0:
                return b""
            # Read no more than asked (at least RECEIVE_SIZE, at most one transport read:
            # the read's buffer is allocated at the size asked): the bytes read are then
            # usually the result itself, with no slice copied out of a bigger buffer.
            size = max_bytes if max_bytes > RECEIVE_SIZE else RECEIVE_SIZE
            size = size if size < TRANSPORT_READ else TRANSPORT_READ
            if self._allot is None and self._scanner.idle:
                data = await self._read(size)
                if 0 < len(data) <= max_bytes and self._allot is None:  # (window set meanwhile?)
                    return data  # all of it: nothing to buffer
                self._feed(data)
            else:
                await self._fill(size)
            data = self._scanner.take(max_bytes)
        return data

    async def recv_exactly(self, count: int) -> bytes:
        """Return exactly ``count`` bytes.

        Args:
            count: how many bytes (>= 0).

        Returns:
            The bytes.

        Raises:
            UsageError: ``count`` < 0.
            BusyError: another task is receiving on this socket.
            IncompleteReadError: the stream ended (or the window was spent) first; the
                bytes that did arrive are on the exception as ``partial``.
            SocketClosedError: the socket is closed.
            SocketResetError: the connection broke.

        Cancellation loses no bytes: they stay buffered.
        """
        if type(count) is not int or count < 0:
            check_size(count, "count")
        if self._receiving or self._stream is None:
            self._check_receive()
        data = self._scanner.take_exactly(count)
        if data is None and count > RECEIVE_SIZE and self._allot is None:
            data = await self._recv_large(count)
            if data is not None:
                return data
            data = self._scanner.take_exactly(count)
        while data is None:
            if self._eof or self._allot == 0:
                scanner = self._scanner
                raise IncompleteReadError(
                    scanner.take(scanner.pending), count, window_spent=not self._eof
                )
            await self._fill()
            data = self._scanner.take_exactly(count)
        return data

    async def _recv_large(self, count: int) -> bytes | None:
        """``recv_exactly`` of more than a read's worth that is not all buffered yet.

        The reads are kept as they arrive, each no larger than what is still missing, and
        joined once at the end: one copy of the result. Appending them to the buffer
        instead copied the growing buffer again and again (0.63x asyncio's
        ``readexactly`` at 1-4 MiB). On any failure but the end of the stream the bytes
        go back into the buffer, so nothing is lost. ``None`` when another task set
        ``receive_window`` meanwhile: the bytes are then buffered as the window says, for
        the caller's usual loop.
        """
        scanner = self._scanner
        chunks = [scanner.take(scanner.pending)]
        got = len(chunks[0])
        try:
            while got < count:
                if self._eof:
                    raise IncompleteReadError(b"".join(chunks), count, window_spent=False)
                left = count - got
                data = await self._read(left if left < TRANSPORT_READ else TRANSPORT_READ)
                chunks.append(data)
                got += len(data)
                if self._allot is not None:  # receive_window set meanwhile
                    self._feed(b"".join(chunks))  # all counted, as the window's setter does
                    return None
        except IncompleteReadError:
            raise
        except BaseException:
            if self._allot is None:
                self._unread(b"".join(chunks))
            else:  # a window set meanwhile counts them all (the buffer is empty here)
                self._feed(b"".join(chunks))
            raise
        data = b"".join(chunks)
        if got > count:  # a stream that gave more than asked (anyio's contract says no)
            self._unread(data[count:])
            data = data[:count]
        return data

    async def recv_parsed(
        self,
        tokens: TokenSet | Iterable[bytes] | str | None = None,
        *,
        max_bytes: int | None = None,
    ) -> Parsed:
        """Receive up to the next parse token (Janus ``ReceiveAndParse``).

        The token whose match starts earliest wins; at the same start, the longest. When a
        longer token could still complete at the end of what has arrived, it waits for
        more bytes (or EOF). The result never depends on how bytes were split into
        segments.

        Args:
            tokens: tokens for this call (list of bytes, TokenSet or PRSTOK string);
                default: the socket's ``parse_tokens``.
            max_bytes: limit on data bytes (the token excluded); a token starting at or
                before this offset counts as found. Default: the port's
                ``max_parse_bytes``. With ``0`` only a token at the very start is
                found; otherwise the result is ``Parsed(b"", None, 0)`` and nothing is
                consumed, which looks like end of stream: ``sock.pending`` (> 0, the
                bytes are still buffered) tells them apart.

        Returns:
            ``Parsed(data, token, index)``: ``data`` without the token, the token, and its
            1-based index (0 and ``None`` when the limit was hit or the stream ended; at
            EOF ``data`` is what was buffered, ``b""`` when nothing was).

        Raises:
            UsageError: bad tokens or a negative ``max_bytes``.
            BusyError: another task is receiving on this socket.
            SocketClosedError: the socket is closed.
            SocketResetError: the connection broke.

        Cancellation loses no bytes: they stay buffered for the next receive.
        """
        if tokens is None and max_bytes is None:
            # Fast path: records the scanner already cut for the default tokens and limit.
            # The scanner exhausts this iterator whenever it takes the records back, and
            # _ready is cleared when the tokens change or the socket closes, so a record
            # handed out here is always the next one.
            for record in self._ready:
                return record
            scanner = self._scanner
            if not (
                self._receiving
                or self._eof
                or self._stream is None
                or self._allot is not None
                or scanner is _NO_BYTES_YET  # (shared by every socket with nothing read)
            ):
                # A record already buffered (a line between payloads read with
                # recv_exactly, say): found here, without _recv_parsed's frame.
                token_set = self._tokens
                limit = self._port.max_parse_bytes
                result = scanner.scan(token_set, limit, False)
                if result is not None:
                    self._ready_args = ()
                    ready = scanner.ready
                    if (
                        ready is not None
                        and scanner.ready_tokens is token_set
                        and scanner.ready_max <= limit
                    ):
                        self._ready = ready
                    return result
        elif (
            (
                tokens is self._ready_key
                or (type(tokens) is self._ready_type and tokens == self._ready_key)
            )
            and max_bytes == self._ready_limit
            and (max_bytes is None or type(max_bytes) is int)
        ):
            # The same for the arguments of the call that cut them, such as
            # recv_parsed([b"\r\n"]) in a loop: equal tokens (compared by value, with a
            # private copy of a list) and an equal limit give the same records.
            for record in self._ready_args:
                return record
        return await self._recv_parsed(tokens, max_bytes)

    async def _recv_parsed(
        self, tokens: TokenSet | Iterable[bytes] | str | None, max_bytes: int | None
    ) -> Parsed:
        """``recv_parsed`` beyond the records already cut (a separate, larger frame)."""
        self._ready = self._ready_args = ()
        if self._receiving or self._stream is None:
            self._check_receive()
        token_set = self._tokens if tokens is None else as_token_set(tokens)
        limit = self._port.max_parse_bytes if max_bytes is None else max_bytes
        if type(limit) is not int or limit < 0:
            check_size(limit, "max_bytes")
        # Taken now: the caller's list may change while this call waits.
        key = _NO_KEY if tokens is None else _ready_key(tokens)
        if (
            len(token_set.tokens) == 1
            and self._scanner.idle
            and self._allot is None
            and not self._eof
        ):
            # Nothing buffered: read. When what arrives is one whole record (request/
            # response, one message per read), hand it out without buffering it.
            data = await self._read()
            if data:
                token = token_set.tokens[0]
                end = len(data) - len(token)
                # (receive_window may have been set by another task meanwhile)
                if 0 <= end <= limit and self._allot is None and data.find(token) == end:
                    return _new_parsed(Parsed, (data[:end], token, 1))
                self._feed(data)
        scanner = self._own_scanner()
        result = scanner.scan(token_set, limit, self._eof or self._allot == 0)
        while result is None:
            await self._fill()
            result = scanner.scan(token_set, limit, self._eof or self._allot == 0)
        ready = scanner.ready
        if (
            ready is None
            or scanner.ready_tokens is not token_set
            or scanner.ready_max > limit
            or key is None
            or (tokens is None and token_set is not self._tokens)  # changed while waiting
        ):
            return result
        if tokens is None and max_bytes is None:
            self._ready = ready
        else:
            self._ready_args = ready
            self._ready_type = type(tokens)
            self._ready_key = tokens if key is _NO_KEY else key
            self._ready_limit = max_bytes
        return result

    def decode(self, data: bytes, *, encoding: str | None = None, errors: str = "strict") -> str:
        """Decode received bytes with the socket's encoding (Janus ``TranIn``).

        Raises:
            UsageError: ``encoding`` is not a text codec, or ``errors`` is not an error
                handler (``"strict"``, ``"replace"``, ``"surrogateescape"``, ...).
            UnicodeDecodeError: the bytes are not valid in that encoding (with
                ``errors="strict"``).
        """
        if errors != "strict":
            try:
                codecs.lookup_error(errors)
            except (LookupError, TypeError) as exc:
                raise UsageError(f"unknown error handler {errors!r}") from exc
        if encoding is None:
            return data.decode(self._encoding, errors)
        check_encoding(encoding)
        return data.decode(encoding, errors)

    # ------------------------------------------------------------------ TLS

    async def _handshake(
        self,
        stream: ByteStream,
        hostname: str | None,
        tls_name: str | None,
        context: ssl.SSLContext,
        session: ssl.SSLSession | None = None,
    ) -> ByteStream:
        """TLS over ``stream``; on any failure the socket is closed and the error mapped."""
        try:
            return await start_tls(stream, hostname=tls_name, ssl_context=context, session=session)
        except BaseException as exc:
            await self._close_stream(wait=False)  # (a failed handshake: nothing to keep)
            raise_handshake_error(exc, hostname, context, self._secrets)
            raise  # pragma: no cover - raise_handshake_error always raises

    async def _check_resumed(
        self,
        tls_stream: ByteStream,
        ssl_object: ssl.SSLObject | ssl.SSLSocket,
        session: ssl.SSLSession,
    ) -> None:
        """A resumed session must carry the certificate verified when it was handed out
        (see :data:`_SESSION_NAMES`); else the connection closes (-111).

        Raises:
            HandshakeError: it carries another one.
        """
        known = _SESSION_NAMES.get(session.id)
        if known is not None and ssl_object.getpeercert(binary_form=True) == known[1]:
            return
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(tls_stream)
        await self._close_stream(wait=False)  # (the plain stream TLS took over; the count)
        raise HandshakeError(
            "ssl_on: the resumed session's certificate is not the one verified for "
            f"{known[0] if known else '?'!r} when the session was handed out; closed"
        )

    def _transport_pending(self) -> int:
        """Bytes received by the transport but not yet read by us (looked at, not read)."""
        stream = self._stream
        if isinstance(stream, (TLSStream, FdTLSStream)):
            try:
                return int(ssl_object_of(stream).pending())
            except (anyio.TypedAttributeLookupError, ssl.SSLError):
                return 0
        queue = getattr(getattr(stream, "_protocol", None), "read_queue", None)
        queued = sum(len(chunk) for chunk in queue) if queue else 0
        if queued:
            return queued
        if stream is None or self._raw_socket is None:
            return 0
        return kernel_pending(self._raw_socket)

    def _peer_closed(self) -> bool:
        """The peer's FIN is waiting in the kernel, unread (plain, direct sockets only)."""
        raw = self._raw_socket
        if raw is None or isinstance(self._stream, (TLSStream, FdTLSStream)):
            return False
        return kernel_closed(raw)

    def _closed_before_tls(self) -> bool:
        """``ssl_on()`` refused (-149, socket unchanged) because the peer had closed."""
        return (
            self._stream is not None
            and self._ssl_object is None
            and not self._reset
            and (self._eof or self._peer_closed())
        )

    async def ssl_on(
        self,
        *,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        session: ssl.SSLSession | None = None,
    ) -> None:
        """Upgrade this live connection to TLS, in place (Janus ``SSLOn``).

        Args:
            server_hostname: the name (or IP address) to verify and send as SNI; default:
                the host given to ``connect`` or the tunnel's target. IP addresses are
                checked against IP SANs and sent without SNI; an international name is
                verified as its IDNA 2008 A-label (``faß.de``: ``xn--fa-hia.de``).
            ssl_context: the context to use; default: the port's, else the verified
                default (certifi, TLS >= 1.2). Never modified.
            timeout: deadline for the handshake, in seconds (``None`` for none), so a peer
                that stalls mid-handshake cannot hang the caller (asyncio's
                ``start_tls`` uses the same 60 s).
            session: a TLS session to resume (another socket's :attr:`tls_session`,
                made with the same context, for the same ``server_hostname``: a resumed
                handshake checks no certificate), as FTPS servers require of a data
                connection; ``tls.session_reused`` says whether the server took it.

        Raises:
            UsageError: ``ssl_context``, ``server_hostname``, ``timeout`` or ``session``
                of the wrong type (or a negative ``timeout``), a ``session`` of another
                context, not from :attr:`tls_session` or verified for another name, or
                one to resume inside an ``https://`` proxy's TLS (not supported there);
                socket unchanged.
            TimeoutError: the handshake did not finish within ``timeout``; the socket is
                closed.
            NotSSLPortError: (-110) the port does not allow an upgrade (Janus: it lacks
                ``SSLOPT``): its ``TLSMode`` is ``NEVER``, or ``ALWAYS`` and the socket is
                TLS already; socket unchanged.
            PendingDataError: (-112) unread plaintext bytes are buffered (or already
                received by the transport); socket unchanged, drain it and retry.
            HandshakeError: (-111) the peer did not complete a handshake, or its
                certificate or host name failed verification; the socket is closed.
            SSLOnOtherError: (-149) already TLS, closed (or the peer's FIN has arrived,
                read or not, or this side sent FIN), another task receiving or
                sending, no host name to verify or one that is not a valid
                international name, the default CA bundle cannot be read (no free
                file descriptor) (socket unchanged), or an I/O error during the
                handshake or ``aclose()`` from another task (socket closed).

        Cancellation during the handshake closes the socket and propagates; in a scope
        already cancelled it raises before the handshake starts, the socket unchanged.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        check_ssl_context(ssl_context)
        check_timeout(timeout)
        check_server_hostname(server_hostname)
        if session is not None and not isinstance(session, ssl.SSLSession):
            raise UsageError(f"session must be an ssl.SSLSession or None, not {session!r}")
        stream = self._stream
        if stream is None:
            raise SSLOnOtherError("ssl_on: the socket is closed")
        if self._port.tls is TLSMode.NEVER:
            raise NotSSLPortError(f"ssl_on: client port {self._port.name!r} does not allow TLS")
        if self._ssl_object is not None:
            if self._port.tls is TLSMode.ALWAYS:  # Janus: SSL without SSLOPT -> -110
                raise NotSSLPortError(
                    f"ssl_on: client port {self._port.name!r} is TLS from connect "
                    "(TLSMode.ALWAYS): there is no upgrade to make"
                )
            raise SSLOnOtherError("ssl_on: the socket is already TLS")
        if self._receiving:
            raise SSLOnOtherError("ssl_on: another task is receiving on this socket")
        if self._sending:
            raise SSLOnOtherError("ssl_on: another task is sending on this socket")
        if self._fin_sent:
            # The handshake would be written after our FIN: refused, the socket (and the
            # peer's data still to come) left as they are.
            raise SSLOnOtherError("ssl_on: this side has sent FIN (send_eof()); TLS needs both")
        if isinstance(stream, FdTLSStream):
            # TLS to an https:// proxy: bytes injected after the CONNECT reply may sit in
            # records not yet decrypted. Take what is decryptable now into the buffer, so
            # they are refused (-112) and kept, never fed to the origin's handshake.
            data, eof = stream.receive_ready()
            if data:
                self._feed(data)
            if eof:
                self._eof = True

        pending = self.pending or self._transport_pending()
        if pending:
            raise PendingDataError(
                f"ssl_on: {pending} unread byte(s) arrived before TLS: refused, nothing "
                "lost (a server that speaks first: read them, then ssl_on() again; after "
                "a STARTTLS go-ahead nothing should come: close, they may be injected)",
                pending=pending,
            )
        broken = stream.failure if isinstance(stream, FdTLSStream) else None
        if broken is not None:
            # Before the handshake, not the handshake's failure: the peer did not close.
            raise SSLOnOtherError(
                "ssl_on: the TLS connection to the proxy is broken: a record from it did "
                f"not decrypt or was not TLS ({broken!r}: tampering on the way, or a "
                "broken proxy); nothing more can be read or sent on it"
            ) from broken
        if self._eof or self._reset or self._peer_closed():
            reply = self.proxy_reply
            raise SSLOnOtherError(
                "ssl_on: the peer has closed the connection"
                + (
                    f" (the proxy ended the tunnel after its {reply.status} reply: it may "
                    "not have reached the target)"
                    if reply is not None
                    else ""
                )
            )
        hostname = server_hostname or self._server_hostname
        context = ssl_context or self._port.ssl_context or default_context_for("ssl_on")
        if hostname is None and context.check_hostname:
            raise SSLOnOtherError("ssl_on: no server_hostname to verify")
        tls_name = tls_name_for(hostname) if hostname else None
        if session is not None:
            _check_session(session, context, stream, tls_name)
        self._receiving = self._sending = True  # nothing may interleave with the handshake
        try:
            if timeout is None:  # a caller's deadline governs (ProxyTunnel.open_tls)
                tls_stream = await self._handshake(stream, hostname, tls_name, context, session)
            else:
                # A cancel scope of our own rather than fail_after(): on Python 3.13 the
                # generator-based context manager's frames keep the cancellation, and
                # with it the failed socket, in a reference cycle.
                with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                    tls_stream = await self._handshake(
                        stream, hostname, tls_name, context, session
                    )
                if scope.cancelled_caught:
                    logger.warning(
                        "TLS handshake with %s timed out (%g s)", hostname or "the peer", timeout
                    )
                    raise TimeoutError(
                        f"TLS handshake with {hostname or 'the peer'}: "
                        f"not done within {timeout:g} s (the peer did not finish it)"
                    )
        except JanusnetError as exc:
            if self._secrets:
                withhold_from_error(exc, self._secrets)
            raise
        finally:
            self._receiving = self._sending = False
        if self._stream is not stream:  # aclose() from another task won the race
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(tls_stream)
            raise SSLOnOtherError("ssl_on: the socket was closed during the handshake")
        ssl_object = ssl_object_of(tls_stream)
        if session is not None and ssl_object.session_reused and context.check_hostname:
            await self._check_resumed(tls_stream, ssl_object, session)
        self._stream = tls_stream
        self._raw_socket = raw_socket_of(tls_stream)  # a direct socket's is now TLS's
        self._acks = not isinstance(tls_stream, FdTLSStream)
        self._ack_promptly()  # the TLS 1.3 session tickets arrive after the handshake
        # What was verified: an international name as its A-label, no brackets or final dot.
        self._server_hostname = tls_name if tls_name is not None else hostname
        self._ssl_object = ssl_object
        self._tls = TLSSnapshot(ssl_object)
        if logger.isEnabledFor(logging.DEBUG):  # version()/cipher() are not free
            logger.debug(
                "TLS on with %s: %s %s",
                hostname,
                ssl_object.version(),
                (ssl_object.cipher() or ("?",))[0],
            )

    # ------------------------------------------------------------------ closing

    async def _close_stream(self, *, wait: bool = True) -> None:
        """Close the stream; ``wait``: first let the kernel send what it holds unsent."""
        self._ready = self._ready_args = ()
        self._scanner = _NO_BYTES_YET  # nothing can be read any more: let the buffer go
        self._held = b""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._port._release()
        try:
            # Bytes the kernel has taken from send() and not sent yet are sent first: a
            # reset would throw them away (see _transport._Direct.linger).
            if wait:
                await linger(stream)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (anyio.BrokenResourceError, OSError):  # closing a broken stream
                    pass

    async def aclose(self) -> None:
        """Close the connection. Idempotent; never raises for a broken connection.

        Bytes ``send()`` handed to the kernel that it has not sent yet (a large upload
        to a slow peer) are sent first, on Linux: the close waits for them (reading and
        dropping anything that arrives) until they are out, the peer ends the
        connection, or nothing moves for 2 s (30 s at most). Without that wait, anything
        the peer sends after the close (a TLS 1.3 server's session tickets) makes the
        kernel reset the connection and drop them. Cancellation ends the wait; the
        socket closes all the same (the close itself is shielded).

        Raises:
            Nothing of its own: closing a broken or closed socket is quiet.
        """
        await self._close_stream()

    def detach(self) -> _stdsocket.socket:
        """Hand the connection over as a standard ``socket.socket``; this Socket closes.

        For a library that takes a connected socket (asyncio's ``open_connection(sock=,
        ssl=, server_hostname=)``, ``trio.SocketStream``, websockets' and asyncssh's
        ``connect(sock=)``, ``SSLContext.wrap_socket``): open a tunnel with
        :meth:`ProxyTunnel.open`, then give it to that library, as curl's
        ``CURLOPT_CONNECT_ONLY`` and ``CURLINFO_ACTIVESOCKET`` do. Only a plain
        connection can move: TLS state cannot leave the engine that holds it.

        Bytes still in the operating system's buffer go with the socket (they were not
        read). Bytes this Socket has read and not handed out would be lost, so they make
        it refuse (-112), as ``ssl_on()`` does: read them first.

        Returns:
            The connected socket, in blocking mode with no timeout (as a new
            ``socket.socket`` is; libraries set the mode they need). The caller owns it
            and closes it; ``aclose()`` of this Socket no longer touches it.

        Raises:
            SocketClosedError: the socket is closed (or handed over already).
            BusyError: another task is receiving or sending (or ``ssl_on()`` is
                handshaking); socket unchanged.
            SocketResetError: the connection broke; socket unchanged (close it).
            PendingDataError: (-112) received bytes are buffered unread; socket unchanged,
                read them and retry.
            UsageError: the connection is TLS (after ``ssl_on()``, a ``TLSMode.ALWAYS``
                port, or a tunnel inside TLS to an ``https://`` proxy), or this Socket
                wraps an anyio stream it did not make (``Socket(stream)``: that stream
                owns the socket); socket unchanged.
        """
        stream = self._stream
        if stream is None:
            raise SocketClosedError("detach: the socket is closed")
        if self._receiving or self._sending:
            raise BusyError(
                "detach: another task is receiving or sending on this socket "
                "(or ssl_on() is handshaking)"
            )
        if self._ssl_object is not None:
            raise UsageError(
                "detach: the connection is TLS; its TLS session cannot move to another "
                "library (detach before ssl_on(), on a port that is not TLSMode.ALWAYS)"
            )
        if isinstance(stream, (FdTLSStream, TLSStream)):
            raise UsageError(
                "detach: this tunnel runs inside TLS to an https:// proxy; that TLS session "
                "cannot move to another library (an http:// proxy's tunnel can)"
            )
        if not isinstance(stream, FdStream):
            raise UsageError(
                "detach: this Socket wraps an anyio stream it did not make; the socket "
                "belongs to that stream"
            )
        if self._reset:
            raise SocketResetError("detach: the connection broke earlier") from (
                self._receive_error or self._send_reset
            )
        pending = self.pending
        if pending:
            raise PendingDataError(
                f"detach: {pending} received byte(s) are buffered unread and would be "
                "lost; read them first",
                pending=pending,
            )
        remote = self.remote_address
        raw = stream.detach()
        self._ready = self._ready_args = ()
        self._stream = None
        self._raw_socket = None
        self._port._release()
        raw.settimeout(None)
        logger.debug("detach: connection with %s handed over", remote)
        return raw

    async def __aenter__(self) -> Socket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        info = self.tls
        tls = f" tls={info.version}" if info else ""
        # A tunnel's remote end is the proxy: name the target too.
        target = f" target={self._target!r}" if self._target is not None else ""
        return (
            f"<janusnet.Socket port={self._port.name!r} remote={self.remote_address!r}"
            f"{target} state={self.state.name}{tls} pending={self.pending}>"
        )

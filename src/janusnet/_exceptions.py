"""The whole janusnet error tree, and the legacy Janus return codes.

Every error janusnet raises derives from :class:`JanusnetError`. Errors translated from a
lower layer (``OSError``, ``ssl.SSLError``, h11, anyio) keep the original as ``__cause__``.
Timeouts are the built-in :class:`TimeoutError`, never a janusnet class, so code written
for asyncio, trio and anyio catches them the way it already does.

The tree is at most three levels below the root::

    JanusnetError
    ├── UsageError (also ValueError)          bad arguments, refused before any I/O
    │   ├── BusyError                         a second task tried to receive concurrently
    │   └── EncodeError (also UnicodeEncodeError)  a str the encoding cannot represent
    ├── ConnectError (also OSError)           TCP connect failed (names the host: proxy or target)
    ├── AccessDeniedError                     an access rule forbids the target
    ├── PortLimitError                        SOCKPMAX reached (Janus -109)
    ├── SocketClosedError                     the socket was closed by this side
    ├── SocketResetError (also ConnectionResetError)  the connection broke (Janus RESET)
    ├── IncompleteReadError                   EOF before ``recv_exactly`` had its bytes
    ├── SSLOnError                            ``ssl_on()`` failed; ``.code`` is a ReturnCode
    │   ├── NotSSLPortError       -110
    │   ├── HandshakeError        -111
    │   ├── PendingDataError      -112
    │   └── SSLOnOtherError       -149
    ├── ProxyRefusedError                     the proxy answered CONNECT with a non-2xx
    │   └── ProxyAuthenticationRequired       ... with 407 that janusnet could not answer
    └── ProxyProtocolError                    the proxy's reply was malformed / too big / cut

None of these carry credentials: tunnels build their messages from the proxy's host and
port only.
"""

from __future__ import annotations

import enum
import re
import ssl
import unicodedata
from collections.abc import Sequence
from typing import Final

__all__ = [
    "AccessDeniedError",
    "BusyError",
    "ConnectError",
    "EncodeError",
    "HandshakeError",
    "IncompleteReadError",
    "JanusnetError",
    "NotSSLPortError",
    "PendingDataError",
    "PortLimitError",
    "ProxyAuthenticationRequired",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ReturnCode",
    "SSLOnError",
    "SSLOnOtherError",
    "SocketClosedError",
    "SocketResetError",
    "UsageError",
]


class ReturnCode(enum.IntEnum):
    """The numeric codes Janus Sockets functions return, as an ``IntEnum``.

    ``ReturnCode.OK == 0``; the ``SSLOn`` codes are -110, -111, -112 and -149 exactly as
    ``$Sock_SSL_On`` documents them. The others are used by :mod:`janusnet.compat`.
    """

    OK = 0
    #: ``$Sock_Send``/``$Sock_Recv``: the socket is not open (ONRESET CONTINUE).
    NOT_OPEN = -1
    #: ``$Sock_Conn``: no free socket numbers.
    NO_FREE_SOCKET = -100
    #: ``$Sock_Conn`` (janusnet's choice; Janus's number is undocumented): an access rule
    #: forbids the target.
    ACCESS_DENIED = -101
    #: ``$Sock_Conn`` (janusnet's choice): name resolution or TCP connect failed/timed out.
    CONNECT_FAILED = -102
    #: ``$Sock_Conn`` (janusnet's choice): the ``SSL`` handshake at connect failed.
    CONNECT_TLS_FAILED = -103
    #: ``$Sock_Conn``: SOCKPMAX sockets are already open on this port.
    PORT_LIMIT = -109
    #: ``$Sock_SSL_On``: the port is not SSL-capable (needs SSL and SSLOPT).
    NOT_SSL_PORT = -110
    #: ``$Sock_SSL_On``: the TLS handshake failed.
    HANDSHAKE_FAILED = -111
    #: ``$Sock_SSL_On``: unread (plaintext) input is pending.
    PENDING_DATA = -112
    #: ``$Sock_SSL_On``: any other error.
    OTHER = -149


def _rebuild(
    cls: type[JanusnetError], args: tuple[object, ...], state: dict[str, object]
) -> JanusnetError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class JanusnetError(Exception):
    """Root of every error janusnet raises.

    Every janusnet error pickles with its data (an error raised in a worker process
    reaches the parent whole), although most take keyword-only arguments.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class UsageError(JanusnetError, ValueError):
    """The call itself is wrong (bad argument, bad token set, CR/LF in a host...).

    Raised before anything is sent, so nothing is lost.
    """


class EncodeError(UsageError, UnicodeEncodeError):
    """A ``str`` to send has characters the socket's encoding cannot represent (say, a
    euro sign on a ``cp037`` port): nothing is sent.

    Also a :class:`UnicodeEncodeError`, with its ``encoding``, ``object``, ``start``,
    ``end`` and ``reason``, so code written for the codec's own error still catches it.
    """


_UNPRINTABLE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: Unicode categories shown escaped as well: format characters (bidirectional overrides
#: and isolates, zero-width characters), line and paragraph separators, surrogates and
#: unassigned code points.
_HIDDEN: Final = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int = 200) -> str:
    """Text a peer sent (a reason phrase, a header), safe for a message, a log line or a
    terminal: control characters (C0 but tab, DEL, C1) as ``\\xNN`` escapes, so an escape
    sequence cannot retitle, clear or repaint an operator's terminal; Unicode characters
    that reorder or hide text (a right-to-left override, a line separator: "Trojan
    Source") as ``\\uNNNN``, so a line cannot pose as another; cut at ``limit``."""
    shown = _UNPRINTABLE.sub(lambda match: _escaped(match.group()), text[:limit])
    if not shown.isascii():  # (escapes only lengthen: the first ``limit`` characters do)
        shown = "".join(
            _escaped(char) if char > "\x9f" and unicodedata.category(char) in _HIDDEN else char
            for char in shown
        )
    return shown if len(shown) <= limit and len(text) <= limit else shown[:limit] + "..."


#: What stands in for credentials in text a proxy sent back.
WITHHELD: Final = "[credentials withheld]"


def withhold(text: str, forms: tuple[str, ...]) -> str:
    """``text`` with every credential form in it (``forms``, longest first) replaced by
    :data:`WITHHELD`."""
    for form in forms:
        if form in text:
            text = text.replace(form, WITHHELD)
    return text


#: The shortest start of a credential form that a cut text may end in and still be
#: withheld (shorter starts tell nothing).
_PARTIAL_FORM: Final = 4


def withhold_cut(text: str, forms: tuple[str, ...]) -> str:
    """:func:`withhold` for text that may stop inside a credential (the part of a line
    that arrived, or what was kept of it): also an end that is the start of a form."""
    text = withhold(text, forms)
    for form in forms:
        for size in range(min(len(form) - 1, len(text)), _PARTIAL_FORM - 1, -1):
            if text.endswith(form[:size]):
                return text[:-size] + WITHHELD
    return text


def withhold_from_error(exc: BaseException, forms: tuple[str, ...]) -> None:
    """Cut the credentials out of an error and its chain (their text may quote what a
    proxy sent, such as a malformed status line, or a plain-text answer to a
    ClientHello, that echoes them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(
            withhold(arg, forms) if isinstance(arg, str) else arg for arg in current.args
        )
        current = current.__cause__ or current.__context__


def show_address(host: str, port: int) -> str:
    """``host:port`` for messages, an IPv6 address in brackets (``[::1]:443``)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def check_size(value: object, what: str, minimum: int = 0) -> None:
    """Refuse anything but an ``int`` >= ``minimum`` (``bool`` and ``float`` included).

    Raises:
        UsageError: naming ``what`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{what} must be an int >= {minimum}, not {value!r}")


def check_ssl_context(context: object, what: str = "ssl_context") -> None:
    """Refuse anything but a client-side :class:`ssl.SSLContext` or ``None``.

    A server-side context (``Purpose.CLIENT_AUTH``, ``PROTOCOL_TLS_SERVER``) would fail
    the handshake and close the socket (-111) for a local mistake: refused before any
    I/O instead.

    Raises:
        UsageError: naming ``what`` and the value.
    """
    if context is None:
        return
    if not isinstance(context, ssl.SSLContext):
        raise UsageError(f"{what} must be an ssl.SSLContext or None, not {context!r}")
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise UsageError(
            f"{what} is a server-side context (PROTOCOL_TLS_SERVER); a client needs one "
            "made with ssl.create_default_context() (Purpose.SERVER_AUTH)"
        )


def check_server_hostname(value: object) -> None:
    """Refuse a ``server_hostname`` that is neither a non-empty ``str`` nor ``None``
    (``""`` is refused as the ``ssl`` module refuses it, not read as "the default").

    Raises:
        UsageError: naming the value.
    """
    if value is not None and (not isinstance(value, str) or not value):
        raise UsageError(f"server_hostname must be a non-empty str or None, not {value!r}")


def check_timeout(value: object, what: str = "timeout") -> None:
    """Refuse anything but ``None`` or a number of seconds >= 0 (not NaN, not ``bool``).

    Raises:
        UsageError: naming ``what`` and the value.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise UsageError(f"{what} must be a number of seconds >= 0 or None, not {value!r}")


class BusyError(UsageError):
    """Another task is already receiving (or sending) on this socket.

    Two concurrent receivers would interleave each other's records, and two senders each
    other's bytes, so the second one is refused instead.
    """


class ConnectError(JanusnetError, OSError):
    """The TCP connection could not be established.

    Attributes:
        host: the host janusnet tried to reach (the proxy, for a tunnel).
        port: its port.
        role: ``"target"`` for a direct connect, ``"proxy"`` for a tunnel's proxy.
        errno: the system error number of the failure (``ECONNREFUSED``, ``EMFILE``
            when the process has no free descriptor...) when it had one, as for any
            ``OSError``; else ``None``. The failure itself is ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        role: str = "target",
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.role = role
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


class AccessDeniedError(JanusnetError):
    """An access rule of the client port forbids this host and port (JANUS CLSOCK DISALLOW).

    Raised before any packet is sent.

    Attributes:
        host: the refused host (as given, or the address it resolved to).
        port: the refused port.
        port_name: the name of the :class:`~janusnet.ClientPort`.
    """

    def __init__(self, message: str, *, host: str, port: int, port_name: str) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.port_name = port_name


class PortLimitError(JanusnetError):
    """The client port already has ``max_sockets`` open sockets (Janus SOCKPMAX, -109).

    Attributes:
        code: ``ReturnCode.PORT_LIMIT``.
        port_name: the name of the client port.
        limit: the port's ``max_sockets``.
    """

    code = ReturnCode.PORT_LIMIT

    def __init__(self, message: str, *, port_name: str, limit: int) -> None:
        super().__init__(message)
        self.port_name = port_name
        self.limit = limit


class SocketClosedError(JanusnetError):
    """The operation needs an open socket and this one was closed (by this side or by a
    failed handshake)."""


class SocketResetError(JanusnetError, ConnectionResetError):
    """The connection broke: reset by the peer, or an I/O error (the Janus RESET state).

    The original error is the ``__cause__``.
    """


class IncompleteReadError(JanusnetError):
    """The stream ended before ``recv_exactly`` got all its bytes: the peer closed the
    connection, or the socket's ``receive_window`` (Janus ``RECVLIM``) was spent.

    Attributes:
        partial: the bytes that did arrive (they are not lost).
        expected: how many bytes were asked for.
        window_spent: ``True`` when the receive window ended it (the connection is
            still open), ``False`` when the peer closed.
    """

    def __init__(self, partial: bytes, expected: int, *, window_spent: bool = False) -> None:
        why = "receive window spent" if window_spent else "connection closed"
        super().__init__(f"{why} after {len(partial)} of {expected} bytes")
        self.partial = partial
        self.expected = expected
        self.window_spent = window_spent


class SSLOnError(JanusnetError):
    """``ssl_on()`` failed. ``code`` is the :class:`ReturnCode` ``$Sock_SSL_On`` returns."""

    code: ReturnCode = ReturnCode.OTHER


class NotSSLPortError(SSLOnError):
    """-110: the socket's client port does not allow an upgrade (Janus: no ``SSLOPT``):
    ``TLSMode.NEVER``, or ``TLSMode.ALWAYS`` (TLS since connect); the socket is
    unchanged."""

    code = ReturnCode.NOT_SSL_PORT


class HandshakeError(SSLOnError):
    """-111: the peer did not complete a TLS handshake, or its certificate or host name
    failed verification. The socket is closed."""

    code = ReturnCode.HANDSHAKE_FAILED


class PendingDataError(SSLOnError):
    """-112: unread bytes are buffered. They came over the plaintext hop and must never be
    read as if they came over TLS. The socket is unchanged and still usable, so the caller
    can drain it (``recv``) and call ``ssl_on()`` again.

    Attributes:
        pending: how many unread bytes were found (buffered, or waiting in the transport;
            for the latter, up to one read's worth is counted).
    """

    code = ReturnCode.PENDING_DATA

    def __init__(self, message: str, *, pending: int) -> None:
        super().__init__(message)
        self.pending = pending


class SSLOnOtherError(SSLOnError):
    """-149: anything else (already TLS, already closed, reset during the handshake)."""

    code = ReturnCode.OTHER


class ProxyRefusedError(JanusnetError):
    """The proxy answered ``CONNECT`` with a status outside 2xx.

    This is the proxy speaking, never the origin: the reply is kept in this exception and
    never presented as origin data (the Pretty-Bad-Proxy lesson).

    Attributes:
        status: the HTTP status code.
        reason: the reason phrase (may be empty), each byte as the character of the same
            code (latin-1), as HTTP defines it; the message shows it as UTF-8 when it is.
        headers: the reply's headers as ``(name, value)`` string pairs, in order.
        proxy: ``host:port`` of the proxy (never with credentials).
        detail: janusnet's explanation, when it has one (for a 407: no credentials
            given, the credentials sent were rejected, or a scheme janusnet does not
            answer); never contains credentials.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        proxy: str = "",
        detail: str = "",
    ) -> None:
        where = f" {proxy}" if proxy else ""
        try:  # ``reason`` holds the wire bytes as latin-1; most proxies mean UTF-8
            shown = reason.encode("latin-1").decode("utf-8")
        except UnicodeError:
            shown = reason
        message = f"proxy{where} refused CONNECT: {status} {printable(shown)}".rstrip()
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail
        self.status = status
        self.reason = reason
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        self.proxy = proxy


class ProxyAuthenticationRequired(ProxyRefusedError):
    """The proxy answered 407 and janusnet had no (or no accepted) answer to its challenge.

    Attributes:
        challenges: each ``Proxy-Authenticate`` header value, in order.
    """

    @property
    def challenges(self) -> tuple[str, ...]:
        """Each ``Proxy-Authenticate`` challenge the proxy sent."""
        return tuple(v for k, v in self.headers if k.lower() == "proxy-authenticate")


class ProxyProtocolError(JanusnetError):
    """The proxy's reply to CONNECT was malformed, too large, or cut short.

    Attributes:
        proxy: ``host:port`` of the proxy.
    """

    def __init__(self, message: str, *, proxy: str = "") -> None:
        super().__init__(message)
        self.proxy = proxy

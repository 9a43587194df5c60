"""``$Sock_*``-style functions for line-by-line ports of User Language / SOUL code.

The rest of janusnet raises exceptions; this module answers with the legacy numbers
instead, so a SOUL program can be ported one statement at a time::

    num = await compat.sock_conn(port, proxy_host, proxy_port)      # %num = $Sock_Conn(...)
    compat.sock_set(num, "LINEND", "0D0A")                         # $Sock_Set(%num, ...)
    await compat.sock_sendln(num, "CONNECT example.com:443 HTTP/1.0")
    count, line, index = await compat.sock_recvprs(num)            # $Sock_RecvPrs(...)

Sockets are numbered as Janus numbers them: client sockets from 2 up (1 is the Janus
server socket), the lowest free number first, released by :func:`sock_close`. The numbers
live in the process-wide :data:`registry` (a :class:`~janusnet.SocketGroup`, which is what
``-1`` = "every relevant socket" addresses). A socket whose connection broke keeps its
number, in state ``RESET``, until it is closed, as in Janus.

Translating the rest of the SOUL calling conventions
----------------------------------------------------
* Python has no ``%variables`` passed by reference: receives *return* ``(count, data)``
  (:func:`sock_recv`) or ``(count, data, prsindx)`` (:func:`sock_recvprs`).
* ``CHAR`` (the default) / ``BINARY``: in ``CHAR`` mode ``str`` payloads are encoded, and
  received data is decoded, with the socket's codec (``XTAB``); in ``BINARY`` mode received
  data is ``bytes`` and a ``str`` payload is sent as Latin-1 (code point = byte, no
  translation). ``bytes`` payloads are always sent as they are. Tokens and line ends are
  raw bytes in both modes, as in Janus. As Janus's tables, ``CHAR`` translation of
  received data never fails and loses nothing: a byte the codec cannot decode (invalid
  UTF-8, or half of a character a ``maxbytes`` cut) comes back as a lone surrogate
  (Python's ``surrogateescape``: ``text.encode(codec, "surrogateescape")`` gives the exact
  bytes), and a ``CHAR`` send turns such text back into the same bytes.
* ONRESET: these functions behave as ``ONRESET CONTINUE`` (-1 or ``"RESET"``). What Janus
  would answer by cancelling the request (a socket number not in use, an unknown keyword, a
  bad value, ``SendLn`` with ``LINEND NONE``) raises :class:`~janusnet.UsageError`.

``$Sock_Conn`` return codes
---------------------------
Janus documents only -100 and -109; the others are janusnet's choices (in
:class:`~janusnet.ReturnCode`), kept in the -1xx range ``$Sock_Conn`` uses:

* ``-100`` ``NO_FREE_SOCKET``: the registry's ``max_sockets`` numbers are all in use.
* ``-101`` ``ACCESS_DENIED``: the port's access rules forbid the target (nothing sent).
* ``-102`` ``CONNECT_FAILED``: name resolution or TCP connect failed, or timed out.
* ``-103`` ``CONNECT_TLS_FAILED``: the ``SSL`` handshake at connect failed (socket closed).
* ``-109`` ``PORT_LIMIT``: the port's ``max_sockets`` (SOCKPMAX) is reached.
"""

from __future__ import annotations

import ssl
from typing import Final

from ._compat_io import sock_recv, sock_recvprs, sock_send, sock_sendln
from ._compat_registry import (
    SocketRegistry,
    apply_setting,
    info_value,
    parse_options,
    parse_setting,
    registry,
)
from ._exceptions import (
    AccessDeniedError,
    ConnectError,
    JanusnetError,
    PortLimitError,
    ReturnCode,
    SSLOnError,
    UsageError,
)
from ._ports import DEFAULT_PORT, ClientPort, TLSMode
from ._socket import DEFAULT_HANDSHAKE_TIMEOUT, TLS_PHASE, Socket, SocketState

#: The options ``$Sock_Conn`` takes.
CONN_OPTIONS: Final = frozenset({"SSL", "NOSSL", "NOFINCLOSE"})

__all__ = [
    "SocketRegistry",
    "define_port",
    "get_socket",
    "registry",
    "sock_close",
    "sock_conn",
    "sock_info",
    "sock_num",
    "sock_recv",
    "sock_recvprs",
    "sock_send",
    "sock_sendln",
    "sock_set",
    "sock_ssl_on",
]

_ports: dict[str, ClientPort] = {}
_master: list[ClientPort] = [DEFAULT_PORT]


def define_port(port: ClientPort, *, master: bool = False) -> None:
    """Make ``port`` known by its name to :func:`sock_conn` (``JANUS DEFINE``).

    Args:
        port: the port; its ``name`` is matched case-insensitively.
        master: make it the default port (``MASTER``), used when no port is named.

    Raises:
        UsageError: ``port`` is not a :class:`~janusnet.ClientPort`.
    """
    if not isinstance(port, ClientPort):
        raise UsageError(f"define_port needs a ClientPort, not {port!r}")
    _ports[port.name.upper()] = port
    if master:
        _master[0] = port


def get_socket(num: int) -> Socket:
    """The :class:`~janusnet.Socket` behind a number (``GetSocketObject``).

    Raises:
        UsageError: no socket has that number.
    """
    return registry.get(num)


def _resolve_port(port_or_name: ClientPort | str | None) -> ClientPort:
    if isinstance(port_or_name, ClientPort):
        return port_or_name
    if not port_or_name:
        return _master[0]
    if not isinstance(port_or_name, str):
        raise UsageError(f"a client port or its name is needed, not {port_or_name!r}")
    try:
        return _ports[port_or_name.upper()]
    except KeyError:
        raise UsageError(f"no client port named {port_or_name!r} (see define_port)") from None


async def sock_conn(
    port_or_name: ClientPort | str | None,
    host: str,
    port: int,
    options: str = "",
    *,
    timeout: float | None = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Connect and number the socket (``$Sock_Conn``).

    Args:
        port_or_name: a :class:`~janusnet.ClientPort`, the name of one given to
            :func:`define_port`, or ``None``/``""`` for the master port.
        host: the remote host.
        port: the remote port.
        options: ``SSL`` or ``NOSSL`` (default: the port decides, plain on an OPTIONAL
            port) and ``NOFINCLOSE``; ``FINCLOSE`` is not supported.
        timeout: deadline over connect (+ handshake), in seconds.
        ssl_context: the context for an ``SSL`` handshake (default: the port's).

    Returns:
        The socket number (>= 2), or a negative code (see the module docstring).

    Raises:
        UsageError: unknown port name or option, an option contradicting the port, a bad
            host or port (Janus would cancel the request).

    Cancellation closes whatever was opened and propagates.
    """
    client_port = _resolve_port(port_or_name)
    flags = parse_options(options, CONN_OPTIONS)
    if {"SSL", "NOSSL"} <= flags:
        raise UsageError("$Sock_Conn: SSL and NOSSL contradict each other")
    tls = True if "SSL" in flags else False if "NOSSL" in flags else None
    if tls and client_port.tls is TLSMode.NEVER:
        raise UsageError(f"$Sock_Conn: SSL on port {client_port.name!r}, which has no SSL")
    if tls is False and client_port.tls is TLSMode.ALWAYS:
        raise UsageError(f"$Sock_Conn: NOSSL on port {client_port.name!r}, which needs SSL")
    if registry.is_full:
        return ReturnCode.NO_FREE_SOCKET
    try:
        sock = await Socket.connect(
            host, port, client_port=client_port, tls=tls, timeout=timeout, ssl_context=ssl_context
        )
    except PortLimitError:
        return ReturnCode.PORT_LIMIT
    except AccessDeniedError:
        return ReturnCode.ACCESS_DENIED
    except ConnectError:
        return ReturnCode.CONNECT_FAILED
    except TimeoutError as exc:  # -103 when the deadline expired during the handshake
        tls_phase = f"during the {TLS_PHASE}" in str(exc)
        return ReturnCode.CONNECT_TLS_FAILED if tls_phase else ReturnCode.CONNECT_FAILED
    except SSLOnError:
        return ReturnCode.CONNECT_TLS_FAILED
    if registry.is_full:  # other sock_conn calls took the last numbers while we connected
        await sock.aclose()
        return ReturnCode.NO_FREE_SOCKET
    registry.add(sock)
    return registry.number_of(sock)


def sock_set(num: int, keyword: str, value: str | int | None = None) -> str:
    """Change a setting; answer the previous value (``$Sock_Set``).

    Keywords: ``LINEND`` (hex, e.g. ``"0D0A"``, or ``"NONE"``), ``PRSTOK`` (``"0D0A"``,
    ``"AMBIG|0D0A|0D"`` or ``"NONE"``), ``CHAR`` / ``BINARY`` (no value; the previous
    mode is answered), ``RECVLIM`` (bytes, ``0`` = no limit; reads back the bytes still
    allowed) and ``XTAB`` (a Python codec name for the remote charset, e.g. ``"cp037"``;
    ``"STANDARD"`` means ``latin-1``, byte-transparent ASCII).

    Args:
        num: the socket number, or ``-1`` for every open socket.
        keyword: the setting.
        value: the new value (none for ``CHAR``/``BINARY``).

    Returns:
        The previous value; ``"RESET"`` (and nothing changed) when the socket is not open;
        for ``num = -1``, how many sockets changed, as a decimal string.

    Raises:
        UsageError: unknown number or keyword, a missing or bad value.
    """
    key, checked = parse_setting(keyword, value)
    if num == -1:
        changed = 0
        for sock in registry.select_open():
            changed += apply_setting(registry, sock, key, checked) != info_value(
                registry, sock, key
            )
        return str(changed)
    sock = registry.get(num)
    if sock.state is SocketState.RESET:
        return "RESET"
    return apply_setting(registry, sock, key, checked)


def sock_info(num: int, keyword: str) -> str:
    """Read a setting or the state (``$Sock_Info``).

    Keywords: ``STAT`` (``CONN``, ``FINR``, ``FINS``, ``FINBOTH`` or ``RESET``),
    ``REMOTE`` (``"address port"`` of the TCP peer) and every :func:`sock_set` keyword
    (``CHAR`` and ``BINARY`` both answer the current mode).

    Returns:
        The value; ``"RESET"`` for any keyword when the socket is not open.

    Raises:
        UsageError: unknown number or keyword.
    """
    sock = registry.get(num)
    if not isinstance(keyword, str):
        raise UsageError(f"$Sock_Info needs a keyword, not {keyword!r}")
    key = keyword.strip().upper()
    if key == "STAT":
        return sock.state.value
    if key == "REMOTE":
        address = sock.remote_address
        if sock.state is SocketState.RESET or address is None:
            return "RESET"
        return f"{address[0]} {address[1]}"
    value = info_value(registry, sock, key)
    return "RESET" if sock.state is SocketState.RESET else value


async def sock_ssl_on(
    num: int,
    *,
    server_hostname: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> int:
    """Upgrade to TLS in place (``$Sock_SSL_On``).

    Args:
        num: the socket number, or ``-1`` for every open, not-yet-TLS socket (upgraded
            concurrently by :meth:`SocketGroup.ssl_on_all`).
        server_hostname: the name to verify (default: the host given to ``sock_conn``).
        ssl_context: the context (default: the port's).
        timeout: the handshake's deadline, in seconds (``None`` for none); a peer that
            does not finish in time is -111 (the socket is closed), as ``$Sock_SSL_On``
            answers with a code, never an exception.

    Returns:
        0, -110, -111, -112 or -149. For ``-1``: 0 when every relevant socket was upgraded
        (or none was relevant), else the code of the lowest-numbered socket that failed.
        A socket that failed -111 is closed, its number kept until :func:`sock_close`.

    Raises:
        UsageError: no socket has that number.

    Cancellation closes the socket(s) being upgraded and propagates.
    """
    if num == -1:
        results = await registry.ssl_on_all(
            server_hostname=server_hostname, ssl_context=ssl_context, timeout=timeout
        )
        failed = sorted((registry.number_of(s), code) for s, code in results.items() if code)
        return failed[0][1] if failed else ReturnCode.OK
    sock = registry.get(num)
    try:
        await sock.ssl_on(
            server_hostname=server_hostname, ssl_context=ssl_context, timeout=timeout
        )
    except SSLOnError as exc:
        return exc.code
    except TimeoutError:  # the peer did not finish the handshake; the socket is closed
        return ReturnCode.HANDSHAKE_FAILED
    except JanusnetError:
        return ReturnCode.OTHER
    return ReturnCode.OK


async def sock_close(num: int) -> int:
    """Close the socket and free its number (``$Sock_Close``).

    Args:
        num: the socket number, or ``-1`` for all.

    Returns:
        1 (Janus semantics), also for a socket that was already ``RESET``.

    Raises:
        UsageError: no socket has that number.

    Cancellation cannot stop it: the close is shielded.
    """
    if num == -1:
        await registry.aclose()
        return 1
    sock = registry.get(num)
    try:
        await sock.aclose()
    finally:  # (closed even when cancelled; a sock_close(-1) meanwhile may have freed it)
        registry.discard(sock)
    return 1


def sock_num(selection: str = "ANY") -> str:
    """The numbers of the sockets in a state (``$Sock_Num``), ascending, blank-separated.

    Args:
        selection: ``ANY``, ``OPEN``, ``CONN``, ``FINR``, ``FINS``, ``FINBOTH`` or
            ``RESET``, each optionally preceded by ``NOT``, combined with ``OR`` (e.g.
            ``"FINR OR FINBOTH"``, ``"NOT RESET"``).

    Returns:
        e.g. ``"2 3"``; ``""`` when none match.

    Raises:
        UsageError: a malformed selection (``CAPTURE``/``CAPOPEN`` are not supported).
    """
    return " ".join(str(n) for n in registry.numbers_matching(selection))

"""SocketGroup: many sockets handled as one (the Janus ``sockNum = -1`` semantics).

Theory of operation
-------------------
Janus lets several ``$Sock_*`` functions take ``-1`` for "every relevant socket":
``$Sock_SSL_On(-1)`` upgrades them all, ``$Sock_Set(-1, ...)`` changes them all and answers
how many changed, ``$Sock_Close(-1)`` closes them all. A :class:`SocketGroup` is the explicit
version of that "all": a set of sockets (insertion-ordered, compared by identity) with the
same collective operations.

``ssl_on_all()`` runs the handshakes concurrently (an anyio task group, at most
``max_concurrency`` at once through a ``CapacityLimiter``) and never lets one socket's
failure disturb the others: every failure becomes that socket's
:class:`~janusnet.ReturnCode` in the result, and each socket is left exactly as
:meth:`Socket.ssl_on` leaves it (refused calls: unchanged; failed handshakes: closed).

A group only holds references: closing a member elsewhere does not remove it (it then
shows as ``RESET``, like a Janus socket that is dead but not yet closed).
"""

from __future__ import annotations

import ssl  # at run time: typing.get_type_hints() resolves hints
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Final

import anyio

from ._exceptions import (
    JanusnetError,
    ReturnCode,
    SSLOnError,
    UsageError,
    check_server_hostname,
    check_ssl_context,
    check_timeout,
)
from ._ports import ClientPort, check_encoding
from ._scan import TokenSet, as_token_set
from ._socket import DEFAULT_HANDSHAKE_TIMEOUT, Socket, SocketState

__all__ = ["OPEN_STATES", "SocketGroup"]

#: The Janus OPEN states: everything but RESET (Janus advises testing "not RESET" because
#: more OPEN sub-states may be added).
OPEN_STATES: Final = frozenset(
    {SocketState.CONNECTED, SocketState.FIN_RECEIVED, SocketState.FIN_SENT, SocketState.FIN_BOTH}
)
#: Default cap on concurrent handshakes in ``ssl_on_all``: enough to hide round-trip
#: latency, few enough not to burst a proxy's or origin's accept queue.
DEFAULT_MAX_CONCURRENCY: Final = 16


class SocketGroup:
    """A set of sockets handled together (Janus ``sockNum = -1``).

    Members keep the order they were added in and are compared by identity. Use the group
    as an async context manager to close every member on exit::

        async with janusnet.SocketGroup() as group:
            for host in hosts:
                await group.connect(host, 25, client_port=port)
            results = await group.ssl_on_all()

    Args:
        sockets: initial members.
    """

    def __init__(self, sockets: Iterable[Socket] = ()) -> None:
        self._members: dict[Socket, None] = {}
        for sock in sockets:
            self.add(sock)

    # ------------------------------------------------------------------ membership

    def add(self, sock: Socket) -> None:
        """Add ``sock`` (adding a member again changes nothing).

        Raises:
            UsageError: ``sock`` is not a :class:`Socket`.
        """
        if not isinstance(sock, Socket):
            raise UsageError(f"a SocketGroup holds Socket objects, not {type(sock).__name__}")
        self._members[sock] = None

    def remove(self, sock: Socket) -> None:
        """Remove ``sock`` from the group (it is not closed).

        Raises:
            KeyError: ``sock`` is not a member.
        """
        del self._members[sock]

    def discard(self, sock: Socket) -> None:
        """Remove ``sock`` if it is a member (it is not closed)."""
        if sock in self._members:
            self.remove(sock)

    def __iter__(self) -> Iterator[Socket]:
        return iter(list(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, sock: object) -> bool:
        return sock in self._members

    def __repr__(self) -> str:
        states = ", ".join(s.state.value for s in self._members)
        return f"<janusnet.SocketGroup {len(self)} socket(s): [{states}]>"

    def select(self, *states: SocketState) -> list[Socket]:
        """The members in any of ``states`` (Janus ``$Sock_Num``), in insertion order.

        Args:
            *states: the states to select; none selects every member. Pass
                ``*janusnet.OPEN_STATES`` (or call :meth:`select_open`) for Janus ``OPEN``.

        Returns:
            The matching sockets.

        Raises:
            UsageError: a state is not a :class:`SocketState` (``"CONN"`` would match
                nothing; Janus's names are ``SocketState`` members here).
        """
        if not states:
            return list(self._members)
        for state in states:
            if not isinstance(state, SocketState):
                raise UsageError(
                    f"select() takes SocketState members (SocketState.CONNECTED...), not {state!r}"
                )
        wanted = frozenset(states)
        return [sock for sock in self._members if sock.state in wanted]

    def select_open(self) -> list[Socket]:
        """The members that are not ``RESET`` (Janus ``OPEN``), in insertion order."""
        return self.select(*OPEN_STATES)

    # ------------------------------------------------------------------ connecting

    async def connect(
        self,
        host: str,
        port: int,
        *,
        client_port: ClientPort | None = None,
        tls: bool | None = None,
        timeout: float | None = 30.0,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
    ) -> Socket:
        """:meth:`Socket.connect`, then add the socket to the group.

        Args:
            host: a host name or IP address.
            port: the TCP port.
            client_port: as :meth:`Socket.connect`.
            tls: as :meth:`Socket.connect`.
            timeout: as :meth:`Socket.connect`.
            server_hostname: as :meth:`Socket.connect`.
            ssl_context: as :meth:`Socket.connect`.
            local_address: as :meth:`Socket.connect`.
            socket_options: as :meth:`Socket.connect`.

        Returns:
            The connected socket, now a member.

        Raises:
            UsageError: as :meth:`Socket.connect`.
            NotSSLPortError: as :meth:`Socket.connect`.
            AccessDeniedError: as :meth:`Socket.connect`.
            PortLimitError: as :meth:`Socket.connect`.
            ConnectError: as :meth:`Socket.connect`.
            HandshakeError: as :meth:`Socket.connect`.
            SSLOnOtherError: as :meth:`Socket.connect`.
            TimeoutError: as :meth:`Socket.connect`.

        Cancellation closes whatever was opened; the group is unchanged.
        """
        sock = await Socket.connect(
            host,
            port,
            client_port=client_port,
            tls=tls,
            timeout=timeout,
            server_hostname=server_hostname,
            ssl_context=ssl_context,
            local_address=local_address,
            socket_options=socket_options,
        )
        self.add(sock)
        return sock

    # ------------------------------------------------------------------ collective operations

    async def ssl_on_all(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        total_timeout: float | None = None,
    ) -> dict[Socket, ReturnCode]:
        """Upgrade every relevant member to TLS, concurrently (Janus ``$Sock_SSL_On(-1)``).

        Relevant means open (not ``RESET``) and not TLS yet; the others are skipped and are
        not in the result. The members are those of the group when the call starts (one
        added meanwhile is not upgraded); which of them gets a free slot first is the
        backend's choice (trio shuffles), so with ``total_timeout`` which ones were still
        waiting may differ from run to run. Each socket ends as :meth:`Socket.ssl_on`
        leaves it: upgraded; unchanged after -110, -112 or a refused -149; closed after
        -111 or a -149 during the handshake.

        Args:
            max_concurrency: how many handshakes may run at once (>= 1).
            server_hostname: passed to every ``ssl_on()``; by default each socket verifies
                its own host name.
            ssl_context: passed to every ``ssl_on()``; by default each socket's port decides.
            timeout: each handshake's deadline, in seconds (``None`` for none); a member
                whose peer does not finish in time gets -111 and is closed, the others
                go on. It starts when that handshake starts: with ``max_concurrency``
                slots taken by stalling peers the call can last many times ``timeout``.
            total_timeout: one deadline over the whole call, in seconds (``None``, the
                default, for none). When it expires, handshakes in flight are stopped
                (-111, closed) and members still waiting for a slot are left as they
                were (-149); every relevant member still gets its code.

        Returns:
            ``{socket: code}`` for every relevant socket, in membership order:
            ``ReturnCode.OK`` or the ``SSLOnError`` code (``HANDSHAKE_FAILED`` for a
            handshake past its deadline, ``ReturnCode.OTHER`` for any other janusnet
            error).

        Raises:
            UsageError: ``max_concurrency`` is not an int >= 1, or ``ssl_context``,
                ``server_hostname``, ``timeout`` or ``total_timeout`` is of the wrong type
                (no member is touched).

        Cancellation cancels the handshakes in flight (those sockets are closed, as
        ``ssl_on()`` does) and propagates; no result is returned.
        """
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise UsageError(f"max_concurrency must be an int >= 1, not {max_concurrency!r}")
        check_ssl_context(ssl_context)
        check_timeout(timeout)
        check_timeout(total_timeout, "total_timeout")
        check_server_hostname(server_hostname)
        relevant = [s for s in self._members if s.tls is None and s.state in OPEN_STATES]
        results: dict[Socket, ReturnCode] = dict.fromkeys(relevant, ReturnCode.OTHER)
        limiter = anyio.CapacityLimiter(max_concurrency)

        async def upgrade(sock: Socket) -> None:
            async with limiter:
                try:
                    await sock.ssl_on(
                        server_hostname=server_hostname, ssl_context=ssl_context, timeout=timeout
                    )
                except anyio.get_cancelled_exc_class():
                    # total_timeout (or the caller's cancellation): ssl_on() closed it if
                    # its handshake had started; if not, it is as it was (-149).
                    results[sock] = (
                        ReturnCode.HANDSHAKE_FAILED if sock.closed else ReturnCode.OTHER
                    )
                    raise
                except SSLOnError as exc:
                    results[sock] = exc.code
                except TimeoutError:  # the peer did not finish the handshake; sock closed
                    results[sock] = ReturnCode.HANDSHAKE_FAILED
                except JanusnetError:
                    results[sock] = ReturnCode.OTHER
                else:
                    results[sock] = ReturnCode.OK

        with anyio.move_on_after(total_timeout):
            async with anyio.create_task_group() as tg:
                for sock in relevant:
                    tg.start_soon(upgrade, sock)
        return results

    def apply_settings(
        self,
        *,
        line_end: bytes | None = None,
        parse_tokens: TokenSet | Iterable[bytes] | str | None = None,
        encoding: str | None = None,
    ) -> int:
        """Change settings on every open member (Janus ``$Sock_Set(-1, ...)``).

        Arguments left as ``None`` are not changed. Every value is checked before any
        socket is touched, so a bad one changes nothing.

        Args:
            line_end: the new ``line_end`` (non-empty bytes).
            parse_tokens: the new ``parse_tokens`` (list of bytes, TokenSet or PRSTOK).
            encoding: the new ``encoding`` (a Python codec name).

        Returns:
            How many sockets changed (a socket that already had every value is not
            counted, nor is a ``RESET`` one).

        Raises:
            UsageError: an empty line end, bad tokens or an unknown codec.
        """
        if line_end is not None and (not isinstance(line_end, bytes) or not line_end):
            raise UsageError("line_end must be non-empty bytes such as b'\\r\\n'")
        tokens = None if parse_tokens is None else as_token_set(parse_tokens)
        if encoding is not None:
            check_encoding(encoding)
        changed = 0
        for sock in self.select_open():
            before = (sock.line_end, sock.parse_tokens, sock.encoding)
            if line_end is not None:
                sock.line_end = line_end
            if tokens is not None:
                sock.parse_tokens = tokens
            if encoding is not None:
                sock.encoding = encoding
            if (sock.line_end, sock.parse_tokens, sock.encoding) != before:
                changed += 1
        return changed

    async def aclose(self) -> None:
        """Close every member and empty the group (Janus ``$Sock_Close(-1)``).

        Never raises for a broken connection. The members close at once, each as
        :meth:`Socket.aclose` does (waiting for bytes the kernel has not sent yet: the
        waits run side by side, not one after another); cancellation ends the waits,
        and every member is closed all the same.

        Raises:
            Nothing of its own: a broken or already closed member is closed quietly.
        """
        members = list(self._members)
        try:
            async with anyio.create_task_group() as tg:
                for sock in members:
                    tg.start_soon(sock.aclose)
        finally:
            for sock in members:  # (cancelled: any left, now)
                if not sock.closed:
                    with anyio.CancelScope(shield=True):
                        await sock._close_stream(wait=False)
                self.discard(sock)

    async def __aenter__(self) -> SocketGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

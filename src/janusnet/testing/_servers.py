"""The machinery shared by the in-process test servers: a private asyncio loop in a thread.

Theory of operation
-------------------
The servers in :mod:`janusnet.testing` serve tests that run on *any* event loop: pytest-asyncio
(asyncio), anyio's pytest plugin (asyncio or trio) and plain synchronous tests. So a server
never runs on the test's loop. Each one owns a daemon thread running its own asyncio loop
(``asyncio.run``) and is started and stopped *synchronously*, as a context manager, which lets
a plain sync pytest fixture hand it to an async test of any flavour.

Every accepted connection gets one handler task, registered in ``_handlers``. Its life is
bounded by ``connection_timeout`` (a timer cancels it), and it owns every transport it opens
(see :class:`Connection`). On stop the listening sockets close first, then every handler is
cancelled, which aborts its transports; the loop runs until they are gone and ``asyncio.run``
closes it; finally the thread is joined. Nothing is left for the garbage collector, so
``filterwarnings = error`` never sees a ``ResourceWarning`` from a server.

Only loopback addresses may be served, and the proxy only ever connects to loopback targets:
a test server must never reach, or relay to, anything else. A ``dual_stack`` server listens on
``127.0.0.1`` *and* ``::1`` (where the machine has IPv6 loopback) with one port number: the OS
picks a free port for the first address, and when that port is taken on the second one, it is
given up and another one is tried (:data:`BIND_ATTEMPTS` times).

``errors`` belongs to the test that is running: :meth:`BackgroundServer.reset_history` starts
a new *generation*, and a handler that fails reports into ``errors`` only if its connection
was accepted in the current generation (older ones are logged), so a connection a test left
behind cannot fail the next test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import logging
import socket
import ssl
import struct
import sys
import threading
import traceback
from types import TracebackType
from typing import Final, TypeVar

__all__ = ["byte_pattern"]

_log = logging.getLogger("janusnet.testing")

READ_SIZE: Final = 65536
"""Bytes per read when relaying or echoing: large enough for 16 MiB in well under a second."""

STREAM_LIMIT: Final = 65536
"""``StreamReader`` limit, which also caps a request head (``readuntil``) at 64 KiB."""

START_TIMEOUT: Final = 10.0
"""Seconds ``start()`` waits for the thread to be listening (a loaded CI box needs slack)."""

STOP_TIMEOUT: Final = 10.0
"""Seconds ``stop()`` waits for the thread; cancellation makes the real figure milliseconds."""

CLOSE_TIMEOUT: Final = 2.0
"""Seconds a graceful close (TLS close_notify, FIN) may take before the transport is aborted."""

DEFAULT_CONNECTION_TIMEOUT: Final = 60.0
"""Overall cap on one connection's handler: a safety net, far above any test's needs."""

BIND_ATTEMPTS: Final = 20
"""Ports a ``dual_stack`` server tries: one free on the first address may be taken on the other."""

SETTLE_ROUNDS: Final = 20
"""Loop turns a stopping server waits for late connections to finish closing."""

PATTERN_CHUNK: Final = bytes(range(256)) * (READ_SIZE // 256)


def byte_pattern(size: int, offset: int = 0) -> bytes:
    """The deterministic bytes ``TLSOrigin`` serves for ``GET /bytes/<size>``.

    The pattern repeats ``bytes(range(256))``, so byte ``i`` of a response is ``i % 256``.

    Args:
        size: How many bytes to return.
        offset: Position in the pattern of the first byte returned.

    Returns:
        ``size`` bytes of the pattern, starting at ``offset``.

    Raises:
        ValueError: ``size`` or ``offset`` is negative.
    """
    if size < 0 or offset < 0:
        raise ValueError("size and offset must be >= 0")
    start = offset % 256
    repeats = (start + size) // 256 + 1
    return (bytes(range(256)) * repeats)[start : start + size]


_E = TypeVar("_E", bound=enum.Enum)


def member_of(choices: type[_E], value: object, what: str) -> _E:
    """``choices(value)``, or a ValueError that lists the valid values.

    Raises:
        ValueError: ``value`` is none of ``choices``.
    """
    try:
        return choices(value)
    except ValueError:
        pass  # raised outside the except block: no "During handling..." chain
    valid = ", ".join(repr(choice.value) for choice in choices)
    raise ValueError(f"unknown {what} {value!r}; valid values: {valid}")


def check_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback IP literal, else raise.

    Args:
        host: The address a test server should listen on.

    Returns:
        ``host`` unchanged.

    Raises:
        ValueError: ``host`` is not an IP literal, or not a loopback one.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"test servers listen on an IP literal, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"test servers listen on loopback only, got {host!r}")
    return host


def other_loopback(host: str) -> str:
    """The loopback address of the other IP family: ``::1`` for IPv4, ``127.0.0.1`` for IPv6."""
    return "127.0.0.1" if ":" in host else "::1"


def format_authority(host: str, port: int) -> str:
    """``host:port`` with an IPv6 literal in brackets (RFC 9110 §4.2.1, RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reset_transport(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def pause_reading(writer: asyncio.StreamWriter) -> None:
    """Stop reading from the socket (``StreamWriter.transport`` is typed write-only)."""
    transport = writer.transport
    if isinstance(transport, asyncio.ReadTransport):
        transport.pause_reading()


async def discard_until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop everything until the peer closes (or the connection breaks)."""
    with contextlib.suppress(OSError):
        while await reader.read(READ_SIZE):
            pass


class _TLSReaderProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol for a transport that ``loop.start_tls()`` made.

    ``StreamReaderProtocol`` learns that it sits on TLS only in ``connection_made()``,
    which ``start_tls()`` leaves to its caller; a peer that closes right after the
    handshake can deliver EOF before that, and the base class's "keep the transport
    open" answer then makes asyncio log a warning (3.12+). Over TLS that answer means
    nothing, so this one always gives ``False``.
    """

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class Connection:
    """One accepted connection and every transport its handler opened.

    ``reader``/``writer`` are the current streams (replaced by :meth:`start_tls`). Writers that
    were superseded stay referenced in ``_retired``: a ``StreamWriter`` that is garbage-collected
    while its transport is open closes it and warns, which would kill the TLS layer above it.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int = 0
    ) -> None:
        self.reader = reader
        self.writer = writer
        #: The server's :meth:`BackgroundServer.reset_history` count when it was accepted.
        self.generation = generation
        self.expired = False
        self._retired: list[asyncio.StreamWriter] = []
        self._others: list[asyncio.StreamWriter] = []

    def adopt(self, writer: asyncio.StreamWriter) -> None:
        """Take ownership of another connection (the proxy's upstream): closed with this one."""
        self._others.append(writer)

    async def start_tls(self, context: ssl.SSLContext, *, handshake_timeout: float = 10.0) -> None:
        """Upgrade this connection to TLS, server side, in place.

        A fresh reader/protocol pair sits on the TLS transport, so plaintext that was buffered
        before the upgrade can never be read as if it came over TLS (CVE-2011-0411 class).
        Pause reading on the raw transport *before* inviting the handshake, or the ClientHello
        may land in the old reader.

        Raises:
            OSError: The handshake failed (``ssl.SSLError`` is an ``OSError``) or timed out.
        """
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = _TLSReaderProtocol(reader, loop=loop)
        try:
            transport = await loop.start_tls(
                self.writer.transport,
                protocol,
                context,
                server_side=True,
                ssl_handshake_timeout=handshake_timeout,
            )
            if transport is None:  # only when the connection was lost mid-way
                raise ConnectionResetError("connection lost during the TLS handshake")
        except BaseException:
            if sys.version_info < (3, 11):
                # 3.10's sslproto makes the TLS transport up front; when start_tls() is
                # cancelled after the handshake finished, it closes only the raw
                # transport and drops that one unclosed (a ResourceWarning when
                # collected, an error under filterwarnings = error). 3.11 marks it closed.
                orphan = getattr(self.writer.transport.get_protocol(), "_app_transport", None)
                if orphan is not None:
                    orphan.abort()
            # The raw transport now belongs to the failed TLS layer: its old writer would
            # never see connection_lost, and aclose() would wait CLOSE_TIMEOUT for it (the
            # connection counted as active all that time). Abort it with the rest instead.
            self._retired.append(self.writer)
            raise
        # loop.start_tls() never calls connection_made(); StreamReaderProtocol needs it.
        protocol.connection_made(transport)
        self._retired.append(self.writer)
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)

    def abort(self) -> None:
        """Drop every transport at once (no close_notify, no FIN handshake)."""
        for writer in (self.writer, *self._others, *self._retired):
            writer.transport.abort()

    async def aclose(self) -> None:
        """Close every transport gracefully, aborting any that takes longer than allowed."""
        # (self.writer is retired when its transport went to a TLS layer that failed)
        current = () if self.writer in self._retired else (self.writer,)
        for writer in (*current, *self._others):
            if not writer.transport.is_closing():
                writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
            except asyncio.CancelledError:
                self.abort()
                raise
            except (OSError, asyncio.TimeoutError):
                writer.transport.abort()
        for writer in self._retired:
            # The raw transport under a TLS one: closed by now, unless it was left hanging.
            writer.transport.abort()
        # Let the aborted transports' connection_lost callbacks run: they close the sockets.
        await asyncio.sleep(0)


_S = TypeVar("_S", bound="BackgroundServer")


class BackgroundServer:
    """Base class: an asyncio TCP server on loopback, in its own thread and loop.

    Subclasses implement :meth:`_handle`. ``errors`` collects unexpected handler exceptions
    and loop errors as text, so a test can assert that the server itself behaved.
    """

    _kind = "server"

    def __init__(self, host: str, *, connection_timeout: float, dual_stack: bool = False) -> None:
        self._host = check_loopback(host)
        self.connection_timeout = connection_timeout
        self._dual_stack = dual_stack
        self.errors: list[str] = []
        self._port: int | None = None
        self._hosts: tuple[str, ...] = ()
        self._connections = 0
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- public surface ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The loopback address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (chosen by the OS at start).

        Raises:
            RuntimeError: The server is not running.
        """
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every loopback address the server listens on, all with the same :attr:`port`.

        ``(host,)``; with ``dual_stack``, the other family's loopback address follows
        (``::1`` after ``127.0.0.1``) when the machine has it.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._hosts

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, ready for ``socket.create_connection``."""
        return (self._host, self.port)

    @property
    def authority(self) -> str:
        """``host:port`` with IPv6 in brackets, as written in a ``CONNECT`` request."""
        return format_authority(self._host, self.port)

    @property
    def connections(self) -> int:
        """How many connections have been accepted (counted when their handler starts).

        Counted since the start, or since the last :meth:`reset_history`.
        """
        return self._connections

    @property
    def active(self) -> int:
        """How many connections are being handled right now."""
        return len(self._handlers)

    def reset_history(self) -> None:
        """Start afresh, as before a new test: empty ``errors``, zero ``connections``.

        Connections the OS had already accepted for this server are taken in first, so
        one a test opened just before (a request it cancelled at once) counts for that
        test, not for the next. From now on, a failure in a connection accepted *before*
        this call is logged (logger ``janusnet.testing``) instead of joining ``errors``:
        what one test left running cannot fail the next one. Settings (``mode``,
        ``behaviour``…) are left alone.

        Raises:
            RuntimeError: The server's loop did not take the reset in time.
        """
        loop = self._loop
        if loop is None or self._thread is threading.current_thread():
            self._clear_history()
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self._reset_on_loop(), loop)
        except RuntimeError:  # the loop has closed: nothing is running to settle
            self._clear_history()
            return
        try:
            future.result(STOP_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise RuntimeError(f"{type(self).__name__} did not reset in time") from None

    async def _reset_on_loop(self) -> None:
        """Take in what the OS accepted (a handler starts a few loop turns after the
        listener wakes), then clear the history, all on the server's loop."""
        me = asyncio.current_task()
        for round_ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
            # (not on the first turn: the listener's wake-up runs after this task's)
            if round_ >= 2 and all(t is me or t in self._handlers for t in asyncio.all_tasks()):
                break
        self._clear_history()

    def _clear_history(self) -> None:
        self._generation += 1
        self._connections = 0
        self.errors.clear()

    def start(self) -> None:
        """Start the thread and wait until the server is listening.

        Raises:
            RuntimeError: Already started, or the server could not start in time.
        """
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run, name=f"janusnet-test-{self._kind}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._port is None:
            self.stop()
            raise RuntimeError(
                f"{type(self).__name__} did not start on {self._host}"
            ) from self._startup_error

    def stop(self) -> None:
        """Stop serving: close the listener, cancel every connection, close the loop, join.

        Idempotent; a stopped server may be started again (on a new port).

        Raises:
            RuntimeError: The server thread did not finish within ``STOP_TIMEOUT``.
        """
        thread = self._thread
        if thread is None:
            return
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} thread did not stop")
        self._thread = None
        self._loop = None
        self._port = None
        self._hosts = ()

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- subclass hooks ---------------------------------------------------------------------

    async def _handle(self, conn: Connection) -> None:
        raise NotImplementedError

    def _pause_on_accept(self) -> bool:
        """True when the handler starts with a TLS handshake: see :meth:`_on_client`."""
        return False

    # -- the loop thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # a thread must not die noisily
            if self._port is None:
                self._startup_error = exc
            self.errors.append("".join(traceback.format_exception(exc)))
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._stop_event = asyncio.Event()
        self._stopping = False
        servers = await self._listen()
        try:
            self._hosts = tuple(str(s.sockets[0].getsockname()[0]) for s in servers)
            self._port = int(servers[0].sockets[0].getsockname()[1])
            self._loop = loop
            self._ready.set()
            await self._stop_event.wait()
        finally:
            self._stopping = True
            await self._stop_accepting(servers)
            for server in servers:
                server.close()
            # Connections accepted just before the close may start their handlers late.
            for _ in range(3):
                await asyncio.sleep(0)
                pending = set(self._handlers)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            for server in servers:
                await server.wait_closed()
            for _ in range(2):  # the connection_lost callbacks of the last aborts
                await asyncio.sleep(0)

    async def _stop_accepting(self, servers: list[asyncio.Server]) -> None:
        """Stop accepting, then let the connections accepted in the last burst attach.

        asyncio accepts a burst of connections in one callback and builds each one's
        transport in a task of its own. A task that runs after ``Server.close()`` fails
        to attach its transport to the closed server and leaves its socket to the
        garbage collector (a ResourceWarning in the user's test run; asyncio says why
        only in debug mode). So the listeners are taken out of the loop first, and
        those tasks finish while the server is still open (each handler, seeing
        ``_stopping``, aborts its connection at once).
        """
        loop = asyncio.get_running_loop()
        for server in servers:
            for listener in server.sockets:
                with contextlib.suppress(Exception):  # another loop may not allow it
                    loop.remove_reader(listener.fileno())
        me = asyncio.current_task()
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
            if all(t is me or t in self._handlers for t in asyncio.all_tasks()):
                break

    async def _listen(self) -> list[asyncio.Server]:
        """Listen on ``host`` (port chosen by the OS), and for ``dual_stack`` on the other one.

        Raises:
            OSError: ``host`` cannot be listened on, or no port was free on both addresses.
        """
        other = other_loopback(self._host)
        for _ in range(BIND_ATTEMPTS):
            first = await self._start_server(self._host, 0)
            if not self._dual_stack:
                return [first]
            port = int(first.sockets[0].getsockname()[1])
            try:
                second = await self._start_server(other, port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:  # taken there: try another port
                    await _close_server(first)
                    continue
                # No such address on this machine (no IPv6 loopback, say): the first will do.
                _log.debug("janusnet test %s: not listening on %s: %r", self._kind, other, exc)
                return [first]
            if not second.sockets:  # asyncio skips a family the OS cannot create sockets for
                await _close_server(second)
                return [first]
            return [first, second]
        raise OSError(
            errno.EADDRINUSE,
            f"no port free on both {self._host} and {other} in {BIND_ATTEMPTS} attempts",
        )

    async def _start_server(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._on_client, host, port, limit=STREAM_LIMIT, backlog=1024
        )

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.errors.append(str(context.get("message")) + ": " + repr(context.get("exception")))
        _log.debug("janusnet test %s loop error: %s", self._kind, context)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._stopping or task is None:
            writer.transport.abort()
            return
        if self._pause_on_accept():
            # Before any await: the ClientHello must reach the TLS layer, not this reader.
            pause_reading(writer)
        self._handlers.add(task)
        self._connections += 1
        generation = self._generation
        conn = Connection(reader, writer, generation)
        timer = asyncio.get_running_loop().call_later(
            self.connection_timeout, self._expire, conn, task
        )
        try:
            await self._handle(conn)
        except asyncio.CancelledError:
            conn.abort()
            if not (conn.expired or self._stopping):
                raise
            # Expected: the time cap, or stop(). Finish normally, because a handler task that
            # ends cancelled makes asyncio 3.11's start_server callback report an error.
            _log.debug("janusnet test %s: connection cut (cap or stop)", self._kind)
        except (OSError, EOFError, asyncio.LimitOverrunError, asyncio.TimeoutError) as exc:
            # Peers in tests reset, hang up and fail handshakes on purpose.
            _log.debug("janusnet test %s: connection ended: %r", self._kind, exc)
            conn.abort()
        except Exception as exc:
            if generation == self._generation:
                self.errors.append("".join(traceback.format_exception(exc)))
                _log.exception("janusnet test %s: handler failed", self._kind)
            else:  # accepted before reset_history(): not the current test's failure
                _log.exception(
                    "janusnet test %s: handler of a connection accepted before the last "
                    "reset_history() failed",
                    self._kind,
                )
            conn.abort()
        finally:
            timer.cancel()
            try:
                await conn.aclose()
            except asyncio.CancelledError:
                if not (conn.expired or self._stopping):
                    raise
            finally:
                self._handlers.discard(task)

    @staticmethod
    def _expire(conn: Connection, task: asyncio.Task[None]) -> None:
        conn.expired = True
        task.cancel()


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()

"""The byte stream under a :class:`~janusnet.Socket`: opening it, probing it, translating
its TLS failures.

Together with ``_socket.py`` this is the only code that touches anyio streams and ``ssl``
errors. It holds what is not the socket's own logic: TCP connects (with the access-rule
DNS-rebinding guard), the TLS hop to an ``https://`` proxy, the pass-through stream that
reads whole transport chunks under TLS, the kernel-buffer probe behind the -112 check,
and the mapping of handshake failures to the ``SSLOn`` codes.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import ipaddress
import itertools
import logging
import os
import select
import socket as _stdsocket
import ssl
import struct
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSAttribute, TLSStream

from ._connect import _NUMERIC_LABEL_RE, idna_host, wire_name
from ._exceptions import (
    AccessDeniedError,
    ConnectError,
    HandshakeError,
    SSLOnOtherError,
    UsageError,
    printable,
    show_address,
    withhold_cut,
)
from ._ports import _is_ip_literal, _reachable_form, host_form_problem
from ._tls import env_trust_hint, name_hint, note_peer_names, strict_hint

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from anyio.abc import ByteStream

    from ._ports import ClientPort

__all__ = [
    "QUICKACK",
    "TLS_RECORD",
    "TRANSPORT_READ",
    "FdStream",
    "FdTLSStream",
    "TCPOptions",
    "WideReceive",
    "allowed_addresses",
    "connect_tcp",
    "kept_error",
    "kernel_closed",
    "kernel_pending",
    "open_hop",
    "raise_handshake_error",
    "start_tls",
    "tcp_options",
]

logger = logging.getLogger("janusnet")

#: What one read asks of the transport. asyncio's selector transport reads up to 256 KiB
#: per system call and anyio hands a smaller request back in pieces, copying the rest of
#: the chunk each time; asking for the whole chunk avoids those copies (and, on trio,
#: three of four system calls during bulk transfers).
TRANSPORT_READ: Final = 256 * 1024
#: The most plaintext one TLS record carries (RFC 8446 §5.1), so one TLS read's worth.
TLS_RECORD: Final = 16384
#: Ciphertext read from the socket at once by :class:`FdTLSStream`: several records per
#: system call, and below glibc's 128 KiB mmap threshold.
TLS_READ: Final = 65536
#: Plaintext handed to OpenSSL at once by :class:`FdTLSStream.send`: the outgoing memory
#: BIO keeps its largest size for the life of the connection, so keep that small.
TLS_WRITE: Final = 65536
#: Linux's ``TCP_QUICKACK`` (0 where it does not exist): see ``Socket._ack_promptly``.
QUICKACK: Final = int(getattr(_stdsocket, "TCP_QUICKACK", 0))
#: Unread received bytes read and dropped at most when a direct socket closes (see
#: ``_Direct._close_now``); past that the close is a reset.
CLOSE_DRAIN: Final = 1 << 20
#: How long a close waits at most for the kernel to send what it still holds of ours
#: (see ``_Direct.linger``), as asyncio's TLS close waits for the peer's close_notify
#: (``ssl_shutdown_timeout``, 30 s), and how long without progress it keeps waiting.
LINGER_MAX: Final = 30.0
LINGER_STALL: Final = 2.0
#: Linux's ``SIOCOUTQNSD``: bytes a TCP socket holds that it has not sent yet.
_SIOCOUTQNSD: Final = 0x894B
#: Socket reads :meth:`FdTLSStream.receive_ready` makes at most (1 MiB of ciphertext).
_READY_READS: Final = 16
#: No limit, for :meth:`FdTLSStream._read_ready`.
_ALL: Final = 1 << 62
#: Bytes peeked at most where FIONREAD is missing.
_PEEK_BYTES: Final = 65536

try:  # how many bytes the kernel holds for a socket, without reading them (Unix)
    from fcntl import ioctl as _ioctl
    from termios import FIONREAD as _FIONREAD_VALUE

    _FIONREAD: int | None = _FIONREAD_VALUE
except ImportError:  # pragma: no cover - Windows
    _FIONREAD = None
_unpack_int = struct.Struct("i").unpack


def _drop_arrived(sock: _stdsocket.socket, budget: int) -> int | None:
    """Read and drop, without waiting, what the kernel has received for ``sock``, up to
    ``budget`` bytes: how many, or ``None`` once no more can come or be dropped (the
    peer's FIN, an error, the budget spent)."""
    dropped = 0
    try:
        while dropped < budget:
            data = sock.recv(65536, _stdsocket.MSG_DONTWAIT)
            if not data:
                return None
            dropped += len(data)
    except BlockingIOError:  # all of it
        return dropped
    except OSError:
        return None
    return None


def _unsent(sock: _stdsocket.socket) -> int:
    """Bytes the kernel holds for ``sock`` that it has not sent yet (0 where it cannot
    say, or on error)."""
    if _FIONREAD is None:  # (no ioctl)
        return 0
    try:
        return int(_unpack_int(_ioctl(sock.fileno(), _SIOCOUTQNSD, bytes(4)))[0])
    except (OSError, ValueError):  # not Linux, or closed
        return 0


#: ``poll()`` flags: the peer shut down its sending side (Linux), and a socket error.
_POLLRDHUP: Final = int(getattr(select, "POLLRDHUP", 0))
_POLLERR: Final = int(getattr(select, "POLLERR", 0))


#: connect() on a non-blocking socket: "started". (Linux's EAGAIN, equal to EWOULDBLOCK
#: there, is a real failure for TCP: no free local port.)
_IN_PROGRESS: Final = frozenset(
    code
    for code in (errno.EINPROGRESS, getattr(errno, "WSAEWOULDBLOCK", None))
    if code is not None
)
#: Waiting on a socket object, and waking those waiters when it closes (anyio >= 4.10).
_wait_readable = anyio.wait_readable
_wait_writable = anyio.wait_writable
_notify_closing = anyio.notify_closing
_checkpoint = anyio.lowlevel.checkpoint
_checkpoint_if_cancelled = anyio.lowlevel.checkpoint_if_cancelled
#: A send that does not have to wait yields to other tasks on one call in this many (a
#: power of two); every call still raises at once in a cancelled scope. Yielding on every
#: call costs a trip through the event loop (~3 us on asyncio, as much as the system call
#: itself), which made a stream of small sends 2x slower than asyncio's ``write()`` +
#: ``drain()``, which never yields when it does not wait. Yielding never would let a task
#: that sends without pause starve the others, so it is bounded, as Tokio's cooperative
#: budget is.
SEND_YIELD_EVERY: Final = 16

_current_library: Callable[[], str] | None
try:  # which library runs the current task (trio depends on sniffio; anyio may not)
    from sniffio import current_async_library as _current_library
except ImportError:  # pragma: no cover - without sniffio only asyncio can be running
    _current_library = None


def _backend_checkpoints() -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """``(checkpoint, checkpoint_if_cancelled)`` of the backend running this task, to be
    called directly.

    anyio's ``lowlevel`` functions look the backend up on every call (~1.2 us, through
    sniffio), which a stream knows when it is made. What they then run is public API
    of the backend: ``asyncio.sleep(0)`` is anyio's asyncio checkpoint, and trio has
    both. anyio's asyncio ``checkpoint_if_cancelled`` reads anyio's cancel scopes, which
    only anyio can do, so that one stays anyio's.
    """
    library: str | None
    if _current_library is not None:
        try:
            library = _current_library()
        except Exception:  # sniffio.AsyncLibraryNotFoundError: no async library runs
            library = None
    else:  # pragma: no cover
        library = "asyncio"
    if library == "asyncio":
        return functools.partial(asyncio.sleep, 0), _checkpoint_if_cancelled
    if library == "trio":
        import trio.lowlevel

        return trio.lowlevel.checkpoint, trio.lowlevel.checkpoint_if_cancelled
    return _checkpoint, _checkpoint_if_cancelled


_E = TypeVar("_E", bound=BaseException)


def kept_error(exc: _E) -> _E:
    """``exc`` to keep on a stream or socket for later raises: a copy without the
    traceback, whose frames would hold the stream (a cycle that only the garbage
    collector frees, keeping the descriptor of a socket dropped unclosed)."""
    try:
        kept = copy.copy(exc)
    except Exception:  # an exception type that cannot be rebuilt from its args
        return exc
    return kept if type(kept) is type(exc) else exc  # (a __reduce__ of its own)


def _errno_of(exc: BaseException | None) -> int | None:
    """The errno of a failed connect: its own, or the one every attempt failed with
    (anyio's "All connection attempts failed" carries none; its cause holds the
    attempts)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    # An exception group (the built-in one, or the backport before Python 3.11).
    inner = getattr(exc.__cause__ if exc is not None else None, "exceptions", None)
    if isinstance(inner, tuple) and inner:
        numbers = {_errno_of(each) for each in inner}
        if len(numbers) == 1:
            return numbers.pop()
    return None


#: Failures of this machine, not of the peer a connect was for.
_LOCAL_SHORTAGES: Final = {
    errno.EMFILE: "this process has no free file descriptor",
    errno.ENFILE: "the system has no free file descriptor",
    errno.ENOBUFS: "the system is out of socket buffers",
    errno.EADDRNOTAVAIL: "no local address or port is free for the connection",
}


def _connect_failed(
    where: str, exc: BaseException | None, *, host: str, port: int, role: str = "target"
) -> ConnectError:
    """The error (logged) for a connect to ``where`` that failed with ``exc``: its errno,
    and what it means when it is this machine's shortage rather than the peer's doing."""
    logger.warning("cannot connect to %s: %s", where, str(exc))
    number = _errno_of(exc)
    shortage = (
        _LOCAL_SHORTAGES.get(number)
        if number is not None and not isinstance(exc, _LocalAddressError)
        else None
    )
    why = f"{shortage} ({exc})" if shortage else str(exc)
    return ConnectError(
        f"cannot connect to {where}: {why}", host=host, port=port, role=role, errno=number
    )


class _Direct(SocketStream):
    """What :class:`FdStream` and :class:`FdTLSStream` share: a non-blocking socket
    called directly, waited on with anyio only when it would block.

    Like anyio's own streams, every call is a cancellation point (before it touches the
    socket, so a cancelled call has taken nothing), a second concurrent receive or send
    raises ``BusyResourceError``, and closing wakes a task waiting on the socket
    (``ClosedResourceError``). Every receive yields to other tasks; a send yields when it
    waits, and otherwise once every :data:`SEND_YIELD_EVERY` calls.

    After a send, the next read that has to wait first asks the kernel for prompt ACKs
    (``TCP_QUICKACK``; see ``Socket._ack_promptly`` for why), and at once when a read
    already waits.
    """

    __slots__ = (
        "_ack_due",
        "_checkpoint",
        "_checkpoint_if_cancelled",
        "_closed",
        "_receiving",
        "_sending",
        "_sends",
        "_sock",
    )

    def __init__(self, sock: _stdsocket.socket) -> None:
        self._sock = sock
        self._closed = False
        self._receiving = False
        self._sending = False
        self._sends = 0
        self._ack_due = False  # sent since the last wait to read
        self._checkpoint, self._checkpoint_if_cancelled = _backend_checkpoints()

    async def _send_checkpoint(self) -> None:
        """Raise in a cancelled scope; yield once every SEND_YIELD_EVERY sends."""
        self._sends += 1
        if self._sends & (SEND_YIELD_EVERY - 1):
            await self._checkpoint_if_cancelled()
        else:
            await self._checkpoint()

    def _sent(self, reading: bool) -> None:
        """After a send: prompt ACKs before the next read waits, or now if one waits."""
        if reading:
            self._quickack()
        else:
            self._ack_due = True

    def _quickack(self) -> None:
        """Set ``TCP_QUICKACK`` (best effort; it also sends an ACK the kernel held back)."""
        self._ack_due = False
        if QUICKACK:
            try:
                self._sock.setsockopt(_stdsocket.IPPROTO_TCP, QUICKACK, 1)
            except OSError:  # closed, or not TCP
                pass

    @property
    def _raw_socket(self) -> _stdsocket.socket:
        return self._sock

    async def _call(
        self, op: Callable[[Any], Any], arg: Any, blocked: Callable[[Any], Awaitable[None]]
    ) -> Any:
        """``op(arg)`` once it can be done: the caller has just found that it would block,
        so wait with ``blocked`` first (no second system call to learn it again)."""
        sock = self._sock
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._ack_due and blocked is _wait_readable:
                self._quickack()
            await blocked(sock)
            if self._closed:
                raise anyio.ClosedResourceError
            result = self._now(op, arg)
            if result is not None:
                return result

    def _now(self, op: Callable[[Any], Any], arg: Any) -> Any:
        """``op(arg)`` if the socket can do it at once, else ``None`` (it would block).

        Raises:
            anyio.ClosedResourceError: the socket was closed.
            anyio.BrokenResourceError: the connection broke.
        """
        try:
            return op(arg)
        except BlockingIOError:
            return None
        except OSError as exc:
            if self._closed:
                raise anyio.ClosedResourceError from None
            raise anyio.BrokenResourceError from exc

    async def send(self, item: bytes) -> None:
        await self._send_checkpoint()  # a cancellation here has written nothing
        if self._sending:
            raise anyio.BusyResourceError("sending to")
        if self._closed:
            raise anyio.ClosedResourceError
        self._sending = True
        try:
            sent = self._now(self._sock.send, item) or 0  # usually all of it, with no wait
            if sent < len(item):
                view = memoryview(item)[sent:]
                while view:
                    view = view[await self._call(self._sock.send, view, _wait_writable) :]
        finally:
            self._sending = False
        self._sent(self._receiving)

    def _close_now(self, notify: bool = True) -> None:
        """Close the socket at once (idempotent).

        Bytes the kernel received that nobody read (a TLS 1.3 server's session tickets
        after an upload, say) are read first, up to ``CLOSE_DRAIN``: closing a socket with
        unread bytes makes Linux send a reset instead of a FIN, and a reset makes the
        peer's kernel throw away what we sent that the peer had not read yet. (An event
        loop's transport reads continuously, so its close never meets unread bytes.)
        """
        if self._closed:  # closed, or its socket handed over (FdTLSStream.wrap)
            return
        self._closed = True
        sock = self._sock
        if sock.fileno() < 0:
            return
        try:  # (trio raises KeyboardInterrupt anywhere: the descriptor is closed anyway)
            if notify:
                _notify_closing(sock)  # wakes a task waiting on it: ClosedResourceError
            _drop_arrived(sock, CLOSE_DRAIN)
        finally:
            sock.close()

    async def aclose(self) -> None:
        # Closed at once (no await first), so a cancelled or forceful close still closes.
        # The checkpoint is looked up now, not the stream's own: a close is never refused
        # (a socket closed from another backend's loop than the one that made it).
        self._close_now()
        await anyio.lowlevel.checkpoint()

    async def linger(self) -> None:
        """Wait for the kernel to send what it still holds of ours before the close.

        ``send()`` returns once the kernel has taken the bytes, and it may hold megabytes
        it has not sent yet (a fast upload, a slow peer). Closing the socket lets the
        kernel send them, unless anything arrives from the peer after the close: then
        Linux answers with a reset and throws the rest away. A TLS 1.3 server's session
        tickets, sent when it first reads, did that to uploads whose end the peer had
        confirmed reading (an FTPS STOR stored 98 KiB of 2 MB and answered 226). So the
        close waits while unsent bytes remain, reading and dropping what arrives (the
        stream is closing; nobody reads it), until they are sent, the peer ends the
        connection, nothing moves for :data:`LINGER_STALL` s or :data:`LINGER_MAX` s
        pass. Linux only (elsewhere the kernel does not say). Cancellation ends the wait.
        """
        sock = self._sock
        if self._closed or not _unsent(sock):
            return
        _notify_closing(sock)  # wakes a task waiting on it: ClosedResourceError
        start = last_move = anyio.current_time()
        unsent = _unsent(sock)
        drained = 0
        delay = 0.001
        while True:
            # The peer's FIN (nothing more comes to reset against), a reset (nothing left
            # to save) or a flood (CLOSE_DRAIN): close now.
            dropped = _drop_arrived(sock, CLOSE_DRAIN - drained)
            if dropped is None:
                return
            drained += dropped
            now = anyio.current_time()
            left = _unsent(sock)
            if not left:
                return
            if left < unsent:
                unsent, last_move = left, now
            if now - last_move >= LINGER_STALL or now - start >= LINGER_MAX:
                logger.warning(
                    "closing with %d byte(s) the kernel has not sent yet: the peer has "
                    "not taken them for %.1f s",
                    left,
                    now - last_move,
                )
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)


class FdStream(_Direct):
    """A connected non-blocking TCP socket as an anyio byte stream, with nothing between.

    ``receive`` and ``send`` call the socket directly and wait with anyio's
    ``wait_readable``/``wait_writable`` only when it would block, on both backends. An
    idle connection is the OS socket and this object: on asyncio that is ~6 KiB less per
    connection than a transport, its protocol, a read queue and two events, and one layer
    fewer to pass through. ``receive`` asks for ``TRANSPORT_READ`` bytes by default, what
    one read of an event loop's transport would be.
    """

    __slots__ = ()

    async def receive(self, max_bytes: int = TRANSPORT_READ, *, _peek: bool = False) -> bytes:
        await self._checkpoint()
        if self._receiving:
            raise anyio.BusyResourceError("receiving from")
        if self._closed:
            raise anyio.ClosedResourceError
        self._receiving = True
        op = self._peek_now if _peek else self._sock.recv
        try:
            data: bytes | None = self._now(op, max_bytes)  # there after the yield
            if data is None:
                data = await self._call(op, max_bytes, _wait_readable)
        finally:
            self._receiving = False
        if data:
            return data
        raise anyio.EndOfStream

    def detach(self) -> _stdsocket.socket:
        """Give the socket up without closing it: the caller owns it from now on.

        Raises:
            anyio.ClosedResourceError: closed (or handed over) already.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        self._closed = True  # so closing this stream leaves the socket be
        return self._sock

    async def peek(self, max_bytes: int = TRANSPORT_READ) -> bytes:
        """What :meth:`receive` would return, left in the socket (``MSG_PEEK``): a reader
        that must not read past its own data takes what it used with :meth:`discard`."""
        return await self.receive(max_bytes, _peek=True)

    def _peek_now(self, size: int) -> bytes:
        return self._sock.recv(size, _stdsocket.MSG_PEEK)

    def discard(self, count: int) -> None:
        """Take ``count`` bytes :meth:`peek` returned out of the socket (they are there)."""
        while count > 0:
            data = self._sock.recv(count)
            if not data:
                break
            count -= len(data)

    async def send_eof(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            self._sock.shutdown(_stdsocket.SHUT_WR)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc


class FdTLSStream(_Direct):
    """TLS by OpenSSL over memory BIOs, on a :class:`FdStream`'s socket.

    ``ssl_on()`` over a direct socket upgrades it here instead of through anyio's
    ``TLSStream``: the same ``SSLObject`` and memory BIOs, but the socket is read and
    written directly (no stream layers per call), ciphertext is read 64 KiB at a time
    (several records per system call), and an idle tunnel is the socket, the
    ``SSLObject`` and this object.

    Why memory BIOs and not OpenSSL on the descriptor (``SSLSocket``): a blocked
    ``SSL_write`` leaves a half-written record inside OpenSSL, and a concurrent
    ``SSL_read`` that must answer the peer (a TLS 1.3 KeyUpdate, a TLS 1.2
    renegotiation) then fails with ``BAD_LENGTH`` and kills the connection. Here
    OpenSSL only ever writes whole records into the outgoing BIO; whoever sends pushes
    that ciphertext to the socket (``_unsent`` keeps a partly written chunk in order),
    and a receiver that has to answer never waits for a blocked sender: the sender's
    flush carries the answer too. One sender and one receiver may run at once; a
    cancelled send never cuts a record (what OpenSSL encrypted is sent by the next
    flush).

    The behaviour is ``TLSStream``'s with ``standard_compatible=False`` (EOF without
    ``close_notify`` ends the stream, there is no half-close), except that closing sends
    ``close_notify`` when the socket takes it at once (never waiting for it, nor for the
    peer's). Its typed attributes are ``TLSStream``'s, plus the socket's.
    """

    __slots__ = (
        "_failure",
        "_feeding",
        "_flushing",
        "_in",
        "_obj",
        "_out",
        "_plain",
        "_progress",
        "_ragged",
        "_read_again",
        "_reset",
        "_unsent",
        "close_notify_received",
    )
    _sock: _stdsocket.socket

    def __init__(
        self,
        sock: _stdsocket.socket,
        obj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__(sock)
        self._obj = obj
        self._in = incoming
        self._out = outgoing
        self._unsent: memoryview | None = None  # ciphertext taken from _out, not yet sent
        self._flushing = False  # a task waits to write ciphertext
        self._feeding = False  # a task waits to read ciphertext
        self._progress: anyio.Event | None = None  # set when either of those moves on
        # Someone else read the SSLObject into close_notify, EOF or an error and left it
        # for the next receive: that one must ask OpenSSL (see receive).
        self._read_again = False
        # The TLS error that broke the stream: every later receive and send raise it
        # (OpenSSL itself would answer a later read with a mere EOF).
        self._failure: ssl.SSLError | None = None
        # The peer's reset, when writing ciphertext met it: Linux reports it once, and a
        # receive that pushed (what a cancelled send had encrypted, an answer to the
        # peer) would otherwise read the end of stream after it as the end of TLS.
        self._reset: ConnectionResetError | None = None
        # Plaintext a sender had to read (see _take_incoming), for the next receive.
        self._plain = b""
        # How the stream ended: the peer's close_notify, or TCP's end without it.
        self.close_notify_received = False
        self._ragged = False

    @classmethod
    async def wrap(
        cls,
        plain: FdStream,
        *,
        hostname: str | None,
        ssl_context: ssl.SSLContext,
        session: ssl.SSLSession | None = None,
    ) -> FdTLSStream:
        """Handshake as a client over ``plain``, which it takes over (even on failure),
        offering to resume ``session``.

        Raises:
            ssl.SSLError: the handshake or the certificate failed.
            OSError: the connection broke.
            anyio.ClosedResourceError: ``plain`` was closed meanwhile.
        """
        if plain._closed:
            raise anyio.ClosedResourceError
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            obj = ssl_context.wrap_bio(
                incoming, outgoing, server_side=False, server_hostname=hostname, session=session
            )
        except BaseException:
            plain._close_now()  # (no checkpoint: it would raise over this error)
            raise
        # Until the handshake is done ``plain`` still owns the socket, so another task's
        # aclose() closes it and wakes the waits below (ClosedResourceError).
        stream = cls(plain._sock, obj, incoming, outgoing)
        hello = True
        answer = b""  # the peer's first bytes (up to a quote's worth)
        try:
            while True:
                if plain._closed:
                    raise anyio.ClosedResourceError
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await stream._flush(raw=True)
                    if hello:
                        # Yield once, after the ClientHello: the handshake is then always
                        # a checkpoint, even when every answer is there at once.
                        hello = False
                        await stream._checkpoint()
                    got = await stream._feed(raw=True)
                    if got and len(answer) < PLAIN_ANSWER_KEPT:
                        answer += got[:PLAIN_ANSWER_KEPT]
            await stream._flush(raw=True)  # the client's Finished
        except BaseException as exc:
            # Closed at once, without aclose()'s checkpoint: in a cancelled scope that
            # would raise a second cancellation over this error (and on Python 3.13 leave
            # the pair in a reference cycle holding the socket).
            if isinstance(exc, ssl.SSLError):
                # The alert OpenSSL wrote saying why (unknown_ca, bad_certificate), as a
                # blocking SSLSocket sends it: the server's log then tells the reason,
                # not an unexpected end. Best effort: what the kernel takes now.
                try:
                    stream._flush_now()
                except OSError:
                    pass
            plain._close_now()
            if isinstance(exc, ssl.SSLError):
                note_peer_names(exc, obj)
                if answer:
                    _note_plain_answer(exc, answer)
            raise
        if plain._closed:
            raise anyio.ClosedResourceError
        plain._closed = True  # the socket now belongs to the TLS stream
        return stream

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The ``SSLObject`` (version, cipher, peer certificate, ...)."""
        return self._obj

    # -- moving ciphertext -----------------------------------------------------------------

    def _wake(self) -> None:
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    async def _wait_progress(self) -> None:
        if self._progress is None:
            self._progress = anyio.Event()
        await self._progress.wait()

    def _flush_now(self) -> bool:
        """Send what the kernel takes now; ``True`` when no ciphertext is left.

        Raises:
            OSError: the connection broke.
        """
        send = self._sock.send
        out = self._out
        view = self._unsent
        while True:
            if view is None:
                if not out.pending:
                    self._unsent = None
                    return True
                view = memoryview(out.read())
            try:
                sent = send(view)
            except BlockingIOError:
                self._unsent = view
                return False
            view = view[sent:] if sent < len(view) else None

    def _note(self, exc: OSError) -> None:
        """Writing ciphertext met ``exc``: keep a reset for :meth:`receive` (see _reset)."""
        if isinstance(exc, ConnectionResetError) and self._reset is None:
            self._reset = kept_error(exc)

    async def _flush(self, raw: bool = False) -> None:
        """Send all the ciphertext OpenSSL has produced, waiting for the socket.

        One task at a time waits on the socket; another one waits for its progress.
        ``raw``: let ``OSError`` through (the handshake maps it) instead of anyio's
        ``BrokenResourceError``.
        """
        try:
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                if self._flush_now():
                    return
                if self._flushing:
                    await self._wait_progress()
                    continue
                self._flushing = True
                try:
                    await _wait_writable(self._sock)
                finally:
                    self._flushing = False
                    self._wake()
        except OSError as exc:
            self._note(exc)
            if raw or isinstance(exc, BlockingIOError):
                raise
            raise anyio.BrokenResourceError from exc

    async def _feed(self, raw: bool = False) -> bytes | None:
        """Read ciphertext from the socket into the incoming BIO (EOF included), waiting
        for the socket if there is none yet; or wait while another task does that.
        Returns what it read (``None`` when it waited for another task)."""
        if self._feeding:
            await self._wait_progress()
            return None
        self._feeding = True
        try:
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    data = self._sock.recv(TLS_READ)
                    break
                except BlockingIOError:
                    if self._ack_due:
                        self._quickack()
                    await _wait_readable(self._sock)
        except OSError as exc:
            if raw:
                raise
            raise anyio.BrokenResourceError from exc
        finally:
            self._feeding = False
            self._wake()
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        return data

    def _push_now(self) -> bool:
        """:meth:`_flush_now` for a receiver: an error sending is left for the sender (or
        the receive itself) to meet; ``True`` when no ciphertext is left."""
        try:
            return self._flush_now()
        except OSError as exc:
            self._note(exc)
            return True

    async def _feed_or_push(self) -> None:
        """For a receiver: wait for ciphertext to read (:meth:`_feed`) and, while output is
        waiting that nobody else is sending (a KeyUpdate's answer, a renegotiation's
        messages, what a cancelled send had encrypted), push it whenever the socket takes
        it. A receiver never waits on writing alone: a peer that stops reading until it is
        read from would then wait for ever."""
        if self._flushing or self._push_now():
            await self._feed()
            return

        async def push() -> None:
            try:
                await self._flush()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # for the sender, or the read, to meet

        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(push)
            try:
                await self._feed()
            except Exception as exc:  # raised below, not wrapped in an exception group
                failure = exc
            tg.cancel_scope.cancel()  # data came first: the rest waits in _unsent
        if failure is not None:
            raise failure

    # -- the stream ------------------------------------------------------------------------

    async def receive(self, max_bytes: int = TLS_RECORD) -> bytes:
        # One read gives one record's plaintext at most: asking for more only allocates
        # a bigger buffer, and from 128 KiB on glibc gives each one its own mmap (page
        # faults on every read; 2.4x -> 3.3x asyncio in bulk when capped).
        size = max_bytes if max_bytes < TLS_RECORD else TLS_RECORD
        await self._checkpoint()
        if self._receiving:
            raise anyio.BusyResourceError("receiving from")
        self._receiving = True
        try:
            read = self._obj.read
            decrypted = self._obj.pending
            incoming = self._in
            fed = False  # read ciphertext that gave no plaintext yet
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                if self._failure is not None:  # (a concurrent send met it)
                    raise anyio.BrokenResourceError from self._failure
                data: bytes | None
                if self._plain:  # a sender read it (see _take_incoming): it comes first
                    data = self._take_plain(size)
                    break
                try:
                    # With no ciphertext (nor its end) to give OpenSSL and no plaintext
                    # left from a record, a read can only say "want read", through an
                    # exception that costs more than the read (~1.4 us): skip it. Unless
                    # another reader met the end or an error there and left it for us:
                    # OpenSSL says it again, and only if asked.
                    if incoming.pending or incoming.eof or decrypted() or self._read_again:
                        self._read_again = False
                        data = read(size)
                    else:
                        data = None
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    data = b""  # close_notify
                except ssl.SSLEOFError:
                    if self._reset is not None:  # the end a reset leaves: not clean
                        raise anyio.BrokenResourceError from self._reset
                    data = b""  # a ragged EOF (standard_compatible=False)
                    self._ragged = True
                except ssl.SSLError as exc:
                    self.fail(exc)
                    raise anyio.BrokenResourceError from exc
                if data and len(data) < size and (incoming.pending or decrypted()):
                    data = self._read_more(data, size)
                if self._unsent is not None or self._out.pending:
                    self._push_now()  # what the socket takes now; never wait to write here
                if data is not None:
                    break
                if fed:
                    # Records without data (a stream of session tickets or KeyUpdates)
                    # keep the socket readable: without this the loop would never yield,
                    # starving every other task and every deadline. (Not before the first
                    # read: the rest of a record, in bulk transfers, costs no yield.)
                    await self._checkpoint()
                fed = True
                await self._feed_or_push()
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        finally:
            self._receiving = False
        if data:
            return data
        self.close_notify_received = not self._ragged  # (b"" from OpenSSL: close_notify)
        raise anyio.EndOfStream

    def _read_ready(self, chunks: list[bytes], limit: int) -> None:
        """Append to ``chunks`` the plaintext of the records already here, up to ``limit``
        bytes, without waiting: only while ciphertext or plaintext is there (never an
        exception for nothing). The end of TLS is left for the next receive; an error
        fails the stream (every later receive and send raise it)."""
        read = self._obj.read
        incoming = self._in
        decrypted = self._obj.pending
        total = 0
        try:
            while total < limit and (incoming.pending or decrypted()):
                want = limit - total
                more = read(want if want < TLS_RECORD else TLS_RECORD)  # (a buffer this big)
                if not more:  # close_notify (the ssl module's b"")
                    self._read_again = True
                    break
                chunks.append(more)
                total += len(more)
        except ssl.SSLWantReadError:  # the rest of a record has not arrived
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._read_again = True
        except ssl.SSLError as exc:
            self.fail(exc)

    def _read_more(self, data: bytes, size: int) -> bytes:
        """``data`` and the plaintext of the records already here, up to ``size`` bytes.

        A peer that writes small records (a line each) would otherwise cost a whole
        receive -- a trip through the event loop -- per record: ~250 k records/s for
        64-byte lines, ~830 k reading the records waiting in the buffer at once.
        """
        chunks = [data]
        self._read_ready(chunks, size - len(data))
        return data if len(chunks) == 1 else b"".join(chunks)

    def _take_plain(self, size: int) -> bytes:
        plain = self._plain
        if len(plain) <= size:
            self._plain = b""
            return plain
        self._plain = plain[size:]
        return plain[:size]

    @property
    def holds_plaintext(self) -> bool:
        """Plaintext is waiting here, ahead of anything the ``SSLObject`` still holds:
        nobody may read the ``SSLObject`` before :meth:`receive` has handed it out."""
        return bool(self._plain)

    def _take_incoming(self) -> None:
        """Give OpenSSL the ciphertext that has arrived through its *read*, before a
        send writes again; keep any plaintext for :meth:`receive`.

        Why: in a TLS 1.2 renegotiation the peer may go on sending application data
        until our ClientHello reaches it, so its records arrive in the middle of our
        handshake. OpenSSL accepts them there only from ``SSL_read``; ``SSL_write``,
        which drives the handshake too when it is called, fails the connection on them
        (``UNEXPECTED_RECORD``, or a false EOF). With nothing left in the incoming BIO
        the write has no record to meet. The end of TLS is left for the next receive;
        the write then goes on as far as OpenSSL lets it.

        Raises:
            anyio.BrokenResourceError: a record was bad (the stream is broken).
        """
        chunks = [self._plain] if self._plain else []
        self._read_ready(chunks, _ALL)
        self._plain = b"".join(chunks)
        if self._failure is not None:
            raise anyio.BrokenResourceError from self._failure

    def fail(self, exc: ssl.SSLError) -> None:
        """A reader of the ``SSLObject`` met this error: the stream is broken (every
        later receive and send raise it), and OpenSSL's alert is sent if the socket
        takes it now."""
        self._failure = kept_error(exc)
        self._push_now()

    @property
    def failure(self) -> ssl.SSLError | None:
        """The TLS error that broke the stream (a record that does not decrypt), if any."""
        return self._failure

    def read_again(self) -> None:
        """The caller read the ``SSLObject`` into close_notify, EOF or an error and left
        it for the next :meth:`receive`, which then asks OpenSSL again."""
        self._read_again = True

    def receive_ready(self) -> tuple[bytes, bool]:
        """Whether data can be read now: ``(data, at_eof)``; never blocks.

        ``data`` is the first plaintext that can be read without waiting (more may be
        there, for the next receive), ``b""`` when none arrived within a bounded number
        of socket reads. Post-handshake messages (session tickets) are consumed on the
        way and yield no data. Errors are left for the next :meth:`receive` to raise.
        """
        chunks: list[bytes] = [self._plain] if self._plain else []
        self._plain = b""
        eof = False
        reads = 0
        while (
            not chunks  # some data is all the caller needs to know of; the rest waits
            and reads < _READY_READS  # (a flood of records without data)
            and not self._closed
            and not self._receiving
            and not self._feeding
            and self._failure is None  # (a receive met it after its data: not an end)
        ):
            try:
                data = self._obj.read(65536)
            except ssl.SSLWantReadError:
                reads += 1
                try:
                    more = self._sock.recv(TLS_READ)
                except OSError:  # BlockingIOError: nothing more yet; anything else: later
                    break
                if more:
                    self._in.write(more)
                else:
                    self._in.write_eof()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                eof = True
                self._read_again = True
                break
            except ssl.SSLError as exc:  # for every later receive and send to raise
                self.fail(exc)
                break
            if not data:  # close_notify: the ssl module's b"" (again on every read)
                eof = True
                self._read_again = True
                break
            chunks.append(data)
        return b"".join(chunks), eof

    async def send(self, item: bytes) -> None:
        await self._send_checkpoint()  # a cancellation here has written nothing
        if self._sending:
            raise anyio.BusyResourceError("sending to")
        if self._failure is not None:
            raise anyio.BrokenResourceError from self._failure
        self._sending = True
        try:
            view = memoryview(item)
            write = self._obj.write
            incoming = self._in
            while view:
                if self._closed:
                    raise anyio.ClosedResourceError
                if incoming.pending:  # (rare: a receiver fed it and has not read yet)
                    self._take_incoming()
                # A slice at a time, so the outgoing BIO never holds more than one
                # slice's ciphertext (it keeps its largest size for the connection's life).
                chunk = view[:TLS_WRITE]
                try:
                    write(chunk)
                except ssl.SSLWantReadError:  # renegotiating: the peer's messages first
                    # OpenSSL may have met the end of TLS here: the next receive must
                    # ask it (see receive). What arrives goes through its read (see
                    # _take_incoming) before the write is tried again.
                    self._read_again = True
                    await self._flush()
                    await self._feed()
                    continue
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError) as exc:
                    self._read_again = True  # the end, for the next receive to meet too
                    raise anyio.BrokenResourceError from exc
                except ssl.SSLError as exc:
                    self.fail(exc)
                    raise anyio.BrokenResourceError from exc
                view = view[len(chunk) :]
                await self._flush()
        finally:
            self._sending = False
        self._sent(self._feeding or self._receiving)

    async def aclose(self) -> None:
        self._wake()
        await super().aclose()

    def _close_now(self, notify: bool = True) -> None:
        """Close, sending close_notify first when the socket takes it now (RFC 8446
        §6.1: each party MUST send one before closing its write side; without it the
        peer cannot tell our close from a truncation, and servers log "unexpected eof").

        Never waits: when the kernel's buffer is full the alert is not sent. Not after a
        TLS error (its alert went out instead) nor behind a partly written record.
        """
        try:
            if not self._closed and self._failure is None and self._unsent is None:
                try:
                    self._obj.unwrap()  # writes close_notify; wants the peer's: not waited for
                except (ssl.SSLError, ValueError):
                    pass
                self._push_now()
        finally:  # (a KeyboardInterrupt in the alert still closes the descriptor)
            super()._close_now(notify)

    async def send_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close; close the stream instead")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        obj = self._obj
        return {
            **super().extra_attributes,
            TLSAttribute.alpn_protocol: obj.selected_alpn_protocol,
            TLSAttribute.channel_binding_tls_unique: obj.get_channel_binding,
            TLSAttribute.cipher: obj.cipher,
            TLSAttribute.peer_certificate: lambda: obj.getpeercert(False),
            TLSAttribute.peer_certificate_binary: lambda: obj.getpeercert(True),
            TLSAttribute.server_side: lambda: False,
            TLSAttribute.shared_ciphers: lambda: None,
            TLSAttribute.standard_compatible: lambda: False,
            TLSAttribute.ssl_object: lambda: obj,
            TLSAttribute.tls_version: obj.version,
        }


@functools.lru_cache(maxsize=256)
def _valid_ascii_name(name: str) -> bool:
    """Whether ``name`` is an IPv6 address, or a host name the ``ssl`` module takes as a
    server name (it encodes it with the ``idna`` codec: labels of 1-63 characters) made
    of letters, digits, ``-``, ``_`` and dots (a ``*``, ``/`` or ``@`` names no host: a
    certificate's wildcard would match it as text): the forms access rules take too."""
    if not _reachable_form(name.lower()):
        return False
    if ":" in name:
        return True
    try:
        name.encode("idna")
    except UnicodeError:
        return False
    return True


def tls_name_for(hostname: str) -> str:
    """The name TLS verifies and sends as SNI for ``hostname``.

    Brackets belong to URLs, and so does an IPv6 zone ID (``fe80::1%eth0``): an address
    is verified against the certificate's IP SANs and sent without SNI, with or without
    one. A fully-qualified name's final dot (one; after IDNA mapping, which turns
    ``。`` into a dot) is neither sent as SNI (RFC 6066 §3) nor found in certificates. An
    international name is verified as its IDNA 2008 A-label, the name a connect through
    janusnet reached (the ``ssl`` module would otherwise encode it with IDNA 2003).

    Raises:
        SSLOnOtherError: not a valid (international) host name, an empty label such as
            ``a..b`` or ``host..`` included (before any handshake byte).
    """
    problem = host_form_problem(hostname)
    if problem is not None:
        raise SSLOnOtherError(f"ssl_on: {hostname!r} is not a name TLS can verify: {problem}")
    name = hostname.strip("[]")
    address, percent, _ = name.partition("%")
    if percent and ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            pass
        else:
            return address
    if not name.isascii():
        try:
            name = idna_host(name)
        except UnicodeError as exc:
            raise SSLOnOtherError(
                f"ssl_on: {hostname!r} is not a valid international host name: {exc}"
            ) from exc
    if name.endswith("."):
        name = name[:-1]
    if name.endswith(".") or not _valid_ascii_name(name):
        raise SSLOnOtherError(
            f"ssl_on: {hostname!r} is not a valid host name (an empty label, a label "
            "over 63 characters, or a character other than letters, digits, '-', '_' "
            "and dots)"
        )
    if _NUMERIC_LABEL_RE.fullmatch(name.rpartition(".")[2].lower()) and not _is_ip_literal(name):
        # "127.0.0.010", "0x7f.1", "127.1": the resolver (inet_aton) reads a leading 0 as
        # octal, 0x as hex and fills short forms in, while OpenSSL checks the text as a
        # decimal address: connected to 127.0.0.8, verified as 127.0.0.10.
        raise SSLOnOtherError(
            f"ssl_on: {hostname!r} looks numeric but is not a dotted-decimal IPv4 "
            "address: the resolver reaches another address than the one a certificate "
            "would be checked against (127.0.0.010 reaches 127.0.0.8: a leading 0 is "
            "octal); connect to the address written dotted-decimal, or give "
            "server_hostname= the name to verify"
        )
    return name


async def start_tls(
    stream: ByteStream,
    *,
    hostname: str | None,
    ssl_context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> ByteStream:
    """A client TLS layer over ``stream``: :class:`FdTLSStream` over a direct socket,
    anyio's ``TLSStream`` over anything else (another TLS stream included), which cannot
    resume a ``session`` (the caller refuses that first).

    Raises:
        ssl.SSLError, ssl.CertificateError, OSError, anyio errors: as the layer raises
            them; ``raise_handshake_error`` maps them to the SSLOn codes.
    """
    if isinstance(stream, FdStream):
        return await FdTLSStream.wrap(
            stream, hostname=hostname, ssl_context=ssl_context, session=session
        )
    transport = WideReceive(stream, keep_answer=True)
    try:
        tls = await TLSStream.wrap(
            transport,
            server_side=False,
            hostname=hostname,
            ssl_context=ssl_context,
            standard_compatible=False,
        )
    except ssl.SSLError as exc:
        if transport.answer:
            _note_plain_answer(exc, transport.answer)
        raise
    transport.answer = None
    return tls


class TCPOptions:
    """What a caller asked of its TCP sockets: a local address to bind, options to set."""

    __slots__ = ("bind_to", "family", "local_address", "socket_options")

    def __init__(
        self,
        local_address: str | None,
        family: int | None,
        bind_to: tuple[Any, ...] | None,
        socket_options: tuple[tuple[int, int, int | bytes], ...],
    ) -> None:
        self.local_address = local_address
        self.family = family
        self.bind_to = bind_to  # the socket address, an IPv6 zone's index included
        self.socket_options = socket_options

    def apply(self, sock: _stdsocket.socket) -> None:
        """Set the options, then bind the local address (before the connect).

        Raises:
            OSError: the OS refused an option, or the local address (naming which).
        """
        for option in self.socket_options:
            try:
                sock.setsockopt(*option)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"socket option {option!r} refused: {exc.strerror or exc}"
                ) from exc
        if self.bind_to is not None:
            try:
                sock.bind(self.bind_to)
            except OSError as exc:
                raise _LocalAddressError(
                    exc.errno, f"cannot bind local address {self.local_address}: {exc.strerror}"
                ) from exc


class _LocalAddressError(OSError):
    """The local address could not be bound: the caller's choice, not a shortage."""


def tcp_options(
    local_address: str | None, socket_options: Iterable[tuple[int, int, int | bytes]] | None
) -> TCPOptions | None:
    """The checked ``local_address`` and ``socket_options`` arguments (``None``: neither).

    Raises:
        UsageError: ``local_address`` is not an IP address (an IPv6 one may be in
            brackets and name a zone this machine has), or an option is not a ``(level,
            option, value)`` tuple of C ints with a C int or bytes value.
    """
    if local_address is None and socket_options is None:
        return None
    family = None
    bind_to = None
    if local_address is not None:
        if not isinstance(local_address, str):
            raise UsageError(f"local_address must be an IP address string, not {local_address!r}")
        text = local_address
        if text.startswith("[") and text.endswith("]") and ":" in text:
            text = text[1:-1]  # an IPv6 address as URLs write it
        try:
            address = ipaddress.ip_address(text)
            infos = _stdsocket.getaddrinfo(
                text, 0, type=_stdsocket.SOCK_STREAM, flags=_stdsocket.AI_NUMERICHOST
            )
        except (ValueError, OSError, UnicodeError):
            raise UsageError(
                f"local_address must be an IP address (such as 192.0.2.7 or ::, an IPv6 "
                f"zone one this machine has), not {local_address!r}"
            ) from None
        family = _stdsocket.AF_INET6 if address.version == 6 else _stdsocket.AF_INET
        bind_to = infos[0][4]
        local_address = str(address)
    options: list[tuple[int, int, int | bytes]] = []
    if socket_options is not None:
        if isinstance(socket_options, (str, bytes)) or not hasattr(socket_options, "__iter__"):
            raise UsageError(
                f"socket_options must be a list of (level, option, value) tuples, "
                f"not {socket_options!r}"
            )
        for option in socket_options:
            if not (
                isinstance(option, tuple)
                and len(option) == 3
                and all(
                    type(part) is int and _C_INT[0] <= part <= _C_INT[1] for part in option[:2]
                )
                and (
                    isinstance(option[2], bytes)
                    or (isinstance(option[2], int) and _C_INT[0] <= option[2] <= _C_INT[1])
                )
            ):
                raise UsageError(
                    f"a socket option must be a (level: int, option: int, value: int | bytes) "
                    f"tuple of C ints, not {option!r}"
                )
            options.append(option)
    return TCPOptions(local_address, family, bind_to, tuple(options))


#: What ``setsockopt`` takes as an int (a C ``int``).
_C_INT: Final = (-(2**31), 2**31 - 1)


#: RFC 8305's "Connection Attempt Delay" (anyio, trio and Python's asyncio use 250 ms).
HAPPY_EYEBALLS_DELAY: Final = 0.25

_AddrInfo = tuple[int, int, int, str, Any]


async def open_tcp(host: str, port: int, options: TCPOptions | None = None) -> ByteStream:
    """A TCP stream to ``host:port`` (a name, or an IP address with or without brackets).

    A non-blocking socket connects directly (``TCP_NODELAY``, as both backends set it)
    and becomes a :class:`FdStream`; nothing is read before the first ``receive()``. A
    name is resolved first; when it has several addresses they are tried the happy-eyeballs
    way (RFC 8305: families interleaved, IPv6 first, a new attempt every 250 ms while
    earlier ones are pending, the first to connect wins), as ``anyio.connect_tcp`` does
    -- which also starts a task group even for one address (~120 us of CPU per
    connection, ~8 % of a proxied TLS tunnel), so one address is connected without one.
    With ``options``, each socket gets them before it connects, and a local address
    keeps only the addresses of its family.

    Raises:
        UsageError: an international name that is not valid.
        OSError: the name did not resolve or no address could be connected (every socket
            is closed).
    """
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not address.isascii():  # the resolver would use IDNA 2003: see idna_host()
        address = wire_name(address)
    try:
        infos: Sequence[_AddrInfo] = _stdsocket.getaddrinfo(
            address, port, type=_stdsocket.SOCK_STREAM, flags=_stdsocket.AI_NUMERICHOST
        )
    except (OSError, UnicodeError, ValueError):  # a name
        infos = await anyio.getaddrinfo(address, port, type=_stdsocket.SOCK_STREAM)
    return await _connect_any(infos, host, options)


async def _connect_any(
    infos: Sequence[_AddrInfo], host: str, options: TCPOptions | None
) -> FdStream:
    """Connect to one of ``infos`` (happy eyeballs when there are several).

    Raises:
        OSError: none of a local address's family, or no address could be connected.
    """
    if options is not None and options.family is not None:
        infos = [info for info in infos if info[0] == options.family]
        if not infos:
            kind = "IPv6" if options.family == _stdsocket.AF_INET6 else "IPv4"
            raise OSError(
                f"{host} has no {kind} address, the family of local address "
                f"{options.local_address}"
            )
    if len(infos) == 1:
        return await _connect_direct(infos[0], options)
    return await _happy_eyeballs(_interleaved(infos), options)


def _interleaved(infos: Sequence[_AddrInfo]) -> list[_AddrInfo]:
    """Unique addresses, IPv6 first, then alternating families (RFC 8305 §4)."""
    unique = list({info[4]: info for info in infos}.values())
    six = [info for info in unique if info[0] == _stdsocket.AF_INET6]
    other = [info for info in unique if info[0] != _stdsocket.AF_INET6]
    ordered: list[_AddrInfo] = []
    for pair in itertools.zip_longest(six, other):
        ordered.extend(info for info in pair if info is not None)
    return ordered


async def _connect_direct(info: _AddrInfo, options: TCPOptions | None = None) -> FdStream:
    family, kind, proto, _, sockaddr = info
    sock = _stdsocket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        if options is not None:
            options.apply(sock)  # after TCP_NODELAY, so a caller's choice wins
        code = sock.connect_ex(sockaddr)
        if code in _IN_PROGRESS:
            await _wait_writable(sock)
            # Not a reliable cancellation point on asyncio: when the socket is ready in the
            # loop turn that would deliver a pending cancel (uvloop runs I/O callbacks
            # before those already queued), anyio skips the task, whose wait is done, and
            # the connect returned a live socket inside a cancelled scope.
            await _checkpoint_if_cancelled()
            code = sock.getsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return FdStream(sock)


async def _happy_eyeballs(infos: list[_AddrInfo], options: TCPOptions | None = None) -> FdStream:
    """Staggered connection attempts; the first that connects wins, the rest are closed."""
    winner: FdStream | None = None
    errors: list[OSError] = []

    async def attempt(info: _AddrInfo, failed: anyio.Event, group: anyio.abc.TaskGroup) -> None:
        nonlocal winner
        try:
            stream = await _connect_direct(info, options)
        except OSError as exc:
            errors.append(exc)
            failed.set()
            return
        if winner is None:
            winner = stream
            group.cancel_scope.cancel()
        else:
            await anyio.aclose_forcefully(stream)

    try:
        async with anyio.create_task_group() as group:
            for info in infos:
                failed = anyio.Event()
                group.start_soon(attempt, info, failed, group)
                with anyio.move_on_after(HAPPY_EYEBALLS_DELAY):
                    await failed.wait()
    except BaseException:
        if winner is not None:
            await anyio.aclose_forcefully(winner)
        raise
    if winner is None:
        if len(errors) == 1:
            raise errors[0]
        message = f"all {len(errors)} addresses failed: " + "; ".join(map(str, errors))
        # The same errno from every address is the failure's (a local address this machine
        # lacks, say: then no shortage either).
        numbers = {error.errno for error in errors}
        kind = (
            _LocalAddressError
            if all(isinstance(e, _LocalAddressError) for e in errors)
            else OSError
        )
        if len(numbers) == 1 and None not in numbers:
            raise kind(numbers.pop(), message) from errors[-1]
        raise kind(message) from errors[-1]
    return winner


async def linger(stream: ByteStream) -> None:
    """Before ``stream`` closes: :meth:`_Direct.linger` of the janusnet socket under it
    (under anyio's TLS layer of a TLS-in-TLS tunnel too); nothing for other streams,
    whose socket janusnet does not read."""
    under: object = stream
    for _ in range(4):
        if isinstance(under, _Direct):
            await under.linger()
            return
        if isinstance(under, TLSStream):
            under = under.transport_stream
        elif isinstance(under, WideReceive):
            under = under._inner
        else:
            return


def raw_socket_of(stream: ByteStream) -> Any:
    """The OS socket under ``stream`` (for ``setsockopt``/``FIONREAD``), or ``None``.

    anyio builds its whole typed-attribute mapping on every ``extra()`` call (~5 us, a
    few percent of a proxied tunnel's set-up), so anyio's own socket streams are asked
    through the property that mapping calls; anything else goes through ``extra()``.
    """
    if isinstance(stream, SocketStream):
        raw = getattr(stream, "_raw_socket", None)
        if raw is not None:
            return raw
    try:
        return stream.extra(SocketAttribute.raw_socket, None)
    except (AttributeError, OSError, ValueError):
        # A stream whose connection is already gone: uvloop's transport then has no
        # socket, and anyio's attribute lookup trips over the None it gets.
        return None


def ssl_object_of(stream: ByteStream) -> ssl.SSLObject | ssl.SSLSocket:
    """The TLS object of a TLS stream: the ``SSLSocket`` of a :class:`FdTLSStream`, a
    ``TLSStream``'s ``SSLObject`` field when there, else ``extra()``."""
    if isinstance(stream, FdTLSStream):
        return stream.ssl_object
    ssl_object = getattr(stream, "_ssl_object", None)
    if isinstance(ssl_object, ssl.SSLObject):
        return ssl_object
    return stream.extra(TLSAttribute.ssl_object)


def kernel_pending(raw: _stdsocket.socket) -> int:
    """How many received bytes the kernel holds for ``raw``, looked at, not read.

    Best effort: 0 when the socket is gone or the platform cannot tell.
    """
    try:
        fileno = raw.fileno()
    except OSError:
        return 0
    if fileno < 0:  # the transport is gone (reset by the peer): nothing to look at
        return 0
    if _FIONREAD is not None:  # one system call, no buffer
        try:
            return int(_unpack_int(_ioctl(fileno, _FIONREAD, b"\0\0\0\0"))[0])
        except OSError:
            return 0
    # Elsewhere: asyncio hands out a TransportSocket without recv(); peek through a
    # temporary socket object on the same descriptor, detached (not closed) afterwards.
    probe = _stdsocket.socket(raw.family, raw.type, raw.proto, fileno)  # pragma: no cover
    try:  # pragma: no cover
        peeked = probe.recv(_PEEK_BYTES, _stdsocket.MSG_PEEK | _stdsocket.MSG_DONTWAIT)
    except OSError:  # pragma: no cover - BlockingIOError: nothing there
        return 0
    finally:  # pragma: no cover
        probe.detach()
    return len(peeked)  # pragma: no cover


def kernel_closed(raw: _stdsocket.socket) -> bool:
    """Whether the peer's FIN has arrived and nothing has read it yet (looked at, not read).

    A reset is not reported here (it is an error for the next operation to map). Best
    effort: ``False`` where ``poll()`` cannot tell (no ``POLLRDHUP`` outside Linux).
    """
    if not _POLLRDHUP:  # pragma: no cover - not Linux
        return False
    try:
        fileno = raw.fileno()
    except OSError:
        return False
    if fileno < 0:
        return False
    poller = select.poll()
    poller.register(fileno, _POLLRDHUP)
    for _, events in poller.poll(0):
        return bool(events & _POLLRDHUP) and not events & _POLLERR
    return False


async def open_hop(
    host: str,
    port: int,
    *,
    label: str,
    connect_timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
    options: TCPOptions | None = None,
) -> ByteStream:
    """TCP to ``host:port``, plus TLS with ``ssl_context``: the stream under a socket.

    Used for the hop to a proxy (``ProxyTunnel``). Nothing is left open on failure.

    Args:
        host: the host to reach (its name is also the one TLS verifies).
        port: its port.
        label: how errors name it, e.g. ``"proxy 127.0.0.1:3128"``.
        connect_timeout: cap on the TCP connect, in seconds.
        ssl_context: TLS to this hop when given.
        options: local address and socket options for the TCP socket.

    Raises:
        ConnectError: the TCP connection failed (``role="proxy"`` when ``label`` says so).
        TimeoutError: the TCP connect took longer than ``connect_timeout``.
        HandshakeError: the hop's TLS handshake or certificate failed.
        SSLOnOtherError: an I/O error during that handshake.
        UsageError: ``ssl_context`` offers ALPN protocols and the hop chose one other
            than ``http/1.1`` (the connection is closed).
    """
    role = label.split(" ", 1)[0]
    try:
        with anyio.fail_after(connect_timeout):
            stream: ByteStream = await open_tcp(host, port, options)
    except OSError as exc:
        if isinstance(exc, TimeoutError) and not exc.args and connect_timeout is not None:
            # Our deadline (the kernel's own ETIMEDOUT carries an errno: a ConnectError).
            logger.warning("connecting to %s timed out", label)
            raise TimeoutError(
                f"connecting to {label} took longer than {connect_timeout:g} s"
            ) from None
        raise _connect_failed(label, exc, host=host, port=port, role=role) from exc
    if ssl_context is None:
        return stream
    try:
        # The name as TLS verifies it: a proxy's final dot (https://proxy.corp.:3128)
        # is not in its certificate nor sent as SNI.
        tls = await start_tls(stream, hostname=tls_name_for(host), ssl_context=ssl_context)
    except BaseException as exc:
        await anyio.aclose_forcefully(stream)
        raise_handshake_error(exc, label, ssl_context)
        raise  # pragma: no cover - _raise_handshake_error always raises
    protocol = ssl_object_of(tls).selected_alpn_protocol()
    if protocol not in (None, "http/1.1"):
        # A context made for an HTTP/2 client, say: after "h2" the proxy expects HTTP/2's
        # preface, and an HTTP/1.1 CONNECT (with its credentials) must not go.
        await anyio.aclose_forcefully(tls)
        raise UsageError(
            f"{label} agreed on the ALPN protocol {printable(protocol, 40)!r} that "
            "proxy_ssl_context offers, but a CONNECT goes as HTTP/1.1: offer only "
            "'http/1.1' to the proxy (context.set_alpn_protocols(['http/1.1'])), or no "
            "ALPN; nothing was sent, the connection is closed"
        )
    return tls


class WideReceive(anyio.abc.ByteStream):
    """The transport under ``ssl_on()``'s TLS layer, read in whole transport chunks.

    ``TLSStream`` asks its transport for 64 KiB at a time; over anyio's asyncio streams
    that splits each 256 KiB chunk the event loop read into four, copying the remainder
    every time. Everything else passes straight through, typed attributes included.
    """

    __slots__ = ("_inner", "answer")

    def __init__(self, inner: ByteStream, *, keep_answer: bool = False) -> None:
        self._inner = inner
        #: The peer's first bytes (up to a quote's worth), kept while a handshake may
        #: fail on them (see :func:`_note_plain_answer`); ``None`` when not kept.
        self.answer: bytes | None = b"" if keep_answer else None

    @property
    def inner(self) -> ByteStream:
        """The stream under this one."""
        return self._inner

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._inner.receive(max(max_bytes, TRANSPORT_READ))
        answer = self.answer
        if answer is not None and len(answer) < PLAIN_ANSWER_KEPT:
            self.answer = answer + data[:PLAIN_ANSWER_KEPT]
        return data

    async def send(self, item: bytes) -> None:
        await self._inner.send(item)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._inner.extra_attributes


#: The attribute on a handshake's ``SSLError`` that keeps a plain-text answer's first line.
_PLAIN_ANSWER: Final = "janusnet_plain_answer"
#: How much of it an error message quotes, and how much is kept to withhold credentials
#: from before it is cut (a credential across the cut would show its first part).
PLAIN_ANSWER_SHOWN: Final = 80
PLAIN_ANSWER_KEPT: Final = 4096


def _note_plain_answer(exc: ssl.SSLError, answer: bytes) -> None:
    """Keep on ``exc`` the first line of the peer's answer to our ClientHello when it is
    plain text (a server speaking HTTP or SMTP on that port, a plain proxy reached as
    ``https://``), so the error can say so. TLS records never start with a printable
    byte."""
    line = answer.split(b"\n", 1)[0].rstrip(b"\r")[:PLAIN_ANSWER_KEPT]
    if len(line) >= 4 and all(32 <= byte < 127 for byte in line):
        setattr(exc, _PLAIN_ANSWER, line.decode("ascii"))


def quote_line(line: str, secrets: tuple[str, ...]) -> str:
    """The start of a line a peer sent, for a message: the credentials in ``secrets``
    withheld first, also where the line stops inside one (what arrived before an error,
    or what is kept of it: cut first, a credential across the cut would show its first
    part), then escaped and cut to :data:`PLAIN_ANSWER_SHOWN` characters."""
    return printable(withhold_cut(line, secrets), PLAIN_ANSWER_SHOWN)


def _plain_answer_hint(
    exc: BaseException,
    hostname: str | None,
    *,
    quoted: bool,
    secrets: tuple[str, ...] = (),
) -> str:
    """What a handshake error adds when the peer answered in plain text (see
    :func:`_note_plain_answer`), with or without quoting it: its start, once the
    credentials in ``secrets`` are withheld from the whole line (cut first, a
    credential across the cut would show its first part)."""
    answer = getattr(exc, _PLAIN_ANSWER, None)
    if not isinstance(answer, str):
        return ""
    shown = f", {quote_line(answer, secrets)!r}" if quoted else ""
    hint = (
        f" (plain text came where TLS was expected{shown}: the peer does not speak "
        "TLS here, or wrote before its handshake, or something on the way injected it"
    )
    if answer.startswith("HTTP/") and hostname is not None and hostname.startswith("proxy "):
        # (a host name has no space: this is open_hop's label for the proxy)
        hint += (
            "; an https:// proxy URL means TLS to the proxy itself: use http:// for a "
            "proxy that speaks plain HTTP"
        )
    return hint + ")"


def raise_handshake_error(
    exc: BaseException,
    hostname: str | None,
    context: ssl.SSLContext | None = None,
    secrets: tuple[str, ...] = (),
) -> None:
    """Translate a failed handshake into -111 / -149 (cancellation propagates as is).

    ``context`` is the one the handshake used: a certificate no CA in certifi's bundle
    vouches for, on a context trusting only those, while the environment names a CA
    bundle (``SSL_CERT_FILE``...), says that janusnet does not read it.

    Log records get the error's text, never the exception object: a record kept by a
    handler would otherwise keep the traceback, and with it the failed socket, alive.
    """
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError, anyio.EndOfStream)):
        reason = (
            str(exc)
            or (
                "the peer closed the connection"
                if isinstance(exc, anyio.EndOfStream)
                else type(exc).__name__
            )
        ) + (env_trust_hint(exc, context) or strict_hint(exc, context) or name_hint(exc, context))
        plain = _plain_answer_hint(exc, hostname, quoted=True, secrets=secrets)
        # The log gets no quote of what the peer wrote: a proxy's answer may quote the
        # credentials a tunnel sent, which the tunnel withholds from the error only (and
        # the quote lives on in that message alone, not on the cause).
        logger.warning(
            "TLS handshake with %s failed: %s%s",
            hostname,
            reason,
            _plain_answer_hint(exc, hostname, quoted=False),
        )
        if hasattr(exc, "__dict__"):
            vars(exc).pop(_PLAIN_ANSWER, None)
        raise HandshakeError(f"TLS handshake with {hostname} failed: {reason}{plain}") from exc
    if isinstance(exc, anyio.BrokenResourceError):
        cause = exc.__cause__
        if cause is None or isinstance(cause, ssl.SSLEOFError):
            logger.warning("TLS handshake with %s failed: peer closed", hostname)
            raise HandshakeError(
                f"TLS handshake with {hostname} failed: the peer closed the connection"
            ) from (cause or exc)  # the error under anyio's bare wrapper, when there is one
        if isinstance(cause, ssl.SSLError):  # the TLS under this one (an https:// proxy's)
            logger.warning("TLS handshake with %s failed: %s", hostname, repr(cause))
            raise HandshakeError(
                f"TLS handshake with {hostname} failed: the TLS connection it runs in (to "
                f"the proxy) broke: {cause}"
            ) from cause
        logger.warning("TLS handshake with %s failed: %s", hostname, repr(cause))
        raise SSLOnOtherError(f"TLS handshake with {hostname} broke: {cause!r}") from cause
    if isinstance(exc, OSError):
        logger.warning("TLS handshake with %s failed: %s", hostname, repr(exc))
        raise SSLOnOtherError(f"TLS handshake with {hostname} broke: {exc!r}") from exc
    if isinstance(exc, anyio.ClosedResourceError):
        raise SSLOnOtherError(
            f"TLS handshake with {hostname} stopped: the socket was closed"
        ) from exc
    try:
        raise exc  # cancellation, and anything else, as it is
    finally:
        del exc  # (this frame, in its traceback, would hold it: a cycle)


async def allowed_addresses(
    port: ClientPort, host: str, number: int, *, always: bool = False
) -> list[str]:
    """Resolve ``host`` when IP rules apply (or ``always``), refusing names that resolve
    to denied IPs, and a name no rule matched (see ``ClientPort._check_target``) unless
    an IP rule allows every address it resolves to.

    Returns the addresses to connect to (``[host]`` when no IP rule could apply and
    ``always`` is false).
    """
    by_address = port._name_verdict(host, number) is None  # (the caller checked it)
    if not always and not any(rule.is_ip_rule for rule in port.rules):
        return [host]
    name = host.strip("[]")
    if not name.isascii():  # the name open_tcp() would connect to, not IDNA 2003's
        name = wire_name(name)
    try:
        infos = await anyio.getaddrinfo(name, number, type=_stdsocket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(
            f"cannot resolve {host}: {exc}", host=host, port=number, errno=_errno_of(exc)
        ) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        verdict = port._address_verdict(address, number)
        if verdict is False or (verdict is None and by_address):
            raise AccessDeniedError(
                f"client port {port.name!r} does not allow {host} ({address}) port {number}",
                host=address,
                port=number,
                port_name=port.name,
            )
    return addresses


async def connect_tcp(
    targets: list[str], host: str, port: int, options: TCPOptions | None = None
) -> ByteStream:
    """TCP to ``host:port``, or to ``targets`` when access rules resolved the name (its
    allowed addresses, raced the happy-eyeballs way as the name's would be).

    Raises:
        ConnectError: no connection (naming ``host:port``).
    """
    try:
        if len(targets) == 1:
            return await open_tcp(targets[0], port, options)
        infos = [
            info
            for target in targets
            for info in _stdsocket.getaddrinfo(
                target, port, type=_stdsocket.SOCK_STREAM, flags=_stdsocket.AI_NUMERICHOST
            )
        ]
        return await _connect_any(infos, host, options)
    except OSError as exc:
        raise _connect_failed(show_address(host, port), exc, host=host, port=port) from exc

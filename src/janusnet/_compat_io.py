"""The data path of :mod:`janusnet.compat`: ``$Sock_Send``, ``$Sock_SendLn``,
``$Sock_Recv`` and ``$Sock_RecvPrs``, with Janus's ``CHAR``/``BINARY`` rules.

See :mod:`janusnet.compat` for the conventions (return values, ONRESET CONTINUE).
"""

from __future__ import annotations

from typing import Final

from ._compat_registry import parse_line_end, parse_options, registry
from ._exceptions import SocketClosedError, SocketResetError, UsageError
from ._socket import Socket

__all__ = ["sock_recv", "sock_recvprs", "sock_send", "sock_sendln"]

#: Janus's byte-count ceiling (a Longstring's length): what ``maxbytes = 0`` means.
LONGSTRING_MAX: Final = 2_147_483_647
#: Largest single read a ``$Sock_Recv`` asks for: bounds one step's memory, not the total.
RECV_STEP: Final = 1 << 20
#: The options each call takes.
SEND_OPTIONS: Final = frozenset({"BINARY", "CHAR", "FIN", "PUSH"})
RECV_OPTIONS: Final = frozenset({"BINARY", "CHAR"})
#: CHAR mode's codec error handler: as Janus's tables, translation never fails. Bytes
#: the codec cannot decode come back as lone surrogates (U+DC80-U+DCFF), which encoding
#: with this handler (as a CHAR send does) turns back into the same bytes.
_LOSSLESS: Final = "surrogateescape"


def _payload(sock: Socket, binary_mode: bool, data: str | bytes, flags: frozenset[str]) -> bytes:
    if isinstance(data, str):
        binary = "BINARY" in flags or (binary_mode and "CHAR" not in flags)
        try:
            if binary:
                return data.encode("latin-1")
            # surrogateescape: text a CHAR receive decoded goes back as the same bytes.
            return data.encode(sock.encoding, _LOSSLESS)
        except UnicodeEncodeError as exc:
            how = "untranslated" if binary else f"in {sock.encoding}"
            raise UsageError(f"cannot send {data!r} {how}: {exc}") from exc
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise UsageError(f"send takes str or bytes, not {type(data).__name__}")


def _is_reset(sock: Socket) -> bool:
    """``sock.state is SocketState.RESET``, without building the state."""
    return sock._stream is None or sock._reset


async def _send(sock: Socket, payload: bytes, fin: bool) -> int:
    if _is_reset(sock):
        return -1
    if fin and sock.tls is not None:  # refused before anything is sent, as usage errors are
        raise UsageError("FIN on a TLS socket: TLS has no half-close; send, then close it")
    try:
        if payload:
            await sock.send(payload)
        if fin:
            await sock.send_eof()
    except (SocketClosedError, SocketResetError):
        return -1
    return 0


async def sock_send(num: int, data: str | bytes, opts: str = "") -> int:
    """Send ``data`` (``$Sock_Send``).

    Args:
        num: the socket number.
        data: the payload (``str`` is translated in ``CHAR`` mode).
        opts: ``BINARY``, ``CHAR``, ``FIN`` (send FIN afterwards), ``PUSH`` (accepted; every
            send is pushed).

    Returns:
        0, or -1 when the socket is not open (or FIN was already sent).

    Raises:
        UsageError: unknown number or option; ``FIN`` on a TLS socket (nothing is sent).

    Cancellation may leave part of ``data`` sent.
    """
    flags = parse_options(opts, SEND_OPTIONS)
    sock, modes = registry._lookup(num)
    return await _send(sock, _payload(sock, modes.binary, data, flags), "FIN" in flags)


async def sock_sendln(num: int, data: str | bytes = "", opts: str = "") -> int:
    """Send ``data`` and the line end (``$Sock_SendLn``).

    Args:
        num: the socket number.
        data: the payload (no 255-byte limit).
        opts: as :func:`sock_send`, plus ``LINEND hex`` to override the line end.

    Returns:
        0, or -1 when the socket is not open.

    Raises:
        UsageError: unknown number or option; the line end is ``NONE``; ``FIN`` on a
            TLS socket (nothing is sent).

    Cancellation may leave part of the line sent.
    """
    sock, modes = registry._lookup(num)
    line_end = None if modes.line_end_none else sock.line_end
    if isinstance(opts, str) and "LINEND" in opts.upper():
        words = opts.split()
        for i, word in enumerate(words[:-1]):
            if word.upper() == "LINEND":
                hex_end = words.pop(i + 1)
                words.pop(i)
                line_end = None if hex_end.upper() == "NONE" else parse_line_end(hex_end)
                break
        opts = " ".join(words)
    if not line_end:
        raise UsageError("$Sock_SendLn: LINEND is NONE; set one or pass 'LINEND hex'")
    flags = parse_options(opts, SEND_OPTIONS)
    return await _send(sock, _payload(sock, modes.binary, data, flags) + line_end, "FIN" in flags)


def _received(sock: Socket, binary_mode: bool, data: bytes, flags: frozenset[str]) -> bytes | str:
    binary = "BINARY" in flags or (binary_mode and "CHAR" not in flags)
    return data if binary else sock.decode(data, errors=_LOSSLESS)


async def sock_recv(
    num: int, maxbytes: int = 0, minbytes: int = 0, opts: str = ""
) -> tuple[int, bytes | str]:
    """Receive between ``minbytes`` and ``maxbytes`` bytes (``$Sock_Recv``).

    As in Janus, ``maxbytes = 0`` means a Longstring's length and ``minbytes = 0`` means
    ``maxbytes`` (so with both 0 it reads until FIN or the ``RECVLIM`` window ends). Once
    ``minbytes`` arrived, whatever else is already buffered is added, up to ``maxbytes``.

    Args:
        num: the socket number.
        maxbytes: the most bytes to return.
        minbytes: the fewest bytes to wait for (fewer at FIN or at the window's end).
        opts: ``BINARY`` or ``CHAR`` (``CHAR`` decodes with the socket's codec and never
            fails: bytes it cannot decode, such as half of a multi-byte character,
            come back as lone surrogates; see :mod:`janusnet.compat`).

    Returns:
        ``(count, data)``: ``count`` bytes were received (nothing is discarded); ``(0,
        empty)`` at FIN or when the window is spent; ``(-1, empty)`` when the socket is not
        open.

    Raises:
        UsageError: unknown number or option, ``minbytes`` > ``maxbytes``, negative sizes
            or sizes that are not ints.

    Cancellation loses the bytes this call had already taken; the rest stay buffered.
    """
    flags = parse_options(opts, RECV_OPTIONS)
    sock, modes = registry._lookup(num)
    if type(maxbytes) is not int or type(minbytes) is not int:
        raise UsageError("$Sock_Recv: maxbytes and minbytes must be ints")
    if maxbytes < 0 or minbytes < 0:
        raise UsageError("$Sock_Recv: maxbytes and minbytes must be >= 0")
    most = maxbytes or max(minbytes, LONGSTRING_MAX)
    least = minbytes or most
    if least > most:
        raise UsageError("$Sock_Recv: minbytes must not exceed maxbytes")
    if _is_reset(sock):
        return -1, _received(sock, modes.binary, b"", flags)
    data = bytearray()
    try:
        while len(data) < least:
            chunk = await sock.recv(min(most - len(data), RECV_STEP))
            if not chunk:
                break
            data += chunk
        while len(data) < most and sock.pending:
            chunk = await sock.recv(min(most - len(data), sock.pending))
            if not chunk:
                break
            data += chunk
    except (SocketClosedError, SocketResetError):
        if not data:
            return -1, _received(sock, modes.binary, b"", flags)
    return len(data), _received(sock, modes.binary, bytes(data), flags)


async def sock_recvprs(
    num: int, maxbytes: int = -1, opts: str = ""
) -> tuple[int, bytes | str, int]:
    """Receive up to the next parse token (``$Sock_RecvPrs``).

    Args:
        num: the socket number.
        maxbytes: the most data bytes (the token excluded); ``-1`` or ``0`` (a
            Longstring target) for no limit.
        opts: ``BINARY`` or ``CHAR``.

    Returns:
        ``(count, data, prsindx)``: ``data`` without the token; ``prsindx`` the 1-based
        index of the token in PRSTOK, 0 when none was found within ``maxbytes``, the
        ``RECVLIM`` window or before FIN. ``count`` is every byte taken from the stream,
        **token included** (so an empty line gives ``count == 2`` with CRLF and empty
        ``data``: test ``len(data) == 0``, as SOUL tests ``$lstr_len``); 0 when nothing
        could be received (FIN, window spent); -1 when the socket is not open.

    Raises:
        UsageError: unknown number or option; PRSTOK is ``NONE``; ``maxbytes`` is not an
            int.

    Cancellation loses no bytes: they stay buffered.
    """
    flags = parse_options(opts, RECV_OPTIONS)
    sock, modes = registry._lookup(num)
    if modes.prstok_none:
        raise UsageError("$Sock_RecvPrs: PRSTOK is NONE; set parse tokens first")
    if type(maxbytes) is not int:
        hint = (
            " (the parse tokens are the socket's PRSTOK, as in Janus: "
            f"sock_set(num, 'PRSTOK', {maxbytes!r}) first)"
            if isinstance(maxbytes, str)
            else ""
        )
        raise UsageError(f"$Sock_RecvPrs: maxbytes must be an int, not {maxbytes!r}{hint}")
    limit = LONGSTRING_MAX if maxbytes in (-1, 0) else maxbytes
    if limit < 0:
        raise UsageError("$Sock_RecvPrs: maxbytes must be -1, 0 or positive")
    binary = "BINARY" in flags or (modes.binary and "CHAR" not in flags)
    if _is_reset(sock):
        return -1, b"" if binary else "", 0
    try:
        data, token, index = await sock.recv_parsed(max_bytes=limit)
    except (SocketClosedError, SocketResetError):
        return -1, b"" if binary else "", 0
    text = data if binary else sock.decode(data, errors=_LOSSLESS)
    return len(data) + len(token or b""), text, index

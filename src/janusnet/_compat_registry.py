"""The numbered-socket registry and the ``$Sock_Set`` keywords behind :mod:`janusnet.compat`.

Kept apart from ``compat`` so that module reads as the list of ``$Sock_*`` functions. The
settings Janus has and a :class:`~janusnet.Socket` does not (``CHAR``/``BINARY`` mode,
``LINEND NONE``, ``PRSTOK NONE``) live here, per numbered socket.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Final

from ._exceptions import UsageError
from ._group import OPEN_STATES, SocketGroup
from ._ports import check_encoding
from ._scan import TokenSet
from ._socket import Socket, SocketState

__all__ = [
    "SocketRegistry",
    "apply_setting",
    "info_value",
    "parse_options",
    "parse_setting",
    "registry",
]

#: Janus numbers client sockets from 2: socket 1 is the server socket.
FIRST_NUMBER: Final = 2
#: ``RECVLIM`` range as Janus documents it (0 = no limit).
RECVLIM_MAX: Final = 2_147_483_647
#: ``XTAB STANDARD`` was the fixed ASCII table; Python strings have no EBCDIC side, so the
#: byte-transparent ASCII superset is its nearest meaning.
STANDARD_CODEC: Final = "latin-1"

_STATE_NAMES: Final = {state.value: frozenset({state}) for state in SocketState}
_SELECTIONS: Final = {
    **_STATE_NAMES,
    "ANY": frozenset(SocketState),
    "OPEN": OPEN_STATES,
}


@dataclass
class _Extra:
    binary: bool = False
    line_end_none: bool = False
    prstok_none: bool = False


class SocketRegistry(SocketGroup):
    """A :class:`~janusnet.SocketGroup` whose members have Janus socket numbers.

    Adding a socket gives it the lowest free number from 2; removing it frees the number.

    Args:
        max_sockets: how many numbers exist (Janus ``SOCKMAX`` - 1); ``None`` for no cap.
    """

    def __init__(self, *, max_sockets: int | None = None) -> None:
        self.max_sockets = max_sockets
        self._numbers: dict[int, Socket] = {}
        self._number_of: dict[Socket, int] = {}
        self._extra: dict[Socket, _Extra] = {}
        super().__init__()

    @property
    def is_full(self) -> bool:
        """True when every number is in use (``$Sock_Conn`` answers -100)."""
        return self.max_sockets is not None and len(self._numbers) >= self.max_sockets

    def add(self, sock: Socket) -> None:
        """Number ``sock`` and add it (a member keeps its number).

        Raises:
            UsageError: not a Socket, or no number is free.
        """
        if sock in self:
            return
        if self.is_full:
            raise UsageError(f"all {self.max_sockets} socket numbers are in use")
        super().add(sock)
        number = FIRST_NUMBER
        while number in self._numbers:
            number += 1
        self._numbers[number] = sock
        self._number_of[sock] = number
        self._extra[sock] = _Extra()

    def remove(self, sock: Socket) -> None:
        """Remove ``sock`` and free its number (it is not closed).

        Raises:
            KeyError: ``sock`` is not a member.
        """
        super().remove(sock)
        del self._numbers[self._number_of.pop(sock)]
        del self._extra[sock]

    def get(self, number: int) -> Socket:
        """The socket with this number.

        Raises:
            UsageError: no socket has that number (Janus would cancel the request).
        """
        try:
            return self._numbers[number]
        except (KeyError, TypeError):
            raise UsageError(f"socket number {number!r} is not in use") from None

    def number_of(self, sock: Socket) -> int:
        """The number of a member.

        Raises:
            UsageError: ``sock`` is not a member.
        """
        try:
            return self._number_of[sock]
        except KeyError:
            raise UsageError(f"{sock!r} has no socket number") from None

    def numbers_matching(self, selection: str) -> list[int]:
        """Numbers selected by a ``$Sock_Num`` expression, ascending.

        Raises:
            UsageError: a malformed selection.
        """
        if not isinstance(selection, str):
            raise UsageError(f"$Sock_Num needs a selection such as 'OPEN', not {selection!r}")
        words = selection.upper().split() or ["ANY"]
        terms: list[tuple[bool, frozenset[SocketState]]] = []
        negate = False
        expect_atom = True
        for word in words:
            if expect_atom and word == "NOT":
                negate = not negate
            elif expect_atom and word in _SELECTIONS:
                terms.append((negate, _SELECTIONS[word]))
                negate, expect_atom = False, False
            elif not expect_atom and word == "OR":
                expect_atom = True
            else:
                raise UsageError(f"$Sock_Num: cannot read {selection!r} at {word!r}")
        if expect_atom:
            raise UsageError(f"$Sock_Num: {selection!r} is incomplete")
        return sorted(
            number
            for number, sock in self._numbers.items()
            if any((sock.state in states) != negate for negate, states in terms)
        )

    def _lookup(self, number: int) -> tuple[Socket, _Extra]:
        """The socket with this number and its Janus modes (one lookup for both).

        Raises:
            UsageError: no socket has that number.
        """
        sock = self.get(number)
        return sock, self._extra[sock]

    def is_binary(self, sock: Socket) -> bool:
        """True when the socket is in ``BINARY`` mode."""
        return self._extra[sock].binary

    def line_end(self, sock: Socket) -> bytes | None:
        """The socket's line end, ``None`` for ``LINEND NONE``."""
        return None if self._extra[sock].line_end_none else sock.line_end

    def prstok_none(self, sock: Socket) -> bool:
        """True after ``PRSTOK NONE``."""
        return self._extra[sock].prstok_none


#: The numbered sockets of this process (``-1`` addresses all of them).
registry: Final = SocketRegistry()


#: Options already checked, by (options, allowed): a program passes the same few strings
#: on every call, and splitting them into a set each time was a fifth of what a
#: ``$Sock_RecvPrs`` cost on top of ``recv_parsed``. Bounded: cleared when full.
_CHECKED_OPTIONS: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
_CHECKED_OPTIONS_MAX: Final = 256


def parse_options(options: str, allowed: frozenset[str]) -> frozenset[str]:
    """The blank-separated option words of a ``$Sock_*`` call, upper-cased.

    Raises:
        UsageError: a word not in ``allowed``.
    """
    key = (options, allowed)
    try:
        return _CHECKED_OPTIONS[key]
    except KeyError:
        pass
    except TypeError:  # options is not hashable: not a str either
        raise UsageError("options must be a str such as 'BINARY FIN'") from None
    if not isinstance(options, str):
        raise UsageError("options must be a str such as 'BINARY FIN'")
    words = frozenset(word.upper() for word in options.split())
    unknown = words - allowed
    if unknown:
        raise UsageError(f"unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if len(_CHECKED_OPTIONS) >= _CHECKED_OPTIONS_MAX:
        _CHECKED_OPTIONS.clear()
    _CHECKED_OPTIONS[key] = words
    return words


def _text(keyword: str, value: str | int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"$Sock_Set {keyword} needs a value")
    return value.strip()


#: A checked ``$Sock_Set`` value: bytes (LINEND), TokenSet (PRSTOK), int (RECVLIM), str
#: (XTAB codec), or None (CHAR, BINARY, and LINEND/PRSTOK NONE).
Setting = bytes | TokenSet | int | str | None


def parse_setting(keyword: str, value: str | int | None) -> tuple[str, Setting]:
    """Check a ``$Sock_Set`` keyword and value before anything is changed.

    Returns:
        The upper-cased keyword and the checked value.

    Raises:
        UsageError: an unknown keyword, a missing or bad value.
    """
    key = keyword.strip().upper() if isinstance(keyword, str) else ""
    if key in ("CHAR", "BINARY"):
        if value is not None:
            raise UsageError("CHAR and BINARY take no value")
        return key, None
    if key == "RECVLIM":
        if type(value) is int:
            limit = value
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            limit = int(value)
        else:  # 2.9 or True would be cut to a number nobody asked for
            raise UsageError(f"RECVLIM needs a whole number of bytes, not {value!r}")
        if not 0 <= limit <= RECVLIM_MAX:
            raise UsageError(f"RECVLIM must be within 0-{RECVLIM_MAX}")
        return key, limit
    if key not in ("LINEND", "PRSTOK", "XTAB"):
        raise UsageError(f"unknown $Sock_Set keyword {keyword!r}")
    text = _text(key, value)
    if key == "XTAB":
        codec = STANDARD_CODEC if text.upper() == "STANDARD" else text
        check_encoding(codec)
        return key, codec
    if text.upper() == "NONE":
        return key, None
    if key == "PRSTOK":
        return key, TokenSet.from_prstok(text)
    return key, parse_line_end(text)


def parse_line_end(text: str) -> bytes:
    """A ``LINEND`` hex string (``"0D0A"``) as bytes, checked as PRSTOK checks a token.

    Raises:
        UsageError: empty, a character that is not a hex digit (spaces included), or an
            odd number of digits.
    """
    if not text:
        raise UsageError("LINEND must not be empty (use NONE)")
    if text.strip(string.hexdigits) or len(text) % 2:
        raise UsageError(
            f"LINEND {text[:20]!r} is not a hex string (pairs of digits 0-9 and A-F, no spaces)"
        )
    return bytes.fromhex(text)


def apply_setting(registry: SocketRegistry, sock: Socket, key: str, value: Setting) -> str:
    """Apply a value checked by :func:`parse_setting`; answer the previous value."""
    previous = info_value(registry, sock, key)
    extra = registry._extra[sock]
    if key in ("CHAR", "BINARY"):
        extra.binary = key == "BINARY"
    elif key == "RECVLIM":
        assert isinstance(value, int)
        sock.receive_window = value or None
    elif key == "XTAB":
        assert isinstance(value, str)
        sock.encoding = value
    elif key == "PRSTOK":
        extra.prstok_none = value is None
        if isinstance(value, TokenSet):
            sock.parse_tokens = value
    else:
        extra.line_end_none = value is None
        if isinstance(value, bytes):
            sock.line_end = value
    return previous


def info_value(registry: SocketRegistry, sock: Socket, keyword: str) -> str:
    """The current value of a ``$Sock_Set`` keyword, as ``$Sock_Info`` answers it.

    Raises:
        UsageError: an unknown keyword.
    """
    key = keyword.strip().upper()
    extra = registry._extra[sock]
    if key == "LINEND":
        return "NONE" if extra.line_end_none else sock.line_end.hex().upper()
    if key == "PRSTOK":
        return "NONE" if extra.prstok_none else sock.parse_tokens.to_prstok()
    if key in ("CHAR", "BINARY"):
        return "BINARY" if extra.binary else "CHAR"
    if key == "RECVLIM":
        return str(sock.receive_window or 0)
    if key == "XTAB":
        return sock.encoding
    raise UsageError(f"unknown $Sock_Info keyword {keyword!r}")

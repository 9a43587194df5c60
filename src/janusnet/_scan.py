"""Sans-IO delimiter scanning: :class:`TokenSet` (Janus PRSTOK) and :class:`Scanner`.

Theory of operation
-------------------
A :class:`Scanner` owns the receive buffer of one socket. Bytes go in with
:meth:`Scanner.feed`; :meth:`Scanner.scan` either returns a :class:`Parsed` result (and
consumes it) or ``None``, meaning "need more bytes". No I/O happens here, so every rule is
testable with plain bytes, and the result can never depend on how the input was split
into TCP segments (a hypothesis test checks exactly that).

The rules (pinned in DESIGN.md):

* the token whose match *starts* earliest wins; at the same start the longest wins;
* if the buffer ends in a partial match of any token that starts at or before the best
  complete match (a longer token at the same start, or a token that started earlier), wait
  for more bytes, or for EOF, which settles it;
* a token that starts at or before offset ``max_bytes`` counts as found (the limit is on
  data bytes, the token excluded); if no token can start there, return the first
  ``max_bytes`` bytes with ``token=None, index=0`` and keep the rest;
* at EOF, return what is buffered (up to ``max_bytes``) with ``token=None, index=0``.

Cost: each token keeps a cached "next occurrence" (or "searched up to here") position, so
a received byte is searched once per token however many records or partial receives pass
over it; the partial-match check only looks at the last ``longest token - 1`` bytes. There
is no quadratic rescanning of a growing buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

from ._exceptions import UsageError

__all__ = ["Parsed", "Scanner", "TokenSet"]

#: Janus PRSTOK strings are written in hex; a token longer than this is almost surely a
#: typo, and the partial-match check costs O(longest token), so keep tokens short.
MAX_TOKEN_BYTES: Final = 256


class Parsed(NamedTuple):
    """The result of ``recv_parsed``.

    Attributes:
        data: the bytes before the token (the token itself is not included).
        token: the token that ended ``data``, or ``None`` (limit reached, or EOF).
        index: 1-based position of ``token`` in the token set (Janus ``prsindx``), 0 when
            no token was found.
    """

    data: bytes
    token: bytes | None
    index: int  # type: ignore[assignment]  # Janus prsindx; shadows tuple.index by design


class TokenSet:
    """An ordered set of parse tokens (the Janus ``PRSTOK`` setting).

    ``TokenSet([b"\\r\\n", b"\\n"])`` takes any non-empty, distinct byte strings; prefixes
    are allowed (``b"\\r"`` and ``b"\\r\\n"``), and matching resolves them by the
    earliest-start, longest-at-a-tie rule. :meth:`from_prstok` reads the Janus notation and
    enforces the Janus rules.

    Args:
        tokens: the tokens, in ``prsindx`` order.

    Raises:
        UsageError: no tokens, an empty or duplicated token, a non-bytes token, or a token
            longer than ``MAX_TOKEN_BYTES``.
    """

    __slots__ = ("_prefixes", "max_len", "tokens")

    tokens: tuple[bytes, ...]
    max_len: int
    _prefixes: frozenset[bytes]

    def __init__(self, tokens: Iterable[bytes]) -> None:
        if isinstance(tokens, (bytes, bytearray, memoryview, str)):
            raise UsageError("TokenSet takes a list of byte strings, not a single string")
        items: list[bytes] = []
        for token in tokens:
            if not isinstance(token, (bytes, bytearray, memoryview)):
                raise UsageError(f"parse tokens must be bytes, not {type(token).__name__}")
            token = bytes(token)
            if not token:
                raise UsageError("a parse token must not be empty")
            if len(token) > MAX_TOKEN_BYTES:
                raise UsageError(f"a parse token is limited to {MAX_TOKEN_BYTES} bytes")
            if token in items:
                raise UsageError(f"parse token {token!r} is given twice")
            items.append(token)
        if not items:
            raise UsageError("a token set needs at least one token")
        self.tokens = tuple(items)
        self.max_len = max(len(t) for t in items)
        self._prefixes = frozenset(t[:i] for t in items for i in range(1, len(t)))

    @classmethod
    def from_prstok(cls, spec: str) -> TokenSet:
        """Read a Janus ``PRSTOK`` string such as ``"AMBIG|0D0A|0D"``.

        Tokens are hex strings separated by ``|``. As in Janus, when one token is a prefix
        of another the list must start with ``AMBIG|``, and ``AMBIG|`` is rejected when no
        token is a prefix of another.

        Args:
            spec: the PRSTOK string.

        Returns:
            The token set, in the order written.

        Raises:
            UsageError: bad hex, an odd number of digits, an empty or duplicated token, a
                missing or needless ``AMBIG|``, or ``NONE`` (which means "no tokens").
        """
        if not isinstance(spec, str):
            raise UsageError("PRSTOK must be a str such as 'AMBIG|0D0A|0D'")
        parts = spec.strip().split("|")
        ambig = parts[0].strip().upper() == "AMBIG"
        if ambig:
            parts = parts[1:]
        if len(parts) == 1 and parts[0].strip().upper() == "NONE":
            raise UsageError("PRSTOK NONE means no parse tokens; recv_parsed needs at least one")
        tokens: list[bytes] = []
        for raw in parts:
            text = raw.strip()
            if not text:
                raise UsageError(f"PRSTOK {spec!r}: empty token")
            if len(text) % 2:
                raise UsageError(f"PRSTOK {spec!r}: {text!r} has an odd number of hex digits")
            try:
                tokens.append(bytes.fromhex(text))
            except ValueError as exc:
                raise UsageError(f"PRSTOK {spec!r}: {text!r} is not hex") from exc
        token_set = cls(tokens)
        if token_set.has_prefixes and not ambig:
            raise UsageError(
                f"PRSTOK {spec!r}: a token is a prefix of another, so the list must start "
                "with 'AMBIG|'"
            )
        if ambig and not token_set.has_prefixes:
            raise UsageError(
                f"PRSTOK {spec!r}: 'AMBIG|' is only allowed when a token is a prefix of another"
            )
        return token_set

    @property
    def has_prefixes(self) -> bool:
        """True when some token is a prefix of another (Janus needs ``AMBIG|`` then)."""
        return any(t in self._prefixes for t in self.tokens)

    def to_prstok(self) -> str:
        """The set in Janus ``PRSTOK`` notation, e.g. ``"AMBIG|0D0A|0D"``."""
        body = "|".join(t.hex().upper() for t in self.tokens)
        return f"AMBIG|{body}" if self.has_prefixes else body

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.tokens)

    def __getitem__(self, index: int) -> bytes:
        return self.tokens[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenSet):
            return self.tokens == other.tokens
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __repr__(self) -> str:
        return f"TokenSet({list(self.tokens)!r})"


def as_token_set(tokens: TokenSet | Iterable[bytes] | str) -> TokenSet:
    """Accept a :class:`TokenSet`, a list of bytes, or a PRSTOK string.

    Raises:
        UsageError: as :class:`TokenSet` and :meth:`TokenSet.from_prstok`.
    """
    if isinstance(tokens, TokenSet):
        return tokens
    if isinstance(tokens, str):
        return TokenSet.from_prstok(tokens)
    return TokenSet(tokens)


class Scanner:
    """A receive buffer that finds parse tokens (sans-IO).

    ``feed()`` bytes in, ``scan()`` for a record, ``take()`` for raw bytes. ``pending`` is
    the number of unread bytes.
    """

    __slots__ = ("_buf", "_found", "_scan_from", "_searched", "_tokens")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._tokens: TokenSet | None = None
        # Everything before _scan_from is known not to start any token (partial or whole).
        self._scan_from = 0
        # Per token: position of its next known occurrence, or -1; and how far the buffer
        # was searched without finding it. Both are relative to the buffer's start.
        self._found: list[int] = []
        self._searched: list[int] = []

    @property
    def pending(self) -> int:
        """How many received bytes are buffered and unread."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def peek(self) -> bytes:
        """A copy of the unread bytes, leaving them buffered."""
        return bytes(self._buf)

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` unread bytes."""
        if max_bytes >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
            self._reset()
            return data
        data = bytes(self._buf[:max_bytes])
        self._consume(max_bytes)
        return data

    def _reset(self) -> None:
        self._scan_from = 0
        for k in range(len(self._found)):
            self._found[k] = -1
            self._searched[k] = 0

    def _consume(self, count: int) -> None:
        del self._buf[:count]
        self._scan_from = 0
        found = self._found
        searched = self._searched
        for k in range(len(found)):
            pos = found[k] - count
            found[k] = pos if pos >= 0 else -1
            done = searched[k] - count
            searched[k] = done if done > 0 else 0

    def scan(self, tokens: TokenSet, max_bytes: int | None, eof: bool) -> Parsed | None:
        """Find the next record ended by one of ``tokens``.

        Args:
            tokens: the token set to look for.
            max_bytes: the limit on data bytes (token excluded); ``None`` for none.
            eof: True when no more bytes will ever be fed.

        Returns:
            The record (consumed from the buffer), or ``None`` when more bytes are needed.
        """
        buf = self._buf
        if tokens is not self._tokens:
            self._tokens = tokens
            self._found = [-1] * len(tokens.tokens)
            self._searched = [0] * len(tokens.tokens)
            self._scan_from = 0
        size = len(buf)
        toks = tokens.tokens
        found = self._found
        searched = self._searched
        start = self._scan_from

        # Earliest complete match; the longest at a tie.
        best = -1
        best_k = -1
        for k in range(len(toks)):
            pos = found[k]
            if pos < 0:
                tok = toks[k]
                from_ = searched[k] if searched[k] > start else start
                pos = buf.find(tok, from_)
                if pos < 0:
                    done = size - len(tok) + 1
                    searched[k] = done if done > from_ else from_
                    continue
                found[k] = pos
            if best < 0 or pos < best or (pos == best and len(toks[k]) > len(toks[best_k])):
                best = pos
                best_k = k
        if max_bytes is not None and best > max_bytes:
            best = -1

        # Earliest partial match at the end of the buffer (it could still complete).
        partial = -1
        tail = size - tokens.max_len + 1
        p = tail if tail > start else start
        if best < 0 or best >= p:
            prefixes = tokens._prefixes
            while p < size:
                if bytes(buf[p:]) in prefixes:
                    partial = p
                    break
                p += 1

        if best >= 0:
            if partial < 0 or partial > best or eof:
                tok = toks[best_k]
                data = bytes(buf[:best])
                self._consume(best + len(tok))
                return Parsed(data, tok, best_k + 1)
            self._scan_from = partial
            return None
        if eof:
            if max_bytes is None or max_bytes >= size:
                data = bytes(buf)
                buf.clear()
                self._reset()
                return Parsed(data, None, 0)
            return Parsed(self.take(max_bytes), None, 0)
        if partial >= 0:
            self._scan_from = partial
            if max_bytes is None or partial <= max_bytes:
                return None
        else:
            self._scan_from = size
        if max_bytes is not None and size > max_bytes:
            return Parsed(self.take(max_bytes), None, 0)
        return None

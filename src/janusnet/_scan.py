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

Speed: the buffer is ``bytes`` plus a read offset, so a record costs one slice (the result)
and no buffer shuffling. Once the next record is known to be settled, every settled record
in a window of one limit's worth of bytes is cut at once in C (``bytes.split`` for one
token; for several, ``bytes`` methods when the data allow it, else a regex split: see
:class:`_SplitPlan`) and handed out one per call; the ``Parsed`` tuples are built lazily as
they are handed out. No record in the window can be over the limit, so none is measured.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, repeat
from typing import Final, NamedTuple

from ._exceptions import UsageError

__all__ = ["Parsed", "Scanner", "TokenSet"]

#: Janus PRSTOK strings are written in hex; a token longer than this is almost surely a
#: typo, and the partial-match check costs O(longest token), so keep tokens short.
MAX_TOKEN_BYTES: Final = 256
#: The first cut-ahead window, in bytes. The window doubles each time a batch of records
#: cut ahead is handed out completely, and falls back here whenever records cut ahead are
#: put back unread (``_settle``), so the work thrown away is never more than what was
#: used: a caller that interleaves ``pending``, ``take`` or another token set with
#: ``scan`` pays O(record) per record instead of O(max_bytes).
AHEAD_MIN: Final = 512
#: After cut-ahead work was wasted, the next scans find one record each: 1 scan after
#: the first waste, twice as many after each further waste in a row, at most this many
#: (a length-prefixed protocol alternating ``scan`` and ``take`` wastes every batch; a
#: plain loop of scans uses every batch and so cuts ahead again at once).
SKIP_MAX: Final = 64
#: A first record at least this long, still in the growing ``bytearray``, is copied out
#: on its own: converting the buffer to ``bytes`` and then splitting it would hold the
#: record three times over at the peak instead of twice.
BIG_RECORD: Final = 1 << 20
#: A first record at least this long is not searched again when records are cut ahead
#: (its token was just found); shorter ones cost less to split over than to set apart.
SPLIT_AFTER_FIRST: Final = 1024
#: Up to this many tokens, ``scan`` looks for each with ``bytes.find`` (``memchr`` speed,
#: positions cached per token); beyond, one regular-expression search finds the earliest
#: (each token's own search would cover the buffer again and again).
FIND_EACH_MAX: Final = 4
#: The most distinct token bytes :class:`_SplitPlan` cuts with ``bytes`` methods (one
#: ``memchr`` pass each), and the most multi-byte tokens (one pass each over the codes,
#: dearer); more go to the regular expression's single pass. Measured: 20 one-byte tokens
#: are still cut faster the ``bytes`` way, 10 three-byte ones slower.
FAST_MAX_BYTES: Final = 24
FAST_MAX_MULTI: Final = 8
#: A limit this small would make the cut-ahead window small too (a window of
#: ``max_bytes`` plus the shortest token cannot hold a record over the limit), and every
#: window costs a fixed set-up: below this, the window may grow to :data:`MEASURED_WINDOW`
#: and the records cut from it are measured against the limit instead.
MEASURE_BELOW: Final = 16384
MEASURED_WINDOW: Final = 65536


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


#: Builds a :class:`Parsed` in C, skipping the Python-level ``__new__`` that ``NamedTuple``
#: generates: it is a third of the cost of a record on the hot path.
_new_parsed: Final[Callable[[type[Parsed], tuple[bytes, bytes | None, int]], Parsed]] = (
    tuple.__new__
)


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
            longer than 256 bytes.

    Attributes:
        tokens: the tokens, in ``prsindx`` order.
        max_len: the longest token's length.
        min_len: the shortest token's length.
    """

    __slots__ = ("_plan", "_prefixes", "max_len", "min_len", "tokens")

    tokens: tuple[bytes, ...]
    max_len: int
    min_len: int
    _prefixes: frozenset[bytes]
    _plan: _SplitPlan | None

    def __init__(self, tokens: Iterable[bytes]) -> None:
        if isinstance(tokens, (bytes, bytearray, memoryview, str)):
            raise UsageError("TokenSet takes a list of byte strings, not a single string")
        try:
            given = iter(tokens)
        except TypeError:
            raise UsageError(
                "parse tokens are a list of byte strings, a TokenSet or a PRSTOK string, "
                f"not {type(tokens).__name__}"
            ) from None
        items: list[bytes] = []
        for token in given:
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
        self.min_len = min(len(t) for t in items)
        self._plan = None  # built when a scanner first cuts records ahead with this set
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
        shown = repr(spec) if len(spec) <= 64 else repr(spec[:60]) + "..."
        tokens: list[bytes] = []
        for raw in parts:
            text = raw.strip()
            if not text:
                raise UsageError(f"PRSTOK {shown}: empty token")
            if text.strip(string.hexdigits):
                raise UsageError(
                    f"PRSTOK {shown}: {text[:20]!r} is not hex (digits 0-9 and A-F only, "
                    "no spaces inside a token)"
                )
            if len(text) % 2:
                raise UsageError(f"PRSTOK {shown}: {text[:20]!r} has an odd number of hex digits")
            tokens.append(bytes.fromhex(text))
        token_set = cls(tokens)
        if token_set.has_prefixes and not ambig:
            raise UsageError(
                f"PRSTOK {shown}: a token is a prefix of another, so the list must start "
                "with 'AMBIG|'"
            )
        if ambig and not token_set.has_prefixes:
            raise UsageError(
                f"PRSTOK {shown}: 'AMBIG|' is only allowed when a token is a prefix of another"
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

    @property
    def _split_plan(self) -> _SplitPlan:
        """How to cut many records at once with this set (built once, then shared)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = _SplitPlan(self.tokens)
        return plan

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


@functools.lru_cache(maxsize=256)
def _cached_prstok(spec: str) -> TokenSet:
    return TokenSet.from_prstok(spec)


@functools.lru_cache(maxsize=256)
def _cached_tokens(tokens: tuple[bytes, ...]) -> TokenSet:
    return TokenSet(tokens)


def as_token_set(tokens: TokenSet | Iterable[bytes] | str) -> TokenSet:
    """Accept a :class:`TokenSet`, a list of bytes, or a PRSTOK string.

    The same list or string gives the same ``TokenSet`` object on every call (a small
    cache), so ``recv_parsed([b"\\n"])`` in a loop keeps the records already cut ahead
    and the split plan instead of rebuilding both for every record.

    Raises:
        UsageError: as :class:`TokenSet` and :meth:`TokenSet.from_prstok`.
    """
    if isinstance(tokens, TokenSet):
        return tokens
    if isinstance(tokens, str):
        return _cached_prstok(tokens)
    if isinstance(tokens, (list, tuple)) and all(type(t) is bytes for t in tokens):
        return _cached_tokens(tuple(tokens))
    return TokenSet(tokens)


def _overlap(tokens: Iterable[bytes]) -> bool:
    """True when a proper suffix of one token is a proper prefix of another.

    ``b"ab"`` and ``b"bc"`` overlap: in ``b"abc"`` the rule picks ``b"ab"`` (it starts
    first), which replacing ``b"bc"`` first would miss. Containment (``b"\\n"`` inside
    ``b"\\r\\n"``) is harmless when longer tokens are replaced first.
    """
    items = list(tokens)
    for u in items:
        for v in items:
            if u == v:
                continue
            for i in range(1, len(u)):
                rest = u[i:]
                if len(rest) < len(v) and v.startswith(rest):
                    return True
    return False


class _SplitPlan:
    """How a :class:`Scanner` cuts many records at once for one token set.

    The general way is one regular-expression split (tokens longest first, so the leftmost
    match is the earliest start, the longest at a tie). Python's regex engine steps
    through every byte in its own loop, which costs several times what the ``bytes``
    methods cost (they use ``memchr``). So when the bytes allow it the plan uses those:

    1. every byte that occurs in any token is replaced by one *mark* byte (``replace``
       of single bytes is a ``memchr`` loop), and ``split`` on the mark gives the runs of
       bytes between token bytes;
    2. ``translate`` with ``delete`` keeps only the token bytes, in order (the *codes*);
       replacing each multi-byte token in that short string by a marker (a byte no token
       uses; longest tokens first) gives one code per record;
    3. every code must be a token, and the runs between the bytes of a multi-byte token
       must be empty (its bytes were adjacent); then the records' data are exactly the
       other runs. Otherwise a data byte is also a token byte (a lone ``\\r`` beside a
       ``\\r\\n`` token, say), and the regex cuts these bytes instead.

    Replacing token by token gives the rule's answer unless two multi-byte tokens overlap
    (see :func:`_overlap`); such sets, and sets that leave too few free byte values, always
    use the regex.
    """

    __slots__ = (
        "delete",
        "drop_table",
        "fast",
        "index_of",
        "index_table",
        "keep_table",
        "mark",
        "mask_replacements",
        "pattern",
        "replacements",
        "split_bytes",
        "token_of",
        "token_of_code",
        "trailing",
        "valid",
    )

    def __init__(self, tokens: tuple[bytes, ...]) -> None:
        by_length = sorted(tokens, key=len, reverse=True)
        self.pattern = re.compile(b"(" + b"|".join(map(re.escape, by_length)) + b")")
        index = {token: k + 1 for k, token in enumerate(tokens)}
        self.index_of: Callable[[bytes], int] = index.__getitem__
        self.token_of: Callable[[bytes], bytes] = {t: t for t in tokens}.__getitem__
        multi = [token for token in by_length if len(token) > 1]
        used = sorted({byte for token in tokens for byte in token})
        free = [byte for byte in range(256) if byte not in used]
        # One marker per multi-byte token, plus "keep" and "drop" for the mask.
        # Each token byte costs the fast way one pass over the data (and each multi-byte
        # token one over the codes): beyond a few, the regex's single pass is cheaper.
        self.fast = (
            len(used) <= FAST_MAX_BYTES
            and len(multi) <= FAST_MAX_MULTI
            and len(free) >= len(multi) + 2
            and not _overlap(multi)
        )
        if not self.fast:
            multi = []  # the plan's fast-path tables stay empty; the regex cuts
        markers = free[: len(multi)]
        keep, drop = (free[len(multi)], free[len(multi) + 1]) if self.fast else (0, 0)
        self.mark = bytes(used[:1])
        self.split_bytes = [bytes((byte,)) for byte in used[1:]]
        self.delete = bytes(byte for byte in range(256) if byte not in used)
        self.replacements = [(t, bytes((m,))) for t, m in zip(multi, markers, strict=True)]
        self.mask_replacements = [
            (t, bytes((keep,)) + bytes((drop,)) * (len(t) - 1)) for t in multi
        ]
        self.keep_table = bytes(0 if byte == drop else 1 for byte in range(256))
        self.drop_table = bytes(1 if byte == drop else 0 for byte in range(256))
        codes = {token[0]: token for token in tokens if len(token) == 1}
        codes.update(zip(markers, multi, strict=True))
        self.valid = bytes(sorted(codes))
        by_code = [codes.get(byte) for byte in range(256)]
        # A list's __getitem__ is a fast C method (a tuple's goes through a slot wrapper).
        self.token_of_code: Callable[[int], bytes] = by_code.__getitem__  # type: ignore[assignment]
        # translate() gives each record's prsindx as one byte, which zip() yields as an int.
        self.index_table = bytes(
            0 if token is None or not self.fast else index[token] for token in by_code
        )
        #: Region endings that may be the start of a multi-byte token still arriving.
        self.trailing = sorted(
            {t[:i] for t in multi for i in range(1, len(t))}, key=len, reverse=True
        )


# Shared, never-mutated placeholders: a service may hold thousands of idle sockets.
_NO_POSITIONS: Final[list[int]] = []


def _earliest(plan: _SplitPlan, buf: bytes | bytearray, start: int, stop: int) -> tuple[int, int]:
    """Where the earliest token in ``buf[start:stop]`` is, and its 0-based index (the
    longest at a tie: the pattern's alternatives are longest first); ``(-1, -1)``."""
    match = plan.pattern.search(buf, start, stop)
    if match is None:
        return -1, -1
    return match.start(), plan.index_of(match.group(1)) - 1


class Scanner:
    """A receive buffer that finds parse tokens (sans-IO).

    ``feed()`` bytes in, ``scan()`` for a record, ``take()`` for raw bytes. ``pending`` is
    the number of unread bytes.

    The buffer is an immutable ``bytes`` plus a read offset, so a record is one slice (the
    result itself) and consuming it is an integer update; cached positions are absolute
    and survive consumption. While a long record is still arriving in small pieces the
    buffer grows as a ``bytearray`` (linear, not quadratic) and turns back into ``bytes``
    when a result is cut from it. With a single token, one ``bytes.split`` cuts every
    complete record in the buffer at once (each byte scanned once, in C); ``scan`` then
    hands them out one per call. They count as unread until handed out: every other
    method first puts them back (:meth:`_settle`).
    """

    __slots__ = (
        "_ahead",
        "_buf",
        "_found",
        "_pos",
        "_scan_from",
        "_searched",
        "_skip",
        "_skip_next",
        "_tokens",
        "ready",
        "ready_max",
        "ready_tokens",
    )

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._ahead = AHEAD_MIN  # current cut-ahead window (see AHEAD_MIN)
        self._skip = 0  # scans left that find one record each (see SKIP_MAX)
        self._skip_next = 1
        # Bytes before _pos are consumed.
        self._pos = 0
        self._tokens: TokenSet | None = None
        # Nothing between _pos and _scan_from starts a token (partial or whole).
        self._scan_from = 0
        # Per token: its next known occurrence at or after _pos (else anything < _pos, such
        # as -1); and up to where the buffer was searched without finding it. Absolute
        # positions in _buf, so consuming bytes never has to update them.
        # Shared empty lists until the first scan replaces them (never mutated while
        # empty: every write indexes a position that a token set created).
        self._found: list[int] = _NO_POSITIONS
        self._searched: list[int] = _NO_POSITIONS
        #: Records already cut ahead, handed out by scan() (and by Socket.recv_parsed
        #: directly: ``next(ready, None)``) while the caller asks for ``ready_tokens``;
        #: their bytes lie before _pos. ``ready_max``: the longest data among them, so a
        #: caller with a smaller limit knows to call scan() instead. A Parsed is built
        #: only when handed out, so it is short-lived (cheap for the garbage collector).
        self.ready: Iterator[Parsed] | None = None
        self.ready_max = 0
        self.ready_tokens: TokenSet | None = None

    @property
    def idle(self) -> bool:
        """Nothing unread: no bytes, and no batch of records cut ahead (spent or not)."""
        return self.ready is None and self._pos == len(self._buf)

    @property
    def pending(self) -> int:
        """How many received bytes are buffered and unread."""
        if self.ready is not None:
            self._settle()
        return len(self._buf) - self._pos

    def _settle(self) -> None:
        """Put the records cut ahead back into the unread bytes."""
        ready = self.ready
        self.ready = self.ready_tokens = None
        if ready is not None:
            unread = sum(len(data) + len(token or b"") for data, token, _ in ready)
            if unread:
                # Cut-ahead work was wasted: start small again, after a few scans of one
                # record each. The positions cached beyond _pos no longer hold.
                self._pos -= unread
                self._back_off()
                self._reset()
            elif self._pos == len(self._buf):
                self._drop()  # a batch used up that ended the buffer: all read
        # A batch used up leaves _pos where the cut put it: the cache still holds.

    def _back_off(self) -> None:
        """Cutting ahead was wasted: the next scans find one record each (see SKIP_MAX),
        then the window starts small again."""
        self._ahead = AHEAD_MIN
        self._skip = self._skip_next
        self._skip_next = min(self._skip_next * 2, SKIP_MAX)

    def _reset(self) -> None:
        self._scan_from = 0
        count = len(self._found)
        if count:  # (new lists: the shared empty ones are never written to)
            self._found = [-1] * count
            self._searched = [0] * count

    def _drop(self) -> None:
        """Everything was read: let the buffer go (a socket that then waits holds none)."""
        self._buf = b""
        self._pos = 0
        self._reset()

    def _compact(self) -> None:
        """Drop the consumed bytes, moving the cached positions with them."""
        pos = self._pos
        if not pos:
            return
        buf = self._buf
        if pos >= len(buf):
            self._buf = b""
        elif isinstance(buf, bytearray):
            del buf[:pos]
        else:
            self._buf = buf[pos:]
        self._pos = 0
        from_ = self._scan_from - pos
        self._scan_from = from_ if from_ > 0 else 0
        found = self._found
        searched = self._searched
        for k in range(len(found)):
            at = found[k] - pos
            found[k] = at if at >= 0 else -1
            done = searched[k] - pos
            searched[k] = done if done > 0 else 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self.ready is not None:
            self._settle()
        self._compact()
        buf = self._buf
        if not buf:
            self._buf = bytes(data)  # no copy when data is bytes
        elif isinstance(buf, bytearray):
            buf += data
        elif len(buf) <= len(data):
            self._buf = buf + data
        else:
            # A long unfinished record: grow in place rather than copy it on every feed.
            grown = bytearray(buf)
            grown += data
            self._buf = grown

    def peek(self) -> bytes:
        """A copy of the unread bytes, leaving them buffered."""
        if self.ready is not None:
            self._settle()
        return bytes(self._buf[self._pos :])

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the unread ones (a CONNECT reply's leftover)."""
        if data:
            if self.ready is not None:
                self._settle()
            self._buf = bytes(data) + bytes(self._buf[self._pos :])
            self._pos = 0
            self._reset()

    def _as_bytes(self) -> bytes:
        buf = self._buf
        if isinstance(buf, bytearray):
            # Cutting a result ends the growth phase: one copy, then slices are results.
            buf = self._buf = bytes(buf)
        return buf

    def take_exactly(self, count: int) -> bytes | None:
        """Remove and return ``count`` unread bytes, or ``None`` (nothing removed) when
        fewer are buffered."""
        if self.ready is not None:
            self._settle()
        buf = self._buf
        pos = self._pos
        end = pos + count
        if end >= len(buf) or type(buf) is not bytes:
            return None if end > len(buf) else self.take(count)
        self._pos = self._scan_from = end  # (the usual case: more stays buffered)
        return buf[pos:end]

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` unread bytes (``b""`` when none)."""
        if self.ready is not None:
            self._settle()
        buf = self._buf
        if type(buf) is not bytes:
            buf = self._as_bytes()
        pos = self._pos
        if pos == 0 and max_bytes >= len(buf):
            self._buf = b""  # hand over the whole buffer, no copy
            self._reset()
            return buf
        end = pos + max_bytes
        if end >= len(buf):
            self._drop()
            return buf[pos:]
        # _scan_from may lie past a token found beyond a limit: forget it.
        self._pos = self._scan_from = end
        return buf[pos:end]

    def _window(
        self, max_bytes: int | None, min_len: int, max_len: int, need: int
    ) -> tuple[bytes, int, int, int | None]:
        """The buffer, the read offset, the end of the window to cut records from, and
        the limit to measure the records cut from it against (``None``: no need).

        The window spans the adaptive ``_ahead`` bytes (at least the first record, whose
        data is ``need`` bytes long) plus the longest token. A window of
        ``max_bytes + min_len`` bytes cannot hold a record over the limit (its token is at
        least ``min_len`` long), so it is cut to that and needs no measuring, unless that
        would make it small (see :data:`MEASURE_BELOW`).
        """
        buf = self._as_bytes()
        pos = self._pos
        stop = len(buf)
        span = (self._ahead if self._ahead > need else need) + max_len
        if pos + span < stop:
            stop = pos + span
        if max_bytes is not None and pos + max_bytes + min_len < stop:
            if max_bytes >= MEASURE_BELOW:
                return buf, pos, pos + max_bytes + min_len, None
            if pos + MEASURED_WINDOW < stop:
                stop = pos + MEASURED_WINDOW
            return buf, pos, stop, max_bytes
        return buf, pos, stop, None

    def _cut_ahead(self, token: bytes, max_bytes: int | None, need: int) -> Parsed | None:
        """Cut every complete record ended by ``token`` (the only token) at once, from
        the window :meth:`_window` gives (records over the limit: see there)."""
        buf, pos, stop, limit = self._window(max_bytes, len(token), len(token), need)
        if need < SPLIT_AFTER_FIRST:
            parts = (buf[pos:stop] if pos or stop < len(buf) else buf).split(token)
        else:
            # The first record's token was just found at pos + need: split only what
            # follows it (long records would otherwise be searched twice, and a window
            # capped by the limit ends in most of the next one).
            after = pos + need + len(token)
            parts = buf[after:stop].split(token)
            parts.insert(0, buf[pos : pos + need])
        tail = len(parts.pop())  # the unfinished tail
        if limit is not None and parts and max(map(len, parts)) > limit:
            # A record over the limit: cut the window that cannot hold one instead, and
            # (records this long coming) cut one record at a time for a while.
            self._back_off()
            stop = pos + limit + len(token)
            parts = buf[pos:stop].split(token)
            tail = len(parts.pop())
        if not parts:
            return None
        end = stop - tail
        # The split found no token in the tail, so no token starts before `done`.
        done = stop - len(token) + 1
        self._pos = end
        self._scan_from = end
        self._found[0] = -1
        self._searched[0] = done if done > end else end
        if len(parts) == 1:
            # One record: no batch. When it was all that was buffered (request/response)
            # the scanner is idle again (Socket.recv_parsed then reads without buffering);
            # else the window held no more than it: widen it for the next cut.
            if end == len(buf):
                self._drop()
            elif self._ahead < (1 << 24):
                self._ahead *= 2
            return _new_parsed(Parsed, (parts[0], token, 1))
        ready = map(_new_parsed, repeat(Parsed), zip(parts, repeat(token), repeat(1)))
        first = next(ready)
        self.ready = ready
        self.ready_max = end - pos if max_bytes is None else max_bytes
        self.ready_tokens = self._tokens
        return first

    def _cut_ahead_many(self, tokens: TokenSet, max_bytes: int | None, need: int) -> Parsed | None:
        """Cut every record that is already settled, for a set of several tokens.

        As with one token, the window comes from :meth:`_window`. ``None`` when no record
        in it is settled (the caller then takes the first record on its own).
        """
        buf, pos, stop, limit = self._window(max_bytes, tokens.min_len, tokens.max_len, need)
        ready, end = self._cut_many(tokens, buf, pos, stop, limit)
        if end < 0:
            # A record over the limit: cut the window that cannot hold one instead (and
            # one record at a time for a while, as for one token).
            self._back_off()
            assert limit is not None
            ready, end = self._cut_many(tokens, buf, pos, pos + limit + tokens.min_len, None)
        if ready is None:
            return None
        first = next(ready)
        self._pos = self._scan_from = end
        self.ready = ready
        self.ready_max = end - pos if max_bytes is None else max_bytes
        self.ready_tokens = tokens
        return first

    @classmethod
    def _cut_many(
        cls, tokens: TokenSet, buf: bytes, pos: int, stop: int, limit: int | None
    ) -> tuple[Iterator[Parsed] | None, int]:
        """The records settled in ``buf[pos:stop]`` and where the last one ends.

        ``(None, 0)`` when there are none; ``(None, -1)`` when a record's data is longer
        than ``limit`` (``None``: do not measure).
        """
        plan = tokens._split_plan
        if plan.fast:
            # Leave out the start of a multi-byte token still arriving: cut, it would
            # look like a lone token byte and send the whole region to the regex.
            for partial in plan.trailing:
                if stop - len(partial) > pos and buf.startswith(
                    partial, stop - len(partial), stop
                ):
                    stop -= len(partial)
                    break
        region = buf[pos:stop] if pos or stop < len(buf) else buf
        if plan.fast:
            ready, end = cls._cut_fast(plan, region, stop, tokens.max_len, limit)
            if ready is not None or end < 0:
                return ready, end
        return cls._cut_regex(plan, region, stop, tokens.max_len, limit)

    @staticmethod
    def _cut_fast(
        plan: _SplitPlan, region: bytes, stop: int, max_len: int, limit: int | None
    ) -> tuple[Iterator[Parsed] | None, int]:
        """The ``bytes``-method cut (see :class:`_SplitPlan`); ``None`` if it cannot."""
        split_region = region
        for byte in plan.split_bytes:
            split_region = split_region.replace(byte, plan.mark)
        runs = split_region.split(plan.mark)
        end = stop - len(runs.pop())  # after the last token
        if limit is not None and runs and max(map(len, runs)) > limit:
            return None, -1  # every record's data is a run (and so are the gaps)
        codes = region.translate(None, plan.delete)
        per_record = codes
        for token, marker in plan.replacements:
            per_record = per_record.replace(token, marker)
        if per_record.translate(None, plan.valid):
            return None, 0  # a token byte in the data
        datas: Iterable[bytes] = runs
        if plan.replacements:
            mask = codes
            for token, replacement in plan.mask_replacements:
                mask = mask.replace(token, replacement)
            if any(compress(runs, mask.translate(plan.drop_table))):
                return None, 0  # a multi-byte token's bytes were not adjacent
            datas = compress(runs, mask.translate(plan.keep_table))
        # A token that starts near the end might be the start of a longer one still
        # arriving: leave those records to scan(), which waits or decides.
        token_of = plan.token_of_code
        count = len(per_record)
        run = len(runs)
        while count:
            size = len(token_of(per_record[count - 1]))
            if end - size + max_len <= stop:
                break
            count -= 1
            run -= size
            end -= size + len(runs[run])
        if not count:
            return None, 0
        if count < len(per_record):
            per_record = per_record[:count]
        return (
            map(
                _new_parsed,
                repeat(Parsed),
                # The runs go on past the records left for scan(): stop with the codes.
                zip(
                    datas,
                    map(token_of, per_record),
                    per_record.translate(plan.index_table),
                    strict=False,
                ),
            ),
            end,
        )

    @staticmethod
    def _cut_regex(
        plan: _SplitPlan, region: bytes, stop: int, max_len: int, limit: int | None
    ) -> tuple[Iterator[Parsed] | None, int]:
        """The general cut: one regex split over ``region`` (which ends at ``stop``)."""
        pieces = plan.pattern.split(region)
        end = stop - len(pieces.pop())  # after the last token
        datas = pieces[0::2]
        seps = pieces[1::2]
        while seps and end - len(seps[-1]) + max_len > stop:
            end -= len(seps.pop()) + len(datas.pop())
        if not seps:
            return None, 0
        if limit is not None and max(map(len, datas)) > limit:
            return None, -1
        return (
            map(
                _new_parsed,
                repeat(Parsed),
                zip(datas, map(plan.token_of, seps), map(plan.index_of, seps), strict=True),
            ),
            end,
        )

    def scan(self, tokens: TokenSet, max_bytes: int | None, eof: bool) -> Parsed | None:
        """Find the next record ended by one of ``tokens``.

        Args:
            tokens: the token set to look for.
            max_bytes: the limit on data bytes (token excluded); ``None`` for none.
            eof: True when no more bytes will ever be fed.

        Returns:
            The record (consumed from the buffer), or ``None`` when more bytes are needed.
        """
        ready = self.ready
        if (
            ready is not None
            and tokens is self.ready_tokens
            and (max_bytes is None or max_bytes >= self.ready_max)
        ):
            result = next(ready, None)
            if result is not None:
                return result
            # The whole batch was used: cut a bigger one next time.
            self._ahead = self._ahead * 2 if self._ahead < (1 << 24) else self._ahead
            self._skip_next = 1
        elif self._skip and ready is None and tokens is self._tokens and len(tokens.tokens) == 1:
            # Backing off, one token: the record alone, by the shortest way (a length-
            # prefixed protocol comes here for every line).
            buf = self._buf
            if type(buf) is bytes:
                pos = self._pos
                tok = tokens.tokens[0]
                at = buf.find(tok, pos)
                if at >= 0:
                    if max_bytes is not None and at - pos > max_bytes:
                        # Beyond the limit (and so is any token that could still
                        # complete at the end): the limit's worth.
                        return Parsed(self.take(max_bytes), None, 0)
                    self._skip -= 1
                    end = self._pos = at + len(tok)
                    if end == len(buf):
                        self._drop()
                    return _new_parsed(Parsed, (buf[pos:at], tok, 1))
        return self._scan(tokens, max_bytes, eof)

    def _scan(self, tokens: TokenSet, max_bytes: int | None, eof: bool) -> Parsed | None:
        if self.ready is not None:
            self._settle()
        if tokens is not self._tokens:
            self._tokens = tokens
            self._found = [-1] * len(tokens.tokens)
            self._searched = [0] * len(tokens.tokens)
            self._scan_from = 0
        buf = self._buf
        pos = self._pos
        size = len(buf)
        toks = tokens.tokens
        found = self._found
        searched = self._searched
        start = self._scan_from if self._scan_from > pos else pos

        # Earliest complete match; the longest at a tie.
        if len(toks) > FIND_EACH_MAX:
            # A token counts only if it starts within the limit: search no further (with
            # _scan_from moving on, each byte is searched a bounded number of times).
            stop = size if max_bytes is None else pos + max_bytes + tokens.max_len
            best, best_k = _earliest(tokens._split_plan, buf, start, stop)
        else:
            best = -1
            best_k = -1
            # A token counts only if it starts within the limit: search no further (so
            # scans alternating between token sets stay linear over a long stretch).
            bound = size if max_bytes is None else pos + max_bytes
            for k in range(len(toks)):
                at = found[k]
                if at < start:
                    tok = toks[k]
                    from_ = searched[k] if searched[k] > start else start
                    end = bound + len(tok) if bound + len(tok) < size else size
                    at = buf.find(tok, from_, end)
                    if at < 0:
                        done = end - len(tok) + 1
                        searched[k] = done if done > from_ else from_
                        continue
                    found[k] = at
                if best < 0 or at < best or (at == best and len(toks[k]) > len(toks[best_k])):
                    best = at
                    best_k = k
        if max_bytes is not None and best - pos > max_bytes:
            best = -1
        if best >= 0 and self._skip:
            self._skip -= 1  # records cut ahead were wasted lately: this one alone
        elif best >= 0 and not (type(buf) is bytearray and best - pos >= BIG_RECORD):
            # (A big first record still in the growing bytearray is copied out below.)
            if len(toks) == 1:
                # One token: no partial match can start before a complete one (and the
                # record at `best` always fits in the window).
                first = self._cut_ahead(toks[0], max_bytes, best - pos)
                if first is not None:
                    return first
            elif best + tokens.max_len <= size:
                # No partial match can start at or before `best`: cut ahead.
                first = self._cut_ahead_many(tokens, max_bytes, best - pos)
                if first is not None:
                    return first

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
                if isinstance(buf, bytearray):  # one copy of the record, not of the buffer
                    with memoryview(buf) as view:
                        data = bytes(view[pos:best])
                else:
                    data = buf[pos:best]
                self._pos = best + len(tok)
                if self._pos == size:
                    self._drop()
                return _new_parsed(Parsed, (data, tok, best_k + 1))
            self._scan_from = partial
            return None
        if eof:
            return Parsed(self.take(size if max_bytes is None else max_bytes), None, 0)
        if partial >= 0:
            self._scan_from = partial
            if max_bytes is None or partial - pos <= max_bytes:
                return None
        else:
            self._scan_from = size
        if max_bytes is not None and size - pos > max_bytes:
            return Parsed(self.take(max_bytes), None, 0)
        return None

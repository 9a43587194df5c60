"""Fuzz target: the delimiter scanner (``janusnet._scan.Scanner``) and ``TokenSet``.

Each input decodes into a token set (or several), then a sequence of operations on one
``Scanner``: ``feed``, ``scan`` (any token set, any limit including 0 and None, EOF or
not), ``take``, ``peek``, ``unread`` and ``pending``. A plain ``bytes`` model of the unread
buffer is kept beside it, and every answer is checked against it:

* ``scan`` returns exactly what the pinned rules (DESIGN.md, applied naively to the model)
  say: the earliest-starting token, the longest at a tie, "wait" while a partial match at
  the end could still change the answer, the limit on data bytes, the EOF rule;
* so ``data + token`` is always exactly the consumed prefix of the input, ``take``/``peek``
  agree with the model, and ``pending`` is its length;
* a second scanner fed the same bytes in other pieces gives the same records;
* nothing raises except ``UsageError`` while building a token set.

Run: ``python fuzz/fuzz_scan.py -runs=20000`` (atheris) or ``--iterations 20000``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Provider, load_atheris, run

_atheris = load_atheris() if __name__ == "__main__" else None  # instrument when run
with _atheris.instrument_imports(include=["janusnet"]) if _atheris else contextlib.nullcontext():
    from janusnet._exceptions import UsageError
    from janusnet._scan import Parsed, Scanner, TokenSet

#: A small alphabet makes token matches (and near-matches) common.
ALPHABET = b"\r\nab|\x00"


def _bytes(p: Provider, max_len: int, *, alphabet: bool) -> bytes:
    raw = p.take(p.int_in(0, max_len))
    return bytes(ALPHABET[b % len(ALPHABET)] for b in raw) if alphabet else raw


def _token_set(p: Provider) -> TokenSet | None:
    if p.int_in(0, 15) == 0:  # now and then, the PRSTOK notation with arbitrary text
        try:
            return TokenSet.from_prstok(p.take(p.int_in(0, 24)).decode("latin-1"))
        except UsageError:
            return None
    tokens = [_bytes(p, 4, alphabet=p.int_in(0, 7) != 0) for _ in range(p.int_in(1, 4))]
    try:
        return TokenSet(tokens)
    except UsageError:
        return None


def expected_scan(buf: bytes, tokens: TokenSet, max_bytes: int | None, eof: bool) -> Parsed | None:
    """The pinned rules, applied naively to the unread bytes."""
    best: tuple[int, int] | None = None
    for start in range(len(buf)):
        if max_bytes is not None and start > max_bytes:
            break
        matches = [(len(t), k) for k, t in enumerate(tokens) if buf.startswith(t, start)]
        if matches:
            best = (start, max(matches)[1])
            break
    partial = next(
        (
            p
            for p in range(len(buf))
            if any(len(t) > len(buf) - p and t.startswith(buf[p:]) for t in tokens)
        ),
        None,
    )
    if best is not None:
        start, k = best
        if partial is None or partial > start or eof:
            return Parsed(buf[:start], tokens[k], k + 1)
        return None
    if eof:
        count = len(buf) if max_bytes is None else min(max_bytes, len(buf))
        return Parsed(buf[:count], None, 0)
    if partial is not None and (max_bytes is None or partial <= max_bytes):
        return None
    if max_bytes is not None and len(buf) > max_bytes:
        return Parsed(buf[:max_bytes], None, 0)
    return None


def _records(chunks: list[bytes], tokens: TokenSet, max_bytes: int | None) -> list[Parsed]:
    scanner = Scanner()
    out: list[Parsed] = []
    for chunk in chunks:
        scanner.feed(chunk)
        while (result := scanner.scan(tokens, max_bytes, False)) is not None:
            out.append(result)
    for _ in range(sum(map(len, chunks)) + 2):
        result = scanner.scan(tokens, max_bytes, True)
        assert result is not None, "at EOF scan() must answer"
        out.append(result)
        if result == (b"", None, 0) and not scanner.pending:
            return out
    raise AssertionError("scan() at EOF never drained the buffer")


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    sets = [s for s in (_token_set(p) for _ in range(p.int_in(1, 3))) if s is not None]
    if not sets:
        return
    scanner = Scanner()
    model = b""  # the unread bytes, as the scanner should hold them
    fed = bytearray()  # everything fed, for the split check
    for _ in range(p.int_in(1, 40)):
        op = p.int_in(0, 9)
        if op <= 2:
            chunk = _bytes(p, 24, alphabet=True)
            scanner.feed(chunk)
            model += chunk
            fed += chunk
        elif op <= 6:
            tokens = sets[p.int_in(0, len(sets) - 1)]
            if p.flag():  # an equal set that is another object: caches must not mix
                tokens = TokenSet(tokens.tokens)
            max_bytes = None if p.flag() else p.int_in(0, 20)
            eof = p.int_in(0, 3) == 0
            want = expected_scan(model, tokens, max_bytes, eof)
            got = scanner.scan(tokens, max_bytes, eof)
            assert got == want, (model, tokens, max_bytes, eof, got, want)
            if got is not None:
                assert isinstance(got, Parsed)
                consumed = got.data + (got.token or b"")
                assert model.startswith(consumed)
                model = model[len(consumed) :]
                if got.token is None:
                    assert got.index == 0
                else:
                    assert tokens[got.index - 1] == got.token
                if max_bytes is not None:
                    assert len(got.data) <= max_bytes
        elif op == 7:
            count = p.int_in(1, 16)
            got_bytes = scanner.take(count)
            assert got_bytes == model[:count]
            model = model[count:]
        elif op == 8:
            assert scanner.peek() == model
            assert scanner.pending == len(model)
        else:
            back = _bytes(p, 6, alphabet=True)
            scanner.unread(back)
            model = back + model
        assert scanner.pending == len(model)
    # Split independence on everything fed, with the first token set and a limit (>= 1:
    # with 0, a buffer not starting with a token yields b"" forever, as documented).
    tokens = sets[0]
    max_bytes = None if p.flag() else p.int_in(1, 20)
    whole = bytes(fed)
    cuts = sorted({p.int_in(0, len(whole)) for _ in range(p.int_in(0, 6))})
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    assert _records(pieces, tokens, max_bytes) == _records([whole], tokens, max_bytes)


SEEDS = [
    b"",
    b"\x01\x02\x00\x01\x00\x03" + b"\x00" * 8 + b"\x05hello\x04\x01\x00",
    bytes(range(64)),
    b"\x02" + b"\x03\x03\x04\x01\x05" * 3 + bytes(range(200, 256)) * 2,
    b"\x0f\x080D0A|0D\x00\x04" + b"\x01\x0a" + b"\x00\x01\x02\x03" * 5 + b"\x05\x00\x00\x00",
]


def main() -> None:
    run(test_one_input, SEEDS)


if __name__ == "__main__":
    main()

"""Sans-IO tests for TokenSet and the delimiter scanner (no sockets)."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janusnet import ClientPort, Parsed, TokenSet, UsageError
from janusnet._scan import MEASURE_BELOW, Scanner

CRLF = TokenSet([b"\r\n"])
AMBIG = TokenSet([b"\r\n", b"\r"])


def drive(chunks: list[bytes], tokens: TokenSet, max_bytes: int | None) -> list[Parsed]:
    """Feed chunks one at a time, collecting every record, then settle at EOF."""
    scanner = Scanner()
    results: list[Parsed] = []
    for chunk in chunks:
        scanner.feed(chunk)
        while (result := scanner.scan(tokens, max_bytes, eof=False)) is not None:
            results.append(result)
    while True:
        result = scanner.scan(tokens, max_bytes, eof=True)
        assert result is not None, "at EOF the scanner must always answer"
        results.append(result)
        if result == (b"", None, 0) and not scanner.pending:
            return results


def oracle(data: bytes, tokens: TokenSet, max_bytes: int | None) -> list[Parsed]:
    """The pinned rules, applied naively to the whole input at once."""
    out: list[Parsed] = []
    while data:
        found = None
        for start in range(len(data)):
            if max_bytes is not None and start > max_bytes:
                break
            matches = [(len(t), k) for k, t in enumerate(tokens) if data.startswith(t, start)]
            if matches:
                found = (start, max(matches)[1])
                break
        if found is not None:
            start, k = found
            out.append(Parsed(data[:start], tokens[k], k + 1))
            data = data[start + len(tokens[k]) :]
        else:
            n = len(data) if max_bytes is None else min(max_bytes, len(data))
            out.append(Parsed(data[:n], None, 0))
            data = data[n:]
    out.append(Parsed(b"", None, 0))
    return out


def scan_once(data: bytes, tokens: TokenSet, max_bytes: int | None, eof: bool) -> Parsed | None:
    scanner = Scanner()
    scanner.feed(data)
    return scanner.scan(tokens, max_bytes, eof)


@pytest.mark.parametrize(
    ("data", "tokens", "max_bytes", "eof", "expected"),
    [
        pytest.param(b"abc\r\ndef", CRLF, None, False, (b"abc", b"\r\n", 1), id="single-token"),
        pytest.param(b"abc", CRLF, None, False, None, id="no-token-waits"),
        pytest.param(b"abc\r", CRLF, None, False, None, id="partial-token-waits"),
        pytest.param(b"abc\r", AMBIG, None, False, None, id="ambig-short-at-end-waits"),
        pytest.param(b"abc\rx", AMBIG, None, False, (b"abc", b"\r", 2), id="ambig-short-settled"),
        pytest.param(b"abc\r\n", AMBIG, None, False, (b"abc", b"\r\n", 1), id="ambig-longest"),
        pytest.param(b"abc\r", AMBIG, None, True, (b"abc", b"\r", 2), id="ambig-short-at-eof"),
        pytest.param(
            b"a|b\r\n", TokenSet([b"\r\n", b"|"]), None, False, (b"a", b"|", 2), id="earliest-wins"
        ),
        pytest.param(
            b"xabcd",
            TokenSet([b"abcdef", b"cd"]),
            None,
            False,
            None,
            id="earlier-partial-longer-token-waits",
        ),
        pytest.param(
            b"xabcdz",
            TokenSet([b"abcdef", b"cd"]),
            None,
            False,
            (b"xab", b"cd", 2),
            id="earlier-partial-settled",
        ),
        pytest.param(b"", CRLF, None, True, (b"", None, 0), id="eof-empty"),
        pytest.param(b"tail", CRLF, None, True, (b"tail", None, 0), id="eof-with-data"),
        pytest.param(b"tail\r", CRLF, None, True, (b"tail\r", None, 0), id="eof-partial-token"),
        pytest.param(b"abcd\r\n", CRLF, 4, False, (b"abcd", b"\r\n", 1), id="max-at-limit"),
        pytest.param(b"abc\r\n", CRLF, 4, False, (b"abc", b"\r\n", 1), id="max-below-limit"),
        pytest.param(b"abcde\r\n", CRLF, 4, False, (b"abcd", None, 0), id="max-above-limit"),
        pytest.param(b"abcd", CRLF, 4, False, None, id="max-exactly-filled-waits"),
        pytest.param(b"abcd\r", CRLF, 4, False, None, id="max-partial-at-limit-waits"),
        pytest.param(b"abcdxy", CRLF, 4, False, (b"abcd", None, 0), id="max-settled-no-token"),
        pytest.param(b"abcdefgh", CRLF, 4, True, (b"abcd", None, 0), id="max-at-eof"),
        pytest.param(b"\r\nabc", CRLF, 0, False, (b"", b"\r\n", 1), id="max-zero-token-first"),
        pytest.param(b"x\r\n", CRLF, 0, False, (b"", None, 0), id="max-zero-no-token"),
    ],
)
def test_scanner_rules(
    data: bytes, tokens: TokenSet, max_bytes: int | None, eof: bool, expected: object
) -> None:
    assert scan_once(data, tokens, max_bytes, eof) == expected


def test_scanner_keeps_rest_after_limit() -> None:
    scanner = Scanner()
    scanner.feed(b"abcdefgh\r\n")
    assert scanner.scan(CRLF, 3, eof=False) == (b"abc", None, 0)
    assert scanner.pending == 7
    assert scanner.scan(CRLF, None, eof=False) == (b"defgh", b"\r\n", 1)


def test_scanner_token_set_change_between_calls() -> None:
    scanner = Scanner()
    scanner.feed(b"a|b\r\nc|")
    assert scanner.scan(CRLF, None, eof=False) == (b"a|b", b"\r\n", 1)
    assert scanner.scan(TokenSet([b"|"]), None, eof=False) == (b"c", b"|", 1)


def test_scanner_take_interleaves_with_scan() -> None:
    scanner = Scanner()
    scanner.feed(b"ab|cd|ef|")
    pipe = TokenSet([b"|", b"\r\n"])
    assert scanner.scan(pipe, None, eof=False) == (b"ab", b"|", 1)
    assert scanner.take(2) == b"cd"
    assert scanner.scan(pipe, None, eof=False) == (b"", b"|", 1)
    assert scanner.scan(pipe, None, eof=False) == (b"ef", b"|", 1)


def test_scanner_linear_work_on_growing_buffer() -> None:
    """A long record arriving one byte at a time must not be rescanned from the start."""
    scanner = Scanner()
    tokens = TokenSet([b"\r\n", b"|", b"END!"])
    calls = 0
    original = bytearray.find
    for _ in range(20000):
        scanner.feed(b"x")
        assert scanner.scan(tokens, None, eof=False) is None
        calls += 1
    # Every token's search position has advanced to the end of the buffer.
    assert scanner._scan_from == scanner.pending == 20000
    assert all(s >= 20000 - len(t) for s, t in zip(scanner._searched, tokens))
    assert original is bytearray.find and calls == 20000
    scanner.feed(b"|")
    assert scanner.scan(tokens, None, eof=False) == (b"x" * 20000, b"|", 2)


token_lists = st.lists(
    st.binary(min_size=1, max_size=4).map(lambda b: bytes(x % 4 + 0x61 for x in b)),
    min_size=1,
    # Beyond FIND_EACH_MAX (4) tokens, scan() finds the earliest with one regex search,
    # and beyond FAST_MAX_BYTES (8) multi-byte tokens the cut is the regex's.
    max_size=12,
    unique=True,
)


@st.composite
def split_case(draw: st.DrawFn) -> tuple[bytes, list[bytes], TokenSet, int | None]:
    tokens = TokenSet(draw(token_lists))
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(tokens.tokens),
                st.binary(max_size=6).map(lambda b: bytes(x % 5 + 0x61 for x in b)),
            ),
            max_size=20,
        )
    )
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    max_bytes = draw(st.one_of(st.none(), st.integers(1, 12)))
    return data, chunks, tokens, max_bytes


@settings(max_examples=400, deadline=None)
@given(split_case())
def test_scanner_split_anywhere_same_result(
    case: tuple[bytes, list[bytes], TokenSet, int | None],
) -> None:
    data, chunks, tokens, max_bytes = case
    whole = drive([data], tokens, max_bytes)
    assert drive(chunks, tokens, max_bytes) == whole
    assert drive([bytes([b]) for b in data], tokens, max_bytes) == whole
    assert whole == oracle(data, tokens, max_bytes)


@pytest.mark.parametrize(
    ("spec", "tokens"),
    [
        pytest.param("0D0A", [b"\r\n"], id="crlf"),
        pytest.param("0d0a|7C", [b"\r\n", b"|"], id="two-lowercase-hex"),
        pytest.param("AMBIG|0D0A|0D", [b"\r\n", b"\r"], id="ambig"),
        pytest.param("ambig|0D|0D0A", [b"\r", b"\r\n"], id="ambig-lowercase-order-kept"),
        pytest.param(" 0D0A | 0A ", [b"\r\n", b"\n"], id="spaces"),
    ],
)
def test_token_set_from_prstok_accepts(spec: str, tokens: list[bytes]) -> None:
    parsed = TokenSet.from_prstok(spec)
    assert list(parsed) == tokens
    assert TokenSet.from_prstok(parsed.to_prstok()) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("0D0A|0D|0A", "prefix of another", id="prefix-needs-ambig"),
        pytest.param("AMBIG|0D0A|0D09", "only allowed", id="needless-ambig"),
        pytest.param("0G", "not hex", id="bad-hex"),
        pytest.param("0D0", "odd number", id="odd-digits"),
        pytest.param("0D 0A", "not hex .*no spaces", id="space-inside"),
        pytest.param("0D\t0A|0A", "not hex", id="tab-inside"),
        pytest.param("0D0A||0A", "empty token", id="empty-token"),
        pytest.param("", "empty token", id="empty-string"),
        pytest.param("AMBIG|", "empty token", id="ambig-only"),
        pytest.param("0D0A|0d0a", "twice", id="duplicate"),
        pytest.param("NONE", "NONE", id="none"),
        pytest.param(" none ", "NONE means no parse tokens", id="none-says-why"),
    ],
)
def test_token_set_from_prstok_rejects(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TokenSet.from_prstok(spec)


def test_token_set_from_prstok_error_shows_a_long_spec_shortened() -> None:
    spec = "|".join(f"{n:04X}" for n in range(3000)) + "|ZZ"
    with pytest.raises(UsageError, match="not hex") as info:
        TokenSet.from_prstok(spec)
    assert len(str(info.value)) < 200


def test_token_set_from_prstok_takes_only_a_str() -> None:
    with pytest.raises(UsageError, match="PRSTOK must be a str"):
        TokenSet.from_prstok(b"0D0A")  # type: ignore[arg-type]


def test_token_set_token_length_limit() -> None:
    """A token may be 256 bytes long, not one more."""
    assert TokenSet([b"x" * 256]).max_len == 256
    with pytest.raises(UsageError, match="limited to 256 bytes"):
        TokenSet([b"x" * 257])


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([], id="empty-list"),
        pytest.param([b""], id="empty-token"),
        pytest.param([b"a", b"a"], id="duplicate"),
        pytest.param(["\r\n"], id="str-token"),
        pytest.param(b"\r\n", id="bare-bytes"),
        pytest.param(None, id="none"),
        pytest.param(5, id="int"),
    ],
)
def test_token_set_list_rejects(tokens: object) -> None:
    with pytest.raises(UsageError):
        TokenSet(tokens)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ClientPort(parse_tokens=tokens)  # type: ignore[arg-type]


def test_token_set_list_allows_prefixes() -> None:
    assert TokenSet([b"\r", b"\r\n"]).has_prefixes


@pytest.mark.parametrize("module", ["_scan.py", "_connect.py"])
def test_sans_io_modules_import_no_io(module: str) -> None:
    path = pathlib.Path(__file__).parent.parent / "src" / "janusnet" / module
    if not path.exists():
        pytest.fail(f"{module} is missing")
    tree = ast.parse(path.read_text())
    allowed_third_party = {"h11", "idna"}  # sans-IO libraries
    import sys

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.module == "_exceptions", f"{module} imports .{node.module}"
                continue
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        for name in names:
            assert name in sys.stdlib_module_names or name in allowed_third_party, (
                f"{module} imports {name}"
            )


# ------------------------------------------------------------------ cutting ahead
# A scanner that finds several settled records cuts them all at once: with bytes methods
# (the plan's fast cut) when the data allow it, else with a regex split. Both must give
# exactly the oracle's records.


@pytest.mark.parametrize(
    ("tokens", "fast"),
    [
        pytest.param([b"\r\n", b"\n", b"|"], True, id="crlf-lf-bar"),
        pytest.param([b"\r\n", b"\r"], True, id="ambig"),
        pytest.param([b"\n", b"\r\n", b"--END--"], True, id="long-token"),
        pytest.param([b"ab", b"bc"], False, id="overlapping"),
        pytest.param([b"ab", b"ac"], True, id="shared-prefix"),
        pytest.param([b"aa", b"ab"], False, id="self-prefix-overlap"),
        pytest.param([bytes([b]) for b in range(255)], False, id="no-free-bytes"),
        pytest.param([bytes([b]) for b in range(65, 65 + 24)], True, id="24-bytes"),
        pytest.param([bytes([b]) for b in range(65, 65 + 25)], False, id="25-bytes"),
        pytest.param([b"<END1>", b"[STOP]"], True, id="two-tokens-ten-bytes"),
        pytest.param([b"\xf0" + bytes([k]) for k in range(8)], True, id="eight-multi"),
        pytest.param([b"\xf0" + bytes([k]) for k in range(9)], False, id="nine-multi"),
    ],
)
def test_split_plan_uses_bytes_methods_unless_tokens_overlap_or_are_many(
    tokens: list[bytes], fast: bool
) -> None:
    assert TokenSet(tokens)._split_plan.fast is fast


@st.composite
def record_streams(draw: st.DrawFn) -> tuple[TokenSet, bytes, bool]:
    """Many records ended by tokens; the data sometimes contain token bytes."""
    tokens = TokenSet(draw(token_lists))
    token_bytes = {b for token in tokens for b in token}
    clean = draw(st.booleans())
    alphabet = [b for b in b"abcdefgh" if not (clean and b in token_bytes)]
    data = st.lists(st.sampled_from(alphabet), max_size=5).map(bytes)
    records = draw(st.lists(st.tuples(data, st.sampled_from(tokens.tokens)), max_size=60))
    stream = b"".join(body + token for body, token in records) + draw(data)
    return tokens, stream, clean


@settings(max_examples=400, deadline=None)
@given(record_streams())
def test_fast_cut_gives_the_regex_cut_or_declines(case: tuple[TokenSet, bytes, bool]) -> None:
    tokens, stream, _ = case
    plan = tokens._split_plan
    if not plan.fast:
        return
    fast, fast_end = Scanner._cut_fast(plan, stream, len(stream), tokens.max_len, None)
    slow, slow_end = Scanner._cut_regex(plan, stream, len(stream), tokens.max_len, None)
    if fast is not None:
        assert slow is not None
        assert (list(fast), fast_end) == (list(slow), slow_end)


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([b"\r\n", b"\n", b"|"], id="crlf-lf-bar"),
        pytest.param([b"\r\n", b"\r"], id="ambig"),
        pytest.param([b"\n", b"\r\n", b"--END--"], id="long-token"),
        pytest.param([b";", b"|", b"\t", b"\x00"], id="single-bytes"),
    ],
)
def test_fast_cut_takes_clean_records(tokens: list[bytes]) -> None:
    """Data without token bytes: the fast cut answers, exactly as the regex does."""
    token_set = TokenSet(tokens)
    plan = token_set._split_plan
    stream = b"".join(
        bytes([0x61 + k % 26]) * (k % 7) + tokens[k % len(tokens)] for k in range(3000)
    )
    fast, fast_end = Scanner._cut_fast(plan, stream, len(stream), token_set.max_len, None)
    slow, slow_end = Scanner._cut_regex(plan, stream, len(stream), token_set.max_len, None)
    assert fast is not None and slow is not None
    fast_records = list(fast)
    assert (fast_records, fast_end) == (list(slow), slow_end)
    assert len(fast_records) >= 2999  # only a record ending at the very end may wait


@settings(max_examples=200, deadline=None)
@given(record_streams(), st.integers(1, 97), st.one_of(st.none(), st.integers(1, 9)))
def test_scanner_many_records_match_oracle(
    case: tuple[TokenSet, bytes, bool], chunk: int, max_bytes: int | None
) -> None:
    tokens, stream, _ = case
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert drive(chunks, tokens, max_bytes) == oracle(stream, tokens, max_bytes)


@st.composite
def long_record_streams(draw: st.DrawFn) -> tuple[TokenSet, bytes]:
    """Records of 0.5-5 KB ended by one token (records this long are cut ahead without
    searching the first one again); the data sometimes hold the token's bytes."""
    token = draw(st.sampled_from([b"\r\n", b"\n", b"ab"]))
    fill = draw(st.sampled_from([b"x", b"xa", b"x\r", b"b"]))
    sizes = draw(st.lists(st.integers(500, 5000), min_size=1, max_size=8))
    stream = b"".join((fill * size)[:size] + token for size in sizes)
    return TokenSet([token]), stream + draw(st.sampled_from([b"", b"x" * 700]))


@settings(max_examples=150, deadline=None)
@given(
    long_record_streams(),
    st.integers(1, 12000),
    st.one_of(st.none(), st.integers(300, 12000)),
)
def test_scanner_long_records_match_oracle(
    case: tuple[TokenSet, bytes], chunk: int, max_bytes: int | None
) -> None:
    tokens, stream = case
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert drive(chunks, tokens, max_bytes) == oracle(stream, tokens, max_bytes)


def test_scanner_cuts_a_large_buffer_in_windows_within_the_limit() -> None:
    """With a limit, records are cut a window at a time; none is over the limit."""
    tokens = TokenSet([b"\r\n", b"\n", b"|"])
    bodies = [bytes([0x41 + k % 26]) * (k % 50) for k in range(5000)]
    stream = b"".join(body + tokens[k % 3] for k, body in enumerate(bodies))
    scanner = Scanner()
    scanner.feed(stream)
    got = []
    while (result := scanner.scan(tokens, 60, eof=False)) is not None:
        got.append(result)
        # Records cut ahead stay within one window of the limit (plus the shortest token).
        assert scanner.ready_max <= 60
    assert got == [Parsed(body, tokens[k % 3], k % 3 + 1) for k, body in enumerate(bodies)]


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([b"\r\n"], id="one-token"),
        pytest.param([b"\r\n", b"\n", b"|"], id="fast-cut"),
        pytest.param([b"ab", b"bc"], id="regex-cut"),
    ],
)
@pytest.mark.parametrize("limit", [1, 5, 40, 700, MEASURE_BELOW - 1, MEASURE_BELOW])
def test_records_over_a_small_limit_inside_a_wide_window(tokens: list[bytes], limit: int) -> None:
    """Below MEASURE_BELOW the window is wider than the limit and its records are
    measured: a record over the limit, anywhere in it, still comes back cut at the limit."""
    token_set = TokenSet(tokens)
    bodies = [b"x" * (k % 30) for k in range(400)]
    bodies[150] = b"y" * (limit + 1)  # one record just over the limit
    bodies[300] = b"z" * (limit + 3000)
    stream = b"".join(body + tokens[k % len(tokens)] for k, body in enumerate(bodies))
    assert drive([stream], token_set, limit) == oracle(stream, token_set, limit)
    assert drive([stream[:5000], stream[5000:]], token_set, limit) == oracle(
        stream, token_set, limit
    )


def test_a_wide_window_declines_a_record_over_the_limit() -> None:
    """The measured cuts say so (end -1) instead of handing out a record over the limit."""
    token_set = TokenSet([b"\r\n", b"\n", b"|"])
    plan = token_set._split_plan
    stream = b"ab|cdef\r\ng\n"
    for cut in (Scanner._cut_fast, Scanner._cut_regex):
        assert cut(plan, stream, len(stream), token_set.max_len, 3) == (None, -1)
        ready, end = cut(plan, stream, len(stream), token_set.max_len, 4)
        assert ready is not None and end == len(stream) - 2  # b"\n" could be b"\n..."
        assert [record.data for record in ready] == [b"ab", b"cdef"]


def _cut_work(pattern: str, records: int) -> tuple[int, int]:
    """Bytes the scanner cuts ahead while a caller reads ``records`` 10-byte records the
    way ``pattern`` says, and the bytes fed."""
    from janusnet._scan import as_token_set

    cut = [0]

    class CountingScanner(Scanner):
        def _window(self, *args: int | None) -> tuple[bytes, int, int, int | None]:
            buf, pos, stop, limit = super()._window(*args)  # type: ignore[arg-type]
            cut[0] += stop - pos
            return buf, pos, stop, limit

    scanner = CountingScanner()
    data = b"".join(b"rec%05d\r\n" % (k % 100000) for k in range(records))
    scanner.feed(data)
    crlf = TokenSet([b"\r\n"])
    other = TokenSet([b"\r\n", b"|"])
    for k in range(records):
        if pattern == "list":
            tokens = as_token_set([b"\r\n"])  # a new, equal list per call
        elif pattern == "alternate":
            tokens = crlf if k % 2 else other
        else:
            tokens = crlf
        result = scanner.scan(tokens, 65536, eof=False)
        assert result == Parsed(b"rec%05d" % (k % 100000), b"\r\n", 1)
        if pattern == "pending":
            assert scanner.pending == len(data) - 10 * (k + 1)
        elif pattern == "take":
            scanner.unread(scanner.take(3))  # recv_exactly-style reads in between
    return cut[0], len(data)


@pytest.mark.parametrize("pattern", ["same", "list", "pending", "take", "alternate"])
def test_cut_ahead_work_stays_linear(pattern: str) -> None:
    """Records cut ahead and thrown away (a new token list per call, ``pending`` or a
    raw read between records, alternating token sets) cost no more than the records
    used: the window starts small (512 bytes) and grows only while its records are all
    used. It was a whole ``max_bytes`` window (64 KiB) per record: ~6500 bytes cut per
    byte fed for 10-byte records, quadratic with a large limit."""
    cut, fed = _cut_work(pattern, 20000)
    assert cut <= 64 * fed, f"{cut} bytes cut for {fed} fed"
    if pattern == "same":
        assert cut <= 3 * fed  # nothing thrown away: each byte cut about once


def test_equal_token_lists_share_one_token_set() -> None:
    from janusnet._scan import as_token_set

    assert as_token_set([b"\r\n", b"\n"]) is as_token_set([b"\r\n", b"\n"])
    assert as_token_set("AMBIG|0D0A|0D") is as_token_set("AMBIG|0D0A|0D")
    assert as_token_set([b"\r\n"]) is not as_token_set([b"\n"])


# --------------------------------------------------------------------------- interleaving
# scan() cuts records ahead in batches; take(), take_exactly() and pending put the unused
# ones back, and after such waste the next scans find one record each (SKIP_MAX). Every
# sequence of operations must give what a naive model of the pinned rules gives.


def model_scan(rest: bytes, tokens: TokenSet, max_bytes: int | None) -> tuple[Parsed, int] | None:
    """The first record of ``rest`` with more bytes to come, and its length; ``None``
    when the scanner must wait."""
    toks = tokens.tokens
    for start in range(len(rest)):
        if max_bytes is not None and start > max_bytes:
            break
        matches = [(len(t), k) for k, t in enumerate(toks) if rest.startswith(t, start)]
        # A token that could still complete here (what is left is a proper prefix of it).
        partial = any(len(t) > len(rest) - start and t.startswith(rest[start:]) for t in toks)
        if partial:
            return None
        if matches:
            size, k = max(matches)
            return Parsed(rest[:start], toks[k], k + 1), start + size
    if max_bytes is not None and len(rest) > max_bytes:
        return Parsed(rest[:max_bytes], None, 0), max_bytes
    return None


scanner_ops = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.none()),
        st.tuples(st.just("scan"), st.one_of(st.none(), st.integers(0, 9))),
        st.tuples(st.just("take"), st.integers(1, 12)),
        st.tuples(st.just("exactly"), st.integers(0, 12)),
        st.tuples(st.just("pending"), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(record_streams(), st.integers(1, 40), scanner_ops)
def test_scanner_interleaved_operations_match_a_model(
    case: tuple[TokenSet, bytes, bool], chunk: int, ops: list[tuple[str, int | None]]
) -> None:
    tokens, stream, _ = case
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    scanner = Scanner()
    rest = b""
    for op, arg in [*ops, *[("scan", None)] * 200]:  # then scan what is left
        if op == "feed":
            if chunks:
                data = chunks.pop(0)
                scanner.feed(data)
                rest += data
        elif op == "scan":
            expected = model_scan(rest, tokens, arg)
            got = scanner.scan(tokens, arg, eof=False)
            if expected is None:
                assert got is None
            else:
                assert got == expected[0]
                rest = rest[expected[1] :]
        elif op == "take":
            assert scanner.take(arg) == rest[:arg]
            rest = rest[arg:]
        elif op == "exactly":
            assert scanner.take_exactly(arg) == (rest[:arg] if len(rest) >= arg else None)
            if len(rest) >= arg:
                rest = rest[arg:]
        else:
            assert scanner.pending == len(rest)
    assert scanner.pending == len(rest)


def test_scanner_alternating_with_take_stops_cutting_ahead() -> None:
    """A length-prefixed protocol (a line, then that many bytes): after the first wasted
    batch the scans find one record each, so no batch is cut only to be put back."""
    unit = b"40\r\n" + b"z" * 64 + b"\r\n"
    scanner = Scanner()
    scanner.feed(unit * 2000)
    settles = 0
    original = Scanner._settle

    def counting(self: Scanner) -> None:
        nonlocal settles
        settles += self.ready is not None
        original(self)

    Scanner._settle = counting  # type: ignore[method-assign]
    try:
        for _ in range(2000):
            line = scanner.scan(CRLF, None, eof=False)
            assert line is not None and line.data == b"40"
            assert scanner.take_exactly(int(line.data, 16) + 2) == b"z" * 64 + b"\r\n"
    finally:
        Scanner._settle = original  # type: ignore[method-assign]
    assert scanner.pending == 0
    # Wasted batches: one, then one after 1, 2, 4, ... 64 single scans (7 in the first
    # 134 lines), then one every 65 lines: 36 here, where there were 2000.
    assert settles <= 7 + (2000 - 134) // 65 + 1


def test_scanner_lets_the_buffer_go_once_everything_is_read() -> None:
    """A socket that waits after a big record holds no buffer (it held the record's
    buffer until the next feed)."""
    scanner = Scanner()
    scanner.feed(b"x" * 100_000 + b"\r\n")
    assert scanner.scan(CRLF, None, eof=False) == (b"x" * 100_000, b"\r\n", 1)
    assert scanner._buf == b"" and scanner.idle
    scanner.feed(b"a\r\nb\r\n")
    assert scanner.scan(CRLF, None, eof=False) == (b"a", b"\r\n", 1)
    assert scanner.scan(CRLF, None, eof=False) == (b"b", b"\r\n", 1)
    assert scanner.scan(CRLF, None, eof=False) is None
    assert scanner._buf == b""
    scanner.feed(b"raw bytes")
    assert scanner.take(100) == b"raw bytes"
    assert scanner._buf == b""


def test_scanner_big_record_in_a_growing_buffer_is_copied_once() -> None:
    """A record of several MiB that arrived in pieces is copied out of the bytearray on
    its own, not after converting the whole buffer to bytes first."""
    scanner = Scanner()
    piece = b"y" * 65536
    for _ in range(32):  # 2 MiB in pieces: the buffer grows as a bytearray
        scanner.feed(piece)
    scanner.feed(b"\r\ntail")
    assert type(scanner._buf) is bytearray
    record = scanner.scan(CRLF, None, eof=False)
    assert record == (piece * 32, b"\r\n", 1)
    assert type(scanner._buf) is bytearray  # not converted
    assert scanner.take(10) == b"tail"


def test_scanner_many_tokens_search_the_buffer_once_per_record() -> None:
    """With more than FIND_EACH_MAX tokens the earliest is found by one regex search:
    no token is looked for with bytes.find across the whole buffer again and again."""
    tokens = TokenSet([b"\xf0" + k.to_bytes(2, "big") for k in range(100)])
    stream = b"".join(b"z" * 1000 + tokens.tokens[k % 100] for k in range(300))
    scanner = Scanner()
    scanner.feed(stream)
    records = []
    while (record := scanner.scan(tokens, None, eof=False)) is not None:
        records.append(record)
    assert [r.index for r in records] == [k % 100 + 1 for k in range(300)]
    assert scanner._found == [-1] * 100  # the per-token cache was never used


def test_scanner_records_over_a_small_limit_back_off_from_cutting_ahead() -> None:
    """max_bytes=100 with 1000-byte records: a window cut to measure the records finds
    one over the limit, so the next records are found one at a time (before, every
    record cut a 64 KiB window, then cut again)."""
    scanner = Scanner()
    scanner.feed((b"q" * 1000 + b"\r\n") * 2000)
    cuts = 0
    original = Scanner._cut_ahead

    def counting(self: Scanner, token: bytes, max_bytes: int | None, need: int) -> Parsed | None:
        nonlocal cuts
        cuts += 1
        return original(self, token, max_bytes, need)

    Scanner._cut_ahead = counting  # type: ignore[method-assign]
    try:
        records = []
        while (record := scanner.scan(CRLF, 100, eof=False)) is not None:
            records.append(record)
    finally:
        Scanner._cut_ahead = original  # type: ignore[method-assign]
    # (The tenth 100 bytes end at the token: it starts at the limit, so it counts.)
    assert records == ([(b"q" * 100, None, 0)] * 9 + [(b"q" * 100, b"\r\n", 1)]) * 2000
    assert cuts < 100  # 2000 before


def test_scanner_many_tokens_small_limit_searches_within_the_limit() -> None:
    """Over FIND_EACH_MAX tokens, a small max_bytes and a long stretch with no token: each
    scan searches as far as a token could start and count, not the whole buffer (which
    made reading 1 MB in 100-byte pieces quadratic)."""
    tokens = TokenSet([b"<T%d>" % k for k in range(5)])
    scanner = Scanner()
    scanner.feed(b"x" * 1_000_000 + b"<T3>")
    searched = 0
    pattern = tokens._split_plan.pattern

    class Counting:
        def search(self, buf: bytes, start: int, stop: int) -> object:
            nonlocal searched
            searched += stop - start
            return pattern.search(buf, start, stop)

    tokens._split_plan.pattern = Counting()  # type: ignore[assignment]
    try:
        pieces = 0
        while (record := scanner.scan(tokens, 100, eof=False)) is not None and not record.index:
            pieces += 1
    finally:
        tokens._split_plan.pattern = pattern
    # (The token starts at the limit of the last 100 bytes: it counts.)
    assert pieces == 9_999 and record == (b"x" * 100, b"<T3>", 4)
    assert searched < 10_001 * (100 + 4 + 1)


def test_scanner_few_tokens_small_limit_searches_within_the_limit() -> None:
    """Up to FIND_EACH_MAX tokens a find per token, bounded by the limit too: scans that
    alternate between two token sets (which clears the per-token positions) read a long
    stretch in 100-byte pieces without searching it all each time."""
    first, second = TokenSet([b"<A>"]), TokenSet([b"<B>"])
    scanner = Scanner()
    scanner.feed(b"x" * 1_000_000)
    assert scanner.scan(first, 100, eof=False) == (b"x" * 100, None, 0)
    assert scanner._searched[0] <= 100 + 1  # searched to the limit, not to the end
    scanner.feed(b"<A>")
    records = [Parsed(b"x" * 100, None, 0)]
    while (record := scanner.scan(second if len(records) % 2 else first, 100, False)) is not None:
        records.append(record)
        if record.index:
            break
    assert sum(len(r.data) for r in records) == 1_000_000
    assert records[-1].token == b"<A>" and not scanner.pending

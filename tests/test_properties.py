"""Property tests for what test_scan.py and test_connect.py do not cover yet.

* The CONNECT reply handled by a real ``ProxyTunnel.open`` over an in-memory stream, with
  arbitrary replies split anywhere: the outcome equals the sans-IO reader's on the whole
  input, and only janusnet errors escape (asyncio and trio).
* ``Socket`` receives (``recv_parsed`` with its fast path, ``recv``, ``recv_exactly``)
  over arbitrary segmentations: the same results as over one segment.
* The remaining validators: ``validate_header``, ``build_connect_request`` (round trip
  through an h11 server), ``TokenSet.from_prstok`` (arbitrary text; round trip),
  ``no_proxy_matches``/``proxy_from_env`` (never raise), access rules.
"""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import anyio
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import janusnet._transport
from janusnet import (
    IncompleteReadError,
    JanusnetError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTunnel,
    Socket,
    TokenSet,
    UsageError,
)
from janusnet._connect import (
    ConnectReplyReader,
    build_connect_request,
    format_authority,
    validate_header,
)
from janusnet._ports import AccessRule, ClientPort
from janusnet._proxyenv import no_proxy_matches, proxy_from_env
from reliability import ScriptedStream

PROPERTY = settings(database=None, max_examples=150, deadline=None)
BACKENDS = ["asyncio", "trio"]

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """Mostly well-formed reply heads (any status), sometimes damaged, then tunnel bytes."""
    heads = "".join(
        f"HTTP/1.1 {s} Interim\r\n\r\n" for s in draw(st.lists(st.integers(100, 199), max_size=1))
    )
    status = draw(st.one_of(st.integers(200, 299), st.sampled_from([403, 407, 502])))
    version = draw(st.sampled_from(["1.0", "1.1"]))
    names = st.text(TOKEN_CHARS, min_size=1, max_size=8)
    values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
    fields = draw(st.lists(st.tuples(names, values), max_size=4))
    head = (
        heads
        + f"HTTP/{version} {status} Reason\r\n"
        + "".join(f"{n}: {v}\r\n" for n, v in fields)
        + "\r\n"
    ).encode()
    damage = draw(st.sampled_from(["none", "none", "cut", "byte"]))
    if damage == "cut":
        head = head[: draw(st.integers(0, len(head)))]
    elif damage == "byte":
        at = draw(st.integers(0, len(head) - 1))
        head = head[:at] + draw(st.binary(min_size=1, max_size=3)) + head[at + 1 :]
    return head + draw(st.binary(max_size=40))


def expected_outcome(data: bytes, max_head_bytes: int) -> tuple[Any, ...]:
    reader = ConnectReplyReader(max_head_bytes=max_head_bytes)
    try:
        reply = reader.feed(data) or reader.feed_eof()
    except ProxyProtocolError:
        return ("error", ProxyProtocolError)
    if 200 <= reply.status < 300:
        return ("ok", reply, reader.leftover)
    error = ProxyAuthenticationRequired if reply.status == 407 else ProxyRefusedError
    return ("error", error, reply.status)


async def tunnel_outcome(chunks: list[bytes], max_head_bytes: int) -> tuple[Any, ...]:
    stream = ScriptedStream(chunks)

    async def fake_open_tcp(*args: Any, **kwargs: Any) -> ScriptedStream:
        return stream

    tunnel = ProxyTunnel("http://proxy.invalid:3128", max_head_bytes=max_head_bytes, timeout=5)
    with mock.patch.object(janusnet._transport, "open_tcp", fake_open_tcp):
        try:
            sock = await tunnel.open("example.com", 443)
        except JanusnetError as exc:
            error: JanusnetError | None = exc
        else:
            error = None
    if error is not None:
        assert stream.closed, "a failed tunnel closes its connection"
        if isinstance(error, ProxyRefusedError):
            return ("error", type(error), error.status)
        assert isinstance(error, ProxyProtocolError), repr(error)
        return ("error", type(error))
    assert stream.sent.startswith(b"CONNECT example.com:443 HTTP/1.1\r\n")
    async with sock:
        tunnel_bytes = b""
        while data := await sock.recv():
            tunnel_bytes += data
    assert stream.closed
    return ("ok", sock.proxy_reply, tunnel_bytes)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY
@given(
    data=replies(),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    max_head_bytes=st.sampled_from([65536, 64, 200]),
)
def test_tunnel_reply_split_anywhere_same_outcome(
    backend: str, data: bytes, cuts: list[int], max_head_bytes: int
) -> None:
    expected = expected_outcome(data, max_head_bytes)
    got = anyio.run(tunnel_outcome, split_at(data, cuts), max_head_bytes, backend=backend)
    assert got == expected


def read_reply(chunks: list[bytes], max_head_bytes: int) -> tuple[Any, ...]:
    reader = ConnectReplyReader(max_head_bytes=max_head_bytes)
    reply = None
    try:
        for chunk in chunks:
            reply = reader.feed(chunk) or reply
        reply = reply or reader.feed_eof()
    except ProxyProtocolError:
        return ("error",)
    return (reply, reader.leftover)


@PROPERTY
@given(data=replies(), max_head_bytes=st.sampled_from([65536, 64, 200]))
def test_reply_reader_reuses_a_known_head_only_when_h11_would_agree(
    data: bytes, max_head_bytes: int
) -> None:
    """A 2xx head h11 parsed once is recognised by its bytes the next time: the outcome
    must be the one h11 gives when it parses the same bytes one at a time."""
    one_by_one = read_reply([bytes([b]) for b in data], max_head_bytes)
    assert read_reply([data], max_head_bytes) == one_by_one  # may teach the head
    assert read_reply([data], max_head_bytes) == one_by_one  # may reuse it
    assert read_reply([data + b"more"], max_head_bytes)[0] == one_by_one[0] or (
        one_by_one[0] == "error"
    )


def test_reply_reader_known_head_keeps_leftover_and_limits() -> None:
    head = b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n"
    first = ConnectReplyReader()
    reply = first.feed(head)
    assert reply is not None and reply.status == 200
    second = ConnectReplyReader()
    assert second.feed(head + b"\x16") is reply  # the same (immutable) reply
    assert second.feed(b"\x03") is reply
    assert second.feed_eof() is reply
    assert second.leftover == b"\x16\x03"
    with pytest.raises(UsageError):
        second.feed(b"late")
    small = ConnectReplyReader(max_head_bytes=len(head) - 1)
    with pytest.raises(ProxyProtocolError, match="larger than max_head_bytes"):
        small.feed(head)


# --------------------------------------------------------------------------- Socket receives

receive_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("parsed"),
            st.sampled_from([None, [b"\r\n"], [b"\r\n", b"\n", b"|"]]),
            st.one_of(st.none(), st.integers(0, 8)),
        ),
        st.tuples(st.just("recv"), st.integers(1, 10), st.none()),
        st.tuples(st.just("exactly"), st.integers(0, 10), st.none()),
    ),
    max_size=25,
)


async def receive_all(chunks: list[bytes], ops: list[tuple[str, Any, Any]]) -> list[Any]:
    out: list[Any] = []
    async with Socket(ScriptedStream(chunks)) as sock:
        for op, arg, limit in ops:
            try:
                if op == "parsed":
                    out.append(tuple(await sock.recv_parsed(arg, max_bytes=limit)))
                elif op == "recv":
                    out.append(await sock.recv(arg))
                else:
                    out.append(await sock.recv_exactly(arg))
            except IncompleteReadError as exc:
                out.append(("incomplete", exc.partial, exc.expected))
        out.append(sock.pending)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY
@given(
    data=st.lists(st.sampled_from([b"\r\n", b"\n", b"|", b"ab", b"c", b"\r"]), max_size=30).map(
        b"".join
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    ops=receive_ops,
)
def test_socket_receives_split_anywhere_same_results(
    backend: str, data: bytes, cuts: list[int], ops: list[tuple[str, Any, Any]]
) -> None:
    # recv(n) returns what one read brings, so it depends on segments by design: compare
    # only sequences where it cannot (recv after everything else, or none at all).
    ops = [o for o in ops if o[0] != "recv"] + [o for o in ops if o[0] == "recv"]
    whole = anyio.run(receive_all, [data], ops, backend=backend)
    split = anyio.run(receive_all, split_at(data, cuts), ops, backend=backend)
    parsed_whole = [r for r, o in zip(whole, ops) if o[0] != "recv"]
    parsed_split = [r for r, o in zip(split, ops) if o[0] != "recv"]
    assert parsed_split == parsed_whole


# --------------------------------------------------------------------------- validators


@PROPERTY
@given(name=st.text(max_size=12), value=st.text(max_size=30))
def test_validate_header_output_never_carries_control_bytes(name: str, value: str) -> None:
    try:
        raw_name, raw_value = validate_header(name, value)
    except UsageError as exc:
        error: UsageError | None = exc
    else:
        error = None
    if error is not None:
        # The value may be a secret: no UnicodeError holding it rides along.
        assert not isinstance(error.__context__, UnicodeError)
        return
    assert not any((b < 0x20 and b != 0x09) or b == 0x7F for b in raw_name + raw_value)
    assert raw_value == value.strip(" \t").encode("latin-1")


hosts = st.one_of(
    st.from_regex(r"[a-z0-9-]{1,10}(\.[a-z]{1,6}){0,2}", fullmatch=True),
    st.text(max_size=15),
    st.ip_addresses().map(str),
)


@PROPERTY
@given(
    host=hosts,
    port=st.integers(-5, 70000),
    headers=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=16)), max_size=4),
)
def test_build_connect_request_round_trips_through_an_h11_server(
    host: str, port: int, headers: list[tuple[str, str]]
) -> None:
    try:
        authority = format_authority(host, port)
        request = build_connect_request(authority, headers)
    except UsageError:
        return
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert event.method == b"CONNECT" and event.target == authority.encode()
    assert isinstance(server.next_event(), h11.EndOfMessage)  # CONNECT has no body
    sent = [
        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers.raw_items()
    ]
    for name, value in headers:
        wanted = (name.lower(), value.strip(" \t"))
        assert wanted in sent or name.lower() in {"host", "user-agent"}


@PROPERTY
@given(
    spec=st.one_of(st.text(max_size=30), st.text("0123456789abcdefABCDEF| AMBIGnone", max_size=30))
)
def test_prstok_arbitrary_text_only_usage_error(spec: str) -> None:
    try:
        tokens = TokenSet.from_prstok(spec)
    except UsageError:
        return
    assert TokenSet.from_prstok(tokens.to_prstok()) == tokens


@PROPERTY
@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
def test_prstok_round_trip(tokens: list[bytes]) -> None:
    token_set = TokenSet(tokens)
    assert TokenSet.from_prstok(token_set.to_prstok()) == token_set


@PROPERTY
@given(host=st.text(max_size=20), port=st.integers(0, 70000), no_proxy=st.text(max_size=40))
def test_no_proxy_matches_never_raises(host: str, port: int, no_proxy: str) -> None:
    assert isinstance(no_proxy_matches(host, port, no_proxy), bool)


@PROPERTY
@given(
    environ=st.dictionaries(
        st.sampled_from(["https_proxy", "HTTPS_PROXY", "all_proxy", "no_proxy", "NO_PROXY"]),
        st.text(max_size=25),
    ),
    host=st.text(max_size=15),
)
def test_proxy_from_env_raises_only_for_a_bad_host(environ: dict[str, str], host: str) -> None:
    try:
        format_authority(host, 443)
    except UsageError:
        with pytest.raises(UsageError):  # whatever the environment holds
            proxy_from_env(host, 443, environ)
        return
    url = proxy_from_env(host, 443, environ)
    assert url is None or "://" in url


@PROPERTY
@given(pattern=st.text(max_size=20), host=st.text(max_size=20), port=st.integers(1, 65535))
def test_access_rules_arbitrary_patterns(pattern: str, host: str, port: int) -> None:
    try:
        rule = AccessRule(True, pattern)
    except UsageError:
        return
    assert isinstance(rule.matches_host(host), bool)
    port_def = ClientPort("P", rules=[rule])
    try:
        allowed = port_def.is_allowed(host, port)
    except UsageError:
        return
    assert isinstance(allowed, bool)

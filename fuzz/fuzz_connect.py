"""Fuzz target: the CONNECT reply reader (``janusnet._connect.ConnectReplyReader``).

Each input decodes into a head cap, a way of cutting the bytes into segments, what to do
at the end (EOF, drain a non-2xx body) and the proxy's bytes. Invariants:

* only ``ProxyProtocolError`` (and ``UsageError`` for a misuse the target provokes on
  purpose) ever escapes;
* the outcome does not depend on the cut: the same reply (or the same error type) and the
  same ``leftover`` as feeding everything at once;
* a reply is well formed: a 3-digit status, HTTP/1.x, no CR, LF or NUL in the reason or
  in any header; and its head plus ``leftover`` are exactly the bytes fed.

Run: ``python fuzz/fuzz_connect.py -runs=20000`` (atheris) or ``--iterations 20000``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Provider, load_atheris, run

_atheris = load_atheris() if __name__ == "__main__" else None  # instrument when run
with _atheris.instrument_imports(include=["janusnet"]) if _atheris else contextlib.nullcontext():
    from janusnet._connect import ConnectReplyReader, ProxyReply
    from janusnet._exceptions import ProxyProtocolError, UsageError

Outcome = tuple[str, object, bytes]


def _outcome(
    chunks: list[bytes], max_head_bytes: int, eof: bool, drain: bool
) -> tuple[Outcome, ConnectReplyReader]:
    reader = ConnectReplyReader(max_head_bytes=max_head_bytes, proxy="fuzz:1")
    reply: ProxyReply | None = None
    try:
        for chunk in chunks:
            result = reader.feed(chunk)
            assert result is None or isinstance(result, ProxyReply)
            if reply is not None:
                assert result == reply, "the reply changed after it was complete"
            reply = result or reply
        if eof:
            reply = reader.feed_eof()
            assert isinstance(reply, ProxyReply)
        if drain and reader.reusable:
            done = reader.drain_body(b"")
            assert isinstance(done, bool)
    except ProxyProtocolError as exc:
        if exc.proxy != "fuzz:1":
            raise AssertionError(f"error without the proxy's address: {exc!r}") from exc
        return ("error", type(exc), b""), reader
    except UsageError:
        if not (drain and eof):  # drain_body after feed_eof may refuse bytes: a misuse
            raise
        return ("usage", UsageError, b""), reader
    return ("reply", reply, reader.leftover), reader


def _check_reply(reply: ProxyReply, data: bytes, leftover: bytes) -> None:
    assert 100 <= reply.status <= 999
    assert reply.http_version.startswith("1.")
    for text in (reply.reason, *(part for header in reply.headers for part in header)):
        assert not any(ch in text for ch in "\r\n\x00"), reply
    assert data.endswith(leftover)


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    max_head_bytes = p.int_in(1, 512) if p.flag() else 65536
    eof = p.flag()
    drain = p.flag()
    cut_count = p.int_in(0, 8)
    cut_bytes = [p.int_in(0, 65535) for _ in range(cut_count)]
    payload = p.rest()
    cuts = sorted({c % (len(payload) + 1) for c in cut_bytes})
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    whole, _ = _outcome([payload], max_head_bytes, eof, drain=False)
    split, reader = _outcome(pieces, max_head_bytes, eof, drain=False)
    assert whole[0] == split[0] and whole[1] == split[1], (whole, split)
    if whole[0] == "reply" and whole[1] is not None:
        assert whole[2] == split[2]
        assert isinstance(whole[1], ProxyReply)
        _check_reply(whole[1], payload, whole[2])
    if drain:  # the drain path must also raise only janusnet's errors
        _outcome(pieces, max_head_bytes, eof, drain=True)
    del reader


SEEDS = [
    b"\x00\x00\x00\x00HTTP/1.1 200 Connection established\r\n\r\n",
    b"\x00\x00\x00\x02\x05\x00\x09\x00HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nTUNNEL BYTES",
    b"\x00\x01\x01\x00HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="x"\r\nContent-Length: 5\r\n\r\nhello',
    b"\x00\x00\x01\x00HTTP/1.1 407 P\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"\x00\x00\x00\x00HTTP/1.0 200\r\n\r\n",
    b"\x00\x00\x00\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"\x00\x00\x00\x00HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
    b"\x00\x00\x00\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"\x01\x20\x00\x00\x00HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 64 + b"\r\n\r\n",
    b"\x00\x01\x00\x00HTTP/1.1 2x0 OK\r\n\r\n",
    b"\x00\x00\x00\x00HTTP/2.0 200 OK\r\n\r\n",
    b"\x00\x01\x01\x00HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\nbody",
    # Malformed framing on a 2xx (ignored) and on a 407 (malformed), after a 1xx too.
    b"\x00\x00\x00\x00HTTP/1.1 100 Continue\r\nContent-Length: x\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: -1\r\n\r\nT",
    b"\x00\x01\x01\x00HTTP/1.1 407 P\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"\x00\x00\x00\x00HTTP/1.1 200 OK\r\nX-Janusnet-Ignored-zz: 1\r\nContent-Length: a\r\n\r\n",
    # Bare CR line ends (refused as they arrive).
    b"\x00\x00\x00\x00HTTP/1.1 200 Connection established\r\r\nVia: p\r\r\n\r\r\n",
]


def main() -> None:
    run(test_one_input, SEEDS)


if __name__ == "__main__":
    main()

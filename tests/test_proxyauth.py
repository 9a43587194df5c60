"""``ProxyAuth`` flows (NTLM, Negotiate, tokens) driven by ``ProxyTunnel``, on asyncio and
trio, against scripted proxies on loopback. Real squid with NTLM is in
``test_realproxies.py``."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest

import janusnet
from janusnet import (
    ProxyAuth,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyReply,
    ProxyTunnel,
    UsageError,
)
from janusnet._proxyauth import check_authorization
from loopback import read_line, serve

pytestmark = pytest.mark.anyio

TOKEN = "c2VjcmV0LXRva2VuLTEyMzQ1Njc4OTA="  # what a flow's credentials look like
OK = b"HTTP/1.1 200 Connection established\r\n\r\n"


def challenge(value: str, *, keep: bool = True, body: bytes = b"") -> bytes:
    """A 407 carrying ``Proxy-Authenticate: value``; ``keep=False`` closes after it."""
    connection = b"" if keep else b"Connection: close\r\n"
    return (
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: %s\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (value.encode(), connection, len(body), body)
    )


def authorization(head: list[bytes]) -> bytes | None:
    """The ``Proxy-Authorization`` value of a request head, or None."""
    for line in head:
        name, _, value = line.partition(b":")
        if name.lower() == b"proxy-authorization":
            return value.strip()
    return None


Decide = Callable[[int, list[bytes]], Awaitable[bytes | None]]


class ScriptedProxy:
    """A CONNECT proxy whose every reply ``decide(connection, head)`` writes: the reply
    bytes (a 2xx opens an echo tunnel; a reply saying ``Connection: close`` closes
    after it), or None to close without a word. Records every head per connection."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.heads: list[tuple[int, list[bytes]]] = []
        self.connections = 0

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        number = self.connections
        self.connections += 1
        buf = bytearray()
        while True:
            head: list[bytes] = []
            while line := await read_line(stream, buf):
                head.append(line)
            if not head:
                return
            self.heads.append((number, head))
            reply = await self.decide(number, head)
            if reply is None:
                return
            await stream.send(reply)
            if reply.startswith(b"HTTP/1.1 2"):
                while data := await stream.receive():
                    await stream.send(data)
            if b"Connection: close" in reply or not reply.startswith(b"HTTP/1.1 407"):
                return


E = TypeVar("E", bound=BaseException)


async def failing_open(
    decide: Decide, flow: ProxyAuth, error: type[E], **options: Any
) -> tuple[E, ScriptedProxy]:
    """``open()`` through a :class:`ScriptedProxy` answering with ``decide``, which must
    raise ``error`` (within 10 s): the error, and the proxy (its ``heads``)."""
    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow, **options)
        with anyio.fail_after(10), pytest.raises(error) as info:
            await tunnel.open("target.example", 443)
    return info.value, proxy


class Rounds(ProxyAuth):
    """A two-round scheme like NTLM: ``Round 1`` first, then ``Round 2 <challenge>``
    for each 407 that carries a ``Round`` challenge; records what it saw."""

    def __init__(self, *, first: str | None = "Round 1") -> None:
        self.first = first
        self.seen: list[tuple[int, tuple[str, ...]]] = []
        self.calls: list[tuple[str, str]] = []
        self.closed = 0

    def auth_flow(
        self, *, proxy_host: str, target: str
    ) -> Generator[str | None, ProxyReply, None]:
        self.calls.append((proxy_host, target))
        try:
            reply = yield self.first
            while True:
                offered = reply.get_all("proxy-authenticate")
                self.seen.append((reply.status, offered))
                if not offered or not offered[0].startswith("Round "):
                    return
                reply = yield f"Round 2 {offered[0].split()[1]}"
        finally:
            self.closed += 1


def two_rounds(*, keep: bool = True) -> Decide:
    """First request: a 407 challenge ``Round <nonce>``; the answer must carry it, on
    the same connection when ``keep`` (as NTLM's must)."""

    async def decide(connection: int, head: list[bytes]) -> bytes | None:
        value = authorization(head)
        if value == b"Round 2 n" + str(connection if keep else connection - 1).encode():
            return OK
        return challenge(f"Round n{connection}", keep=keep, body=b"who are you?")

    return decide


async def open_echo(tunnel: ProxyTunnel) -> None:
    with anyio.fail_after(10):
        async with await tunnel.open("target.example", 443) as sock:
            assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
            await sock.send(b"ping")
            assert await sock.recv() == b"ping"


@pytest.mark.parametrize("first", ["Round 1", None])
async def test_flow_answers_a_407_on_the_connection_the_proxy_kept(
    anyio_backend: str, first: str | None
) -> None:
    """The answer rides the connection that carried the 407 (its body drained), which
    NTLM needs; the flow sees the 407 and is closed at the end."""
    proxy = ScriptedProxy(two_rounds())
    flow = Rounds(first=first)
    async with serve(proxy) as number:
        await open_echo(ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow))
    assert proxy.connections == 1
    assert [authorization(head) for _, head in proxy.heads] == [
        None if first is None else first.encode(),
        b"Round 2 n0",
    ]
    assert flow.seen == [(407, ("Round n0",))]
    assert flow.calls == [("127.0.0.1", "target.example:443")]
    assert flow.closed == 1


async def test_flow_answer_goes_on_a_new_connection_when_the_proxy_closed(
    anyio_backend: str,
) -> None:
    proxy = ScriptedProxy(two_rounds(keep=False))
    flow = Rounds()
    async with serve(proxy) as number:
        await open_echo(ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow))
    assert proxy.connections == 2
    assert [(c, authorization(head)) for c, head in proxy.heads] == [
        (0, b"Round 1"),
        (1, b"Round 2 n0"),
    ]


async def test_flow_that_gives_up_raises_407_with_the_challenges(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def decide(connection: int, head: list[bytes]) -> bytes:
        if authorization(head) == b"Round 1":
            return challenge("Round n0")
        return challenge("Other realm=x")  # no Round challenge: the flow returns

    proxy = ScriptedProxy(decide)
    flow = Rounds()
    caplog.set_level(logging.DEBUG, logger="janusnet")
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow)
        with anyio.fail_after(10), pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("target.example", 443)
    assert info.value.challenges == ("Other realm=x",)
    assert "the proxy auth flow Rounds gave up after 2 Proxy-Authorization value(s)" in str(
        info.value
    )
    assert flow.closed == 1
    assert len(proxy.heads) == 2
    # The values the flow gave are credentials: in no message or log record.
    for secret in ("Round 1", "Round 2 n0"):
        assert secret not in str(info.value)
        assert all(secret not in record.getMessage() for record in caplog.records)


async def test_flow_without_a_first_value_that_gives_up_at_once(anyio_backend: str) -> None:
    class Never(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            yield None

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge("Round n0")

    exc, proxy = await failing_open(decide, Never(), ProxyAuthenticationRequired)
    assert "the proxy auth flow Never gave no Proxy-Authorization value" in str(exc)
    assert [authorization(head) for _, head in proxy.heads] == [None]


async def test_flow_rounds_are_capped(anyio_backend: str) -> None:
    """A proxy that asks forever and a flow that answers forever stop after
    MAX_AUTH_ROUNDS answers, even with no deadline."""

    class Forever(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            count = 0
            while True:
                yield f"Count {count}"
                count += 1

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge("Count")

    exc, proxy = await failing_open(decide, Forever(), ProxyAuthenticationRequired, timeout=None)
    assert "had answered 8 of its 407s; janusnet stops there" in str(exc)
    assert [authorization(head) for _, head in proxy.heads] == [
        f"Count {n}".encode() for n in range(9)
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"NTLM abc", "yielded bytes; it must yield"),
        (42, "yielded int; it must yield"),
        ("NTLM abc\r\nX-Injected: 1", "not a header value"),
        ("NTLM abc\x00", "not a header value"),
        ("", "not a header value"),
        (" NTLM abc", "not a header value"),
        ("NTLM ümlaut-secret", "not a header value"),
    ],
    ids=["bytes", "int", "crlf", "nul", "empty", "leading-space", "non-ascii"],
)
@pytest.mark.parametrize("when", ["first", "answer"])
async def test_flow_value_that_is_no_header_value_is_a_usage_error(
    anyio_backend: str, value: object, problem: str, when: str
) -> None:
    """Refused before it is sent (no header injection), the socket closed, and the
    message does not show the value (it is a credential)."""

    class Bad(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            if when == "answer":
                yield "Round 1"
            yield value  # type: ignore[misc]

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge("Round n0")

    exc, proxy = await failing_open(decide, Bad(), UsageError)
    assert str(exc).startswith("proxy auth flow Bad yielded ")
    assert problem in str(exc)
    if isinstance(value, str) and value:
        assert value.strip() not in str(exc)
    assert len(proxy.heads) == (1 if when == "answer" else 0)
    assert all(b"X-Injected" not in line for _, head in proxy.heads for line in head)


@pytest.mark.parametrize("value", ["x", "ab", "a b", "NTLM TlRMTVNTUAAB"])
def test_flow_value_of_one_or_two_characters_is_a_header_value(value: str) -> None:
    """A value is one visible character, or visible characters with spaces between:
    the shortest ones (one or two characters) are values too."""
    assert check_authorization(value, Rounds()) == value.encode("ascii")
    assert check_authorization(None, Rounds()) is None


@pytest.mark.parametrize("when", ["first", "answer"])
async def test_flow_values_are_withheld_when_the_proxy_echoes_them(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """A proxy that quotes the Proxy-Authorization it got in a refusal's reason and
    headers: the error and the logs show neither the value nor its credentials."""

    async def decide(connection: int, head: list[bytes]) -> bytes:
        value = authorization(head)
        if value is None:
            return challenge("Bearer")
        echoed = (value, value.split(b" ")[-1])
        return b"HTTP/1.1 403 you sent %s\r\nX-Echo: %s\r\nContent-Length: 0\r\n\r\n" % echoed

    class Token(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            if when == "answer":
                yield None
            yield f"Bearer {TOKEN}"

    caplog.set_level(logging.DEBUG, logger="janusnet")
    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=Token())
        with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("target.example", 443)
    assert authorization(proxy.heads[-1][1]) == f"Bearer {TOKEN}".encode()
    assert info.value.status == 403
    shown = [str(info.value), repr(info.value), info.value.reason, repr(info.value.headers)]
    shown += [record.getMessage() for record in caplog.records]
    assert "[credentials withheld]" in info.value.reason
    assert all(TOKEN not in text for text in shown), shown
    assert repr(tunnel) == f"ProxyTunnel('http://127.0.0.1:{number}', auth=<hidden>)"


async def test_flow_values_are_not_reused_by_a_later_open(anyio_backend: str) -> None:
    """Each open() runs the flow again: a one-time token is not replayed from a cache."""

    class OneTime(ProxyAuth):
        def __init__(self) -> None:
            self.issued = 0

        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            self.issued += 1
            yield f"Once token-{self.issued}"

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return OK

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=OneTime())
        for _ in range(3):
            await open_echo(tunnel)
    assert [authorization(head) for _, head in proxy.heads] == [
        b"Once token-1",
        b"Once token-2",
        b"Once token-3",
    ]


async def test_async_flow_can_await_and_is_closed_on_cancellation(anyio_backend: str) -> None:
    """``async_auth_flow`` may await (a Kerberos library run in a thread); cancelling
    open() while it waits closes the socket and runs the flow's clean-up."""
    events: list[str] = []

    class Slow(ProxyAuth):
        async def async_auth_flow(
            self, *, proxy_host: str, target: str
        ) -> AsyncGenerator[str | None, ProxyReply]:
            try:
                value = await anyio.to_thread.run_sync(lambda: "Slow 1")
                reply = yield value
                events.append(f"got {reply.status}")
                await anyio.sleep(30)  # cancelled here
                yield "Slow 2"
            finally:
                events.append("closed")

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge("Slow")

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=Slow())
        with anyio.move_on_after(0.5) as scope:
            await tunnel.open("target.example", 443)
        assert scope.cancelled_caught
    assert events == ["got 407", "closed"]
    assert [authorization(head) for _, head in proxy.heads] == [b"Slow 1"]


async def test_flow_that_raises_closes_the_socket_and_propagates(anyio_backend: str) -> None:
    class Broken(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            yield "Round 1"
            raise RuntimeError("no ticket")

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge("Round n0")

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=Broken())
        with anyio.fail_after(10), pytest.raises(RuntimeError, match="no ticket"):
            await tunnel.open("target.example", 443)


async def test_proxy_auth_base_class_must_be_overridden(anyio_backend: str) -> None:
    async def decide(connection: int, head: list[bytes]) -> bytes:
        return OK

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=ProxyAuth())
        with anyio.fail_after(10), pytest.raises(NotImplementedError, match="auth_flow"):
            await tunnel.open("target.example", 443)
    assert repr(ProxyAuth()) == "<ProxyAuth>"


def test_flow_is_accepted_by_from_env_and_overrides_url_credentials() -> None:
    flow = Rounds()
    tunnel = ProxyTunnel.from_env(
        "target.example", 443, environ={"HTTPS_PROXY": "http://u:pw@proxy:3128"}, auth=flow
    )
    assert tunnel is not None and repr(tunnel) == "ProxyTunnel('http://proxy:3128', auth=<hidden>)"
    with pytest.raises(UsageError, match="tuple or a ProxyAuth"):
        ProxyTunnel("http://proxy:3128", auth="NTLM abc")  # type: ignore[arg-type]
    assert janusnet.ProxyAuth is ProxyAuth


async def test_flow_gets_each_407_as_the_proxy_sent_it(anyio_backend: str) -> None:
    """What is withheld from messages (the flow's own values, quoted back) is not cut
    out of the reply the flow answers: a scheme may need those parameters."""
    value = "Custom token=abcdefgh12345678"
    seen: list[tuple[str, ...]] = []

    class Echoing(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            reply = yield value
            seen.append(reply.get_all("proxy-authenticate"))

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return challenge('Custom realm="corp", last="token=abcdefgh12345678"')

    exc, _ = await failing_open(decide, Echoing(), ProxyAuthenticationRequired)
    assert seen == [('Custom realm="corp", last="token=abcdefgh12345678"',)]
    assert exc.challenges == ('Custom realm="corp", last="[credentials withheld]"',)
    assert "(the proxy offers custom)" in str(exc)


@pytest.mark.parametrize(
    ("value", "echo"),
    [
        ("Custom a'b\\cdefghijklmnop", "status-line"),
        ("Bearer ab+cd/ef+gh/ij+kl/mnopq==", "percent-encoded"),
        ("NTLM TlRMTVNTUAABAAAAB4IIog+/abc/def+ghi==", "percent-encoded-keeping-slash"),
        ("NTLM TlRMTVNTUAABAAAAB4IIog+/abc/def+ghi==", "percent-encoded-lower-case"),
    ],
)
async def test_flow_values_are_withheld_in_escaped_and_encoded_echoes(
    anyio_backend: str, value: str, echo: str
) -> None:
    from urllib.parse import quote

    class Token(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            yield value

    async def decide(connection: int, head: list[bytes]) -> bytes:
        sent = authorization(head) or b""
        if echo == "status-line":  # malformed: h11 quotes the line as a bytes literal
            return b"HTTP/1.1 4x7 " + sent + b"\r\n\r\n"
        text = sent.decode()
        if echo == "percent-encoded-keeping-slash":
            encoded = quote(text).encode()  # quote()'s default leaves "/"
        elif echo == "percent-encoded-lower-case":
            encoded = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(text)).encode()
        else:
            encoded = quote(text, safe="").encode()
        return b"HTTP/1.1 403 got %s\r\nLocation: /?a=%s\r\n\r\n" % (encoded, encoded)

    exc, _ = await failing_open(decide, Token(), janusnet.JanusnetError)
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    if isinstance(exc, ProxyRefusedError):
        texts += [exc.reason, repr(exc.headers)]
    credentials = value.partition(" ")[2]
    forms = [credentials, quote(credentials, safe=""), quote(credentials)]
    forms += [repr(credentials.encode())[2:-1], quote(credentials).lower()]
    for text in texts:
        lowered = text.lower()  # (a lower-case %2b must not slip through either)
        for form in forms:
            for piece in (form[i : i + 10] for i in range(len(form) - 10)):
                assert piece.lower() not in lowered, (piece, text)
    assert "[credentials withheld]" in str(exc)


async def test_flow_value_echoed_in_a_2xx_head_is_not_kept_in_the_shared_head_cache(
    anyio_backend: str,
) -> None:
    from janusnet import _connect

    class Token(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            yield f"Bearer {TOKEN}"

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return b"HTTP/1.1 200 OK\r\nX-Echo: %s\r\n\r\n" % (authorization(head) or b"")

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=Token())
        with anyio.fail_after(10):
            async with await tunnel.open("target.example", 443) as sock:
                assert sock.proxy_reply is not None
                assert sock.proxy_reply.headers == (("X-Echo", "[credentials withheld]"),)
    assert not any(TOKEN.encode() in head for head in _connect._KNOWN_HEADS)


async def test_flow_clean_up_that_fails_after_the_2xx_closes_the_socket(
    anyio_backend: str,
) -> None:
    """The flow is closed before the tunnel is handed out; when its clean-up fails, the
    error propagates and the socket is closed (it was leaked, holding a port slot)."""

    class Failing(ProxyAuth):
        async def async_auth_flow(
            self, *, proxy_host: str, target: str
        ) -> AsyncGenerator[str | None, ProxyReply]:
            try:
                yield "Token abcdefgh12345"
            finally:
                raise RuntimeError("clean-up failed")

    await _clean_up_failure_propagates(Failing())


async def test_sync_flow_clean_up_that_fails_after_the_2xx_propagates(anyio_backend: str) -> None:
    """A sync ``auth_flow`` is closed before the tunnel is handed out, not left to the
    garbage collector: an error in its clean-up propagates (it was swallowed)."""

    class Failing(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            try:
                yield "Token abcdefgh12345"
            finally:
                raise RuntimeError("clean-up failed")

    await _clean_up_failure_propagates(Failing())


async def _clean_up_failure_propagates(flow: ProxyAuth) -> None:
    """A proxy answers 200 at once; ``flow``'s clean-up raises: the error propagates and
    the socket is closed (the client port's count is back to 0)."""

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return OK

    port = janusnet.ClientPort("ONE", max_sockets=1)
    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow, client_port=port)
        with anyio.fail_after(10), pytest.raises(RuntimeError, match="clean-up failed"):
            await tunnel.open("target.example", 443)
    assert port.open_sockets == 0


async def test_flow_starts_again_when_the_kept_connection_closed_before_the_answer(
    anyio_backend: str,
) -> None:
    """The proxy kept the connection after its 407, then closed it unanswered: the
    answer belonged to that connection (NTLM), so the flow starts afresh on a new one;
    its answer is not replayed there."""
    flow = Rounds()

    async def decide(connection: int, head: list[bytes]) -> bytes | None:
        value = authorization(head)
        if connection == 0 and value == b"Round 2 n0":
            return None  # gone stale: closed without a reply
        if value == b"Round 2 n" + str(connection).encode():
            return OK
        return challenge(f"Round n{connection}")

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        await open_echo(ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow))
    assert [(c, authorization(head)) for c, head in proxy.heads] == [
        (0, b"Round 1"),
        (0, b"Round 2 n0"),
        (1, b"Round 1"),
        (1, b"Round 2 n1"),
    ]
    assert flow.closed == 2


async def test_flow_against_a_proxy_that_closes_after_every_407_says_so(
    anyio_backend: str,
) -> None:
    """A proxy that closes every connection after its 407 without saying
    ``Connection: close``: after the second try the error names that, not the generic
    "closed without replying" (which pointed at the target)."""

    async def decide(connection: int, head: list[bytes]) -> bytes | None:
        if authorization(head) == b"Round 1":
            return challenge(f"Round n{connection}")
        return None  # closed without a reply

    exc, proxy = await failing_open(decide, Rounds(), ProxyProtocolError)
    assert [(c, authorization(head)) for c, head in proxy.heads] == [
        (0, b"Round 1"),
        (0, b"Round 2 n0"),
        (1, b"Round 1"),
        (1, b"Round 2 n1"),
    ]
    assert "closed the connection after its 407 before replying to the proxy auth" in str(exc)
    assert "on two connections" in str(exc) and "Round 2" not in str(exc)


async def test_flow_answer_on_a_new_connection_says_so_when_it_fails(anyio_backend: str) -> None:
    """A 407 whose body is too large to drain: the answer goes on a new connection, and
    when the flow then gives up, the message says why NTLM could not succeed."""

    async def decide(connection: int, head: list[bytes]) -> bytes:
        if authorization(head) == b"Round 1":
            return challenge(f"Round n{connection}", body=b"x" * (100 * 1024))
        return challenge("Round")  # a bare challenge: the flow gives up

    exc, proxy = await failing_open(decide, Rounds(), ProxyAuthenticationRequired)
    assert [(c, authorization(head)) for c, head in proxy.heads] == [
        (0, b"Round 1"),
        (1, b"Round 2 n0"),
    ]
    assert "the proxy did not keep the connection after a 407" in str(exc)


async def test_flow_that_outlives_the_deadline_is_named_in_the_timeout(anyio_backend: str) -> None:
    class Slow(ProxyAuth):
        async def async_auth_flow(
            self, *, proxy_host: str, target: str
        ) -> AsyncGenerator[str | None, ProxyReply]:
            await anyio.sleep(30)
            yield None

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return OK

    exc, proxy = await failing_open(decide, Slow(), TimeoutError, timeout=0.3)
    assert "deadline expired while waiting for the proxy auth flow Slow" in str(exc)
    assert proxy.heads == []


class NotAGenerator(ProxyAuth):
    def auth_flow(  # type: ignore[override]
        self, *, proxy_host: str, target: str
    ) -> str:
        return "Bearer x"


class AsyncInAuthFlow(ProxyAuth):
    async def auth_flow(  # type: ignore[override]
        self, *, proxy_host: str, target: str
    ) -> AsyncGenerator[str | None, ProxyReply]:
        yield "Bearer x"


class CoroutineInAuthFlow(ProxyAuth):
    async def auth_flow(  # type: ignore[override]
        self, *, proxy_host: str, target: str
    ) -> str:
        return "Bearer x"


class CoroutineFlow(ProxyAuth):
    async def async_auth_flow(  # type: ignore[override]
        self, *, proxy_host: str, target: str
    ) -> str:
        return "Bearer x"


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (
            NotAGenerator(),
            "NotAGenerator.auth_flow must be a generator function (def with "
            "yield); it returned str",
        ),
        (
            AsyncInAuthFlow(),
            "it returned async_generator; an async flow overrides async_auth_flow instead",
        ),
        (
            CoroutineInAuthFlow(),
            "it returned coroutine; an async flow overrides async_auth_flow instead",
        ),
        (
            CoroutineFlow(),
            "CoroutineFlow.async_auth_flow must be an async generator "
            "function (async def with yield); it returned coroutine",
        ),
    ],
    ids=["returns-a-value", "async-auth-flow", "coroutine-auth-flow", "coroutine"],
)
async def test_flow_that_is_no_generator_is_a_usage_error(
    anyio_backend: str, flow: ProxyAuth, message: str
) -> None:
    async def decide(connection: int, head: list[bytes]) -> bytes:
        return OK

    proxy = ScriptedProxy(decide)
    async with serve(proxy) as number:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", auth=flow)
        with anyio.fail_after(10), pytest.raises(UsageError, match="must be") as info:
            await tunnel.open("target.example", 443)
    assert message in str(info.value)
    assert proxy.heads == []


async def test_flow_restarted_after_a_stale_connection_gets_its_own_rounds(
    anyio_backend: str,
) -> None:
    """The run that starts again on a new connection has all 8 answers of its own, and
    the error describes that run, not the one the stale connection ended."""

    class Steps(ProxyAuth):
        def auth_flow(
            self, *, proxy_host: str, target: str
        ) -> Generator[str | None, ProxyReply, None]:
            step = 0
            while True:
                yield f"Step {step}"
                step += 1

    async def decide(connection: int, head: list[bytes]) -> bytes | None:
        if connection == 0 and authorization(head) == b"Step 7":
            return None  # its 7th answer meets a connection gone stale
        return challenge("Step")

    exc, proxy = await failing_open(decide, Steps(), ProxyAuthenticationRequired, timeout=None)
    sent = [(c, authorization(head)) for c, head in proxy.heads]
    assert sent[:8] == [(0, f"Step {n}".encode()) for n in range(8)]
    assert sent[8:] == [(1, f"Step {n}".encode()) for n in range(9)]
    assert "had answered 8 of its 407s" in str(exc)
    assert "did not keep the connection" not in str(exc)


async def test_flow_clean_up_that_outlives_the_deadline_is_named_in_the_timeout(
    anyio_backend: str,
) -> None:
    """The proxy refused; the flow's clean-up then ran past the deadline: the timeout
    names the clean-up and what ended the exchange (it blamed the proxy's reply)."""

    class SlowCleanUp(ProxyAuth):
        async def async_auth_flow(
            self, *, proxy_host: str, target: str
        ) -> AsyncGenerator[str | None, ProxyReply]:
            try:
                yield "Token abcdefgh0"
            finally:
                await anyio.sleep(30)

    async def decide(connection: int, head: list[bytes]) -> bytes:
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"

    exc, _ = await failing_open(decide, SlowCleanUp(), TimeoutError, timeout=0.5)
    assert (
        "expired while running the clean-up of the proxy auth flow SlowCleanUp, after "
        "ProxyRefusedError" in str(exc)
    )


class GivesNothing(ProxyAuth):
    async def async_auth_flow(
        self, *, proxy_host: str, target: str
    ) -> AsyncGenerator[str | None, ProxyReply]:
        yield None  # nothing of its own: the header given in headers= is the credential


@pytest.mark.parametrize("header", ["Authorization", "Proxy-Authorization"])
async def test_flow_path_withholds_credentials_given_in_headers(
    anyio_backend: str, header: str
) -> None:
    """With a ``ProxyAuth`` flow, a credential given in ``headers=`` is withheld from what
    a proxy quotes back, as without one (the flow's exchange started with nothing to
    withhold; found by an adversarial review)."""
    secret = "Bearer c2VjcmV0LXRva2VuLTEyMzQ1Njc4OTA"

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        head = []
        while line := await read_line(stream, buf):
            head.append(line)
        sent = next(line for line in head if line.lower().startswith(header.lower().encode()))
        echoed = sent.partition(b":")[2].strip()
        await stream.send(
            b"HTTP/1.1 407 Auth " + echoed + b"\r\nProxy-Authenticate: =" + echoed + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )

    async with serve(proxy) as number:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{number}", auth=GivesNothing(), headers={header: secret}
        )
        with anyio.fail_after(5), pytest.raises(ProxyAuthenticationRequired) as info:
            await tunnel.open("localhost", 443)
    token = secret.split()[1]
    assert token not in str(info.value) + repr(info.value.reason) + repr(info.value.headers)
    assert "[credentials withheld]" in str(info.value)

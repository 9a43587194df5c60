"""Credentials never leak: every error path, with the password in the proxy URL and in
``auth=``, on asyncio and trio.

For each failure the password is searched — raw, percent-encoded, and inside base64 of
``user:password`` — in the exception's ``repr``/``str``/``args``/attributes, in every
exception of its ``__cause__``/``__context__`` chain, in ``traceback.format_exception``
text, and in every log record captured at DEBUG for ``janusnet``. Successful tunnels
are checked the same way: ``repr`` of the tunnel, its ``ProxyURL``, the socket and
``sock.proxy_reply``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import ssl
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from anyio.abc import SocketStream

import janusnet
from janusnet import (
    ClientPort,
    ConnectError,
    HandshakeError,
    JanusnetError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTunnel,
    UsageError,
)
from janusnet._proxyenv import parse_proxy_url
from janusnet.testing import ConnectProxy, ProxyBehaviour, TLSOrigin
from loopback import read_line, serve

pytestmark = pytest.mark.anyio

USER = "alice"
# Characters that percent-encoding changes, so each encoded form is distinct and searched.
PASSWORD = "Hunter2:s3cr@t/x%y"


def secret_forms(user: str = USER, password: str = PASSWORD) -> list[str]:
    pair = f"{user}:{password}".encode()
    return [
        password,
        quote(password, safe=""),
        quote(password),
        base64.b64encode(pair).decode(),
        base64.b64encode(password.encode()).decode(),
        password.encode().hex(),
        repr(password.encode())[2:-1],
    ]


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Every text an exception (and its chain) can show."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield repr(current)
        yield str(current)
        yield from (repr(arg) for arg in current.args)
        yield from (repr(value) for value in vars(current).values())
        yield from (str(note) for note in getattr(current, "__notes__", ()))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
        stack.extend(getattr(current, "exceptions", ()))  # exception groups
    yield "".join(traceback.format_exception(exc))


def assert_no_secret(texts: Iterator[str] | list[str], where: str) -> None:
    forms = secret_forms()
    for text in texts:
        for form in forms:
            assert form not in text, f"{where}: the password ({form!r}) leaked into {text!r}"


def assert_clean_logs(caplog: pytest.LogCaptureFixture, where: str) -> None:
    texts = []
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), str(record.msg)]
        if record.exc_info and record.exc_info[1] is not None:
            texts += list(exception_texts(record.exc_info[1]))
    assert_no_secret(texts, f"{where} (logs)")


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="janusnet")


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture(scope="module")
def auth_proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy(auth=(USER, "the-right-one")) as server:
        yield server


@pytest.fixture(scope="module")
def https_proxy(origin: TLSOrigin) -> Iterator[ConnectProxy]:
    with ConnectProxy(ssl_context=origin.server_context) as server:
        yield server


def digest_407_proxy() -> Any:
    """A loopback proxy that answers every CONNECT with a Digest 407 (keep-alive)."""

    async def handler(client: SocketStream) -> None:
        buf = bytearray()
        while True:
            while await read_line(client, buf):
                pass
            await client.send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Digest realm="janusnet", nonce="abc123", qop="auth"\r\n'
                b"Content-Length: 0\r\n\r\n"
            )

    return serve(handler)


async def free_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.aclose()
    return port


def make_tunnel(base_url: str, where: str, **kwargs: Any) -> ProxyTunnel:
    """The tunnel with the password in the URL or in ``auth=``."""
    if where == "url":
        scheme, _, rest = base_url.partition("://")
        url = f"{scheme}://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{rest}"
        return ProxyTunnel(url, **kwargs)
    return ProxyTunnel(base_url, auth=(USER, PASSWORD), **kwargs)


async def check_failure(
    caplog: pytest.LogCaptureFixture,
    name: str,
    expected: type[BaseException],
    attempt: Callable[[], Awaitable[Any]],
) -> BaseException:
    with anyio.fail_after(10):
        with pytest.raises(expected) as info:
            await attempt()
    assert_no_secret(exception_texts(info.value), name)
    assert_clean_logs(caplog, name)
    return info.value


@pytest.fixture(params=["url", "auth"])
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_secrets_unreachable_proxy(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    tunnel = make_tunnel(f"http://127.0.0.1:{await free_port()}", where)
    await check_failure(caplog, "unreachable", ConnectError, lambda: tunnel.open("localhost", 443))


async def test_secrets_wrong_password_407(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    auth_proxy: ConnectProxy,
    origin: TLSOrigin,
    where: str,
) -> None:
    tunnel = make_tunnel(auth_proxy.url, where)
    exc = await check_failure(
        caplog, "407", ProxyAuthenticationRequired, lambda: tunnel.open("localhost", origin.port)
    )
    assert isinstance(exc, ProxyAuthenticationRequired) and exc.challenges


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        pytest.param(ProxyBehaviour.STATUS_403, ProxyRefusedError, id="403"),
        pytest.param(ProxyBehaviour.STATUS_502, ProxyRefusedError, id="502"),
        pytest.param(ProxyBehaviour.MALFORMED, ProxyProtocolError, id="malformed"),
        pytest.param(ProxyBehaviour.RESET, ProxyProtocolError, id="reset"),
        pytest.param(ProxyBehaviour.CLOSE_MID_HEAD, ProxyProtocolError, id="close-mid-head"),
        pytest.param(ProxyBehaviour.ENDLESS_HEAD, ProxyProtocolError, id="endless-head"),
        pytest.param(ProxyBehaviour.AUTH_WITH_BODY, ProxyAuthenticationRequired, id="407-body"),
        pytest.param(ProxyBehaviour.NEVER_ANSWER, TimeoutError, id="timeout"),
    ],
)
async def test_secrets_proxy_failures(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    proxy: ConnectProxy,
    origin: TLSOrigin,
    where: str,
    behaviour: ProxyBehaviour,
    expected: type[BaseException],
) -> None:
    proxy.behaviour = behaviour
    try:
        tunnel = make_tunnel(proxy.url, where, timeout=0.5, max_head_bytes=16384)
        await check_failure(
            caplog, behaviour.value, expected, lambda: tunnel.open("localhost", origin.port)
        )
    finally:
        proxy.behaviour = ProxyBehaviour.NORMAL


async def test_secrets_tls_failure_to_https_proxy(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    https_proxy: ConnectProxy,
    origin: TLSOrigin,
    where: str,
) -> None:
    tunnel = make_tunnel(https_proxy.url, where, proxy_ssl_context=ssl.create_default_context())
    await check_failure(
        caplog, "https-proxy-tls", HandshakeError, lambda: tunnel.open("localhost", origin.port)
    )


async def test_secrets_digest_407(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, origin: TLSOrigin, where: str
) -> None:
    async with digest_407_proxy() as port:
        tunnel = make_tunnel(f"http://127.0.0.1:{port}", where)
        exc = await check_failure(
            caplog,
            "digest-407",
            ProxyAuthenticationRequired,
            lambda: tunnel.open("localhost", origin.port),
        )
    assert isinstance(exc, ProxyAuthenticationRequired)
    assert exc.challenges[0].startswith("Digest")


def percent_spellings(text: str) -> dict[str, str]:
    """``text`` percent-encoded as proxies quote it in URLs: every reserved character,
    ``/`` kept (``quote``'s default), lower-case hex digits."""
    everything = quote(text, safe="")
    return {
        "{quoted}": everything,
        "{quoted-slash}": quote(text),
        "{quoted-lower}": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), everything),
    }


async def read_authorization(client: SocketStream, buf: bytearray) -> bytes:
    """Read a request head; the ``Proxy-Authorization`` value it carried (``b""``: none)."""
    authorization = b""
    while line := await read_line(client, buf):
        name, _, value = line.partition(b":")
        if name.lower() == b"proxy-authorization":
            authorization = value.strip()
    return authorization


def echoing_proxy(reply: bytes) -> Any:
    """A loopback proxy that answers CONNECT with ``reply``, in which ``{auth}`` stands for
    the ``Proxy-Authorization`` value it was sent (a proxy quoting the request back)."""

    async def handler(client: SocketStream) -> None:
        buf = bytearray()
        authorization = await read_authorization(client, buf)
        assert authorization.startswith(b"Basic ")
        pair = base64.b64decode(authorization.split()[1])
        answer = reply
        for name, spelling in percent_spellings(authorization.decode()).items():
            answer = answer.replace(name.encode(), spelling.encode())
        token = authorization.split()[1]
        unpadded = token.rstrip(b"=")
        answer = answer.replace(b"{unpadded}", unpadded)
        answer = answer.replace(b"{urlsafe}", unpadded.replace(b"+", b"-").replace(b"/", b"_"))
        answer = answer.replace(b"{pair-quoted}", quote(pair.decode(), safe="").encode())
        await client.send(answer.replace(b"{auth}", authorization).replace(b"{pair}", pair))
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            await client.receive()

    return serve(handler)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            b"HTTP/1.1 400 Bad header: Proxy-Authorization: {auth}\r\nX-Seen: {auth}\r\n"
            b"Content-Length: 0\r\n\r\n",
            ProxyRefusedError,
        ),
        (
            b'HTTP/1.1 407 Rejected {auth}\r\nProxy-Authenticate: Basic realm="{auth}"\r\n'
            b"Content-Length: 0\r\n\r\n",
            ProxyAuthenticationRequired,
        ),
        (b"HTTP/1.1 999999 {auth}\r\n\r\n", ProxyProtocolError),  # h11 quotes the line
    ],
    ids=["reason-and-header", "407", "malformed"],
)
async def test_secrets_proxy_that_sends_them_back(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    where: str,
    reply: bytes,
    expected: type[BaseException],
) -> None:
    async with echoing_proxy(reply) as port:
        tunnel = make_tunnel(f"http://127.0.0.1:{port}", where)
        exc = await check_failure(caplog, "echo", expected, lambda: tunnel.open("localhost", 443))
    assert "[credentials withheld]" in str(exc)


@pytest.mark.parametrize(
    ("password", "reply"),
    [
        # A long password (an API token): h11's text quotes the line and the message is
        # cut at 200 characters, which must not leave the start of the token in it.
        ("eyJhbGciOiJIUzI1NiJ9." + "A1b2C3d4E5" * 12, b"HTTP/1.1 999999 {auth}\r\n\r\n"),
        # A short one, quoted back decoded: user:password is withheld all the same, also
        # percent-encoded (a proxy's diagnostic or a URL), which the password alone is not.
        ("hunter2", b"HTTP/1.1 403 Forbidden for {pair}\r\nContent-Length: 0\r\n\r\n"),
        (
            "hunter2",
            b"HTTP/1.1 403 Forbidden\r\nX-Squid-Error: ERR_ACCESS_DENIED user={pair-quoted}"
            b"\r\nContent-Length: 0\r\n\r\n",
        ),
        # Spelled as the text reaches janusnet: latin-1 (ö reads Ã¶), or a bytes literal
        # in h11's words about a malformed line (\xc3\xb6, \\, \').
        ("geheim-w\u00f6rt", b"HTTP/1.1 403 Forbidden for {pair}\r\nContent-Length: 0\r\n\r\n"),
        ("geheim-w\u00f6rt", b"HTTP/1.1 999999 {pair}\r\n\r\n"),
        ("C:\\keys\\k1", b"HTTP/1.1 999999 {pair}\r\n\r\n"),
        ("it's-secret", b"HTTP/1.1 999999 {pair}\r\n\r\n"),
    ],
    ids=[
        "long-password-cut-message",
        "short-password-decoded",
        "short-password-percent-encoded",
        "non-ascii-latin-1",
        "non-ascii-bytes-literal",
        "backslashes",
        "quote",
    ],
)
async def test_secrets_sent_back_whatever_their_length(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, password: str, reply: bytes
) -> None:
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    async with echoing_proxy(reply) as port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", auth=(USER, password))
        with anyio.fail_after(10), pytest.raises(JanusnetError) as info:
            await tunnel.open("localhost", 443)
    texts = list(exception_texts(info.value))
    texts += [record.getMessage() for record in caplog.records]
    pair = f"{USER}:{password}".encode()
    pieces = [token[i : i + 12] for i in range(0, len(token) - 12)]
    pieces += [pair.decode(), pair.decode("latin-1"), repr(pair)[2:-1]]
    pieces += [repr(pair)[2:-1].replace("'", "\\'"), quote(pair.decode(), safe="")]
    for text in texts:
        for piece in pieces:
            assert piece not in text, f"{piece!r} leaked into {text!r}"
    assert "[credentials withheld]" in str(info.value)


async def refused_with(
    reply: bytes, password: str, caplog: pytest.LogCaptureFixture
) -> tuple[pytest.ExceptionInfo[ProxyRefusedError], list[str]]:
    """Open a tunnel with ``password`` through a proxy refusing with ``reply``: the error,
    and every text it and the log records show."""
    async with echoing_proxy(reply) as port:
        tunnel = ProxyTunnel(f"http://127.0.0.1:{port}", auth=(USER, password))
        with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("localhost", 443)
    texts = [*exception_texts(info.value), repr(info.value.headers)]
    texts += [record.getMessage() for record in caplog.records]
    return info, texts


def assert_no_piece_of(form: str, texts: list[str]) -> None:
    """No 12-character piece of ``form`` is in any of ``texts``."""
    for text in texts:
        for piece in (form[i : i + 12] for i in range(len(form) - 12)):
            assert piece not in text, f"{piece!r} leaked into {text!r}"


@pytest.mark.parametrize("spelling", ["{quoted}", "{quoted-slash}", "{quoted-lower}"])
async def test_secrets_sent_back_percent_encoded(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, spelling: str
) -> None:
    """A proxy that puts the header it got into a URL (a login page's ``from=``): the
    Basic token, percent-encoded in any usual spelling, is withheld (it decodes to the
    password)."""
    password = "s3cr3t/pa+ss=word"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    assert set(token) & set("+/=")  # characters percent-encoding changes
    reply = (
        b"HTTP/1.1 403 Forbidden\r\nLocation: /login?from="
        + spelling.encode()
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    info, texts = await refused_with(reply, password, caplog)
    assert_no_piece_of(percent_spellings(f"Basic {token}")[spelling], texts)
    assert "[credentials withheld]" in repr(info.value.headers)


@pytest.mark.parametrize("spelling", ["{unpadded}", "{urlsafe}"])
async def test_secrets_sent_back_re_encoded_in_diagnostic_headers(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, spelling: str
) -> None:
    """A refusal's Proxy-Status / X-Squid-Error reach the message: the Basic token a
    proxy quotes there without its padding, or in the URL-safe alphabet, is withheld."""
    password = "long-password>>??~~x"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    assert token.endswith("=") and set(token) & set("+/")
    reply = (
        b'HTTP/1.1 403 Forbidden\r\nProxy-Status: p; details="saw ' + spelling.encode() + b'"'
        b"\r\nX-Squid-Error: ERR_ACCESS_DENIED " + spelling.encode() + b"\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    info, texts = await refused_with(reply, password, caplog)
    unpadded = token.rstrip("=")
    for form in (unpadded, unpadded.replace("+", "-").replace("/", "_")):
        assert_no_piece_of(form, texts)
    assert 'Proxy-Status: p; details="saw [credentials withheld]"' in str(info.value)


def quoting_proxy(reply: bytes, *, challenge: bool) -> Any:
    """A loopback proxy that (with ``challenge``) answers a CONNECT without a Digest
    answer with a Digest 407 on a kept connection, then the CONNECT that has one with
    ``reply``, in which ``{auth}`` stands for the ``Proxy-Authorization`` value it got and
    ``{response}`` for a Digest answer's hash."""

    async def handler(client: SocketStream) -> None:
        buf = bytearray()
        while True:
            authorization = await read_authorization(client, buf)
            if challenge and not authorization.startswith(b"Digest "):
                await client.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Digest realm="r", nonce="n0nce-1", qop="auth"\r\n'
                    b"Content-Length: 0\r\n\r\n"
                )
                continue
            found = re.search(rb'response="([0-9a-f]+)"', authorization)
            response = found.group(1) if found else b"-"
            await client.send(
                reply.replace(b"{auth}", authorization).replace(b"{response}", response)
            )
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await client.receive()
            return

    return serve(handler)


QUOTING_REPLIES = {
    "whole-value": b"HTTP/1.1 403 Forbidden: {auth}\r\nX-Seen: {auth}\r\n"
    b"Content-Length: 0\r\n\r\n",
    "hash-only": b"HTTP/1.1 403 Bad response {response}\r\nX-Squid-Error: ERR {response}\r\n"
    b"Content-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("quoted", list(QUOTING_REPLIES))
@pytest.mark.parametrize("preemptive_basic", [True, False], ids=["basic-first", "digest-only"])
async def test_secrets_digest_answer_sent_back(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    where: str,
    quoted: str,
    preemptive_basic: bool,
) -> None:
    """The Digest answer janusnet computed, quoted back by a proxy (whole, or its
    ``response`` hash alone: with the challenge, enough to guess the password offline),
    is withheld like the Basic value."""
    async with quoting_proxy(QUOTING_REPLIES[quoted], challenge=True) as port:
        tunnel = make_tunnel(f"http://127.0.0.1:{port}", where, preemptive_basic=preemptive_basic)
        with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("localhost", 443)
    assert info.value.status == 403
    texts = [*exception_texts(info.value), repr(info.value.headers)]
    texts += [record.getMessage() for record in caplog.records]
    shown = str(info.value)
    assert "[credentials withheld]" in shown
    assert 'response="' not in shown and "cnonce=" not in shown
    # No 32-hex-digit run (the MD5 response) is left anywhere.
    for text in texts:
        assert re.search(r"[0-9a-f]{32}", text) is None, text


async def test_secrets_authorization_given_in_headers_sent_back(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``Proxy-Authorization`` given in ``headers=`` (a bearer token) is a credential
    as janusnet's own are: withheld when the proxy quotes it back."""
    token = "eyJhbGciOiJIUzI1NiJ9.c2VydmljZS1hY2NvdW50.s3cr3t-sig"
    async with quoting_proxy(QUOTING_REPLIES["whole-value"], challenge=False) as port:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{port}", headers={"Proxy-Authorization": f"Bearer {token}"}
        )
        with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("localhost", 443)
    texts = [*exception_texts(info.value), repr(info.value.headers)]
    texts += [record.getMessage() for record in caplog.records]
    assert_no_piece_of(token, texts)
    assert "[credentials withheld]" in str(info.value)


async def test_secrets_basic_given_in_headers_sent_back_decoded(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Basic value given in ``headers=`` is withheld as credentials from the URL are,
    also decoded (``user:password``), whatever its length."""
    password = "hunter2"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    reply = b"HTTP/1.1 403 user {pair} not allowed\r\nContent-Length: 0\r\n\r\n"
    async with echoing_proxy(reply) as port:
        tunnel = ProxyTunnel(
            f"http://127.0.0.1:{port}", headers={"Proxy-Authorization": f"Basic {token}"}
        )
        with anyio.fail_after(10), pytest.raises(ProxyRefusedError) as info:
            await tunnel.open("localhost", 443)
    texts = [*exception_texts(info.value), *(r.getMessage() for r in caplog.records)]
    for text in texts:
        assert f"{USER}:{password}" not in text, text
    assert "user [credentials withheld] not allowed" in str(info.value)


def plain_answering_proxy(padding: int = 0, *, split: bool = False) -> Any:
    """A loopback proxy that answers CONNECT with 200, reads the ClientHello, and answers
    it in plain text quoting the ``Proxy-Authorization`` it got (a broken proxy), after
    ``padding`` characters (so that it crosses where a quote is cut)."""

    async def handler(client: SocketStream) -> None:
        buf = bytearray()
        authorization = await read_authorization(client, buf)
        await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client.receive()  # the ClientHello
        answer = b"HTTP/1.1 502 " + b"x" * padding + authorization + b"\r\n\r\n"
        if split:  # half the credentials now, the rest after the client has given up
            await client.send(answer[: len(answer) // 2])
            await anyio.sleep(0.3)
            answer = answer[len(answer) // 2 :]
        await client.send(answer)
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            await client.receive()

    return serve(handler)


@pytest.mark.parametrize(
    ("padding", "split"),
    [(0, False), (40, False), (0, True)],
    ids=["whole", "across-the-cut", "split-in-two-segments"],
)
@pytest.mark.parametrize("how", ["open_tls", "open-then-ssl_on"])
async def test_secrets_quoted_in_a_plain_answer_to_the_client_hello(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    where: str,
    how: str,
    padding: int,
    split: bool,
) -> None:
    """The -111 for a plain-text answer to the ClientHello quotes its first line; the
    credentials in it are withheld as in the proxy's reply to CONNECT, also when the
    quote's cut (80 characters) falls inside them."""
    async with plain_answering_proxy(padding, split=split) as port:
        tunnel = make_tunnel(f"http://127.0.0.1:{port}", where)

        async def attempt() -> None:
            if how == "open_tls":
                await tunnel.open_tls("localhost", 443)
            else:
                async with await tunnel.open("localhost", 443) as sock:
                    await sock.ssl_on()

        exc = await check_failure(caplog, how, HandshakeError, attempt)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert_no_piece_of(token, list(exception_texts(exc)))
    if not padding:  # (split: the line stops inside them, and what arrived is withheld)
        assert "'HTTP/1.1 502 [credentials withheld]'" in str(exc)


async def test_secrets_sent_back_in_a_2xx_reply(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    reply = b"HTTP/1.1 200 OK {auth}\r\nX-Seen: {auth}\r\n\r\n"
    async with echoing_proxy(reply) as port:
        tunnel = make_tunnel(f"http://127.0.0.1:{port}", where)
        async with await tunnel.open("localhost", 443) as sock:
            reply_seen = sock.proxy_reply
    assert reply_seen is not None and reply_seen.status == 200
    assert reply_seen.reason == "OK [credentials withheld]"
    assert reply_seen.get_all("x-seen") == ("[credentials withheld]",)
    assert_no_secret([repr(reply_seen)], "2xx echo")
    assert_clean_logs(caplog, "2xx echo")


@pytest.mark.parametrize(
    "url_tail",
    [
        "@127.0.0.1:99999",  # bad port
        "@127.0.0.1:31 28",  # space
        "@127.0.0.1:3128/x@y",  # an '@' in the path (a misplaced password?)
        "@[::1:3128",  # unbalanced bracket
        "@",  # no host
        "@127.0.0.1:3128\r\n",  # control characters
    ],
    ids=["bad-port", "space", "at-in-path", "bracket", "no-host", "crlf"],
)
def test_secrets_bad_url(caplog: pytest.LogCaptureFixture, url_tail: str) -> None:
    for userinfo in (f"{USER}:{PASSWORD}", f"{USER}:{quote(PASSWORD, safe='')}"):
        url = f"http://{userinfo}{url_tail}"
        with pytest.raises(UsageError) as info:
            ProxyTunnel(url)
        assert_no_secret(exception_texts(info.value), f"bad-url {url_tail!r}")
    assert_clean_logs(caplog, "bad-url")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Secret": f"{PASSWORD}\r\nInjected: 1"},
        {"Proxy-Authorization": f"Basic {base64.b64encode(f'{USER}:{PASSWORD}'.encode())!r}\n"},
        {"X-Secret": f"{PASSWORD}\u20ac\u2603"},  # outside latin-1
        {"X-Secret": f"\x7f{PASSWORD}"},
    ],
    ids=["crlf-value", "authorization-lf", "non-latin1", "del"],
)
def test_secrets_bad_header(caplog: pytest.LogCaptureFixture, headers: dict[str, str]) -> None:
    with pytest.raises(UsageError) as info:
        ProxyTunnel("http://127.0.0.1:3128", auth=(USER, PASSWORD), headers=headers)
    assert_no_secret(exception_texts(info.value), "bad-header")
    assert_clean_logs(caplog, "bad-header")


def test_secrets_bad_userinfo_encoding(caplog: pytest.LogCaptureFixture) -> None:
    """Userinfo that is not percent-encoded UTF-8: the decode error holds the secret's
    bytes, so it must not ride along as ``__context__`` either."""
    for userinfo in (f"{USER}:{quote(PASSWORD, safe='')}%ff", f"{USER}%fe:{PASSWORD}%C3"):
        with pytest.raises(UsageError) as info:
            ProxyTunnel(f"http://{userinfo}@127.0.0.1:3128")
        assert info.value.__context__ is None
        assert_no_secret(exception_texts(info.value), "bad-userinfo-encoding")
    assert_clean_logs(caplog, "bad-userinfo-encoding")


def test_secrets_bad_credentials(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        (f"{USER}:x", PASSWORD),
        (USER, f"{PASSWORD}\r\n"),
        (USER, f"{PASSWORD}\x00"),
        (USER, f"{PASSWORD}\ud800"),  # a lone surrogate cannot be encoded
    ]
    for auth in bad:
        with pytest.raises(UsageError) as info:
            ProxyTunnel("http://127.0.0.1:3128", auth=auth)
        assert_no_secret(exception_texts(info.value), "bad-credentials")
    assert_clean_logs(caplog, "bad-credentials")


async def test_secrets_success_reprs(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, origin: TLSOrigin, where: str
) -> None:
    with ConnectProxy(auth=(USER, PASSWORD)) as authed:
        tunnel = make_tunnel(authed.url, where)
        port = ClientPort("SECRETS", ssl_context=origin.client_context())
        tunnel = make_tunnel(authed.url, where, client_port=port)
        async with await tunnel.open("localhost", origin.port) as sock:
            await sock.ssl_on()
            texts = [repr(tunnel), str(tunnel), repr(sock), str(sock), repr(sock.proxy_reply)]
            texts += [repr(parse_proxy_url(authed.url_with_auth(USER, PASSWORD)))]
            texts += [str(parse_proxy_url(authed.url_with_auth(USER, PASSWORD)))]
            texts += [tunnel.proxy, repr(sock.tls)]
        assert authed.log[-1].proxy_authorization
    assert "auth=<hidden>" in repr(tunnel)
    assert_no_secret(texts, "success")
    assert_clean_logs(caplog, "success")


def test_withhold_cut_takes_a_credential_the_text_stops_inside() -> None:
    forms = ("Basic YWxpY2U6czNjcmV0LXBhc3N3b3Jk", "YWxpY2U6czNjcmV0LXBhc3N3b3Jk")
    cut = janusnet._exceptions.withhold_cut
    assert cut("400 Basic YWxpY2U6czNj", forms) == "400 [credentials withheld]"
    assert cut("400 YWxpY2U6czNjcmV0", forms) == "400 [credentials withheld]"
    assert cut("400 bad", forms) == "400 bad"  # (no start of a form at its end)
    assert cut("a Basic YWxpY2U6czNjcmV0LXBhc3N3b3Jk b", forms) == "a [credentials withheld] b"


def test_withhold_cut_edges() -> None:
    """An end one character short of a whole form is withheld, and so is an end that is
    the form's first 4 characters; 3 tell nothing and stay."""
    form = "Basic YWxpY2U6czNjcmV0LXBhc3N3b3Jk"
    cut = janusnet._exceptions.withhold_cut
    assert cut("400 " + form[:-1], (form,)) == "400 [credentials withheld]"
    assert cut("400 " + form[:4], (form,)) == "400 [credentials withheld]"
    assert cut("400 " + form[:3], (form,)) == "400 " + form[:3]


def test_withhold_from_error_follows_the_whole_chain() -> None:
    """The implicit chain (``__context__``, no ``__cause__``) is cleaned too, and a chain
    that loops back (``__cause__`` can be set to anything) is cleaned and left."""
    withhold_from_error = janusnet._exceptions.withhold_from_error
    forms = ("czNjcmV0",)
    try:
        try:
            raise KeyError("inner czNjcmV0")
        except KeyError:
            raise ValueError("outer czNjcmV0") from None
    except ValueError as exc:
        suppressed = exc
    try:
        try:
            raise KeyError("inner czNjcmV0")
        except KeyError:
            raise ValueError("outer czNjcmV0")  # noqa: B904 (the implicit chain)
    except ValueError as exc:
        implicit = exc
    for error in (suppressed, implicit):
        withhold_from_error(error, forms)
        assert error.args == ("outer [credentials withheld]",)
        assert error.__context__ is not None
        assert error.__context__.args == ("inner [credentials withheld]",)

    first, second = ValueError("a czNjcmV0"), ValueError("b czNjcmV0")
    first.__cause__, second.__cause__ = second, first
    worker = threading.Thread(target=withhold_from_error, args=(first, forms), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "withhold_from_error went round the loop for ever"
    assert (first.args, second.args) == (
        ("a [credentials withheld]",),
        ("b [credentials withheld]",),
    )


def test_printable_cuts_at_the_limit() -> None:
    """``limit`` characters are kept whole; one more is cut, counted once escaped."""
    printable = janusnet._exceptions.printable
    assert printable("a" * 200) == "a" * 200
    assert printable("a" * 201) == "a" * 200 + "..."
    assert printable("\x1b" * 50) == "\\x1b" * 50
    assert printable("\x1b" * 51) == "\\x1b" * 50 + "..."
    assert printable("abc", limit=2) == "ab..."


def test_secrets_search_catches_a_leak() -> None:
    """The search itself works: a message holding any form of the secret is caught."""
    for form in secret_forms():
        with pytest.raises(AssertionError):
            assert_no_secret(exception_texts(JanusnetError(f"oops {form}")), "self-test")
        chained = ValueError("outer")
        chained.__cause__ = KeyError(form)
        with pytest.raises(AssertionError):
            assert_no_secret(exception_texts(chained), "self-test-chain")


def test_every_error_pickles_with_its_data() -> None:
    """Errors cross process boundaries (process pools, multiprocessing) intact, and they
    still carry no credentials."""
    import pickle

    errors: list[janusnet.JanusnetError] = [
        janusnet.UsageError("bad"),
        janusnet.BusyError("busy"),
        janusnet.ConnectError("refused", host="::1", port=3128, role="proxy"),
        janusnet.AccessDeniedError("denied", host="h", port=1, port_name="P"),
        janusnet.PortLimitError("full", port_name="P", limit=2),
        janusnet.SocketClosedError("closed"),
        janusnet.SocketResetError("reset"),
        janusnet.IncompleteReadError(b"ab", 5),
        janusnet.IncompleteReadError(b"ab", 5, window_spent=True),
        janusnet.NotSSLPortError("never"),
        janusnet.HandshakeError("bad cert"),
        janusnet.PendingDataError("unread", pending=7),
        janusnet.SSLOnOtherError("other"),
        janusnet.ProxyRefusedError(403, "Forbidden", [("Via", "x")], proxy="p:1"),
        janusnet.ProxyAuthenticationRequired(
            407, "Auth", [("Proxy-Authenticate", 'Basic realm="r"')], proxy="p:1"
        ),
        janusnet.ProxyProtocolError("garbage", proxy="p:1"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert vars(copy) == vars(error)
        assert type(copy).__module__ == "janusnet"

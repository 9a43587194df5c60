"""Contexts users bring: truststore's OS trust store (its verification runs inside the
handshake janusnet drives over memory BIOs), ``SSLKEYLOGFILE`` (the default context
honours it, as curl, httpx and Python's own do; janusnet's TLS writes the keys), and
``create_ssl_context`` (the default policy on other CAs, a client certificate). Also what
a failed handshake says when the cause is likely a CA variable janusnet does not read, or
a peer that answered in plain text."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme
import truststore
from anyio.abc import SocketStream

import janusnet
from janusnet import HandshakeError, ProxyTunnel
from janusnet.testing import ConnectProxy, TLSOrigin
from loopback import read_until_eof, serve

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


async def test_truststore_context_verifies(anyio_backend: str, origin: TLSOrigin) -> None:
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    origin.ca.configure_trust(context)  # on Linux truststore verifies with OpenSSL
    port = janusnet.ClientPort("TRUSTSTORE", ssl_context=context)
    with ConnectProxy() as proxy:
        tunnel = ProxyTunnel(proxy.url, client_port=port)
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert sock.tls is not None and sock.tls.server_hostname == "localhost"
            await sock.send(b"GET /ts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"


async def test_truststore_context_refuses_an_unknown_ca(
    anyio_backend: str, origin: TLSOrigin
) -> None:
    port = janusnet.ClientPort(
        "TRUSTSTORE", ssl_context=truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    sock = await janusnet.Socket.connect("localhost", origin.port, client_port=port)
    with pytest.raises(HandshakeError, match="CERTIFICATE_VERIFY_FAILED") as info:
        await sock.ssl_on()
    assert info.value.code == -111
    assert sock.closed


def test_sslkeylogfile_is_honoured(tmp_path: Path, origin: TLSOrigin) -> None:
    """In a process of its own: the default context is built once per process."""
    keylog = tmp_path / "keys.log"
    ca = tmp_path / "ca.pem"
    origin.ca.cert_pem.write_to_path(str(ca))
    code = f"""
        import ssl, anyio, janusnet
        assert janusnet.default_ssl_context().keylog_filename == {str(keylog)!r}
        async def main():
            context = ssl.create_default_context(cafile={str(ca)!r})
            port = janusnet.ClientPort("KEYLOG", ssl_context=context)
            sock = await janusnet.Socket.connect("localhost", {origin.port}, client_port=port)
            async with sock:
                await sock.ssl_on()
        anyio.run(main)
    """
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        env={**os.environ, "SSLKEYLOGFILE": str(keylog)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines), lines


# ------------------------------------------------- create_ssl_context: policy and trust


def test_create_ssl_context_has_the_default_policy_and_is_new_each_time() -> None:
    first, second = janusnet.create_ssl_context(), janusnet.create_ssl_context()
    assert first is not second and first is not janusnet.default_ssl_context()
    for context in (first, janusnet.default_ssl_context()):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.hostname_checks_common_name is False
    # certifi's bundle, as the default context's (a few hundred CAs)
    assert (
        first.cert_store_stats()["x509_ca"]
        == (janusnet.default_ssl_context().cert_store_stats()["x509_ca"])
    )
    assert first.cert_store_stats()["x509_ca"] > 50


async def _get(sock: janusnet.Socket) -> bytes:
    await sock.send(b"GET /ctx HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    return (await sock.recv_parsed()).data


def _hashed_directory(tmp_path: Path, pem: bytes) -> Path:
    """A directory in OpenSSL's hashed layout (``<subject hash>.0``) holding ``pem``."""
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout"],
        input=pem,
        capture_output=True,
        check=True,
    ).stdout.strip()
    (tmp_path / "cas").mkdir()
    (tmp_path / "cas" / f"{subject_hash.decode()}.0").write_bytes(pem)
    return tmp_path / "cas"


@pytest.mark.parametrize("form", ["cafile", "pathlike", "cadata-pem", "cadata-der", "capath"])
async def test_create_ssl_context_trusts_what_it_is_given(
    anyio_backend: str, origin: TLSOrigin, tmp_path: Path, form: str
) -> None:
    pem = origin.ca.cert_pem.bytes()
    (tmp_path / "ca.pem").write_bytes(pem)
    if form == "cafile":
        context = janusnet.create_ssl_context(str(tmp_path / "ca.pem"))
    elif form == "pathlike":
        context = janusnet.create_ssl_context(tmp_path / "ca.pem")
    elif form == "cadata-pem":
        context = janusnet.create_ssl_context(cadata=pem.decode())
    elif form == "cadata-der":
        context = janusnet.create_ssl_context(cadata=ssl.PEM_cert_to_DER_cert(pem.decode()))
    else:
        context = janusnet.create_ssl_context(capath=_hashed_directory(tmp_path, pem))
    port = janusnet.ClientPort("MINE", ssl_context=context)
    with ConnectProxy() as proxy:
        tunnel = ProxyTunnel(proxy.url, client_port=port)
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert await _get(sock) == b"HTTP/1.1 200 OK"
    # ... and only that: the default context does not know the test CA
    sock = await janusnet.Socket.connect("localhost", origin.port)
    with pytest.raises(HandshakeError, match="CERTIFICATE_VERIFY_FAILED"):
        await sock.ssl_on()


def test_create_ssl_context_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_bytes(b"")
    (tmp_path / "file").write_bytes(b"x")
    # ssl would take an empty value for "none given" and load the OS store (which
    # SSL_CERT_FILE redirects): refused, not silently trusted.
    for empty in ({"cafile": ""}, {"cafile": b""}, {"capath": ""}, {"cadata": ""}):
        with pytest.raises(janusnet.UsageError, match="is empty"):
            janusnet.create_ssl_context(**empty)  # type: ignore[arg-type]
    with pytest.raises(janusnet.UsageError, match="cadata is empty"):
        janusnet.create_ssl_context(cadata=b"")
    with pytest.raises(FileNotFoundError):
        janusnet.create_ssl_context(str(tmp_path / "missing.pem"))
    with pytest.raises(ssl.SSLError):
        janusnet.create_ssl_context(str(tmp_path / "empty.pem"))
    with pytest.raises(ssl.SSLError):
        janusnet.create_ssl_context(cadata="not a certificate")
    # OpenSSL would only find nothing in it at the first handshake: said at once here
    with pytest.raises(FileNotFoundError, match="missing"):
        janusnet.create_ssl_context(capath=tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="file"):
        janusnet.create_ssl_context(capath=tmp_path / "file")
    # A list joined with os.pathsep (SSL_CERT_DIR often is one), as OpenSSL takes it:
    # refused only when no entry is a directory.
    (tmp_path / "cas").mkdir()
    listed = os.pathsep.join([str(tmp_path / "missing"), str(tmp_path / "cas")])
    assert janusnet.create_ssl_context(capath=listed).verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(FileNotFoundError):
        janusnet.create_ssl_context(capath=os.pathsep.join(["/no/such/a", "/no/such/b"]))


async def test_create_ssl_context_capath_list_verifies(
    anyio_backend: str, origin: TLSOrigin, tmp_path: Path
) -> None:
    cas = _hashed_directory(tmp_path, origin.ca.cert_pem.bytes())
    listed = os.pathsep.join([str(tmp_path / "missing"), str(cas)])
    port = janusnet.ClientPort("LISTED", ssl_context=janusnet.create_ssl_context(capath=listed))
    async with await janusnet.Socket.connect("localhost", origin.port, client_port=port) as sock:
        await sock.ssl_on()
        assert await _get(sock) == b"HTTP/1.1 200 OK"


@pytest.fixture(scope="module")
def mutual_origin() -> Iterator[tuple[TLSOrigin, trustme.CA]]:
    """An origin that asks for a client certificate and trusts only ``client_ca``'s."""
    client_ca = trustme.CA()
    server_ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("localhost").configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    with TLSOrigin(server_context=context, ca=server_ca) as server:
        yield server, client_ca


async def test_create_ssl_context_takes_a_client_certificate(
    anyio_backend: str, mutual_origin: tuple[TLSOrigin, trustme.CA]
) -> None:
    """Mutual TLS through a tunnel: the context create_ssl_context gives is the caller's
    to load a certificate chain into (the shared default one is not)."""
    origin, client_ca = mutual_origin
    context = janusnet.create_ssl_context(cadata=origin.ca.cert_pem.bytes().decode())
    client_ca.issue_cert("client@example.test").configure_cert(context)
    with ConnectProxy() as proxy:
        tunnel = ProxyTunnel(proxy.url)
        async with await tunnel.open("localhost", origin.port) as sock:
            await sock.ssl_on(ssl_context=context)
            assert await _get(sock) == b"HTTP/1.1 200 OK"
        # Without one the server refuses: in TLS 1.3 after the client's handshake has
        # ended, so what the client meets is the connection ending (or an alert).
        bare = janusnet.create_ssl_context(cadata=origin.ca.cert_pem.bytes().decode())
        async with await tunnel.open("localhost", origin.port) as sock:
            await sock.ssl_on(ssl_context=bare)
            try:
                answer: bytes | None = await _get(sock)
            except janusnet.SocketResetError:
                answer = None
            assert answer in (None, b""), answer


# ------------------------------------- what a verification failure says of SSL_CERT_FILE


@pytest.fixture
def ca_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def _verify_failure(
    host: str, port: int, context: ssl.SSLContext | None, *, name: str | None = None
) -> str:
    sock = await janusnet.Socket.connect(host, port)
    with pytest.raises(HandshakeError) as info:
        await sock.ssl_on(ssl_context=context, server_hostname=name)
    assert sock.closed
    return str(info.value)


async def test_verification_failure_names_a_ca_variable_janusnet_does_not_read(
    anyio_backend: str, origin: TLSOrigin, tmp_path: Path, ca_variables: pytest.MonkeyPatch
) -> None:
    ca_file = tmp_path / "ca.pem"
    origin.ca.cert_pem.write_to_path(str(ca_file))
    assert "is set" not in await _verify_failure("localhost", origin.port, None)
    ca_variables.setenv("SSL_CERT_FILE", str(ca_file))
    ca_variables.setenv("CURL_CA_BUNDLE", str(ca_file))
    said = await _verify_failure("localhost", origin.port, None)
    assert said.endswith(
        "(SSL_CERT_FILE is set, but janusnet reads no such variable: this context trusts "
        "certifi's bundle only; if the CA is in that one, pass "
        "janusnet.create_ssl_context(os.environ['SSL_CERT_FILE']))"
    ), said
    # What it suggests works.
    context = janusnet.create_ssl_context(os.environ["SSL_CERT_FILE"])
    async with await janusnet.Socket.connect("localhost", origin.port) as sock:
        await sock.ssl_on(ssl_context=context)
    # A fresh certifi-only context from create_ssl_context() says it too; one given
    # other CAs does not (the variable is not what it lacks), nor does a name mismatch.
    assert "SSL_CERT_FILE is set" in await _verify_failure(
        "localhost", origin.port, janusnet.create_ssl_context()
    )
    other = janusnet.create_ssl_context(cadata=trustme.CA().cert_pem.bytes().decode())
    assert "is set" not in await _verify_failure("localhost", origin.port, other)
    # One made on certifi's bundle and then given more CAs is not "certifi's only".
    grown = janusnet.create_ssl_context()
    grown.load_verify_locations(cadata=trustme.CA().cert_pem.bytes().decode())
    assert "is set" not in await _verify_failure("localhost", origin.port, grown)
    mismatch = await _verify_failure("localhost", origin.port, context, name="other.test")
    assert "mismatch" in mismatch.lower() and "is set" not in mismatch
    ca_variables.delenv("SSL_CERT_FILE")
    ca_variables.delenv("CURL_CA_BUNDLE")
    ca_variables.setenv("SSL_CERT_DIR", str(tmp_path))
    assert (await _verify_failure("localhost", origin.port, None)).endswith(
        "create_ssl_context(capath=os.environ['SSL_CERT_DIR']))"
    )


# --------------------------------------- a plain-text answer to the ClientHello, said so


@pytest.mark.parametrize("through", ["ssl_on", "https proxy", "inside an https proxy"])
async def test_a_plain_http_answer_to_the_client_hello_is_named(
    anyio_backend: str, through: str, caplog: pytest.LogCaptureFixture, ca: trustme.CA
) -> None:
    """Also from an origin reached inside an ``https://`` proxy's TLS (TLS in TLS),
    which said nothing of it."""

    async def http_server(stream: SocketStream) -> None:
        await stream.receive()  # the ClientHello
        await stream.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await read_until_eof(stream)

    async with serve(http_server) as port:
        if through == "ssl_on":
            sock = await janusnet.Socket.connect("localhost", port)
            with pytest.raises(HandshakeError) as info:
                await sock.ssl_on()
            assert sock.closed
        elif through == "https proxy":
            tunnel = ProxyTunnel(f"https://localhost:{port}", timeout=10)
            with pytest.raises(HandshakeError) as info:
                await tunnel.open_tls("localhost", 443)
        else:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost").configure_cert(server)
            with ConnectProxy(ssl_context=server) as tls_proxy:
                client = janusnet.create_ssl_context()
                ca.configure_trust(client)
                tunnel = ProxyTunnel(
                    f"https://localhost:{tls_proxy.port}", proxy_ssl_context=client, timeout=10
                )
                with pytest.raises(HandshakeError) as info:
                    await tunnel.open_tls("localhost", port, ssl_context=client)
            assert "TLS handshake with localhost failed" in str(info.value)
    said = str(info.value)
    assert (
        "(plain text came where TLS was expected, 'HTTP/1.1 400 Bad Request': the peer "
        "does not speak TLS here, or wrote before its handshake, or something on the way "
        "injected it"
    ) in said
    proxy_hint = "use http:// for a proxy that speaks plain HTTP"
    assert (proxy_hint in said) == (through == "https proxy"), said
    # The log says so without quoting it (a proxy's answer may quote the credentials a
    # tunnel sent, which only the error withholds), and the quote is not kept elsewhere.
    [logged] = [r.getMessage() for r in caplog.records if "plain text came" in r.getMessage()]
    assert "Bad Request" not in logged and "expected: the peer does not speak" in logged
    assert "janusnet_plain_answer" not in vars(info.value.__cause__)


async def test_a_plain_answer_split_across_reads_is_quoted(anyio_backend: str) -> None:
    async def trickling_server(stream: SocketStream) -> None:
        await stream.receive()
        await stream.send(b"H")
        await anyio.sleep(0.05)
        await stream.send(b"TTP/1.1 400 Bad Request\r\n\r\n")
        await read_until_eof(stream)

    async with serve(trickling_server) as port:
        sock = await janusnet.Socket.connect("localhost", port)
        with pytest.raises(HandshakeError, match=r"'HTTP/1\.1 400 Bad Request'"):
            await sock.ssl_on()


async def test_a_binary_answer_to_the_client_hello_is_not_quoted(anyio_backend: str) -> None:
    async def binary_server(stream: SocketStream) -> None:
        await stream.receive()
        await stream.send(b"\x00\x01\x02\x03HTTP/1.1 400 garbage\r\n\r\n")
        await read_until_eof(stream)

    async with serve(binary_server) as port:
        sock = await janusnet.Socket.connect("localhost", port)
        with pytest.raises(HandshakeError) as info:
            await sock.ssl_on()
    assert "plain text" not in str(info.value), info.value


# ------------------------------------------- what a failure of strict verification says


@pytest.mark.parametrize("strict", [True, False])
async def test_strict_verification_failure_says_what_checks_it(
    anyio_backend: str, tmp_path: Path, strict: bool
) -> None:
    """A CA whose basicConstraints is not critical (RFC 5280 says it must be; private
    and TLS-inspection CAs often leave it so) fails verification only where the context
    checks strictly: Python 3.13's default, so the same code and CA verify on 3.12 and
    fail on 3.13. The -111 names the flag and how to accept such a CA. The flag is set
    or cleared here, so that the test means the same on every Python."""
    from loopback import tls_server_side, unusual_certificate

    ca_pem, cert_pem = unusual_certificate(
        names=[("CN", "corp")], dns_names=["localhost"], lax_ca=True
    )
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem")
    context = janusnet.create_ssl_context(cadata=ca_pem.decode())
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    port = janusnet.ClientPort("CORP", tls=janusnet.TLSMode.OPTIONAL, ssl_context=context)

    async def handler(stream: SocketStream) -> None:
        with contextlib.suppress(Exception):
            tls = await tls_server_side(stream, server)
            await tls.send(b"hello")
            await tls.aclose()

    async with serve(handler) as number:
        with anyio.fail_after(10):
            if not strict:
                async with await janusnet.Socket.connect(
                    "localhost", number, client_port=port, tls=True
                ) as sock:
                    assert await sock.recv() == b"hello"
                return
            with pytest.raises(janusnet.HandshakeError) as info:
                await janusnet.Socket.connect("localhost", number, client_port=port, tls=True)
    text = str(info.value)
    assert "Basic Constraints of CA cert not marked critical" in text
    assert "ssl.VERIFY_X509_STRICT, Python's default from 3.13" in text
    assert "context.verify_flags &= ~ssl.VERIFY_X509_STRICT" in text

"""Loopback tests of Socket on asyncio and trio, with trustme certificates."""

from __future__ import annotations

import pathlib
import socket
import ssl
from typing import Any

import anyio
import pytest
import trustme
from anyio.abc import SocketStream
from anyio.streams.tls import TLSStream

import janusnet
from janusnet import (
    BusyError,
    ClientPort,
    ConnectError,
    HandshakeError,
    IncompleteReadError,
    NotSSLPortError,
    PendingDataError,
    ProxyTunnel,
    ReturnCode,
    Socket,
    SocketResetError,
    SocketState,
    SSLOnOtherError,
    TLSMode,
    UsageError,
)
from janusnet._transport import tls_name_for
from janusnet.testing import ConnectProxy
from loopback import (
    echo,
    needs_ipv6,
    read_line,
    read_until_eof,
    serve,
    stall_after_hello,
    tls_server_side,
    unusual_certificate,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def port(ca: trustme.CA) -> ClientPort:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return ClientPort("TEST", tls=TLSMode.OPTIONAL, ssl_context=context)


def starttls_handler(server_context: ssl.SSLContext, *, inject: bytes = b"", late: bytes = b""):
    """A STARTTLS-style peer: greet, wait for STARTTLS, (inject), upgrade, then echo."""

    async def handler(stream: SocketStream) -> None:
        buf = bytearray()
        await stream.send(b"220 ready\r\n")
        assert await read_line(stream, buf) == b"STARTTLS"
        await stream.send(b"220 go ahead\r\n" + inject)
        if late:
            await anyio.sleep(0.05)
            await stream.send(late)
        tls = await tls_server_side(stream, server_context)
        await echo(tls)

    return handler


async def ask_starttls(sock: Socket) -> None:
    """Read the greeting, ask for STARTTLS and read the go-ahead (no TLS yet)."""
    await sock.recv_parsed()
    await sock.send_line("STARTTLS")
    await sock.recv_parsed()


async def test_socket_ssl_on_after_plain_exchange(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context)) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            assert (await sock.recv_parsed()).data == b"220 ready"
            await sock.send_line("STARTTLS")
            assert await sock.recv_parsed() == (b"220 go ahead", b"\r\n", 1)
            assert sock.tls is None
            await sock.ssl_on()
            assert sock.tls is not None
            assert sock.tls.version in ("TLSv1.2", "TLSv1.3")
            assert sock.tls.server_hostname == "localhost"
            assert sock.tls.peer_certificate is not None
            assert ("DNS", "localhost") in sock.tls.peer_certificate.subject_alt_names
            assert sock.tls.peer_certificate.not_after is not None
            await sock.send_line(b"over tls")
            assert await sock.recv_parsed() == (b"over tls", b"\r\n", 1)
            assert sock.state is SocketState.CONNECTED
        assert sock.closed
        assert sock.state is SocketState.RESET


async def test_socket_ssl_on_refused_on_never_port(
    anyio_backend: str, server_context: ssl.SSLContext
) -> None:
    never = ClientPort("PLAIN", tls=TLSMode.NEVER)
    async with serve(echo) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=never) as sock:
            with pytest.raises(NotSSLPortError) as info:
                await sock.ssl_on(server_hostname="localhost")
            assert info.value.code == ReturnCode.NOT_SSL_PORT == -110
            assert not sock.closed
            await sock.send_line("still plain")
            assert (await sock.recv_parsed()).data == b"still plain"


async def test_socket_ssl_on_plaintext_peer_is_handshake_error(
    anyio_backend: str, port: ClientPort
) -> None:
    async def plaintext(stream: SocketStream) -> None:
        await stream.receive()
        await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls at all\r\n")

    async with serve(plaintext) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        with pytest.raises(HandshakeError) as info:
            await sock.ssl_on()
        assert info.value.code == -111
        assert isinstance(info.value.__cause__, ssl.SSLError)
        assert sock.closed


async def test_socket_ssl_on_peer_closes_is_handshake_error(
    anyio_backend: str, port: ClientPort
) -> None:
    async def closer(stream: SocketStream) -> None:
        await stream.receive()

    async with serve(closer) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        with pytest.raises(HandshakeError) as info:
            await sock.ssl_on()
        assert sock.closed
    # The reason is never empty ("... failed: "), whichever error the close surfaced as.
    reason = str(info.value).partition("failed: ")[2]
    assert reason.strip(), str(info.value)


@pytest.mark.parametrize(
    ("names", "common_name", "own_context", "hint"),
    [
        (["other.example"], None, False, "(the certificate is for 'other.example')"),
        (
            [f"n{i}.example" for i in range(7)] + ["127.0.0.2"],
            None,
            False,
            "(the certificate is for 'n0.example', 'n1.example', 'n2.example', "
            "'n3.example', 'n4.example' and 3 more)",
        ),
        (
            ["other.example"],
            "localhost",
            False,
            "(the certificate is for 'other.example'; its CN 'localhost' does not count: "
            "names are checked against the subjectAltName only)",
        ),
        (
            [],
            "localhost",
            False,
            "(the certificate names no host in its subjectAltName; its CN 'localhost' does "
            "not count: names are checked against the subjectAltName only)",
        ),
        (["other.example"], "localhost", True, "(the certificate is for 'other.example')"),
        (["bad\x1b[2J.example"], None, False, r"(the certificate is for 'bad\\x1b[2J.example')"),
    ],
    ids=["other-name", "many-names", "cn-not-counted", "cn-only", "own-context", "escaped"],
)
async def test_socket_ssl_on_wrong_hostname_is_handshake_error(
    anyio_backend: str,
    ca: trustme.CA,
    names: list[str],
    common_name: str | None,
    own_context: bool,
    hint: str,
    tmp_path: pathlib.Path,
) -> None:
    """-111 saying whom the certificate is for, read from the chain the peer sent (as
    curl does), and, on janusnet's policy, that a CN does not count (a context of
    ``ssl.create_default_context()`` falls back to a CN when there is no DNS name)."""
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if names and all(name.isprintable() for name in names):
        ca.issue_cert(*names, common_name=common_name).configure_cert(other)
    else:  # (trustme refuses a name that is not IDNA, and gives no names an empty SAN)
        subject = [("CN", common_name)] if common_name else [("O", "x")]
        _, cert_pem = unusual_certificate(names=subject, dns_names=names, issuer=ca)
        (tmp_path / "cert.pem").write_bytes(cert_pem)
        other.load_cert_chain(tmp_path / "cert.pem")
    if own_context:
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    else:
        context = janusnet.create_ssl_context(cadata=ca.cert_pem.bytes().decode())
    port = ClientPort("POLICY", tls=TLSMode.OPTIONAL, ssl_context=context)

    async def handler(stream: SocketStream) -> None:
        await tls_server_side(stream, other)

    async with serve(handler) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        with pytest.raises(HandshakeError) as info:
            await sock.ssl_on()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        assert "Hostname mismatch, certificate is not valid for 'localhost'" in str(info.value)
        assert str(info.value).endswith(hint), str(info.value)
        assert sock.closed


async def test_socket_ssl_on_wrong_hostname_in_tls_in_tls_gives_the_rule(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    """Where the certificate cannot be read (TLS inside a proxy's TLS, on anyio's TLS
    layer), the error gives the general rule."""
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(other)
    context = janusnet.create_ssl_context(cadata=ca.cert_pem.bytes().decode())

    async def handler(stream: SocketStream) -> None:
        await tls_server_side(stream, other)

    async with serve(handler) as number:
        with ConnectProxy(ssl_context=server_context) as tls_proxy:
            tunnel = ProxyTunnel(
                f"https://localhost:{tls_proxy.port}", proxy_ssl_context=context, timeout=10
            )
            with pytest.raises(HandshakeError) as info:
                await tunnel.open_tls("localhost", number, ssl_context=context)
    assert str(info.value).endswith(
        "(names are checked against the certificate's subjectAltName only: a host named "
        "in its CN alone does not match)"
    ), str(info.value)


@pytest.mark.parametrize(
    ("certificate_for", "ok"),
    [("xn--fa-hia.test", True), ("fass.test", False)],
    ids=["idna2008-a-label", "idna2003-mapping-refused"],
)
async def test_socket_ssl_on_international_name_verifies_its_idna2008_a_label(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, certificate_for: str, ok: bool
) -> None:
    """faß.test is xn--fa-hia.test (IDNA 2008, as curl and browsers); IDNA 2003 (the ssl
    module's own codec) would verify fass.test, a different name."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certificate_for).configure_cert(context)
    names: list[str | None] = []

    def sni(obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = sni  # type: ignore[assignment]

    async def handler(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, context)
        await tls.send(b"hi\r\n")
        await anyio.sleep(0.5)

    async with serve(handler) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=port)
        async with sock:
            if ok:
                await sock.ssl_on(server_hostname="faß.test")
                assert (await sock.recv_parsed()).data == b"hi"
                assert sock.tls is not None
                assert sock.tls.server_hostname == "xn--fa-hia.test"  # the name verified
            else:
                with pytest.raises(HandshakeError):
                    await sock.ssl_on(server_hostname="faß.test")
    assert names == ["xn--fa-hia.test"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("\u2603.test", "not a valid international"),
        ("a..test", "not a valid host name"),
        ("x" * 64 + ".test", "not a valid host name"),
        (".test", "not a valid host name"),
        ("a\x00b.test", "not a valid host name"),
        ("127.0.0.010", "looks numeric"),
        ("0x7f.0.0.1", "looks numeric"),
        ("127.1", "looks numeric"),
        ("2130706433", "looks numeric"),
        ("127.0.0.1.", "an IP address with a final dot"),
        ("::ffff:127.0.0.1.", "an IP address with a final dot"),
        ("[example.test]", "brackets are for IPv6 addresses only"),
        ("[127.0.0.1]", "brackets are for IPv6 addresses only"),
        ("example.test:443", "a colon outside an IPv6 address"),
        ("[::1]:443", "its brackets do not enclose it"),
        # (a certificate's wildcard would match the text "*.example.test")
        ("*.example.test", "not a valid host name"),
        ("user@example.test", "not a valid host name"),
        ("127.0.0.1\u3002", "an IP address with a final dot"),
        ("\uff11\uff12\uff17.0.0.1.", "an IP address with a final dot"),
    ],
    ids=[
        "bad-idna",
        "empty-label",
        "long-label",
        "leading-dot",
        "nul",
        "octal",
        "hex",
        "short",
        "integer",
        "ip-final-dot",
        "mapped-ip-final-dot",
        "bracketed-name",
        "bracketed-ipv4",
        "host-port",
        "bracketed-ipv6-port",
        "wildcard",
        "at-sign",
        "ip-ideographic-final-dot",
        "full-width-ip-final-dot",
    ],
)
async def test_socket_ssl_on_invalid_name_changes_nothing(
    anyio_backend: str, port: ClientPort, name: str, message: str
) -> None:
    async with serve(echo) as number, await Socket.connect("127.0.0.1", number) as sock:
        with pytest.raises(SSLOnOtherError, match=message):
            await sock.ssl_on(server_hostname=name)
        await sock.send_line("still plain")
        assert (await sock.recv_parsed()).data == b"still plain"
        # Asked for TLS at connect: refused before any packet.
        with pytest.raises(SSLOnOtherError, match=message):
            await Socket.connect("127.0.0.1", number, tls=True, server_hostname=name)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("127.0.0.1.", "an IP address with a final dot"),
        ("::1.", "an IP address with a final dot"),
        ("[example.test]", "brackets are for IPv6 addresses only"),
        ("[127.0.0.1]", "brackets are for IPv6 addresses only"),
        ("example.test:443", "a colon outside an IPv6 address"),
        ("[::1", "its brackets do not enclose it"),
        # The same once mapped as the resolver and TLS get it (UTS #46): an ideographic,
        # full-width or half-width full stop, full-width digits (found by a review).
        ("127.0.0.1\u3002", "an IP address with a final dot"),
        ("127.0.0.1\uff0e", "an IP address with a final dot"),
        ("127.0.0.1\uff61", "an IP address with a final dot"),
        ("\uff11\uff12\uff17.0.0.1.", "an IP address with a final dot"),
    ],
)
async def test_socket_connect_refuses_host_forms_that_mean_two_things(
    anyio_backend: str, host: str, message: str
) -> None:
    """Host forms whose address and name part ways, refused before any packet (found by
    a differential check against curl): ``127.0.0.1.`` is a name to the resolver (an
    ``/etc/hosts`` line ``127.0.0.2 127.0.0.1.`` reached 127.0.0.2), while an
    ``allow("127.0.0.1")`` rule passed it and TLS verified it as the address 127.0.0.1;
    brackets around a name were dropped unseen; ``host:port`` failed as an IPv6 address."""
    port = ClientPort("ONLY-LOCAL", rules=[janusnet.allow("127.0.0.1")])
    with pytest.raises(UsageError, match=message) as info:
        await Socket.connect(host, 443, client_port=port, timeout=5)
    assert repr(host) in str(info.value)
    assert port.open_sockets == 0


@pytest.mark.parametrize(
    "name", ["127.0.0.1", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "64:ff9b::192.0.2.1", "::1"]
)
def test_tls_name_for_takes_ip_addresses_ending_in_ipv4(name: str) -> None:
    """Only numeric forms that are no IP address are refused: an IPv6 address may end in
    a dotted IPv4 address and is checked against the IP SANs as it is."""
    assert tls_name_for(name) == name.strip("[]")


async def test_socket_numeric_host_is_not_verified_as_another_address(
    anyio_backend: str, ca: trustme.CA
) -> None:
    """``127.0.0.010`` reaches 127.0.0.8 (the resolver reads a leading 0 as octal) while
    OpenSSL would check a certificate against 127.0.0.10: a certificate for another
    address than the one reached passed. Now refused before the handshake (-149)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.10").configure_cert(context)
    client = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    async with serve(starttls_handler(context), host="127.0.0.8") as number:
        async with await Socket.connect("127.0.0.010", number) as sock:
            assert sock.remote_address == ("127.0.0.8", number)
            await ask_starttls(sock)
            with pytest.raises(SSLOnOtherError, match="looks numeric") as info:
                await sock.ssl_on(ssl_context=client)
            assert info.value.code == ReturnCode.OTHER
            assert not sock.closed and sock.tls is None
        with pytest.raises(SSLOnOtherError, match="looks numeric"):
            await Socket.connect("127.0.0.010", number, tls=True, ssl_context=client)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_socket_ssl_on_resumes_a_session(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, version: str
) -> None:
    """The FTPS pattern: a data connection resumes the control connection's session
    (servers require it: vsftpd's require_ssl_reuse, proftpd's default)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.maximum_version = ssl.TLSVersion[version]
    async with serve(starttls_handler(context)) as number:
        async with await Socket.connect("localhost", number, client_port=port) as control:
            assert control.tls_session is None
            await ask_starttls(control)
            await control.ssl_on()
            early = control.tls_session  # TLS 1.3: before the tickets, nothing to resume
            await control.send_line("PBSZ 0")  # a reply read: TLS 1.3's tickets with it
            assert (await control.recv_parsed()).data == b"PBSZ 0"
            session = control.tls_session
            assert session is not None
            assert control.tls is not None and not control.tls.session_reused
        async with await Socket.connect("localhost", number, client_port=port) as data:
            await ask_starttls(data)
            if version == "TLSv1_3":
                assert early is not None
                with pytest.raises(UsageError, match="not resumable yet"):
                    await data.ssl_on(session=early)
            await data.ssl_on(session=session)
            assert data.tls is not None and data.tls.session_reused
            assert data.tls.version == version.replace("_", ".")
            await data.send_line("STOR")
            assert (await data.recv_parsed()).data == b"STOR"


async def resumable_session(number: int, port: ClientPort) -> ssl.SSLSession:
    """A session of a STARTTLS exchange on ``number``, taken after a reply was read (so
    that a TLS 1.3 server's tickets came)."""
    async with await Socket.connect("localhost", number, client_port=port) as first:
        await ask_starttls(first)
        await first.ssl_on()
        await first.send_line("x")
        await first.recv_parsed()
        session = first.tls_session
    assert session is not None
    return session


async def test_socket_ssl_on_refuses_a_session_it_cannot_offer(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, server_context: ssl.SSLContext
) -> None:
    async with serve(starttls_handler(server_context)) as number:
        session = await resumable_session(number, port)
        other = ssl.create_default_context()
        ca.configure_trust(other)
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await ask_starttls(sock)
            with pytest.raises(UsageError, match=r"session must be an ssl\.SSLSession"):
                await sock.ssl_on(session="resume")  # type: ignore[arg-type]
            # A session resumes only with its own context: refused, nothing sent.
            with pytest.raises(UsageError, match="the context of the connection it came"):
                await sock.ssl_on(ssl_context=other, session=session)
            assert not sock.closed and sock.tls is None
            # A resumed handshake checks no certificate: the session resumes only for the
            # name it was verified for (localhost here), not for another one.
            with pytest.raises(UsageError, match="the session was verified for 'localhost'"):
                await sock.ssl_on(server_hostname="bank.example", session=session)
            assert not sock.closed and sock.tls is None
            await sock.ssl_on(session=session)
            assert sock.tls is not None and sock.tls.session_reused


async def test_socket_resumed_session_must_carry_the_certificate_verified(
    anyio_backend: str, port: ClientPort, server_context: ssl.SSLContext
) -> None:
    """A server picks its session IDs, so another session could carry the ID of one
    janusnet verified: a resumed session whose certificate is not the one verified for
    that ID closes the connection (-111). (The entry is altered here to stand for that.)"""
    async with serve(starttls_handler(server_context)) as number:
        session = await resumable_session(number, port)
        name, _ = janusnet._socket._SESSION_NAMES[session.id]
        janusnet._socket._SESSION_NAMES[session.id] = (name, b"another certificate")
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await ask_starttls(sock)
            with pytest.raises(HandshakeError, match="resumed session's certificate"):
                await sock.ssl_on(session=session)
            assert sock.closed and port.open_sockets == 0


async def test_socket_ssl_on_refuses_a_session_it_did_not_hand_out(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, server_context: ssl.SSLContext
) -> None:
    """A session janusnet did not verify (one from an ``ssl.SSLSocket``) has no known
    name: refused, since resuming it would check none."""
    context = port.ssl_context
    assert context is not None
    async with serve(starttls_handler(server_context)) as number:

        def foreign_session() -> ssl.SSLSession:
            with socket.create_connection(("127.0.0.1", number)) as raw:
                raw.recv(100)
                raw.sendall(b"STARTTLS\r\n")
                raw.recv(100)
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"x\r\n")
                    tls.recv(100)
                    session = tls.session
            assert session is not None
            return session

        session = await anyio.to_thread.run_sync(foreign_session)
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await ask_starttls(sock)
            with pytest.raises(UsageError, match=r"resume a session from Socket\.tls_session"):
                await sock.ssl_on(session=session)
            assert not sock.closed and sock.tls is None


async def test_socket_ssl_on_in_a_cancelled_scope_changes_nothing(
    anyio_backend: str, port: ClientPort
) -> None:
    """A cancelled scope stops ssl_on() before its ClientHello: the socket stays plain
    and open, and the peer saw nothing."""
    async with serve(echo) as number, await Socket.connect("127.0.0.1", number) as sock:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sock.ssl_on(server_hostname="localhost")
        assert scope.cancelled_caught and not sock.closed and sock.tls is None
        await sock.send_line("still plain")  # the echo's first bytes: no ClientHello
        assert (await sock.recv_parsed()).data == b"still plain"


async def test_socket_ssl_on_untrusted_ca_is_handshake_error(
    anyio_backend: str, server_context: ssl.SSLContext
) -> None:
    async def handler(stream: SocketStream) -> None:
        await tls_server_side(stream, server_context)

    async with serve(handler) as number:
        # The default context trusts certifi's bundle only: trustme's CA is unknown there.
        sock = await Socket.connect("localhost", number)
        with pytest.raises(HandshakeError) as info:
            await sock.ssl_on()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        assert sock.closed


async def test_socket_ssl_on_tells_the_server_why_it_refused(
    anyio_backend: str, server_context: ssl.SSLContext
) -> None:
    """A refused certificate: the server gets OpenSSL's alert (unknown_ca), as from a
    blocking ``SSLSocket`` or curl, not an unexpected end of the connection with nothing
    in its log to say why (found by a differential check against curl)."""
    seen: list[BaseException | None] = []
    failed = anyio.Event()

    async def handler(stream: SocketStream) -> None:
        try:
            await tls_server_side(stream, server_context)
        except (ssl.SSLError, anyio.BrokenResourceError) as exc:
            seen.append(exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc)
        finally:
            failed.set()

    async with serve(handler) as number:
        sock = await Socket.connect("localhost", number)
        with pytest.raises(HandshakeError):
            await sock.ssl_on()
        with anyio.fail_after(10):
            await failed.wait()
    assert seen and "ALERT_UNKNOWN_CA" in str(seen[0]), seen


async def test_socket_ssl_on_pending_bytes_refused_then_drained(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context, inject=b"INJECTED")) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await sock.recv_parsed()
            await sock.send_line("STARTTLS")
            assert (await sock.recv_parsed()).data == b"220 go ahead"
            with pytest.raises(PendingDataError) as info:
                await sock.ssl_on()
            assert info.value.code == -112
            assert info.value.pending == len(b"INJECTED")
            assert not sock.closed and sock.tls is None
            assert await sock.recv_exactly(8) == b"INJECTED"
            await sock.ssl_on()
            await sock.send_line("after drain")
            assert (await sock.recv_parsed()).data == b"after drain"


async def test_socket_ssl_on_refuses_bytes_from_a_later_segment(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context, late=b"LATE")) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await sock.recv_parsed()
            await sock.send_line("STARTTLS")
            assert (await sock.recv_parsed()).data == b"220 go ahead"
            await anyio.sleep(0.3)  # the injected segment is now in the kernel buffer
            with pytest.raises(PendingDataError):
                await sock.ssl_on()
            assert await sock.recv(100) == b"LATE"
            await sock.ssl_on()


async def test_socket_ssl_on_twice_is_other_error(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context)) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await ask_starttls(sock)
            await sock.ssl_on()
            with pytest.raises(SSLOnOtherError) as info:
                await sock.ssl_on()
            assert info.value.code == -149
            await sock.send_line("usable")
            assert (await sock.recv_parsed()).data == b"usable"


async def test_socket_ssl_on_closed_is_other_error(anyio_backend: str, port: ClientPort) -> None:
    async with serve(echo) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        await sock.aclose()
        with pytest.raises(SSLOnOtherError):
            await sock.ssl_on()
        await sock.aclose()  # idempotent


@needs_ipv6
async def test_socket_ipv6_loopback_verifies_ip_san(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context), host="::1") as number:
        async with await Socket.connect("::1", number, client_port=port) as sock:
            assert sock.remote_address is not None and sock.remote_address[0] == "::1"
            await ask_starttls(sock)
            await sock.ssl_on()
            assert sock.tls is not None and sock.tls.server_hostname == "::1"


async def test_socket_ip_literal_sends_no_sni(
    anyio_backend: str, ca: trustme.CA, port: ClientPort
) -> None:
    seen: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.sni_callback = lambda obj, name, ctx: seen.append(name)  # type: ignore[assignment]

    async def handler(stream: SocketStream) -> None:
        tls = await tls_server_side(stream, context)
        await echo(tls)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=port, tls=True) as sock:
            assert sock.tls is not None
    assert seen == [None]


async def test_socket_always_port_handshakes_at_connect(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    always = ClientPort("TLS", tls=TLSMode.ALWAYS, ssl_context=context)

    async def handler(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server_context))

    async with serve(handler) as number:
        async with await Socket.connect("localhost", number, client_port=always) as sock:
            assert sock.tls is not None
            # Janus: SSLOn on a port with SSL but no SSLOPT is -110, not "already TLS".
            with pytest.raises(NotSSLPortError) as info:
                await sock.ssl_on()
            assert info.value.code == ReturnCode.NOT_SSL_PORT
            await sock.send(b"x\r\n")
            assert await sock.recv_parsed() == (b"x", b"\r\n", 1)


async def test_socket_connect_tls_to_a_server_that_closes_at_once_is_111(
    anyio_backend: str, ca: trustme.CA
) -> None:
    """``connect(tls=True)`` to a server that accepts and ends its side: -111 every time
    (the handshake meets the end). (A server that closes outright may also reset the
    ClientHello: a reset stays -149.)"""
    context = ssl.create_default_context()
    ca.configure_trust(context)

    async def handler(stream: SocketStream) -> None:
        await stream.send_eof()  # its FIN, but no reset for a ClientHello that follows
        while await stream.receive():
            pass

    async with serve(handler) as number:
        for _ in range(20):
            with anyio.fail_after(10), pytest.raises(janusnet.HandshakeError) as info:
                await Socket.connect("localhost", number, tls=True, ssl_context=context)
            assert info.value.code == ReturnCode.HANDSHAKE_FAILED
            assert "localhost" in str(info.value)


async def test_socket_connect_tls_when_the_servers_fin_came_first_is_111(
    anyio_backend: str, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same server, its FIN already there when ``ssl_on()`` looks (as happy eyeballs'
    hand-off makes it when ``localhost`` is ``::1`` first and nothing listens there):
    still -111, not -149. The connect is slowed down here to make that order certain."""
    from janusnet import _socket

    context = ssl.create_default_context()
    ca.configure_trust(context)
    original = _socket.connect_tcp

    async def slow_connect_tcp(*args: Any, **kwargs: Any) -> Any:
        stream = await original(*args, **kwargs)
        await anyio.sleep(0.2)  # the server's FIN arrives meanwhile
        return stream

    monkeypatch.setattr(_socket, "connect_tcp", slow_connect_tcp)

    async def handler(stream: SocketStream) -> None:
        await stream.send_eof()
        while await stream.receive():
            pass

    async with serve(handler) as number:
        with anyio.fail_after(10), pytest.raises(janusnet.HandshakeError) as info:
            await Socket.connect("127.0.0.1", number, tls=True, ssl_context=context)
    assert "the server closed the connection before the handshake" in str(info.value)


async def test_socket_connect_refused_is_connect_error(anyio_backend: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    number = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(ConnectError) as info:
        await Socket.connect("127.0.0.1", number)
    assert info.value.port == number
    assert isinstance(info.value.__cause__, OSError)


async def test_socket_connect_deadline_covers_handshake(
    anyio_backend: str, port: ClientPort
) -> None:
    async def stall(stream: SocketStream) -> None:
        await anyio.sleep(30)

    async with serve(stall_after_hello) as number:
        with anyio.fail_after(5):
            with pytest.raises(TimeoutError, match=r"0\.3 s deadline expired during the TLS"):
                await Socket.connect("localhost", number, client_port=port, tls=True, timeout=0.3)


async def test_socket_concurrent_receive_is_refused(anyio_backend: str) -> None:
    async def slow(stream: SocketStream) -> None:
        await anyio.sleep(0.3)
        await stream.send(b"late\r\n")

    async with serve(slow) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sock.recv_parsed)
                await anyio.sleep(0.05)
                with pytest.raises(BusyError):
                    await sock.recv_parsed()
                with pytest.raises(BusyError):
                    await sock.recv()


async def test_socket_recv_parsed_across_segments_and_eof(anyio_backend: str) -> None:
    async def trickle(stream: SocketStream) -> None:
        for piece in (b"one\r", b"\ntwo", b"\r", b"\nthr", b"ee"):
            await stream.send(piece)
            await anyio.sleep(0.01)

    async with serve(trickle) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            assert await sock.recv_parsed() == (b"one", b"\r\n", 1)
            assert await sock.recv_parsed() == (b"two", b"\r\n", 1)
            assert await sock.recv_parsed() == (b"three", None, 0)
            assert await sock.recv_parsed() == (b"", None, 0)
            assert await sock.recv() == b""
            assert sock.state is SocketState.FIN_RECEIVED


async def test_recv_parsed_arguments_that_change_between_calls(anyio_backend: str) -> None:
    """Records cut ahead for one call's arguments go only to calls with equal ones: a
    mutated list, a smaller limit, another token set or a bad limit each get their own
    answer, as if nothing had been cut ahead."""
    records = b"".join(b"r%02d|%d\r\n" % (k, k % 10) for k in range(60))

    async def burst(stream: SocketStream) -> None:
        await stream.send(records + b"a\r\nb\r\nc\r\nd\r\ne\r\n")
        await stream.receive()  # stays open until the client is done

    async with serve(burst) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            # Let the burst arrive whole, so the first call cuts records ahead (the
            # answers must be the same if it does not).
            await anyio.sleep(0.1)
            tokens = [b"\r\n"]
            assert await sock.recv_parsed(tokens) == (b"r00|0", b"\r\n", 1)
            assert await sock.recv_parsed([b"\r\n"]) == (b"r01|1", b"\r\n", 1)
            tokens[0] = b"|"  # the caller's list changes: so do the records
            assert await sock.recv_parsed(tokens) == (b"r02", b"|", 1)
            assert await sock.recv_parsed(tokens) == (b"2\r\nr03", b"|", 1)
            assert await sock.recv_parsed("0D0A") == (b"3", b"\r\n", 1)
            assert await sock.recv_parsed(janusnet.TokenSet([b"|", b"\r\n"])) == (
                b"r04",
                b"|",
                1,
            )
            crlf_bar = janusnet.TokenSet([b"|", b"\r\n"])  # equal, not the same object
            assert await sock.recv_parsed(crlf_bar) == (b"4", b"\r\n", 2)
            assert await sock.recv_parsed(max_bytes=100) == (b"r05|5", b"\r\n", 1)
            assert await sock.recv_parsed(max_bytes=2) == (b"r0", None, 0)  # smaller
            assert await sock.recv_parsed(max_bytes=100) == (b"6|6", b"\r\n", 1)
            separator = [bytearray(b"\r\n")]
            assert await sock.recv_parsed(separator) == (b"r07|7", b"\r\n", 1)
            separator[0][:] = b"|"  # a token changed in place
            assert await sock.recv_parsed(separator) == (b"r08", b"|", 1)
            assert await sock.recv_parsed(max_bytes=100) == (b"8", b"\r\n", 1)
            for k in range(9, 60):
                assert await sock.recv_parsed(max_bytes=100) == (
                    b"r%02d|%d" % (k, k % 10),
                    b"\r\n",
                    1,
                )
            assert await sock.recv_parsed(max_bytes=1) == (b"a", b"\r\n", 1)
            for bad in (True, 1.0):
                with pytest.raises(UsageError, match="max_bytes"):
                    await sock.recv_parsed(max_bytes=bad)  # type: ignore[arg-type]
            assert await sock.recv_parsed(max_bytes=1) == (b"b", b"\r\n", 1)
            assert await sock.recv_parsed(tokens=(b"\r\n",)) == (b"c", b"\r\n", 1)
            assert await sock.recv_parsed(tokens=(b"\r\n",)) == (b"d", b"\r\n", 1)
            assert await sock.recv_parsed(tokens=[b"\r\n"]) == (b"e", b"\r\n", 1)


async def test_recv_parsed_one_reply_per_read(anyio_backend: str) -> None:
    """Request/response: when the buffer is empty, one read that holds exactly one
    record is handed out whole (without buffering it). Every other shape of read --
    two records, an unfinished one, a token split across reads, a record over the limit,
    a token seen earlier in the read -- gets the same answers as buffered bytes would."""
    replies = [
        b"one\r\n",
        b"\r\n",
        b"two\r\nthree\r\n",
        b"fou",
        b"r\r\n",
        b"five\r",
        b"\nsix\r\n",
        b"sevenx\r\n",
        b"eight\r\n",
        b"nine|\r\n|",
        b"ten\r\n",
    ]

    async def lockstep(stream: SocketStream) -> None:
        buf = bytearray()
        for reply in replies:
            await read_line(stream, buf)  # one request, then one reply in one write
            await stream.send(reply)
        await stream.receive()

    async with serve(lockstep) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:

            async def ask(*args: Any, **kwargs: Any) -> janusnet.Parsed:
                await sock.send_line(b"next")
                return await sock.recv_parsed(*args, **kwargs)

            assert await ask() == (b"one", b"\r\n", 1)
            assert sock.pending == 0
            assert await ask() == (b"", b"\r\n", 1)
            assert await ask() == (b"two", b"\r\n", 1)
            assert sock.pending == len(b"three\r\n")
            assert await sock.recv_parsed() == (b"three", b"\r\n", 1)
            await sock.send_line(b"next")  # "fou" then, after another request, "r\r\n"
            with anyio.move_on_after(0.2):
                await sock.recv_parsed()
            assert sock.pending == 3
            assert await ask() == (b"four", b"\r\n", 1)
            await sock.send_line(b"next")  # "five\r", then "\nsix\r\n"
            assert await ask() == (b"five", b"\r\n", 1)
            assert await sock.recv_parsed() == (b"six", b"\r\n", 1)
            assert await ask(max_bytes=5) == (b"seven", None, 0)  # over the limit
            assert await sock.recv_parsed() == (b"x", b"\r\n", 1)
            assert await ask(max_bytes=5) == (b"eight", b"\r\n", 1)  # exactly at it
            assert await ask([b"|"]) == (b"nine", b"|", 1)  # the token twice
            assert await sock.recv_parsed([b"|"]) == (b"\r\n", b"|", 1)
            assert await ask(janusnet.TokenSet([b"\r\n"])) == (b"ten", b"\r\n", 1)
            assert sock.pending == 0


@pytest.mark.parametrize("change", ["list", "parse_tokens"])
async def test_recv_parsed_tokens_changed_while_it_waits(anyio_backend: str, change: str) -> None:
    """A call answers for the tokens it started with; the records it cut ahead do not go
    to a later call after the caller's list or ``parse_tokens`` changed meanwhile."""
    go = anyio.Event()

    async def late(stream: SocketStream) -> None:
        await go.wait()
        await stream.send(b"a|b\nc|d\ne|f\n")
        await stream.receive()  # stays open until the client is done

    async with serve(late) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            sock.parse_tokens = [b"\n"]
            tokens = [b"\n"]

            async def change_tokens() -> None:  # runs once recv_parsed waits
                if change == "list":
                    tokens[0] = b"|"
                else:
                    sock.parse_tokens = [b"|"]
                go.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(change_tokens)
                if change == "list":
                    assert await sock.recv_parsed(tokens) == (b"a|b", b"\n", 1)
                    assert await sock.recv_parsed(tokens) == (b"c", b"|", 1)
                else:
                    assert await sock.recv_parsed() == (b"a|b", b"\n", 1)
                    assert await sock.recv_parsed() == (b"c", b"|", 1)


async def test_socket_recv_exactly_and_incomplete(anyio_backend: str) -> None:
    async def short(stream: SocketStream) -> None:
        await stream.send(b"0123456789")

    async with serve(short) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            assert await sock.recv_exactly(4) == b"0123"
            with pytest.raises(IncompleteReadError) as info:
                await sock.recv_exactly(10)
            assert info.value.partial == b"456789"
            assert info.value.expected == 10
            assert not info.value.window_spent
            assert str(info.value) == "connection closed after 6 of 10 bytes"


BIG_COUNT = 1024 * 1024 + 3  # more than a read's worth: recv_exactly keeps the reads apart


def big_pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_recv_exactly_larger_than_a_read(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, tls: bool
) -> None:
    """recv_exactly of 1 MiB in uneven writes: exactly the bytes, in order, whatever was
    buffered before; what follows stays for the next receive. A cancelled one puts back
    what it had read (the next call gets all of it), and the end of the stream gives
    everything that arrived as ``partial``."""
    data = big_pattern(BIG_COUNT)
    rest = big_pattern(300_000)

    async def peer(stream: SocketStream) -> None:
        out: anyio.abc.ByteStream = stream
        buf = bytearray()
        if tls:
            await read_line(stream, buf)
            await stream.send(b"go\r\n")
            out = await tls_server_side(stream, server_context)
        await out.send(b"head\r\n" + data[:10])
        for piece in (data[10:70_000], data[70_000:500_001], data[500_001:]):
            await out.send(piece)
        await out.send(b"tail\r\n" + rest[:100_000])
        await read_line(out, buf)  # the client cancelled a read: now the rest
        await out.send(rest[100_000:200_000])
        await read_line(out, buf)
        await out.send(rest[200_000:])  # then the end of the stream, 100 000 short

    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve(peer) as number:
        async with await Socket.connect("localhost", number) as sock:
            if tls:
                await sock.send_line(b"STARTTLS")
                assert (await sock.recv_parsed()).data == b"go"
                await sock.ssl_on(ssl_context=context)
            assert await sock.recv_parsed() == (b"head", b"\r\n", 1)
            assert await sock.recv_exactly(BIG_COUNT) == data
            assert await sock.recv_parsed() == (b"tail", b"\r\n", 1)
            with anyio.move_on_after(0.5) as scope:
                await sock.recv_exactly(200_000)
            assert scope.cancelled_caught
            assert sock.pending == 100_000  # read, then put back: nothing lost
            await sock.send_line(b"more")
            assert await sock.recv_exactly(200_000) == rest[:200_000]
            await sock.send_line(b"last")
            with pytest.raises(IncompleteReadError) as info:
                await sock.recv_exactly(200_000)
            assert info.value.partial == rest[200_000:]
            assert info.value.expected == 200_000
            assert sock.pending == 0


@pytest.mark.parametrize("read", ["loop", "full-record-then-recv"])
async def test_tls_read_to_the_end_from_a_peer_that_sends_close_notify(
    anyio_backend: str, ca: trustme.CA, server_context: ssl.SSLContext, read: str
) -> None:
    """A peer that ends TLS the standard way (close_notify, then it waits for our close):
    reading to the end returns b"" at once. A receive that drains whole 16 KiB records
    meets the close_notify behind the last one and leaves it for the next receive, which
    must still see it rather than wait on the socket for ever."""
    body = b"b" * (1 << 20) if read == "loop" else b"r" * 16384

    async def peer(stream: SocketStream) -> None:
        buf = bytearray()
        await read_line(stream, buf)
        await stream.send(b"go\r\n")
        tls = await TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
        await read_line(tls, buf)
        await tls.send(body)
        await tls.aclose()  # close_notify; anyio then waits for ours

    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve(peer) as number:
        async with await Socket.connect("localhost", number) as sock:
            await sock.send_line(b"STARTTLS")
            assert (await sock.recv_parsed()).data == b"go"
            await sock.ssl_on(ssl_context=context)
            await sock.send_line(b"send")
            with anyio.fail_after(10):
                if read == "loop":
                    got = bytearray()
                    while data := await sock.recv():
                        got += data
                    assert got == body
                else:
                    await anyio.sleep(0.3)  # the record and close_notify arrive together
                    assert await sock.recv_exactly(len(body)) == body
                    assert await sock.recv() == b""


@pytest.mark.parametrize("call", ["recv", "recv_parsed", "recv_exactly"])
async def test_receive_window_set_while_a_receive_waits(anyio_backend: str, call: str) -> None:
    """Another task sets ``receive_window`` while a receive waits on an empty buffer:
    what arrives then is counted against the window, the bytes past it are held."""
    payload = b"hello\r\n" if call != "recv_exactly" else b"x" * 100_000
    go = anyio.Event()

    async def peer(stream: SocketStream) -> None:
        await go.wait()
        await stream.send(payload)
        await stream.receive()

    async with serve(peer) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            got: list[object] = []

            async def receive() -> None:
                if call == "recv":
                    got.append(await sock.recv())
                elif call == "recv_parsed":
                    got.append(await sock.recv_parsed())
                else:
                    with pytest.raises(IncompleteReadError) as info:
                        await sock.recv_exactly(100_000)
                    got.append(info.value)

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                sock.receive_window = 3  # from another task, while the receive waits
                go.set()
            if call == "recv":
                assert got == [b"hel"]
            elif call == "recv_parsed":
                assert got == [(b"hel", None, 0)]
            else:
                error = got[0]
                assert isinstance(error, IncompleteReadError)
                assert error.partial == b"xxx" and error.window_spent


@pytest.mark.parametrize("count", [50_000, 200_000])
@pytest.mark.parametrize("then", ["more-arrives", "cancelled"])
async def test_receive_window_set_while_recv_exactly_waits_counts_the_buffer(
    anyio_backend: str, count: int, then: str
) -> None:
    """With bytes already buffered, another task sets ``receive_window = 3`` while
    ``recv_exactly`` waits for the rest: the window counts the buffered bytes too (as
    its setter does), for a count above and below a read's worth, whether more bytes
    arrive or the call is cancelled."""
    go = anyio.Event()

    async def peer(stream: SocketStream) -> None:
        await stream.send(b"a" * 10_000)
        await go.wait()
        await stream.send(b"b" * 10_000)
        await stream.receive()

    async with serve(peer) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            assert await sock.recv(100) == b"a" * 100  # the rest of the 10 000 is buffered
            failures: list[IncompleteReadError] = []
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def receive() -> None:
                        with pytest.raises(IncompleteReadError) as info:
                            await sock.recv_exactly(count)
                        failures.append(info.value)

                    tg.start_soon(receive)
                    await anyio.wait_all_tasks_blocked()
                    sock.receive_window = 3
                    if then == "cancelled":
                        tg.cancel_scope.cancel()
                    else:
                        go.set()
            if then == "cancelled":
                assert await sock.recv() == b"aaa"
            else:
                assert failures[0].partial == b"aaa"
                assert failures[0].window_spent
            assert await sock.recv() == b""  # the window is spent


async def test_socket_recv_exactly_says_when_the_window_ended_it(anyio_backend: str) -> None:
    async def talk(stream: SocketStream) -> None:
        await stream.send(b"0123456789")
        await stream.receive()  # stays open until the client is done

    async with serve(talk) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            sock.receive_window = 3
            with pytest.raises(IncompleteReadError) as info:
                await sock.recv_exactly(5)
            assert info.value.partial == b"012"
            assert info.value.window_spent
            assert str(info.value) == "receive window spent after 3 of 5 bytes"
            assert sock.state is SocketState.CONNECTED


async def test_socket_per_call_encoding_and_line_end_are_checked(anyio_backend: str) -> None:
    """A bad codec name is a UsageError (before anything is sent), like the settings; a
    bad line end is refused when assigned, not at the next send_line()."""
    ebcdic = ClientPort("EBCDIC", encoding="cp037")
    async with serve(echo) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=ebcdic) as sock:
            # Codecs that are not text encodings (bytes to bytes, rot13) are refused too:
            # str.encode() would raise a bare LookupError after the checks.
            for codec in ("no-such-codec", "hex", "rot13", "zlib"):
                with pytest.raises(UsageError, match=codec):
                    await sock.send("x", encoding=codec)
                with pytest.raises(UsageError, match=codec):
                    await sock.send_line("x", encoding=codec)
                with pytest.raises(UsageError, match=codec):
                    sock.decode(b"x", encoding=codec)
                with pytest.raises(UsageError, match=codec):
                    sock.encoding = codec
                with pytest.raises(UsageError, match=codec):
                    ClientPort("BAD", encoding=codec)
            with pytest.raises(UsageError, match="error handler"):
                sock.decode(b"x", errors="no-such-handler")
            assert sock.decode(b"\xc1", errors="replace") == "A"  # cp037
            for send in (sock.send, sock.send_line):
                # No euro sign in cp037: a janusnet error (caught with JanusnetError, as
                # the guide says of every error) that is still the codec's own error.
                with pytest.raises(janusnet.EncodeError) as encoding_failed:
                    await send("Total: 5 \u20ac")
                failed = encoding_failed.value
                assert isinstance(failed, UsageError) and isinstance(failed, UnicodeEncodeError)
                assert (failed.encoding, failed.start, failed.end) == ("cp037", 9, 10)
                assert "can't encode character '\\u20ac' in position 9" in str(failed)
                assert isinstance(failed.__cause__, UnicodeEncodeError)
            with pytest.raises(janusnet.EncodeError):
                await sock.send("\u20ac", encoding="ascii")
            for bad in (b"", "\n", 5):
                with pytest.raises(UsageError, match="line_end"):
                    sock.line_end = bad  # type: ignore[assignment]
            assert sock.line_end == b"\r\n"
            sock.line_end = b"\n"
            await sock.send_line("ok", encoding="ascii")
            assert await sock.recv_exactly(3) == b"ok\n"  # nothing else was sent


async def test_socket_send_encodes_str_and_keeps_bytes(anyio_backend: str) -> None:
    ebcdic = ClientPort("EBCDIC", encoding="cp037")

    async def handler(stream: SocketStream) -> None:
        data = b""
        while len(data) < 11:
            data += await stream.receive()
        await stream.send(data)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=ebcdic) as sock:
            await sock.send("CONNECT ")
            await sock.send(b"raw")
            got = await sock.recv_exactly(11)
            assert got == "CONNECT ".encode("cp037") + b"raw"
            assert sock.decode(got[:8]) == "CONNECT "


async def test_socket_send_line_uses_line_end(anyio_backend: str) -> None:
    async with serve(echo) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            sock.line_end = b"\n"
            await sock.send_line("a")
            await sock.send_line("b", line_end=b"|")
            await sock.send_line()
            assert await sock.recv_exactly(5) == b"a\nb|\n"


async def test_socket_send_after_close_is_refused(anyio_backend: str) -> None:
    async with serve(echo) as number:
        sock = await Socket.connect("127.0.0.1", number)
        await sock.aclose()
        with pytest.raises(janusnet.SocketClosedError):
            await sock.send(b"x")
        with pytest.raises(janusnet.SocketClosedError):
            await sock.recv()


async def test_socket_repr_names_port_and_state(anyio_backend: str) -> None:
    async with serve(echo) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=ClientPort("REPR"))
        text = repr(sock)
        assert "'REPR'" in text and "CONNECTED" in text and str(number) in text
        await sock.aclose()
        assert "RESET" in repr(sock)


async def test_socket_ssl_on_accepts_fully_qualified_name_with_final_dot(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(starttls_handler(server_context)) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=port) as sock:
            await ask_starttls(sock)
            await sock.ssl_on(server_hostname="localhost.")
            assert sock.tls is not None
            await sock.send_line("dot")
            assert (await sock.recv_parsed()).data == b"dot"


@pytest.mark.parametrize(
    ("name", "verified"),
    [
        ("localhost.", "localhost"),
        ("localhost\u3002", "localhost"),  # the ideographic full stop maps to a dot (UTS #46)
        ("LOCALHOST", "LOCALHOST"),
        ("localhost..", None),  # an empty label: no such name
        ("localhost...", None),
        ("local..host", None),
    ],
)
async def test_socket_ssl_on_server_hostname_forms(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, name: str, verified: str | None
) -> None:
    """A final dot (one, also the one IDNA mapping makes) is neither sent as SNI nor
    looked for in the certificate; a name with an empty label is refused before any
    handshake byte (-149, socket unchanged), as the ssl module and curl refuse it."""
    seen: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.sni_callback = lambda obj, sni, ctx: seen.append(sni)  # type: ignore[assignment]

    async with serve(starttls_handler(context)) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=port) as sock:
            await ask_starttls(sock)
            if verified is None:
                with pytest.raises(SSLOnOtherError, match="not a valid host name") as info:
                    await sock.ssl_on(server_hostname=name)
                assert info.value.code == ReturnCode.OTHER
                assert not sock.closed and sock.tls is None
                assert seen == []
                return
            await sock.ssl_on(server_hostname=name)
            assert sock.tls is not None and sock.tls.server_hostname == verified
    assert seen == [verified]


async def test_socket_tls_reports_repeated_name_attributes_and_dirname_sans(
    anyio_backend: str, tmp_path: pathlib.Path
) -> None:
    """A directory-issued certificate (OU=Ops, OU=Web, DC=example, DC=com) keeps every
    value, and a DirName SAN reads as a name, not as Python's nested tuples."""
    ca_pem, cert_pem = unusual_certificate(
        names=[("DC", "example"), ("DC", "com"), ("OU", "Ops"), ("OU", "Web"), ("CN", "www")],
        dns_names=["localhost"],
        dir_name="dir",
    )
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem")
    client = ssl.create_default_context(cadata=ca_pem.decode())
    port = ClientPort("DIR", tls=TLSMode.OPTIONAL, ssl_context=client)

    async def handler(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server))

    async with serve(handler) as number:
        async with await Socket.connect("localhost", number, client_port=port, tls=True) as s:
            assert s.tls is not None and s.tls.peer_certificate is not None
            subject = s.tls.peer_certificate.subject
            sans = s.tls.peer_certificate.subject_alt_names
    assert subject["organizationalUnitName"] == "Ops, Web"
    assert subject["domainComponent"] == "example, com"
    assert subject["commonName"] == "www"
    assert sans == (("DNS", "localhost"), ("DirName", "commonName=dir"))


@needs_ipv6
@pytest.mark.parametrize("name", ["::1%lo", "[::1%lo]", "::1%1"])
async def test_socket_ssl_on_ipv6_with_zone_id_is_an_address(
    anyio_backend: str, ca: trustme.CA, port: ClientPort, name: str
) -> None:
    """A zone ID belongs to routing, not to the name: the address is verified against
    the IP SAN and no SNI is sent, as for ``::1`` (it was checked as a DNS name and
    sent as SNI: a hostname mismatch)."""
    seen: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("::1").configure_cert(context)
    context.sni_callback = lambda obj, sni, ctx: seen.append(sni)  # type: ignore[assignment]

    async with serve(starttls_handler(context), host="::1") as number:
        async with await Socket.connect("::1", number, client_port=port) as sock:
            await ask_starttls(sock)
            await sock.ssl_on(server_hostname=name)
            assert sock.tls is not None and sock.tls.server_hostname == "::1"
    assert seen == [None]


async def test_socket_ssl_on_leaves_caller_context_untouched(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    context = port.ssl_context
    assert context is not None
    before = (
        context.options,
        context.verify_mode,
        context.check_hostname,
        context.minimum_version,
        context.maximum_version,
    )
    async with serve(starttls_handler(server_context)) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            await ask_starttls(sock)
            await sock.ssl_on()
    after = (
        context.options,
        context.verify_mode,
        context.check_hostname,
        context.minimum_version,
        context.maximum_version,
    )
    assert after == before


async def test_socket_ssl_on_deadline_closes_the_socket(
    anyio_backend: str, port: ClientPort, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(stall_after_hello) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        start = anyio.current_time()
        with pytest.raises(
            TimeoutError, match=r"TLS handshake with localhost: not done within 0\.3 s"
        ):
            await sock.ssl_on(timeout=0.3)
        assert anyio.current_time() - start < 5
        assert sock.closed
    # Logged as the other handshake failures are (compat callers get only a code).
    assert ("WARNING", "TLS handshake with localhost timed out (0.3 s)") in [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "janusnet"
    ]


async def test_sockets_never_share_received_bytes(anyio_backend: str) -> None:
    """Sockets that have received nothing share one empty buffer; the first byte gets a
    socket its own, and a buffer given back when empty never carries bytes over."""
    from janusnet._socket import _NO_BYTES_YET
    from reliability import ScriptedStream

    tokens = janusnet.ClientPort("SHARE", parse_tokens=[b"\r\n", b"|"])
    first = janusnet.Socket(ScriptedStream([b"one|two\r\nrest"]), client_port=tokens)
    second = janusnet.Socket(ScriptedStream([b"x|"]), client_port=tokens)
    async with first, second:
        assert first.pending == second.pending == 0
        assert await first.recv_parsed() == (b"one", b"|", 2)
        assert second.pending == 0
        assert await second.recv_parsed() == (b"x", b"|", 2)
        second._shed_scanner()  # empty: given back
        first._shed_scanner()  # not empty: kept
        assert await first.recv_parsed() == (b"two", b"\r\n", 1)
        assert await first.recv_parsed() == (b"rest", None, 0)
        assert await second.recv_parsed() == (b"", None, 0)
    assert _NO_BYTES_YET.pending == 0 and _NO_BYTES_YET.ready is None


async def test_socket_error_after_tls13_names_the_alert(
    anyio_backend: str, ca: trustme.CA, port: ClientPort
) -> None:
    """TLS 1.3: a server that wants a client certificate says so only after our handshake
    is done, on the first receive; the error names the alert, not a bare wrapper."""
    import socket
    import threading

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # never a thread blocked in accept() at exit

    def wants_a_certificate() -> None:  # the stdlib server sends its alert before closing
        conn, _ = listener.accept()
        with conn:
            try:
                server_context.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=wants_a_certificate, daemon=True)
    thread.start()
    try:
        number = listener.getsockname()[1]
        sock = await Socket.connect(
            "127.0.0.1", number, client_port=port, tls=True, server_hostname="localhost"
        )
        async with sock:
            with anyio.fail_after(5), pytest.raises(SocketResetError) as info:
                await sock.recv()
    finally:
        thread.join(5)
        listener.close()
    assert "CERTIFICATE_REQUIRED" in str(info.value)


async def test_socket_default_context_ignores_the_common_name(
    anyio_backend: str, tmp_path: pathlib.Path
) -> None:
    """No fallback to the subject CN (RFC 6125 §6.4.4): a SAN-less certificate names no
    host, even when its CN is the host asked for."""
    root_pem, leaf_and_key = unusual_certificate(names=[("CN", "cnonly.test")])
    (tmp_path / "leaf.pem").write_bytes(leaf_and_key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "leaf.pem")
    assert janusnet.default_ssl_context().hostname_checks_common_name is False
    client_context = janusnet.create_ssl_context()  # a fresh one, same settings
    client_context.load_verify_locations(cadata=root_pem.decode())
    port = ClientPort("CN", ssl_context=client_context)

    async def tls_echo(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server_context))

    async with serve(tls_echo) as number:
        with pytest.raises(HandshakeError, match=r"[Hh]ostname mismatch"):
            await Socket.connect(
                "127.0.0.1", number, client_port=port, tls=True, server_hostname="cnonly.test"
            )


async def test_socket_ssl_on_after_the_peer_reset_leaks_nothing(
    anyio_backend: str, port: ClientPort
) -> None:
    """A reset that arrived before ``ssl_on()``: -149, the socket closed, and no
    descriptor left behind (CPython's wrap_socket would strand it if asked to wrap it)."""
    import gc
    import socket
    import struct
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()
    reset = threading.Event()

    def reset_at_once() -> None:
        conn, _ = listener.accept()
        connected.wait(5)  # not before the client's connect() has returned
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST, delivered on loopback before close() returns
        reset.set()

    thread = threading.Thread(target=reset_at_once)
    thread.start()
    try:
        sock = await Socket.connect("127.0.0.1", listener.getsockname()[1], client_port=port)
        connected.set()
        await anyio.to_thread.run_sync(reset.wait, 5.0)
        with pytest.raises(SSLOnOtherError) as info:
            await sock.ssl_on(server_hostname="localhost")
        assert info.value.code == ReturnCode.OTHER and sock.closed
        del info
        gc.collect()  # a stranded SSLSocket would warn here (filterwarnings = error)
    finally:
        thread.join(5)
        listener.close()
    assert port.open_sockets == 0


async def test_socket_ssl_on_after_an_unread_fin_refuses_and_keeps_the_socket(
    anyio_backend: str, port: ClientPort
) -> None:
    """The peer closed before ``ssl_on()`` and nothing has read the FIN yet: -149 before
    any handshake starts, the socket as it was (the FIN is still there to read)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()
    closed = threading.Event()

    def close_at_once() -> None:
        conn, _ = listener.accept()
        connected.wait(5)
        conn.close()  # FIN, delivered on loopback before close() returns
        closed.set()

    thread = threading.Thread(target=close_at_once)
    thread.start()
    try:
        async with await Socket.connect(
            "127.0.0.1", listener.getsockname()[1], client_port=port
        ) as sock:
            connected.set()
            await anyio.to_thread.run_sync(closed.wait, 5.0)
            with pytest.raises(SSLOnOtherError, match="peer has closed") as info:
                await sock.ssl_on(server_hostname="localhost")
            assert info.value.code == ReturnCode.OTHER
            assert not sock.closed and sock.tls is None
            assert await sock.recv() == b""
    finally:
        thread.join(5)
        listener.close()
    assert port.open_sockets == 0


async def test_socket_ssl_on_after_our_own_fin_refuses_and_keeps_the_socket(
    anyio_backend: str, port: ClientPort
) -> None:
    """After ``send_eof()`` a handshake could only be written past our FIN: -149 before
    it starts, the socket unchanged, and the peer's answer to the FIN still readable."""

    async def answer_after_fin(stream: SocketStream) -> None:
        await read_until_eof(stream)
        await stream.send(b"bye after your FIN\r\n")

    async with serve(answer_after_fin) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=port) as sock:
            await sock.send_eof()
            with pytest.raises(SSLOnOtherError, match="sent FIN") as info:
                await sock.ssl_on(server_hostname="localhost")
            assert info.value.code == ReturnCode.OTHER
            assert not sock.closed and sock.tls is None
            assert await sock.recv_parsed() == (b"bye after your FIN", b"\r\n", 1)
            assert await sock.recv() == b""
    assert port.open_sockets == 0


async def test_socket_dropped_without_aclose_gives_its_port_slot_back(anyio_backend: str) -> None:
    """A socket garbage-collected while open warns (ResourceWarning) and releases its
    ``max_sockets`` slot, so a leak in the application cannot lock the port for good."""
    capped = ClientPort("CAPPED", max_sockets=1)
    async with serve(echo) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=capped)
        assert capped.open_sockets == 1
        with pytest.warns(ResourceWarning, match="unclosed janusnet.Socket on client port"):
            del sock  # the last reference: finalized here
        assert capped.open_sockets == 0
        async with await Socket.connect("127.0.0.1", number, client_port=capped) as again:
            await again.send_line("ok")
            assert (await again.recv_parsed()).data == b"ok"


async def test_socket_recv_with_a_huge_limit_reads_what_is_there(anyio_backend: str) -> None:
    """``recv(2**40)`` returns what arrived; it does not try to allocate the limit."""
    async with serve(echo) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            await sock.send(b"small")
            assert await sock.recv(2**40) == b"small"


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "wrapped"])
async def test_socket_reset_stays_a_reset(anyio_backend: str, wrapped: bool) -> None:
    """After a reset every receive says so again: the OS would report end of stream on
    the next read, and a buffered fragment would pass for a complete last record."""
    from loopback import reset_connection

    closed = anyio.Event()

    async def send_then_reset(stream: SocketStream) -> None:
        await stream.send(b"hello\r\npartial")
        await reset_connection(stream)
        closed.set()

    async with serve(send_then_reset) as number:
        if wrapped:
            sock = Socket(await anyio.connect_tcp("127.0.0.1", number))
        else:
            sock = await Socket.connect("127.0.0.1", number)
        async with sock:
            with anyio.fail_after(5):
                await closed.wait()
                # (Linux keeps the bytes queued before the RST readable.)
                assert await sock.recv_parsed() == (b"hello", b"\r\n", 1)
                with pytest.raises(SocketResetError):
                    await sock.recv_parsed()
                with pytest.raises(SocketResetError):
                    await sock.recv_parsed()
                # What was buffered before the reset is not lost, and nothing more comes.
                assert sock.pending == 7
                assert await sock.recv() == b"partial"
                for receive in (sock.recv_parsed, sock.recv, lambda: sock.recv_exactly(1)):
                    with pytest.raises(SocketResetError) as info:
                        await receive()
                    assert info.value.__cause__ is not None
            assert sock.state is janusnet.SocketState.RESET


@pytest.mark.parametrize("stream", [None, "x", 42, b"bytes"], ids=["none", "str", "int", "bytes"])
def test_socket_wrapping_a_non_stream_takes_no_slot(stream: object) -> None:
    one = ClientPort("ONE", max_sockets=1)
    with pytest.raises(UsageError, match="anyio byte stream"):
        Socket(stream, client_port=one)  # type: ignore[arg-type]
    assert one.open_sockets == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_port": "WEBDROPS"},
        {"ssl_context": "ctx", "tls": True},
        {"server_hostname": 5},
        {"timeout": "3"},
        {"timeout": float("nan")},
        {"timeout": -1},
        {"timeout": True},
    ],
    ids=["port-name", "context-str", "hostname-int", "timeout-str", "nan", "negative", "bool"],
)
async def test_socket_connect_refuses_wrong_argument_types(
    anyio_backend: str, kwargs: dict[str, Any]
) -> None:
    accepted: list[int] = []

    async def count(stream: SocketStream) -> None:
        accepted.append(1)

    async with serve(count) as number:
        with pytest.raises(UsageError):
            await Socket.connect("127.0.0.1", number, **kwargs)
    assert accepted == []  # refused before any packet


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssl_context": "x"},
        # A local mistake, refused before any I/O (it was -111 and a closed socket).
        {"ssl_context": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)},
        {"server_hostname": 5},
        {"server_hostname": ""},  # refused as ssl refuses it, not read as "the default"
        {"timeout": "1"},
        {"timeout": -0.5},
    ],
    ids=[
        "context-str",
        "context-server-side",
        "hostname-int",
        "hostname-empty",
        "timeout-str",
        "negative",
    ],
)
async def test_socket_ssl_on_wrong_argument_types_change_nothing(
    anyio_backend: str, kwargs: dict[str, Any]
) -> None:
    async with serve(echo) as number, await Socket.connect("127.0.0.1", number) as sock:
        with pytest.raises(UsageError):
            await sock.ssl_on(**kwargs)
        assert not sock.closed and sock.tls is None
        await sock.send_line("still plain")
        assert (await sock.recv_parsed()).data == b"still plain"


def test_client_port_refuses_a_context_that_is_not_one() -> None:
    with pytest.raises(UsageError, match="ssl_context"):
        ClientPort("BAD", ssl_context="x")  # type: ignore[arg-type]


async def test_socket_tls_close_sends_close_notify(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    """aclose() ends TLS with close_notify (RFC 8446 §6.1): a strict peer (anyio's
    standard-compatible TLSStream) reads a clean end, not a truncation. (janusnet's own
    TLS layer; over anyio's TLSStream, on wrapped streams, anyio closes without one.)"""
    ends: list[str] = []
    done = anyio.Event()

    async def strict_peer(stream: SocketStream) -> None:
        tls = await TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
        try:
            while await tls.receive():
                pass
        except anyio.EndOfStream:
            ends.append("close_notify")
        except anyio.BrokenResourceError as exc:
            ends.append(f"truncated: {exc.__cause__!r}")
        finally:
            await anyio.aclose_forcefully(tls)
            done.set()

    async with serve(strict_peer) as number:
        sock = await Socket.connect("127.0.0.1", number, client_port=port)
        async with sock:
            await sock.ssl_on(server_hostname="localhost")
            await sock.send(b"bye")
        with anyio.fail_after(5):
            await done.wait()
        assert sock.tls is not None and sock.tls.version  # still described after close
    assert ends == ["close_notify"]


async def test_a_send_that_meets_a_ragged_tls_end_says_so(anyio_backend: str) -> None:
    """anyio's TLSStream (the TLS inside an https:// proxy's, or over a stream of the
    caller's) says EndOfStream when OpenSSL's write meets a session the peer ended
    without close_notify; the error says that, not a bare ``EndOfStream()``."""

    class EndedStream(anyio.abc.ByteStream):
        async def receive(self, max_bytes: int = 65536) -> bytes:
            raise anyio.EndOfStream

        async def send(self, item: bytes) -> None:
            raise anyio.EndOfStream

        async def send_eof(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    async with Socket(EndedStream()) as sock:
        with pytest.raises(SocketResetError, match="ended the TLS session") as info:
            await sock.send(b"more")
    assert "EndOfStream()" not in str(info.value)

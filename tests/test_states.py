"""Socket fidelity against a real peer: states (FIN each way, both, reset), the receive
window (RECVLIM), character translation (EBCDIC), and peer certificate details."""

from __future__ import annotations

import datetime as dt
import errno
import ssl
import sys

import anyio
import pytest
import trustme
from anyio.abc import SocketStream

from janusnet import (
    ClientPort,
    Socket,
    SocketClosedError,
    SocketResetError,
    SocketState,
    TLSMode,
    UsageError,
)
from loopback import (
    echo,
    read_line,
    read_until_eof,
    reset_connection,
    serve,
    tls_server_side,
    unusual_certificate,
)

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------- states


async def test_state_fin_sent_then_peer_fin_is_fin_both(anyio_backend: str) -> None:
    async def handler(stream: SocketStream) -> None:
        got = await read_until_eof(stream)  # returns only once our FIN arrived
        await stream.send(b"saw " + got + b"\r\n")

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            await sock.send(b"data")
            assert sock.state is SocketState.CONNECTED
            await sock.send_eof()
            assert sock.state is SocketState.FIN_SENT
            assert await sock.recv_parsed() == (b"saw data", b"\r\n", 1)
            assert sock.state is SocketState.FIN_SENT
            assert await sock.recv() == b""
            assert sock.state is SocketState.FIN_BOTH
            with pytest.raises(SocketClosedError):
                await sock.send(b"after FIN")
        assert sock.state is SocketState.RESET


async def test_state_peer_fin_is_noticed_on_next_receive(anyio_backend: str) -> None:
    received: list[bytes] = []
    done = anyio.Event()

    async def handler(stream: SocketStream) -> None:
        await stream.send(b"hello\r\n")
        await stream.send_eof()
        received.append(await read_until_eof(stream))
        done.set()

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            assert await sock.recv_parsed() == (b"hello", b"\r\n", 1)
            await anyio.sleep(0.1)  # the FIN has arrived, but nobody received it yet
            assert sock.state is SocketState.CONNECTED
            assert await sock.recv() == b""
            assert sock.state is SocketState.FIN_RECEIVED
            await sock.send_line("half-closed, still sending")  # FINR may still send
            await sock.send_eof()
            assert sock.state is SocketState.FIN_BOTH
            with anyio.fail_after(5):
                await done.wait()
    assert received == [b"half-closed, still sending\r\n"]


async def test_state_peer_reset_is_reset(anyio_backend: str) -> None:
    async def handler(stream: SocketStream) -> None:
        assert await read_line(stream, bytearray()) == b"reset me"
        await reset_connection(stream)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            await sock.send_line("reset me")
            with anyio.fail_after(5), pytest.raises(SocketResetError) as info:
                await sock.recv()
            # The OS's error itself (as documented), not anyio's wrapper around it.
            assert isinstance(info.value.__cause__, ConnectionResetError)
            assert info.value.__cause__.errno == errno.ECONNRESET
            assert sock.state is SocketState.RESET
            assert not sock.closed  # RESET but not closed: the Janus "dead socket"
        assert sock.closed and sock.state is SocketState.RESET


async def test_state_reset_already_arrived_is_seen_by_recv_parsed(anyio_backend: str) -> None:
    async def handler(stream: SocketStream) -> None:
        await read_line(stream, bytearray())
        await reset_connection(stream)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            await sock.send_line("go")
            await anyio.sleep(0.1)
            with pytest.raises(SocketResetError):
                await sock.recv_parsed()
            assert sock.state is SocketState.RESET


# ---------------------------------------------------------------------- receive window

PAYLOAD = b"line1\r\nline2\r\nABCDEFGHIJ-rest-of-stream\r\n"


@pytest.mark.parametrize("segments", [1, len(PAYLOAD)], ids=["one-write", "byte-by-byte"])
async def test_receive_window_stops_mixed_receives_at_exactly_n(
    anyio_backend: str, segments: int
) -> None:
    async def handler(stream: SocketStream) -> None:
        size = -(-len(PAYLOAD) // segments)
        for i in range(0, len(PAYLOAD), size):
            await stream.send(PAYLOAD[i : i + size])
            if segments > 1:
                await anyio.sleep(0.001)
        await read_until_eof(stream)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            sock.receive_window = 18  # "line1\r\n" + "line" + "2\r\n" + "ABCD"
            assert sock.receive_window == 18
            assert await sock.recv_parsed() == (b"line1", b"\r\n", 1)  # token counts
            assert sock.receive_window == 11
            assert await sock.recv_exactly(4) == b"line"
            assert await sock.recv_parsed() == (b"2", b"\r\n", 1)
            got = b""
            while chunk := await sock.recv(100):
                got += chunk
            assert got == b"ABCD"
            assert sock.receive_window == 0
            assert await sock.recv_parsed() == (b"", None, 0)  # as at end of stream
            assert sock.state is SocketState.CONNECTED  # a spent window is not a FIN
            sock.receive_window = None  # lifting it loses nothing
            assert await sock.recv_parsed() == (b"EFGHIJ-rest-of-stream", b"\r\n", 1)


async def test_receive_window_ending_inside_a_token_returns_no_token(anyio_backend: str) -> None:
    async def handler(stream: SocketStream) -> None:
        await stream.send(b"line1\r\nnext\r\n")
        await read_until_eof(stream)

    async with serve(handler) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            sock.receive_window = 6  # ends between CR and LF
            assert await sock.recv_parsed() == (b"line1\r", None, 0)
            sock.receive_window = 100
            assert await sock.recv_parsed() == (b"\nnext", b"\r\n", 1)
            assert sock.receive_window == 100 - 7


async def test_receive_window_rejects_negative(anyio_backend: str) -> None:
    async with serve(echo) as number:
        async with await Socket.connect("127.0.0.1", number) as sock:
            with pytest.raises(UsageError):
                sock.receive_window = -1


# ---------------------------------------------------------------------- translation

CONNECT_LINE = "CONNECT example.com:443 HTTP/1.0"


async def test_cp037_connect_line_round_trip(anyio_backend: str) -> None:
    ebcdic = ClientPort("EBCDIC", encoding="cp037")
    checked: list[bytes] = []

    async def ebcdic_proxy(stream: SocketStream) -> None:
        buf = bytearray()
        line = await read_line(stream, buf)  # the line end is raw CR LF, untranslated
        checked.append(line)
        assert line[:8] == bytes.fromhex("C3D6D5D5C5C3E340")  # "CONNECT " in EBCDIC
        assert line == CONNECT_LINE.encode("cp037")
        assert await read_line(stream, buf) == b""
        utf8 = await read_line(stream, buf)
        assert utf8 == "ünïcode".encode()
        await stream.send("HTTP/1.0 200 Connection established".encode("cp037") + b"\r\n\r\n")

    async with serve(ebcdic_proxy) as number:
        async with await Socket.connect("127.0.0.1", number, client_port=ebcdic) as sock:
            await sock.send_line(CONNECT_LINE)
            await sock.send_line()
            await sock.send_line("ünïcode", encoding="utf-8")  # per-call override
            status = await sock.recv_parsed()  # tokens are raw bytes too
            assert status.index == 1
            assert sock.decode(status.data).split()[1] == "200"
            assert b"HTTP" not in status.data  # the peer really spoke EBCDIC
            assert await sock.recv_parsed() == (b"", b"\r\n", 1)
    assert checked == [CONNECT_LINE.encode("cp037")]


# ---------------------------------------------------------------------- certificate details


def _leaf_with_locality(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose leaf (signed by ``ca``) has CN, O, OU and L."""
    _, leaf_and_key = unusual_certificate(
        names=[
            ("CN", "localhost"),
            ("O", "Rocket Test"),
            ("OU", "Janus Sockets"),
            ("L", "Waltham"),
        ],
        dns_names=["localhost"],
        issuer=ca,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with trustme.Blob(leaf_and_key).tempfile() as path:
        context.load_cert_chain(path)
    return context


@pytest.mark.parametrize("leaf", ["trustme", "with-locality"])
async def test_tls_peer_certificate_subject_and_issuer_fields(
    anyio_backend: str, leaf: str
) -> None:
    ca = trustme.CA(organization_name="Janus CA Org", organization_unit_name="Janus CA Unit")
    if leaf == "trustme":
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(
            "localhost",
            common_name="localhost",
            organization_name="janusnet org",
            organization_unit_name="janusnet unit",
        ).configure_cert(server)
        expected = {
            "commonName": "localhost",
            "organizationName": "janusnet org",
            "organizationalUnitName": "janusnet unit",
        }
    else:
        server = _leaf_with_locality(ca)
        expected = {
            "commonName": "localhost",
            "organizationName": "Rocket Test",
            "organizationalUnitName": "Janus Sockets",
            "localityName": "Waltham",
        }
    client = ssl.create_default_context()
    ca.configure_trust(client)
    port = ClientPort("CERTS", tls=TLSMode.ALWAYS, ssl_context=client)

    async def handler(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server))

    async with serve(handler) as number:
        async with await Socket.connect("localhost", number, client_port=port) as sock:
            assert sock.tls is not None
            cert = sock.tls.peer_certificate
            assert cert is not None
            assert {k: cert.subject.get(k) for k in expected} == expected
            assert cert.issuer["organizationName"] == "Janus CA Org"
            assert cert.issuer["organizationalUnitName"] == "Janus CA Unit"
            assert cert.not_before is not None and cert.not_after is not None
            assert cert.not_before < dt.datetime.now(dt.timezone.utc) < cert.not_after
            if sys.version_info >= (3, 13):  # get_verified_chain(): leaf, then the CA
                assert sock.tls.chain[0].subject == cert.subject
                assert sock.tls.chain[-1].subject["organizationName"] == "Janus CA Org"
            else:
                assert sock.tls.chain == (cert,)


async def test_tls_peer_certificate_der_is_the_certificate_served(anyio_backend: str) -> None:
    """``CertInfo.der`` is the leaf's DER (what pinning hashes), from the live session,
    from the chain (3.13+) and from the snapshot after close; never in ``repr``."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server)
    served = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    client = ssl.create_default_context()
    ca.configure_trust(client)
    port = ClientPort("DER", tls=TLSMode.ALWAYS, ssl_context=client)

    async def handler(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server))

    async with serve(handler) as number:
        sock = await Socket.connect("localhost", number, client_port=port)
        async with sock:
            assert sock.tls is not None and sock.tls.peer_certificate is not None
            assert sock.tls.peer_certificate.der == served
            assert sock.tls.chain[0].der == served
            if sys.version_info >= (3, 13):
                assert sock.tls.chain[-1].der == ssl.PEM_cert_to_DER_cert(
                    ca.cert_pem.bytes().decode()
                )
            assert served.hex() not in repr(sock.tls) and "der=" not in repr(sock.tls)
        # A socket closed before anyone read sock.tls answers from its snapshot.
        sock = await Socket.connect("localhost", number, client_port=port)
        await sock.aclose()
        assert sock.tls is not None and sock.tls.peer_certificate is not None
        assert sock.tls.peer_certificate.der == served


def test_tls_chain_certificates_as_bytes_or_certificate_objects() -> None:
    """``get_verified_chain()`` gives DER bytes through ``ssl`` (Python 3.13+) and
    ``Certificate`` objects through ``_ssl``: both describe the chain; anything else is a
    ValueError, which ``sock.tls`` turns into "just the leaf" (an AttributeError escaped
    from ``sock.tls`` on every verified connection under 3.13)."""
    from janusnet._tls import _cert_from_der, _der

    ca = trustme.CA()
    der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())

    class CertificateObject:
        def public_bytes(self, encoding: int) -> bytes:
            assert encoding == ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
            return der

    assert _der(der) == der
    assert _der(CertificateObject()) == der
    assert _cert_from_der(_der(der)).subject["organizationName"].startswith("trustme")
    assert _cert_from_der(der).der == der
    with pytest.raises(ValueError, match="not a certificate"):
        _der("PEM text")

"""Loopback servers for the socket tests, run on the test's own event loop (anyio)."""

from __future__ import annotations

import importlib.util
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import anyio
import pytest
import trustme
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSStream

Handler = Callable[[SocketStream], Awaitable[None]]

#: An ``anyio_backend`` value: a name, or a name and its options.
Backend = str | tuple[str, dict[str, bool]]

#: anyio backends for the modules that drive janusnet's own sockets (their waits and
#: cancellation): asyncio, trio, and asyncio on uvloop where it is installed (uvloop runs
#: I/O callbacks before those already queued, an order the stdlib loop never shows).
BACKENDS_WITH_UVLOOP = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param("trio", id="trio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="uvloop",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
        ),
    ),
]


def backend_label(anyio_backend: Backend) -> str:
    """``"asyncio"``, ``"trio"`` or ``"uvloop"``, for any ``anyio_backend`` value."""
    if isinstance(anyio_backend, str):
        return anyio_backend
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else name


@asynccontextmanager
async def serve(handler: Handler, *, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve ``handler`` on a free loopback port; yields the port. Each connection is
    closed after its handler returns; everything is cancelled on exit."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)

    async def wrapper(stream: SocketStream) -> None:
        async with stream:
            try:
                await handler(stream)
            except (anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError, OSError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, wrapper)
        yield int(listener.extra(SocketAttribute.local_port))
        tg.cancel_scope.cancel()


async def read_line(stream: anyio.abc.ByteReceiveStream, buf: bytearray) -> bytes:
    """Read one CRLF line from ``stream`` using ``buf`` as carry-over."""
    while b"\r\n" not in buf:
        buf += await stream.receive()
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def bio_handshake(
    conn: socket.socket,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    flush: bool = True,
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLS handshake over memory BIOs on a blocking socket, so a scripted peer controls
    every record after it: ``(tls, incoming, outgoing)``. Server side unless
    ``server_hostname`` is given; ``flush=False`` leaves the last flight in ``outgoing``
    (to send it together with what follows)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if server_hostname is None:
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
    else:
        tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            conn.sendall(outgoing.read())
            incoming.write(conn.recv(65536))
    if flush:
        conn.sendall(outgoing.read())
    return tls, incoming, outgoing


def unusual_certificate(
    *,
    names: Sequence[tuple[str, str]],
    dns_names: Sequence[str] = (),
    dir_name: str = "",
    issuer: trustme.CA | None = None,
    lax_ca: bool = False,
) -> tuple[bytes, bytes]:
    """``(ca_pem, cert_and_key_pem)``: a certificate trustme does not issue: subject
    attributes in order (``CN``, ``O``, ``OU``, ``L``, ``DC``; repeats allowed, e.g.
    ``[("OU", "Ops"), ("OU", "Web"), ("CN", "www")]``), DNS SANs (none: no SAN extension
    at all, a CN-only certificate) and a ``DirName`` SAN with that CN. Signed by
    ``issuer``, or by a throw-away CA of its own. It has what Python 3.13's strict
    verification (``VERIFY_X509_STRICT``) asks of a chain, so that any fault left is
    the one meant; but with ``lax_ca``, the throw-away CA's basicConstraints is not
    marked critical (RFC 5280 says it must be; private CAs often leave it so)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPrivateKeyTypes,
    )
    from cryptography.x509.oid import NameOID

    oids = {
        "CN": NameOID.COMMON_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "L": NameOID.LOCALITY_NAME,
        "DC": NameOID.DOMAIN_COMPONENT,
    }
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM

    def build(
        subject: x509.Name,
        issuer_name: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        sign: CertificateIssuerPrivateKeyTypes,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=None), critical=not (ca and lax_ca)
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(sign.public_key()), False
            )
        )
        if ca:
            usage = dict.fromkeys(
                (
                    "digital_signature",
                    "content_commitment",
                    "key_encipherment",
                    "data_encipherment",
                    "key_agreement",
                    "encipher_only",
                    "decipher_only",
                ),
                False,
            )
            builder = builder.add_extension(
                x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True
            )
        general: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        if dir_name:
            dn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dir_name)])
            general.append(x509.DirectoryName(dn))
        if general and not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(general), False)
        return builder.sign(sign, hashes.SHA256())

    if issuer is None:
        ca_key: CertificateIssuerPrivateKeyTypes = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "janusnet test CA")])
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_pem = build(ca_name, ca_name, ca_key, ca_key, True).public_bytes(pem)
    else:
        ca_pem = issuer.cert_pem.bytes()
        ca_name = x509.load_pem_x509_certificate(ca_pem).subject
        loaded = serialization.load_pem_private_key(issuer.private_key_pem.bytes(), None)
        ca_key = loaded  # type: ignore[assignment]  # a CA's key signs certificates
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(oids[kind], value) for kind, value in names])
    cert = build(subject, ca_name, key, ca_key, False)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_pem, cert.public_bytes(pem) + key_pem


async def tls_server_side(stream: SocketStream, context: ssl.SSLContext) -> TLSStream:
    return await TLSStream.wrap(
        stream, server_side=True, ssl_context=context, standard_compatible=False
    )


async def echo(stream: anyio.abc.ByteStream) -> None:
    try:
        while True:
            await stream.send(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass


async def reset_connection(stream: SocketStream) -> None:
    """Close ``stream`` with RST instead of FIN (SO_LINGER on, timeout 0).

    On asyncio, anyio before 4.16 half-closes the transport (FIN) before closing it, so
    the peer could read a clean end before the reset: the transport is aborted instead.
    """
    import socket
    import struct

    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = getattr(stream, "_transport", None)  # anyio's asyncio SocketStream
    if transport is not None:
        transport.abort()
    await stream.aclose()


async def read_until_eof(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """Everything ``stream`` sends until its FIN."""
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


def has_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (containers often have no IPv6 loopback)."""
    import socket

    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Skips a test that binds or reaches ``::1`` where there is none (IPv6 disabled).
needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


async def stall_after_hello(stream: anyio.abc.ByteReceiveStream) -> None:
    """A peer that reads the ClientHello and never answers (a handshake that hangs)."""
    await stream.receive()
    await anyio.sleep(30)


@asynccontextmanager
async def unanswering_listener(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """A listener whose accept queue is full, so a further SYN gets no answer and a
    connect to it hangs; yields its port."""
    full = socket.socket()
    full.bind((host, port))
    full.listen(0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        await anyio.sleep(0.1)
        yield int(full.getsockname()[1])
    finally:
        for filler in fillers:
            filler.close()
        full.close()


@contextmanager
def cycles_left(watched: set[str]) -> Iterator[list[str]]:
    """The collector off inside the block; then the list holds the names of the watched
    objects it would have had to free (cycles), one per object."""
    import gc

    found: list[str] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
    finally:
        gc.set_debug(0)
        gc.enable()
    found.extend(type(o).__name__ for o in gc.garbage if type(o).__name__ in watched)
    gc.garbage.clear()

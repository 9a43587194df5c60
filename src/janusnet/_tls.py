"""TLS defaults and the description of a negotiated TLS session.

The default context trusts certifi's CA bundle (updated independently of the OS, the way
httpx does), refuses anything older than TLS 1.2 and checks host names. It is built once
and shared: an ``SSLContext`` is safe to share between connections, loading the bundle
costs milliseconds, and janusnet never mutates a context, its own or a caller's.
"""

from __future__ import annotations

import datetime as _dt
import os
import ssl
import threading
import weakref
from dataclasses import dataclass, field
from typing import Final

import certifi

from ._exceptions import SSLOnOtherError, UsageError, printable

__all__ = [
    "CertInfo",
    "TLSInfo",
    "create_ssl_context",
    "default_context_for",
    "default_ssl_context",
    "env_trust_hint",
    "env_trust_variable",
    "name_hint",
    "note_peer_names",
    "strict_hint",
]


_default_lock = threading.Lock()  # event loops in several threads may ask at once
_default_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The shared client context: certifi's CA bundle, TLS >= 1.2, host names checked
    against subjectAltName only (no fallback to the subject's common name).

    Built on first use, once per process (threads that ask at once get the same one).

    Returns:
        A verified client ``SSLContext``. Treat it as read-only: it is shared.

    Raises:
        OSError: certifi's bundle cannot be read (no free file descriptor, a broken
            installation); the next call tries again.
    """
    global _default_context
    context = _default_context
    if context is None:
        with _default_lock:
            if _default_context is None:
                _default_context = create_ssl_context()
            context = _default_context
    return context


def default_context_for(what: str) -> ssl.SSLContext:
    """:func:`default_ssl_context` for ``what`` (``"ssl_on"``, ``"TLS to proxy p"``).

    Raises:
        SSLOnOtherError: the bundle cannot be read (-149; nothing was sent).
    """
    try:
        return default_ssl_context()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        try:
            bundle = f"certifi's {certifi.where()}"
        except OSError:  # finding it can need a descriptor too (an import, the first time)
            bundle = "certifi's"
        raise SSLOnOtherError(
            f"{what}: cannot load the default CA bundle ({bundle}): {reason} (nothing was sent)"
        ) from exc


#: Variables other tools read for the CAs to trust; janusnet does not (its default is
#: certifi's bundle), so a verification failure while one is set says so.
CA_VARIABLES: Final = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

#: OpenSSL's verify codes for "no trusted CA for this chain" (a name mismatch, an
#: expired certificate and the like are not cured by another bundle).
_UNTRUSTED_CHAIN: Final = frozenset({2, 18, 19, 20, 21})

#: OpenSSL's verify codes for the RFC 5280 rules it checks only with
#: ``VERIFY_X509_STRICT`` (x509_vfy.h of OpenSSL 3: a CA's basicConstraints not
#: critical, a key identifier missing, an empty subject with its SAN not critical...).
_STRICT_ONLY: Final = frozenset(range(80, 95))


#: Contexts :func:`create_ssl_context` made on certifi's bundle (the default one too), with
#: the number of CAs they held then: one that has been given more since is not "certifi
#: only" any more.
_CERTIFI_ONLY: Final[weakref.WeakKeyDictionary[ssl.SSLContext, int]] = weakref.WeakKeyDictionary()


def create_ssl_context(
    cafile: str | os.PathLike[str] | None = None,
    *,
    capath: str | os.PathLike[str] | None = None,
    cadata: str | bytes | None = None,
) -> ssl.SSLContext:
    """A new client context with the default context's policy, yours to change.

    The policy is :func:`default_ssl_context`'s: certificates verified, TLS >= 1.2, host
    names checked against subjectAltName only. It trusts the CAs given (any of the
    three, as ``ssl.create_default_context`` takes them), else certifi's bundle. Unlike
    the shared default context it is a fresh one per call, so it can take a client
    certificate (``load_cert_chain``, for servers that ask for one: mutual TLS), ALPN
    protocols or ciphers. janusnet never reads ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``
    by itself; ``create_ssl_context(os.environ["SSL_CERT_FILE"])`` trusts that bundle.

    Args:
        cafile: a PEM file of CA certificates to trust.
        capath: a directory of CA certificates in OpenSSL's hashed layout
            (``openssl rehash``), or several joined with ``os.pathsep`` as in
            ``SSL_CERT_DIR``; its files are read when a handshake needs them.
        cadata: CA certificates as PEM text or DER bytes.

    Returns:
        A verified client ``SSLContext``.

    Raises:
        UsageError: an empty ``cafile``, ``capath`` or ``cadata`` (``None`` means
            certifi's bundle; ``ssl`` would take an empty one for the OS store, which
            ``SSL_CERT_FILE`` redirects).
        FileNotFoundError: ``cafile`` does not exist, or no entry of ``capath`` does.
        NotADirectoryError: no entry of ``capath`` is a directory.
        OSError: ``cafile`` cannot be read.
        ssl.SSLError: ``cafile`` or ``cadata`` holds no certificate, or a broken one.
    """
    for name, value in (("cafile", cafile), ("capath", capath), ("cadata", cadata)):
        if (
            value is not None
            and len(value if isinstance(value, (str, bytes)) else os.fspath(value)) == 0
        ):
            # ssl.create_default_context() would take it for "none given" and load the
            # OS store, which SSL_CERT_FILE redirects: never what an empty value meant.
            raise UsageError(f"{name} is empty (None: certifi's bundle)")
    if capath is not None:
        _check_capath(os.fsdecode(capath))
    certifi_only = cafile is None and capath is None and cadata is None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=certifi.where() if certifi_only else cafile,
        capath=capath,
        cadata=cadata,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Names are matched against subjectAltName only, never the subject's CN (RFC 6125
    # §6.4.4; urllib3 2 and browsers dropped the fallback too).
    context.hostname_checks_common_name = False
    if certifi_only:
        _CERTIFI_ONLY[context] = context.cert_store_stats()["x509_ca"]
    return context


def _check_capath(capath: str) -> None:
    """Refuse a ``capath`` in which OpenSSL could find nothing. It reads the directory
    only when a handshake looks a CA up, and then merely finds none; like OpenSSL, take a
    list joined with ``os.pathsep`` (``SSL_CERT_DIR`` often is one), of which at least
    one must be a directory.

    Raises:
        FileNotFoundError: no entry exists.
        NotADirectoryError: an entry exists but none is a directory.
    """
    entries = [entry for entry in capath.split(os.pathsep) if entry]
    if any(os.path.isdir(entry) for entry in entries):
        return
    if any(os.path.exists(entry) for entry in entries):
        raise NotADirectoryError(f"capath {capath!r} is not a directory")
    raise FileNotFoundError(f"capath {capath!r} does not exist")


def env_trust_variable(exc: BaseException | None, context: ssl.SSLContext | None) -> str | None:
    """The CA variable (``SSL_CERT_FILE``...) set in the environment when ``exc`` is a
    verification failure for want of a trusted CA on a context trusting certifi's bundle
    only; ``None`` otherwise."""
    if getattr(exc, "verify_code", None) not in _UNTRUSTED_CHAIN or context is None:
        return None
    held = _CERTIFI_ONLY.get(context)
    if held is None or context.cert_store_stats()["x509_ca"] != held:
        return None  # not certifi's alone, or given more CAs since
    return next((name for name in CA_VARIABLES if os.environ.get(name)), None)


#: OpenSSL's verify code for a certificate whose names do not include the host's.
_HOSTNAME_MISMATCH: Final = 62


#: The attribute on a host name mismatch's error that keeps what the certificate names.
_PEER_NAMES: Final = "janusnet_peer_names"
#: How many of the names a message shows.
_NAMES_SHOWN: Final = 5


def note_peer_names(exc: ssl.SSLError, tls: ssl.SSLObject) -> None:
    """Keep on a host name mismatch's ``exc`` the names the peer's certificate gives
    (its subjectAltName's DNS names and addresses, and its CN), so the error can say
    whom the certificate is for, as curl does.

    The certificate is read from the chain the peer sent, unverified (only to say what
    it names), through the ``ssl`` module's private ``get_unverified_chain`` (Python
    3.10+): where that is missing or fails, the error gives the general rule instead.
    """
    if getattr(exc, "verify_code", None) != _HOSTNAME_MISMATCH:
        return
    try:
        info = getattr(tls, _PRIVATE_OBJECT).get_unverified_chain()[0].get_info()
        alt_names = tuple(
            str(value)
            for kind, value in info.get("subjectAltName", ())
            if kind in ("DNS", "IP Address")
        )
        common_names = tuple(
            str(value)
            for part in info.get("subject", ())
            for key, value in part
            if key == "commonName"
        )
    except Exception:  # a private API: anything it does means "not known"
        return
    setattr(exc, _PEER_NAMES, (alt_names, common_names))


_PRIVATE_OBJECT: Final = "_sslobj"


def name_hint(exc: BaseException | None, context: ssl.SSLContext | None) -> str:
    """A sentence for a host name mismatch: whom the certificate is for, when
    :func:`note_peer_names` read it, and, on a context that checks subjectAltName only
    (janusnet's policy), that its CN does not count: a certificate whose common name is
    the host, with no DNS name in its subjectAltName, fails there though curl and older
    clients take it (``""`` otherwise)."""
    if getattr(exc, "verify_code", None) != _HOSTNAME_MISMATCH or context is None:
        return ""
    names = getattr(exc, _PEER_NAMES, None)
    if names is None:
        if context.hostname_checks_common_name:
            return ""
        return (
            " (names are checked against the certificate's subjectAltName only: "
            "a host named in its CN alone does not match)"
        )
    alt_names, common_names = names
    if alt_names:
        shown = ", ".join(repr(printable(name, 80)) for name in alt_names[:_NAMES_SHOWN])
        more = len(alt_names) - _NAMES_SHOWN
        hint = f"the certificate is for {shown}" + (f" and {more} more" if more > 0 else "")
    else:
        hint = "the certificate names no host in its subjectAltName"
    uncounted = [name for name in common_names if name not in alt_names]
    if uncounted and not context.hostname_checks_common_name:
        hint += (
            f"; its CN {printable(uncounted[0], 80)!r} does not count: names are checked "
            "against the subjectAltName only"
        )
    return f" ({hint})"


def strict_hint(exc: BaseException | None, context: ssl.SSLContext | None) -> str:
    """A sentence for a verification failure that only strict checking raises, on a
    context that checks strictly: Python 3.13 made that its default (janusnet's default
    context takes Python's), and private or TLS-inspection CAs often break one of those
    rules, so a chain that verifies on Python 3.12 fails on 3.13 (``""`` otherwise)."""
    if getattr(exc, "verify_code", None) not in _STRICT_ONLY or context is None:
        return ""
    if not context.verify_flags & ssl.VERIFY_X509_STRICT:
        return ""
    return (
        " (a rule of RFC 5280 that this context checks with ssl.VERIFY_X509_STRICT, "
        "Python's default from 3.13; private and TLS-inspection CAs often break it. Fix "
        "the CA, or accept it on a context of your own: context = "
        "janusnet.create_ssl_context(cafile); context.verify_flags &= "
        "~ssl.VERIFY_X509_STRICT)"
    )


def env_trust_hint(exc: BaseException | None, context: ssl.SSLContext | None) -> str:
    """A sentence for a verification failure on certifi's bundle while the environment
    names a CA bundle janusnet does not read (``""`` otherwise)."""
    named = env_trust_variable(exc, context)
    if named is None:
        return ""
    where = f"os.environ[{named!r}]"
    if named == "SSL_CERT_DIR":
        where = f"capath={where}"
    return (
        f" ({named} is set, but janusnet reads no such variable: this context trusts "
        f"certifi's bundle only; if the CA is in that one, pass "
        f"janusnet.create_ssl_context({where}))"
    )


def _name_fields(rdns: object) -> dict[str, str]:
    """Flatten ``getpeercert()``'s subject/issuer tuples into ``{"commonName": ...}``.

    An attribute that occurs more than once (``OU=Ops, OU=Web``, ``DC=example, DC=com``
    in directory-issued certificates) keeps every value, joined with ``", "`` in the
    certificate's order.
    """
    fields: dict[str, str] = {}
    if isinstance(rdns, tuple):
        for rdn in rdns:
            for key, value in rdn:
                name = str(key)
                fields[name] = f"{fields[name]}, {value}" if name in fields else str(value)
    return fields


def _san_value(kind: object, value: object) -> str:
    """A subjectAltName value as text: a ``DirName`` (a whole distinguished name, which
    ``getpeercert()`` gives as nested tuples) as ``commonName=dir, organizationName=x``."""
    if kind == "DirName" and isinstance(value, tuple):
        return ", ".join(
            f"{key}={item}" for rdn in value if isinstance(rdn, tuple) for key, item in rdn
        )
    return str(value)


@dataclass(frozen=True)
class CertInfo:
    """What janusnet reports about a certificate (the Janus ``CertInfo`` spirit).

    Attributes:
        subject: subject fields by OpenSSL long name (``commonName``, ``organizationName``,
            ``organizationalUnitName``, ``localityName``, ...); a field that occurs more
            than once has its values joined with ``", "``, in certificate order.
        issuer: issuer fields, same keys.
        subject_alt_names: ``(type, value)`` pairs, e.g. ``("DNS", "localhost")``; a
            ``DirName`` value reads ``commonName=x, organizationName=y``.
        not_before: start of validity (UTC), when known.
        not_after: end of validity (UTC), when known.
        serial_number: hex serial, when known.
        der: the certificate itself (DER), ``b""`` when not known: to pin it
            (``hashlib.sha256(der).hexdigest()``) or to read what the fields above leave
            out (``cryptography.x509.load_der_x509_certificate(der)``). Left out of
            ``repr``.
    """

    # Compared but not hashed (a dict is unhashable): hash() works on CertInfo and TLSInfo.
    subject: dict[str, str] = field(default_factory=dict, hash=False)
    issuer: dict[str, str] = field(default_factory=dict, hash=False)
    subject_alt_names: tuple[tuple[str, str], ...] = ()
    not_before: _dt.datetime | None = None
    not_after: _dt.datetime | None = None
    serial_number: str | None = None
    der: bytes = field(default=b"", repr=False)

    @classmethod
    def from_peercert(cls, cert: dict[str, object], der: bytes = b"") -> CertInfo:
        """Build from ``SSLObject.getpeercert()``'s dictionary (and the certificate's DER
        bytes, ``getpeercert(binary_form=True)``, when at hand)."""

        def when(key: str) -> _dt.datetime | None:
            value = cert.get(key)
            if not isinstance(value, str):
                return None
            return _dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(value), _dt.timezone.utc)

        sans = cert.get("subjectAltName", ())
        serial = cert.get("serialNumber")
        return cls(
            subject=_name_fields(cert.get("subject")),
            issuer=_name_fields(cert.get("issuer")),
            subject_alt_names=tuple((str(k), _san_value(k, v)) for k, v in sans)
            if isinstance(sans, tuple)
            else (),
            not_before=when("notBefore"),
            not_after=when("notAfter"),
            serial_number=serial if isinstance(serial, str) else None,
            der=der,
        )


@dataclass(frozen=True)
class TLSInfo:
    """The negotiated TLS session of a socket (``sock.tls``).

    Attributes:
        version: e.g. ``"TLSv1.3"``.
        cipher: the cipher suite name.
        alpn_protocol: the ALPN protocol agreed, or ``None``.
        server_hostname: the name (or IP) sent as SNI (an IP is not) and checked
            against the certificate when the context checks host names: an
            international name as its IDNA 2008 A-label, without a final dot.
        peer_certificate: the leaf certificate's details, or ``None`` when the context did
            not verify it (``CERT_NONE`` hides it).
        chain: the verified chain, leaf first, on Python versions that expose it (3.13+);
            otherwise just the leaf, when known.
        session_reused: the server resumed the session offered (``ssl_on(session=...)``).
    """

    version: str | None
    cipher: str | None
    alpn_protocol: str | None
    server_hostname: str | None
    peer_certificate: CertInfo | None
    chain: tuple[CertInfo, ...] = ()
    session_reused: bool = False

    @classmethod
    def from_ssl_object(
        cls, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_hostname: str | None
    ) -> TLSInfo:
        """Describe a completed handshake."""
        cipher = ssl_object.cipher()
        raw = ssl_object.getpeercert()
        leaf = (
            CertInfo.from_peercert(dict(raw), ssl_object.getpeercert(binary_form=True) or b"")
            if raw
            else None
        )
        chain: tuple[CertInfo, ...] = (leaf,) if leaf else ()
        get_chain = getattr(ssl_object, "get_verified_chain", None)
        if get_chain is not None:  # Python 3.13+
            try:
                chain = tuple(_cert_from_der(_der(c)) for c in get_chain()) or chain
            except (ValueError, OSError, ssl.SSLError):  # informational only; keep the leaf
                chain = (leaf,) if leaf else ()
        return cls(
            version=ssl_object.version(),
            cipher=cipher[0] if cipher else None,
            alpn_protocol=ssl_object.selected_alpn_protocol(),
            server_hostname=server_hostname,
            peer_certificate=leaf,
            chain=chain,
            session_reused=bool(ssl_object.session_reused),
        )


class TLSSnapshot:
    """The facts of a TLS session, taken when the handshake completes (~1 us).

    Describing a session (:class:`TLSInfo`) costs ~25 us, so it waits until someone
    reads ``sock.tls``; but by then the session may be gone: after our own close, or
    after a ragged EOF, which leaves OpenSSL refusing ``getpeercert()``. This snapshot is
    the fallback that keeps ``sock.tls`` (and ``repr``) answering.
    """

    __slots__ = ("alpn", "cipher", "der", "reused", "version")

    def __init__(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        self.version = ssl_object.version()
        cipher = ssl_object.cipher()
        self.cipher = cipher[0] if cipher else None
        self.alpn = ssl_object.selected_alpn_protocol()
        verified = ssl_object.context.verify_mode != ssl.CERT_NONE
        self.der = ssl_object.getpeercert(binary_form=True) if verified else None
        self.reused = bool(ssl_object.session_reused)

    def describe(self, server_hostname: str | None) -> TLSInfo:
        """The :class:`TLSInfo` these facts give (the chain is just the leaf)."""
        leaf = None
        if self.der:
            try:
                leaf = _cert_from_der(self.der)
            except (ValueError, OSError, AttributeError):  # informational only
                leaf = None
        return TLSInfo(
            version=self.version,
            cipher=self.cipher,
            alpn_protocol=self.alpn,
            server_hostname=server_hostname,
            peer_certificate=leaf,
            chain=(leaf,) if leaf else (),
            session_reused=self.reused,
        )


def _der(cert: object) -> bytes:
    """A certificate of ``get_verified_chain()`` as DER: ``ssl``'s objects give bytes (Python
    3.13+), ``_ssl``'s give ``Certificate`` objects.

    Raises:
        ValueError: neither.
    """
    if isinstance(cert, bytes):
        return cert
    public_bytes = getattr(cert, "public_bytes", None)
    if public_bytes is None:
        raise ValueError(f"not a certificate: {type(cert).__name__}")
    der = public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
    if not isinstance(der, bytes):
        raise ValueError("a certificate that gave no DER bytes")
    return der


def _cert_from_der(der: bytes) -> CertInfo:
    """Decode a DER certificate with the stdlib's private test decoder (best effort)."""
    import os
    import tempfile

    pem = ssl.DER_cert_to_PEM_cert(der)
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    finally:
        os.unlink(path)
    return CertInfo.from_peercert(dict(decoded), der)

"""Sans-IO CONNECT exchange: the request janusnet sends to an HTTP proxy and its reply.

Theory of operation
-------------------
This module never touches a socket. The tunnel code does the I/O and hands bytes over:

1. :func:`format_authority` turns ``(host, port)`` into the ``CONNECT`` request-target
   (authority form, RFC 9110 §9.3.6), refusing anything a proxy could split differently:
   unbracketed IPv6, zone IDs, control characters, ambiguous numeric hosts.
2. :func:`build_connect_request` serialises the request with h11 after validating every
   header (CR/LF injection is refused with :class:`UsageError`, never stripped).
3. :class:`ConnectReplyReader` feeds the proxy's bytes to an h11 client connection that
   believes it sent a ``CONNECT``. That belief matters: a 2xx reply to ``CONNECT`` makes
   h11 switch protocols, so ``Content-Length``/``Transfer-Encoding`` on a 2xx are ignored
   as RFC 9110 §9.3.6 requires, and every byte after the head is tunnel data, returned
   untouched in :attr:`ConnectReplyReader.leftover`. ``feed()`` returns ``None`` while
   the head is incomplete ("need more data" is a value, not an exception).
4. For a non-2xx reply, :meth:`ConnectReplyReader.drain_body` consumes the body (bounded by
   :data:`MAX_DRAIN_BYTES`) so the connection can carry a retry with credentials, and
   :func:`check_reply` turns the status into the proxy-specific exception.

Imports are limited to the standard library, h11 and ``_exceptions`` (a test checks it).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import h11
import idna

from ._exceptions import (
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    UsageError,
    printable,
)

__all__ = [
    "MAX_DRAIN_BYTES",
    "MAX_HEAD_BYTES",
    "ConnectReplyReader",
    "ProxyReply",
    "build_connect_request",
    "check_reply",
    "format_authority",
    "validate_extra_header",
    "validate_header",
    "wire_name",
]

#: Default cap on the reply head (status line + headers, interim 1xx heads included).
#: 64 KiB is 4x curl's per-line limit and far above any real proxy reply, while a hostile
#: proxy streaming headers forever is stopped after one small buffer (peers.md §3.2).
MAX_HEAD_BYTES: Final = 65536
#: Cap on a non-2xx body drained for a retry, counted on the wire (chunk framing
#: included). Proxy error pages are a few KiB; anything larger is not worth reading
#: just to keep the connection, so the caller should close it instead.
MAX_DRAIN_BYTES: Final = 64 * 1024
#: DNS limits (RFC 1035 §2.3.4): 63 octets per label, 253 for the name without the root dot.
MAX_LABEL_LENGTH: Final = 63
MAX_HOST_LENGTH: Final = 253

# Letters, digits, '-', '_' and '.': the subset of RFC 3986 reg-name that DNS resolves.
# Sub-delims and '%' are legal in a reg-name but mean nothing to DNS and are parsed
# differently by different proxies, so they are refused.
_HOST_NAME_RE: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_NUMERIC_LABEL_RE: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_AUTHORITY_RE: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")
# A request h11 must believe it sent; only its method matters for the reply's framing.
_PLACEHOLDER_TARGET: Final = b"janusnet.invalid:443"
_BODYLESS_STATUSES: Final = frozenset({204, 304})
#: A CR that something other than LF follows: RFC 9112 §2.2 lets a recipient treat it
#: as invalid. h11 looks for LF only, so a head ended with bare CRs would never end.
_BARE_CR: Final = re.compile(rb"\r[^\n]")
#: h11's complaints about framing headers (it checks them in every head it reads).
_FRAMING_ERRORS: Final = (
    "bad Content-Length",
    "conflicting Content-Length",
    "Transfer-Encoding",
)
#: A Content-Length or Transfer-Encoding header line's name (see _without_framing).
_FRAMING_HEADER: Final = re.compile(rb"(?im)^(content-length|transfer-encoding)(?=[ \t]*:)")
_RENAMED: Final = b"x-janusnet-ignored-"
_HEAD_END: Final = re.compile(rb"\n\r?\n")
_STATUS_CODE: Final = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})")
_H11_LOW_STATUS: Final = re.compile(
    r"InformationalResponse status_code should be in range .*, not (\d+)$"
)
_H11_BYTEARRAY: Final = re.compile(r"bytearray\((b'.*'|b\".*\")\)", re.DOTALL)


def _restored(name: bytes) -> bytes:
    """A framing header's name as the proxy sent it, from its renamed form (see
    ``ConnectReplyReader._without_framing``); any other name as it is, a proxy's own
    ``x-janusnet-ignored-...`` header included."""
    if name[: len(_RENAMED)].lower() == _RENAMED:
        try:
            original = bytes.fromhex(name[len(_RENAMED) :].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return name
        if original.lower() in (b"content-length", b"transfer-encoding"):
            return original
    return name


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise UsageError(f"port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} is outside 1-65535")


def _ipv6(text: str, original: str) -> str:
    if "%" in text:
        raise UsageError(
            f"host {original!r} has an IPv6 zone ID; zone IDs are local to this machine "
            "and cannot be sent to a proxy"
        )
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise UsageError(f"host {original!r} is not a valid IPv6 address") from exc
    # RFC 5952: one spelling per address (it is what a proxy's ACLs and logs see), with
    # an IPv4-mapped address in mixed notation (§5).
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else address.compressed


def idna_host(host: str) -> str:
    """``host`` as the ASCII name that goes on the wire, in DNS and in SNI.

    Non-ASCII labels are encoded with IDNA 2008 after UTS #46 mapping, non-transitional
    (``faß.de`` is ``xn--fa-hia.de``), as curl (libidn2), browsers and httpx do; Python's
    own ``"idna"`` codec is IDNA 2003, which would send ``fass.de``, a different domain.
    ASCII labels pass unchanged (underscores included), except that an ``xn--`` label
    must be valid Punycode.

    Raises:
        UnicodeError: not a valid internationalised name (``idna.IDNAError`` is one).
    """
    if host.isascii():
        for label in host.split("."):
            if label[:4].lower() == "xn--":
                idna.ulabel(label)
        return host
    mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    return ".".join(
        label if label.isascii() else idna.alabel(label).decode("ascii")
        for label in mapped.split(".")
    )


@functools.lru_cache(maxsize=256)
def wire_name(host: str) -> str:
    """:func:`idna_host` for a host a caller gave (no brackets): the ASCII name.

    Raises:
        UsageError: not a valid international name.
    """
    try:
        return idna_host(host)
    except UnicodeError as exc:
        raise UsageError(f"host {host!r} is not a valid internationalised name: {exc}") from exc


def _host_name(host: str) -> str:
    name = wire_name(host).lower()
    if _HOST_NAME_RE.fullmatch(name) is None:
        bad = next(
            (ch for ch in name if not (ch.isascii() and ch.isalnum()) and ch not in "-_."), None
        )
        if bad is not None:
            raise UsageError(f"host {host!r} contains {bad!r}, which cannot appear in a host name")
        raise UsageError(f"host {host!r} has an empty label (two dots, or a leading dot)")
    labels = name.rstrip(".").split(".")
    if len(name.rstrip(".")) > MAX_HOST_LENGTH or max(map(len, labels)) > MAX_LABEL_LENGTH:
        raise UsageError(f"host {host!r} is too long for DNS (63 per label, 253 in all)")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        # "010.1.1.1" or "0x7f.1": inet_aton() reads these as octal/hex addresses, other
        # parsers as names, so the proxy may connect somewhere unintended.
        raise UsageError(f"host {host!r} looks numeric but is not a dotted-quad IPv4 address")
    return name


def _format_authority(host: str, port: int) -> str:
    """Build the ``CONNECT`` request-target (authority form) for ``host`` and ``port``.

    IPv6 literals are bracketed (``[::1]:443``, input with or without brackets), IPv4
    literals are kept, other names are IDNA-encoded (IDNA 2003, the stdlib codec) and
    lower-cased.

    Args:
        host: a host name, IPv4 literal or IPv6 literal.
        port: the TCP port, 1-65535.

    Returns:
        ``host:port`` ready for the request line and the ``Host`` header.

    Raises:
        UsageError: the host is empty, holds a space, a control character or a character
            that cannot appear in a host name, has an IPv6 zone ID, is an invalid or
            ambiguous address, or the port is not an int in 1-65535.
    """
    if not isinstance(host, str):
        raise UsageError(f"host must be a str, not {type(host).__name__}")
    _check_port(port)
    if not host:
        raise UsageError("host is empty")
    for index, char in enumerate(host):
        if char <= " " or char == "\x7f":
            raise UsageError(
                f"host {host!r} contains the space or control character {char!r} at index {index}"
            )
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise UsageError(f"host {host!r} has unbalanced brackets")
        return f"[{_ipv6(host[1:-1], host)}]:{port}"
    if ":" in host:
        return f"[{_ipv6(host, host)}]:{port}"
    try:
        return f"{ipaddress.IPv4Address(host)}:{port}"
    except ValueError:
        pass
    return f"{_host_name(host)}:{port}"


# Tunnels usually go to a handful of targets; the validation is pure, so remember it.
_cached_authority: Final = functools.lru_cache(maxsize=512)(_format_authority)


def format_authority(host: str, port: int) -> str:
    """The ``CONNECT`` request-target for ``host:port`` (see :func:`_format_authority`).

    Raises:
        UsageError: as :func:`_format_authority`.
    """
    if type(host) is str and type(port) is int:  # bool (an int) must not hit the cache
        return _cached_authority(host, port)
    return _format_authority(host, port)


#: Control characters a header value may not hold: C0 but TAB, DEL, C1.
_HEADER_CONTROL_RE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: The same for a value janusnet built as bytes (C0 but TAB, DEL): 0x80-0xFF is obs-text.
_RAW_CONTROL_RE: Final = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def validate_header(name: str, value: str) -> tuple[bytes, bytes]:
    """Check one request header and encode it for the wire.

    The value's surrounding spaces and tabs are removed (they are not part of a field
    value, RFC 9110 §5.5); it is encoded as latin-1, the encoding replies are decoded with.
    Error messages name the header but never echo the value (it may be a credential).

    Args:
        name: the header name, an RFC 9110 token.
        value: the header value; TAB is allowed, other control characters are not.

    Returns:
        ``(name, value)`` as bytes.

    Raises:
        UsageError: the name is not a token, or the value holds CR, LF, NUL, another
            control character, or a character outside latin-1.
    """
    if not isinstance(name, str) or not isinstance(value, str):
        raise UsageError("header names and values must be str")
    if _TOKEN_RE.fullmatch(name) is None:
        raise UsageError(
            f"header name {name!r} is not a token (letters, digits and !#$%&'*+-.^_`|~ only)"
        )
    bad = _HEADER_CONTROL_RE.search(value)  # one C-speed pass (a nonce can be 60 KB)
    if bad is not None:
        raise UsageError(
            f"header {name!r} value contains the control character {bad.group()!r} "
            f"at index {bad.start()}"
        )
    try:
        encoded = value.strip(" \t").encode("latin-1")
    except UnicodeEncodeError as exc:
        bad_index: int | None = exc.start
    else:
        bad_index = None
    if bad_index is not None:
        # Raised outside the except block: `from None` would still keep the encode error,
        # which carries the whole (possibly secret) value, as __context__.
        raise UsageError(
            f"header {name!r} value has a character outside latin-1 at index {bad_index}"
        )
    return name.encode("ascii"), encoded


def validate_extra_header(name: str, value: str) -> tuple[bytes, bytes]:
    """:func:`validate_header` for a caller's ``CONNECT`` header, which may not give the
    request a body.

    Raises:
        UsageError: the header is invalid, or it is ``Content-Length`` or
            ``Transfer-Encoding``.
    """
    raw_name, raw_value = validate_header(name, value)
    if raw_name.lower() in (b"content-length", b"transfer-encoding"):
        raise UsageError(f"header {name!r} would give CONNECT a body; it cannot be sent")
    return raw_name, raw_value


def build_connect_request(
    authority: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    proxy_authorization: bytes | None = None,
    user_agent: str | None = "janusnet",
) -> bytes:
    """Serialise ``CONNECT authority HTTP/1.1`` with h11.

    Headers go out as ``Host``, ``User-Agent`` (unless ``user_agent`` is None),
    ``Proxy-Authorization`` (when given), then ``headers`` in order. A user header named
    ``Host``, ``User-Agent`` or ``Proxy-Authorization`` replaces the default one in place.

    Args:
        authority: ``host:port`` as returned by :func:`format_authority`.
        headers: extra ``(name, value)`` pairs for the proxy.
        proxy_authorization: the ``Proxy-Authorization`` value, e.g. from
            :func:`janusnet._auth.basic_proxy_authorization`.
        user_agent: the ``User-Agent`` value, or None to send none.

    Returns:
        The request bytes, ending with the blank line.

    Raises:
        UsageError: the authority is not a valid ``host:port``, a header is invalid, or a
            header would give the request a body (``Content-Length``, ``Transfer-Encoding``).
            Everything is checked before any byte is produced.
    """
    if not isinstance(authority, str) or _AUTHORITY_RE.fullmatch(authority) is None:
        raise UsageError(f"CONNECT target {authority!r} is not host:port; use format_authority()")
    _check_port(int(authority.rpartition(":")[2]))
    items: list[tuple[bytes, bytes]] = [(b"Host", authority.encode("ascii"))]
    if user_agent is not None:
        items.append(validate_header("User-Agent", user_agent))
    if proxy_authorization is not None:
        if not isinstance(proxy_authorization, bytes):
            raise UsageError("proxy_authorization must be bytes")
        # Bytes 0x80-0xFF are obs-text here, not C1 controls: a Digest answer carries a
        # non-ASCII user name as its UTF-8 bytes (ß is C3 9F).
        bad = _RAW_CONTROL_RE.search(proxy_authorization)
        if bad is not None:
            raise UsageError(
                f"the Proxy-Authorization value contains the control character {bad.group()!r} "
                f"at index {bad.start()}"
            )
        items.append((b"Proxy-Authorization", proxy_authorization.strip(b" \t")))
    replaced: set[bytes] = set()
    for name, value in headers:
        raw_name, raw_value = validate_extra_header(name, value)
        lower = raw_name.lower()
        if lower in (b"host", b"user-agent", b"proxy-authorization") and lower not in replaced:
            replaced.add(lower)
            positions = [i for i, (key, _) in enumerate(items) if key.lower() == lower]
            if positions:
                items[positions[0]] = (raw_name, raw_value)
                continue
        items.append((raw_name, raw_value))
    conn = h11.Connection(h11.CLIENT)
    try:
        request = h11.Request(method=b"CONNECT", target=authority.encode("ascii"), headers=items)
        data = conn.send(request)
    except h11.LocalProtocolError as exc:
        raise UsageError(f"cannot build the CONNECT request: {exc}") from exc
    assert data is not None  # only ConnectionClosed serialises to None
    return data


@dataclass(frozen=True, slots=True)  # one per idle tunnel: no __dict__
class ProxyReply:
    """The proxy's final reply head to ``CONNECT``.

    Attributes:
        status: the status code.
        reason: the reason phrase, possibly empty.
        http_version: the version the proxy sent, ``"1.0"`` or ``"1.1"``; a higher
            ``1.x`` is kept as sent and read as 1.1 (RFC 9110 §2.5); other major
            versions are refused.
        headers: ``(name, value)`` pairs in received order, names in received case,
            decoded as latin-1; obs-fold continuation lines are already unfolded.
    """

    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of the header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


#: 2xx reply heads h11 parsed (exact bytes -> reply; see ConnectReplyReader._known_head).
#: A proxy answers every CONNECT with the same few bytes, so tunnels through it also share
#: one immutable ``ProxyReply`` (memory per idle tunnel). At most 64 heads of <= 2 KiB.
_KNOWN_HEADS: dict[bytes, ProxyReply] = {}
_MAX_KNOWN_HEADS: Final = 64
_MAX_KNOWN_HEAD: Final = 2048


def _remember_head(head: bytes, reply: ProxyReply) -> None:
    end = head.find(b"\r\n\r\n") + 4
    if 4 <= end == len(head) <= _MAX_KNOWN_HEAD:
        if len(_KNOWN_HEADS) >= _MAX_KNOWN_HEADS:
            _KNOWN_HEADS.clear()
        _KNOWN_HEADS[head] = reply


def check_reply(reply: ProxyReply, *, proxy: str = "") -> None:
    """Raise the proxy-specific error for a non-2xx reply.

    Args:
        reply: the reply head.
        proxy: ``host:port`` of the proxy for the message (never with credentials).

    Raises:
        ProxyAuthenticationRequired: the status is 407.
        ProxyRefusedError: any other status outside 2xx.
    """
    if 200 <= reply.status < 300:
        return
    error = ProxyAuthenticationRequired if reply.status == 407 else ProxyRefusedError
    raise error(reply.status, reply.reason, reply.headers, proxy=proxy, detail=_why(reply))


#: Headers in which proxies say why they refused: RFC 9209's, and squid's own.
_DIAGNOSTIC_HEADERS: Final = frozenset({"proxy-status", "x-squid-error"})
#: How many of them a message quotes (each cut at 120 characters).
DIAGNOSTICS_SHOWN: Final = 3
#: What 502, 503 and 504 mean for CONNECT (apache and privoxy say 503 when the target
#: cannot be reached; squid and most others 502).
_GATEWAY: Final = {
    502: "the proxy could not connect to the target",
    503: "the proxy could not reach the target, or is itself unavailable",
    504: "the proxy timed out reaching the target",
}


def _why(reply: ProxyReply) -> str:
    """What a refusal's message adds: the meaning of a 502, 503 or 504, and the proxy's own
    diagnostic headers (``Proxy-Status``, ``X-Squid-Error``), which otherwise only
    ``.headers`` shows (a 407's detail is the tunnel's, which knows what it sent)."""
    if reply.status == 407:
        return ""
    parts = [_GATEWAY[reply.status]] if reply.status in _GATEWAY else []
    said = [
        f"{name}: {printable(value, 120)}"
        for name, value in reply.headers
        if name.lower() in _DIAGNOSTIC_HEADERS
    ]
    parts += said[:DIAGNOSTICS_SHOWN]
    if len(said) > DIAGNOSTICS_SHOWN:  # (the rest are in .headers)
        parts.append(f"{len(said) - DIAGNOSTICS_SHOWN} more")
    return "; ".join(parts)


def _other_protocol(head: bytes) -> str:
    """What a reply that is not HTTP/1.x looks like, for a message (h11's own words would
    be "illegal request line"); ``""`` when it does not look like another protocol.
    Judged on the first byte, the one h11 may refuse alone, so that the words do not
    depend on how the reply was split."""
    first = head[:1]
    if first == b"\x05":
        return "a SOCKS5 reply (b'\\x05...'), not HTTP: is it a SOCKS proxy? janusnet speaks HTTP"
    if first == b"\x00":
        return (
            "binary data (b'\\x00...'), not HTTP: a SOCKS4 proxy, or a port that speaks "
            "only HTTP/2? janusnet speaks HTTP/1.1 CONNECT"
        )
    if first and not (0x20 <= first[0] < 0x7F or first[0] in (0x09, 0x0A, 0x0D)):
        return f"binary data ({first!r}...), not HTTP: is it an HTTP proxy?"
    return ""


class ConnectReplyReader:
    """Parse the proxy's reply to one ``CONNECT``, fed bytes as they arrive.

    Use one reader per request sent. Interim 1xx replies are skipped (their bytes count
    towards ``max_head_bytes``). The result never depends on how the bytes were split.

    Args:
        max_head_bytes: the cap on the whole reply head.
        proxy: ``host:port`` of the proxy, for error messages.
        redact: applied to text the proxy sent before it is quoted (and cut short) in an
            error message: the tunnel withholds its credentials with it.

    Raises:
        UsageError: ``max_head_bytes`` is not a positive int.
    """

    def __init__(
        self,
        *,
        max_head_bytes: int = MAX_HEAD_BYTES,
        proxy: str = "",
        redact: Callable[[str], str] | None = None,
    ) -> None:
        if isinstance(max_head_bytes, bool) or not isinstance(max_head_bytes, int):
            raise UsageError("max_head_bytes must be an int")
        if max_head_bytes < 1:
            raise UsageError(f"max_head_bytes must be positive, not {max_head_bytes}")
        self._max_head_bytes = max_head_bytes
        self._proxy = proxy
        self._redact = redact
        self._h11: h11.Connection | None = None  # made on first use (see _conn)
        self._shortcut_leftover: bytes | None = None  # set when a known head was reused
        self._received = 0  # every byte fed so far
        self._head_bytes = 0  # size of the head once complete
        self._reply: ProxyReply | None = None
        self._eof = False
        self._body_done = False
        self._body_length: int | None = None  # None: delimited by close (not drainable)
        self._keep_alive = False
        self._cr_pending = False  # the head so far ends with a CR (its LF may follow)
        self._head_data = bytearray()  # every byte fed until the reply is known
        self._interim: int | None = None  # the status of the last interim (1xx) reply

    @property
    def _conn(self) -> h11.Connection:
        """The h11 client connection, primed with a ``CONNECT`` already sent."""
        conn = self._h11
        if conn is None:
            conn = self._h11 = self._new_conn()
        return conn

    def _new_conn(self) -> h11.Connection:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_head_bytes)
        conn.send(
            h11.Request(
                method=b"CONNECT",
                target=_PLACEHOLDER_TARGET,
                headers=[(b"Host", _PLACEHOLDER_TARGET)],
            )
        )
        conn.send(h11.EndOfMessage())
        return conn

    @property
    def reply(self) -> ProxyReply | None:
        """The final reply head once complete, else None."""
        return self._reply

    @property
    def leftover(self) -> bytes:
        """Bytes received after the reply head (after the body, once drained).

        For a 2xx these are the first tunnel bytes, exactly as received.
        """
        if self._reply is None:
            return b""
        if self._shortcut_leftover is not None:
            return self._shortcut_leftover
        return self._conn.trailing_data[0]

    @property
    def interim(self) -> int | None:
        """The status of the last interim (1xx) reply read, if any (the final reply may
        still be to come)."""
        return self._interim

    @property
    def received(self) -> int:
        """How many bytes were fed (the end of the stream not counted)."""
        return self._received

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another ``CONNECT`` after :meth:`drain_body`.

        False for 2xx, ``Connection: close``, HTTP/1.0 without keep-alive, a body delimited
        by closing the connection or larger than :data:`MAX_DRAIN_BYTES`, or bytes that
        followed the drained body.
        """
        reply = self._reply
        if reply is None or 200 <= reply.status < 300 or not self._keep_alive:
            return False
        if self._body_length is None or self._body_length > MAX_DRAIN_BYTES:
            return False
        return not (self._body_done and self.leftover)

    def _quote(self, exc: BaseException) -> str:
        """h11's words about what the proxy sent, redacted, then escaped and cut short.

        Two of h11's phrasings are its own internals and are put in the proxy's terms: a
        status below 100 ("InformationalResponse status_code should be in range [100,
        200), not 0") and the ``bytearray(b'...')`` around a quoted line.
        """
        text = str(exc)
        below = _H11_LOW_STATUS.match(text)
        if below is not None:
            text = f"status code {int(below.group(1)):03d} is not one of 100-599"
        text = _H11_BYTEARRAY.sub(r"\1", text)
        return printable(self._redact(text) if self._redact is not None else text)

    def _where(self) -> str:
        return f"proxy {self._proxy}" if self._proxy else "the proxy"

    def _too_big(self) -> ProxyProtocolError:
        return ProxyProtocolError(
            f"{self._where()} sent a reply head larger than max_head_bytes "
            f"({self._max_head_bytes} bytes)",
            proxy=self._proxy,
        )

    def feed(self, data: bytes) -> ProxyReply | None:
        """Add received bytes.

        Bytes fed after the head is complete go to :attr:`leftover` (or to the body).

        Args:
            data: the next bytes from the proxy, possibly empty.

        Returns:
            The reply once its head is complete, None while more bytes are needed.

        Raises:
            ProxyProtocolError: the reply is malformed (``__cause__`` is h11's error),
                not HTTP/1.x, or its head exceeds ``max_head_bytes``.
            UsageError: called after :meth:`feed_eof`.
        """
        if self._eof:
            raise UsageError("feed() called after feed_eof()")
        if self._shortcut_leftover is not None:  # a known 2xx head: the rest is tunnel
            self._received += len(data)
            self._shortcut_leftover += bytes(data)
            return self._reply
        first = not self._received
        if first and data:
            reply = self._known_head(bytes(data))
            if reply is not None:
                return reply
        if data:  # h11 reads b"" as end-of-file
            self._received += len(data)
            self._conn.receive_data(bytes(data))
        if self._reply is not None:
            return self._reply
        self._head_data += data
        reply = self._advance()
        if reply is not None:
            self._head_data = bytearray()
        if reply is None and data:
            self._check_line_ends(bytes(data))  # all of it is head: no reply yet
        if first and reply is not None and 200 <= reply.status < 300 and self._redact is None:
            # (Not with credentials to withhold: a head that quotes them stays unshared.)
            _remember_head(bytes(data[: self._head_bytes]), reply)
        return reply

    def _check_line_ends(self, data: bytes) -> None:
        """Refuse a head with a bare CR at once, instead of waiting out the deadline for
        an end of head that never comes (the proxy is waiting for us by then)."""
        if (self._cr_pending and not data.startswith(b"\n")) or _BARE_CR.search(data):
            raise ProxyProtocolError(
                f"{self._where()} sent a malformed reply to CONNECT: a CR not followed by "
                "LF in the reply head (RFC 9112 section 2.2)",
                proxy=self._proxy,
            )
        self._cr_pending = data.endswith(b"\r")

    def _known_head(self, data: bytes) -> ProxyReply | None:
        """The reply for a 2xx head that h11 already parsed, byte for byte, if it is one.

        A proxy answers every ``CONNECT`` with the same few bytes; h11 needs ~30 us to
        parse them again (~1 % of a tunnel's set-up). A head is remembered only when h11
        read it, complete and alone, from the start of a first chunk (no interim 1xx):
        the same bytes then always give the same reply, and what follows is the tunnel's.
        """
        end = data.find(b"\r\n\r\n") + 4
        if end < 4 or end > self._max_head_bytes:
            return None
        reply = _KNOWN_HEADS.get(data[:end])
        if reply is not None:
            self._received = len(data)
            self._head_bytes = end
            self._shortcut_leftover = data[end:]
            self._reply = reply
        return reply

    def feed_eof(self) -> ProxyReply:
        """Record that the proxy closed the connection.

        Returns:
            The reply, if its head was complete.

        Raises:
            ProxyProtocolError: the connection closed before or inside the reply head,
                or the bytes before it were malformed.
        """
        if self._shortcut_leftover is not None and self._reply is not None:
            self._eof = True
            return self._reply
        if not self._received and self._reply is None:
            # (h11's own error here -- a ConnectionClosed event it cannot handle -- would
            # only confuse as the cause: nothing went wrong but the silence.)
            self._eof = True
            raise ProxyProtocolError(
                f"{self._where()} closed the connection without replying to CONNECT "
                "(proxies such as pproxy do that when they cannot reach the target, or "
                "when a rule of theirs refuses it)",
                proxy=self._proxy,
            )
        if not self._eof:
            self._eof = True
            self._conn.receive_data(b"")
        reply = self._reply or self._advance()
        if reply is None:  # pragma: no cover - h11 raises at EOF instead of NEED_DATA
            raise ProxyProtocolError("connection closed inside the reply head", proxy=self._proxy)
        return reply

    def _advance(self) -> ProxyReply | None:
        try:
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    if self._received > self._max_head_bytes:
                        raise self._too_big()
                    return None
                if isinstance(event, h11.Response):
                    return self._complete(event)
                if isinstance(event, h11.InformationalResponse):  # skipped; its bytes count
                    self._interim = event.status_code
        except h11.RemoteProtocolError as exc:
            # h11 raises the error from a frame that holds it (``raise self``): without
            # its traceback it is no cycle keeping this reader and the socket until the
            # garbage collector runs (the message says what h11 found).
            exc.with_traceback(None)
            if exc.error_status_hint == 431:
                raise self._too_big() from exc
            if any(words in str(exc) for words in _FRAMING_ERRORS):
                read, reply = self._without_framing(exc)
                if read:
                    return reply
            if "SWITCH_UPGRADE" in str(exc):  # h11's words for a 101 nobody asked for
                raise ProxyProtocolError(
                    f"{self._where()} answered CONNECT with 101 Switching Protocols, "
                    "which no CONNECT asks for",
                    proxy=self._proxy,
                ) from exc
            if self._eof:
                if self._interim is not None:
                    raise ProxyProtocolError(
                        f"{self._where()} closed the connection after an interim "
                        f"{self._interim} reply, before its final reply to CONNECT was "
                        f"complete ({self._received} bytes)",
                        proxy=self._proxy,
                    ) from exc
                raise ProxyProtocolError(
                    f"connection closed inside the reply head from {self._where()} "
                    f"after {self._received} bytes",
                    proxy=self._proxy,
                ) from exc
            # A TLS alert or handshake record (h11 may refuse its first byte alone).
            head = bytes(self._head_data[:2])
            if head[:1] in (b"\x15", b"\x16") and head[1:] in (b"", b"\x03"):
                raise ProxyProtocolError(
                    f"{self._where()} answered CONNECT with TLS, not HTTP: is it an "
                    "https:// proxy?",
                    proxy=self._proxy,
                ) from exc
            other = _other_protocol(bytes(self._head_data[:1]))
            if other:
                raise ProxyProtocolError(
                    f"{self._where()} answered CONNECT with {other}",
                    proxy=self._proxy,
                ) from exc
            raise ProxyProtocolError(
                f"{self._where()} sent a malformed reply to CONNECT: {self._quote(exc)}",
                proxy=self._proxy,
            ) from exc

    def _complete(
        self, event: h11.Response, *, renamed: bool = False, unframed: bool = False
    ) -> ProxyReply:
        self._head_bytes = self._received - len(self._conn.trailing_data[0])
        if self._head_bytes > self._max_head_bytes:
            raise self._too_big()
        version = event.http_version.decode("ascii")
        if not version.startswith("1."):
            raise ProxyProtocolError(
                f"{self._where()} replied with HTTP/{version}; only HTTP/1.x is supported",
                proxy=self._proxy,
            )
        if event.status_code > 599:  # (h11 takes any three digits; RFC 9110 section 15)
            raise ProxyProtocolError(
                f"{self._where()} sent a malformed reply to CONNECT: status code "
                f"{event.status_code} is not one of 100-599",
                proxy=self._proxy,
            )
        headers = tuple(
            ((_restored(name) if renamed else name).decode("latin-1"), value.decode("latin-1"))
            for name, value in event.headers.raw_items()
        )
        reply = ProxyReply(event.status_code, event.reason.decode("latin-1"), version, headers)
        tokens = {
            token.strip().lower()
            for value in (*reply.get_all("connection"), *reply.get_all("proxy-connection"))
            for token in value.split(",")
        }
        self._keep_alive = "close" not in tokens and (version != "1.0" or "keep-alive" in tokens)
        if unframed:
            self._body_length = None  # (malformed framing: the body ends with the connection)
        elif reply.status in _BODYLESS_STATUSES or 200 <= reply.status < 300:
            self._body_length = 0  # a 2xx is a tunnel: its framing headers mean nothing
        elif reply.get_all("transfer-encoding"):
            self._body_length = -1  # chunked (h11 refuses any other coding)
        elif lengths := reply.get_all("content-length"):
            self._body_length = int(lengths[0])  # h11 checked that copies agree
        self._reply = reply
        return reply

    def _without_framing(self, exc: h11.RemoteProtocolError) -> tuple[bool, ProxyReply | None]:
        """Read the heads again when h11 refused framing headers that do not matter.

        RFC 9112 §6.3: a client MUST ignore ``Content-Length`` and ``Transfer-Encoding``
        on a 2xx reply to ``CONNECT`` (curl does); a 1xx has no body either. h11 checks
        them in every head it reads (``gzip, chunked`` is a coding it does not support,
        ``-1`` a length it rejects). The complete heads received so far are given to a
        fresh h11 with those header names renamed in the 1xx and 2xx heads (and put back
        in the reply as sent); the bytes after them go as they came.

        A final reply that is not 2xx and has malformed ones itself is read the same way
        (a refusal is a refusal: its status reaches the caller), but its body then has no
        length: it ends when the connection does, which is not reused.

        Returns:
            ``(True, reply)``, or ``(True, None)`` when the final head is still to come
            (the fresh h11 reads it); ``(False, None)`` when the heads cannot be read
            this way either (h11's first error stands).
        """
        data = bytes(self._head_data)
        for final_too in (False, True):
            pos = 0
            code = 0
            heads = bytearray()
            while code < 200 and (end := _HEAD_END.search(data, pos)) is not None:
                status = _STATUS_CODE.match(data, pos)
                if status is None:
                    return False, None
                code = int(status.group(1))
                head = data[pos : end.end()]
                if code < 300 or final_too:
                    head = _FRAMING_HEADER.sub(
                        lambda m: _RENAMED + m.group(1).hex().encode(), head
                    )
                heads += head
                pos = end.end()
            conn = self._new_conn()
            conn.receive_data(bytes(heads) + data[pos:])
            try:
                while not isinstance(event := conn.next_event(), h11.Response):
                    if event is h11.NEED_DATA and code < 200:
                        self._h11 = conn
                        self._interim = code or self._interim
                        return True, None
                    if not isinstance(event, h11.InformationalResponse):
                        return False, None
            except h11.RemoteProtocolError:
                if code < 300 or final_too:
                    return False, None
                continue  # the final reply's own framing is malformed: set it aside too
            self._h11 = conn
            return True, self._complete(event, renamed=True, unframed=final_too)
        return False, None  # pragma: no cover - the second round returns

    def drain_body(self, data: bytes = b"") -> bool:
        """Consume the body of a non-2xx reply so the connection can be reused.

        Call it first with ``b""`` (the body may already be buffered), then with each
        received chunk until it returns True. ``b""`` is not end-of-file. Bytes after the
        body stay in :attr:`leftover`.

        Args:
            data: the next bytes from the proxy.

        Returns:
            True once the whole body (``Content-Length`` or chunked) has been read.

        Raises:
            UsageError: no complete non-2xx reply yet, its body is delimited by closing
                the connection (check :attr:`reusable` first), or bytes come after
                :meth:`feed_eof`.
            ProxyProtocolError: the body is malformed (strict chunk framing), cut short by
                :meth:`feed_eof`, or exceeds :data:`MAX_DRAIN_BYTES`.
        """
        reply = self._reply
        if reply is None or 200 <= reply.status < 300:
            raise UsageError("drain_body() needs a complete non-2xx reply")
        if self._body_length is None:
            raise UsageError("the reply body ends when the proxy closes; close the connection")
        if self._body_length > MAX_DRAIN_BYTES:
            raise ProxyProtocolError(
                f"{self._where()} sent a {self._body_length}-byte body, more than "
                f"MAX_DRAIN_BYTES ({MAX_DRAIN_BYTES})",
                proxy=self._proxy,
            )
        if data and self._eof:
            raise UsageError("drain_body() got bytes after feed_eof()")
        if data:  # h11 reads b"" as end-of-file
            self._received += len(data)
            self._conn.receive_data(bytes(data))
        while not self._body_done:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProxyProtocolError(
                    f"{self._where()} sent a malformed reply body: {self._quote(exc)}",
                    proxy=self._proxy,
                ) from exc
            drained = self._received - self._head_bytes - len(self._conn.trailing_data[0])
            if drained > MAX_DRAIN_BYTES:
                raise ProxyProtocolError(
                    f"{self._where()} sent a reply body larger than MAX_DRAIN_BYTES "
                    f"({MAX_DRAIN_BYTES})",
                    proxy=self._proxy,
                )
            if event is h11.NEED_DATA:
                return False
            self._body_done = isinstance(event, h11.EndOfMessage)
        return True

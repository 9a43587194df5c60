"""Client port definitions (the ``JANUS DEFINE ... CLSOCK`` successor) and access rules.

A :class:`ClientPort` is an immutable bundle of per-connection defaults: TLS policy, line
end, parse tokens, encoding, the receive limit, access rules and a socket cap. Sockets
copy the mutable settings (line end, tokens, encoding) when they are created, so changing
them on one socket (``$Sock_Set``) never affects another.

Access rules (``JANUS CLSOCK ALLOW/DISALLOW``): the first matching rule wins; with rules
given and none matching, the target is denied; with no rules, everything is allowed. A
denied target raises :class:`~janusnet.AccessDeniedError` before any packet is sent.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Final

from ._connect import _NUMERIC_LABEL_RE, idna_host
from ._exceptions import (
    AccessDeniedError,
    PortLimitError,
    UsageError,
    check_size,
    check_ssl_context,
    show_address,
)
from ._scan import TokenSet, as_token_set

__all__ = ["AccessRule", "ClientPort", "TLSMode", "allow", "deny"]

#: Default ``recv_parsed`` limit: 64 KiB covers any sane protocol line (HTTP servers cap
#: request lines at 8 KiB and whole heads at 64 KiB) while bounding memory per call.
DEFAULT_MAX_PARSE_BYTES: Final = 65536


class TLSMode(enum.Enum):
    """When a port uses TLS (Janus ``SSL`` / ``SSLOPT``)."""

    #: No TLS at all; ``ssl_on()`` raises ``NotSSLPortError`` (-110).
    NEVER = "never"
    #: Plain at connect unless ``tls=True`` is asked for; ``ssl_on()`` allowed (SSL+SSLOPT).
    OPTIONAL = "optional"
    #: TLS from the start (the handshake is part of ``connect``).
    ALWAYS = "always"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AccessRule:
    """One access rule: allow or deny a host pattern and a port range.

    Host patterns: ``"*"`` (any), an exact name (case-insensitive, trailing dot ignored),
    ``"*.example.com"`` (any subdomain, not ``example.com`` itself), an IP address, or a
    CIDR range (``"10.0.0.0/8"``, ``"::1/128"``). IP and CIDR patterns match IP-literal
    targets, and for direct connects (and tunnels with ``resolve_locally``) the
    addresses a name resolves to: a name no rule matches is allowed there when an IP
    rule allows every address it has (``allow("10.0.0.0/8")`` admits a name that
    resolves into it), and refused when one of them is not. A deny rule
    matches any spelling of the destination (an IPv4-mapped ``::ffff:10.1.2.3`` also as
    ``10.1.2.3``, the unspecified ``0.0.0.0`` / ``::`` also as that family's loopback); an
    allow rule matches only the host the connection reaches.

    Attributes:
        allow: True to allow, False to deny.
        host: the host pattern.
        ports: inclusive ``(first, last)`` port range; ``None`` for any port.

    Raises:
        UsageError: a pattern that is none of the above (a malformed CIDR range such as
            ``10.0.0.0/33``, a glob, a dotted number that is no IPv4 address, ``*``
            anywhere but a leading ``*.``, characters no host name has, an invalid
            international name, not a ``str``), or ``ports`` that are not two ints
            within 1-65535, the first not above the second.
    """

    allow: bool
    host: str = "*"
    ports: tuple[int, int] | None = None
    _network: IPNetwork | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A pattern that cannot match what it was meant to would make a deny rule fail
        # open: every malformed one is refused.
        if not isinstance(self.host, str):
            raise UsageError(f"an access rule's host pattern must be a str, not {self.host!r}")
        host = self.host.strip().lower().rstrip(".")
        if not host:
            raise UsageError("an access rule needs a host pattern ('*' for any)")
        if host == "*" and self.host.strip() != "*":
            raise UsageError(f"access rule host {self.host!r}: write '*' for any host")
        wildcard = "*." if host.startswith("*.") else ""
        name = _canonical_host(host[len(wildcard) :])
        if name is None:
            raise UsageError(f"access rule host {self.host!r} is not a valid international name")
        network = None
        if host != "*":
            host = wildcard + name
            network = _rule_network(self.host, host, wildcard)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "_network", network)
        ports = self.ports
        if isinstance(ports, list):
            # [80, 443] reads as "80 and 443" as easily as "80 to 443": taken as a range,
            # an allow rule opened the 362 ports between them.
            raise UsageError(
                f"access rule ports {ports!r}: a list is ambiguous (these ports, or the "
                "range between them?); give a (first, last) tuple for a range, or one "
                "rule per port"
            )
        if ports is not None:
            if not (
                isinstance(ports, tuple)
                and len(ports) == 2
                and all(type(each) is int for each in ports)
            ):
                raise UsageError(f"access rule ports must be (first, last) ints, not {ports!r}")
            first, last = ports
            if not (1 <= first <= last <= 65535):
                raise UsageError(f"access rule port range {ports!r} is not within 1-65535")

    @property
    def is_ip_rule(self) -> bool:
        """True when the host pattern is an IP address or CIDR range."""
        return self._network is not None

    def matches_port(self, port: int) -> bool:
        """True when ``port`` is in this rule's range."""
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def matches_host(self, host: str) -> bool:
        """True when ``host`` (a name or an IP literal) matches the pattern.

        The host is compared as the name a connection reaches (see
        :func:`_canonical_host`), so ``ＥＸＡＭＰＬＥ.com`` or ``example。com`` meet a rule
        about ``example.com``; a host that is not a valid name matches no pattern but ``*``.
        """
        if self.host == "*":
            return True
        name = _canonical_host(host)
        if name is None:
            return False
        if self._network is not None:
            try:
                address = ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                return False
            # A deny rule matches any spelling of the destination; an allow rule only
            # the host the connection really reaches.
            candidates = (_reaches(address),) if self.allow else _spellings(address)
            if (
                not self.allow
                and isinstance(address, ipaddress.IPv4Address)
                and isinstance(self._network, ipaddress.IPv6Network)
                and self._network.subnet_of(_MAPPED)
            ):
                # A deny rule written as IPv4-mapped (::ffff:7f00:0/104) is about the
                # IPv4 hosts it maps: it meets their IPv4 literals too.
                candidates += (ipaddress.IPv6Address(f"::ffff:{address}"),)
            return any(each in self._network for each in candidates)
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host


_RULE_NAME_RE: Final = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)
_NUMERIC_RE: Final = re.compile(r"[0-9.]+")


def _rule_network(pattern: str, host: str, wildcard: str) -> IPNetwork | None:
    """The address range of an IP or CIDR pattern, ``None`` for a name pattern.

    Raises:
        UsageError: the pattern is neither: a CIDR range that does not parse
            (``10.0.0.0/33``), a dotted number that is no IPv4 address (``127.0.0.256``),
            an IPv6-looking pattern that does not parse, a ``*`` anywhere but in a
            leading ``*.``, or characters no host name has.
    """
    if not wildcard:
        try:
            return ipaddress.ip_network(host, strict=False)
        except ValueError:
            pass
    name = host[len(wildcard) :]
    if "/" in name or ":" in name or (_NUMERIC_RE.fullmatch(name) and not wildcard):
        raise UsageError(f"access rule host {pattern!r} is not a valid IP address or CIDR range")
    if not wildcard and _NUMERIC_LABEL_RE.fullmatch(name.rsplit(".", 1)[-1]):
        # "0x7f.0.0.1", "0x7f000001", "host.123": a last label that is a number makes
        # inet_aton() and URL parsers read the host as an address, which no name rule
        # would meet (the tunnel refuses such hosts; a direct connect resolves them).
        raise UsageError(
            f"access rule host {pattern!r} ends in a number but is not an IP address: "
            "write the address dotted-decimal (127.0.0.1) or as a CIDR range"
        )
    if _RULE_NAME_RE.fullmatch(name) is None:
        raise UsageError(
            f"access rule host {pattern!r} is not '*', a host name, '*.' and a domain, an "
            "IP address or a CIDR range"
        )
    return None


def _canonical_host(host: str) -> str | None:
    """``host`` as the name a connection to it reaches, for the access rules.

    Brackets, surrounding space, letter case and a final dot go; an international name
    becomes the IDNA 2008 A-label that janusnet puts on the wire, in DNS and in SNI
    (UTS #46 mapping first: full-width letters and digits, ideographic full stops and
    upper case all map to the ASCII name). Judging the host as written instead would let
    ``ｓｅｃｒｅｔ.example`` past a rule about ``secret.example`` and then connect to it.
    ``None`` when the host is not a valid international name.
    """
    name = host.strip().strip("[]").rstrip(".")
    if not name.isascii():
        try:
            name = idna_host(name).rstrip(".")
        except UnicodeError:
            return None
    return name.lower()


_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK_V4: Final = ipaddress.IPv4Address("127.0.0.1")
_LOOPBACK_V6: Final = ipaddress.IPv6Address("::1")


def _reaches(address: _IPAddress) -> _IPAddress:
    """The host a connection to ``address`` reaches.

    An IPv4-mapped IPv6 address (``::ffff:10.1.2.3``) reaches the IPv4 host, and an
    unspecified address (``0.0.0.0``, ``::``, ``::ffff:0.0.0.0``) reaches this machine's
    loopback of that family on Linux and BSD.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return _LOOPBACK_V4 if address.version == 4 else _LOOPBACK_V6
    return address


#: IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``).
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
#: NAT64's well-known prefix (RFC 6052): ``64:ff9b::a.b.c.d`` is translated to a.b.c.d.
_NAT64_WKP: Final = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and may be translated or tunnelled to:
    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``, deprecated but
    still parsed), IPv4-translated (``::ffff:0:a.b.c.d``), NAT64's well-known prefix,
    6to4 (``2002:aabb:ccdd::/48``)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 and value > 1:  # (:: and ::1 are IPv6's own)
        return ipaddress.IPv4Address(value)
    if value >> 32 == 0xFFFF0000:  # IPv4-translated, ::ffff:0:a.b.c.d (RFC 2765)
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _NAT64_WKP:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address.sixtofour


def _spellings(address: _IPAddress) -> tuple[_IPAddress, ...]:
    """``address`` as written, the IPv4 address it embeds (mapped, compatible, NAT64,
    6to4), and what it reaches: a deny rule about ``10.0.0.0/8`` or ``127.0.0.0/8`` is not
    bypassed by spelling, nor by a translation the network may do."""
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    candidates: list[_IPAddress | None] = [address, embedded, _reaches(address)]
    if embedded is not None:
        candidates.append(_reaches(embedded))  # ::0.0.0.0 and 64:ff9b::0.0.0.0
    return tuple(dict.fromkeys(a for a in candidates if a is not None))


def _ports_arg(ports: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if ports is None:
        return None
    if type(ports) is int:
        return (ports, ports)
    if isinstance(ports, list):
        return ports  # AccessRule says why it refuses it
    if isinstance(ports, tuple) and len(ports) == 2:
        return (ports[0], ports[1])  # AccessRule checks the values
    raise UsageError(f"access rule ports must be an int or a (first, last) pair, not {ports!r}")


def allow(host: str = "*", ports: int | tuple[int, int] | None = None) -> AccessRule:
    """An allowing :class:`AccessRule` (``allow("*.example.com", 443)``).

    Raises:
        UsageError: see :class:`AccessRule`; also ``ports`` that is neither an int nor a
            ``(first, last)`` pair.
    """
    return AccessRule(True, host, _ports_arg(ports))


def deny(host: str = "*", ports: int | tuple[int, int] | None = None) -> AccessRule:
    """A denying :class:`AccessRule` (``deny("10.0.0.0/8")``).

    Raises:
        UsageError: see :class:`AccessRule`; also ``ports`` that is neither an int nor a
            ``(first, last)`` pair.
    """
    return AccessRule(False, host, _ports_arg(ports))


@dataclass(frozen=True, eq=False)
class ClientPort:
    """Defaults for client sockets (the ``JANUS DEFINE ... CLSOCK`` successor).

    Args:
        name: the port's name, for logs and errors.
        tls: ``TLSMode.NEVER``, ``OPTIONAL`` (plain at connect, ``ssl_on()`` allowed) or
            ``ALWAYS`` (TLS at connect).
        ssl_context: the context for ``ssl_on()``; ``None`` for the verified default on
            certifi's bundle (TLS >= 1.2). Never modified.
        line_end: bytes appended by ``send_line`` (LINEND).
        parse_tokens: default tokens for ``recv_parsed`` (PRSTOK): a list of bytes, a
            :class:`TokenSet` or a PRSTOK string.
        encoding: codec for ``str`` payloads (``"cp037"``/``"cp1047"`` for EBCDIC peers).
        max_parse_bytes: default ``recv_parsed`` limit on data bytes.
        rules: access rules; first match wins; none matching denies; no rules allows all.
        max_sockets: how many sockets may be open on this port at once (SOCKPMAX);
            ``None`` for no cap.

    Raises:
        UsageError: an invalid setting (empty line end, bad tokens, unknown codec, an
            ``ssl_context`` that is not an ``SSLContext``...).
    """

    name: str = "DEFAULT"
    tls: TLSMode = TLSMode.OPTIONAL
    ssl_context: ssl.SSLContext | None = None
    line_end: bytes = b"\r\n"
    parse_tokens: TokenSet | Sequence[bytes] | str = (b"\r\n",)
    encoding: str = "utf-8"
    max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES
    rules: Sequence[AccessRule] = ()
    max_sockets: int | None = None
    _open: list[int] = field(default_factory=lambda: [0], init=False, repr=False)
    # Reentrant: a Socket's finalizer (garbage collection may run it anywhere, even while
    # this thread holds the lock) releases its slot through it.
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tls, TLSMode):
            raise UsageError(f"tls must be a TLSMode, not {self.tls!r}")
        check_ssl_context(self.ssl_context)
        if not isinstance(self.line_end, bytes) or not self.line_end:
            raise UsageError("line_end must be non-empty bytes such as b'\\r\\n'")
        object.__setattr__(self, "parse_tokens", as_token_set(self.parse_tokens))
        check_encoding(self.encoding)
        check_size(self.max_parse_bytes, "max_parse_bytes")
        if self.max_sockets is not None:
            check_size(self.max_sockets, "max_sockets (or None for no cap)", 1)
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if not isinstance(rule, AccessRule):
                raise UsageError(f"rules must be AccessRule objects (allow/deny), not {rule!r}")

    def __reduce__(self) -> tuple[object, ...]:
        """Copy, deep-copy and pickle as the same settings with a socket count of its own
        (the open-socket counter and its lock belong to one port object)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return (functools.partial(ClientPort, **settings), ())

    @property
    def tokens(self) -> TokenSet:
        """The default parse tokens as a :class:`TokenSet`."""
        assert isinstance(self.parse_tokens, TokenSet)
        return self.parse_tokens

    @property
    def open_sockets(self) -> int:
        """How many sockets on this port are currently open."""
        return self._open[0]

    def is_allowed(self, host: str, port: int) -> bool:
        """Decide the access rules for ``host:port``.

        The host is judged as the name that goes on the wire (see
        :func:`_canonical_host`); one that is not a valid name is denied when there are
        rules. The first matching rule wins (none matching denies, no rules allow). An
        IP-literal host must *also* pass :meth:`is_address_allowed`, so
        ``[allow("*"), deny("10.0.0.0/8")]`` refuses the literal ``10.1.2.3`` directly and
        through a tunnel. A *name* is also checked against the IP rules for every address
        it resolves to on direct connects (the DNS-rebinding guard); through a tunnel the
        proxy resolves the name, so only the name rules can apply there.

        A name that no rule matches, where an IP allow rule could admit its addresses,
        is ``False`` here: ``Socket.connect`` (and a tunnel with ``resolve_locally``)
        resolves it and admits it when an IP rule allows every address it has.
        """
        return self._name_verdict(host, port) is True

    def _name_verdict(self, host: str, port: int) -> bool | None:
        """:meth:`is_allowed`, or ``None`` for a name no rule matches that an IP allow
        rule for ``port`` could admit by its addresses (for whoever resolves it)."""
        if not self.rules:
            return True
        name = _canonical_host(host)
        if name is None or not _reachable_form(name):
            return False  # not a name any connection could reach: nothing to allow
        for rule in self.rules:
            if rule.matches_port(port) and rule.matches_host(name):
                if not rule.allow:
                    return False
                return not _is_ip_literal(name) or self.is_address_allowed(name, port)
        if _is_ip_literal(name):
            return False
        if any(rule.allow and rule.is_ip_rule and rule.matches_port(port) for rule in self.rules):
            return None
        return False

    def is_address_allowed(self, address: str, port: int) -> bool:
        """Decide the IP rules for a resolved address (the DNS-rebinding guard).

        Name rules do not apply to addresses; the first matching IP rule wins, and an
        address no IP rule mentions is allowed (the name itself was already checked).
        """
        return self._address_verdict(address, port) is not False

    def _address_verdict(self, address: str, port: int) -> bool | None:
        """The first matching IP rule's verdict on ``address``; ``None`` when none does."""
        for rule in self.rules:
            if rule.is_ip_rule and rule.matches_port(port) and rule.matches_host(address):
                return rule.allow
        return None

    def check_access(self, host: str, port: int) -> None:
        """Raise unless the rules allow ``host:port``.

        Raises:
            AccessDeniedError: the rules deny it.
        """
        self._check_target(host, port, resolves=False)

    def _check_target(self, host: str, port: int, *, resolves: bool) -> bool:
        """:meth:`check_access` for a caller that resolves ``host`` and checks its
        addresses (``resolves``): ``True`` when the name itself matched no rule, so only
        addresses an IP rule allows may be connected to.

        Raises:
            AccessDeniedError: the rules deny it.
        """
        verdict = self._name_verdict(host, port)
        if verdict is True:
            return False
        if verdict is None and resolves:
            return True
        raise AccessDeniedError(
            f"client port {self.name!r} does not allow {show_address(host, port)}",
            host=host,
            port=port,
            port_name=self.name,
        )

    def _check_capacity(self) -> None:
        """Raise ``PortLimitError`` if the port is full (a pre-check before connecting, so
        a refused socket costs no packet; ``_acquire`` stays the authority)."""
        if self.max_sockets is not None and self._open[0] >= self.max_sockets:
            raise PortLimitError(
                f"client port {self.name!r} already has {self.max_sockets} open sockets",
                port_name=self.name,
                limit=self.max_sockets,
            )

    def _acquire(self) -> None:
        with self._lock:
            self._check_capacity()
            self._open[0] += 1

    def _release(self) -> None:
        with self._lock:
            self._open[0] -= 1


#: What a host a connection could reach is made of, once canonical: a name's characters
#: (IP literals among them), or an IPv6 address (with a zone on direct connects).
_HOST_CHARS_RE: Final = re.compile(r"[a-z0-9_.-]+")


def _reachable_form(name: str) -> bool:
    """Whether a canonical host could name a destination at all (``::ffff:127.1``,
    ``a/b`` or ``*`` cannot: no connection would be made to them, so no rule allows
    them)."""
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return False
        return True
    return _HOST_CHARS_RE.fullmatch(name) is not None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def host_form_problem(host: str) -> str | None:
    """What is wrong with the form of ``host`` (a name or an address to connect to or to
    verify), or ``None``: brackets around anything but an IPv6 address (they would be
    dropped unseen), a colon outside one (``host:port``), or an IP address with a final
    dot, which the resolver looks up as a name while access rules and TLS would judge
    the address (``127.0.0.1.`` in ``/etc/hosts`` reaching another host, verified as
    127.0.0.1). Judged as written, and as the resolver and TLS get it (UTS #46 maps
    ``127.0.0.1。`` to ``127.0.0.1.``); a name that does not map is the callers' to
    refuse."""
    problem = _form_problem(host)
    if problem is None and not host.isascii():
        try:
            problem = _form_problem(idna_host(host.strip("[]")))
        except UnicodeError:
            pass
    return problem


def _form_problem(host: str) -> str | None:
    if host.endswith(".") and _is_ip_literal(host[:-1]):
        return (
            "an IP address with a final dot is a name to the resolver (looked up in DNS "
            "or /etc/hosts), while access rules and TLS would judge the address; write "
            "the address without the dot"
        )
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if inner != host or ":" in inner or "[" in inner or "]" in inner:
        try:
            ipaddress.IPv6Address(inner)  # (a zone ID, "%eth0", included)
        except ValueError:
            if inner != host:
                return "brackets are for IPv6 addresses only"
            if "[" in host or "]" in host:
                return "its brackets do not enclose it"
            return "a colon outside an IPv6 address (a port goes in its own argument)"
    return None


def check_encoding(encoding: str) -> None:
    """Raise ``UsageError`` unless ``encoding`` names a Python text codec.

    ``codecs.lookup`` also knows bytes-to-bytes codecs (``hex``, ``base64``, ``zlib``)
    and ``rot13``, which ``str.encode`` and ``bytes.decode`` refuse with a
    ``LookupError``: refused here, so that it is a ``UsageError`` before anything is sent.
    """
    try:
        "".encode(encoding)
        b"".decode(encoding)
    except (LookupError, TypeError) as exc:
        raise UsageError(f"{encoding!r} is not a text encoding Python knows: {exc}") from exc


DEFAULT_PORT: Final = ClientPort()

"""Access rules (JANUS CLSOCK ALLOW/DISALLOW) and max_sockets (SOCKPMAX, -109).

The decisions are checked as a table; the "refused before any packet" promise is checked
with listeners that record every connection they accept.
"""

from __future__ import annotations

import socket

import anyio
import pytest
from anyio.abc import SocketStream

from janusnet import (
    AccessDeniedError,
    AccessRule,
    ClientPort,
    HandshakeError,
    PortLimitError,
    ProxyTunnel,
    ReturnCode,
    Socket,
    TLSMode,
    UsageError,
    allow,
    deny,
)
from loopback import read_line, read_until_eof, serve, unanswering_listener

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------- the decision table

A = allow
D = deny
RULE_TABLE: list[tuple[str, list[AccessRule], str, int, bool]] = [
    ("no rules allow everything", [], "anything.example", 1, True),
    ("exact host", [A("api.example.com")], "api.example.com", 443, True),
    ("exact host is case-insensitive", [A("API.example.com.")], "api.EXAMPLE.com", 443, True),
    ("exact host, other host", [A("api.example.com")], "www.example.com", 443, False),
    ("suffix matches a subdomain", [A("*.example.com")], "a.b.example.com", 443, True),
    ("suffix excludes the bare domain", [A("*.example.com")], "example.com", 443, False),
    ("suffix is not a substring", [A("*.example.com")], "badexample.com", 443, False),
    ("ipv4 address", [A("192.0.2.7")], "192.0.2.7", 80, True),
    ("ipv4 address, other", [A("192.0.2.7")], "192.0.2.8", 80, False),
    ("cidr v4 inside", [A("10.0.0.0/8")], "10.200.3.4", 80, True),
    ("cidr v4 outside", [A("10.0.0.0/8")], "11.0.0.1", 80, False),
    ("cidr v6 inside", [A("2001:db8::/32")], "2001:db8::1", 443, True),
    ("cidr v6 in brackets", [A("2001:db8::/32")], "[2001:db8:ffff::2]", 443, True),
    ("cidr v6 outside", [A("2001:db8::/32")], "2001:db9::1", 443, False),
    ("ip rule never matches a name", [A("127.0.0.0/8")], "localhost", 80, False),
    ("single port", [A("*", 443)], "h.example", 443, True),
    ("single port, other port", [A("*", 443)], "h.example", 80, False),
    ("port range low edge", [A("*", (8000, 8099))], "h.example", 8000, True),
    ("port range high edge", [A("*", (8000, 8099))], "h.example", 8099, True),
    ("port range outside", [A("*", (8000, 8099))], "h.example", 8100, False),
    ("first match wins: deny first", [D("evil.example"), A("*")], "evil.example", 443, False),
    ("first match wins: allow first", [A("evil.example"), D("*")], "evil.example", 443, True),
    ("first match wins: falls through", [D("evil.example"), A("*")], "ok.example", 443, True),
    ("rules given, none match: deny", [A("*.corp"), A("10.0.0.0/8")], "x.example", 443, False),
    ("deny by port only", [D("*", 25), A("*")], "mail.example", 25, False),
    # An IP literal must also pass the IP rules, wherever they are: the same answer as the
    # DNS-rebinding guard gives for a name resolving to that address.
    ("ip literal, later ip deny", [A("*"), D("127.0.0.0/8")], "127.0.0.1", 80, False),
    ("ip literal, later ip deny v6", [A("*"), D("::1/128")], "::1", 80, False),
    ("ip literal, ip allow first", [A("127.0.0.1"), D("127.0.0.0/8")], "127.0.0.1", 80, True),
    ("ip literal, ip deny other port", [A("*"), D("127.0.0.0/8", 25)], "127.0.0.1", 80, True),
    # Addresses are judged as what they reach: an IPv4-mapped IPv6 address is its IPv4
    # host, the unspecified address is this machine (no bypass by spelling).
    ("v4-mapped v6, v4 deny", [D("127.0.0.0/8"), A("*")], "::ffff:127.0.0.1", 80, False),
    ("v4-mapped v6 hex form", [D("127.0.0.0/8"), A("*")], "[::ffff:7f00:1]", 80, False),
    ("v4-mapped v6, later deny", [A("*"), D("10.0.0.0/8")], "::ffff:10.1.2.3", 443, False),
    ("v4-mapped v6, v4 allow", [A("10.0.0.0/8")], "::ffff:10.1.2.3", 443, True),
    ("v4-mapped v6, outside", [A("10.0.0.0/8")], "::ffff:11.1.2.3", 443, False),
    ("v4-mapped v6, v6 rule", [D("::ffff:0:0/96"), A("*")], "::ffff:192.0.2.1", 443, False),
    ("v4-mapped v6, public", [D("127.0.0.0/8"), A("*")], "::ffff:192.0.2.1", 443, True),
    ("unspecified v4 is loopback", [D("127.0.0.0/8"), A("*")], "0.0.0.0", 80, False),
    ("unspecified v6 is loopback", [D("::1/128"), A("*")], "[::]", 80, False),
    ("mapped unspecified is v4 loopback", [D("127.0.0.0/8"), A("*")], "::ffff:0.0.0.0", 80, False),
    ("mapped unspecified, hex", [A("*"), D("127.0.0.0/8")], "::ffff:0:0", 80, False),
    # An allow rule judges only what the connection reaches: "::" reaches ::1, not
    # 127.0.0.1, and a mapped address its IPv4 host.
    ("allow v4 loopback, not ::", [A("127.0.0.1"), D("*")], "::", 80, False),
    ("allow v6 loopback, ::", [A("::1"), D("*")], "::", 80, True),
    ("unspecified v6 is v6 loopback", [D("127.0.0.0/8"), A("*")], "::", 80, True),
    ("v6 deny-all leaves 0.0.0.0", [D("::/0"), A("*")], "0.0.0.0", 80, True),
    ("allow v6 range, mapped v4", [A("::ffff:0:0/96"), D("*")], "::ffff:10.1.2.3", 443, False),
    # A deny rule also meets the IPv4 address an IPv6 address embeds, which a network may
    # translate or tunnel to: IPv4-compatible, IPv4-translated, NAT64, 6to4.
    ("v4-compatible", [D("127.0.0.0/8"), A("*")], "[::127.0.0.1]", 443, False),
    ("v4-compatible, hex", [D("127.0.0.0/8"), A("*")], "[::7f00:1]", 443, False),
    ("v4-translated", [D("127.0.0.0/8"), A("*")], "[::ffff:0:7f00:1]", 443, False),
    ("nat64 well-known prefix", [A("*"), D("10.0.0.0/8")], "64:ff9b::10.1.2.3", 443, False),
    ("nat64, public inside", [D("10.0.0.0/8"), A("*")], "64:ff9b::8.8.8.8", 443, True),
    ("6to4", [D("10.0.0.0/8"), A("*")], "[2002:a01:203::1]", 443, False),
    ("6to4, public inside", [D("10.0.0.0/8"), A("*")], "[2002:808:808::1]", 443, True),
    ("nat64 unspecified inside", [D("127.0.0.0/8"), A("*")], "64:ff9b::", 443, False),
    ("v6 loopback is not v4-compatible", [D("0.0.0.1"), A("*")], "::1", 443, True),
    # ... but an allow rule still admits only the host really reached.
    ("allow v4, nat64 spelling", [A("10.0.0.0/8"), D("*")], "64:ff9b::10.1.2.3", 443, False),
    # A deny rule written in the mapped form is about IPv4 hosts: it meets their literals.
    ("mapped-form deny, v4 literal", [D("::ffff:7f00:0/104"), A("*")], "127.0.0.1", 443, False),
    ("mapped-form deny, other v4", [D("::ffff:7f00:0/104"), A("*")], "192.0.2.1", 443, True),
    ("v6 deny-all, v4 literal", [D("::/0"), A("*")], "192.0.2.1", 443, True),
    # Forms no connection could be made to are allowed by no rule.
    ("mapped short form", [D("127.0.0.0/8"), A("*")], "::ffff:127.1", 443, False),
    ("slash in a name", [A("*")], "a/b", 443, False),
    ("space inside a name", [A("*")], "exa mple.com", 443, False),
    ("star as a host", [A("*")], "*", 443, False),
    # Names are judged as the name that goes on the wire (UTS #46 mapping, then the IDNA
    # 2008 A-label): no bypass by spelling there either.
    ("full-width letters", [D("secret.example"), A("*")], "ｓｅｃｒｅｔ.example", 443, False),
    ("ideographic full stop", [D("secret.example"), A("*")], "secret。example", 443, False),
    ("full-width in a suffix", [D("*.corp.example"), A("*")], "a.ｃｏｒｐ.example", 443, False),
    ("a-label vs u-label rule", [D("bücher.example"), A("*")], "xn--bcher-kva.example", 1, False),
    ("u-label vs a-label rule", [D("xn--bcher-kva.example"), A("*")], "BÜCHER.example", 1, False),
    ("combining mark, NFC", [D("bücher.example"), A("*")], "bu\u0308cher.example", 443, False),
    ("u-label suffix rule", [A("*.bücher.example"), D("*")], "www.xn--bcher-kva.example", 1, True),
    ("full-width ip, ip deny", [D("127.0.0.0/8"), A("*")], "１２７.０.０.１", 80, False),
    ("invalid name, rules given", [A("*.example")], "a\u0378.example", 443, False),
]


@pytest.mark.parametrize(
    ("rules", "host", "port", "allowed"),
    [pytest.param(*row[1:], id=row[0]) for row in RULE_TABLE],
)
def test_rules_decide(rules: list[AccessRule], host: str, port: int, allowed: bool) -> None:
    client_port = ClientPort("RULES", rules=rules)
    assert client_port.is_allowed(host, port) is allowed
    if allowed:
        client_port.check_access(host, port)
    else:
        with pytest.raises(AccessDeniedError) as info:
            client_port.check_access(host, port)
        assert info.value.port == port and info.value.port_name == "RULES"


def test_rules_address_guard_applies_only_ip_rules() -> None:
    port = ClientPort(rules=[A("localhost"), D("127.0.0.0/8"), A("10.1.0.0/16"), D("10.0.0.0/8")])
    assert port.is_address_allowed("127.0.0.1", 80) is False
    assert port.is_address_allowed("10.1.2.3", 80) is True  # first IP rule wins
    assert port.is_address_allowed("10.2.0.1", 80) is False
    assert port.is_address_allowed("192.0.2.1", 80) is True  # no IP rule mentions it


@pytest.mark.parametrize(
    "bad",
    [
        lambda: allow(""),
        lambda: allow("*", 0),
        lambda: deny("*", (10, 5)),
        lambda: allow("*", 70000),
        lambda: deny("a\u0378.example"),
        # A deny rule that cannot match what it was meant to would fail open.
        lambda: deny("127.0.0.0/33"),
        lambda: deny("127.0.0.*"),
        lambda: deny("127.0.0.256"),
        lambda: deny("::g"),
        lambda: deny("a*b.example"),
        lambda: deny("exa mple.com"),
        lambda: deny("*."),
        lambda: deny(None),  # type: ignore[arg-type]
        lambda: deny("127.0.0.1", "34567"),  # type: ignore[arg-type]
        lambda: deny("127.0.0.1", (443,)),  # type: ignore[arg-type]
        lambda: deny("127.0.0.1", True),
        lambda: AccessRule(False, "h.example", (1.5, 2)),  # type: ignore[arg-type]
        # Hex spellings of an address: as a name rule they would never meet 127.0.0.1,
        # and a deny rule would fail open.
        lambda: deny("0x7f.0.0.1"),
        lambda: deny("0x7f000001"),
        lambda: deny("0X7F.1"),
        lambda: deny("host.123"),
    ],
    ids=[
        "empty-host",
        "port-0",
        "reversed-range",
        "port-too-big",
        "invalid-idna",
        "cidr-33",
        "glob",
        "bad-ipv4",
        "bad-ipv6",
        "inner-star",
        "space",
        "star-dot",
        "none",
        "port-str",
        "port-1-tuple",
        "port-bool",
        "port-float",
        "hex-dotted",
        "hex-whole",
        "hex-short-upper",
        "numeric-last-label",
    ],
)
def test_rules_refuse_bad_patterns(bad: object) -> None:
    with pytest.raises(UsageError):
        bad()  # type: ignore[operator]


def test_rule_pattern_errors_say_what_is_wrong() -> None:
    for make, message in [
        (lambda: allow(""), "needs a host pattern"),
        (lambda: deny("127.0.0.0/33"), "is not a valid IP address or CIDR range"),
        (lambda: deny("127.0.0.256"), "is not a valid IP address or CIDR range"),
        (lambda: allow("*", 65536), "is not within 1-65535"),
    ]:
        with pytest.raises(UsageError, match=message):
            make()


def test_rule_edges_are_accepted() -> None:
    """Ports 1 and 65535, labels of one and two characters, and a CIDR range with host
    bits set."""
    assert allow("*", 1).matches_port(1)
    assert allow("*", 65535).matches_port(65535)
    assert deny("*", (1, 65535)).ports == (1, 65535)
    for name in ("db", "a.b.example", "x.co", "*.co.uk"):
        assert allow(name).host == name
    rule = deny("10.1.2.3/8")
    assert rule.is_ip_rule and rule.matches_host("10.200.0.1")
    # A host that is no valid international name meets no pattern but '*'.
    assert allow("*.example.com").matches_host("a\u200d.example.com") is False


def test_rule_ports_as_a_list_are_refused() -> None:
    """``[80, 443]`` was read as the range 80 to 443: "ports 80 and 443" opened 364."""
    for make in (
        lambda: allow("*", [80, 443]),  # type: ignore[arg-type]
        lambda: deny("*", [25, 587]),  # type: ignore[arg-type]
        lambda: AccessRule(True, "h.example", [80, 443]),  # type: ignore[arg-type]
    ):
        with pytest.raises(UsageError, match=r"a list is ambiguous .* one rule per port"):
            make()
    assert allow("*", (80, 443)).matches_port(200)  # a tuple is the range, as documented


def test_deny_rule_meets_each_embedded_ipv4_spelling_of_one_address() -> None:
    """IPv4-translated, NAT64 and IPv4-compatible spellings of single addresses (odd
    last bits and addresses from 128.0.0.0 up included); 33 bits embed no IPv4."""
    port = ClientPort(rules=[deny("10.0.0.1"), deny("200.1.2.3"), deny("0.0.0.2"), allow("*")])
    for host in ("::ffff:0:a00:1", "64:ff9b::a00:1", "::a00:1", "::200.1.2.3", "::2"):
        assert port.is_allowed(host, 443) is False, host
    assert port.is_allowed("::1:a00:1", 443) is True


def test_client_port_refuses_bad_settings_and_keeps_its_own_rules() -> None:
    for bad in (
        lambda: ClientPort(tls="ALWAYS"),  # type: ignore[arg-type]
        lambda: ClientPort(line_end=b""),
        lambda: ClientPort(line_end="\r\n"),  # type: ignore[arg-type]
    ):
        with pytest.raises(UsageError):
            bad()
    rules = [deny("10.0.0.0/8"), allow("*")]
    port = ClientPort(rules=rules)
    rules.insert(0, allow("*"))  # the caller's list, changed afterwards
    assert port.rules == (deny("10.0.0.0/8"), allow("*"))
    assert port.is_allowed("10.1.2.3", 443) is False
    for empty in ("", "[]"):  # no host a connection could reach
        assert port.is_allowed(empty, 443) is False


def test_rules_must_be_access_rules() -> None:
    with pytest.raises(UsageError):
        ClientPort(rules=["*"])  # type: ignore[list-item]


# ---------------------------------------------------------------------- no packet when denied


class Recorder:
    """A loopback listener that records each accepted connection's first line."""

    def __init__(self, reply: bytes = b"") -> None:
        self.accepted: list[bytes] = []
        self.reply = reply
        self._accept = anyio.Event()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.accepted) < count:
                await self._accept.wait()

    async def __call__(self, stream: SocketStream) -> None:
        index = len(self.accepted)
        self.accepted.append(b"")
        self._accept.set()
        self._accept = anyio.Event()
        try:
            self.accepted[index] = await read_line(stream, bytearray())
        except anyio.EndOfStream:
            return
        await stream.send(self.reply)
        await read_until_eof(stream)


async def say_and_hang_up(sock: Socket, line: str) -> None:
    """Send one line to a :class:`Recorder`, FIN, and wait for its close."""
    async with sock:
        await sock.send_line(line)
        await sock.send_eof()
        with anyio.fail_after(5):
            assert await sock.recv() == b""


async def test_denied_direct_connect_sends_nothing(anyio_backend: str) -> None:
    recorder = Recorder()
    async with serve(recorder) as number:
        guarded = ClientPort("GUARD", rules=[D("127.0.0.1", number), A("*")])
        with pytest.raises(AccessDeniedError) as info:
            await Socket.connect("127.0.0.1", number, client_port=guarded)
        assert info.value.host == "127.0.0.1" and info.value.port == number
        # The same listener does see an allowed connection: accepts are recorded in order.
        await say_and_hang_up(await Socket.connect("127.0.0.1", number), "allowed")
    assert recorder.accepted == [b"allowed"]


@pytest.mark.parametrize(
    ("target", "rules"),
    [
        ("denied.example", [D("denied.example"), A("*")]),
        ("10.9.8.7", [A("*"), D("10.0.0.0/8")]),  # an IP target: IP rules apply, too
        ("::ffff:10.9.8.7", [A("*"), D("10.0.0.0/8")]),  # the same host, IPv4-mapped
        ("ｄｅｎｉｅｄ.example", [D("denied.example"), A("*")]),  # sent as denied.example
    ],
    ids=["name", "ip-literal", "v4-mapped", "full-width-name"],
)
async def test_denied_tunnel_target_never_reaches_the_proxy(
    anyio_backend: str, target: str, rules: list[AccessRule]
) -> None:
    proxy = Recorder(reply=b"HTTP/1.1 200 Connection established\r\n\r\n")
    async with serve(proxy) as number:
        guarded = ClientPort("TUNNEL", rules=rules)
        tunnel = ProxyTunnel(f"http://127.0.0.1:{number}", client_port=guarded)
        with pytest.raises(AccessDeniedError):
            await tunnel.open(target, 443)
        with pytest.raises(AccessDeniedError):
            await tunnel.open_tls(target, 443)
        async with await tunnel.open("allowed.example", 443) as sock:
            assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
    assert proxy.accepted == [b"CONNECT allowed.example:443 HTTP/1.1"]


async def test_another_spelling_cannot_reach_a_denied_name(anyio_backend: str) -> None:
    recorder = Recorder()
    async with serve(recorder) as number:
        guarded = ClientPort("SPELLING", rules=[D("localhost"), A("*")])
        # The resolver maps both to localhost, which reaches the recorder.
        for spelling in ("ｌｏｃａｌｈｏｓｔ", "LOCALHOST。"):
            with pytest.raises(AccessDeniedError):
                await Socket.connect(spelling, number, client_port=guarded)
        with pytest.raises(UsageError):  # not a valid name: refused as such, before the rules
            await Socket.connect("local\u0378host", number, client_port=guarded)
        await say_and_hang_up(await Socket.connect("ｌｏｃａｌｈｏｓｔ", number), "spelled")
    assert recorder.accepted == [b"spelled"]


async def test_mapped_address_cannot_reach_a_denied_ipv4_host(anyio_backend: str) -> None:
    recorder = Recorder()
    async with serve(recorder) as number:
        guarded = ClientPort("MAPPED", rules=[D("127.0.0.0/8"), A("*")])
        # The kernel would deliver this to the 127.0.0.1 listener (checked below).
        with pytest.raises(AccessDeniedError):
            await Socket.connect("::ffff:127.0.0.1", number, client_port=guarded)
        with pytest.raises(AccessDeniedError):
            await Socket.connect("0.0.0.0", number, client_port=guarded)
        await say_and_hang_up(await Socket.connect("::ffff:127.0.0.1", number), "mapped")
    assert recorder.accepted == [b"mapped"]


async def test_dns_rebinding_guard_checks_resolved_addresses(anyio_backend: str) -> None:
    recorder = Recorder()
    async with serve(recorder) as number:
        # The name is allowed, but it resolves into a denied range: refused, no packet.
        rebinding = ClientPort("DNS", rules=[A("localhost"), D("127.0.0.0/8")])
        with pytest.raises(AccessDeniedError) as info:
            await Socket.connect("localhost", number, client_port=rebinding)
        assert info.value.host == "127.0.0.1"  # names the address that was refused
        # Its twin: an IP rule that does not cover the resolved address lets it through.
        fine = ClientPort("DNS2", rules=[A("localhost"), D("10.0.0.0/8")])
        await say_and_hang_up(
            await Socket.connect("localhost", number, client_port=fine), "via localhost"
        )
    assert recorder.accepted == [b"via localhost"]


async def test_ip_allow_rules_admit_a_name_by_its_addresses(anyio_backend: str) -> None:
    """``ALLOW REMOTE <ip>`` and a connect by name: a name no rule matches is admitted
    when an IP rule allows every address it resolves to, and connected to those checked
    addresses; it was refused, though the rules' documentation said IP rules match the
    addresses a name resolves to on direct connects."""
    recorder = Recorder()
    loopback = [A("127.0.0.0/8"), A("::1")]  # (localhost may also resolve to ::1)
    async with serve(recorder) as number:
        admitted = ClientPort("BY-ADDRESS", rules=loopback)
        assert admitted.is_allowed("localhost", number) is False  # the name alone: no rule
        await say_and_hang_up(
            await Socket.connect("localhost", number, client_port=admitted), "by address"
        )
        # Not every address allowed, or not for this port: refused, nothing sent.
        for rules in (
            [A("10.0.0.0/8")],
            [A("127.0.0.0/8", 1)],
            [D("127.0.0.1"), D("::1"), *loopback],
            [D("*.localhost"), D("localhost"), *loopback],  # a name rule decides first
        ):
            with pytest.raises(AccessDeniedError) as info:
                await Socket.connect("localhost", number, client_port=ClientPort("N", rules=rules))
            assert "does not allow localhost" in str(info.value), rules
        # Only some of them allowed: refused, naming the one that is not.
        partly = ClientPort("PART", rules=[A("127.0.0.1"), A("::2")])
        if await _resolves_to_both("localhost", number):
            with pytest.raises(AccessDeniedError, match=r"localhost \(::1\)"):
                await Socket.connect("localhost", number, client_port=partly)
    assert recorder.accepted == [b"by address"]


async def _resolves_to_both(name: str, port: int) -> bool:
    infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return len({info[0] for info in infos}) == 2


# ---------------------------------------------------------------------- max_sockets (-109)


async def test_max_sockets_is_port_limit_and_released_on_close(anyio_backend: str) -> None:
    recorder = Recorder()
    async with serve(recorder) as number:
        capped = ClientPort("CAPPED", max_sockets=2)
        first = await Socket.connect("127.0.0.1", number, client_port=capped)
        second = await Socket.connect("127.0.0.1", number, client_port=capped)
        assert capped.open_sockets == 2
        with pytest.raises(PortLimitError) as info:
            await Socket.connect("127.0.0.1", number, client_port=capped)
        assert info.value.code == ReturnCode.PORT_LIMIT == -109
        assert info.value.limit == 2 and info.value.port_name == "CAPPED"
        await first.aclose()
        await first.aclose()  # idempotent: released once
        assert capped.open_sockets == 1
        third = await Socket.connect("127.0.0.1", number, client_port=capped)
        assert capped.open_sockets == 2
        other = ClientPort("OTHER", max_sockets=1)  # the cap is per port
        async with await Socket.connect("127.0.0.1", number, client_port=other):
            pass
        for sock in (second, third):
            await sock.aclose()
        assert capped.open_sockets == 0 == other.open_sockets
        await recorder.wait_for(4)
        await anyio.sleep(0.05)  # time for a fifth accept, if there were one
    assert len(recorder.accepted) == 4  # the refused third connect never reached it


async def test_max_sockets_holds_for_connects_that_race(anyio_backend: str) -> None:
    """Connects started together all pass the early check (no socket is open yet); the
    slot taken when a socket is made stays the authority: one socket, the rest -109."""
    recorder = Recorder()
    capped = ClientPort("ONE", max_sockets=1)
    made: list[Socket] = []
    refused: list[PortLimitError] = []

    async def connect(number: int) -> None:
        try:
            made.append(await Socket.connect("127.0.0.1", number, client_port=capped))
        except PortLimitError as exc:
            refused.append(exc)

    async with serve(recorder) as number:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(connect, number)
        assert (len(made), len(refused), capped.open_sockets) == (1, 2, 1)
        for sock in made:
            await sock.aclose()
    assert capped.open_sockets == 0


async def test_max_sockets_released_by_failed_handshake(anyio_backend: str) -> None:
    async def closer(stream: SocketStream) -> None:
        await stream.receive()

    async with serve(closer) as number:
        capped = ClientPort("CAPPED", tls=TLSMode.OPTIONAL, max_sockets=1)
        sock = await Socket.connect("localhost", number, client_port=capped)
        with pytest.raises(HandshakeError):
            await sock.ssl_on()
        assert sock.closed and capped.open_sockets == 0
        with pytest.raises(HandshakeError):
            await Socket.connect("localhost", number, client_port=capped, tls=True)
        assert capped.open_sockets == 0


@pytest.mark.parametrize("value", [-1, 1.5, float("inf"), float("nan"), True, "64", None])
def test_client_port_max_parse_bytes_must_be_an_int(value: object) -> None:
    with pytest.raises(UsageError, match="max_parse_bytes must be an int >= 0"):
        ClientPort("BAD", max_parse_bytes=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 2.0, True])
def test_client_port_max_sockets_must_be_an_int(value: object) -> None:
    with pytest.raises(UsageError, match="max_sockets"):
        ClientPort("BAD", max_sockets=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.5, float("inf"), float("nan"), True, "3", -1])
async def test_receive_sizes_must_be_ints(anyio_backend: str, value: object) -> None:
    """Sizes are ints (not bools, floats or strings): a clear UsageError, nothing read."""

    async def greet(stream: SocketStream) -> None:
        await stream.send(b"hello\r\n")
        await anyio.sleep(0.5)

    async with serve(greet) as number, await Socket.connect("127.0.0.1", number) as sock:
        with pytest.raises(UsageError, match="max_bytes must be an int"):
            await sock.recv_parsed(max_bytes=value)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="max_bytes must be an int"):
            await sock.recv(value)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="count must be an int"):
            await sock.recv_exactly(value)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="receive_window must be an int"):
            sock.receive_window = value  # type: ignore[assignment]
        assert await sock.recv_parsed() == (b"hello", b"\r\n", 1)  # nothing was lost


def test_client_port_copies_have_their_own_socket_count() -> None:
    import copy
    import pickle

    port = ClientPort("COPY", max_sockets=3, rules=[A("*.example"), D("*")])
    for twin in (copy.copy(port), copy.deepcopy(port), pickle.loads(pickle.dumps(port))):
        assert (twin.name, twin.max_sockets, twin.rules, twin.tokens.tokens) == (
            port.name,
            port.max_sockets,
            port.rules,
            port.tokens.tokens,
        )
        twin._acquire()  # counted on the twin only
        assert twin.open_sockets == 1 and port.open_sockets == 0
        twin._release()


async def test_ip_rules_keep_happy_eyeballs(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With IP rules janusnet resolves the name itself; its allowed addresses are still
    raced, so one that never answers costs 250 ms, not the whole timeout."""
    import socket

    from janusnet._transport import HAPPY_EYEBALLS_DELAY

    recorder = Recorder()
    async with serve(recorder) as number, unanswering_listener("127.0.0.2", number):
        # 127.0.0.2 on the same port number gives no answer; 127.0.0.1 serves.
        resolved = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number))
            for address in ("127.0.0.2", "127.0.0.1")
        ]

        async def fake_getaddrinfo(host: str, port: int, **kwargs: object) -> object:
            assert host == "multi.test"
            return resolved

        monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo)
        guarded = ClientPort("RACED", rules=[A("multi.test"), A("127.0.0.0/8")])
        started = anyio.current_time()
        with anyio.fail_after(5):
            sock = await Socket.connect("multi.test", number, client_port=guarded, timeout=3)
        assert anyio.current_time() - started < 3 * HAPPY_EYEBALLS_DELAY
        await say_and_hang_up(sock, "raced")
    assert recorder.accepted == [b"raced"]

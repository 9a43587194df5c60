"""SocketGroup (Janus sockNum = -1) over real loopback sockets, on asyncio and trio."""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import pytest
import trustme
from anyio.abc import SocketStream

from janusnet import (
    OPEN_STATES,
    ClientPort,
    ReturnCode,
    Socket,
    SocketGroup,
    SocketState,
    TLSMode,
    TokenSet,
    UsageError,
)
from loopback import Handler, echo, read_until_eof, serve, stall_after_hello, tls_server_side

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def port(ca: trustme.CA) -> ClientPort:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return ClientPort("GROUP", tls=TLSMode.OPTIONAL, ssl_context=context)


def tls_echo(server_context: ssl.SSLContext) -> Handler:
    """A peer that starts TLS right after accept, then echoes."""

    async def handler(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server_context))

    return handler


async def greeter(stream: SocketStream) -> None:
    """A plain peer that speaks first (two lines in one write), then echoes."""
    await stream.send(b"220 hello\r\n220 more\r\n")
    await echo(stream)


async def roundtrip(sock: Socket, text: str) -> bytes:
    await sock.send_line(text)
    return (await sock.recv_parsed()).data


async def test_group_ssl_on_all_mixed_sockets(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    never = ClientPort("NEVER", tls=TLSMode.NEVER)
    async with (
        serve(tls_echo(server_context)) as tls_number,
        serve(greeter) as greet_number,
        serve(echo) as echo_number,
        SocketGroup() as group,
    ):
        plain_a = await group.connect("localhost", tls_number, client_port=port)
        plain_b = await group.connect("localhost", tls_number, client_port=port)
        not_ssl = await group.connect("127.0.0.1", echo_number, client_port=never)
        pending = await group.connect("localhost", greet_number, client_port=port)
        assert (await pending.recv_parsed()).data == b"220 hello"
        assert pending.pending == len(b"220 more\r\n")  # buffered, unread
        already = await group.connect("localhost", tls_number, client_port=port, tls=True)
        assert len(group) == 5

        results = await group.ssl_on_all()

        assert results == {
            plain_a: ReturnCode.OK,
            plain_b: ReturnCode.OK,
            not_ssl: ReturnCode.NOT_SSL_PORT,
            pending: ReturnCode.PENDING_DATA,
        }
        assert list(results) == [plain_a, plain_b, not_ssl, pending]  # membership order
        assert already not in results
        for sock in (plain_a, plain_b, already):
            assert sock.tls is not None and sock.state is SocketState.CONNECTED
            assert await roundtrip(sock, "over tls") == b"over tls"
        for sock in (not_ssl, pending):
            assert sock.tls is None and sock.state is SocketState.CONNECTED
        assert await roundtrip(not_ssl, "still plain") == b"still plain"
        assert (await pending.recv_parsed()).data == b"220 more"  # nothing was lost
        assert await roundtrip(pending, "still plain") == b"still plain"
    assert all(s.closed for s in (plain_a, plain_b, not_ssl, pending, already))
    assert len(group) == 0


async def test_group_ssl_on_all_failed_handshake_spares_the_others(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async def plaintext(stream: SocketStream) -> None:
        await stream.receive()
        await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with serve(tls_echo(server_context)) as good, serve(plaintext) as bad:
        async with SocketGroup() as group:
            socks = [await group.connect("localhost", good, client_port=port) for _ in range(3)]
            broken = await group.connect("localhost", bad, client_port=port)
            closed = await group.connect("localhost", good, client_port=port)
            await closed.aclose()  # RESET: skipped, like a closed Janus socket

            results = await group.ssl_on_all(max_concurrency=1)

            assert results == {**dict.fromkeys(socks, ReturnCode.OK), broken: -111}
            assert broken.closed and broken.state is SocketState.RESET
            for sock in socks:
                assert await roundtrip(sock, "fine") == b"fine"
            assert await group.ssl_on_all() == {}  # nothing relevant is left


async def test_group_ssl_on_all_stalled_member_times_out_alone(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    async with serve(tls_echo(server_context)) as good, serve(stall_after_hello) as stalled:
        async with SocketGroup() as group:
            hung = await group.connect("localhost", stalled, client_port=port)
            socks = [await group.connect("localhost", good, client_port=port) for _ in range(2)]

            results = await group.ssl_on_all(max_concurrency=1, timeout=0.2)

            assert results == {hung: -111, **dict.fromkeys(socks, ReturnCode.OK)}
            assert hung.closed
            for sock in socks:  # queued behind the stalled one, upgraded all the same
                assert await roundtrip(sock, "fine") == b"fine"


async def test_group_ssl_on_all_total_timeout_bounds_the_whole_call(
    anyio_backend: str, port: ClientPort
) -> None:
    """Stalling peers hold every slot: ``total_timeout`` ends the call anyway, with a code
    for every member: -111 (closed) for those in flight, -149 (unchanged) for the one that
    never got a slot (which one that is, the scheduler decides)."""
    async with serve(stall_after_hello) as stalled:
        async with SocketGroup() as group:
            socks = [await group.connect("localhost", stalled, client_port=port) for _ in range(3)]

            with anyio.fail_after(5):
                results = await group.ssl_on_all(
                    max_concurrency=2, timeout=None, total_timeout=0.3
                )

            assert set(results) == set(socks)
            assert sorted(results.values()) == [-149, -111, -111]
            for sock, code in results.items():
                if code == ReturnCode.HANDSHAKE_FAILED:
                    assert sock.closed
                else:
                    assert not sock.closed and sock.tls is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None, True])
async def test_group_ssl_on_all_refuses_bad_concurrency(anyio_backend: str, bad: object) -> None:
    with pytest.raises(UsageError):
        await SocketGroup().ssl_on_all(max_concurrency=bad)  # type: ignore[arg-type]


async def test_group_membership_is_by_identity(anyio_backend: str) -> None:
    async with serve(echo) as number:
        a = await Socket.connect("127.0.0.1", number)
        b = await Socket.connect("127.0.0.1", number)
        group = SocketGroup([a])
        group.add(b)
        group.add(a)  # again: no change
        assert len(group) == 2 and list(group) == [a, b]
        assert a in group and b in group and object() not in group
        assert a != b and len({a, b}) == 2
        group.remove(a)
        assert list(group) == [b]
        with pytest.raises(KeyError):
            group.remove(a)
        group.discard(a)  # absent: fine
        with pytest.raises(UsageError):
            group.add("not a socket")  # type: ignore[arg-type]
        assert not a.closed  # removing does not close
        await a.aclose()
        await group.aclose()
        assert b.closed and len(group) == 0


async def test_group_select_by_state(anyio_backend: str) -> None:
    async def hold(stream: SocketStream) -> None:
        await read_until_eof(stream)
        await anyio.sleep(5)

    async with serve(hold) as number, SocketGroup() as group:
        connected = await group.connect("127.0.0.1", number)
        fin_sent = await group.connect("127.0.0.1", number)
        reset = await group.connect("127.0.0.1", number)
        await fin_sent.send_eof()
        await reset.aclose()
        assert group.select() == [connected, fin_sent, reset]
        assert group.select(SocketState.CONNECTED) == [connected]
        assert group.select(SocketState.FIN_SENT, SocketState.RESET) == [fin_sent, reset]
        assert group.select(SocketState.FIN_BOTH) == []
        with pytest.raises(UsageError, match="SocketState"):
            group.select("CONNECTED")  # type: ignore[arg-type]
        assert group.select_open() == [connected, fin_sent]
        assert group.select(*OPEN_STATES) == [connected, fin_sent]
        assert "FINS" in repr(group)


async def test_group_apply_settings_counts_changed_open_sockets(anyio_backend: str) -> None:
    async with serve(echo) as number, SocketGroup() as group:
        a = await group.connect("127.0.0.1", number)
        b = await group.connect("127.0.0.1", number)
        c = await group.connect("127.0.0.1", number)
        b.line_end = b"\n"
        await c.aclose()
        assert group.apply_settings(line_end=b"\n") == 1  # b had it, c is RESET
        assert a.line_end == b.line_end == b"\n"
        assert group.apply_settings(line_end=b"\n") == 0
        assert group.apply_settings(parse_tokens="AMBIG|0D0A|0D", encoding="cp037") == 2
        assert a.parse_tokens == TokenSet([b"\r\n", b"\r"]) and b.encoding == "cp037"
        with pytest.raises(UsageError):
            group.apply_settings(line_end=b"\r", encoding="no-such-codec")
        assert a.line_end == b"\n"  # a bad value changes nothing
        with pytest.raises(UsageError):
            group.apply_settings(line_end=b"")
        await a.send_line("x")
        assert await a.recv_exactly(2) == "x".encode("cp037") + b"\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssl_context": "x"},
        {"server_hostname": 5},
        {"timeout": "1"},
        {"total_timeout": float("nan")},
    ],
    ids=["context-str", "hostname-int", "timeout-str", "total-nan"],
)
async def test_group_ssl_on_all_wrong_argument_types_touch_no_member(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort, kwargs: dict[str, Any]
) -> None:
    async with serve(tls_echo(server_context)) as good:
        async with SocketGroup() as group:
            socks = [await group.connect("localhost", good, client_port=port) for _ in range(2)]
            with pytest.raises(UsageError):
                await group.ssl_on_all(**kwargs)
            assert all(sock.tls is None and not sock.closed for sock in socks)
            assert await group.ssl_on_all() == dict.fromkeys(socks, ReturnCode.OK)


async def test_group_ssl_on_all_codes_match_what_happened_as_the_deadline_falls(
    anyio_backend: str, server_context: ssl.SSLContext, port: ClientPort
) -> None:
    """Whatever point a tiny ``total_timeout`` reaches (before a slot, between the slot
    and the handshake, during it), each code tells the truth: -111 only for a member
    that was closed, -149 only for one left open and plain, 0 only for one upgraded."""

    async with serve(tls_echo(server_context)) as good:
        for attempt in range(40):
            async with SocketGroup() as group:
                socks = [
                    await group.connect("localhost", good, client_port=port) for _ in range(4)
                ]
                results = await group.ssl_on_all(total_timeout=0.00002 * attempt)
                for sock in socks:
                    code = results[sock]
                    if code == ReturnCode.HANDSHAKE_FAILED:
                        assert sock.closed, attempt
                    elif code == ReturnCode.OTHER:
                        assert not sock.closed and sock.tls is None, attempt
                    else:
                        assert code == ReturnCode.OK and sock.tls is not None, attempt

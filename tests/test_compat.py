"""janusnet.compat: $Sock_* calls returning legacy numbers, over real loopback sockets."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import trustme
from anyio.abc import SocketStream

from janusnet import ClientPort, ReturnCode, TLSMode, UsageError, compat, deny
from janusnet.compat import (
    sock_close,
    sock_conn,
    sock_info,
    sock_num,
    sock_recv,
    sock_recvprs,
    sock_send,
    sock_sendln,
    sock_set,
    sock_ssl_on,
)
from janusnet.testing import ConnectProxy, ProxyBehaviour, TLSOrigin
from loopback import (
    echo,
    read_line,
    read_until_eof,
    reset_connection,
    serve,
    stall_after_hello,
    tls_server_side,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
async def clean_registry(anyio_backend: str) -> AsyncIterator[None]:
    """Every test must close its numbered sockets; close leftovers and fail if any."""
    assert sock_num() == ""
    yield
    left = sock_num()
    await sock_close(-1)
    assert left == "", f"the test left socket(s) {left} open"


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture(scope="module")
def webdrops(origin: TLSOrigin) -> ClientPort:
    """``JANUS DEFINE WEBDROPS ... CLSOCK ... SSL ... SSLOPT``: plain at connect, SSLOn ok."""
    return ClientPort("WEBDROPS", tls=TLSMode.OPTIONAL, ssl_context=origin.client_context())


async def seed_example(
    port: ClientPort, proxy: ConnectProxy, origin: TLSOrigin, *, injected: bool = False
) -> str:
    """The $Sock_SSL_On page's example, statement by statement."""
    num = await sock_conn(port, proxy.host, proxy.port)  # no SSL option: plain
    assert num == 2
    sock_set(num, "LINEND", "0D0A")
    sock_set(num, "PRSTOK", "0D0A")
    assert await sock_sendln(num, f"CONNECT {origin.authority} HTTP/1.0") == 0
    assert await sock_sendln(num) == 0
    _, status, index = await sock_recvprs(num)
    assert isinstance(status, str) and index == 1
    assert status.split()[1] == "200"  # word 2 of the status line
    while True:
        _, line, _ = await sock_recvprs(num)
        if len(line) == 0:  # $lstr_len(%line) = 0: the empty line ends the head
            break
    if injected:
        assert await sock_ssl_on(num, server_hostname="localhost") == -112
        assert await sock_recv(num, 8) == (8, "INJECTED")  # drain, then try again
    # Janus checks no host name; janusnet does, against the target's name.
    assert await sock_ssl_on(num, server_hostname="localhost") == 0
    assert await sock_sendln(num, "GET /seed HTTP/1.0") == 0
    assert await sock_sendln(num) == 0
    count, reply = await sock_recv(num)  # maxbytes = minbytes = 0: until FIN
    assert isinstance(reply, str) and count == len(reply.encode())
    assert sock_info(num, "STAT") == "FINR"
    assert await sock_close(num) == 1
    assert proxy.log[0].request_line == f"CONNECT {origin.authority} HTTP/1.0"
    return reply


async def test_compat_seed_example_connect_then_ssl_on(
    anyio_backend: str, webdrops: ClientPort, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    reply = await seed_example(webdrops, proxy, origin)
    assert reply.startswith("HTTP/1.1 200 OK\r\n")
    assert reply.endswith("hello from janusnet origin: GET /seed\n")


async def test_compat_seed_example_refuses_injected_bytes(
    anyio_backend: str, webdrops: ClientPort, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    proxy.behaviour = ProxyBehaviour.EXTRA_BYTES
    reply = await seed_example(webdrops, proxy, origin, injected=True)
    assert "GET /seed" in reply


async def test_compat_fin_on_a_tls_socket_is_refused_before_sending(
    anyio_backend: str, webdrops: ClientPort, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    """ "Send the request with FIN" on a TLS socket: a UsageError, raised before the
    payload goes (it was raised after it had gone, halfway through a port)."""
    num = await sock_conn(webdrops, proxy.host, proxy.port)
    sock_set(num, "LINEND", "0D0A")
    assert await sock_sendln(num, f"CONNECT {origin.authority} HTTP/1.0") == 0
    assert await sock_sendln(num) == 0
    while len((await sock_recvprs(num))[1]):
        pass
    assert await sock_ssl_on(num, server_hostname="localhost") == 0
    for send in (sock_send, sock_sendln):
        with pytest.raises(UsageError, match="FIN on a TLS socket: TLS has no half-close"):
            await send(num, "GET /first HTTP/1.0\r\n\r\n", "FIN")
    assert sock_info(num, "STAT") == "CONN"
    assert await sock_sendln(num, "GET /second HTTP/1.0\r\n") == 0
    _, reply = await sock_recv(num)
    assert isinstance(reply, str) and "GET /second" in reply and "/first" not in reply
    assert await sock_close(num) == 1


async def test_compat_conn_codes(anyio_backend: str) -> None:
    async def tls_refuser(stream: SocketStream) -> None:
        await stream.receive()

    async with serve(echo) as number, serve(tls_refuser) as no_tls:
        denied = ClientPort("DENY", rules=[deny("127.0.0.1")])
        assert await sock_conn(denied, "127.0.0.1", number) == ReturnCode.ACCESS_DENIED == -101
        capped = ClientPort("CAPPED", max_sockets=1)
        compat.define_port(capped)
        first = await sock_conn("capped", "127.0.0.1", number)
        assert first == 2
        assert await sock_conn("CAPPED", "127.0.0.1", number) == ReturnCode.PORT_LIMIT == -109
        compat.registry.max_sockets = 1
        try:
            assert await sock_conn(None, "127.0.0.1", number) == ReturnCode.NO_FREE_SOCKET
        finally:
            compat.registry.max_sockets = None
        await sock_close(first)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        closed_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()
        assert await sock_conn(None, "127.0.0.1", closed_port) == ReturnCode.CONNECT_FAILED
        assert await sock_conn(None, "localhost", no_tls, "SSL") == -103
        assert sock_num() == ""  # failures never take a number
        with pytest.raises(UsageError):
            await sock_conn("NO-SUCH-PORT", "127.0.0.1", number)
        with pytest.raises(UsageError):
            await sock_conn(ClientPort(tls=TLSMode.NEVER), "127.0.0.1", number, "SSL")
        with pytest.raises(UsageError):
            await sock_conn(None, "127.0.0.1", number, "FINCLOSE")


async def test_compat_numbers_and_selections(anyio_backend: str) -> None:
    async def hold(stream: SocketStream) -> None:
        await read_until_eof(stream)
        await anyio.sleep(5)

    async with serve(hold) as number:
        a, b, c = [await sock_conn(None, "127.0.0.1", number) for _ in range(3)]
        assert (a, b, c) == (2, 3, 4)
        assert await sock_close(b) == 1
        assert await sock_conn(None, "127.0.0.1", number) == 3  # lowest free number
        assert await sock_send(c, "", "FIN") == 0
        assert sock_info(c, "STAT") == "FINS"
        assert sock_num() == sock_num("ANY") == "2 3 4"
        assert sock_num("FINS") == "4"
        assert sock_num("NOT FINS") == "2 3"
        assert sock_num("CONN OR FINS") == "2 3 4"
        assert sock_num("open") == "2 3 4"
        assert sock_num("RESET") == ""
        for bad in ("CAPTURE", "CONN OR", "CONN FINS", "NOT"):
            with pytest.raises(UsageError):
                sock_num(bad)
        assert await sock_close(-1) == 1
        assert sock_num() == ""
        with pytest.raises(UsageError):
            await sock_close(2)


async def test_compat_set_and_info(anyio_backend: str) -> None:
    async with serve(echo) as number:
        num = await sock_conn(None, "127.0.0.1", number)
        other = await sock_conn(None, "127.0.0.1", number)
        assert sock_info(num, "REMOTE") == f"127.0.0.1 {number}"
        assert sock_set(num, "LINEND", "0A") == "0D0A"
        assert sock_info(num, "LINEND") == "0A"
        assert await sock_sendln(num, "one") == 0
        assert await sock_sendln(num, "two", "LINEND 0D0A") == 0
        assert await sock_recv(num, 9) == (9, "one\ntwo\r\n")
        assert sock_set(num, "PRSTOK", "0D0A|0A") == "0D0A"
        assert sock_info(num, "PRSTOK") == "0D0A|0A"
        await sock_send(num, b"a\nbc\r\n")
        assert await sock_recvprs(num) == (2, "a", 2)
        assert await sock_recvprs(num) == (4, "bc", 1)  # the count includes the token
        assert sock_set(num, "BINARY") == "CHAR"
        await sock_sendln(num, b"raw")
        assert await sock_recvprs(num) == (4, b"raw", 2)
        assert sock_info(num, "CHAR") == "BINARY"
        await sock_sendln(num, "ünï", "CHAR")  # per call: translate this one
        assert await sock_recv(num, 6, 6, "CHAR") == (6, "ünï\n")  # 5 bytes + LF
        assert sock_set(num, "CHAR") == "BINARY"
        assert sock_set(num, "XTAB", "cp037") == "utf-8"
        await sock_send(num, "CONNECT", "PUSH")
        assert await sock_recv(num, 7, 7, "BINARY") == (7, "CONNECT".encode("cp037"))
        assert sock_set(num, "XTAB", "STANDARD") == "cp037"
        assert sock_set(num, "RECVLIM", "5") == "0"
        await sock_send(num, "0123456789")
        assert await sock_recv(num, 100, 100) == (5, "01234")
        assert sock_info(num, "RECVLIM") == "0"
        assert await sock_recv(num, 100) == (0, "")  # the spent window reads as FIN
        assert sock_set(num, "RECVLIM", 0) == "0"
        assert await sock_recv(num, 5) == (5, "56789")
        # -1: every open socket, answering how many changed.
        assert sock_set(-1, "LINEND", "0D0A") == "1"  # `other` already had 0D0A
        assert sock_set(-1, "LINEND", "0D0A") == "0"
        assert sock_set(-1, "XTAB", "cp500") == "2"
        assert sock_info(other, "XTAB") == "cp500"
        assert sock_set(num, "PRSTOK", "NONE") == "0D0A|0A"
        with pytest.raises(UsageError):
            await sock_recvprs(num)
        assert sock_set(num, "LINEND", "NONE") == "0D0A"
        with pytest.raises(UsageError):
            await sock_sendln(num, "no line end")
        for keyword, value in [
            ("LINEND", "0G"),
            ("LINEND", "0D 0A"),  # no blanks, as inside a PRSTOK token
            ("LINEND", "0D0"),
            ("LINEND", ""),
            ("LINEND", None),
            ("PRSTOK", "0D0A|0D"),  # a prefix needs AMBIG|
            ("RECVLIM", "-1"),
            ("XTAB", "no-such-codec"),
            ("BINARY", "yes"),
            ("TIMEOUT", "5"),
        ]:
            with pytest.raises(UsageError):
                sock_set(num, keyword, value)
        with pytest.raises(UsageError):
            sock_info(num, "NOPE")
        with pytest.raises(UsageError):
            sock_set(99, "CHAR")
        await sock_close(-1)


async def test_compat_reset_socket_answers_minus_one_and_reset(anyio_backend: str) -> None:
    async def resetter(stream: SocketStream) -> None:
        await read_line(stream, bytearray())
        await reset_connection(stream)

    async with serve(resetter) as number:
        num = await sock_conn(None, "127.0.0.1", number)
        assert await sock_sendln(num, "bye") == 0
        with anyio.fail_after(5):
            assert await sock_recv(num, 10) == (-1, "")
        assert sock_info(num, "STAT") == "RESET"
        assert sock_num("RESET") == str(num)  # dead but numbered until closed
        assert await sock_send(num, "x") == -1
        assert await sock_recv(num) == (-1, "")
        assert await sock_recvprs(num) == (-1, "", 0)
        assert sock_set(num, "LINEND", "0A") == "RESET"
        assert sock_info(num, "LINEND") == "RESET"
        assert sock_info(num, "REMOTE") == "RESET"
        assert sock_set(-1, "LINEND", "0A") == "0"  # RESET sockets are not relevant
        with pytest.raises(UsageError):
            sock_set(num, "LINEND", "zz")  # a bad value is refused even then
        assert await sock_ssl_on(num) == -149
        assert await sock_close(num) == 1
        assert sock_num() == ""


async def test_compat_recv_min_and_max(anyio_backend: str) -> None:
    async def talker(stream: SocketStream) -> None:
        await stream.send(b"0123456789")
        await read_line(stream, bytearray())
        await stream.send(b"tail")

    async with serve(talker) as number:
        num = await sock_conn(None, "127.0.0.1", number, "NOSSL")
        assert await sock_recv(num, 4) == (4, "0123")  # minbytes 0 = maxbytes
        assert await sock_recv(num, 100, 1) == (6, "456789")  # 1, plus what is buffered
        await sock_sendln(num, "more")
        assert await sock_recv(num) == (4, "tail")  # until FIN
        assert await sock_recv(num) == (0, "")
        assert sock_info(num, "STAT") == "FINR"
        with pytest.raises(UsageError):
            await sock_recv(num, 5, 6)
        with pytest.raises(UsageError):
            await sock_recv(num, -5)
        await sock_close(num)


async def test_compat_char_mode_never_fails_and_loses_nothing(anyio_backend: str) -> None:
    """Janus's CHAR translation never fails. Bytes UTF-8 cannot decode (a Latin-1 line,
    a character that ``maxbytes`` cuts in two, raw binary) come back as lone surrogates,
    not as an exception after the bytes were taken; the next record is intact; and a
    CHAR send of such text puts the very same bytes back on the wire."""
    async with serve(echo) as number:
        num = await sock_conn(None, "127.0.0.1", number, "NOSSL")
        sent = b"caf\xe9\r\nnext\r\n\xc3\xa9t\xc3\xa9\r\nraw\xff\xfe"
        assert await sock_send(num, sent) == 0
        assert await sock_recvprs(num) == (6, "caf\udce9", 1)
        assert await sock_recvprs(num) == (6, "next", 1)
        first = await sock_recvprs(num, 1)  # cuts the first two-byte character
        rest = await sock_recvprs(num)
        assert first == (1, "\udcc3", 0) and rest[0] == 6 and rest[2] == 1
        assert (first[1] + rest[1]).encode("utf-8", "surrogateescape") == "été".encode()
        count, raw = await sock_recv(num, 5)
        assert (count, raw) == (5, "raw\udcff\udcfe")
        assert await sock_send(num, raw) == 0  # CHAR: the surrogates go back as bytes
        assert await sock_recv(num, 5, 0, "BINARY") == (5, b"raw\xff\xfe")
        with pytest.raises(UsageError, match="in utf-8"):
            await sock_send(num, "\ud800")  # a surrogate no receive made: refused
        await sock_close(num)


async def test_compat_options_checked_on_every_call(anyio_backend: str) -> None:
    """Options are case-blind and checked on every call, the same string twice too (they
    are remembered once checked); anything but a str is refused."""

    heard: list[bytes] = []
    done = anyio.Event()

    async def lines(stream: SocketStream) -> None:
        await stream.send(b"caf\xc3\xa9\r\nraw\r\nlast\r\n")
        heard.append(await read_line(stream, bytearray()))
        done.set()

    async with serve(lines) as number:
        num = await sock_conn(None, "127.0.0.1", number, "nossl")
        for _ in range(2):
            with pytest.raises(UsageError, match="unknown option"):
                await sock_recvprs(num, -1, "BINARY FIN")
            for bad in (["BINARY"], b"BINARY", None):
                with pytest.raises(UsageError, match="options must be a str"):
                    await sock_recvprs(num, -1, bad)  # type: ignore[arg-type]
        assert await sock_recvprs(num, -1, "char") == (7, "café", 1)
        assert await sock_recvprs(num, -1, " binary ") == (5, b"raw", 1)
        assert await sock_recvprs(num, -1, "") == (6, "last", 1)
        with pytest.raises(UsageError, match="unknown option"):
            await sock_send(num, "x", "BINARY NOPE")
        with pytest.raises(UsageError, match="options must be a str"):
            await sock_sendln(num, "x", None)  # type: ignore[arg-type]
        assert await sock_sendln(num, "é", "linend 0A binary") == 0  # latin-1, LF
        assert await sock_sendln(num, "done", "Char") == 0
        with anyio.fail_after(5):
            await done.wait()
        assert heard == [b"\xe9\ndone"]
        await sock_close(num)


async def test_compat_arguments_of_the_wrong_type_are_usage_errors(anyio_backend: str) -> None:
    """Where Janus would cancel the request, compat raises UsageError: never an
    AttributeError from inside, and never a value quietly cut (RECVLIM 2.9 is not 2)."""
    async with serve(echo) as number:
        num = await sock_conn(None, "127.0.0.1", number)
        bad_calls = [
            lambda: sock_conn(42, "127.0.0.1", number),  # type: ignore[arg-type]
            lambda: sock_recv(num, "5"),  # type: ignore[arg-type]
            lambda: sock_recv(num, 5, 1.5),  # type: ignore[arg-type]
            lambda: sock_recvprs(num, "5"),  # type: ignore[arg-type]
        ]
        for call in bad_calls:
            with pytest.raises(UsageError):
                await call()
        # Tokens passed where Janus has none per call: the message says where they go.
        with pytest.raises(UsageError, match=r"sock_set\(num, 'PRSTOK', 'AMBIG\|0D0A\|0D'\)"):
            await sock_recvprs(num, "AMBIG|0D0A|0D")  # type: ignore[arg-type]
        for value in (2.9, True, "2.9", "", None):
            with pytest.raises(UsageError, match="RECVLIM"):
                sock_set(num, "RECVLIM", value)  # type: ignore[arg-type]
        assert sock_set(num, "RECVLIM", " 100 ") == "0"
        for sync_call in (
            lambda: sock_info(num, 5),  # type: ignore[arg-type]
            lambda: sock_num(5),  # type: ignore[arg-type]
            lambda: compat.define_port("WEBDROPS"),  # type: ignore[arg-type]
        ):
            with pytest.raises(UsageError):
                sync_call()
        assert sock_num() == str(num)  # nothing was opened on the way
        await sock_close(num)


@pytest.fixture(scope="module")
def tls_pieces() -> tuple[ssl.SSLContext, ClientPort]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, ClientPort("SSLOPT", tls=TLSMode.OPTIONAL, ssl_context=client)


async def test_compat_ssl_on_codes_and_all(
    anyio_backend: str, tls_pieces: tuple[ssl.SSLContext, ClientPort]
) -> None:
    server_context, port = tls_pieces

    async def tls_echo(stream: SocketStream) -> None:
        await echo(await tls_server_side(stream, server_context))

    async def plaintext(stream: SocketStream) -> None:
        await stream.receive()
        await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with serve(tls_echo) as good, serve(plaintext) as bad, serve(echo) as plain:
        never = ClientPort("NEVER", tls=TLSMode.NEVER)
        a = await sock_conn(port, "localhost", good)
        b = await sock_conn(port, "localhost", bad)
        c = await sock_conn(never, "127.0.0.1", plain)
        d = await sock_conn(port, "localhost", good)
        assert await sock_ssl_on(c) == ReturnCode.NOT_SSL_PORT == -110
        assert await sock_ssl_on(-1) == -111  # b (3) fails -111, c (4) -110: lowest wins
        assert sock_info(b, "STAT") == "RESET"  # the failed handshake closed it
        assert sock_info(c, "STAT") == "CONN"
        assert await sock_ssl_on(a) == -149  # already TLS
        # Janus: a port with SSL but no SSLOPT is not SSL-capable for SSLOn: -110.
        always = ClientPort("SSLONLY", tls=TLSMode.ALWAYS, ssl_context=port.ssl_context)
        e = await sock_conn(always, "localhost", good)
        assert await sock_ssl_on(e) == -110
        assert sock_info(e, "STAT") == "CONN"
        await sock_close(e)
        await sock_sendln(d, "over tls")
        assert await sock_recvprs(d) == (10, "over tls", 1)
        await sock_close(c)
        assert await sock_ssl_on(-1) == 0  # nothing relevant left
        await sock_close(-1)


async def test_compat_concurrent_conn_past_the_numbers_closes_the_losers(
    anyio_backend: str,
) -> None:
    port = ClientPort("RACE", max_sockets=8)
    results: list[int] = []

    async def conn() -> None:
        results.append(await sock_conn(port, "127.0.0.1", number))

    async with serve(echo) as number:
        compat.registry.max_sockets = 2
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(4):  # all pass the "is a number free?" check at once
                    tg.start_soon(conn)
        finally:
            compat.registry.max_sockets = None
        assert sorted(results) == [ReturnCode.NO_FREE_SOCKET] * 2 + [2, 3]
        assert port.open_sockets == 2  # the losers' connections were closed
        await sock_close(-1)
    assert port.open_sockets == 0


async def test_compat_ssl_on_past_its_deadline_is_111(
    anyio_backend: str, tls_pieces: tuple[ssl.SSLContext, ClientPort]
) -> None:
    _, port = tls_pieces

    async with serve(stall_after_hello) as number:
        num = await sock_conn(port, "localhost", number)
        assert await sock_ssl_on(num, timeout=0.2) == ReturnCode.HANDSHAKE_FAILED
        assert sock_info(num, "STAT") == "RESET"  # the deadline closed it
        await sock_close(num)


async def test_compat_conn_ssl_deadline_in_the_handshake_is_103(
    anyio_backend: str, tls_pieces: tuple[ssl.SSLContext, ClientPort]
) -> None:
    _, port = tls_pieces

    async with serve(stall_after_hello) as number:
        # TCP connects at once; the deadline expires in the handshake: -103, not -102.
        assert await sock_conn(port, "localhost", number, "SSL", timeout=0.3) == -103
    assert sock_num() == ""

"""The fault matrix: every misbehaving proxy and origin, on asyncio and trio.

Each cell opens a tunnel (or a direct TLS connection) against one fault and checks three
things: the outcome is the expected typed error (or success, with the right bytes); it
comes within the deadline plus a small margin (a bound, measured with
``anyio.current_time()``, never a speed claim); and afterwards the process has no more
open descriptors than before the attempt, and the client port counts no open socket.

The servers run on their own threads in this process, so their descriptors count too:
the baseline is taken after they are listening, and the check polls briefly while they
close their side. The outcomes are printed as one ``RELIABILITY`` line (``pytest -s``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import anyio
import pytest

from janusnet import (
    ClientPort,
    ConnectError,
    HandshakeError,
    NotSSLPortError,
    PendingDataError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTunnel,
    Socket,
    SSLOnOtherError,
    TLSMode,
)
from janusnet.testing import ConnectProxy, OriginMode, ProxyBehaviour, TLSOrigin
from reliability import open_fds, report, settled_fds

pytestmark = pytest.mark.anyio

#: The tunnel/connect deadline for every cell, and the slack allowed past it.
DEADLINE = 1.0
MARGIN = 1.5

OUTCOMES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_matrix() -> Iterator[None]:
    yield
    if OUTCOMES:
        report(
            "fault_matrix", {"cells": len(OUTCOMES), "outcomes": dict(sorted(OUTCOMES.items()))}
        )


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def bad_origin(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    with TLSOrigin(ca=origin.ca, mode=OriginMode.STALL) as server:
        yield server


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


@pytest.fixture(scope="module")
def https_proxy(origin: TLSOrigin) -> Iterator[ConnectProxy]:
    with ConnectProxy(ssl_context=origin.server_context) as server:
        yield server


@dataclass(frozen=True)
class Cell:
    expected: tuple[type[BaseException], ...] | None  # None: success


OK = Cell(None)

PROXY_CELLS: dict[ProxyBehaviour, Cell] = {
    ProxyBehaviour.NORMAL: OK,
    ProxyBehaviour.EXTRA_BYTES: Cell((PendingDataError,)),
    ProxyBehaviour.SPLIT_HEAD: OK,
    ProxyBehaviour.AUTH_WITH_BODY: Cell((ProxyAuthenticationRequired,)),
    ProxyBehaviour.HTTP10_NO_REASON: OK,
    ProxyBehaviour.OBS_FOLD: OK,
    ProxyBehaviour.ENDLESS_HEAD: Cell((ProxyProtocolError,)),
    ProxyBehaviour.CLOSE_MID_HEAD: Cell((ProxyProtocolError,)),
    ProxyBehaviour.NEVER_ANSWER: Cell((TimeoutError,)),
    ProxyBehaviour.RESET: Cell((ProxyProtocolError,)),
    ProxyBehaviour.STATUS_403: Cell((ProxyRefusedError,)),
    ProxyBehaviour.STATUS_502: Cell((ProxyRefusedError,)),
    ProxyBehaviour.MALFORMED: Cell((ProxyProtocolError,)),
    ProxyBehaviour.CHUNKED_2XX: OK,
}
assert set(PROXY_CELLS) == set(ProxyBehaviour), "a new ProxyBehaviour needs a matrix cell"

# A reset during the handshake surfaces as the peer closing (-111) or as an I/O error
# (-149) depending on whether the RST or the relay's close arrives first: both are typed.
ORIGIN_CELLS: dict[OriginMode, Cell] = {
    OriginMode.RESET_HANDSHAKE: Cell((HandshakeError, SSLOnOtherError)),
    OriginMode.GARBAGE: Cell((HandshakeError,)),
    OriginMode.STALL: Cell((TimeoutError,)),
}
# Through a tunnel, the origin's garbage may arrive before ssl_on() looks: it is then
# refused as bytes that came with the tunnel (-112, as open_tls documents), else the
# handshake fails on it (-111). Either way it is never read as TLS data.
VIA_PROXY_GARBAGE = Cell((HandshakeError, PendingDataError))


def outcome_name(exc: BaseException | None) -> str:
    return "ok" if exc is None else type(exc).__name__


async def check_cell(name: str, cell: Cell, attempt: Callable[[], Awaitable[Socket]]) -> None:
    """Run one attempt; check outcome, deadline bound and descriptors."""
    baseline = open_fds()
    start = anyio.current_time()
    error: BaseException | None = None
    sock: Socket | None = None
    with anyio.fail_after(DEADLINE + MARGIN + 5):  # the suite never hangs, whatever happens
        try:
            sock = await attempt()
        except Exception as exc:
            error = exc
        elapsed = anyio.current_time() - start
        if sock is not None:
            async with sock:
                await sock.send(b"GET /matrix HTTP/1.1\r\nHost: localhost\r\n\r\n")
                status = await sock.recv_parsed()
                assert status.data == b"HTTP/1.1 200 OK"
            assert sock.closed
    OUTCOMES[name] = outcome_name(error)
    assert elapsed < DEADLINE + MARGIN, f"{name}: {elapsed:.2f}s is past the deadline bound"
    if cell.expected is None:
        assert error is None, f"{name}: expected success, got {error!r}"
    else:
        assert isinstance(error, cell.expected), f"{name}: expected {cell.expected}, got {error!r}"
        if cell.expected == (ProxyRefusedError,):
            assert not isinstance(error, ProxyAuthenticationRequired)
    assert await settled_fds(baseline) <= baseline, f"{name}: descriptors leaked"


def client_port(origin: TLSOrigin) -> ClientPort:
    return ClientPort("FAULTS", ssl_context=origin.client_context())


@pytest.mark.parametrize("behaviour", list(PROXY_CELLS), ids=[b.value for b in PROXY_CELLS])
async def test_fault_matrix_proxy(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin, behaviour: ProxyBehaviour
) -> None:
    proxy.behaviour = behaviour
    port = client_port(origin)
    tunnel = ProxyTunnel(proxy.url, client_port=port, timeout=DEADLINE, max_head_bytes=16384)
    try:
        await check_cell(
            f"proxy:{behaviour.value}:{anyio_backend}",
            PROXY_CELLS[behaviour],
            lambda: tunnel.open_tls("localhost", origin.port),
        )
    finally:
        proxy.behaviour = ProxyBehaviour.NORMAL
    assert port.open_sockets == 0


@pytest.mark.parametrize("mode", list(ORIGIN_CELLS), ids=[m.value for m in ORIGIN_CELLS])
@pytest.mark.parametrize("path", ["via-proxy", "direct"])
async def test_fault_matrix_origin(
    anyio_backend: str,
    proxy: ConnectProxy,
    origin: TLSOrigin,
    bad_origin: TLSOrigin,
    mode: OriginMode,
    path: str,
) -> None:
    bad_origin.mode = mode
    port = client_port(origin)
    if path == "via-proxy":
        tunnel = ProxyTunnel(proxy.url, client_port=port, timeout=DEADLINE)

        async def attempt() -> Socket:
            return await tunnel.open_tls("localhost", bad_origin.port)

    else:

        async def attempt() -> Socket:
            return await Socket.connect(
                "localhost", bad_origin.port, client_port=port, tls=True, timeout=DEADLINE
            )

    cell = ORIGIN_CELLS[mode]
    if path == "via-proxy" and mode is OriginMode.GARBAGE:
        cell = VIA_PROXY_GARBAGE
    await check_cell(f"origin:{mode.value}:{path}:{anyio_backend}", cell, attempt)
    assert port.open_sockets == 0


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted-ca"])
async def test_fault_matrix_https_proxy(
    anyio_backend: str, https_proxy: ConnectProxy, origin: TLSOrigin, trusted: bool
) -> None:
    proxy_context = origin.client_context() if trusted else ssl.create_default_context()
    port = client_port(origin)
    tunnel = ProxyTunnel(
        https_proxy.url, client_port=port, proxy_ssl_context=proxy_context, timeout=DEADLINE
    )
    cell = OK if trusted else Cell((HandshakeError,))
    await check_cell(
        f"https-proxy:{'trusted' if trusted else 'untrusted-ca'}:{anyio_backend}",
        cell,
        lambda: tunnel.open_tls("localhost", origin.port),
    )
    assert port.open_sockets == 0


async def test_fault_matrix_unreachable_proxy(anyio_backend: str, origin: TLSOrigin) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    free = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    tunnel = ProxyTunnel(f"http://127.0.0.1:{free}", timeout=DEADLINE)
    await check_cell(
        f"proxy:unreachable:{anyio_backend}",
        Cell((ConnectError,)),
        lambda: tunnel.open_tls("localhost", origin.port),
    )


async def test_fault_matrix_never_port_refuses_tls(
    anyio_backend: str, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    """The -110 twin: a NEVER port refuses the upgrade and open_tls leaves nothing open."""
    port = ClientPort("PLAIN", tls=TLSMode.NEVER)
    tunnel = ProxyTunnel(proxy.url, client_port=port, timeout=DEADLINE)
    await check_cell(
        f"tls-never-port:{anyio_backend}",
        Cell((NotSSLPortError,)),
        lambda: tunnel.open_tls("localhost", origin.port),
    )
    assert port.open_sockets == 0

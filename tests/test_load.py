"""Load: 500 concurrent tunnels (CONNECT + ssl_on + request/response), one in ten sabotaged.

Through the in-process ``ConnectProxy`` the sabotage is a proxy that resets, one that never
answers (the tunnel's deadline expires) and one that injects bytes after its 200; through
real squid (``squid`` fixture) it is the origin that resets mid-handshake, stalls, or
answers garbage. Every tunnel must either complete with the right bytes or fail with the
typed error its sabotage calls for; nothing may hang (one overall ``fail_after``); and
afterwards the descriptors are back to the baseline, no ``Socket`` is alive, and RSS grew
by less than a generous bound.

Figures (completed, failed by type, time, peak RSS) are printed as a ``RELIABILITY`` line:
``python -m pytest tests/test_load.py -s -q``.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import logging
import os
import resource
from collections.abc import Iterator

import anyio
import pytest

import janusnet
from janusnet import (
    ClientPort,
    HandshakeError,
    PendingDataError,
    ProxyProtocolError,
    ProxyTunnel,
    SSLOnOtherError,
)
from janusnet.testing import ConnectProxy, OriginMode, ProxyBehaviour, TLSOrigin
from realproxies import RealProxy
from reliability import open_fds, report, settled_fds

pytestmark = pytest.mark.anyio

TUNNELS = 500
SABOTAGE_EVERY = 10
#: Generous: 500 handshakes share two cores with the servers' threads.
CLEAN_TIMEOUT = 40.0
#: The deadline a stalled tunnel must hit.
STALL_TIMEOUT = 3.0
OVERALL = 55.0
#: RSS may grow this much (allocator arenas are not always given back), far below a leak
#: of 500 sockets with their TLS buffers.
RSS_GROWTH_BOUND = 64 * 1024 * 1024


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_fd_limit()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trimmed_rss() -> int:
    """RSS after a full collection and ``malloc_trim(0)``: freed memory that glibc keeps in
    its per-thread arenas (the servers' threads) is not a leak, so give it back first."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the bound is generous anyway
        pass
    return rss()


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin(connection_timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def proxies() -> Iterator[dict[str, ConnectProxy]]:
    with (
        ConnectProxy(connection_timeout=120) as normal,
        ConnectProxy(behaviour=ProxyBehaviour.RESET) as reset,
        ConnectProxy(behaviour=ProxyBehaviour.NEVER_ANSWER) as stall,
        ConnectProxy(behaviour=ProxyBehaviour.EXTRA_BYTES) as inject,
    ):
        yield {"clean": normal, "reset": reset, "stall": stall, "inject": inject}


@pytest.fixture(scope="module")
def bad_origins(origin: TLSOrigin) -> Iterator[dict[str, TLSOrigin]]:
    with (
        TLSOrigin(ca=origin.ca, mode=OriginMode.RESET_HANDSHAKE) as reset,
        TLSOrigin(ca=origin.ca, mode=OriginMode.STALL) as stall,
        TLSOrigin(ca=origin.ca, mode=OriginMode.GARBAGE) as garbage,
    ):
        yield {"reset": reset, "stall": stall, "inject": garbage}


def sabotage_of(index: int) -> str:
    if index % SABOTAGE_EVERY != SABOTAGE_EVERY - 1:
        return "clean"
    return ("reset", "stall", "inject")[(index // SABOTAGE_EVERY) % 3]


EXPECTED_ERRORS: dict[str, dict[str, tuple[type[BaseException], ...]]] = {
    "inprocess": {
        "reset": (ProxyProtocolError,),
        "stall": (TimeoutError,),
        "inject": (PendingDataError,),
    },
    "squid": {
        "reset": (HandshakeError, SSLOnOtherError),
        "stall": (TimeoutError,),
        # Garbage that arrives before ssl_on() looks is -112, after it -111.
        "inject": (HandshakeError, PendingDataError),
    },
}


async def run_load(
    name: str,
    routes: dict[str, tuple[str, int]],
    port: ClientPort,
    expected: dict[str, tuple[type[BaseException], ...]],
) -> None:
    """Open TUNNELS tunnels at once; ``routes[sabotage] = (proxy URL, origin port)``."""
    baseline_fds = open_fds()
    baseline_rss = peak_rss = trimmed_rss()
    outcomes: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []

    async def one(index: int) -> None:
        sabotage = sabotage_of(index)
        proxy_url, target_port = routes[sabotage]
        timeout = STALL_TIMEOUT if sabotage == "stall" else CLEAN_TIMEOUT
        tunnel = ProxyTunnel(proxy_url, client_port=port, timeout=timeout)
        path = f"/load/{index}"
        try:
            async with await tunnel.open_tls("localhost", target_port) as sock:
                await sock.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
                received = b""
                while chunk := await sock.recv():
                    received += chunk
        except (janusnet.JanusnetError, TimeoutError) as exc:
            outcomes[type(exc).__name__] += 1
            if sabotage == "clean" or not isinstance(exc, expected[sabotage]):
                wrong.append(f"{index} ({sabotage}): {exc!r}")
            return
        body = f"hello from janusnet origin: GET {path}\n".encode()
        if sabotage != "clean" or not received.endswith(b"\r\n\r\n" + body):
            outcomes["wrong-bytes"] += 1
            wrong.append(f"{index} ({sabotage}): completed with {received[-80:]!r}")
            return
        outcomes["completed"] += 1

    async def watch_memory() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, rss())
            await anyio.sleep(0.02)

    # Captured log records would keep the handshake errors (and, through their tracebacks,
    # the closed sockets) alive: keep janusnet's per-tunnel warnings out of this run.
    janusnet_logger = logging.getLogger("janusnet")
    level = janusnet_logger.level
    janusnet_logger.setLevel(logging.ERROR)
    start = anyio.current_time()
    try:
        with anyio.fail_after(OVERALL):  # nothing hangs
            async with anyio.create_task_group() as watcher:
                watcher.start_soon(watch_memory)
                async with anyio.create_task_group() as group:
                    for index in range(TUNNELS):
                        group.start_soon(one, index)
                watcher.cancel_scope.cancel()
    finally:
        janusnet_logger.setLevel(level)
    elapsed = anyio.current_time() - start
    final_fds = await settled_fds(baseline_fds, timeout=10)
    final_rss = trimmed_rss()
    alive = sum(isinstance(obj, janusnet.Socket) for obj in gc.get_objects())
    report(
        f"load_{name}",
        {
            "tunnels": TUNNELS,
            "sabotaged": sum(sabotage_of(i) != "clean" for i in range(TUNNELS)),
            "completed": outcomes.pop("completed", 0),
            "failed_by_type": dict(sorted(outcomes.items())),
            "seconds": round(elapsed, 2),
            "peak_rss_mib": round(peak_rss / 2**20, 1),
            "rss_growth_mib": round((final_rss - baseline_rss) / 2**20, 1),
            "fds_before_after": [baseline_fds, final_fds],
            "sockets_alive_after": alive,
            "wrong": wrong[:5],
        },
    )
    assert not wrong, wrong[:10]
    assert final_fds <= baseline_fds, "descriptors leaked"
    assert alive == 0, "Socket objects survived the load"
    assert final_rss - baseline_rss < RSS_GROWTH_BOUND


async def test_load_500_tunnels_in_process_proxy(
    anyio_backend: str, origin: TLSOrigin, proxies: dict[str, ConnectProxy]
) -> None:
    routes = {kind: (proxy.url, origin.port) for kind, proxy in proxies.items()}
    port = ClientPort("LOAD", ssl_context=origin.client_context())
    await run_load(f"inprocess_{anyio_backend}", routes, port, EXPECTED_ERRORS["inprocess"])
    assert port.open_sockets == 0


@pytest.mark.realproxy
async def test_load_500_tunnels_real_squid(
    anyio_backend: str, origin: TLSOrigin, bad_origins: dict[str, TLSOrigin], squid: RealProxy
) -> None:
    routes = {"clean": (squid.url, origin.port)}
    routes |= {kind: (squid.url, bad.port) for kind, bad in bad_origins.items()}
    port = ClientPort("LOAD", ssl_context=origin.client_context())
    await run_load(f"squid_{anyio_backend}", routes, port, EXPECTED_ERRORS["squid"])
    assert port.open_sockets == 0

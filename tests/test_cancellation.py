"""Cancel ``Socket.connect``, ``ProxyTunnel.open``, ``ssl_on()`` and ``recv_parsed`` at
every checkpoint they pass through, on asyncio and trio.

Technique: :func:`reliability.run_counting` drives the operation's coroutine itself and
sees every ``yield`` it makes to the event loop, i.e. every suspension (scheduling point).
A first run with ``cancel_at=k`` cancels the enclosing ``anyio.CancelScope`` at the k-th
suspension; k goes 1, 2, 3... until a run completes before reaching k, so every
checkpoint the operation passes (TCP connect, each TLS handshake round trip, the CONNECT
exchange, each receive) gets a cancellation. Counting yields in the operation's own task
works the same on both backends (no loop instrumentation), and the cancel lands *at*
that checkpoint: on trio the pending cancel is delivered as the task blocks there; on
asyncio anyio's scope calls ``Task.cancel()`` on the waiting task (one step later at
most, when the awaited future was already done, which the sweep covers anyway).

After each cancelled run: the cancellation propagated (the scope caught it), and the
socket is as documented — ``connect``/``open`` left nothing open, ``ssl_on`` closed the
socket, ``recv_parsed`` lost no byte (the next ``recv_parsed`` returns the record) — and
the process's descriptors are back to their count before the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest

from janusnet import ClientPort, Parsed, ProxyTunnel, Socket
from janusnet.testing import ConnectProxy, OriginMode, TLSOrigin
from loopback import BACKENDS_WITH_UVLOOP, Backend, backend_label
from reliability import Counter, ScriptedStream, open_fds, report, run_counting, settled_fds

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS_WITH_UVLOOP)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio, trio, and asyncio on uvloop."""
    return request.param


#: No operation here has anywhere near this many checkpoints; past it the sweep is stuck.
MAX_CHECKPOINTS = 400

SWEEPS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_sweeps() -> Iterator[None]:
    yield
    if SWEEPS:
        report("cancellation", {"operations": dict(sorted(SWEEPS.items()))})


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def plain_origin(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    with TLSOrigin(ca=origin.ca, mode=OriginMode.PLAIN) as server:
        yield server


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


async def sweep(
    name: str,
    operation: Callable[[], Awaitable[tuple[Coroutine[Any, Any, Any], Any]]],
    on_cancelled: Callable[[Any], Awaitable[None]],
    on_completed: Callable[[Any, Any], Awaitable[None]],
) -> None:
    """Cancel ``operation`` at its 1st, 2nd, ... suspension until it completes first.

    ``operation()`` prepares (uncounted) and returns ``(coroutine to count, state)``.
    ``on_cancelled(state)`` checks the aftermath of a cancelled run, ``on_completed(state,
    result)`` that of a completed one; both must close what they opened.
    """
    cancelled = completed_late = 0
    for k in range(1, MAX_CHECKPOINTS + 1):
        baseline = open_fds()
        with anyio.fail_after(10):
            coro, state = await operation()
            result: list[Any] = []
            with anyio.CancelScope() as scope:
                counter = Counter(scope, cancel_at=k)
                result.append(await run_counting(coro, counter))
            if scope.cancelled_caught:
                assert counter.fired
                cancelled += 1
                await on_cancelled(state)
            else:
                await on_completed(state, result[0])
                if counter.fired:
                    # Cancelled inside a shielded close with no checkpoint after it: the
                    # operation had already finished its work.
                    completed_late += 1
        assert await settled_fds(baseline) <= baseline, f"{name}: descriptors leaked at k={k}"
        if not counter.fired:
            SWEEPS[name] = {
                "checkpoints": counter.count,
                "cancelled": cancelled,
                "completed_despite_cancel": completed_late,
            }
            assert cancelled >= 1
            return
    raise AssertionError(f"{name}: still not complete after {MAX_CHECKPOINTS} checkpoints")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_cancel_socket_connect_at_every_checkpoint(
    anyio_backend: Backend, origin: TLSOrigin, plain_origin: TLSOrigin, tls: bool
) -> None:
    port = ClientPort("CANCEL", ssl_context=origin.client_context())
    target = origin if tls else plain_origin

    async def operation() -> tuple[Coroutine[Any, Any, Socket], None]:
        return Socket.connect("localhost", target.port, client_port=port, tls=tls), None

    async def on_cancelled(_: None) -> None:
        assert port.open_sockets == 0  # nothing left open

    async def on_completed(_: None, sock: Socket) -> None:
        assert (sock.tls is not None) is tls
        await sock.aclose()
        assert port.open_sockets == 0

    name = f"Socket.connect({'tls' if tls else 'plain'}):{backend_label(anyio_backend)}"
    await sweep(name, operation, on_cancelled, on_completed)


async def test_cancel_tunnel_open_at_every_checkpoint(
    anyio_backend: Backend, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    port = ClientPort("CANCEL", ssl_context=origin.client_context())
    tunnel = ProxyTunnel(proxy.url, client_port=port)

    async def operation() -> tuple[Coroutine[Any, Any, Socket], None]:
        return tunnel.open("localhost", origin.port), None

    async def on_cancelled(_: None) -> None:
        assert port.open_sockets == 0

    async def on_completed(_: None, sock: Socket) -> None:
        assert sock.proxy_reply is not None and sock.proxy_reply.status == 200
        await sock.aclose()
        assert port.open_sockets == 0

    await sweep(
        f"ProxyTunnel.open:{backend_label(anyio_backend)}", operation, on_cancelled, on_completed
    )


async def test_cancel_ssl_on_at_every_checkpoint(
    anyio_backend: Backend, proxy: ConnectProxy, origin: TLSOrigin
) -> None:
    port = ClientPort("CANCEL", ssl_context=origin.client_context())
    tunnel = ProxyTunnel(proxy.url, client_port=port)

    async def operation() -> tuple[Coroutine[Any, Any, None], Socket]:
        sock = await tunnel.open("localhost", origin.port)
        return sock.ssl_on(), sock

    async def on_cancelled(sock: Socket) -> None:
        assert sock.closed, "a cancelled ssl_on() closes the socket"
        assert port.open_sockets == 0

    async def on_completed(sock: Socket, _: None) -> None:
        assert sock.tls is not None
        await sock.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"
        await sock.aclose()

    await sweep(
        f"Socket.ssl_on:{backend_label(anyio_backend)}", operation, on_cancelled, on_completed
    )


RECORD = Parsed(b"hello world", b"\r\n", 1)
SEGMENTS = [b"hel", b"lo wor", b"ld\r", b"\nsecond\r\n"]


async def check_nothing_lost(sock: Socket, first: Parsed | None = None) -> None:
    assert (first or await sock.recv_parsed()) == RECORD
    assert await sock.recv_parsed() == (b"second", b"\r\n", 1)


async def test_cancel_recv_parsed_in_memory_at_every_checkpoint(anyio_backend: Backend) -> None:
    async def operation() -> tuple[Coroutine[Any, Any, Parsed], Socket]:
        sock = Socket(ScriptedStream(SEGMENTS))
        return sock.recv_parsed(), sock

    async def on_cancelled(sock: Socket) -> None:
        assert not sock.closed, "a cancelled receive leaves the socket usable"
        await check_nothing_lost(sock)
        await sock.aclose()

    async def on_completed(sock: Socket, parsed: Parsed) -> None:
        await check_nothing_lost(sock, parsed)
        await sock.aclose()

    await sweep(
        f"recv_parsed(memory):{backend_label(anyio_backend)}",
        operation,
        on_cancelled,
        on_completed,
    )


async def test_cancel_recv_parsed_loopback_at_every_checkpoint(
    anyio_backend: Backend, plain_origin: TLSOrigin
) -> None:
    """Real TCP: the echo origin returns SEGMENTS as they are sent, a few ms apart, by a
    task that is not cancelled with the receive."""
    sent: dict[Socket, anyio.Event] = {}

    async def trickle(sock: Socket, done: anyio.Event) -> None:
        for segment in SEGMENTS:
            await sock.send(segment)
            await anyio.sleep(0.003)
        done.set()

    async with anyio.create_task_group() as group:

        async def operation() -> tuple[Coroutine[Any, Any, Parsed], Socket]:
            sock = await Socket.connect("127.0.0.1", plain_origin.port)
            sent[sock] = anyio.Event()
            group.start_soon(trickle, sock, sent[sock])
            return sock.recv_parsed(), sock

        async def on_cancelled(sock: Socket) -> None:
            assert not sock.closed, "a cancelled receive leaves the socket usable"
            await sent.pop(sock).wait()
            await check_nothing_lost(sock)
            await sock.aclose()

        async def on_completed(sock: Socket, parsed: Parsed) -> None:
            await sent.pop(sock).wait()
            await check_nothing_lost(sock, parsed)
            await sock.aclose()

        await sweep(
            f"recv_parsed(loopback):{backend_label(anyio_backend)}",
            operation,
            on_cancelled,
            on_completed,
        )

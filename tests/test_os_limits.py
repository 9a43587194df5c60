"""Operating-system limits, threads and event loops: no free descriptor, the shared
default context under threads, errno on connect failures, a close interrupted by
KeyboardInterrupt, a socket closed from another backend's loop.

The descriptor-limit cases run in a child process (``python -X dev -W error``): the
limit and the exhausted table must not touch the test process, and the default context
must not have been built yet there.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import anyio
import pytest

import janusnet
from janusnet import ConnectError, Socket
from janusnet.testing import TLSOrigin
from loopback import serve


def run_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter (warnings are errors); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_ssl_on_with_no_free_descriptor_for_the_ca_bundle_is_149() -> None:
    """Loading certifi's bundle needs a descriptor: without one, ``ssl_on()`` is -149
    naming the bundle (it raised a bare ``OSError``), the socket unchanged; it works
    once descriptors are free, and ``ssl_on_all`` gives each member its code."""
    out = run_child(
        """
        import os, ssl, anyio, janusnet
        from janusnet.testing import TLSOrigin

        def exhaust():
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                return held

        with TLSOrigin() as origin:
            async def main():
                port = janusnet.ClientPort("P")
                group = janusnet.SocketGroup()
                socks = [await janusnet.Socket.connect("localhost", origin.port,
                                                        client_port=port) for _ in range(2)]
                for sock in socks:
                    group.add(sock)
                held = exhaust()
                try:
                    try:
                        await socks[0].ssl_on()
                    except janusnet.SSLOnOtherError as exc:
                        print("code", int(exc.code), "|", exc)
                    print("state", socks[0].state.name)
                    results = await group.ssl_on_all()
                    print("group", sorted(int(code) for code in results.values()))
                finally:
                    for fd in held:
                        os.close(fd)
                # Descriptors free again: the next try loads the bundle (the origin's
                # certificate is not in it: -111, a verification failure, as it should).
                try:
                    await socks[1].ssl_on()
                except janusnet.HandshakeError as exc:
                    print("after", int(exc.code), isinstance(exc.__cause__, ssl.SSLError))
                for sock in socks:
                    await sock.aclose()

            anyio.run(main)
        """
    )
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["code"].startswith("-149 | ssl_on: cannot load the default CA bundle (")
    assert lines["code"].endswith("): Too many open files (nothing was sent)")
    assert lines["state"] == "CONNECTED"
    assert lines["group"] == "[-149, -149]"
    assert lines["after"] == "-111 True"


def test_default_ssl_context_is_built_once_when_threads_ask_at_once() -> None:
    out = run_child(
        """
        import threading, janusnet
        barrier = threading.Barrier(8)
        seen = []

        def ask():
            barrier.wait()
            seen.append(id(janusnet.default_ssl_context()))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(len(seen), len(set(seen)), id(janusnet.default_ssl_context()) in seen)
        """
    )
    assert out.split() == ["8", "1", "True"]


@pytest.mark.anyio
async def test_connect_error_carries_the_errno(anyio_backend: str) -> None:
    """``ConnectError`` is an ``OSError``: ``errno`` says why, as for the cause."""

    async def close_at_once(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    async with serve(close_at_once) as number:
        pass  # the listener is gone: its port now refuses
    with pytest.raises(ConnectError) as info:
        await Socket.connect("127.0.0.1", number)
    assert info.value.errno == errno.ECONNREFUSED
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ConnectError) as info:
        await janusnet.ProxyTunnel(f"http://127.0.0.1:{number}").open("example.com", 443)
    assert info.value.errno == errno.ECONNREFUSED and info.value.role == "proxy"


@pytest.mark.anyio
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_close_interrupted_by_keyboard_interrupt_still_closes_the_descriptor(
    anyio_backend: str, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trio delivers KeyboardInterrupt at any point, also inside a close: the
    descriptor is closed all the same (it was left to the garbage collector)."""
    from janusnet import _transport

    with TLSOrigin(mode="tls" if tls else "plain") as origin:
        port = janusnet.ClientPort("K", ssl_context=origin.client_context())
        sock = await Socket.connect("localhost", origin.port, client_port=port, tls=tls)
        stream = sock._stream
        assert stream is not None
        raw = stream._raw_socket  # type: ignore[attr-defined]

        def interrupted(*args: object) -> None:
            raise KeyboardInterrupt

        where = "_push_now" if tls else "_notify_closing"
        if tls:
            monkeypatch.setattr(_transport.FdTLSStream, where, interrupted)
        else:
            monkeypatch.setattr(_transport, where, interrupted)
        with pytest.raises(KeyboardInterrupt):
            await sock.aclose()
        assert raw.fileno() == -1
        assert sock.closed and port.open_sockets == 0


def test_socket_closed_from_another_backend_closes_quietly() -> None:
    """A socket belongs to the loop that made it; closing it from another backend's
    loop still closes it without an error from the wrong backend's checkpoint."""
    pytest.importorskip("trio")
    with TLSOrigin(mode="plain") as origin:
        sock = anyio.run(Socket.connect, "127.0.0.1", origin.port)
        anyio.run(sock.aclose, backend="trio")
        assert sock.closed
        sock = anyio.run(Socket.connect, "127.0.0.1", origin.port, backend="trio")
        anyio.run(sock.aclose)
        assert sock.closed


def test_connect_with_no_free_descriptor_says_it_is_this_process() -> None:
    """EMFILE is this process's shortage, not the target's doing: the message says so
    and ``errno`` is ``EMFILE``; once descriptors are free, connecting works."""
    out = run_child(
        """
        import errno, os, anyio, janusnet
        from janusnet.testing import TLSOrigin

        with TLSOrigin(mode="plain") as origin:
            async def main():
                held = []
                try:
                    while True:
                        held.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    pass
                try:
                    for how in ("direct", "proxy"):
                        try:
                            if how == "direct":
                                await janusnet.Socket.connect("127.0.0.1", origin.port)
                            else:
                                tunnel = janusnet.ProxyTunnel(f"http://127.0.0.1:{origin.port}")
                                await tunnel.open("example.com", 443)
                        except janusnet.ConnectError as exc:
                            print(how, exc.errno == errno.EMFILE, exc.role, "|", exc)
                finally:
                    for fd in held:
                        os.close(fd)
                async with await janusnet.Socket.connect("127.0.0.1", origin.port) as sock:
                    print("after", sock.state.name)

            anyio.run(main)
        """
    )
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    for how, role in (("direct", "target"), ("proxy", "proxy")):
        assert lines[how].startswith(f"True {role} | cannot connect to ")
        assert ": this process has no free file descriptor ([Errno 24]" in lines[how]
    assert lines["after"] == "CONNECTED"

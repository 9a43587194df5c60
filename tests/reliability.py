"""Helpers for the reliability tests: descriptor counts, checkpoint counting, figures.

* :func:`open_fds` counts ``/proc/self/fd``; :func:`settled_fds` polls until the count is
  back to a baseline (the in-process servers close their side on their own threads).
* :func:`run_counting` runs a coroutine and counts its *suspensions*: every time it yields
  to the event loop (a scheduling point) — the same ``yield`` on asyncio and trio, so the
  count means the same thing on both. ``cancel_at=k`` cancels an enclosing
  ``anyio.CancelScope`` right as the k-th suspension happens, which delivers the
  cancellation at exactly that checkpoint on both backends (asyncio: anyio's scope calls
  ``Task.cancel()`` while the task waits there; trio: the pending cancel is delivered as
  the task blocks).
* :class:`ScriptedStream` is an in-memory anyio byte stream that hands out scripted
  segments, one per ``receive()``, each after a checkpoint.
* :func:`report` prints one ``RELIABILITY {json}`` line (see it with ``pytest -s``) and
  writes the same JSON under ``$TMPDIR/janusnet-reliability/``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream

T = TypeVar("T")

FIGURES_DIR = Path(tempfile.gettempdir()) / "janusnet-reliability"


def open_fds() -> int:
    """How many descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


async def settled_fds(baseline: int, *, timeout: float = 5.0) -> int:
    """Poll until the descriptor count is at most ``baseline`` (or ``timeout`` passes).

    Returns:
        The last count seen (the caller asserts on it).
    """
    deadline = time.monotonic() + timeout
    count = open_fds()
    while count > baseline and time.monotonic() < deadline:
        await anyio.sleep(0.01)
        count = open_fds()
    return count


class _Counted:
    """Drive a coroutine, calling ``on_suspend`` each time it yields to the event loop."""

    def __init__(self, coro: Coroutine[Any, Any, T], on_suspend: Callable[[], None]) -> None:
        self._coro = coro
        self._on_suspend = on_suspend

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    yielded = coro.throw(exc)
                else:
                    yielded = coro.send(to_send)
            except StopIteration as stop:
                return stop.value
            self._on_suspend()
            try:
                to_send = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                to_throw, to_send = exc, None


class Counter:
    """Counts suspensions; cancels ``scope`` at the ``cancel_at``-th one (if given)."""

    def __init__(self, scope: anyio.CancelScope | None = None, cancel_at: int | None = None):
        self.count = 0
        self.scope = scope
        self.cancel_at = cancel_at
        self.fired = False

    def __call__(self) -> None:
        self.count += 1
        if self.scope is not None and self.count == self.cancel_at:
            self.fired = True
            self.scope.cancel()


async def run_counting(coro: Coroutine[Any, Any, T], counter: Counter) -> T:
    """Await ``coro``, counting its suspensions with ``counter``."""
    result: T = await _Counted(coro, counter)
    return result


class ScriptedStream(ByteStream):
    """An in-memory byte stream: ``receive()`` hands out ``segments`` one by one.

    Each receive passes a checkpoint *before* taking its segment, so a cancelled receive
    takes nothing (as a real transport). Sent bytes are collected in ``sent``.
    """

    def __init__(self, segments: Sequence[bytes]) -> None:
        self.segments = list(segments)
        self.sent = bytearray()
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise anyio.ClosedResourceError
        if not self.segments:
            raise anyio.EndOfStream
        segment = self.segments[0]
        if len(segment) > max_bytes:
            self.segments[0] = segment[max_bytes:]
            return segment[:max_bytes]
        return self.segments.pop(0)

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise anyio.ClosedResourceError
        self.sent += item

    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await anyio.lowlevel.checkpoint()


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures as one JSON line and keep them in a file for RELIABILITY.md."""
    line = json.dumps({"figures": name, **figures}, sort_keys=True, default=str)
    print(f"RELIABILITY {line}")
    FIGURES_DIR.mkdir(exist_ok=True)
    (FIGURES_DIR / f"{name}.json").write_text(line + "\n")

"""One process per client: a client's runs never share a heap with another client's.

Why: glibc's ``malloc`` adapts to what a process did before. A client that frees a large
block (the MemoryBIO ceiling's 64 MiB, say) raises the process's mmap and trim
thresholds, and from then on every 256 KiB buffer asyncio's TLS layer allocates comes
from the heap instead of a fresh ``mmap`` with its page faults. Measured in one process,
asyncio's bulk TLS ran ~3x faster after the ceiling column than after the blocking
client, so each client's figure depended on its neighbours. Each client now runs in its
own worker process, started once per table and kept across rounds (the rounds still
interleave, so the paired ratios still cancel slow drifts of the machine).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import ssl
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Runner = Callable[[str], tuple[float, str | None]]  # clock name -> (rate, error or None)


def _records_runner(port: int, variant: str, count: int, client: str) -> Runner:
    from . import _framed, _records
    from ._server import make_records

    expected = make_records(variant, count)
    run_client = getattr(_framed if variant == "framed" else _records, client)

    def run(clock: str) -> tuple[float, str | None]:
        elapsed, tally = run_client(port, variant, count)
        return tally.count / elapsed, _records.check(tally, expected, variant == "three")

    return run


def _tls_runner(port: int, nbytes: int, ca_pem: str, client: str) -> Runner:
    from . import _tls

    context = ssl.create_default_context(cadata=ca_pem)
    run_client = getattr(_tls, client)

    def run(clock: str) -> tuple[float, str | None]:
        _tls.CLOCK = time.process_time if clock == "cpu" else time.perf_counter
        elapsed, got, tail = run_client(port, nbytes, context)
        return got / elapsed / 1e6, _tls.check(got, tail, nbytes)

    return run


def _ceiling_runner(nbytes: int, ca_pem: str, cert_chain_pem: bytes) -> Runner:
    from . import _tls

    ceiling = _tls.MemoryBIOCeiling(
        nbytes, ssl.create_default_context(cadata=ca_pem), cert_chain_pem
    )

    def run(clock: str) -> tuple[float, str | None]:
        _tls.CLOCK = time.process_time if clock == "cpu" else time.perf_counter
        elapsed, got, tail = ceiling.run()
        return got / elapsed / 1e6, _tls.check(got, tail, nbytes)

    return run


def _pingpong_runner(port: int, ca_pem: str | None, client: str) -> Runner:
    from . import _pingpong

    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None

    def run(clock: str) -> tuple[float, str | None]:
        return _pingpong.run(port, context, client)

    return run


RUNNERS: dict[str, Callable[..., Runner]] = {
    "pingpong": _pingpong_runner,
    "records": _records_runner,
    "tls": _tls_runner,
    "ceiling": _ceiling_runner,
}


def serve_client(pipe: Connection, kind: str, args: tuple[Any, ...]) -> None:
    """Worker main: build the runner, then answer ``("run", clock)`` until ``"stop"``."""
    try:
        run = RUNNERS[kind](*args)
    except Exception as exc:  # reported on every run, so the table shows it
        error = f"{type(exc).__name__}: {exc}"

        def run(clock: str) -> tuple[float, str | None]:
            return float("nan"), error

    while True:
        message = pipe.recv()
        if message == "stop":
            return
        try:
            pipe.send(run(message[1]))
        except Exception as exc:
            pipe.send((float("nan"), f"{type(exc).__name__}: {exc}"))


class WorkerProcess:
    """A spawned process running ``target(pipe, *args)``; :meth:`ask` sends it a message
    and returns its answer (``None`` when it does not answer within ``timeout``)."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        mp = multiprocessing.get_context("spawn")
        self._pipe, child_end = mp.Pipe()
        self._process = mp.Process(target=target, args=(child_end, *args), daemon=True)
        self._process.start()
        child_end.close()

    def ask(self, message: object, timeout: float = 600) -> Any:
        self._pipe.send(message)
        return self._pipe.recv() if self._pipe.poll(timeout) else None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

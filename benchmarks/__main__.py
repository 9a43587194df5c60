"""``python -m benchmarks [parse|tls|pingpong|tunnel|all] [--quick]``: janusnet beside its
peers.

Benchmarks are not tests: this prints figures and ratios and asserts nothing about time.
A client that reads the wrong records or bytes is reported as WRONG in the table.

Method: the server runs in its own process (``spawn``, pinned to one core when there are
two); every client runs in a worker process of its own (``spawn``, pinned to the other
core, started once per table: see ``_workers.py`` for why one process per client), one
client at a time. Each round runs every client once, in the same order (A, B, C, ...,
A, B, C, ...), after one untimed warm-up round; each run gets a fresh event loop and a
fresh connection, and only the reading is timed. A client's figure is its median over
the rounds; its ratio is the median of its per-round ratios to the asyncio client of the
same round (paired, so slow drifts of the machine cancel out).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _workers
from ._server import serve

#: Targets from the issue (ratio to asyncio), printed beside the measured ratios.
TARGETS = {"one": 1.7, "three": 1.3, "tls": 1.5}
#: What the issue measured on this kind of machine before janusnet existed.
REFERENCE = {
    "one": "anyio 1.21x, hand-written trio 1.68x, blocking 2.49x",
    "three": "best hand-written readers 0.95-1.06x, blocking 1.45x",
    "tls": "anyio 1.38x, blocking 2.95x, OpenSSL AES-GCM 10.6x",
}


@dataclass
class Column:
    name: str
    run: Callable[[], tuple[float, str | None]]  # (units per second, error or None)
    rates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Worker(_workers.WorkerProcess):
    """A client's own process (see ``_workers.py``); ``run(clock)`` times one run there."""

    def __init__(self, kind: str, args: tuple[Any, ...]) -> None:
        super().__init__(_workers.serve_client, (kind, args))

    def run(self, clock: str) -> tuple[float, str | None]:
        result: tuple[float, str | None] | None = self.ask(("run", clock))
        return result or (float("nan"), "the worker did not answer within 600 s")


@contextlib.contextmanager
def workers() -> Iterator[Callable[[str, tuple[Any, ...]], Worker]]:
    """Start workers on demand; stop them all when the table is done."""
    started: list[Worker] = []

    def start(kind: str, args: tuple[Any, ...]) -> Worker:
        worker = Worker(kind, args)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def _fmt_rate(rate: float, unit: str) -> str:
    if unit == "records/s":
        return f"{rate / 1e6:7.3f} M"
    return f"{rate:7.0f}  "


def run_rounds(
    title: str, unit: str, columns: list[Column], rounds: int, target: float | None
) -> None:
    """Warm up, run ``rounds`` interleaved rounds, print each round and the summary."""
    order = ", ".join(chr(65 + k) for k in range(len(columns)))
    print(f"\n== {title} ({unit}; {rounds} rounds after 1 warm-up, order {order})")
    for k, column in enumerate(columns):
        print(f"   {chr(65 + k)} = {column.name}")
    for column in columns:  # warm-up: imports, caches, the server's payload
        column.run()
    base = columns[0]
    ratios: dict[str, list[float]] = {c.name: [] for c in columns}
    for r in range(1, rounds + 1):
        line = []
        for column in columns:
            rate, error = column.run()
            column.rates.append(rate)
            if error:
                column.errors.append(error)
            line.append(_fmt_rate(rate, unit) + ("!" if error else ""))
        for column in columns:
            ratios[column.name].append(column.rates[-1] / base.rates[-1])
        print(f"   round {r}: " + " | ".join(line), flush=True)
    print()
    head = f"   {'client':<34} {'median ' + unit:>18} {'min':>10} {'max':>10} {'vs asyncio':>11}"
    print(head)
    print("   " + "-" * (len(head) - 3))
    for column in columns:
        median = statistics.median(column.rates)
        ratio = statistics.median(ratios[column.name])
        status = f"  WRONG: {column.errors[0]}" if column.errors else ""
        scale = 1e6 if unit == "records/s" else 1.0
        suffix = " M" if unit == "records/s" else ""
        print(
            f"   {column.name:<34} {median / scale:>16.3f}{suffix:2} "
            f"{min(column.rates) / scale:>10.3f} {max(column.rates) / scale:>10.3f} "
            f"{ratio:>10.2f}x{status}"
        )
    janus = [c for c in columns if c.name.startswith("janusnet (asyncio")]
    if janus and target is not None:
        got = statistics.median(ratios[janus[0].name])
        verdict = "met" if got >= target else "NOT met"
        print(f"   target: janusnet (asyncio) >= {target:.1f}x asyncio -> {got:.2f}x, {verdict}")


def table(
    title: str,
    unit: str,
    make_columns: Callable[[Callable[[str, tuple[Any, ...]], Worker]], list[Column]],
    rounds: int,
    target: str | None,
    *,
    reference: bool = True,
) -> None:
    """One table: its clients in worker processes of their own, stopped afterwards."""
    with workers() as start:
        run_rounds(title, unit, make_columns(start), rounds, TARGETS[target] if target else None)
    if reference and target:
        print(f"   issue's pre-janusnet figures: {REFERENCE[target]}")


def _records_columns(
    start: Callable[[str, tuple[Any, ...]], Worker], port: int, variant: str, count: int
) -> list[Column]:
    three = variant == "three"
    hand = " (hand-written)" if three else ""

    def column(name: str, client: str) -> Column:
        worker = start("records", (port, variant, count, client))
        return Column(name, lambda: worker.run("wall"))

    return [
        column("asyncio readuntil" if not three else "asyncio (hand-written)", "asyncio_streams"),
        column("janusnet (asyncio) recv_parsed", "janusnet_asyncio"),
        column("janusnet (trio) recv_parsed", "janusnet_trio"),
        column("janusnet (asyncio) tokens per call", "janusnet_per_call"),
        column("anyio receive_until" if not three else "anyio (hand-written)", "anyio_streams"),
        column("trio (hand-written)", "trio_handwritten"),
        column("blocking socket" + hand, "blocking_socket"),
    ]


def _framed_columns(
    start: Callable[[str, tuple[Any, ...]], Worker], port: int, count: int
) -> list[Column]:
    def column(name: str, client: str) -> Column:
        worker = start("records", (port, "framed", count, client))
        return Column(name, lambda: worker.run("wall"))

    return [
        column("asyncio readuntil + readexactly", "asyncio_streams"),
        column("janusnet (asyncio) recv_parsed + recv_exactly", "janusnet_asyncio"),
        column("janusnet (trio) recv_parsed + recv_exactly", "janusnet_trio"),
        column("anyio receive_until + receive_exactly", "anyio_streams"),
        column("blocking socket (hand-written)", "blocking_socket"),
    ]


def _tls_columns(
    start: Callable[[str, tuple[Any, ...]], Worker],
    port: int,
    nbytes: int,
    cert_chain_pem: bytes,
    ca_pem: str,
    clock: str,
) -> list[Column]:
    def column(name: str, kind: str, args: tuple[Any, ...]) -> Column:
        worker = start(kind, args)
        return Column(name, lambda: worker.run(clock))

    def client(name: str, function: str) -> Column:
        return column(name, "tls", (port, nbytes, ca_pem, function))

    return [
        client("asyncio start_tls", "asyncio_start_tls"),
        client("janusnet (asyncio) ssl_on+recv", "janusnet_asyncio"),
        client("janusnet (trio) ssl_on+recv", "janusnet_trio"),
        client("anyio TLSStream", "anyio_tlsstream"),
        client("blocking ssl socket", "blocking_ssl"),
        column("ssl MemoryBIO, no I/O (ceiling)", "ceiling", (nbytes, ca_pem, cert_chain_pem)),
    ]


def _pingpong_columns(
    start: Callable[[str, tuple[Any, ...]], Worker], port: int, ca_pem: str | None
) -> list[Column]:
    def column(name: str, client: str) -> Column:
        worker = start("pingpong", (port, ca_pem, client))
        return Column(name, lambda: worker.run("wall"))

    return [
        column("asyncio streams", "asyncio_streams"),
        column("janusnet (asyncio)", "janusnet_asyncio"),
        column("janusnet (trio)", "janusnet_trio"),
        column("anyio streams", "anyio_streams"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which", nargs="?", default="all", choices=["all", "parse", "tls", "pingpong", "tunnel"]
    )
    parser.add_argument("--quick", action="store_true", help="a short run (< 30 s)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 9, quick 5)")
    parser.add_argument("--records", type=int, help="records per run (default 300000)")
    parser.add_argument("--mib", type=int, help="TLS bulk MiB per run (default 64)")
    args = parser.parse_args(argv)
    if args.which == "tunnel":  # its own servers and tables: benchmarks/tunnel.py
        from . import tunnel

        return tunnel.main(
            (["--quick"] if args.quick else [])
            + (["--rounds", str(args.rounds)] if args.rounds else [])
        )
    rounds = args.rounds or (5 if args.quick else 9)
    count = args.records or (50_000 if args.quick else 300_000)
    mib = args.mib or (16 if args.quick else 64)

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_chain_pem = cert.private_key_and_cert_chain_pem.bytes()
    ca_pem = ca.cert_pem.bytes().decode()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) >= 2 else None
    if server_cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(cpus[:-1]))
    mp = multiprocessing.get_context("spawn")
    parent_end, child_end = mp.Pipe()
    server = mp.Process(target=serve, args=(child_end, cert_chain_pem, server_cpu), daemon=True)
    server.start()
    records_port, tls_port = parent_end.recv()
    pingpong_end = None
    if args.which in ("all", "pingpong"):
        from . import _pingpong

        pingpong_end, child_end = mp.Pipe()
        pingpong_server = mp.Process(
            target=_pingpong.serve, args=(child_end, cert_chain_pem, server_cpu), daemon=True
        )
        pingpong_server.start()
        pingpong_ports = pingpong_end.recv()
    print(
        f"janusnet benchmarks -- Python {platform.python_version()} on {platform.machine()}, "
        f"{ssl.OPENSSL_VERSION}, {len(cpus) or '?'} CPUs"
        f"{f', server pinned to CPU {server_cpu}' if server_cpu is not None else ''}"
    )
    started = time.perf_counter()
    try:
        if args.which in ("all", "parse"):
            table(
                f"recv_parsed, one token (\\r\\n), {count} records of ~64 bytes",
                "records/s",
                lambda start: _records_columns(start, records_port, "one", count),
                rounds,
                "one",
            )
            table(
                f"recv_parsed, three tokens (\\r\\n | \\n | '|'), {count} records",
                "records/s",
                lambda start: _records_columns(start, records_port, "three", count),
                rounds,
                "three",
            )
            table(
                f"length-prefixed messages (hex length line, then the bytes), {count} of "
                "~64 bytes",
                "messages/s",
                lambda start: _framed_columns(start, records_port, count),
                rounds,
                None,
            )
        if args.which in ("all", "tls"):
            for clock, title in (
                ("wall", f"TLS bulk after STARTTLS, {mib} MiB"),
                # Every client runs at most at the server's encryption rate (the server
                # has one core); timing each client by its own CPU shows what it costs.
                ("cpu", f"TLS bulk after STARTTLS, {mib} MiB, per client CPU-second"),
            ):
                table(
                    title,
                    "MB/s",
                    lambda start, clock=clock: _tls_columns(
                        start, tls_port, mib << 20, cert_chain_pem, ca_pem, clock
                    ),
                    rounds,
                    "tls",
                    reference=clock == "wall",
                )
        if args.which in ("all", "pingpong"):
            for tls, pem in (("plain", None), ("TLS", ca_pem)):
                table(
                    f"request/response, {_pingpong.CONNS} connections at once, "
                    f"{_pingpong.ROUND_TRIPS} round trips each, {tls}",
                    "round trips/s",
                    lambda start, tls=tls, pem=pem: _pingpong_columns(
                        start, pingpong_ports[tls == "TLS"], pem
                    ),
                    rounds,
                    None,
                )
    finally:
        if pingpong_end is not None:
            pingpong_end.send("stop")
            pingpong_server.join(5)
            if pingpong_server.is_alive():
                pingpong_server.kill()
        parent_end.send("stop")
        server.join(5)
        if server.is_alive():
            server.kill()
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

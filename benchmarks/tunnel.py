"""``python -m benchmarks.tunnel [--quick]``: proxied-TLS tunnel set-up, janusnet beside its peers.

Benchmarks are not tests: this prints figures and ratios and asserts nothing about time.
A client that reads the wrong bytes (or fails) is reported as WRONG in the table.

What one *tunnel* is: TCP to the proxy, ``CONNECT``, TLS to the origin through the tunnel,
one small HTTP request and its whole response (checked byte for byte), close.

Method. The CONNECT proxy and the TLS origin (trustme certificate, TLS 1.3) each run in
their own process (``spawn``; see ``_tunnel_servers``); every client runs in a worker
process of its own, started once per section (so no client inherits another's heap: see
``_workers.py``), one client at a time. Each section runs one untimed warm-up round, then
interleaved rounds
(A, B, C, ..., A, B, C, ...); every run gets a fresh event loop and a fresh client object
(tunnel, pool, proxy). A client's rate is its median over the rounds; its ratio is the
median of its per-round ratios to the hand-written asyncio client of the same round
(paired, so slow drifts of the machine cancel out). Latency p50/p90 are over every tunnel
of every timed round.

Sections:

* ``seq``  -- tunnels one after another through the benchmark proxy;
* ``conc`` -- tunnels with 100 in flight at once through the benchmark proxy;
* ``mem``  -- resident memory per idle established tunnel (TLS done, nothing sent): a fresh
  process per client opens the tunnels, holds them, and reports the VmRSS growth divided
  by their number;
* ``tinyproxy`` -- the sequential run through a real tinyproxy (``tests/realproxies.py``
  launches it), where latency, not CPU, is the story (see ``Socket`` in janusnet).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import multiprocessing
import os
import platform
import ssl
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import anyio

from ._tunnel_clients import CLIENTS, ClientFactory, Env, Handle
from ._tunnel_servers import HOST, raise_nofile_limit, serve_origin, serve_proxy
from ._workers import WorkerProcess

BASE: Final = "asyncio (hand-written)"
JANUS: Final = "janusnet (asyncio)"
ANYIO: Final = "anyio (hand-written)"
HTTPCORE: Final = "httpcore AsyncHTTPProxy"
#: Targets from the issue: janusnet (asyncio) vs hand-written asyncio.
TARGET_SEQ: Final = 1.0
TARGET_CONC: Final = 1.15
TARGET_TINYPROXY_P50_MS: Final = 5.0
#: What the issue measured before janusnet existed (ratio to hand-written asyncio).
REFERENCE: Final = {
    "seq": "anyio 0.94x, python-socks 0.97x, httpcore 0.73x",
    "conc": "anyio 0.96x, python-socks 1.13x, httpcore 0.61x",
    "mem": "asyncio 300 KiB, anyio 40 KiB per idle TLS tunnel",
    "tinyproxy": "asyncio and anyio ~44 ms p50, python-socks ~2 ms",
}


# -- running clients --------------------------------------------------------------------------


@dataclass
class RunResult:
    elapsed: float
    cpu: float  # this process's CPU seconds over the run (robust when the machine is busy)
    latencies: list[float]
    errors: list[str]


async def _run(factory: ClientFactory, env: Env, total: int, concurrency: int) -> RunResult:
    latencies: list[float] = []
    errors: list[str] = []
    jobs = iter(range(total))
    clock = time.perf_counter

    async with factory(env) as handle:
        fetch = handle.fetch

        async def worker() -> None:
            for _ in jobs:
                start = clock()
                try:
                    await fetch()
                except Exception as exc:  # reported as WRONG, the run goes on
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(clock() - start)

        started = clock()
        cpu_started = time.process_time()
        if concurrency == 1:
            await worker()
        else:
            async with anyio.create_task_group() as group:
                for _ in range(concurrency):
                    group.start_soon(worker)
        elapsed = clock() - started
        cpu = time.process_time() - cpu_started
    return RunResult(elapsed, cpu, latencies, errors)


def run_client(name: str, env: Env, total: int, concurrency: int) -> RunResult:
    factory, backend = CLIENTS[name]
    gc.collect()
    return anyio.run(_run, factory, env, total, concurrency, backend=backend)


def _client_worker(
    pipe: Connection, name: str, env_args: tuple[str, int, int], ca_pem: str
) -> None:
    """A client's own process: answers ``(total, concurrency)`` with a RunResult."""
    raise_nofile_limit()
    env = Env(*env_args, ssl.create_default_context(cadata=ca_pem))
    while (message := pipe.recv()) != "stop":
        pipe.send(run_client(name, env, *message))


class ClientProcess(WorkerProcess):
    """A client's own process (see ``_workers.py``): one section's runs happen there."""

    def __init__(self, name: str, env: Env, ca_pem: str) -> None:
        env_args = (env.proxy_host, env.proxy_port, env.origin_port)
        super().__init__(_client_worker, (name, env_args, ca_pem))

    def run(self, total: int, concurrency: int) -> RunResult:
        result: RunResult | None = self.ask((total, concurrency))
        return result or RunResult(1.0, 0.0, [], ["the client process did not answer in 600 s"])


@dataclass
class Column:
    name: str
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # client CPU ms per tunnel, per round
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ratio: float = float("nan")  # median of the per-round ratios to the asyncio client


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_section(
    title: str,
    env: Env,
    ca_pem: str,
    names: list[str],
    total: int,
    concurrency: int,
    rounds: int,
    warmup: int,
) -> dict[str, Column]:
    """Warm up, run interleaved rounds, print them and the summary table."""
    letters = {name: chr(65 + k) for k, name in enumerate(names)}
    print(f"\n== {title}\n   ({rounds} rounds after a warm-up of {warmup} tunnels per client)")
    print("   " + ", ".join(f"{letters[n]} = {n}" for n in names))
    processes = {name: ClientProcess(name, env, ca_pem) for name in names}
    try:
        return _run_rounds(processes, names, letters, total, concurrency, rounds, warmup)
    finally:
        for process in processes.values():
            process.stop()


def _run_rounds(
    processes: dict[str, ClientProcess],
    names: list[str],
    letters: dict[str, str],
    total: int,
    concurrency: int,
    rounds: int,
    warmup: int,
) -> dict[str, Column]:
    for name in names:
        processes[name].run(warmup, min(concurrency, warmup))
    columns = {name: Column(name) for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for r in range(1, rounds + 1):
        cells = []
        for name in names:
            result = processes[name].run(total, concurrency)
            column = columns[name]
            column.rates.append(len(result.latencies) / result.elapsed)
            column.cpu_ms.append(result.cpu * 1e3 / max(len(result.latencies), 1))
            column.latencies += result.latencies
            column.errors += result.errors
            cells.append(
                f"{letters[name]} {column.rates[-1]:6.0f}" + ("!" if result.errors else "")
            )
        for name in names:
            ratios[name].append(columns[name].rates[-1] / columns[BASE].rates[-1])
        print(f"   round {r}: " + " | ".join(cells), flush=True)
    head = (
        f"   {'client':<27} {'tunnels/s':>9} {'min':>6} {'max':>6} {'p50 ms':>7} "
        f"{'p90 ms':>7} {'vs asyncio':>10} {'vs httpcore':>11} {'CPU ms':>7}"
    )
    print("\n" + head + "\n   " + "-" * (len(head) - 3))
    for name in names:
        column = columns[name]
        vs_base = column.ratio = statistics.median(ratios[name])
        vs_httpcore = (
            statistics.median(ratios[name]) / statistics.median(ratios[HTTPCORE])
            if HTTPCORE in ratios
            else float("nan")
        )
        wrong = f"  WRONG x{len(column.errors)}: {column.errors[0]}" if column.errors else ""
        print(
            f"   {name:<27} {statistics.median(column.rates):>9.0f} {min(column.rates):>6.0f} "
            f"{max(column.rates):>6.0f} {_pct(column.latencies, 0.5) * 1e3:>7.2f} "
            f"{_pct(column.latencies, 0.9) * 1e3:>7.2f} {vs_base:>9.2f}x {vs_httpcore:>10.2f}x"
            f" {statistics.median(column.cpu_ms):>7.3f}{wrong}"
        )
    return columns


# -- memory per idle tunnel -------------------------------------------------------------------


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _memory_child(
    name: str, proxy_port: int, origin_port: int, ca_pem: str, count: int, pipe: Connection
) -> None:
    """In a fresh process: open ``count`` idle tunnels, report (KiB per tunnel, error)."""
    limit = raise_nofile_limit()
    context = ssl.create_default_context(cadata=ca_pem)
    env = Env(HOST, proxy_port, origin_port, context)
    factory, backend = CLIENTS[name]

    async def main() -> tuple[float, str | None]:
        async with factory(env) as handle:
            await _hold(handle, 20)  # warm-up: imports, caches, the allocator's arenas
            gc.collect()
            before = _vm_rss_kib()
            closers = await _open_many(handle, count)
            gc.collect()
            await anyio.sleep(0.2)
            after = _vm_rss_kib()
            for close in closers:
                await close()
            error = None if len(closers) == count else f"only {len(closers)} opened"
            return (after - before) / max(len(closers), 1), error

    if limit < 2 * count + 100:
        pipe.send((float("nan"), f"RLIMIT_NOFILE {limit} too low"))
        return
    try:
        pipe.send(anyio.run(main, backend=backend))
    except Exception as exc:
        pipe.send((float("nan"), f"{type(exc).__name__}: {exc}"))


async def _open_many(handle: Handle, count: int) -> list:  # type: ignore[type-arg]
    closers = []
    jobs = iter(range(count))

    async def worker() -> None:
        for _ in jobs:
            closers.append(await handle.open_idle())

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(worker)
    return closers


async def _hold(handle: Handle, count: int) -> None:
    for close in await _open_many(handle, count):
        await close()


def run_memory(
    env: Env, names: list[str], ca_pem: str, count: int
) -> dict[str, tuple[float, str | None]]:
    print(f"\n== resident memory per idle established tunnel ({count} held, TLS done)")
    print("   (fresh process per client; VmRSS growth / tunnels, after a warm-up of 20)")
    mp = multiprocessing.get_context("spawn")
    results: dict[str, tuple[float, str | None]] = {}
    for name in names:
        parent_end, child_end = mp.Pipe()
        child = mp.Process(
            target=_memory_child,
            args=(name, env.proxy_port, env.origin_port, ca_pem, count, child_end),
        )
        child.start()
        if parent_end.poll(120):
            results[name] = parent_end.recv()
        else:
            results[name] = (float("nan"), "timed out")
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    base = results.get(ANYIO, (float("nan"), None))[0]
    head = f"   {'client':<27} {'KiB/tunnel':>10} {'vs anyio':>9}"
    print("\n" + head + "\n   " + "-" * (len(head) - 3))
    for name in names:
        kib, error = results[name]
        suffix = f"  WRONG: {error}" if error else ""
        print(f"   {name:<27} {kib:>10.1f} {kib / base:>8.2f}x{suffix}")
    return results


# -- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(cert_chain_pem: bytes) -> Iterator[tuple[int, int]]:
    """Start the proxy and the origin in their own processes; yield their ports."""
    mp = multiprocessing.get_context("spawn")
    procs = []
    pipes = []
    try:
        for target, args in ((serve_proxy, ()), (serve_origin, (cert_chain_pem,))):
            parent_end, child_end = mp.Pipe()
            proc = mp.Process(target=target, args=(child_end, *args), daemon=True)
            proc.start()
            procs.append(proc)
            pipes.append(parent_end)
        ports = [pipe.recv() for pipe in pipes]
        yield ports[0], ports[1]
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


@contextlib.contextmanager
def tinyproxy() -> Iterator[int | None]:
    """A real tinyproxy on a free loopback port (``None`` when it is not installed).

    The launcher is the test-suite's (``tests/realproxies.py``), logging errors only: at
    ``LogLevel Info`` tinyproxy writes and ``fsync``s its log ~8 times per tunnel, which
    costs 10-90 ms per ``CONNECT`` on a busy disk -- a benchmark of the disk, not of the
    clients.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        import realproxies as rp  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            proxy = stack.enter_context(rp.launch_tinyproxy(log_level="Error"))
        except BaseException as exc:  # pytest.skip()/fail() when the binary is missing
            print(f"   tinyproxy unavailable: {exc}")
            yield None
            return
        yield proxy.port


def tls_version(env: Env) -> str | None:
    async def probe() -> str | None:
        import janusnet

        port = janusnet.ClientPort("PROBE", ssl_context=env.context)
        sock = await janusnet.ProxyTunnel(env.proxy_url, client_port=port).open_tls(
            env.origin_host, env.origin_port
        )
        async with sock:
            return sock.tls.version if sock.tls else None

    return anyio.run(probe, backend="asyncio")


# -- main -------------------------------------------------------------------------------------


def _verdict(got: float, target: float, higher: bool = True) -> str:
    ok = got >= target if higher else got <= target
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tunnel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short run (< 40 s)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 3)")
    parser.add_argument(
        "--sections",
        default="seq,conc,mem,tinyproxy",
        help="comma-separated: seq, conc, mem, tinyproxy (default: all)",
    )
    parser.add_argument("--clients", help="comma-separated client names (default: all)")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or 3
    sections = set(args.sections.split(","))
    names = list(CLIENTS)
    if args.clients:
        wanted = args.clients.split(",")
        names = [n for n in names if any(w.strip() in n for w in wanted)]
        if BASE not in names:
            names.insert(0, BASE)
    seq_total = 80 if quick else 300
    conc_total = 300 if quick else 1000
    concurrency = 100
    mem_count = 300 if quick else 2000
    tiny_total = 20 if quick else 60

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    cert_chain_pem = cert.private_key_and_cert_chain_pem.bytes()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ca_pem = ca.cert_pem.bytes().decode()
    raise_nofile_limit()

    print(
        f"janusnet tunnel benchmark -- Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}, {len(os.sched_getaffinity(0))} CPUs, "
        f"anyio {importlib.metadata.version('anyio')}"
    )
    started = time.perf_counter()
    summary: list[str] = []
    with servers(cert_chain_pem) as (proxy_port, origin_port):
        env = Env(HOST, proxy_port, origin_port, context)
        print(f"   origin negotiates {tls_version(env)} (trustme ECDSA certificate)")
        if "seq" in sections:
            cols = run_section(
                f"sequential: {seq_total} tunnels one at a time, benchmark proxy",
                env, ca_pem, names, seq_total, 1, rounds, 30,
            )  # fmt: skip
            print(f"   issue's pre-janusnet ratios: {REFERENCE['seq']}")
            if JANUS in cols:
                got = cols[JANUS].ratio
                summary.append(
                    f"sequential: janusnet {got:.2f}x asyncio (target >= {TARGET_SEQ:.2f}x): "
                    f"{_verdict(got, TARGET_SEQ)}"
                )
        if "conc" in sections:
            cols = run_section(
                f"concurrent: {conc_total} tunnels, {concurrency} in flight, benchmark proxy",
                env, ca_pem, names, conc_total, concurrency, rounds, 100 if quick else 200,
            )  # fmt: skip
            print(f"   issue's pre-janusnet ratios: {REFERENCE['conc']}")
            if JANUS in cols:
                got = cols[JANUS].ratio
                summary.append(
                    f"{concurrency} concurrent: janusnet {got:.2f}x asyncio "
                    f"(target >= {TARGET_CONC:.2f}x): {_verdict(got, TARGET_CONC)}"
                )
        if "mem" in sections:
            mem = run_memory(env, [n for n in names if "trio" not in n], ca_pem, mem_count)
            print(f"   issue's pre-janusnet figures: {REFERENCE['mem']}")
            if JANUS in mem and ANYIO in mem:
                janus_kib, anyio_kib = mem[JANUS][0], mem[ANYIO][0]
                summary.append(
                    f"idle memory: janusnet {janus_kib:.1f} KiB vs anyio {anyio_kib:.1f} KiB "
                    f"per tunnel (target <= anyio): {_verdict(janus_kib, anyio_kib * 1.02, False)}"
                    " (2% noise allowance)"
                )
    if "tinyproxy" in sections:
        with tinyproxy() as tiny_port:
            if tiny_port is not None:
                with servers(cert_chain_pem) as (_, origin_port):
                    env = Env(HOST, tiny_port, origin_port, context)
                    cols = run_section(
                        f"sequential through tinyproxy: {tiny_total} tunnels one at a time, "
                        f"TLS 1.3",
                        env, ca_pem, names, tiny_total, 1, rounds, 5,
                    )  # fmt: skip
                    print(f"   issue's pre-janusnet figures: {REFERENCE['tinyproxy']}")
                    if JANUS in cols:
                        p50 = _pct(cols[JANUS].latencies, 0.5) * 1e3
                        summary.append(
                            f"tinyproxy: janusnet p50 {p50:.2f} ms (target <= "
                            f"{TARGET_TINYPROXY_P50_MS:.0f} ms): "
                            f"{_verdict(p50, TARGET_TINYPROXY_P50_MS, False)}"
                        )
    if summary:
        print("\n== targets")
        for line in summary:
            print(f"   {line}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

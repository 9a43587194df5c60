"""The ``janusnet`` command: ``probe`` a server (through a proxy) and run the ``demo``.

``janusnet probe HOST:PORT [--proxy URL]`` shows each step with its time — TCP connect,
the proxy's CONNECT reply, the TLS handshake and the server's certificate — or names the
step that failed and why, exiting non-zero. Credentials in ``--proxy`` are never printed.

``janusnet demo`` starts the embedded CONNECT proxy and TLS origin on loopback and runs the
``$Sock_SSL_On`` flow step by step, offline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from . import __version__
from ._connect import format_authority
from ._exceptions import JanusnetError, UsageError, show_address
from ._socket import Socket
from ._tls import CertInfo, TLSInfo, _cert_from_der
from ._tunnel import ProxyTunnel

__all__ = ["main"]


@dataclass
class Step:
    """One step of a probe: its name, outcome, duration and details."""

    name: str
    ok: bool
    ms: float
    summary: str
    details: dict[str, object] = field(default_factory=dict)


def _target(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError("write IPv6 addresses in brackets: [::1]:443")
    try:
        format_authority(host, int(port))  # the checks a connect would make
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _proxy_url(text: str) -> str:
    """``--proxy`` as given, or ``http://`` + it when it has no scheme (as curl reads it)."""
    return text if "://" in text else f"http://{text}"


def _cert_details(cert: CertInfo | None) -> dict[str, object]:
    if cert is None:
        return {}

    def name(fields: dict[str, str]) -> str:
        short = {
            "commonName": "CN",
            "organizationName": "O",
            "organizationalUnitName": "OU",
            "localityName": "L",
            "countryName": "C",
        }
        return ", ".join(f"{short.get(k, k)}={v}" for k, v in fields.items())

    return {
        "subject": name(cert.subject),
        "issuer": name(cert.issuer),
        "subject_alt_names": [f"{k}:{v}" for k, v in cert.subject_alt_names],
        "not_after": cert.not_after.isoformat() if cert.not_after else None,
    }


def _unverified_details(sock: Socket) -> dict[str, object]:
    """What an unverified certificate claims (``getpeercert()`` hides it under CERT_NONE)."""
    ssl_object = sock._ssl_object
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return {}
    details: dict[str, object] = {"sha256_fingerprint": hashlib.sha256(der).hexdigest()}
    try:
        details.update(_cert_details(_cert_from_der(der)))
    except (ValueError, OSError, ssl.SSLError):  # informational only
        pass
    return details


def _tls_details(info: TLSInfo) -> dict[str, object]:
    return {
        "version": info.version,
        "cipher": info.cipher,
        "alpn": info.alpn_protocol,
        "server_hostname": info.server_hostname,
        **_cert_details(info.peer_certificate),
    }


async def probe(
    host: str,
    port: int,
    *,
    proxy: str | None,
    context: ssl.SSLContext,
    timeout: float,
) -> list[Step]:
    """Run the probe and return its steps (the last one failed if any did).

    Raises:
        UsageError: a bad proxy URL (nothing was sent).
    """
    steps: list[Step] = []
    tunnel = ProxyTunnel(proxy, timeout=timeout, connect_timeout=timeout) if proxy else None
    sock: Socket | None = None
    started = time.perf_counter()

    def record(name: str, ok: bool, summary: str, **details: object) -> None:
        nonlocal started
        now = time.perf_counter()
        steps.append(Step(name, ok, (now - started) * 1000, summary, details))
        started = now

    try:
        with anyio.fail_after(timeout):
            try:
                if tunnel is not None:
                    sock = await tunnel._connect_proxy(host)
                    record("tcp", True, f"connected to proxy {tunnel.proxy}")
                else:
                    sock = await Socket.connect(host, port, timeout=None)
                    peer = sock.remote_address
                    record(
                        "tcp",
                        True,
                        f"connected to {show_address(host, port)}",
                        peer=show_address(str(peer[0]), int(peer[1])) if peer else None,
                    )
            except (JanusnetError, OSError) as exc:
                record("tcp", False, f"{type(exc).__name__}: {exc}")
                return steps
            if tunnel is not None:
                try:
                    sock = await tunnel._exchange(sock, format_authority(host, port), host)
                except JanusnetError as exc:
                    sock = None
                    headers = [f"{k}: {v}" for k, v in getattr(exc, "headers", ())]
                    record("connect", False, f"{type(exc).__name__}: {exc}", headers=headers)
                    return steps
                reply = sock.proxy_reply
                assert reply is not None
                record(
                    "connect",
                    True,
                    f"HTTP/{reply.http_version} {reply.status} {reply.reason}".rstrip(),
                    headers=[f"{k}: {v}" for k, v in reply.headers],
                )
            try:
                await sock.ssl_on(server_hostname=host, ssl_context=context)
            except JanusnetError as exc:
                record("tls", False, f"{type(exc).__name__} ({getattr(exc, 'code', '')}): {exc}")
                return steps
            assert sock.tls is not None
            summary = f"{sock.tls.version} {sock.tls.cipher} alpn={sock.tls.alpn_protocol or '-'}"
            details = _tls_details(sock.tls)
            if sock.tls.peer_certificate is None:  # not verified (--insecure): say what it was
                summary += "  certificate NOT verified"
                details.update(_unverified_details(sock))
            record("tls", True, summary, **details)
    except TimeoutError:
        done = {s.name for s in steps}
        order = ["tcp", "connect", "tls"] if tunnel else ["tcp", "tls"]
        record(next(n for n in order if n not in done), False, f"timed out after {timeout:g} s")
    finally:
        if sock is not None:
            await sock.aclose()
    return steps


def _print_steps(steps: Sequence[Step], out: TextIO) -> None:
    for step in steps:
        status = "ok" if step.ok else "FAIL"
        out.write(f"  {step.name:<8} {status:<4} {step.ms:8.1f} ms  {step.summary}\n")
        for key, value in step.details.items():
            if isinstance(value, list):
                for item in value:
                    out.write(
                        f"{'':28}{key}: {item}\n" if key != "headers" else f"{'':28}{item}\n"
                    )
            elif value is not None:
                out.write(f"{'':28}{key}: {value}\n")


def _probe_context(args: argparse.Namespace) -> ssl.SSLContext:
    if args.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)
    else:
        # A fresh context with the default policy, so setting ALPN below does not touch
        # the shared default context.
        context = ssl.create_default_context(cafile=_certifi_where())
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _certifi_where() -> str:
    import certifi

    return certifi.where()


def _cmd_probe(args: argparse.Namespace, out: TextIO) -> int:
    host, port = args.target
    try:
        context = _probe_context(args)
    except (OSError, ssl.SSLError) as exc:
        out.write(f"janusnet probe: cannot load --cafile {args.cafile}: {exc}\n")
        return 2
    if args.proxy:
        args.proxy = _proxy_url(args.proxy)
    try:
        steps = anyio.run(
            lambda: probe(host, port, proxy=args.proxy, context=context, timeout=args.timeout)
        )
    except UsageError as exc:
        out.write(f"janusnet probe: {exc}\n")
        return 2
    ok = bool(steps) and all(s.ok for s in steps)
    if args.json:
        json.dump(
            {
                "target": show_address(host, port),
                "ok": ok,
                "steps": [
                    {
                        "step": s.name,
                        "ok": s.ok,
                        "ms": round(s.ms, 2),
                        "summary": s.summary,
                        **s.details,
                    }
                    for s in steps
                ],
            },
            out,
            indent=2,
            default=str,
        )
        out.write("\n")
    else:
        via = f" via proxy {ProxyTunnel(args.proxy).proxy}" if args.proxy else ""
        out.write(f"janusnet probe {show_address(host, port)}{via}\n")
        _print_steps(steps, out)
        failed = next((s for s in steps if not s.ok), None)
        out.write(
            "result: ok\n" if ok else f"result: FAILED at step {failed.name if failed else '?'}\n"
        )
    return 0 if ok else 1


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run_demo

    return run_demo(out, backend=args.backend)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the ``janusnet`` command line.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
        out: where to print (default ``sys.stdout``).

    Returns:
        The exit status: 0 success, 1 a step failed, 2 bad usage.
    """
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="janusnet", description="Reach TLS servers through HTTP proxies, step by step."
    )
    parser.add_argument("--version", action="version", version=f"janusnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("probe", help="show each step of reaching HOST:PORT over TLS")
    p.add_argument("target", type=_target, metavar="HOST:PORT")
    p.add_argument(
        "--proxy",
        help="HTTP(S) proxy URL, e.g. http://user:pass@proxy:3128 (no scheme: http://)",
    )
    p.add_argument("--cafile", help="trust this CA bundle instead of certifi's")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--timeout", type=_seconds, default=15.0, help="deadline in seconds (15)")
    p.add_argument("--json", action="store_true", help="print the steps as JSON")

    d = commands.add_parser("demo", help="run the CONNECT + ssl_on() flow against local servers")
    d.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")

    args = parser.parse_args(argv)
    if args.command == "probe":
        return _cmd_probe(args, out)
    return _cmd_demo(args, out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

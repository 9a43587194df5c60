"""The ``janusnet`` command: ``probe`` a server (through a proxy) and run the ``demo``.

``janusnet probe HOST:PORT [--proxy URL]`` shows each step with its time — TCP connect,
the TLS handshake with an ``https://`` proxy, the proxy's CONNECT reply, the TLS handshake
and the server's certificate — or names the step that failed and why, exiting non-zero.
Credentials in a proxy URL are never printed. Without ``--proxy`` the proxy comes from the
environment (``https_proxy``...), ``no_proxy`` applies, as with curl.

``janusnet demo`` starts the embedded CONNECT proxy and TLS origin on loopback and runs the
``$Sock_SSL_On`` flow step by step, offline.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import ipaddress
import json
import os
import re
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

import anyio
from anyio.abc import SocketAttribute

from . import __version__
from ._auth import parse_challenges
from ._connect import _check_port, format_authority
from ._demo import run_demo, run_interruptible
from ._exceptions import (
    JanusnetError,
    PendingDataError,
    ProxyAuthenticationRequired,
    ProxyRefusedError,
    SSLOnError,
    UsageError,
    printable,
    show_address,
)
from ._proxyenv import ProxyURL, no_proxy_matches, parse_proxy_url
from ._socket import TLS_PHASE, Socket
from ._tls import (
    CertInfo,
    TLSInfo,
    _cert_from_der,
    create_ssl_context,
    default_ssl_context,
    env_trust_hint,
    env_trust_variable,
)
from ._transport import (
    PLAIN_ANSWER_KEPT,
    open_hop,
    quote_line,
    raise_handshake_error,
    ssl_object_of,
    start_tls,
)
from ._tunnel import ProxyTunnel

if TYPE_CHECKING:
    from anyio.abc import ByteStream

__all__ = ["main"]

#: Where the proxy comes from without ``--proxy``, in curl's order (lower case first).
PROXY_VARIABLES: Final = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
NO_PROXY_VARIABLES: Final = ("no_proxy", "NO_PROXY")
#: The subcommands, as the usage line and the missing-command error name them.
COMMANDS: Final = ("probe", "demo")
#: How the certificate shown after a verification failure was obtained.
SECOND_HANDSHAKE: Final = "from a second, unverified handshake made only to show it"
#: Details the text output leaves out because the step's summary line already shows them.
IN_SUMMARY: Final = frozenset({"version", "cipher", "alpn"})

PROBE_EPILOG: Final = """\
proxy selection (as curl does):
  --proxy URL is used when given; otherwise the first of https_proxy, HTTPS_PROXY,
  all_proxy, ALL_PROXY that is set. no_proxy/NO_PROXY (or --noproxy LIST, which
  replaces them) names hosts reached directly, with --proxy too. --proxy "" or
  --noproxy '*' forces a direct connection.

steps: tcp, proxy-tls (https:// proxy only), connect (proxy only), tls.
  When a certificate fails verification (-111), a second, unverified handshake is
  made only to show what the server presented (subject, issuer, SANs, expiry,
  SHA-256 fingerprint).

exit status:
  0  every step succeeded
  1  a step failed (the output names it)
  2  usage error (bad arguments, unreadable --cafile/--proxy-cafile, bad proxy URL)
"""


@dataclass
class Step:
    """One step of a probe: its name, outcome, duration and details.

    A failed step also carries ``error`` (the exception class name), ``code`` (the Janus
    return code, e.g. -111, when the error has one) and ``status`` (the proxy's HTTP
    status when it refused ``CONNECT``).
    """

    name: str
    ok: bool
    ms: float
    summary: str
    details: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    code: int | None = None
    status: int | None = None

    def as_json(self) -> dict[str, object]:
        """The step as a JSON object (``error``/``code``/``status`` on failures only)."""
        data: dict[str, object] = {
            "step": self.name,
            "ok": self.ok,
            "ms": round(self.ms, 2),
            "summary": self.summary,
        }
        if not self.ok:
            data.update(error=self.error, code=self.code, status=self.status)
        data.update(self.details)
        return data


@dataclass(frozen=True)
class ProxyChoice:
    """The proxy a probe uses and why: ``url`` is ``None`` for a direct connection."""

    url: str | None
    source: str | None = None  # "--proxy" or the environment variable it came from
    #: What sent it direct: the no-proxy list ("--noproxy", "no_proxy", "NO_PROXY") that
    #: matched, or "--proxy" for ``--proxy ""`` overriding the environment's proxy.
    bypassed_by: str | None = None


def _target(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise argparse.ArgumentTypeError(f"brackets are for IPv6 addresses only, got {text!r}")
    elif ":" in host:
        raise argparse.ArgumentTypeError("write IPv6 addresses in brackets: [::1]:443")
    if "%" in host and ":" in host:
        # A zone ID (fe80::1%eth0) is fine for a direct probe; through a proxy the tunnel
        # refuses it (it cannot be sent to a proxy), and the probe reports that.
        try:
            ipaddress.IPv6Address(host)
            _check_port(int(port))
        except (ValueError, UsageError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return host, int(port)
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
    """A proxy as given, or ``http://`` + it when it has no scheme (as curl reads it)."""
    return text if "://" in text else f"http://{text}"


def _first_set(environ: Mapping[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def choose_proxy(
    host: str,
    port: int,
    *,
    proxy: str | None,
    noproxy: str | None,
    environ: Mapping[str, str],
) -> ProxyChoice:
    """Pick the proxy the way curl does: ``--proxy``, else the environment; then the
    no-proxy list (``--noproxy``, else ``no_proxy``/``NO_PROXY``) may send it direct."""
    if proxy is not None:
        if not proxy.strip():  # --proxy "": direct, whatever the environment says
            found = _first_set(environ, PROXY_VARIABLES)
            return ProxyChoice(None, found[0], "--proxy") if found else ProxyChoice(None)
        url, source = proxy, "--proxy"
    else:
        found = _first_set(environ, PROXY_VARIABLES)
        if found is None:
            return ProxyChoice(None)
        source, url = found
    if noproxy is not None:
        bypass: tuple[str, str] | None = ("--noproxy", noproxy)
    else:
        bypass = _first_set(environ, NO_PROXY_VARIABLES)
    if bypass is not None and no_proxy_matches(host, port, bypass[1]):
        return ProxyChoice(None, source, bypass[0])
    return ProxyChoice(_proxy_url(url), source)


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


def _unverified_details(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, object]:
    """What an unverified certificate claims (``getpeercert()`` hides it under CERT_NONE)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return {}
    details: dict[str, object] = {"sha256_fingerprint": hashlib.sha256(der).hexdigest()}
    try:
        details.update(_cert_details(_cert_from_der(der)))
    except (ValueError, OSError, ssl.SSLError):  # informational only
        pass
    return details


def _tls_step(
    info: TLSInfo, ssl_object: ssl.SSLObject | ssl.SSLSocket | None
) -> tuple[str, dict[str, object]]:
    """The summary and details of a completed handshake."""
    summary = f"{info.version} {info.cipher} alpn={info.alpn_protocol or '-'}"
    details: dict[str, object] = {
        "version": info.version,
        "cipher": info.cipher,
        "alpn": info.alpn_protocol,
        "server_hostname": info.server_hostname,
        **_cert_details(info.peer_certificate),
    }
    if info.peer_certificate is None:  # not verified (--insecure): say what it was
        summary += "  certificate NOT verified"
        details.update(_unverified_details(ssl_object))
    return summary, details


def _is_certificate_failure(exc: BaseException) -> bool:
    """Whether a handshake failed on the certificate (issuer, expiry, host name)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__
    return False


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _auth_explanation(exc: ProxyAuthenticationRequired, proxy: ProxyURL) -> str:
    """Why a 407 happened: no credentials, rejected ones, or a scheme janusnet lacks."""
    schemes = [c.scheme for c in parse_challenges(exc.challenges)]
    if schemes and not {"basic", "digest"} & set(schemes):
        # First: credentials in the URL would not help.
        return (
            f"it offers only {', '.join(schemes)}; the probe answers Basic and Digest (in "
            "code, a janusnet.ProxyAuth flow answers other schemes)"
        )
    if proxy.username is None:
        return (
            "no credentials given (put them in the proxy URL: "
            f"{proxy.scheme}://USER:PASSWORD@{proxy.address})"
        )
    return "credentials rejected"


def _pending_explanation(exc: PendingDataError, reply_status: int | None, first: str) -> str:
    """-112 for someone at a command line: where the bytes came from (``first``: their
    first line, quoted), why they were refused."""
    quoted = f", beginning {first!r}" if first else ""
    speaks_first = (
        "the server speaks first (an SMTP, IMAP, POP3 or FTP greeting: such a server "
        "starts TLS after STARTTLS or AUTH TLS, not at once)"
    )
    if reply_status is not None:
        came = (
            f"{exc.pending} byte(s) came through the tunnel after the proxy's {reply_status} "
            f"reply, before TLS started{quoted}"
        )
        suspect = f"{speaks_first}, or the proxy or something on the way injected them"
    else:
        came = f"the server sent {exc.pending} byte(s) before TLS started{quoted}"
        suspect = (
            f"{speaks_first}, or it does not speak TLS on this port, or something on the "
            "way injected them"
        )
    return f"{type(exc).__name__} ({int(exc.code)}): {came}; refused: {suspect}"


async def _first_line(sock: Socket) -> str:
    """The first line of the bytes ``ssl_on()`` refused (already buffered: no wait),
    printable and short, without credentials a tunnel withholds."""
    if not sock.pending:
        return ""
    # The whole line (as much as is kept) first, then withheld, then cut: cut first,
    # a credential across the cut would show its first part.
    data = await sock.recv(min(sock.pending, PLAIN_ANSWER_KEPT))
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    return quote_line(line, sock._secrets)  # (what arrived so far: it may stop anywhere)


def _cli_text(exc: SSLOnError, context: ssl.SSLContext, option: str = "--cafile") -> str:
    """The error's text, with the library's advice about a CA variable it does not read
    (a Python call) given as the probe's option instead."""
    text = str(exc)
    named = env_trust_variable(exc.__cause__, context)
    if named is None:
        return text
    use = f'if the CA is in that bundle, {option} "${named}" trusts it'
    if named == "SSL_CERT_DIR":
        use = f"{option} FILE trusts a CA file (the probe takes no directory)"
    return text.replace(
        env_trust_hint(exc.__cause__, context),  # (what raise_handshake_error appended)
        f" ({named} is set, but janusnet reads no such variable: {use})",
    )


def _timeout_explanation(
    exc: TimeoutError, step: str, host: str, port: int, url: ProxyURL | None, timeout: float
) -> str:
    """What the probe was waiting for when its deadline expired, as the library says it."""
    if exc.args:  # already says what timed out
        return f"{type(exc).__name__}: {exc}"
    expired = f"the {timeout:g} s deadline expired"
    if url is not None:
        phase = {
            "tcp": "while connecting to the proxy",
            "proxy-tls": "during the TLS handshake with the proxy",
            "connect": "while waiting for the proxy's reply",
        }.get(step, "during the TLS handshake with the target")
        where = f"CONNECT {format_authority(host, port)} via proxy {url.address}"
        return f"TimeoutError: {where}: {expired} {phase}"
    phase = "TCP connect" if step == "tcp" else TLS_PHASE
    return f"TimeoutError: connecting to {show_address(host, port)}: {expired} during the {phase}"


async def _proxy_tls(stream: ByteStream, url: ProxyURL, context: ssl.SSLContext) -> ByteStream:
    """TLS to an ``https://`` proxy over ``stream`` (closed on failure), as ``open_hop``."""
    try:
        return await start_tls(stream, hostname=url.host, ssl_context=context)
    except BaseException as exc:
        await anyio.aclose_forcefully(stream)
        raise_handshake_error(exc, f"proxy {url.address}", context)
        raise  # pragma: no cover - raise_handshake_error always raises


def _peer(stream: ByteStream) -> str | None:
    try:
        peer = stream.extra(SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return None
    return show_address(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


async def probe(
    host: str,
    port: int,
    *,
    proxy: str | None,
    context: ssl.SSLContext,
    timeout: float,
    proxy_context: ssl.SSLContext | None = None,
    into: list[Step] | None = None,
) -> list[Step]:
    """Run the probe and return its steps (the last one failed if any did).

    Args:
        host: the target host.
        port: the target port.
        proxy: the proxy URL, or ``None`` for a direct connection.
        context: the origin's TLS context.
        timeout: the deadline over all steps, in seconds (the diagnostic second handshake
            after a certificate failure included).
        proxy_context: the context for TLS to an ``https://`` proxy (default: verified,
            certifi).
        into: the list to record the steps in, as they finish (the caller still has
            them when the probe is interrupted); default: a new one.

    Raises:
        UsageError: a bad proxy URL (nothing was sent).
    """
    steps: list[Step] = into if into is not None else []
    url = parse_proxy_url(proxy) if proxy else None
    proxy_context = proxy_context or default_ssl_context()
    tunnel = (
        ProxyTunnel(
            proxy, timeout=timeout, connect_timeout=timeout, proxy_ssl_context=proxy_context
        )
        if proxy
        else None
    )
    sock: Socket | None = None
    started = time.perf_counter()

    def record(name: str, ok: bool, summary: str, **details: object) -> None:
        nonlocal started
        now = time.perf_counter()
        steps.append(Step(name, ok, (now - started) * 1000, summary, details))
        started = now

    def fail(name: str, exc: BaseException, summary: str = "", **details: object) -> None:
        record(name, False, summary or f"{type(exc).__name__}: {exc}", **details)
        code = getattr(exc, "code", None)
        status = getattr(exc, "status", None)
        step = steps[-1]
        step.error = type(exc).__name__
        step.code = int(code) if isinstance(code, int) else None
        step.status = status if isinstance(status, int) else None

    async def run_steps() -> str | None:
        """The steps, in order, until one fails; the step whose certificate failed."""
        nonlocal sock
        if url is not None and tunnel is not None:
            try:
                stream = await open_hop(
                    url.host, url.port, label=f"proxy {url.address}", connect_timeout=None
                )
            except (JanusnetError, OSError) as exc:
                fail("tcp", exc)
                return None
            record("tcp", True, f"connected to proxy {url.address}", peer=_peer(stream))
            if url.scheme == "https":
                try:
                    stream = await _proxy_tls(stream, url, proxy_context)
                except SSLOnError as exc:
                    fail(
                        "proxy-tls",
                        exc,
                        f"{type(exc).__name__} ({int(exc.code)}): "
                        f"{_cli_text(exc, proxy_context, '--proxy-cafile')}",
                    )
                    return "proxy-tls" if _is_certificate_failure(exc) else None
                ssl_object = ssl_object_of(stream)
                summary, details = _tls_step(
                    TLSInfo.from_ssl_object(ssl_object, url.host), ssl_object
                )
                record("proxy-tls", True, summary, **details)
            try:
                sock = Socket(stream, server_hostname=host)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
            try:
                sock = await tunnel._exchange(sock, format_authority(host, port), host)
            except JanusnetError as exc:
                sock = None  # _exchange closed it
                headers = [f"{k}: {v}" for k, v in getattr(exc, "headers", ())]
                if isinstance(exc, ProxyAuthenticationRequired):
                    # The probe's own explanation (it knows the URL) instead of exc.detail.
                    refused = ProxyRefusedError(exc.status, exc.reason, proxy=exc.proxy)
                    explained = f"{type(exc).__name__}: {refused}; {_auth_explanation(exc, url)}"
                    given = url.username is not None
                    fail("connect", exc, explained, headers=headers, credentials_given=given)
                else:
                    fail("connect", exc, headers=headers)
                return None
            reply = sock.proxy_reply
            assert reply is not None
            record(
                "connect",
                True,
                f"HTTP/{reply.http_version} {reply.status} {reply.reason}".rstrip(),
                headers=[f"{k}: {v}" for k, v in reply.headers],
            )
        else:
            try:
                sock = await Socket.connect(host, port, timeout=None)
            except (JanusnetError, OSError) as exc:
                fail("tcp", exc)
                return None
            peer = sock.remote_address
            record(
                "tcp",
                True,
                f"connected to {show_address(host, port)}",
                peer=show_address(str(peer[0]), int(peer[1])) if peer else None,
            )
        try:
            await sock.ssl_on(server_hostname=host, ssl_context=context, timeout=None)  # ours
        except PendingDataError as exc:
            reply_status = sock.proxy_reply.status if sock.proxy_reply else None
            fail("tls", exc, _pending_explanation(exc, reply_status, await _first_line(sock)))
            return None
        except SSLOnError as exc:
            fail("tls", exc, f"{type(exc).__name__} ({int(exc.code)}): {_cli_text(exc, context)}")
            return "tls" if _is_certificate_failure(exc) else None
        assert sock.tls is not None
        summary, details = _tls_step(sock.tls, sock._ssl_object)
        record("tls", True, summary, **details)
        return None

    certificate_failed: str | None = None
    deadline = anyio.current_time() + timeout
    try:
        with anyio.fail_after(deadline - anyio.current_time()):
            certificate_failed = await run_steps()
    except TimeoutError as exc:
        done = {s.name for s in steps}
        order = ["tcp", "connect", "tls"] if url else ["tcp", "tls"]
        if url is not None and url.scheme == "https":
            order.insert(1, "proxy-tls")
        step = next(n for n in order if n not in done)
        fail(step, exc, _timeout_explanation(exc, step, host, port, url, timeout))
    finally:
        if sock is not None:
            await sock.aclose()
    if certificate_failed is not None:  # what is left of the deadline, outside its scope
        await _show_presented(steps[-1], host, port, url, tunnel, deadline)
    return steps


async def _show_presented(
    step: Step,
    host: str,
    port: int,
    url: ProxyURL | None,
    tunnel: ProxyTunnel | None,
    deadline: float,
) -> None:
    """Add the certificate the failed step's peer presented, from a second handshake
    that verifies nothing and sends nothing after it, to ``step``, within what is left
    of the probe's ``deadline``."""
    insecure = _unverified_context()
    presented: dict[str, object] = {}
    try:
        with anyio.fail_after(deadline - anyio.current_time()):
            if step.name == "proxy-tls" and url is not None:
                stream = await open_hop(
                    url.host,
                    url.port,
                    label=f"proxy {url.address}",
                    connect_timeout=None,
                    ssl_context=insecure,
                )
                try:
                    presented = _unverified_details(ssl_object_of(stream))
                finally:
                    await anyio.aclose_forcefully(stream)
            else:
                if tunnel is not None:
                    sock = await tunnel._exchange(
                        await tunnel._connect_proxy(host), format_authority(host, port), host
                    )
                else:
                    sock = await Socket.connect(host, port, timeout=None)
                async with sock:
                    await sock.ssl_on(server_hostname=host, ssl_context=insecure, timeout=None)
                    presented = _unverified_details(sock._ssl_object)
    except (JanusnetError, OSError) as exc:  # TimeoutError included
        step.details["presented_certificate_error"] = (
            f"the second handshake to show the certificate failed: {type(exc).__name__}: {exc}"
        )
        return
    if presented:
        step.details["presented_certificate"] = {"note": SECOND_HANDSHAKE, **presented}


#: Longest peer-supplied text printed as it is (a 60 KB reason phrase is cut).
SHOWN: Final = 2000


def _print_steps(steps: Sequence[Step], out: TextIO) -> None:
    indent = " " * 30

    # Reason phrases, headers and certificate names come from the peers: escaped, so a
    # hostile proxy or origin cannot drive the terminal (JSON output escapes by itself).
    def detail(key: str, value: object, pad: str) -> None:
        if isinstance(value, dict):
            out.write(f"{pad}{printable(key)}:\n")
            for sub_key, sub_value in value.items():
                detail(str(sub_key), sub_value, pad + "  ")
        elif isinstance(value, list):
            for item in value:
                text = printable(str(item), SHOWN)
                out.write(
                    f"{pad}{printable(key)}: {text}\n" if key != "headers" else f"{pad}{text}\n"
                )
        elif isinstance(value, bool):
            out.write(f"{pad}{printable(key)}: {'yes' if value else 'no'}\n")
        elif value is not None:
            out.write(f"{pad}{printable(key)}: {printable(str(value), SHOWN)}\n")

    for step in steps:
        status = "ok" if step.ok else "FAIL"
        summary = printable(step.summary, SHOWN)
        out.write(f"  {step.name:<9} {status:<4} {step.ms:8.1f} ms  {summary}\n")
        for key, value in step.details.items():
            if key not in IN_SUMMARY:  # the summary line shows them; JSON keeps them
                detail(key, value, indent)


def _context(cafile: str | None, insecure: bool, *, alpn: bool) -> ssl.SSLContext:
    # A fresh context with the library's policy (TLS >= 1.2, no CN fallback), so the probe
    # passes what a janusnet program passes and setting ALPN below does not touch the
    # shared default context.
    # (--cafile "" is no file: certifi's bundle, as before)
    context = _unverified_context() if insecure else create_ssl_context(cafile or None)
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    if alpn:
        context.set_alpn_protocols(["http/1.1"])
    return context


#: The exit status after Ctrl-C, as a shell reports a command killed by SIGINT.
EXIT_INTERRUPTED: Final = 130


def _cmd_probe(args: argparse.Namespace, out: TextIO) -> int:
    host, port = args.target
    steps: list[Step] = []
    interrupted = False
    choice: ProxyChoice | None = None
    shown: str | None = None
    try:  # Ctrl-C while the contexts load counts too: the report still comes out
        contexts: list[ssl.SSLContext] = []
        for option, cafile, insecure, alpn in (
            ("--cafile", args.cafile, args.insecure, True),
            ("--proxy-cafile", args.proxy_cafile, args.proxy_insecure, False),
        ):
            try:
                contexts.append(_context(cafile, insecure, alpn=alpn))
            except (OSError, ssl.SSLError) as exc:
                return _usage_error(args, out, f"cannot load {option} {cafile}: {exc}")
        context, proxy_context = contexts
        choice = choose_proxy(
            host, port, proxy=args.proxy, noproxy=args.noproxy, environ=os.environ
        )
        url = choice.url
        shown = parse_proxy_url(url).address if url else None
        run_interruptible(
            lambda: probe(
                host,
                port,
                proxy=url,
                context=context,
                timeout=args.timeout,
                proxy_context=proxy_context,
                into=steps,
            )
        )
    except UsageError as exc:
        where = f"{choice.source}: " if choice is not None and choice.source else ""
        return _usage_error(args, out, f"{where}{exc}")
    except KeyboardInterrupt:  # Ctrl-C: report the steps done so far, no traceback
        interrupted = True
    source = choice.source if choice is not None else None
    bypassed_by = choice.bypassed_by if choice is not None else None
    ok = bool(steps) and all(s.ok for s in steps) and not interrupted
    if args.json:
        report: dict[str, object] = {
            "target": show_address(host, port),
            "proxy": shown,
            "proxy_from": source,
            "proxy_bypassed_by": bypassed_by,
        }
        if interrupted:
            report["interrupted"] = True
        report.update(ok=ok, steps=[s.as_json() for s in steps])
        json.dump(report, out, indent=2, default=str)
        out.write("\n")
    else:
        if shown:
            via = f" via proxy {shown}"
            if source != "--proxy":
                via += f" (from {source})"
        elif bypassed_by == "--proxy":
            via = f' direct (--proxy "" given; proxy from {source} not used)'
        elif bypassed_by:
            via = f" direct ({bypassed_by} matches; proxy from {source} not used)"
        else:
            via = ""
        out.write(f"janusnet probe {show_address(host, port)}{via}\n")
        _print_steps(steps, out)
        failed = next((s for s in steps if not s.ok), None)
        if interrupted:
            out.write("result: INTERRUPTED (Ctrl-C) after the steps above\n")
        else:
            out.write(
                "result: ok\n"
                if ok
                else f"result: FAILED at step {failed.name if failed else '?'}\n"
            )
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if ok else 1


def _usage_error(args: argparse.Namespace, out: TextIO, message: str) -> int:
    """Say what was wrong with the arguments (as JSON with ``--json``); exit status 2."""
    if args.json:
        report = {"ok": False, "error": "UsageError", "message": message}
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(f"janusnet probe: {message}\n")
    return 2


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.backend == "trio":
        import importlib.util

        if importlib.util.find_spec("trio") is None:
            out.write("janusnet demo --backend trio needs trio: pip install trio\n")
            return 2
    return run_demo(out, backend=args.backend)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the ``janusnet`` command line.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
        out: where to print (default ``sys.stdout``).

    Returns:
        The exit status: 0 success, 1 a step failed, 2 bad usage, 130 interrupted
        (Ctrl-C). Run as the program (``argv`` None), an interrupted run ends by SIGINT
        itself once it has printed what it has, as Python does, so that a shell loop of
        ``janusnet`` commands stops too (the shell reports 130).
    """
    if out is None:
        # Started with stdout closed (``janusnet probe ... >&-``): run, print nowhere.
        out = sys.stdout if sys.stdout is not None else io.StringIO()
    try:
        status = _run(argv, out)
        out.flush()  # here, not at interpreter exit, so a closed pipe is caught below
    except KeyboardInterrupt:  # Ctrl-C (the demo; the probe reports its steps itself)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write("janusnet: interrupted\n")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``janusnet demo | head``): stop quietly, as cat does, and
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        if out is sys.stdout:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF):
            raise
        # The output cannot be written (``> /dev/full``): say so once, without a traceback.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write(f"janusnet: cannot write the output: {exc.strerror}\n")
        return 1
    if status == EXIT_INTERRUPTED and argv is None:
        _end_by_sigint()
    return status


def _end_by_sigint() -> None:
    """End this process by SIGINT: a shell sees a command Ctrl-C killed and stops the
    loop or script it runs (returning 130 would say the command handled the signal)."""
    import signal

    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
        sys.stderr.flush()
    if os.name == "posix":  # on Windows os.kill() would end it with status 2 (usage)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)


class _ProbeParser(argparse.ArgumentParser):
    """The command line's parsers: for ``janusnet probe`` with ``--json`` among the
    arguments (``json_out`` set), a usage error is also printed as JSON on ``out``
    (argparse's own message still goes to stderr), as the usage errors found after
    parsing are."""

    json_out: TextIO | None = None
    #: The userinfo of every argument with an ``@`` (see :func:`_argv_userinfo`).
    userinfo: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it refused: a proxy URL with its password, given to an
        # option that does not exist (curl's -x, say) or as a stray argument. What the
        # arguments hold is cut out as given (a password may hold ' / or a space, which
        # no pattern can tell from the text around it), then any userinfo left.
        for userinfo in self.userinfo:
            message = message.replace(userinfo + "@", "***@")
        message = _USERINFO.sub("***@", message)
        if self.json_out is not None:
            report = {"ok": False, "error": "UsageError", "message": message}
            json.dump(report, self.json_out, indent=2)
            self.json_out.write("\n")
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


#: Userinfo in text argparse quotes: ``user:password@`` after ``//`` or at the start of
#: a word (``alice:pw@proxy:3128``).
_USERINFO: Final = re.compile(r"(?:(?<=//)|(?<![^\s'\"=,(\[]))[^\s'\"/@]*@")


def _argv_userinfo(raw: Sequence[str]) -> tuple[str, ...]:
    """What comes before the last ``@`` of each argument that has one, after its
    ``scheme://`` (or an option's ``=``), longest first: the ``user:password`` of a proxy
    URL, however it is spelled."""
    found = set()
    for arg in raw:
        at = arg.rfind("@")
        if at <= 0:
            continue
        head = arg[:at]
        if "//" in head:
            start = head.index("//") + 2
        elif head.startswith("-") and "=" in head:
            start = head.index("=") + 1
        else:
            start = 0
        if head[start:]:
            found.add(head[start:])
    return tuple(sorted(found, key=len, reverse=True))


def _wants_json(raw: Sequence[str]) -> bool:
    """``probe`` with ``--json``, or an abbreviation argparse takes for it (``--js``)."""
    return raw[:1] == ["probe"] and any(
        arg.startswith("--j") and "--json".startswith(arg) for arg in raw[1:]
    )


def _run(argv: Sequence[str] | None, out: TextIO) -> int:
    """:func:`main` once ``out`` is known."""
    raw = list(sys.argv[1:] if argv is None else argv)
    json_out = out if _wants_json(raw) else None
    parser = _ProbeParser(
        prog="janusnet",
        description="Reach TLS servers through HTTP proxies, step by step.",
        epilog=(
            "exit status: 0 ok, 1 a probe step (or the demo) failed, 2 usage error, "
            "130 interrupted"
        ),
    )
    parser.json_out = json_out  # (its errors: an argument no command knows)
    parser.userinfo = _argv_userinfo(raw)
    parser.add_argument("--version", action="version", version=f"janusnet {__version__}")
    # metavar: the usage line and the "required" error both name the commands.
    commands = parser.add_subparsers(
        dest="command",
        metavar=f"{{{','.join(COMMANDS)}}}",
        required=True,
        parser_class=_ProbeParser,
    )

    p = commands.add_parser(
        "probe",
        help="show each step of reaching HOST:PORT over TLS",
        description="Show each step of reaching HOST:PORT over TLS (through a proxy),\n"
        "or the step that failed and why.",
        epilog=PROBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if isinstance(p, _ProbeParser):
        p.json_out = json_out
        p.userinfo = parser.userinfo
    p.add_argument(
        "target",
        type=_target,
        metavar="HOST:PORT",
        help="the TLS server: a name or IP address and a port, e.g. example.com:443; "
        "IPv6 in brackets: [::1]:443",
    )
    p.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP(S) proxy URL, e.g. http://user:pass@proxy:3128 (no scheme: http://; "
        'https:// for TLS to the proxy). Default: https_proxy etc.; "" for none',
    )
    p.add_argument(
        "--noproxy",
        metavar="LIST",
        help="hosts to reach directly, comma-separated ('*' for all); replaces no_proxy/NO_PROXY",
    )
    p.add_argument(
        "--cafile", metavar="FILE", help="trust this CA bundle for the server instead of certifi's"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (the proxy's still is: see --proxy-insecure)",
    )
    p.add_argument(
        "--proxy-cafile",
        metavar="FILE",
        help="trust this CA bundle for an https:// proxy instead of certifi's "
        "(curl's --proxy-cacert)",
    )
    p.add_argument(
        "--proxy-insecure",
        action="store_true",
        help="do not verify an https:// proxy's certificate",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=15.0,
        metavar="SECONDS",
        help="deadline over all the steps (15)",
    )
    p.add_argument("--json", action="store_true", help="print the steps as JSON")

    d = commands.add_parser(
        "demo",
        help="run the Janus $Sock_SSL_On flow step by step against local servers (offline)",
        description="Start a CONNECT proxy and a TLS origin on loopback (janusnet.testing) "
        "and run the Janus $Sock_SSL_On flow against them, printing every step: connect to "
        "the proxy, send CONNECT by hand, parse the status line and headers with "
        "recv_parsed(), ssl_on(), then GET over TLS. Offline; needs the testing extra: "
        "pip install 'janusnet[testing]'. ProxyTunnel(...).open_tls() does the same in one "
        "call.",
    )
    d.add_argument(
        "--backend",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop the client runs on (default: asyncio; trio needs trio installed)",
    )
    if isinstance(d, _ProbeParser):
        d.userinfo = parser.userinfo

    args = parser.parse_args(argv)
    if args.command == "probe":
        return _cmd_probe(args, out)
    return _cmd_demo(args, out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

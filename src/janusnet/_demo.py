"""``janusnet demo``: the ``$Sock_SSL_On`` seed flow, step by step, against local servers.

The embedded CONNECT proxy and TLS origin (:mod:`janusnet.testing`) run on loopback in a
background thread; the client below is written the way the Janus seed page writes it:
connect to the proxy on a port that allows TLS later, set the line end and the parse
tokens, send ``CONNECT``, parse the status line, read headers up to the empty line,
``ssl_on()``, send a ``GET`` and print the reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TextIO, TypeVar

import anyio

from ._exceptions import JanusnetError
from ._ports import ClientPort, TLSMode
from ._socket import Socket
from ._tls import CertInfo

__all__ = ["run_demo", "run_interruptible"]

_T = TypeVar("_T")


def run_interruptible(
    func: Callable[..., Awaitable[_T]], *args: object, backend: str = "asyncio"
) -> _T:
    """``anyio.run``, where Ctrl-C is a ``KeyboardInterrupt`` on every Python version.

    On Python 3.10 the asyncio runner anyio backports cannot tell a Ctrl-C from any
    other cancellation (tasks have no ``uncancel()``), so the main task's
    ``CancelledError`` comes out instead. Nothing else cancels the main task of a
    command-line run, so here that error means Ctrl-C.

    Raises:
        KeyboardInterrupt: Ctrl-C.
    """
    try:
        return anyio.run(func, *args, backend=backend)
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


#: Short names for certificate name fields, as ``openssl x509 -subject`` writes them.
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "countryName": "C",
}
_TOKEN_NAMES = {b"\r\n": "CRLF", b"\n": "LF", b"\r": "CR"}


def _name(fields: dict[str, str]) -> str:
    return ", ".join(f"{_SHORT.get(k, k)}={v}" for k, v in fields.items()) or "(empty)"


def _certificate_lines(cert: CertInfo | None) -> list[str]:
    """The leaf's subject (CN and subjectAltNames) and its issuer."""
    if cert is None:
        return ["   certificate: not verified, so not shown"]
    common_name = cert.subject.get("commonName")
    subject = f"subject CN={common_name}" if common_name else "no CN in the subject"
    names = ", ".join(f"{kind}:{value}" for kind, value in cert.subject_alt_names) or "none"
    return [
        f"   certificate: {subject}; subjectAltName: {names}",
        f"   issued by: {_name(cert.issuer)}",
    ]


async def _seed_flow(
    proxy_host: str, proxy_port: int, origin_port: int, port: ClientPort, say: TextIO
) -> None:
    def step(text: str) -> None:
        say.write(f"{text}\n")
        say.flush()

    step(
        f"1. connect to the proxy {proxy_host}:{proxy_port} with the client port definition "
        f"{port.name!r} (a janusnet.ClientPort; TLS {port.tls.name}: plain now, ssl_on() "
        "allowed later)"
    )
    sock = await Socket.connect(proxy_host, proxy_port, client_port=port)
    async with sock:
        sock.line_end = b"\r\n"
        sock.parse_tokens = "0D0A"
        step(
            '2. set LINEND 0D0A (sock.line_end = b"\\r\\n": what send_line() appends) and '
            'PRSTOK 0D0A (sock.parse_tokens = "0D0A": where recv_parsed() splits)'
        )
        target = f"localhost:{origin_port}"
        await sock.send("CONNECT ")
        await sock.send(target)
        await sock.send_line(" HTTP/1.0")
        await sock.send_line()
        step(f"3. sent: CONNECT {target} HTTP/1.0 + empty line")
        status = await sock.recv_parsed()
        words = status.data.split()
        token = _TOKEN_NAMES.get(status.token or b"", (status.token or b"").hex().upper())
        step(
            f"4. status line: {status.data.decode('latin-1')!r} "
            f"(ended by parse token #{status.index}, {token or 'none: limit or EOF'})"
        )
        if len(words) < 2 or words[1] != b"200":
            raise SystemExit(f"   the proxy refused the tunnel: {status.data!r}")
        while True:
            header = await sock.recv_parsed()
            if not header.data:
                break
            step(f"   header: {header.data.decode('latin-1')}")
        step("5. read headers up to the empty line")
        await sock.ssl_on(server_hostname="localhost")
        tls = sock.tls
        assert tls is not None
        verified = "verified" if tls.peer_certificate else "NOT verified"
        step(
            f"6. ssl_on(): {tls.version}, {tls.cipher}; certificate {verified} for "
            f"{tls.server_hostname}"
        )
        for text in _certificate_lines(tls.peer_certificate):
            step(text)
        await sock.send_line("GET /demo HTTP/1.1")
        await sock.send_line("Host: localhost")
        await sock.send_line("Connection: close")
        await sock.send_line()
        step("7. sent: GET /demo HTTP/1.1 over TLS")
        step("8. reply:")
        while True:
            line = await sock.recv_parsed()
            if line.index == 0 and not line.data:
                break
            step(f"   | {line.data.decode('utf-8', 'replace')}")


def run_demo(out: TextIO, *, backend: str = "asyncio") -> int:
    """Start the embedded proxy and origin, run the seed flow, print every step.

    Args:
        out: where to print.
        backend: ``"asyncio"`` or ``"trio"``.

    Returns:
        0 on success, 1 when a step failed, 2 when the testing extra is missing.
    """
    try:
        import trustme  # noqa: F401 - the embedded origin's certificates need it
    except ImportError:
        out.write("janusnet demo needs the testing extra: pip install 'janusnet[testing]'\n")
        return 2
    from .testing import ConnectProxy, TLSOrigin

    out.write(
        "janusnet demo: CONNECT through a local proxy, then ssl_on() to a local TLS origin\n"
    )
    # dual_stack: the proxy connects to "localhost", which may be ::1 only on some hosts.
    with TLSOrigin(dual_stack=True) as origin, ConnectProxy() as proxy:
        port = ClientPort("DEMO", tls=TLSMode.OPTIONAL, ssl_context=origin.client_context())
        out.write(
            f"   origin: https://localhost:{origin.port}  proxy: {proxy.url}  backend: {backend}\n"
        )
        try:
            run_interruptible(
                _seed_flow, proxy.host, proxy.port, origin.port, port, out, backend=backend
            )
        except JanusnetError as exc:
            out.write(f"FAILED: {type(exc).__name__}: {exc}\n")
            return 1
    out.write(
        "done: tunnel opened, upgraded in place with ssl_on(), reply read over TLS\n"
        "This is the Janus flow written out with janusnet.Socket; "
        "ProxyTunnel(proxy_url).open_tls(host, port) does steps 1-6 in one call.\n"
    )
    return 0

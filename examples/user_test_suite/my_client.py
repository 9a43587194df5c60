"""A user's module: fetch an ``https://`` URL through an HTTP proxy with janusnet.

This is the code under test in ``test_my_client.py``; nothing in it knows about tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import janusnet


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def fetch(
    url: str,
    *,
    proxy: str,
    client_port: janusnet.ClientPort | None = None,
    timeout: float = 30.0,
) -> Response:
    """GET ``url`` (``https://host[:port]/path``) through the HTTP proxy ``proxy``.

    Raises:
        janusnet.ProxyRefusedError: the proxy said no (``ProxyAuthenticationRequired`` for 407).
        janusnet.ProxyProtocolError: the proxy's answer made no sense.
        janusnet.SSLOnError: TLS to the server failed, or the proxy slipped bytes in first.
        TimeoutError: the tunnel took longer than ``timeout``.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"expected an https:// URL, got {url!r}")
    host, port = parts.hostname, parts.port or 443
    tunnel = janusnet.ProxyTunnel(proxy, client_port=client_port, timeout=timeout)
    async with await tunnel.open(host, port) as sock:
        await sock.ssl_on()
        await sock.send(
            f"GET {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n"
        )
        status_line = await sock.recv_parsed()
        headers: dict[str, str] = {}
        while (line := await sock.recv_parsed()).data:
            name, _, value = line.data.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        while chunk := await sock.recv():
            body += chunk
    return Response(int(status_line.data.split()[1]), headers, body)

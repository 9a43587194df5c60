"""Contexts users bring: truststore's OS trust store (its verification runs inside the
handshake janusnet drives over memory BIOs), and ``SSLKEYLOGFILE`` (the default context
honours it, as curl, httpx and Python's own do; janusnet's TLS writes the keys)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import truststore

import janusnet
from janusnet import HandshakeError, ProxyTunnel
from janusnet.testing import ConnectProxy, TLSOrigin

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


async def test_truststore_context_verifies(anyio_backend: str, origin: TLSOrigin) -> None:
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    origin.ca.configure_trust(context)  # on Linux truststore verifies with OpenSSL
    port = janusnet.ClientPort("TRUSTSTORE", ssl_context=context)
    with ConnectProxy() as proxy:
        tunnel = ProxyTunnel(proxy.url, client_port=port)
        async with await tunnel.open_tls("localhost", origin.port) as sock:
            assert sock.tls is not None and sock.tls.server_hostname == "localhost"
            await sock.send(b"GET /ts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"


async def test_truststore_context_refuses_an_unknown_ca(
    anyio_backend: str, origin: TLSOrigin
) -> None:
    port = janusnet.ClientPort(
        "TRUSTSTORE", ssl_context=truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    sock = await janusnet.Socket.connect("localhost", origin.port, client_port=port)
    with pytest.raises(HandshakeError, match="CERTIFICATE_VERIFY_FAILED") as info:
        await sock.ssl_on()
    assert info.value.code == -111
    assert sock.closed


def test_sslkeylogfile_is_honoured(tmp_path: Path, origin: TLSOrigin) -> None:
    """In a process of its own: the default context is built once per process."""
    keylog = tmp_path / "keys.log"
    ca = tmp_path / "ca.pem"
    origin.ca.cert_pem.write_to_path(str(ca))
    code = f"""
        import ssl, anyio, janusnet
        assert janusnet.default_ssl_context().keylog_filename == {str(keylog)!r}
        async def main():
            context = ssl.create_default_context(cafile={str(ca)!r})
            port = janusnet.ClientPort("KEYLOG", ssl_context=context)
            sock = await janusnet.Socket.connect("localhost", {origin.port}, client_port=port)
            async with sock:
                await sock.ssl_on()
        anyio.run(main)
    """
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        env={**os.environ, "SSLKEYLOGFILE": str(keylog)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines), lines

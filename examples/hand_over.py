"""A tunnel handed to another library with ``Socket.detach()``.

janusnet does the ``CONNECT`` exchange (typed errors, the proxy's reply, Basic, Digest or a
``ProxyAuth`` flow, one deadline); ``detach()`` then gives the plain tunnel away as a
standard ``socket.socket``, for any library that takes a connected socket: asyncio's
``open_connection(sock=...)`` here, or websockets' and asyncssh's ``connect(sock=...)``,
``trio.SocketStream``, ``SSLContext.wrap_socket``. That library then does its own TLS.
curl's ``CURLOPT_CONNECT_ONLY`` with ``CURLINFO_ACTIVESOCKET`` is the same idea.

Offline against the embedded proxy and TLS origin: ``python examples/hand_over.py``.
"""

from __future__ import annotations

import asyncio
import ssl

import janusnet
from janusnet.testing import ConnectProxy, TLSOrigin


async def fetch(proxy_url: str, origin_port: int, context: ssl.SSLContext) -> None:
    tunnel = janusnet.ProxyTunnel(proxy_url, timeout=10)
    # `async with` closes the Socket if detach() refuses (bytes it had read, -112).
    async with await tunnel.open("localhost", origin_port) as sock:  # CONNECT, 2xx checked
        reply = sock.proxy_reply
        assert reply is not None
        print(f"proxy     HTTP/{reply.http_version} {reply.status} {reply.reason}")
        raw = sock.detach()  # the Socket is closed now; `raw` is ours to close
    print(f"detached  {raw.getpeername()} (the proxy), blocking={raw.getblocking()}")

    reader, writer = await asyncio.open_connection(
        sock=raw, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(b"GET /handed-over HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status = await reader.readline()
        print(f"asyncio   {status.decode().strip()} (TLS by asyncio, through the tunnel)")
        body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
        print(f"asyncio   body {body.decode().strip()!r}")
    finally:
        writer.close()
        await writer.wait_closed()


def main() -> None:
    with TLSOrigin(dual_stack=True) as origin, ConnectProxy() as proxy:
        asyncio.run(fetch(proxy.url, origin.port, origin.client_context()))


if __name__ == "__main__":
    main()

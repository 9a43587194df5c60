"""An HTTPS request through an HTTP proxy with ``ProxyTunnel`` and ``ssl_on()``.

``ProxyTunnel.open()`` does the ``CONNECT`` exchange (HTTP/1.1, ``Host`` header, optional
``Proxy-Authorization``, one deadline, a cap on the reply head) and hands back a plain socket
inside the tunnel, with the proxy's answer in ``sock.proxy_reply``. ``ssl_on()`` then upgrades
that socket in place, verifying the certificate for the tunnel's target host.

Offline against the embedded proxy (with Basic auth) and TLS origin:
``python examples/tunnel_request.py``.
"""

from __future__ import annotations

import anyio

import janusnet
from janusnet.testing import ConnectProxy, TLSOrigin


async def fetch(proxy_url: str, origin_port: int, port: janusnet.ClientPort) -> None:
    tunnel = janusnet.ProxyTunnel(
        proxy_url, client_port=port, headers={"User-Agent": "janusnet-example"}, timeout=10
    )
    print(f"tunnel    {tunnel!r}")  # the password never shows
    async with await tunnel.open("localhost", origin_port) as sock:
        reply = sock.proxy_reply
        assert reply is not None
        print(f"proxy     HTTP/{reply.http_version} {reply.status} {reply.reason}")
        for name, value in reply.headers:
            print(f"proxy     {name}: {value}")
        print(f"proxy     {len(reply.headers)} header(s)")

        await sock.ssl_on()  # server_hostname defaults to the target: "localhost"
        tls = sock.tls
        assert tls is not None and tls.peer_certificate is not None
        cert = tls.peer_certificate
        print(f"tls       {tls.version} {tls.cipher}, verified for {tls.server_hostname}")
        print(f"tls       issuer {cert.issuer.get('organizationName')}, expires {cert.not_after}")
        print(f"tls       names {', '.join(value for _, value in cert.subject_alt_names)}")

        await sock.send("GET /tunnel HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status = await sock.recv_parsed()
        print(f"origin    {status.data.decode()}")
        while (await sock.recv_parsed()).data:  # skip the response headers
            pass
        body = b""
        while chunk := await sock.recv():  # Connection: close, so read to the end
            body += chunk
        print(f"origin    body {body.decode().strip()!r}")


def main() -> None:
    user, password = "alice", "s3:cr3t@x"  # a ':' and an '@': percent-encoded in the URL
    with TLSOrigin(dual_stack=True) as origin, ConnectProxy(auth=(user, password)) as proxy:
        port = janusnet.ClientPort("TUNNEL", ssl_context=origin.client_context())
        anyio.run(fetch, proxy.url_with_auth(user, password), origin.port, port)
        record = proxy.log[0]
        print(f"proxy saw {record.request_line!r}, authorized={record.proxy_authorization}")


if __name__ == "__main__":
    main()

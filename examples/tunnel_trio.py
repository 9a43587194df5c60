"""The proxy tunnel of ``tunnel_request.py``, under trio.

janusnet is written on anyio, so the same code runs under asyncio and under trio: only the
runner changes. Here ``trio.run`` drives it, with a trio nursery fetching three paths through
three tunnels at once, and ``trio.fail_after`` bounding the whole thing.

Offline: ``python examples/tunnel_trio.py`` (needs ``trio`` installed).
"""

from __future__ import annotations

import trio

import janusnet
from janusnet.testing import ConnectProxy, TLSOrigin


async def fetch(tunnel: janusnet.ProxyTunnel, origin_port: int, path: str) -> None:
    async with await tunnel.open_tls("localhost", origin_port) as sock:  # CONNECT + ssl_on()
        await sock.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status = await sock.recv_parsed()
        while (await sock.recv_parsed()).data:  # headers, up to the empty line
            pass
        body = (await sock.recv_parsed()).data.decode().strip()  # the one-line body
        assert sock.tls is not None
        print(f"{path:8} {status.data.decode()} over {sock.tls.version}: {body!r}")


async def main_async(proxy_url: str, origin_port: int, port: janusnet.ClientPort) -> None:
    tunnel = janusnet.ProxyTunnel(proxy_url, client_port=port)
    print(f"running on trio {trio.__version__}")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for path in ("/one", "/two", "/three"):
                nursery.start_soon(fetch, tunnel, origin_port, path)


def main() -> None:
    with TLSOrigin(dual_stack=True) as origin, ConnectProxy() as proxy:
        port = janusnet.ClientPort("TRIO", ssl_context=origin.client_context())
        trio.run(main_async, proxy.url, origin.port, port)
        print(f"the proxy tunnelled {len(proxy.log)} CONNECT requests")


if __name__ == "__main__":
    main()

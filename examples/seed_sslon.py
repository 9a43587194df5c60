"""The ``$Sock_SSL_On`` seed example, ported line by line to janusnet.

The Janus Sockets page for ``$Sock_SSL_On`` shows how a User Language program reaches an
HTTPS server through an HTTP proxy: connect to the proxy *in plain text* on a client port
defined with ``SSL ... SSLOPT``, send ``CONNECT``, read the proxy's answer up to the empty
line, then turn TLS on over the same connection. Each janusnet line below carries, in a
comment, the SOUL statement it replaces (paraphrased from the Janus documentation).

Offline: the proxy and the HTTPS origin are the embedded test servers from
``janusnet.testing``, on loopback. Run it with ``python examples/seed_sslon.py``.
"""

from __future__ import annotations

import anyio

import janusnet
from janusnet.testing import ConnectProxy, TLSOrigin


async def seed(
    proxy_host: str, proxy_port: int, origin_port: int, port: janusnet.ClientPort
) -> None:
    # %s = $Sock_Conn('CLPROXY', %proxyHost, %proxyPort)   (no 'SSL' option: plain for now)
    sock = await janusnet.Socket.connect(proxy_host, proxy_port, client_port=port)
    async with sock:  # ... $Sock_Close(%s) at the end, whatever happens
        sock.line_end = b"\r\n"  # %rc = $Sock_Set(%s, 'LINEND', '0D0A')
        sock.parse_tokens = "0D0A"  # %rc = $Sock_Set(%s, 'PRSTOK', '0D0A')

        target = f"localhost:{origin_port}"
        await sock.send("CONNECT ")  # %rc = $Sock_Send(%s, 'CONNECT ')
        await sock.send(target)  # %rc = $Sock_Send(%s, %host With ':443')
        await sock.send_line(" HTTP/1.0")  # %rc = $Sock_SendLn(%s, ' HTTP/1.0')
        await sock.send_line()  # %rc = $Sock_SendLn(%s, '')
        print(f"sent      CONNECT {target} HTTP/1.0 + empty line")

        status = await sock.recv_parsed()  # %n = $Sock_RecvPrs(%s, %line, , %prsindx)
        print(f"status    {status.data.decode('latin-1')!r} (prsindx={status.index})")
        if status.data.split()[1:2] != [b"200"]:  # If $Word(%line, 2) Ne '200' Then
            raise SystemExit(f"proxy refused: {status.data!r}")  # Print %line; Stop

        while (header := await sock.recv_parsed()).data:  # Repeat: $Sock_RecvPrs(%s, %line)
            print(f"header    {header.data.decode('latin-1')}")  # ... Until $Len(%line) = 0
        print("headers   read up to the empty line")

        await sock.ssl_on(server_hostname="localhost")  # %rc = $Sock_SSL_On(%s)  (0 = OK)
        assert sock.tls is not None
        print(f"ssl_on    {sock.tls.version}, {sock.tls.cipher}")

        await sock.send_line("GET /seed HTTP/1.0")  # %rc = $Sock_SendLn(%s, 'GET / HTTP/1.0')
        await sock.send_line("Host: localhost")  # %rc = $Sock_SendLn(%s, 'Host: ' With %host)
        await sock.send_line()  # %rc = $Sock_SendLn(%s, '')

        while True:  # Repeat Forever
            line = await sock.recv_parsed()  # %n = $Sock_RecvPrs(%s, %line, , %prsindx)
            if line.index == 0 and not line.data:  # If %n = 0 Then Loop End  (FIN)
                break
            print(f"reply   | {line.data.decode().rstrip()}")  # Print %line


def main() -> None:
    with TLSOrigin(dual_stack=True) as origin, ConnectProxy() as proxy:
        # JANUS DEFINE CLPROXY * CLSOCK 5 REMOTE * * SSL 0 SSLOPT LINEND 0D0A: TLS optional,
        # plain at connect. The embedded origin's certificate comes from a throw-away CA, so
        # this port trusts that CA (a real program keeps the default: certifi's bundle).
        port = janusnet.ClientPort(
            "CLPROXY", tls=janusnet.TLSMode.OPTIONAL, ssl_context=origin.client_context()
        )
        print(f"proxy {proxy.url}, origin https://localhost:{origin.port}")
        anyio.run(seed, proxy.host, proxy.port, origin.port, port)
    print("done: CONNECT, headers, ssl_on() in place, GET over TLS")


if __name__ == "__main__":
    main()

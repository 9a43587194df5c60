"""A STARTTLS-style line protocol: talk in plain text, then ``ssl_on()`` the same socket.

No proxy here: the client connects straight to a server that greets in plain text, waits
for ``STARTTLS``, answers ``220 go ahead`` and then expects a TLS handshake on the same
connection (as SMTP, IMAP, FTP or LDAP do). After the upgrade the embedded server echoes
whatever it gets. ``send_line`` appends the port's line end; ``recv_parsed`` returns one line
(without its line end) per call.

``ssl_on()`` refuses to start while unread plaintext is buffered (``PendingDataError``,
-112): a server (or a man in the middle) must not be able to slip bytes in before TLS that
the program would later take for encrypted data (CVE-2011-0411).

Offline: ``python examples/starttls_line_protocol.py``.
"""

from __future__ import annotations

import anyio

import janusnet
from janusnet.testing import TLSOrigin


async def converse(host: str, server_port: int, port: janusnet.ClientPort) -> None:
    async with await janusnet.Socket.connect(host, server_port, client_port=port) as sock:
        greeting = await sock.recv_parsed()
        print(f"S: {greeting.data.decode()}")

        await sock.send_line("STARTTLS")
        print("C: STARTTLS")
        answer = await sock.recv_parsed()
        print(f"S: {answer.data.decode()}")
        if not answer.data.startswith(b"220"):
            raise SystemExit("the server would not start TLS")

        await sock.ssl_on(server_hostname="localhost")
        assert sock.tls is not None
        print(f"-- ssl_on(): {sock.tls.version}, certificate verified for localhost")

        for text in ("HELLO over TLS", "PING"):
            await sock.send_line(text)
            print(f"C: {text}")
            echoed = await sock.recv_parsed()
            print(f"S: {echoed.data.decode()}  (echoed)")


async def injected(host: str, server_port: int, port: janusnet.ClientPort) -> None:
    async with await janusnet.Socket.connect(host, server_port, client_port=port) as sock:
        await sock.recv_parsed()  # 220 ready
        await sock.send_line("STARTTLS")
        await sock.recv_parsed()  # 220 go ahead ... and the injected line behind it
        await anyio.sleep(0.1)  # let the injected bytes arrive, as an attacker would ensure
        try:
            await sock.ssl_on(server_hostname="localhost")
        except janusnet.PendingDataError as exc:
            print(f"-- ssl_on() refused: {exc.code.name} ({int(exc.code)}), {exc.pending} bytes")
            print(f"   the plaintext that came first: {await sock.recv()!r}")
        else:
            raise SystemExit("ssl_on() should have refused the injected bytes")


def main() -> None:
    with TLSOrigin(mode="starttls") as server:
        port = janusnet.ClientPort("STARTTLS", ssl_context=server.client_context())
        anyio.run(converse, server.host, server.port, port)
        print()
        print("the same server, now injecting a line right after '220 go ahead':")
        server.inject = b"250 injected before TLS\r\n"
        anyio.run(injected, server.host, server.port, port)


if __name__ == "__main__":
    main()

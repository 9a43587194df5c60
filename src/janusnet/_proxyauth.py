"""``ProxyAuth``: proxy authentication schemes janusnet does not build in.

Basic and Digest are answered by ``ProxyTunnel`` itself (``_auth``). Anything else --
NTLM and Negotiate (Kerberos/SPNEGO) through a library such as ``pyspnego``, a bearer
token, a site's own scheme -- is a *flow*: a generator that yields the
``Proxy-Authorization`` value of each ``CONNECT`` and receives each 407 in between, the
way ``httpx.Auth.auth_flow`` does for requests. ``ProxyTunnel`` drives it, keeps the
connection between rounds when the proxy allows (NTLM needs that), withholds every value
it yielded from messages and logs, and bounds the rounds.

Sans-IO: no anyio here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Generator
from typing import Final

from ._connect import ProxyReply
from ._exceptions import UsageError

__all__ = ["MAX_AUTH_ROUNDS", "ProxyAuth", "check_authorization"]

#: Answers a flow may give after the first request: NTLM needs two requests, Negotiate
#: one or two. More means a flow and a proxy talking past each other.
MAX_AUTH_ROUNDS: Final = 8

# A header value as a credential is: visible ASCII and spaces, not starting or ending
# with a space (RFC 9110 §5.5). Credentials are base64 or quoted params, never more.
_VALUE_RE: Final = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def check_authorization(value: object, flow: ProxyAuth) -> bytes | None:
    """A value a flow yielded, as header bytes (``None``: no header).

    Raises:
        UsageError: not a ``str`` or ``None``, or not a valid header value (the message
            never shows it: it is a credential).
    """
    name = type(flow).__name__
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(
            f"proxy auth flow {name} yielded {type(value).__name__}; it must yield the "
            "Proxy-Authorization value as str, or None for no header"
        )
    if _VALUE_RE.fullmatch(value) is None:
        raise UsageError(
            f"proxy auth flow {name} yielded a Proxy-Authorization value ({len(value)} "
            "characters) that is not a header value: empty, a control character, a "
            "character outside ASCII, or a space at either end (the value is not shown)"
        )
    return value.encode("ascii")


class ProxyAuth:
    """A proxy authentication scheme janusnet does not answer itself.

    Pass an instance as ``ProxyTunnel(auth=...)``. Override :meth:`auth_flow` (or
    :meth:`async_auth_flow`, to await inside the flow), a generator that
    ``ProxyTunnel`` runs once per ``open()``:

    * its first ``yield`` gives the ``Proxy-Authorization`` value of the first
      ``CONNECT`` (``None``: send none and wait for the proxy's challenge);
    * each 407 reply (a :class:`ProxyReply`, with the ``Proxy-Authenticate``
      challenges in ``reply.get_all("proxy-authenticate")``) is sent into the generator,
      which yields the value for the next ``CONNECT``, or returns (or yields ``None``)
      to give up: the 407 then raises :class:`ProxyAuthenticationRequired`;
    * on any other reply the generator is closed.

    The next ``CONNECT`` goes on the connection that carried the 407 when the proxy
    keeps it open (its body is drained first), as connection-bound schemes such as NTLM
    need; when the proxy closed it, on a new connection. At most 8 answers follow the
    first request. The values a flow yields are credentials: janusnet never shows them
    in a ``repr``, an exception or a log record, and does not keep them for a later
    ``open()``, which runs the flow afresh. A value that is not a ``str`` (or ``None``),
    or holds a control or non-ASCII character, raises ``UsageError`` before it is sent;
    an exception the flow raises propagates from ``open()``, with the socket closed.

    Example, NTLM or Negotiate with pyspnego (https://pypi.org/project/pyspnego/)::

        class SpnegoProxyAuth(janusnet.ProxyAuth):
            def __init__(self, user, password, protocol="ntlm"):
                self.user, self.password, self.protocol = user, password, protocol

            def auth_flow(self, *, proxy_host, target):
                client = spnego.client(self.user, self.password, hostname=proxy_host,
                                       service="HTTP", protocol=self.protocol)
                scheme = "NTLM" if self.protocol == "ntlm" else "Negotiate"
                token = client.step()
                while token:
                    reply = yield f"{scheme} {base64.b64encode(token).decode()}"
                    offered = [c for c in reply.get_all("proxy-authenticate")
                               if c.lower().startswith(scheme.lower() + " ")]
                    if not offered or client.complete:
                        return  # rejected: ProxyAuthenticationRequired
                    token = client.step(base64.b64decode(offered[0].split()[1]))
    """

    def auth_flow(
        self, *, proxy_host: str, target: str
    ) -> Generator[str | None, ProxyReply, None]:
        """Yield each ``CONNECT``'s ``Proxy-Authorization`` value; receive each 407.

        Args:
            proxy_host: the proxy's host name or IP address (no brackets, no port), as
                a Kerberos service name (``HTTP@proxy_host``) wants it.
            target: the ``CONNECT`` target, ``host:port`` (IPv6 in brackets).

        Yields:
            The header value (``"NTLM TlRMTVNT..."``), or ``None`` for no header.

        Raises:
            NotImplementedError: a subclass must override this or
                :meth:`async_auth_flow`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override auth_flow() or async_auth_flow()"
        )
        yield None  # pragma: no cover - makes this a generator

    async def async_auth_flow(
        self, *, proxy_host: str, target: str
    ) -> AsyncGenerator[str | None, ProxyReply]:
        """:meth:`auth_flow` as an async generator; override it to await inside the flow
        (a Kerberos library that blocks can run in ``anyio.to_thread.run_sync``).

        Args:
            proxy_host: as for :meth:`auth_flow`.
            target: as for :meth:`auth_flow`.

        Yields:
            As :meth:`auth_flow`.

        Raises:
            NotImplementedError: neither method is overridden.
        """
        flow = self.auth_flow(proxy_host=proxy_host, target=target)
        try:
            value = next(flow)
            while True:
                reply = yield value
                value = flow.send(reply)
        except StopIteration:
            return
        finally:
            flow.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # a subclass's fields may hold secrets

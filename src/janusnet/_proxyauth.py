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

import inspect
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
      challenges in ``reply.get_all("proxy-authenticate")``, exactly as the proxy sent
      it) is sent into the generator, which yields the value for the next ``CONNECT``,
      or returns (or yields ``None``) to give up: the 407 then raises
      :class:`ProxyAuthenticationRequired`;
    * on any other reply the generator is closed, before ``open()`` returns.

    The next ``CONNECT`` goes on the connection that carried the 407 when the proxy
    keeps it open and its body drains (at most 64 KiB within 1 s), as connection-bound
    schemes such as NTLM need; otherwise on a new connection, where such a scheme
    fails (the error then says so). When a kept connection turns out closed before the
    answer's reply (a keep-alive connection gone stale), the flow starts again from its
    first value on a new connection, once. At most 8 answers follow the first request.

    The values a flow yields are credentials: janusnet never shows them (as sent,
    escaped or percent-encoded) in a ``repr``, an exception or a log record, and does
    not keep them for a later ``open()``, which runs the flow afresh. (A library the
    flow uses may log them itself: pyspnego does, at DEBUG.) A value that is not a
    ``str`` (or ``None``), or holds a control or non-ASCII character, raises
    ``UsageError`` before it is sent; an exception the flow raises propagates from
    ``open()``, with the socket closed. The flow runs in the event loop: a step that
    blocks (a Kerberos library asking the KDC) belongs in :meth:`async_auth_flow`, in
    ``anyio.to_thread.run_sync``.

    Example, NTLM with pyspnego (https://pypi.org/project/pyspnego/)::

        class NTLMProxyAuth(janusnet.ProxyAuth):
            def __init__(self, user: str, password: str) -> None:
                self.user, self.password = user, password

            def auth_flow(
                self, *, proxy_host: str, target: str
            ) -> Generator[str | None, janusnet.ProxyReply, None]:
                client = spnego.client(self.user, self.password, hostname=proxy_host,
                                       service="HTTP", protocol="ntlm")
                token = client.step()
                while token:
                    reply = yield "NTLM " + base64.b64encode(token).decode()
                    offered = [c for c in reply.get_all("proxy-authenticate")
                               if c.lower().startswith("ntlm ")]
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
            UsageError: ``auth_flow`` is not a generator function.
        """
        flow = self.auth_flow(proxy_host=proxy_host, target=target)
        made: object = flow  # (checked as the object it is, whatever it was declared)
        if not inspect.isgenerator(made):
            if inspect.iscoroutine(made):
                made.close()  # (no "never awaited" warning on top of the error)
            async_one = inspect.isasyncgen(made) or inspect.iscoroutine(made)
            raise UsageError(
                f"{type(self).__name__}.auth_flow must be a generator function (def with "
                f"yield); it returned {type(made).__name__}"
                + ("; an async flow overrides async_auth_flow instead" if async_one else "")
            )
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

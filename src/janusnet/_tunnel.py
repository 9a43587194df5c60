"""ProxyTunnel: the HTTP ``CONNECT`` exchange (``_connect``) driven over a ``Socket``.

Theory of operation
-------------------
``open(host, port)`` validates everything first (authority, headers, access rules), so a
bad target never costs a packet. Then, under one deadline (``timeout``) that a proxy
trickling one byte a second cannot extend:

1. TCP to the proxy (its own cap, ``connect_timeout``), plus TLS to the proxy for an
   ``https://`` proxy URL, with ``proxy_ssl_context`` — never the origin's context;
2. ``CONNECT host:port HTTP/1.1`` with ``Host``, ``Proxy-Authorization: Basic`` when
   credentials are known, and the extra headers;
3. the reply head is parsed by h11 (``ConnectReplyReader``) from the socket's own buffer,
   capped at ``max_head_bytes``;
4. a 407 carrying a Digest challenge is answered once, on the same connection when the
   proxy keeps it open (the 407 body drained within a cap), else on a new one; with a
   ``ProxyAuth`` flow (NTLM, Negotiate...) the flow answers each 407 the same way, for
   at most ``MAX_AUTH_ROUNDS`` rounds;
5. on a 2xx, every byte after the head is put back in the socket's buffer, so ``ssl_on()``
   refuses it (-112) instead of feeding it to TLS: the STARTTLS-injection defence.

Every failure closes the socket, cancellation included. Credentials live only in this
object's private attributes: never in a ``repr``, an exception or a log record.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
import logging
import os
import re
import ssl
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Final, NoReturn
from urllib.parse import quote, quote_plus

import anyio

from ._auth import (
    basic_proxy_authorization,
    choose_challenge,
    digest_proxy_authorization,
    parse_challenges,
)
from ._connect import (
    MAX_HEAD_BYTES,
    ConnectReplyReader,
    ProxyReply,
    build_connect_request,
    check_reply,
    format_authority,
    validate_extra_header,
)
from ._exceptions import (
    HandshakeError,
    JanusnetError,
    NotSSLPortError,
    PendingDataError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    SocketClosedError,
    SocketResetError,
    SSLOnOtherError,
    UsageError,
    check_ssl_context,
    check_timeout,
    printable,
    withhold,
    withhold_from_error,
)
from ._ports import ClientPort, TLSMode, _is_ip_literal
from ._proxyauth import MAX_AUTH_ROUNDS, ProxyAuth, check_authorization
from ._proxyenv import ProxyURL, parse_proxy_url, proxy_from_env
from ._socket import (
    RECEIVE_SIZE,
    Socket,
    _cause_of,
    _client_port,
    _is_broken_pipe,
    _is_peer_reset,
)
from ._tls import default_context_for
from ._transport import FdStream, allowed_addresses, open_hop, tcp_options

__all__ = ["ProxyTunnel"]

logger = logging.getLogger("janusnet")

#: Default TCP connect cap to the proxy: a proxy that takes longer to accept is down.
DEFAULT_PROXY_CONNECT_TIMEOUT: Final = 10.0
#: Default deadline over connect + CONNECT exchange (+ the handshake in ``open_tls``).
DEFAULT_TUNNEL_TIMEOUT: Final = 30.0
#: How long a 407's body may take to arrive before the answer goes on a new connection.
DRAIN_TIMEOUT: Final = 1.0
#: CONNECT requests kept serialised per tunnel object: far more targets than a program
#: talks to at once, small enough (~100 bytes each) never to matter for memory.
REQUEST_CACHE_SIZE: Final = 256


#: How many of the schemes a 407 offers its error names.
_SHOWN_SCHEMES: Final = 5
#: Shorter forms are not looked for on their own: a 5-letter password would be "found"
#: in every other reason phrase, and where the cuts fell would spell it out. A proxy
#: cannot send back what it never saw, and what it sees is the Basic header value.
_MIN_FORM: Final = 8
_HEX_ESCAPE: Final = re.compile(r"%[0-9A-F]{2}")
#: A Digest answer's ``response`` hash (32 or 64 hex digits, MD5 or SHA-256).
_DIGEST_RESPONSE: Final = re.compile(r"\bresponse=\"?([0-9A-Fa-f]{16,})")
#: Headers given in ``headers=`` whose values are credentials, withheld as ours are.
_CREDENTIAL_HEADERS: Final = frozenset({"proxy-authorization", "authorization"})


def _secret_forms(user: str, password: str) -> tuple[str, ...]:
    """The forms in which a proxy could send the credentials back, longest first: the
    Basic header value (``Basic <token>``), ``user:password`` (decoded), and the token
    (also unpadded and URL-safe) and the password (as text and percent-encoded) when
    long enough to be told from chance."""
    pair = f"{user}:{password}"
    token = base64.b64encode(pair.encode("utf-8", "replace")).decode("ascii")
    # ... also without its "=" padding, and in the URL-safe alphabet, as a proxy's
    # logging or a JSON error body may re-encode it.
    unpadded = token.rstrip("=")
    urlsafe = unpadded.replace("+", "-").replace("/", "_")
    forms = {token, unpadded, urlsafe, password, *_percent_forms(password), *_percent_forms(token)}
    kept = {form for form in forms if len(form) >= _MIN_FORM} | {f"Basic {token}"}
    if password and len(pair) >= _MIN_FORM:
        # A proxy that decodes the Basic header and quotes it back, as it is or in a URL.
        kept.update({pair, *_percent_forms(pair)})
    return _as_received(kept)


def _basic_pair(value: str) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic ``Proxy-Authorization`` value, or None."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _percent_forms(text: str) -> set[str]:
    """``text`` percent-encoded the ways a proxy may quote it back in a URL or header:
    every reserved character encoded, or ``/`` left as it is (``quote``'s default), or
    the form encoding (space as ``+``); each with upper- and lower-case hex digits."""
    encoded = {quote(text, safe=""), quote(text), quote_plus(text)}
    lower = {_HEX_ESCAPE.sub(lambda m: m.group().lower(), form) for form in encoded}
    return (encoded | lower) - {text}


def _as_received(forms: Iterable[str]) -> tuple[str, ...]:
    """``forms`` and their spellings in text a proxy sent back, longest first.

    A reply is decoded as latin-1 (UTF-8 "ö" reads "Ã¶"), and h11 quotes a malformed
    line as a bytes literal (\\xc3\\xb6, \\\\, and \\' when the literal is in single quotes;
    ``repr(b'"' + raw)`` forces that spelling). In a quoted string (a challenge's realm)
    ``"`` and ``\\`` are escaped with ``\\``; a header value loses the spaces at its ends.
    """
    kept = set(forms)
    for form in list(kept):
        raw = form.encode("utf-8", "replace")
        kept.update({raw.decode("latin-1"), repr(raw)[2:-1], repr(b'"' + raw)[3:-1]})
        if len(form.strip()) >= _MIN_FORM:
            kept.add(form.strip())
    for form in list(kept):
        kept.add(form.replace("\\", "\\\\").replace('"', '\\"'))
    return tuple(sorted(kept, key=len, reverse=True))


def _withhold_from_reply(reply: ProxyReply, forms: tuple[str, ...]) -> ProxyReply:
    """``reply`` as given, or a copy without the credentials a proxy sent back in it
    (a reason phrase, or a header's name or value, that echoes the request's
    ``Proxy-Authorization``)."""
    reason = withhold(reply.reason, forms)
    headers = tuple(
        (withhold(name, forms), withhold(value, forms)) for name, value in reply.headers
    )
    if reason == reply.reason and headers == reply.headers:
        return reply
    return dataclasses.replace(reply, reason=reason, headers=headers)


def _flow_forms(value: str | bytes, known: tuple[str, ...]) -> tuple[str, ...]:
    """``known`` and the forms of a ``Proxy-Authorization`` value sent (a flow's, a
    Digest answer, one given in ``headers``) a proxy could send back, longest first: the
    value, and its credentials (what follows the scheme) when long enough to be told from
    chance, as sent and percent-encoded; for Digest also the ``response`` hash alone
    (with the challenge, it is enough to guess the password offline), for Basic the
    forms of the ``user:password`` it decodes to (as a proxy may quote it)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    forms = {text, *_percent_forms(text)}
    credentials = text.partition(" ")[2].strip()
    if len(credentials) >= _MIN_FORM:
        forms.update({credentials, *_percent_forms(credentials)})
    forms.update(match.group(1) for match in _DIGEST_RESPONSE.finditer(credentials))
    pair = _basic_pair(text)
    decoded = _secret_forms(*pair) if pair is not None else ()
    return tuple(sorted({*known, *_as_received(forms), *decoded}, key=len, reverse=True))


def _offered(schemes: Iterable[str], sent: Sequence[str] = ()) -> str:
    """The schemes a 407 offers, for a message: the first few, and how many more; with
    none, what ``Proxy-Authenticate`` said instead (``sent``), if anything."""
    distinct = list(dict.fromkeys(schemes))
    if not distinct:
        said = [value.strip() for value in sent if value.strip()]
        if said:
            return f"no scheme janusnet can read (Proxy-Authenticate: '{printable(said[0], 60)}')"
        return "no scheme"
    shown = ", ".join(printable(scheme, 40) for scheme in distinct[:_SHOWN_SCHEMES])
    hidden = len(distinct) - _SHOWN_SCHEMES
    return shown + (f" and {hidden} more" if hidden > 0 else "")


def _header_items(headers: object) -> list[tuple[str, str]]:
    """``headers`` (a mapping, or (name, value) pairs in any iterable: lists from a
    configuration file, ``dict.items()``, a generator) as a list of pairs.

    Raises:
        UsageError: anything else (a string, pairs that are not pairs).
    """
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    problem = "headers must be a mapping or (name, value) pairs"
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        raise UsageError(f"{problem}, not {type(headers).__name__}")
    items = []
    for pair in headers:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable):
            raise UsageError(f"{problem}; one of them is {type(pair).__name__}")
        name_value = tuple(pair)
        if len(name_value) != 2:
            raise UsageError(f"{problem}; one of them has {len(name_value)} items")
        items.append((name_value[0], name_value[1]))
    return items


def _stale(reply: ProxyReply) -> bool:
    """Whether a 407 says only that our Digest nonce expired (``stale=true``)."""
    challenge = choose_challenge(parse_challenges(reply.get_all("proxy-authenticate")))
    return (
        challenge is not None
        and challenge.scheme == "digest"
        and challenge.params.get("stale", "").lower() == "true"
    )


#: How long a ``CONNECT`` that met a reset waits to read the alert that may have come
#: before it (it is there already, or it is not coming).
ALERT_WAIT: Final = 0.1

#: The alerts with which a TLS server refuses the client's certificate, or the client
#: (TLS 1.3 sends them after the client's side of the handshake is done).
_HANDSHAKE_ALERTS: Final = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "UNKNOWN_CA",
    "ACCESS_DENIED",
    "HANDSHAKE_FAILURE",
)


def _tls_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error (not an end of stream) under ``exc``, if any."""
    return _cause_of(exc, ssl.SSLError, (ssl.SSLEOFError, ssl.SSLZeroReturnError))


def _ended_by_eof(exc: BaseException) -> bool:
    """A failed handshake whose cause is the other end closing (not a bad certificate,
    not a TLS alert)."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, anyio.EndOfStream)):
            return True
        if isinstance(cause, anyio.BrokenResourceError) and cause.__cause__ is None:
            return True  # anyio's TLSStream meeting the end (TLS inside an https:// proxy)
        cause = cause.__cause__
    return False


class ProxyTunnel:
    """Open sockets to targets through an HTTP(S) proxy with ``CONNECT``.

    Args:
        proxy: the proxy URL, ``http://[user:password@]host[:port]`` (port 80 by default)
            or ``https://...`` (TLS to the proxy, port 443 by default). Percent-encoded
            credentials are decoded (``pa%3Ass`` is ``pa:ss``).
        auth: ``(user, password)`` for Basic and Digest, or a :class:`ProxyAuth` flow for
            any other scheme (NTLM, Negotiate, a token); overrides credentials in the URL.
        headers: extra headers sent with every ``CONNECT``.
        client_port: the port definition for the sockets (TLS mode, line end, tokens,
            access rules on the *target*).
        proxy_ssl_context: the context for TLS to an ``https://`` proxy (default: the
            verified default). Kept apart from the origin's context.
        connect_timeout: cap on the TCP connect to the proxy, in seconds.
        timeout: one deadline over connect + exchange (and, in :meth:`open_tls`, the
            origin's handshake), in seconds (``None`` for none).
        max_head_bytes: cap on the proxy's reply head.
        preemptive_basic: send ``Proxy-Authorization: Basic`` with the first request when
            credentials are known (what httpx and curl do). ``False`` waits for the 407
            and answers the strongest scheme offered, so a Digest-only proxy never sees
            the password in (base64-encoded) clear text. A :class:`ProxyAuth` flow
            decides its first request itself.
        local_address: the IP address to connect to the proxy from (as for
            :meth:`Socket.connect`).
        socket_options: ``(level, option, value)`` tuples set on the socket to the
            proxy before it connects (as for :meth:`Socket.connect`; e.g. TCP
            keepalive for long-lived tunnels).
        resolve_locally: resolve a target *name* here and ``CONNECT`` to its first
            address, after checking every address it resolves to against the client
            port's IP rules, as :meth:`Socket.connect` does (the DNS-rebinding guard);
            TLS still verifies, and SNI still names, the name. For a service whose
            targets come from its users: otherwise the proxy resolves names, and a name
            that resolves to an internal address passes IP rules. Off by default (behind
            many proxies only the proxy can resolve names, as curl and httpx assume).

    Raises:
        UsageError: a bad proxy URL, a header with a control character, bad credentials,
            or an argument of the wrong type (``headers``, ``client_port``,
            ``proxy_ssl_context``, a negative or non-numeric timeout, ``local_address``
            not an IP address, ``socket_options`` not ``(int, int, int | bytes)``
            tuples).
    """

    def __init__(
        self,
        proxy: str,
        *,
        auth: tuple[str, str] | ProxyAuth | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        client_port: ClientPort | None = None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = DEFAULT_PROXY_CONNECT_TIMEOUT,
        timeout: float | None = DEFAULT_TUNNEL_TIMEOUT,
        max_head_bytes: int = MAX_HEAD_BYTES,
        preemptive_basic: bool = True,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
        resolve_locally: bool = False,
    ) -> None:
        url: ProxyURL = parse_proxy_url(proxy)
        self._url = url
        self._flow = auth if isinstance(auth, ProxyAuth) else None
        if self._flow is not None:
            self._credentials: tuple[str, str] | None = None
        elif auth is not None:
            if not (isinstance(auth, tuple) and len(auth) == 2):
                raise UsageError("auth must be a (user, password) tuple or a ProxyAuth")
            user, password = auth
            if not isinstance(user, str) or not isinstance(password, str):
                raise UsageError("auth must be a (user, password) tuple of str")
            self._credentials = (user, password)
        elif url.username is not None:
            self._credentials = (url.username, url.password or "")
        else:
            self._credentials = None
        if self._credentials is not None:
            basic_proxy_authorization(*self._credentials)  # refuse ':' in the user now
            self._secrets = _secret_forms(*self._credentials)
        else:
            self._secrets = ()
        items = _header_items(headers)
        for name, value in items:
            validate_extra_header(name, value)
            if name.strip().lower() in _CREDENTIAL_HEADERS:
                self._secrets = _flow_forms(value, self._secrets)
        self._headers: tuple[tuple[str, str], ...] = tuple(items)
        self._client_port = _client_port(client_port)
        check_ssl_context(proxy_ssl_context, "proxy_ssl_context")
        self._proxy_ssl_context = proxy_ssl_context
        check_timeout(connect_timeout, "connect_timeout")
        check_timeout(timeout)
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        if type(max_head_bytes) is not int or max_head_bytes < 1:
            raise UsageError("max_head_bytes must be a positive int")
        self._max_head_bytes = max_head_bytes
        self._preemptive_basic = preemptive_basic
        self._tcp_options = tcp_options(local_address, socket_options)
        if not isinstance(resolve_locally, bool):
            raise UsageError(f"resolve_locally must be a bool, not {resolve_locally!r}")
        self._resolve_locally = resolve_locally
        self._address = url.address  # host:port for messages (format_authority is not free)
        # Serialised CONNECT requests by (authority, Proxy-Authorization): building one
        # with h11 costs more than the rest of the exchange's Python work, and most
        # tunnels go to a handful of targets. Bounded by REQUEST_CACHE_SIZE.
        self._requests: dict[tuple[str, bytes | None], bytes] = {}

    @classmethod
    def from_env(
        cls,
        host: str,
        port: int,
        *,
        environ: Mapping[str, str] | None = None,
        auth: tuple[str, str] | ProxyAuth | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        client_port: ClientPort | None = None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = DEFAULT_PROXY_CONNECT_TIMEOUT,
        timeout: float | None = DEFAULT_TUNNEL_TIMEOUT,
        max_head_bytes: int = MAX_HEAD_BYTES,
        preemptive_basic: bool = True,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
        resolve_locally: bool = False,
    ) -> ProxyTunnel | None:
        """The tunnel the environment asks for to reach ``host:port``, or ``None``.

        Reads ``https_proxy``/``HTTPS_PROXY``, then ``all_proxy``/``ALL_PROXY``, and
        honours ``no_proxy``/``NO_PROXY`` (``*``, domain suffixes, IPs, CIDR ranges) as
        curl does, and a few entries curl ignores whose intent is plain (the guide
        lists them).

        Args:
            host: the target host.
            port: the target port.
            environ: the environment to read (default ``os.environ``).
            auth: as for :class:`ProxyTunnel` (overrides credentials in the variable).
            headers: as for :class:`ProxyTunnel`.
            client_port: as for :class:`ProxyTunnel`.
            proxy_ssl_context: as for :class:`ProxyTunnel` (``https://`` proxies).
            connect_timeout: as for :class:`ProxyTunnel`.
            timeout: as for :class:`ProxyTunnel`.
            max_head_bytes: as for :class:`ProxyTunnel`.
            preemptive_basic: as for :class:`ProxyTunnel`.
            local_address: as for :class:`ProxyTunnel`.
            socket_options: as for :class:`ProxyTunnel`.
            resolve_locally: as for :class:`ProxyTunnel`.

        Returns:
            A tunnel, or ``None`` when no proxy applies.

        Raises:
            UsageError: the proxy variable holds a bad URL, or a bad argument.
        """
        tcp_options(local_address, socket_options)  # refused even when no proxy applies
        url = proxy_from_env(host, port, os.environ if environ is None else environ)
        if url is None:
            return None
        return cls(
            url,
            auth=auth,
            headers=headers,
            client_port=client_port,
            proxy_ssl_context=proxy_ssl_context,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_head_bytes=max_head_bytes,
            preemptive_basic=preemptive_basic,
            local_address=local_address,
            socket_options=socket_options,
            resolve_locally=resolve_locally,
        )

    @property
    def proxy(self) -> str:
        """``host:port`` of the proxy (no credentials)."""
        return self._address

    def __repr__(self) -> str:
        auth = ", auth=<hidden>" if self._credentials or self._flow else ""
        resolve = ", resolve_locally=True" if self._resolve_locally else ""
        return f"ProxyTunnel('{self._url.scheme}://{self._address}'{auth}{resolve})"

    async def open(self, host: str, port: int, *, stop_at_head: bool = False) -> Socket:
        """Connect to the proxy and ``CONNECT`` to ``host:port``.

        Args:
            host: the target host name or IP address (IPv6 with or without brackets).
            port: the target port.
            stop_at_head: read the proxy's reply head and not one byte past it, as curl
                does: what follows stays in the operating system's buffer, for a
                library :meth:`Socket.detach` hands the tunnel to (a server that speaks
                first, such as SSH's). ``ssl_on()`` still refuses those bytes (-112);
                ``sock.pending`` does not count them. An ``http://`` proxy only.

        Returns:
            A plain socket inside the tunnel, ready for ``ssl_on()`` (whose
            ``server_hostname`` defaults to ``host``), with ``proxy_reply`` set. Bytes the
            proxy sent after its reply head are buffered (``ssl_on()`` refuses them). On a
            ``TLSMode.ALWAYS`` client port the socket is TLS already: :meth:`open_tls`.

        Raises:
            UsageError: bad host, port or header (nothing was sent), ``stop_at_head``
                with an ``https://`` proxy or a ``TLSMode.ALWAYS`` port, a
                :class:`ProxyAuth` flow yielded a value that is no header value, or
                ``proxy_ssl_context`` offers ALPN and an ``https://`` proxy chose
                another protocol than ``http/1.1`` (no ``CONNECT`` was sent).
            AccessDeniedError: the client port's rules forbid the target (nothing sent).
            PortLimitError: the client port's ``max_sockets`` is reached (nothing sent).
            ConnectError: the proxy could not be reached (``role == "proxy"``); with
                ``resolve_locally``, also a target name that does not resolve
                (``role == "target"``; nothing was sent).
            HandshakeError: TLS to an ``https://`` proxy failed (-111).
            SSLOnOtherError: the connection broke during TLS to an ``https://`` proxy
                (-149).
            ProxyAuthenticationRequired: 407 that could not be answered (or that a
                :class:`ProxyAuth` flow gave up on); whatever else a flow raises
                propagates.
            ProxyRefusedError: any other non-2xx reply.
            ProxyProtocolError: a malformed, oversized or cut-short reply, or the proxy
                closed or reset the connection during the exchange.
            TimeoutError: the deadline expired; nothing is left open.

        Cancellation closes the socket and propagates.
        """
        if stop_at_head and (
            self._url.scheme == "https" or self._client_port.tls is TLSMode.ALWAYS
        ):
            raise UsageError(
                "stop_at_head leaves the bytes after the reply in the socket for another "
                "library: the tunnel must be plain (an http:// proxy, a port that is not "
                "TLSMode.ALWAYS)"
            )
        if self._client_port.tls is TLSMode.ALWAYS:  # TLS at connect, as Socket.connect
            return await self.open_tls(host, port)
        authority, target = self._checked_target(host, port)
        phase = [self._connect_phase()]
        try:
            with anyio.fail_after(self._timeout):
                if self._resolve_locally:
                    authority = await self._resolved(authority, target, port, phase)
                return await self._open(authority, target, phase, stop_at_head)
        except TimeoutError as exc:
            raise self._timed_out(exc, authority, phase[0]) from None

    async def open_tls(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        session: ssl.SSLSession | None = None,
    ) -> Socket:
        """:meth:`open`, then ``ssl_on()`` to the target, under the same deadline.

        Args:
            host: the target host (also the name verified).
            port: the target port.
            ssl_context: the origin's context (default: the port's, else the verified
                default).
            session: a TLS session to resume (``Socket.tls_session`` of an earlier
                connection to ``host`` with the same context: a resumed handshake checks
                no certificate); not inside an ``https://`` proxy's TLS.

        Returns:
            A TLS socket to the target.

        Raises:
            UsageError: as :meth:`open`, or ``ssl_context`` is not an ``SSLContext``;
                ``session`` is not an ``SSLSession`` or the proxy is ``https://``
                (nothing sent), or it is of another context, not from ``tls_session`` or
                verified for another name (the tunnel is closed).
            NotSSLPortError: the client port is ``TLSMode.NEVER`` (-110; nothing sent).
            AccessDeniedError: as :meth:`open`.
            PortLimitError: as :meth:`open`.
            ConnectError: as :meth:`open`.
            ProxyAuthenticationRequired: as :meth:`open`.
            ProxyRefusedError: as :meth:`open`.
            ProxyProtocolError: as :meth:`open`.
            PendingDataError: the proxy sent bytes after its reply (-112).
            HandshakeError: the origin's (or an ``https://`` proxy's) handshake or
                certificate failed, or the proxy ended the tunnel (closed or reset it)
                before the handshake was done (-111).
            SSLOnOtherError: another I/O error during a handshake (-149).
            TimeoutError: the deadline expired; nothing is left open.
        """
        check_ssl_context(ssl_context)
        if session is not None and not isinstance(session, ssl.SSLSession):
            raise UsageError(f"session must be an ssl.SSLSession or None, not {session!r}")
        if session is not None and self._url.scheme == "https":
            raise UsageError(
                "open_tls(session=...): resuming a TLS session is not supported inside an "
                "https:// proxy's TLS (nothing was sent)"
            )
        if self._client_port.tls is TLSMode.NEVER:
            raise NotSSLPortError(
                f"client port {self._client_port.name!r} does not allow TLS (nothing was sent)"
            )
        authority, target = self._checked_target(host, port)
        phase = [self._connect_phase()]
        try:
            with anyio.fail_after(self._timeout):
                if self._resolve_locally:
                    authority = await self._resolved(authority, target, port, phase)
                sock = await self._open(authority, target, phase)
                phase[0] = "doing the TLS handshake with the target"
                try:
                    # (the deadline is ours)
                    await sock.ssl_on(ssl_context=ssl_context, timeout=None, session=session)
                except (SSLOnOtherError, HandshakeError) as exc:
                    # The tunnel ended before our ClientHello or during the handshake (a
                    # proxy that answers 200 before it reaches the target, then gives up):
                    # -111 either way, saying so (OpenSSL's words name neither end). A
                    # proxy that closes with our ClientHello unread makes its kernel send
                    # a reset instead of FIN: the same end, so the same answer. So does
                    # one that closed before our CONNECT came: its reset then follows its
                    # FIN, and Linux says EPIPE to the ClientHello.
                    other = isinstance(exc, SSLOnOtherError)
                    reset = other and _is_peer_reset(exc)
                    ended = reset or (
                        (sock._closed_before_tls() or _is_broken_pipe(exc))
                        if other
                        else _ended_by_eof(exc)
                    )
                    await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
                    if ended:
                        how = "reset" if reset else "closed"
                        raise HandshakeError(
                            f"TLS handshake with {host} failed: proxy {self._address} {how} "
                            f"the tunnel to {authority} before the handshake was done (it "
                            "may not have reached the target, or the target ended the "
                            "handshake: a server that requires a client certificate does)"
                        ) from exc
                    raise
                except PendingDataError as exc:
                    await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
                    # ssl_on()'s "read them first" does not apply: the socket is closed.
                    raise PendingDataError(
                        f"{exc.pending} byte(s) came through proxy {self._address} after its "
                        f"reply to CONNECT {authority}, before TLS (from the proxy, or from "
                        "a target that speaks first): refused, they did not come over TLS; "
                        "the socket is closed (open() + ssl_on() lets you read them)",
                        pending=exc.pending,
                    ) from exc
                except BaseException:
                    await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
                    raise
                return sock
        except TimeoutError as exc:
            raise self._timed_out(exc, authority, phase[0]) from None

    def _connect_phase(self) -> str:
        if self._url.scheme == "https":
            return "connecting to the proxy or doing the TLS handshake with it"
        return "connecting to the proxy"

    def _timed_out(self, exc: TimeoutError, authority: str, phase: str) -> TimeoutError:
        """The deadline's ``TimeoutError``, saying what it was waiting for."""
        if exc.args:  # already says what timed out (the proxy's connect_timeout)
            return exc
        message = (
            f"CONNECT {authority} via proxy {self._address}: the {self._timeout:g} s "
            f"deadline expired while {phase}"
        )
        logger.warning("%s", message)
        return TimeoutError(message)

    # ------------------------------------------------------------------ internals

    def _checked_target(self, host: str, port: int) -> tuple[str, str]:
        """Validate ``host:port`` before anything is sent: ``(authority, host name)``.

        Raises:
            UsageError: a bad host or port.
            AccessDeniedError: the client port's rules forbid the target.
            PortLimitError: the client port's ``max_sockets`` is reached.
        """
        authority = format_authority(host, port)
        target = host.strip("[]")
        self._client_port._check_target(target, port, resolves=self._resolve_locally)
        self._client_port._check_capacity()
        return authority, target

    async def _resolved(self, authority: str, target: str, port: int, phase: list[str]) -> str:
        """``CONNECT``'s authority for ``resolve_locally``: a name's first address, once
        every address it resolves to has passed the client port's IP rules.

        Raises:
            ConnectError: the name does not resolve.
            AccessDeniedError: an address it resolves to is denied (nothing was sent).
        """
        if _is_ip_literal(target):
            return authority
        phase[0] = f"resolving {target}"
        addresses = await allowed_addresses(self._client_port, target, port, always=True)
        phase[0] = self._connect_phase()
        return format_authority(addresses[0], port)

    async def _connect_proxy(self, target: str) -> Socket:
        url = self._url
        context = None
        if url.scheme == "https":
            context = self._proxy_ssl_context or default_context_for(f"TLS to proxy {url.address}")
        stream = await open_hop(
            url.host,
            url.port,
            label=f"proxy {url.address}",
            connect_timeout=self._connect_timeout,
            ssl_context=context,
            options=self._tcp_options,
        )
        try:
            return Socket(stream, client_port=self._client_port, server_hostname=target)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def _open(
        self, authority: str, target: str, phase: list[str], stop_at_head: bool = False
    ) -> Socket:
        sock = await self._connect_proxy(target)
        phase[0] = "waiting for the proxy's reply"
        return await self._exchange(sock, authority, target, phase, stop_at_head)

    async def _exchange(
        self,
        sock: Socket,
        authority: str,
        target: str,
        phase: list[str] | None = None,
        stop_at_head: bool = False,
    ) -> Socket:
        """Run CONNECT on ``sock`` (a fresh connection to the proxy); close it on failure.

        Returns the tunnel socket: ``sock``, or a new connection when the proxy closed the
        first one after a Digest challenge.
        """
        if self._flow is not None:
            return await self._exchange_flow(sock, authority, target, phase, stop_at_head)
        credentials = self._credentials
        authorization = (
            basic_proxy_authorization(*credentials)
            if credentials and self._preemptive_basic
            else None
        )
        secrets = self._secrets  # and each Digest answer sent, from then on
        answered = False
        stale_retried = False
        # The 407 an answer replies to (and whether Basic had gone with the request), and
        # whether the answer rides the connection that carried the 407.
        challenge: tuple[ProxyReply, bool] | None = None
        kept = False
        try:
            while True:
                # An answer to a challenge is single-use (nonce): not cached.
                request = self._request(authority, authorization, cache=not answered)
                reader = self._reader(secrets)
                try:
                    await self._send(sock, request, phase)
                    reply = await self._read_reply(sock, reader, stop_at_head, phase)
                except ProxyProtocolError:
                    if not (kept and challenge is not None and not reader.received):
                        raise
                    # The proxy kept the connection open after its 407 (keep-alive, the
                    # body drained), then closed or reset it before answering our answer:
                    # a keep-alive connection gone stale, as HTTP clients meet them. Once,
                    # on a new connection, with a fresh answer (a new cnonce).
                    kept = False
                    logger.info(
                        "proxy %s closed the connection it kept after its 407; answering "
                        "on a new one",
                        self._address,
                    )
                    sock = await self._reconnect(sock, target, phase)
                    authorization = self._answer(challenge[0], authority, sent_basic=challenge[1])
                    if authorization is not None:
                        secrets = _flow_forms(authorization, secrets)
                    continue
                kept = False
                raw = reply  # what is answered: the challenge as the proxy wrote it
                if secrets:
                    reply = _withhold_from_reply(reply, secrets)
                self._log_reply(authority, reply)
                if 200 <= reply.status < 300:
                    return self._tunnel_open(sock, reader, reply, authority, secrets, stop_at_head)
                if reply.status == 407 and credentials and not answered:
                    answer = self._answer(raw, authority, sent_basic=authorization is not None)
                elif reply.status == 407 and answered and not stale_retried and _stale(raw):
                    # Our Digest answer was right but its nonce had expired (RFC 7616
                    # §3.3: stale=true): answer the fresh nonce, once, as curl does.
                    stale_retried = True
                    answer = self._answer(raw, authority, sent_basic=True)
                else:
                    answer = None
                if answer is not None:
                    answered = True
                    challenge = (raw, stale_retried or authorization is not None)
                    authorization = answer
                    secrets = _flow_forms(answer, secrets)
                    if phase is not None:
                        phase[0] = "reading the body of the proxy's 407, to answer it"
                    kept = await self._drain(sock, reader)
                    if not kept:
                        sock = await self._reconnect(sock, target, phase)
                    if phase is not None:
                        phase[0] = "waiting for the proxy's reply to the answer to its 407"
                    continue
                why = (
                    self._why_407(
                        reply, authorization, basic_first=answered and self._preemptive_basic
                    )
                    if reply.status == 407
                    else ""
                )
                self._refuse(authority, reply, why)
        except BaseException as exc:
            await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
            if secrets and isinstance(exc, JanusnetError):
                withhold_from_error(exc, secrets)
            raise

    async def _exchange_flow(
        self,
        sock: Socket,
        authority: str,
        target: str,
        phase: list[str] | None,
        stop_at_head: bool = False,
    ) -> Socket:
        """:meth:`_exchange` with a :class:`ProxyAuth` flow answering the 407s.

        Each value the flow yields is withheld from messages and logs from then on (the
        flow itself gets every reply as the proxy sent it). An answer rides the
        connection that carried the 407 when the proxy keeps it open, else a new one;
        when a kept connection turns out closed before our answer's reply, the flow
        starts again on a new connection, once (its answer belonged to the old one).
        """
        assert self._flow is not None
        secrets = self._secrets  # (an Authorization given in headers=; then the flow's)
        flow: AsyncGenerator[str | None, ProxyReply] | None = None
        sent = rounds = 0  # values sent; 407s the flow was asked to answer
        kept = restarted = moved = False  # moved: an answer went on a new connection
        try:
            flow = self._start_flow(authority)
            authorization = await self._flow_value(flow, None, phase)
            while True:
                if authorization is not None:
                    sent += 1
                    secrets = _flow_forms(authorization, secrets)
                if phase is not None:
                    phase[0] = "waiting for the proxy's reply" + (
                        " to the answer to its 407" if rounds else ""
                    )
                # A flow's values are not cached: one-time credentials have no business
                # in a cache.
                request = self._request(authority, authorization, cache=authorization is None)
                reader = self._reader(secrets)
                try:
                    await self._send(sock, request, phase)
                    reply = await self._read_reply(sock, reader, stop_at_head, phase)
                except ProxyProtocolError as exc:
                    if kept and restarted and not reader.received:
                        # The same again on the new connection: say what the proxy does,
                        # not only what the reply reader saw.
                        raise ProxyProtocolError(
                            f"proxy {self._address} closed the connection after its 407 "
                            "before replying to the proxy auth flow's answer, on two "
                            "connections: it keeps none open after a 407 (though it did not "
                            "say Connection: close), so an answer cannot ride the "
                            "connection its challenge came on, as a connection-bound "
                            "scheme such as NTLM needs",
                            proxy=self._address,
                        ) from exc
                    if not (kept and not restarted and not reader.received):
                        raise
                    restarted, kept = True, False
                    logger.info(
                        "proxy %s closed the connection it kept after its 407; starting "
                        "the proxy auth flow again on a new one",
                        self._address,
                    )
                    sock = await self._reconnect(sock, target, phase)
                    await self._close_flow(flow, phase)
                    # A new run: its own rounds and its own account in any error.
                    sent = rounds = 0
                    moved = False
                    flow = self._start_flow(authority)
                    authorization = await self._flow_value(flow, None, phase)
                    continue
                kept = False
                shown = _withhold_from_reply(reply, secrets) if secrets else reply
                self._log_reply(authority, shown)
                if 200 <= reply.status < 300:
                    await self._close_flow(flow, phase)  # may fail: the socket closes then
                    return self._tunnel_open(sock, reader, shown, authority, secrets, stop_at_head)
                answer = None
                asked = reply.status == 407 and rounds < MAX_AUTH_ROUNDS
                if asked:
                    rounds += 1
                    answer = await self._flow_value(flow, reply, phase)  # as the proxy sent it
                if answer is None:
                    capped = reply.status == 407 and not asked
                    why = self._why_flow_407(shown, sent, capped=capped, moved=moved)
                    self._refuse(authority, shown, why if reply.status == 407 else "")
                if phase is not None:
                    phase[0] = "reading the body of the proxy's 407, to answer it"
                kept = await self._drain(sock, reader)
                if not kept:
                    moved = True
                    sock = await self._reconnect(sock, target, phase)
                authorization = answer
        except BaseException as exc:
            await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
            if secrets and isinstance(exc, JanusnetError):
                withhold_from_error(exc, secrets)
            if flow is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
                # The flow's clean-up runs now, under the deadline; should the deadline
                # expire in it, the timeout says so, and what had ended the exchange.
                await self._close_flow(flow, phase, after=exc)
            raise
        finally:
            if flow is not None:
                await flow.aclose()  # runs the flow's own clean-up (finally blocks)

    async def _close_flow(
        self,
        flow: AsyncGenerator[str | None, ProxyReply],
        phase: list[str] | None,
        *,
        after: BaseException | None = None,
    ) -> None:
        """Run the flow's clean-up (its ``finally`` blocks); a deadline that expires in
        it names it (and ``after``, what had ended the exchange)."""
        if phase is not None:
            phase[0] = f"running the clean-up of the proxy auth flow {type(self._flow).__name__}"
            if after is not None:
                phase[0] += f", after {type(after).__name__}"
        await flow.aclose()

    async def _reconnect(self, sock: Socket, target: str, phase: list[str] | None) -> Socket:
        """Close ``sock`` and connect to the proxy again, to answer its 407 there."""
        await sock._close_stream(wait=False)  # (at once: no wait for unsent bytes)
        if phase is not None:
            phase[0] = self._connect_phase() + " again, to answer its 407"
        return await self._connect_proxy(target)

    def _request(self, authority: str, authorization: bytes | None, *, cache: bool) -> bytes:
        """The serialised ``CONNECT``, from the cache when it was built before."""
        key = (authority, authorization)
        request = self._requests.get(key)
        if request is None:
            request = build_connect_request(
                authority, self._headers, proxy_authorization=authorization
            )
            if cache:
                if len(self._requests) >= REQUEST_CACHE_SIZE:
                    self._requests.clear()
                self._requests[key] = request
        return request

    def _reader(self, secrets: tuple[str, ...]) -> ConnectReplyReader:
        """A reply reader whose messages withhold ``secrets`` (and which keeps no reply
        head in the shared cache when there are any: it may quote them)."""
        return ConnectReplyReader(
            max_head_bytes=self._max_head_bytes,
            proxy=self._address,
            redact=functools.partial(withhold, forms=secrets) if secrets else None,
        )

    async def _send(self, sock: Socket, request: bytes, phase: list[str] | None) -> None:
        """Send ``request``; a deadline that expires meanwhile says the proxy was not
        reading it (a send waits only when the proxy takes nothing)."""
        waiting = phase[0] if phase is not None else ""
        if phase is not None:
            phase[0] = "sending CONNECT: the proxy is not reading it"
        try:
            await sock.send(request)
            if phase is not None:
                phase[0] = waiting
        except SocketResetError as exc:
            if self._url.scheme == "https":
                if phase is not None:  # (the proxy did read: it reset the connection)
                    phase[0] = "reading what the proxy sent before it reset the connection"
                alert = await self._alert_behind_reset(sock)
                if alert is not None:
                    raise self._broke_during_connect(alert) from alert
            raise ProxyProtocolError(
                f"proxy {self._address} reset the connection before CONNECT went out",
                proxy=self._address,
            ) from exc

    @staticmethod
    async def _alert_behind_reset(sock: Socket) -> BaseException | None:
        """The TLS alert an ``https://`` proxy sent before the reset our ``CONNECT`` met,
        if it is there to read. With TLS 1.3 a proxy refuses our side of the handshake
        (no client certificate) after it, with an alert, then closes with our
        ``CONNECT`` unread: its kernel's reset then fails the send, while the alert still
        waits in ours."""
        try:
            with anyio.move_on_after(ALERT_WAIT):
                await sock.recv(RECEIVE_SIZE)
        except SocketResetError as exc:
            if _tls_error_in(exc) is not None:
                return exc
        except JanusnetError:
            pass
        return None

    def _log_reply(self, authority: str, reply: ProxyReply) -> None:
        logger.info(
            "CONNECT %s via proxy %s: %s %s",
            authority,
            self._address,
            reply.status,
            printable(reply.reason),
        )

    def _tunnel_open(
        self,
        sock: Socket,
        reader: ConnectReplyReader,
        reply: ProxyReply,
        authority: str,
        secrets: tuple[str, ...],
        stop_at_head: bool = False,
    ) -> Socket:
        """The tunnel is open: every byte after the head stays buffered (-112 at TLS), in
        the socket's buffer or, with ``stop_at_head``, the operating system's. ``secrets``:
        the credential forms the socket's handshake errors withhold (they may quote a
        proxy's plain-text answer to the ClientHello)."""
        if not stop_at_head:
            sock._unread(reader.leftover)
        sock._shed_scanner()
        sock.proxy_reply = reply
        sock._target = authority
        sock._secrets = secrets
        return sock

    def _refuse(self, authority: str, reply: ProxyReply, why_407: str) -> NoReturn:
        """Raise the error for a non-2xx reply the exchange cannot answer (``why_407``:
        the detail of a 407's error)."""
        logger.warning("proxy %s refused CONNECT %s: %s", self._address, authority, reply.status)
        if reply.status == 407:
            raise ProxyAuthenticationRequired(
                reply.status, reply.reason, reply.headers, proxy=self._address, detail=why_407
            )
        check_reply(reply, proxy=self._address)
        raise ProxyProtocolError(  # pragma: no cover - check_reply raised
            f"unexpected reply {reply.status}", proxy=self._address
        )

    def _start_flow(self, authority: str) -> AsyncGenerator[str | None, ProxyReply]:
        """A new run of the flow for ``authority``.

        Raises:
            UsageError: ``async_auth_flow`` is not an async generator function.
        """
        assert self._flow is not None
        flow = self._flow.async_auth_flow(proxy_host=self._url.host, target=authority)
        made: object = flow  # (checked as the object it is, whatever it was declared)
        if not inspect.isasyncgen(made):
            if inspect.iscoroutine(made):
                made.close()  # (no "never awaited" warning on top of the error)
            raise UsageError(
                f"{type(self._flow).__name__}.async_auth_flow must be an async generator "
                f"function (async def with yield); it returned {type(made).__name__}"
            )
        return flow

    async def _flow_value(
        self,
        flow: AsyncGenerator[str | None, ProxyReply],
        reply: ProxyReply | None,
        phase: list[str] | None,
    ) -> bytes | None:
        """The flow's next ``Proxy-Authorization`` value: its first (``reply`` None) or
        its answer to the 407 ``reply``; None when it sends none or has given up."""
        assert self._flow is not None
        if phase is not None:  # what a deadline that expires now was waiting for
            phase[0] = f"waiting for the proxy auth flow {type(self._flow).__name__}"
        try:
            value = await (flow.__anext__() if reply is None else flow.asend(reply))
        except StopAsyncIteration:
            return None
        return check_authorization(value, self._flow)

    def _why_flow_407(self, reply: ProxyReply, sent: int, *, capped: bool, moved: bool) -> str:
        """Why a 407 ends an exchange a :class:`ProxyAuth` flow answers: what the flow
        did, what the proxy offers, and whether answers had to change connection."""
        name = type(self._flow).__name__
        if capped:
            why = (
                f"the proxy still asked after the proxy auth flow {name} had answered "
                f"{MAX_AUTH_ROUNDS} of its 407s; janusnet stops there"
            )
        elif sent == 0:
            why = f"the proxy auth flow {name} gave no Proxy-Authorization value"
        else:
            why = f"the proxy auth flow {name} gave up after {sent} Proxy-Authorization value(s)"
        sent_values = reply.get_all("proxy-authenticate")
        challenges = parse_challenges(sent_values)
        why += f" (the proxy offers {_offered((c.scheme for c in challenges), sent_values)})"
        if moved:
            why += (
                "; the proxy did not keep the connection after a 407 (it closed it, or "
                "its body was too large or too slow to drain), so an answer went on a new "
                "connection, where a connection-bound scheme such as NTLM cannot succeed"
            )
        return why

    def _why_407(self, reply: ProxyReply, sent: bytes | None, *, basic_first: bool) -> str:
        """Why a 407 ends the exchange, in words that never include the credentials.

        ``sent`` is the last ``Proxy-Authorization`` sent; ``basic_first``: Basic went
        with the first request, before that answer."""
        challenges = parse_challenges(reply.get_all("proxy-authenticate"))
        schemes = list(dict.fromkeys(c.scheme for c in challenges))
        if not self._credentials and (not schemes or choose_challenge(challenges)):
            # (When nothing offered is answerable, credentials would not help: say so.)
            return "no credentials were given (auth=, or user:password@ in the proxy URL)"
        if sent is not None:
            scheme = sent.split(b" ", 1)[0].decode("ascii", "replace")
            if scheme.lower() == "digest" and _stale(reply):
                return (
                    "the proxy called the nonce of a fresh Digest answer stale again "
                    "(stale=true; janusnet answers a stale nonce once)"
                )
            if not schemes or scheme.lower() in schemes or choose_challenge(challenges):
                # (also a proxy that answers a Digest answer by offering only Basic,
                # which was sent already or is not tried after Digest)
                if basic_first and scheme.lower() != "basic":
                    scheme = f"Basic, then {scheme}"
                return f"the credentials sent ({scheme}) were rejected"
        if "digest" in schemes:
            # Offered, but not in a form janusnet answers (see digest_supported).
            return (
                "its Digest challenge asks for what janusnet does not answer (janusnet "
                "answers Basic, and Digest with MD5 or SHA-256, qop=auth, auth-int or none)"
            )
        return (
            f"it offers {_offered(schemes, reply.get_all('proxy-authenticate'))}; janusnet "
            "answers Basic and Digest itself, and any "
            "scheme through a janusnet.ProxyAuth flow passed as auth="
        )

    def _answer(self, reply: ProxyReply, authority: str, *, sent_basic: bool) -> bytes | None:
        """The ``Proxy-Authorization`` answering a 407, or None when there is none to try.

        Digest (the strongest offered) is preferred; Basic is tried only if it was not
        already sent with the request.
        """
        assert self._credentials is not None
        challenge = choose_challenge(parse_challenges(reply.get_all("proxy-authenticate")))
        if challenge is None:
            return None
        if challenge.scheme == "digest":
            return digest_proxy_authorization(
                challenge, *self._credentials, method="CONNECT", uri=authority
            )
        if not sent_basic:
            return basic_proxy_authorization(*self._credentials)
        return None

    async def _read_reply(
        self,
        sock: Socket,
        reader: ConnectReplyReader,
        stop_at_head: bool = False,
        phase: list[str] | None = None,
    ) -> ProxyReply:
        """The reply to the ``CONNECT`` sent (``phase``: said to be waiting for the final
        reply once an interim one came, for the deadline's message)."""
        if stop_at_head:
            return await self._read_reply_head(sock, reader, phase)
        reply = None
        while reply is None:
            try:
                data = await sock.recv(RECEIVE_SIZE)
            except SocketResetError as exc:
                raise self._broke_during_connect(exc) from exc
            reply = reader.feed(data) if data else reader.feed_eof()
            self._note_interim(reader, reply, phase)
        return reply

    def _broke_during_connect(self, exc: BaseException) -> JanusnetError:
        """The error for a connection that broke while the reply to ``CONNECT`` was
        awaited: a reset, or on an ``https://`` proxy its TLS ending in an alert. With
        TLS 1.3 a proxy refuses a client certificate (or the lack of one) only after our
        side of the handshake is done, with an alert the next read meets: that is the
        proxy's handshake failing (-111), not a reset; another TLS error is named."""
        tls_error = _tls_error_in(exc)
        if tls_error is None:
            return ProxyProtocolError(
                f"proxy {self._address} reset the connection during CONNECT",
                proxy=self._address,
            )
        reason = str(getattr(tls_error, "reason", None) or tls_error)
        if any(alert in reason for alert in _HANDSHAKE_ALERTS):
            hint = (
                ": it wants a client certificate (load one on proxy_ssl_context with "
                "load_cert_chain)"
                if "CERTIFICATE_REQUIRED" in reason
                else ""
            )
            logger.warning("TLS handshake with proxy %s failed: %s", self._address, reason)
            return HandshakeError(
                f"TLS handshake with proxy {self._address} failed: the proxy refused it "
                f"after our side was done, with the alert {reason}{hint}"
            )
        return ProxyProtocolError(
            f"proxy {self._address}'s TLS broke during CONNECT: {reason}",
            proxy=self._address,
        )

    @staticmethod
    def _note_interim(
        reader: ConnectReplyReader, reply: ProxyReply | None, phase: list[str] | None
    ) -> None:
        if reply is None and reader.interim is not None and phase is not None:
            phase[0] = (
                f"waiting for the proxy's final reply (it sent an interim {reader.interim} reply)"
            )

    async def _read_reply_head(
        self, sock: Socket, reader: ConnectReplyReader, phase: list[str] | None
    ) -> ProxyReply:
        """:meth:`_read_reply` taking no byte past a 2xx head out of the socket: reads are
        peeks, and only what the head used is taken (a 407's body is taken with it, for
        the drain)."""
        stream = sock._stream
        assert isinstance(stream, FdStream)  # open() refused the other kinds
        reply = None
        while reply is None:
            try:
                data = await stream.peek(RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            except anyio.BrokenResourceError as exc:
                raise self._broke_during_connect(exc) from exc.__cause__ or exc
            except anyio.ClosedResourceError as exc:
                raise SocketClosedError("the socket was closed during CONNECT") from exc
            reply = reader.feed(data) if data else reader.feed_eof()
            past = len(reader.leftover) if reply is not None and 200 <= reply.status < 300 else 0
            stream.discard(len(data) - past)
            self._note_interim(reader, reply, phase)
        return reply

    async def _drain(self, sock: Socket, reader: ConnectReplyReader) -> bool:
        """Drain a 407 body so the connection can carry the retry; False = reconnect."""
        if not reader.reusable:
            return False
        # A body that stalls costs at most DRAIN_TIMEOUT of the deadline, then a new
        # connection carries the answer.
        with anyio.move_on_after(DRAIN_TIMEOUT):
            try:
                done = reader.drain_body(b"")
                while not done:
                    data = await sock.recv(RECEIVE_SIZE)
                    if not data:
                        return False
                    done = reader.drain_body(data)
            except (ProxyProtocolError, SocketResetError, UsageError):
                return False
            return not reader.leftover
        return False

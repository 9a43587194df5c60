"""Sans-IO proxy configuration: proxy URLs and the ``*_PROXY`` environment variables.

:class:`ProxyURL` keeps the credentials out of every ``repr``/``str`` and error message
(peers.md §3.3: aiohttp#5399, websockets' ``InvalidProxy``). :func:`proxy_from_env` and
:func:`no_proxy_matches` follow curl's documented rules for an ``https`` target.

Imports are limited to the standard library, ``_exceptions`` and the sans-IO
``_connect`` (a test checks it).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from ._connect import format_authority, idna_host
from ._exceptions import UsageError

__all__ = ["DEFAULT_PORTS", "ProxyURL", "no_proxy_matches", "parse_proxy_url", "proxy_from_env"]

#: Proxy port when the URL has none: the scheme's own port, like httpx, urllib3 and
#: websockets (curl's 1080 is a SOCKS habit that surprises HTTP users).
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Lower case first, as curl and urllib do; an empty variable counts as unset.
_PROXY_VARIABLES: Final = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_NO_PROXY_VARIABLES: Final = ("no_proxy", "NO_PROXY")
_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_ENCODE_HINT: Final = "percent-encode '/', '?', '#' and '@' in the user name and password"


@dataclass(frozen=True, repr=False)
class ProxyURL:
    """A validated ``http://`` or ``https://`` proxy URL.

    ``repr()`` and ``str()`` show ``scheme://user:***@host:port``: the password never.

    Attributes:
        scheme: ``"http"`` or ``"https"`` (TLS to the proxy).
        host: the host as sent on the wire (IDNA, lower case; IPv6 without brackets).
        port: the proxy's port.
        username: the percent-decoded user name, or None.
        password: the percent-decoded password, or None.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in DEFAULT_PORTS:
            raise UsageError(f"proxy scheme {self.scheme!r} is not supported: use http or https")
        if "%" in self.host and ":" in self.host:
            raise UsageError(
                f"proxy host {self.host!r} has an IPv6 zone ID: a link-local proxy address "
                "is not supported; use its global or unique-local address"
            )
        authority = format_authority(self.host, self.port)
        object.__setattr__(self, "host", authority.rpartition(":")[0].strip("[]"))

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 bracketed), safe for error messages."""
        return format_authority(self.host, self.port)

    def __str__(self) -> str:
        userinfo = ""
        if self.username is not None:
            secret = ":***" if self.password is not None else ""
            userinfo = f"{quote(self.username, safe='')}{secret}@"
        return f"{self.scheme}://{userinfo}{self.address}"

    def __repr__(self) -> str:
        return f"ProxyURL({str(self)!r})"


def _decode_userinfo(text: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        pass
    # Raised outside the except block: the decode error shows the secret's bytes, and even
    # `from None` would keep it as __context__.
    raise UsageError(f"the proxy URL's {what} is not percent-encoded UTF-8")


def parse_proxy_url(url: str) -> ProxyURL:
    """Parse ``http[s]://[user[:password]@]host[:port][/...]`` (a path, query or
    fragment is ignored unless it holds an ``@``).

    Error messages never contain the URL's user name or password.

    Args:
        url: the proxy URL; userinfo is percent-decoded as UTF-8.

    Returns:
        The parsed URL; the port defaults to 80 for http and 443 for https.

    Raises:
        UsageError: the scheme is not http or https, the URL has a space or control
            character, an ``@`` after its authority, no host, an invalid host or port,
            or userinfo that is not percent-encoded UTF-8.
    """
    if not isinstance(url, str):
        raise UsageError(f"proxy URL must be a str, not {type(url).__name__}")
    for index, char in enumerate(url):
        if char <= " " or char == "\x7f":
            raise UsageError(f"proxy URL contains a space or control character at index {index}")
    match = _SCHEME_RE.match(url)
    if match is None:
        raise UsageError("proxy URL must start with http:// or https://")
    scheme = match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"proxy scheme {scheme!r} is not supported: use http or https")
    rest = url[match.end() :]
    end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        # An unencoded '/', '?' or '#' in the password put the rest of it, the '@' and the
        # host out here: refused, and never echoed. A path, query or fragment without an
        # '@' means nothing to a CONNECT proxy and is ignored, as curl and httpx do
        # (HTTPS_PROXY=http://proxy:3128/ with more after the slash is common).
        part = "fragment" if "#" in tail else "query" if "?" in tail else "path"
        raise UsageError(f"proxy URL has an '@' in its {part} ({_ENCODE_HINT})")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        username = _decode_userinfo(raw_user, "user name")
        if colon:
            password = _decode_userinfo(raw_password, "password")
    bracketed = hostport.startswith("[")
    if bracketed:
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise UsageError("proxy URL has '[' without ']' around its IPv6 host")
        if after and not after.startswith(":"):
            raise UsageError("proxy URL has characters between ']' and the port")
        port_text = after[1:]
    elif hostport.count(":") > 1:
        raise UsageError("an IPv6 proxy host must be in brackets, like http://[::1]:3128")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise UsageError(f"proxy URL has no host ({_ENCODE_HINT})")
    port = DEFAULT_PORTS[scheme]
    if port_text:
        # The port text is never echoed: without an '@' it may be a password.
        if not port_text.isascii() or not port_text.isdigit():
            # Not digits: perhaps a password whose user name and '@' went before a '/'.
            raise UsageError(f"proxy URL port is not a number in 1-65535 ({_ENCODE_HINT})")
        if len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
            raise UsageError("proxy URL port is not a number in 1-65535")
        port = int(port_text)
    return ProxyURL(scheme, f"[{host}]" if bracketed else host, port, username, password)


def _first_set(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def proxy_from_env(host: str, port: int, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the proxy URL the environment selects for an ``https`` target.

    ``https_proxy``, ``HTTPS_PROXY``, ``all_proxy``, ``ALL_PROXY``: the first one set and
    non-empty wins (lower case first, like curl and urllib). A value without ``://`` gets
    ``http://`` in front, as curl does. ``no_proxy``/``NO_PROXY`` (lower case first) can
    exclude the target, see :func:`no_proxy_matches`. The URL is returned unparsed; give it
    to :func:`parse_proxy_url`.

    Args:
        host: the target host.
        port: the target port.
        environ: the variables to read; default ``os.environ``.

    Returns:
        The proxy URL, or None for a direct connection.

    Raises:
        UsageError: ``host`` or ``port`` is not valid (checked whether or not a proxy
            variable is set, so a bad argument is not noticed only where one is).
    """
    format_authority(host, port)
    env = os.environ if environ is None else environ
    proxy = _first_set(env, _PROXY_VARIABLES)
    if proxy is None:
        return None
    no_proxy = _first_set(env, _NO_PROXY_VARIABLES)
    if no_proxy is not None and no_proxy_matches(host, port, no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _normalise(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not name.isascii():
        try:
            name = idna_host(name).lower()
        except UnicodeError:
            pass  # compared as given: an invalid IDN matches only itself
    return name


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_entry(entry: str) -> tuple[str, int | None] | None:
    if entry.startswith("["):
        name, bracket, rest = entry[1:].partition("]")
        if not bracket:
            return None
        if rest.startswith("/"):  # [::1]/128
            name, rest = name + rest, ""
    elif entry.count(":") > 1:  # a bare IPv6 address or range: it has no port
        return entry, None
    else:
        name, colon, rest = entry.partition(":")
        rest = colon + rest
    if not rest:
        return name, None
    if re.fullmatch(r":[0-9]{1,5}", rest) is None:
        return None
    return name, int(rest[1:])


def no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """Whether a ``NO_PROXY`` value excludes ``host:port`` from proxying.

    Entries are separated by commas or whitespace and compared case-insensitively, a
    trailing dot ignored. ``*`` matches everything. ``example.com``, ``.example.com`` and
    ``*.example.com`` match ``example.com`` and its subdomains (not ``badexample.com``).
    IPv4 and IPv6 literals (IPv6 with or without brackets) match the same address; CIDR
    ranges (``10.0.0.0/8``, ``::1/128``) match IP-literal hosts inside them; names are
    never resolved. ``entry:port`` (``[v6]:port``) matches only that port. Malformed
    entries are ignored.

    Args:
        host: the target host (an IPv6 literal may be bracketed).
        port: the target port.
        no_proxy: the variable's value.

    Returns:
        True when some entry matches.
    """
    target = _normalise(host.strip().strip("[]"))
    target_ip = _ip(target)
    for value, only_port in _no_proxy_entries(no_proxy):
        if only_port is not None and only_port != port:
            continue
        if value is None:  # *
            return True
        if isinstance(value, str):  # a domain suffix: names only, never resolved
            if target_ip is None and (target == value or target.endswith("." + value)):
                return True
        elif isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            same_family = target_ip is not None and target_ip.version == value.version
            if same_family and target_ip in value:
                return True
        elif value == target_ip:
            return True
    return False


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NoProxyEntry = tuple[str | _Address | _Network | None, int | None]


@functools.lru_cache(maxsize=16)
def _no_proxy_entries(no_proxy: str) -> tuple[_NoProxyEntry, ...]:
    """A ``NO_PROXY`` value's entries, parsed once (tunnels made per request read the
    same value again and again): ``(what, port or None)`` where ``what`` is ``None`` for
    ``*``, a network, an address or a domain suffix; malformed entries are left out."""
    entries: list[_NoProxyEntry] = []
    for entry in re.split(r"[\s,]+", no_proxy):
        if entry == "*":
            entries.append((None, None))
            continue
        split = _split_entry(entry) if entry else None
        if split is None:
            continue
        name, only_port = _normalise(split[0]), split[1]
        if "/" in name:
            try:
                entries.append((ipaddress.ip_network(name, strict=False), only_port))
            except ValueError:
                pass
            continue
        address = _ip(name)
        if address is not None:
            entries.append((address, only_port))
            continue
        suffix = name.removeprefix("*").lstrip(".")
        if suffix:
            entries.append((suffix, only_port))
    return tuple(entries)

"""Sans-IO proxy authentication: ``Proxy-Authenticate`` challenges and their answers.

Basic (RFC 7617) and Digest (RFC 7616: MD5, MD5-sess, SHA-256, SHA-256-sess, ``qop=auth``
and the RFC 2069 form without ``qop``). The functions return the ``Proxy-Authorization``
header *value*; :func:`janusnet._connect.build_connect_request` sends it. Credentials are
never part of an error message.

Imports are limited to the standard library and ``_exceptions`` (a test checks it).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ._exceptions import UsageError

__all__ = [
    "Challenge",
    "basic_proxy_authorization",
    "choose_challenge",
    "digest_proxy_authorization",
    "digest_supported",
    "parse_challenges",
]

# RFC 7616 algorithm name -> hashlib name. SHA-512-256 is left out: hashlib only has it
# when OpenSSL does, and proxies offer SHA-256 or MD5 in practice (squid: MD5 only).
_DIGEST_HASHES: Final = {"md5": "md5", "sha-256": "sha256"}
#: nc is sent as 8 hex digits (RFC 7616 §3.4), so it cannot exceed 0xFFFFFFFF.
MAX_NONCE_COUNT: Final = 0xFFFFFFFF
# Preference when a proxy offers several challenges: strongest first.
_PREFERENCE: Final = ("sha-256", "sha-256-sess", "md5", "md5-sess")

_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Unrolled ("normal* (special normal*)*"): an alternation repeated once per character
# makes the regex engine keep ~190 bytes of backtracking state per character (13 MB for
# one 64 KiB Proxy-Authenticate value).
_QUOTED_STRING: Final = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCHEME_RE: Final = re.compile(_TCHARS)
_PARAM_RE: Final = re.compile(rf"({_TCHARS})[ \t]*=[ \t]*({_TCHARS}|{_QUOTED_STRING})")
_TOKEN68_RE: Final = re.compile(r"([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|\Z)")
_ESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True)
class Challenge:
    """One challenge from a ``Proxy-Authenticate`` header (RFC 9110 §11.6.1).

    Attributes:
        scheme: the auth scheme, lower-cased (``"basic"``, ``"digest"``...).
        params: auth-params, names lower-cased, quoted-string values unescaped.
        token68: the token68 form some schemes use instead of params (``Negotiate``).
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def parse_challenges(values: Sequence[str]) -> list[Challenge]:
    """Parse every challenge in the given ``Proxy-Authenticate`` header values.

    One value may hold several challenges (``Basic realm="a", Digest realm="b", ...``).
    Parsing is lenient: text that fits no rule is skipped up to the next comma, so this
    never raises on what a proxy sends.

    Args:
        values: the header values, in order.

    Returns:
        The challenges, in order.
    """
    challenges: list[Challenge] = []
    for text in values:
        current: Challenge | None = None
        pos = 0
        while True:
            pos = _skip(text, pos, " \t,")
            if pos >= len(text):
                break
            param = _PARAM_RE.match(text, pos)
            if current is not None and param is not None:
                name, value = param.group(1).lower(), param.group(2)
                if value.startswith('"'):
                    value = _ESCAPE_RE.sub(r"\1", value[1:-1])
                current.params.setdefault(name, value)
                pos = param.end()
                continue
            scheme = _SCHEME_RE.match(text, pos)
            if scheme is None:  # stray character: skip to the next list element
                comma = text.find(",", pos)
                if comma < 0:
                    break
                pos = comma + 1
                continue
            pos = scheme.end()
            token68 = None
            if pos < len(text) and text[pos] in " \t":
                pos = _skip(text, pos, " \t")
                found = _TOKEN68_RE.match(text, pos)
                if found is not None and _PARAM_RE.match(text, pos) is None:
                    token68 = found.group(1)
                    pos = found.end()
            current = Challenge(scheme.group().lower(), {}, token68)
            challenges.append(current)
    return challenges


def basic_proxy_authorization(username: str, password: str) -> bytes:
    """Build a ``Proxy-Authorization: Basic`` value (RFC 7617, UTF-8).

    Args:
        username: the user name; it cannot contain ``:``.
        password: the password.

    Returns:
        ``b"Basic " + base64(username:password)``.

    Raises:
        UsageError: the user name contains ``:`` (Basic cannot represent it), either
            part contains a control character, or cannot be encoded as UTF-8.
    """
    if ":" in username:
        raise UsageError("a Basic user name cannot contain ':'")
    # RFC 7617 §2: neither part may contain a control character. A CR/LF/NUL here is an
    # injection attempt or a password read with its line end: refuse it before sending.
    for what, text in (("user name", username), ("password", password)):
        if any(ch < " " or ch == "\x7f" for ch in text):
            raise UsageError(f"the proxy {what} contains a control character")
    try:
        raw: bytes | None = f"{username}:{password}".encode()
    except UnicodeEncodeError:  # it holds the secret: raise outside, so not as __context__
        raw = None
    if raw is None:
        raise UsageError("the user name or password is not valid Unicode text")
    return b"Basic " + base64.b64encode(raw)


def _algorithm(challenge: Challenge) -> str:
    return challenge.params.get("algorithm", "MD5").lower()


def digest_supported(challenge: Challenge) -> bool:
    """Whether :func:`digest_proxy_authorization` can answer ``challenge``.

    Args:
        challenge: a parsed challenge.

    Returns:
        True for a Digest challenge with a realm, a nonce, a supported algorithm and
        either no ``qop`` or one that includes ``auth`` or ``auth-int``, whose echoed
        parameters (realm,
        nonce, opaque, algorithm) hold no control characters and fit in latin-1: a proxy
        cannot make janusnet send a header it would refuse to send.
    """
    qops = _qop_options(challenge)
    params = challenge.params
    return (
        challenge.scheme == "digest"
        and "realm" in params
        and "nonce" in params
        and _algorithm(challenge).removesuffix("-sess") in _DIGEST_HASHES
        and (not qops or "auth" in qops or "auth-int" in qops)
        and all(_echoable(params[name]) for name in _ECHOED if name in params)
    )


def choose_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """Pick the strongest challenge janusnet can answer: Digest (SHA-256, then MD5), then Basic.

    Args:
        challenges: as returned by :func:`parse_challenges`.

    Returns:
        The chosen challenge, or None when none can be answered.
    """
    digests = [c for c in challenges if digest_supported(c)]
    if digests:
        return min(digests, key=lambda c: _PREFERENCE.index(_algorithm(c)))
    return next((c for c in challenges if c.scheme == "basic"), None)


def _qop_options(challenge: Challenge) -> list[str]:
    return [q.strip().lower() for q in challenge.params.get("qop", "").split(",") if q.strip()]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Challenge parameters that go back to the proxy in the answer.
_ECHOED: Final = ("realm", "nonce", "opaque", "algorithm")


#: C0 (TAB included), DEL and C1: refused in the text janusnet puts into a Digest answer.
_CONTROL_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
#: C0 and DEL: refused in what the proxy sent and the answer echoes. Not 0x80-0x9F: those
#: are the challenge's bytes as latin-1 text, and in a UTF-8 realm ("Proxy \u20ac" is
#: E2 82 AC) they are continuation bytes (obs-text on the wire, RFC 9110 §5.6.4).
_WIRE_CONTROL_RE: Final = re.compile("[\x00-\x1f\x7f]")


def _has_control(value: str) -> bool:
    return _CONTROL_RE.search(value) is not None


def _echoable(value: str) -> bool:
    return _WIRE_CONTROL_RE.search(value) is None and (value.isascii() or max(value) <= "\xff")


def _check_text(value: str, what: str) -> None:
    if _has_control(value):
        raise UsageError(f"the Digest {what} contains a control character")


def digest_proxy_authorization(
    challenge: Challenge,
    username: str,
    password: str,
    *,
    method: str,
    uri: str,
    cnonce: str | None = None,
    nc: int = 1,
) -> bytes:
    """Answer a Digest challenge (RFC 7616; RFC 2069 form when the proxy sends no ``qop``).

    The user name and password are hashed as UTF-8; the challenge's realm and nonce as
    the bytes the proxy sent (its parameters are those bytes as latin-1 text, as
    :attr:`ProxyReply.headers` gives them), so a UTF-8 realm is hashed as UTF-8, as curl
    does. A non-ASCII user name goes as its UTF-8 bytes inside
    the quoted ``username`` (``obs-text`` in the quoted-string grammar), as curl and the
    browsers send it: squid, for one, accepts that and refuses the ``username*``
    extended form (RFC 7616 §3.4.4 makes that form optional, for names a quoted string
    cannot hold, and janusnet refuses those: control characters). ``opaque`` is echoed.
    ``userhash`` is not used (it is optional).
    Challenges this cannot answer raise :class:`UsageError`; check them first with
    :func:`digest_supported` (or pick one with :func:`choose_challenge`).

    Args:
        challenge: a Digest challenge from :func:`parse_challenges`.
        username: the user name.
        password: the password.
        method: the request method (``"CONNECT"``).
        uri: the request-target (the authority for ``CONNECT``).
        cnonce: the client nonce; default ``secrets.token_hex(16)``.
        nc: the nonce count, 1 for the first request with this nonce.

    Returns:
        The ``Proxy-Authorization`` value.

    Raises:
        UsageError: the challenge is not Digest, lacks realm or nonce, uses an unsupported
            algorithm or a ``qop`` other than ``auth`` and ``auth-int``; ``nc`` is out
            of range; or a user name,
            method, uri or cnonce contains a control character.
    """
    if challenge.scheme != "digest":
        raise UsageError(f"not a Digest challenge: {challenge.scheme!r}")
    params = challenge.params
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or nonce is None:
        raise UsageError("the Digest challenge has no realm or no nonce")
    algorithm = _algorithm(challenge)
    hash_name = _DIGEST_HASHES.get(algorithm.removesuffix("-sess"))
    if hash_name is None:
        raise UsageError(f"unsupported Digest algorithm {params['algorithm']!r}")
    qops = _qop_options(challenge)
    # auth when offered; auth-int covers the body too, and a CONNECT has none (RFC 7616
    # §3.4.3: A2 then ends with the hash of the empty body), as curl answers it.
    qop = "auth" if "auth" in qops else "auth-int" if "auth-int" in qops else None
    if qops and qop is None:
        raise UsageError(
            f"unsupported Digest qop {params['qop']!r}: 'auth' and 'auth-int' are supported"
        )
    for name in _ECHOED:
        if name in params and not _echoable(params[name]):
            raise UsageError(f"the Digest challenge's {name} cannot be echoed in a header")
    if isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= MAX_NONCE_COUNT:
        raise UsageError("nc must be an int in 1-0xFFFFFFFF")
    if cnonce is None:
        cnonce = secrets.token_hex(16)
    for value, what in (
        (username, "user name"),
        (method, "method"),
        (uri, "uri"),
        (cnonce, "cnonce"),
    ):
        _check_text(value, what)

    try:
        secret: tuple[bytes, bytes] | None = (username.encode(), password.encode())
    except UnicodeEncodeError:  # it holds the secret: raise outside, not as __context__
        secret = None
    if secret is None:
        raise UsageError("the user name or password is not valid Unicode text")
    wire_realm, wire_nonce = realm.encode("latin-1"), nonce.encode("latin-1")  # (echoable)

    def digest(*fields: bytes | str) -> str:
        data = b":".join(f if isinstance(f, bytes) else f.encode() for f in fields)
        return hashlib.new(hash_name, data).hexdigest()

    ha1 = digest(secret[0], wire_realm, secret[1])
    if algorithm.endswith("-sess"):
        ha1 = digest(ha1, wire_nonce, cnonce)
    ha2 = digest(method, uri, digest(b"")) if qop == "auth-int" else digest(method, uri)
    nc_text = f"{nc:08x}"
    if qop:
        response = digest(ha1, wire_nonce, nc_text, cnonce, qop, ha2)
    else:
        response = digest(ha1, wire_nonce, ha2)

    # The header is built as latin-1 text: a UTF-8 byte per character.
    parts = [f"username={_quoted(username.encode().decode('latin-1'))}"]
    parts += [f"realm={_quoted(realm)}", f"uri={_quoted(uri)}"]
    if "algorithm" in params:
        parts.append(f"algorithm={params['algorithm']}")
    parts.append(f"nonce={_quoted(nonce)}")
    if qop:
        parts += [f"nc={nc_text}", f"cnonce={_quoted(cnonce)}", f"qop={qop}"]
    elif algorithm.endswith("-sess"):
        parts.append(f"cnonce={_quoted(cnonce)}")
    parts.append(f"response={_quoted(response)}")
    if "opaque" in params:
        parts.append(f"opaque={_quoted(params['opaque'])}")
    try:
        answer: bytes | None = ("Digest " + ", ".join(parts)).encode("latin-1")
    except UnicodeEncodeError:  # it holds the user name: raise outside, not as __context__
        answer = None
    if answer is None:
        raise UsageError("the Digest challenge holds characters outside latin-1")
    return answer

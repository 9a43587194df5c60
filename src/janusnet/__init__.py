"""janusnet: reach a TLS server through an HTTP proxy from async code.

Connect, speak plain text (an HTTP ``CONNECT``, or a STARTTLS-style line protocol), then
upgrade the live connection to TLS with ``ssl_on()`` — the Janus Sockets ``SSLOn`` model,
on anyio, so it runs under asyncio and trio.
"""

from __future__ import annotations

import inspect as _inspect
import logging as _logging
import typing as _typing

from ._codecs import register as _register_codecs
from ._connect import ProxyReply
from ._exceptions import (
    AccessDeniedError,
    BusyError,
    ConnectError,
    EncodeError,
    HandshakeError,
    IncompleteReadError,
    JanusnetError,
    NotSSLPortError,
    PendingDataError,
    PortLimitError,
    ProxyAuthenticationRequired,
    ProxyProtocolError,
    ProxyRefusedError,
    ReturnCode,
    SocketClosedError,
    SocketResetError,
    SSLOnError,
    SSLOnOtherError,
    UsageError,
)
from ._group import OPEN_STATES, SocketGroup
from ._ports import AccessRule, ClientPort, TLSMode, allow, deny
from ._proxyauth import ProxyAuth
from ._scan import Parsed, TokenSet
from ._socket import Socket, SocketState
from ._tls import CertInfo, TLSInfo, create_ssl_context, default_ssl_context
from ._tunnel import ProxyTunnel

__version__ = "0.1.0.dev0"

_register_codecs()

# A library logs, the application decides where records go (no "lastResort" output).
_logging.getLogger("janusnet").addHandler(_logging.NullHandler())

__all__ = [
    "OPEN_STATES",
    "AccessDeniedError",
    "AccessRule",
    "BusyError",
    "CertInfo",
    "ClientPort",
    "ConnectError",
    "EncodeError",
    "HandshakeError",
    "IncompleteReadError",
    "JanusnetError",
    "NotSSLPortError",
    "Parsed",
    "PendingDataError",
    "PortLimitError",
    "ProxyAuth",
    "ProxyAuthenticationRequired",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxyReply",
    "ProxyTunnel",
    "ReturnCode",
    "SSLOnError",
    "SSLOnOtherError",
    "Socket",
    "SocketClosedError",
    "SocketGroup",
    "SocketResetError",
    "SocketState",
    "TLSInfo",
    "TLSMode",
    "TokenSet",
    "UsageError",
    "__version__",
    "allow",
    "create_ssl_context",
    "default_ssl_context",
    "deny",
]

# Tracebacks, reprs and help() name the public path (janusnet.HandshakeError,
# janusnet.ReturnCode), not the private module that defines the class; pickling finds
# the class there too. typing.get_type_hints() reads a class's string annotations in its
# __module__'s namespace, where the defining module's names (ssl, IPNetwork) are not:
# they are evaluated first, where they were written.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _own = _inspect.get_annotations(_obj)
        if _own:
            _hints = _typing.get_type_hints(_obj)
            _obj.__annotations__ = {_key: _hints[_key] for _key in _own}
        _obj.__module__ = __name__
del _name, _obj, _own

"""In-process servers for testing proxied TLS offline: a TLS origin and a CONNECT proxy.

Both run on their own thread and asyncio loop and are started and stopped synchronously, so
sync tests, pytest-asyncio tests and anyio tests (asyncio or trio) can all use them::

    from janusnet.testing import ConnectProxy, TLSOrigin

    with TLSOrigin() as origin, ConnectProxy(behaviour="extra_bytes") as proxy:
        ...  # CONNECT origin.authority through proxy.url

``trustme`` (the ``testing`` extra) is imported only when a ``TLSOrigin`` is created.
"""

from __future__ import annotations

from ._origin import OriginMode, TLSOrigin
from ._proxy import ConnectProxy, ProxyBehaviour, ProxyLogRecord
from ._servers import byte_pattern

__all__ = [
    "ConnectProxy",
    "OriginMode",
    "ProxyBehaviour",
    "ProxyLogRecord",
    "TLSOrigin",
    "byte_pattern",
]

# Reprs, tracebacks and type checkers name the public path (janusnet.testing.TLSOrigin),
# not the private module that defines the class, as janusnet itself does.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj

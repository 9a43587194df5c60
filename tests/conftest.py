"""Shared fixtures for the janusnet test-suite."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme

import realproxies
from realproxies import RealProxy


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying why, on a machine where ``localhost`` is not 127.0.0.1: the
    suite's servers listen there and many tests connect to ``localhost`` (such a host
    would otherwise give hundreds of connection failures)."""
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError as exc:
        found = f"does not resolve ({exc})"
    else:
        addresses = sorted({str(info[4][0]) for info in infos})
        if "127.0.0.1" in addresses:
            return
        found = "resolves to " + ", ".join(addresses)
    pytest.exit(
        f"the janusnet suite needs 'localhost' to include 127.0.0.1, but here it {found}: "
        "add '127.0.0.1 localhost' to /etc/hosts",
        returncode=4,
    )


# -- real proxies (squid, tinyproxy) ----------------------------------------------------------
# Started once per session, on first use, on free loopback ports; stopped at the end. When a
# binary is missing they skip, unless JANUSNET_REQUIRE_REAL_PROXIES is set (CI): then they fail.
# Mark the tests that use them with @pytest.mark.realproxy.


@pytest.fixture(scope="session")
def squid() -> Iterator[RealProxy]:
    """squid without authentication; CONNECT to loopback only, port 9 gets a 403."""
    with realproxies.launch_squid() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def squid_basic() -> Iterator[RealProxy]:
    """squid requiring Basic auth: ``alice`` / ``s3:cr3t@x`` (``.username``, ``.password``)."""
    with realproxies.launch_squid("basic") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def squid_digest() -> Iterator[RealProxy]:
    """squid requiring Digest auth (realm ``janusnet``): ``alice`` / ``s3:cr3t@x``."""
    with realproxies.launch_squid("digest") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def squid_ntlm() -> Iterator[RealProxy]:
    """squid requiring NTLM (``ntlm_fake_auth``: any user whose messages are well formed)."""
    with realproxies.launch_squid("ntlm") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def tinyproxy() -> Iterator[RealProxy]:
    """tinyproxy without authentication, CONNECT allowed to every port."""
    with realproxies.launch_tinyproxy() as proxy:
        yield proxy


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every anyio test in this suite runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throw-away CA for the loopback TLS peers of a test module."""
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for localhost, 127.0.0.1 and ::1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    return context

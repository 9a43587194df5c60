"""A user's tests for ``my_client``, written with janusnet's pytest fixtures.

Nothing to set up: installing janusnet registers the plugin, and the fixtures start a local
CONNECT proxy and a local HTTPS server (certificate from a throw-away CA) on loopback.

    python -m pytest examples/user_test_suite -p no:cacheprovider

The tests run on asyncio and on trio (anyio's plugin runs each ``anyio`` test on both);
pytest-asyncio users write ``@pytest.mark.asyncio`` instead, with the same fixtures.
"""

from __future__ import annotations

import pytest
from my_client import fetch

import janusnet

pytestmark = pytest.mark.anyio


@pytest.fixture
def url(janusnet_tls_server) -> str:
    return f"https://localhost:{janusnet_tls_server.port}/orders"


async def test_fetch_goes_through_the_proxy(url, janusnet_proxy, janusnet_client_port):
    response = await fetch(url, proxy=janusnet_proxy.url, client_port=janusnet_client_port)

    assert response.status == 200
    assert response.body == b"hello from janusnet origin: GET /orders\n"
    [record] = janusnet_proxy.log
    assert record.method == "CONNECT"
    assert record.target == url.split("/")[2]


@pytest.mark.janusnet_proxy(auth=("svc-orders", "p@ss:word"))
async def test_fetch_sends_proxy_credentials(url, janusnet_proxy, janusnet_client_port):
    proxy_url = janusnet_proxy.url_with_auth("svc-orders", "p@ss:word")
    response = await fetch(url, proxy=proxy_url, client_port=janusnet_client_port)
    assert response.status == 200
    with pytest.raises(janusnet.ProxyAuthenticationRequired):
        await fetch(url, proxy=janusnet_proxy.url, client_port=janusnet_client_port)


@pytest.mark.janusnet_proxy(behaviour="extra_bytes")
async def test_fetch_refuses_bytes_injected_before_tls(url, janusnet_proxy, janusnet_client_port):
    with pytest.raises(janusnet.PendingDataError):
        await fetch(url, proxy=janusnet_proxy.url, client_port=janusnet_client_port)


@pytest.mark.janusnet_proxy(behaviour="never_answer")
async def test_fetch_gives_up_on_a_silent_proxy(url, janusnet_proxy, janusnet_client_port):
    with pytest.raises(TimeoutError):
        await fetch(url, proxy=janusnet_proxy.url, client_port=janusnet_client_port, timeout=0.2)


async def test_fetch_checks_the_certificate(url, janusnet_proxy):
    # No client port: janusnet's default trust (certifi) does not know the test CA.
    with pytest.raises(janusnet.HandshakeError):
        await fetch(url, proxy=janusnet_proxy.url)

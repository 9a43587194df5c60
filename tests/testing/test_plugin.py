"""The pytest plugin, tested the way a user meets it: a test module in a fresh directory, run
by a *subprocess* pytest that loads the plugin through its ``pytest11`` entry point.

The subprocess does not read this project's ``pyproject.toml``, so each run gets its own
``pytest.ini`` with ``filterwarnings = error`` (a leaked socket still fails there),
``asyncio_mode = strict`` and ``--strict-markers`` (the plugin must register its markers).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from loopback import has_ipv6_loopback

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = --strict-markers -p no:cacheprovider
"""

# Each subprocess run must finish well within this (seconds); it usually takes about two.
RUN_TIMEOUT = 60.0

HAPPY_PATH = r"""
import ssl

import pytest
import trustme

import janusnet


async def fetch(proxy_url, server, client_port, path="/plugin"):
    tunnel = janusnet.ProxyTunnel(proxy_url, client_port=client_port, timeout=10)
    async with await tunnel.open("localhost", server.port) as sock:
        assert sock.proxy_reply.status == 200
        await sock.ssl_on()
        assert sock.tls.server_hostname == "localhost"
        await sock.send_line(f"GET {path} HTTP/1.1")
        await sock.send_line("Host: localhost")
        await sock.send_line("Connection: close")
        await sock.send_line()
        lines = []
        while (line := await sock.recv_parsed()).index:
            lines.append(line.data)
        lines.append(line.data)
    return lines


def check(lines, path="/plugin"):
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines[-1] == f"hello from janusnet origin: GET {path}\n".encode()


def check_fixtures(ca, server, proxy, client_port):
    assert isinstance(ca, trustme.CA)
    assert server.ca is ca
    assert isinstance(client_port, janusnet.ClientPort)
    assert client_port.tls is janusnet.TLSMode.OPTIONAL
    assert isinstance(client_port.ssl_context, ssl.SSLContext)
    assert client_port.ssl_context.cert_store_stats()["x509_ca"] == 1  # the test CA only
    assert proxy.log == []
    assert proxy.behaviour.value == "normal"
    assert server.host == "127.0.0.1" and server.address == (server.host, server.port)


@pytest.mark.asyncio
async def test_pytest_asyncio(janusnet_ca, janusnet_tls_server, janusnet_proxy,
                              janusnet_client_port):
    check_fixtures(janusnet_ca, janusnet_tls_server, janusnet_proxy, janusnet_client_port)
    check(await fetch(janusnet_proxy.url, janusnet_tls_server, janusnet_client_port))
    [record] = janusnet_proxy.log
    assert record.target == f"localhost:{janusnet_tls_server.port}"
    assert record.status == 200


class TestAnyioTrio:
    @pytest.fixture
    def anyio_backend(self):
        return "trio"

    @pytest.mark.anyio
    async def test_anyio_trio(self, anyio_backend, janusnet_ca, janusnet_tls_server,
                              janusnet_proxy, janusnet_client_port):
        import trio  # really on trio
        trio.lowlevel.current_task()
        check_fixtures(janusnet_ca, janusnet_tls_server, janusnet_proxy, janusnet_client_port)
        check(await fetch(janusnet_proxy.url, janusnet_tls_server, janusnet_client_port, "/t"),
              "/t")
        assert len(janusnet_proxy.log) == 1


@pytest.mark.janusnet_proxy(auth=("alice", "pa:ss@w%rd"))
@pytest.mark.anyio
async def test_marker_auth(anyio_backend, janusnet_tls_server, janusnet_proxy,
                           janusnet_client_port):
    url = janusnet_proxy.url_with_auth("alice", "pa:ss@w%rd")
    check(await fetch(url, janusnet_tls_server, janusnet_client_port))
    assert janusnet_proxy.log[0].proxy_authorization


@pytest.mark.anyio
async def test_after_marker_nothing_leaked(anyio_backend, janusnet_tls_server, janusnet_proxy,
                                           janusnet_client_port):
    assert janusnet_proxy.auth is None
    janusnet_proxy.behaviour = "reset"  # changed in the test: reset after it
    janusnet_tls_server.mode = "stall"


@pytest.mark.anyio
async def test_assignments_did_not_leak(anyio_backend, janusnet_tls_server, janusnet_proxy,
                                        janusnet_client_port):
    assert janusnet_proxy.behaviour.value == "normal"
    assert janusnet_tls_server.mode.value == "tls"
    check(await fetch(janusnet_proxy.url, janusnet_tls_server, janusnet_client_port))


@pytest.mark.anyio
async def test_proxy_factory(anyio_backend, janusnet_proxy_factory, janusnet_tls_server,
                             janusnet_client_port):
    https_proxy = janusnet_proxy_factory(ssl_context=janusnet_tls_server.server_context)
    assert https_proxy.url.startswith("https://127.0.0.1:")
    tunnel = janusnet.ProxyTunnel(
        https_proxy.url,
        client_port=janusnet_client_port,
        proxy_ssl_context=janusnet_client_port.ssl_context,
    )
    async with await tunnel.open_tls("localhost", janusnet_tls_server.port) as sock:
        assert sock.tls is not None
    assert https_proxy.log[0].status == 200


@pytest.mark.janusnet_tls_server(mode="starttls")
@pytest.mark.anyio
async def test_marker_starttls(anyio_backend, janusnet_tls_server, janusnet_client_port):
    sock = await janusnet.Socket.connect(*janusnet_tls_server.address,
                                         client_port=janusnet_client_port)
    async with sock:
        assert (await sock.recv_parsed()).data == b"220 ready"
        await sock.send_line("STARTTLS")
        assert (await sock.recv_parsed()).data == b"220 go ahead"
        await sock.ssl_on(server_hostname="localhost")
        await sock.send_line("ping")
        assert (await sock.recv_parsed()).data == b"ping"


def test_sync_client(janusnet_tls_server, janusnet_proxy):
    import socket
    with socket.create_connection(janusnet_proxy.address, timeout=5) as raw:
        raw.sendall(f"CONNECT {janusnet_tls_server.authority} HTTP/1.1\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = janusnet_tls_server.client_context()
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"echo")
            assert tls.recv(4) == b"echo"
"""

MISBEHAVIOURS = """
import pytest

import janusnet

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def tunnel(proxy, client_port, **kwargs):
    return janusnet.ProxyTunnel(proxy.url, client_port=client_port, **kwargs)


@pytest.mark.janusnet_proxy(behaviour="extra_bytes")
async def test_extra_bytes(anyio_backend, janusnet_proxy, janusnet_tls_server,
                           janusnet_client_port):
    sock = await tunnel(janusnet_proxy, janusnet_client_port).open(
        "localhost", janusnet_tls_server.port)
    async with sock:
        with pytest.raises(janusnet.PendingDataError) as info:
            await sock.ssl_on()
        assert info.value.code == janusnet.ReturnCode.PENDING_DATA
        assert await sock.recv() == b"INJECTED"  # still usable: the caller can drain it


@pytest.mark.parametrize("behaviour", ["endless_head", "malformed", "close_mid_head", "reset"])
async def test_protocol_errors(anyio_backend, behaviour, janusnet_proxy, janusnet_tls_server,
                               janusnet_client_port):
    janusnet_proxy.behaviour = behaviour
    with pytest.raises(janusnet.ProxyProtocolError):
        await tunnel(janusnet_proxy, janusnet_client_port).open(
            "localhost", janusnet_tls_server.port)


@pytest.mark.janusnet_proxy(behaviour="endless_head")
async def test_endless_head_by_marker(anyio_backend, janusnet_proxy, janusnet_tls_server,
                                      janusnet_client_port):
    with pytest.raises(janusnet.ProxyProtocolError):
        await tunnel(janusnet_proxy, janusnet_client_port, max_head_bytes=4096).open(
            "localhost", janusnet_tls_server.port)


@pytest.mark.janusnet_proxy(behaviour="never_answer")
async def test_never_answer(anyio_backend, janusnet_proxy, janusnet_tls_server,
                            janusnet_client_port):
    with pytest.raises(TimeoutError):
        await tunnel(janusnet_proxy, janusnet_client_port, timeout=0.3).open(
            "localhost", janusnet_tls_server.port)


@pytest.mark.janusnet_proxy(auth=("alice", "s3:cr3t@x"))
async def test_auth_required(anyio_backend, janusnet_proxy, janusnet_tls_server,
                             janusnet_client_port):
    with pytest.raises(janusnet.ProxyAuthenticationRequired) as info:
        await tunnel(janusnet_proxy, janusnet_client_port).open(
            "localhost", janusnet_tls_server.port)
    assert info.value.status == 407
    assert info.value.challenges == ('Basic realm="janusnet"',)
    with pytest.raises(janusnet.ProxyAuthenticationRequired):
        await tunnel(janusnet_proxy, janusnet_client_port, auth=("alice", "wrong")).open(
            "localhost", janusnet_tls_server.port)
    sock = await tunnel(janusnet_proxy, janusnet_client_port, auth=("alice", "s3:cr3t@x")).open(
        "localhost", janusnet_tls_server.port)
    async with sock:
        await sock.ssl_on()


@pytest.mark.janusnet_proxy(behaviour="auth_with_body")
async def test_auth_with_body(anyio_backend, janusnet_proxy, janusnet_tls_server,
                              janusnet_client_port):
    with pytest.raises(janusnet.ProxyAuthenticationRequired):
        await tunnel(janusnet_proxy, janusnet_client_port).open(
            "localhost", janusnet_tls_server.port)


@pytest.mark.parametrize(("behaviour", "status"), [("status_403", 403), ("status_502", 502)])
async def test_refused(anyio_backend, behaviour, status, janusnet_proxy, janusnet_tls_server,
                       janusnet_client_port):
    janusnet_proxy.behaviour = behaviour
    with pytest.raises(janusnet.ProxyRefusedError) as info:
        await tunnel(janusnet_proxy, janusnet_client_port).open(
            "localhost", janusnet_tls_server.port)
    assert type(info.value) is janusnet.ProxyRefusedError
    assert info.value.status == status


async def test_wrong_hostname(anyio_backend, janusnet_proxy, janusnet_tls_server,
                              janusnet_client_port):
    sock = await tunnel(janusnet_proxy, janusnet_client_port).open(
        "localhost", janusnet_tls_server.port)
    async with sock:
        with pytest.raises(janusnet.HandshakeError):
            await sock.ssl_on(server_hostname="example.com")
        assert sock.closed


async def test_wrong_ca(anyio_backend, janusnet_proxy, janusnet_tls_server):
    port = janusnet.ClientPort("OTHER-CA", ssl_context=janusnet.default_ssl_context())
    with pytest.raises(janusnet.HandshakeError):
        await tunnel(janusnet_proxy, port).open_tls("localhost", janusnet_tls_server.port)
"""


RESETS = r"""
import anyio
import pytest

import janusnet

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def wait_for(predicate):
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.005)


async def receive_line(stream):
    data = b""
    while not data.endswith(b"\r\n"):
        data += await stream.receive()
    return data


async def fail_origin(server):
    # A real failure in the server thread: a str where starttls mode needs bytes to inject.
    server.mode = "starttls"
    server.inject = "not bytes"
    async with await anyio.connect_tcp(*server.address) as stream:
        assert await receive_line(stream) == b"220 ready\r\n"
        await stream.send(b"STARTTLS\r\n")
        await wait_for(lambda: server.errors)


async def fail_proxy(server):
    # A real failure in the server thread: a server context that is not one.
    server.ssl_context = "not a context"
    async with await anyio.connect_tcp(*server.address) as stream:
        await stream.send(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        await wait_for(lambda: server.errors)


async def test_1_leaves_server_failures_behind(anyio_backend, janusnet_proxy,
                                               janusnet_tls_server):
    await fail_origin(janusnet_tls_server)
    await fail_proxy(janusnet_proxy)
    assert "TypeError" in janusnet_tls_server.errors[0]
    assert "SSLContext" in janusnet_proxy.errors[0]
    assert janusnet_tls_server.connections == janusnet_proxy.connections == 1


async def test_2_starts_clean(anyio_backend, janusnet_proxy, janusnet_tls_server,
                              janusnet_client_port):
    assert janusnet_tls_server.errors == []
    assert janusnet_proxy.errors == []
    assert janusnet_tls_server.connections == janusnet_proxy.connections == 0
    assert janusnet_proxy.ssl_context is None and janusnet_proxy.url.startswith("http:")
    tunnel = janusnet.ProxyTunnel(janusnet_proxy.url, client_port=janusnet_client_port)
    async with await tunnel.open_tls("localhost", janusnet_tls_server.port):
        pass
    await wait_for(lambda: janusnet_tls_server.connections == 1)
    assert janusnet_proxy.connections == 1
    assert janusnet_tls_server.errors == janusnet_proxy.errors == []
"""

SESSION_CONFTEST = r"""
import ssl

import pytest

import janusnet


@pytest.fixture(scope="session")
def session_tunnel(janusnet_proxy_session, janusnet_tls_server_session, janusnet_ca):
    # Built once for the whole run, as a user's session-wide client would be.
    context = ssl.create_default_context()
    janusnet_ca.configure_trust(context)
    port = janusnet.ClientPort("SESSION", ssl_context=context)
    return janusnet.ProxyTunnel(janusnet_proxy_session.url, client_port=port, timeout=10)
"""

SESSION = r"""
import pytest

import janusnet

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(scope="module")
def origin_port(janusnet_tls_server_session):
    return janusnet_tls_server_session.port


async def get(tunnel, port):
    async with await tunnel.open_tls("localhost", port) as sock:
        await sock.send_line("GET /session HTTP/1.0")
        await sock.send_line()
        return (await sock.recv_parsed()).data


async def test_wider_scoped_fixtures_reach_the_origin(anyio_backend, session_tunnel,
                                                      origin_port):
    assert await get(session_tunnel, origin_port) == b"HTTP/1.1 200 OK"


@pytest.mark.janusnet_proxy(behaviour="status_403")
async def test_markers_apply_through_the_function_views(
    anyio_backend, session_tunnel, origin_port, janusnet_proxy, janusnet_proxy_session,
    janusnet_tls_server, janusnet_tls_server_session,
):
    assert janusnet_proxy is janusnet_proxy_session
    assert janusnet_tls_server is janusnet_tls_server_session
    assert janusnet_proxy.log == []  # the earlier tests' requests are gone
    with pytest.raises(janusnet.ProxyRefusedError):
        await session_tunnel.open("localhost", origin_port)
    assert [record.status for record in janusnet_proxy.log] == [403]


async def test_session_view_is_back_to_normal_after_a_marker(
    anyio_backend, session_tunnel, origin_port, janusnet_proxy_session
):
    assert janusnet_proxy_session.behaviour.value == "normal"
    assert await get(session_tunnel, origin_port) == b"HTTP/1.1 200 OK"
"""

IPV6 = r"""
import pytest

import janusnet

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def get(tunnel, host, port):
    async with await tunnel.open_tls(host, port) as sock:
        await sock.send_line("GET /v6 HTTP/1.0")
        await sock.send_line()
        return (await sock.recv_parsed()).data


async def test_shared_servers_answer_on_ipv6_loopback(anyio_backend, janusnet_proxy,
                                                      janusnet_tls_server, janusnet_client_port):
    assert janusnet_tls_server.hosts == ("127.0.0.1", "::1")
    assert janusnet_proxy.hosts == ("127.0.0.1", "::1")
    port = janusnet_tls_server.port
    v4_proxy = janusnet.ProxyTunnel(janusnet_proxy.url, client_port=janusnet_client_port)
    v6_proxy = janusnet.ProxyTunnel(f"http://[::1]:{janusnet_proxy.port}",
                                    client_port=janusnet_client_port)
    assert await get(v4_proxy, "::1", port) == b"HTTP/1.1 200 OK"
    assert await get(v6_proxy, "127.0.0.1", port) == b"HTTP/1.1 200 OK"
    assert await get(v6_proxy, "::1", port) == b"HTTP/1.1 200 OK"
    assert [(r.target, r.status) for r in janusnet_proxy.log] == [
        (f"[::1]:{port}", 200), (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200)
    ]
"""

MARKER_ERRORS = r"""
import pytest

import janusnet


@pytest.mark.janusnet_proxy(behaviour="extra_byte")
def test_behaviour_typo(janusnet_proxy):
    pass


@pytest.mark.janusnet_tls_server(mode="startls")
def test_mode_typo(janusnet_tls_server):
    pass


@pytest.mark.janusnet_proxy(auth="alice:pw-in-a-string")
def test_auth_as_one_string(janusnet_proxy):
    pass


@pytest.mark.janusnet_proxy(auth=["alice"])
def test_auth_of_one_item(janusnet_proxy):
    pass


@pytest.mark.janusnet_tls_server(inject="250 a str\r\n")
def test_inject_as_str(janusnet_tls_server):
    pass


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.janusnet_proxy(auth=["alice", "s3cret"])
@pytest.mark.anyio
async def test_auth_as_a_list(anyio_backend, janusnet_proxy, janusnet_tls_server,
                              janusnet_client_port):
    assert janusnet_proxy.auth == ("alice", "s3cret")
    port = janusnet_tls_server.port
    without = janusnet.ProxyTunnel(janusnet_proxy.url, client_port=janusnet_client_port)
    with pytest.raises(janusnet.ProxyAuthenticationRequired):
        await without.open("localhost", port)
    with_auth = janusnet.ProxyTunnel(janusnet_proxy.url_with_auth("alice", "s3cret"),
                                     client_port=janusnet_client_port)
    async with await with_auth.open_tls("localhost", port):
        pass
"""


LATE_CONNECTIONS = r"""
import socket

import pytest


@pytest.mark.parametrize("i", range(150))
def test_left_behind(i, janusnet_tls_server, janusnet_proxy):
    # Each test starts clean, though the one before left connections the servers had
    # not taken in yet when it ended, one of them with a CONNECT to the origin.
    assert (janusnet_tls_server.connections, janusnet_proxy.connections) == (0, 0)
    assert janusnet_proxy.log == []
    with socket.create_connection(janusnet_proxy.address) as proxied:
        proxied.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: x\r\n\r\n"
                        % janusnet_tls_server.port)
    socket.create_connection(janusnet_tls_server.address).close()
"""

MERGED_MARKERS = r"""
import pytest

pytestmark = pytest.mark.janusnet_proxy(auth=("alice", "s3cret"), behaviour="reset")


@pytest.mark.janusnet_proxy(behaviour="status_403")
def test_function_marker_over_the_module_one(janusnet_proxy):
    assert janusnet_proxy.auth == ("alice", "s3cret")
    assert janusnet_proxy.behaviour.value == "status_403"


@pytest.mark.janusnet_proxy(behaviour="status_502", auth=("bob", "pw"))
@pytest.mark.janusnet_proxy(auth=("carol", "pw"))
def test_the_nearest_decorator_wins(janusnet_proxy):
    assert janusnet_proxy.auth == ("carol", "pw")
    assert janusnet_proxy.behaviour.value == "status_502"


def test_module_marker_alone(janusnet_proxy):
    assert janusnet_proxy.auth == ("alice", "s3cret")
    assert janusnet_proxy.behaviour.value == "reset"


def test_module_marker_on_a_test_without_the_fixture():
    pass


@pytest.mark.janusnet_proxy(behavior="typo")
def test_own_marker_without_its_fixture(janusnet_proxy_session):
    pass


@pytest.mark.janusnet_tls_server(mode="plain")
def test_own_server_marker_without_its_fixture():
    pass
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A fresh directory with the strict ini; nothing of this project's config applies."""
    pytester.makefile(".ini", pytest=INI)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-q", *args, timeout=RUN_TIMEOUT)


def test_plugin_fixtures_under_pytest_asyncio_and_anyio_trio(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(test_user_client=HAPPY_PATH)
    result = run(user_project)
    # anyio's own anyio_backend runs the module-level anyio tests on asyncio and on trio (5 x 2);
    # plus the pytest-asyncio test, the trio-only class and the sync test.
    result.assert_outcomes(passed=13)


def test_plugin_misbehaviour_switches_give_typed_errors(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_misbehaving_proxy=MISBEHAVIOURS)
    result = run(user_project)
    result.assert_outcomes(passed=2 * 13)


def test_plugin_registers_markers_and_lists_fixtures(user_project: pytest.Pytester) -> None:
    markers = run(user_project, "--markers")
    markers.stdout.fnmatch_lines(
        ["@pytest.mark.janusnet_proxy(*", "@pytest.mark.janusnet_tls_server(*"]
    )
    fixtures = run(user_project, "--fixtures")
    for line in [
        "janusnet_ca [[]session scope[]] -- *",
        "janusnet_tls_server_session [[]session scope[]] -- *",
        "janusnet_proxy_session [[]session scope[]] -- *",
        "janusnet_tls_server -- *",
        "janusnet_proxy -- *",
        "janusnet_proxy_factory -- *",
        "janusnet_client_port -- *",
    ]:
        fixtures.stdout.fnmatch_lines([line])


def test_plugin_rejects_unknown_marker_options(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        test_typo=textwrap.dedent(
            """
            import pytest

            @pytest.mark.janusnet_proxy(behavior="reset")
            def test_typo(janusnet_proxy):
                pass
            """
        )
    )
    result = run(user_project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*janusnet_proxy got unknown option(s)*behavior*"])


def test_plugin_resets_errors_and_connections_between_tests(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(test_resets=RESETS)
    result = run(user_project, "-p", "no:randomly")  # the order matters, should it be installed
    # test_1 leaves a failure in both servers (on each backend); test_2 must not see it.
    result.assert_outcomes(passed=4)


def test_plugin_reset_takes_in_what_a_test_left_behind(user_project: pytest.Pytester) -> None:
    """A connection a test opened just before it ended counts for it, and a request
    on it that comes later opens no tunnel to the origin in the next test (the reset
    did not wait for them: 2 to 24 of 200 tests saw the one before's)."""
    user_project.makepyfile(test_late=LATE_CONNECTIONS)
    result = run(user_project, "-p", "no:randomly")
    result.assert_outcomes(passed=150)


def test_plugin_markers_merge_and_need_their_fixture(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_merged=MERGED_MARKERS)
    result = run(user_project)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.janusnet_proxy configures the janusnet_proxy fixture, which this "
            "test does not request (the marker does nothing on janusnet_proxy_session): add "
            "janusnet_proxy to its arguments",
            "*@pytest.mark.janusnet_tls_server configures the janusnet_tls_server fixture*",
        ],
        consecutive=False,
    )


def test_plugin_session_fixtures_serve_wider_scoped_fixtures(
    user_project: pytest.Pytester,
) -> None:
    user_project.makeconftest(SESSION_CONFTEST)
    user_project.makepyfile(test_session=SESSION)
    result = run(user_project)
    result.assert_outcomes(passed=3 * 2)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_plugin_servers_listen_on_ipv6_loopback_too(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_ipv6=IPV6)
    result = run(user_project)
    result.assert_outcomes(passed=2)


def test_plugin_marker_errors_are_one_clear_line(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_markers=MARKER_ERRORS)
    result = run(user_project)
    result.assert_outcomes(errors=5, passed=2)
    result.stdout.fnmatch_lines(
        [
            "*janusnet_proxy: unknown behaviour 'extra_byte'; valid values: 'normal', "
            "'extra_bytes', *, 'chunked_2xx'",
            "*janusnet_tls_server: unknown mode 'startls'; valid values: 'tls', 'plain', "
            "'starttls', 'reset_handshake', 'garbage', 'stall'",
            "*janusnet_proxy: auth must be a (user, password) pair of str*; got str",
            "*janusnet_proxy: auth must be a (user, password) pair of str*; "
            "got a list of 1 item(s)",
            "*janusnet_tls_server: inject must be bytes, got str",
        ],
        consecutive=False,
    )
    output = result.stdout.str()
    assert "During handling" not in output
    assert "Traceback" not in output
    assert "pw-in-a-string" not in output  # the password stays out of the report


def test_plugin_import_is_light() -> None:
    code = (
        "import sys, janusnet.testing.plugin\n"
        "heavy = sorted(m for m in ('trustme', 'cryptography') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=RUN_TIMEOUT)

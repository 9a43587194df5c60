"""pytest plugin for janusnet: offline fixtures for code that reaches TLS through a proxy.

Registered through the ``pytest11`` entry point, so ``pip install 'janusnet[testing]'`` is
all a project needs. The fixtures are plain synchronous fixtures around servers that run on
their own thread and loop (:mod:`janusnet.testing`), so the same test works under
pytest-asyncio and under anyio's plugin, on asyncio and on trio::

    import pytest
    import janusnet

    @pytest.mark.anyio  # or @pytest.mark.asyncio with pytest-asyncio
    async def test_my_client_reaches_the_origin(
        janusnet_proxy, janusnet_tls_server, janusnet_client_port
    ):
        tunnel = janusnet.ProxyTunnel(janusnet_proxy.url, client_port=janusnet_client_port)
        async with await tunnel.open("localhost", janusnet_tls_server.port) as sock:
            await sock.ssl_on()
            await sock.send("GET /hello HTTP/1.0\\r\\n\\r\\n")
            assert (await sock.recv_parsed()).data == b"HTTP/1.1 200 OK"
        assert janusnet_proxy.log[0].target == f"localhost:{janusnet_tls_server.port}"

    @pytest.mark.janusnet_proxy(behaviour="extra_bytes")
    @pytest.mark.anyio
    async def test_my_client_refuses_injected_bytes(
        janusnet_proxy, janusnet_tls_server, janusnet_client_port
    ):
        tunnel = janusnet.ProxyTunnel(janusnet_proxy.url, client_port=janusnet_client_port)
        with pytest.raises(janusnet.PendingDataError):
            await tunnel.open_tls("localhost", janusnet_tls_server.port)

Fixtures
--------
``janusnet_ca`` (session)
    A ``trustme.CA``; every certificate the fixtures serve is issued by it.
``janusnet_tls_server`` (function view of a session server)
    A running :class:`~janusnet.testing.TLSOrigin` with a certificate for ``localhost``,
    ``127.0.0.1`` and ``::1``: ``.host``, ``.port``, ``.address``, ``.authority``,
    ``.client_context()``. ``mode``, ``inject``, ``connection_timeout``, ``errors`` and
    ``connections`` are reset before and after every test, so a test may change them
    freely.
``janusnet_proxy`` (function view of a session server)
    A running :class:`~janusnet.testing.ConnectProxy`: ``.url``, ``.url_with_auth(u, p)``,
    ``.log``, ``.behaviour`` and ``.auth`` (assignable). ``behaviour``, ``auth``,
    ``ssl_context``, ``connection_timeout``, ``log``, ``errors`` and ``connections`` are
    reset before and after every test, so neither a misbehaviour nor a server-side failure
    leaks into the next test. The reset takes in the connections a test opened just
    before it ended (a request it cancelled at once): they count for that test, and a
    request on one of them that comes later is not served.
``janusnet_tls_server_session``, ``janusnet_proxy_session`` (session)
    The same two servers, without the per-test view: for a module- or session-scoped
    fixture of yours (say, a client built once), which pytest does not let depend on a
    function-scoped fixture. Markers and resets apply only through ``janusnet_tls_server``
    and ``janusnet_proxy``; request those too in a test that checks ``log`` or ``errors``.
``janusnet_proxy_factory`` (function)
    ``janusnet_proxy_factory(**kwargs)`` starts a fresh ``ConnectProxy(**kwargs)`` (say, a
    second proxy, or an HTTPS one with ``ssl_context=``) and stops it after the test.
``janusnet_client_port`` (function)
    A :class:`~janusnet.ClientPort` named ``"JANUSNET-TEST"``, ``TLSMode.OPTIONAL``, whose
    ``ssl_context`` trusts ``janusnet_ca`` (and nothing else).

The shared servers listen on ``127.0.0.1`` and, where the machine has IPv6 loopback, on
``::1`` too, with the same port (``.hosts`` lists the addresses): ``open_tls("::1", port)``
through the proxy reaches the origin. ``.url``, ``.address`` and ``.authority`` use
``127.0.0.1``.

Markers
-------
``@pytest.mark.janusnet_proxy(behaviour=..., auth=(user, password))``
    Configures ``janusnet_proxy`` for one test: a :class:`~janusnet.testing.ProxyBehaviour`
    (or its string value, e.g. ``"reset"``) and/or required Basic credentials (any two
    strings: a tuple or a list).
``@pytest.mark.janusnet_tls_server(mode=..., inject=b"...")``
    Configures ``janusnet_tls_server`` for one test: an
    :class:`~janusnet.testing.OriginMode` (``"starttls"``, ``"garbage"``...) and the bytes
    ``starttls`` mode injects after ``220 go ahead``.

Markers on a test function, its class and its module (``pytestmark``) merge: the closest
one's options win, and the others give the rest (say, ``auth`` for a whole module and
``behaviour`` for one test). A misspelt option or value fails the test's setup with one
line that lists the valid ones, and so does a marker on a test function that does not
request its fixture (on ``janusnet_proxy_session`` alone it would do nothing).

When pytest loads the plugin, Python imports the ``janusnet`` and ``janusnet.testing``
packages it lives in (anyio, h11, certifi: some 20-30 ms per pytest run); ``trustme``,
the certificates and the servers' threads come only when a fixture is first used.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

if TYPE_CHECKING:
    import trustme

    from janusnet import ClientPort
    from janusnet.testing import ConnectProxy, TLSOrigin

__all__ = [
    "janusnet_ca",
    "janusnet_client_port",
    "janusnet_proxy",
    "janusnet_proxy_factory",
    "janusnet_proxy_session",
    "janusnet_tls_server",
    "janusnet_tls_server_session",
]

_E = TypeVar("_E", bound=enum.Enum)

_PROXY_MARKER = "janusnet_proxy"
_SERVER_MARKER = "janusnet_tls_server"
_PROXY_OPTIONS = frozenset({"behaviour", "auth"})
_SERVER_OPTIONS = frozenset({"mode", "inject"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, so ``--strict-markers`` accepts them."""
    config.addinivalue_line(
        "markers",
        f"{_PROXY_MARKER}(behaviour='normal', auth=None): configure the janusnet_proxy "
        "fixture for this test (a ProxyBehaviour value; (user, password) for Basic auth)",
    )
    config.addinivalue_line(
        "markers",
        f"{_SERVER_MARKER}(mode='tls', inject=b''): configure the janusnet_tls_server "
        "fixture for this test (an OriginMode value; bytes injected in starttls mode)",
    )


def _marker_options(
    request: pytest.FixtureRequest, name: str, allowed: frozenset[str]
) -> dict[str, object]:
    """The keyword arguments of every ``name`` marker on the test, each checked against
    ``allowed``, merged: the closest one's options win (a function's marker over its
    class's, over the module's ``pytestmark``; the decorator nearest the function over
    the ones above it), and options it does not give come from the others."""
    options: dict[str, object] = {}
    for marker in request.node.iter_markers(name):  # closest first
        if marker.args:
            _bad_marker(f"@pytest.mark.{name} takes keyword arguments only: {sorted(allowed)}")
        unknown = set(marker.kwargs) - allowed
        if unknown:
            _bad_marker(
                f"@pytest.mark.{name} got unknown option(s) {sorted(unknown)}; "
                f"expected some of {sorted(allowed)}"
            )
        for option, value in marker.kwargs.items():
            options.setdefault(option, value)
    return options


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test whose own marker configures a fixture it does not request: the
    marker would do nothing (not even check its options), and the test would run on
    settings it does not expect. Markers on a class or module are left alone: they
    apply to many tests, not all of which use the fixture."""
    fixtures = getattr(item, "fixturenames", ())
    for marker in getattr(item, "own_markers", ()):
        if marker.name in (_PROXY_MARKER, _SERVER_MARKER) and marker.name not in fixtures:
            _bad_marker(
                f"@pytest.mark.{marker.name} configures the {marker.name} fixture, which "
                f"this test does not request (the marker does nothing on "
                f"{marker.name}_session): add {marker.name} to its arguments"
            )


def _enum_option(choices: type[_E], value: object, option: str, marker: str) -> _E:
    """``choices(value)``, or a setup failure that lists the valid values.

    Raises:
        pytest.fail.Exception: ``value`` is none of ``choices``.
    """
    try:
        return choices(value)
    except (ValueError, TypeError):
        pass  # fail outside the except block: no "During handling..." chain in the report
    valid = ", ".join(repr(choice.value) for choice in choices)
    _bad_marker(f"@pytest.mark.{marker}: unknown {option} {value!r}; valid values: {valid}")


def _auth_option(value: object) -> tuple[str, str] | None:
    """``None``, or any two-item sequence of ``str`` (tuple, list…) as ``(user, password)``.

    Raises:
        pytest.fail.Exception: ``value`` is something else.
    """
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        if len(value) == 2:
            user, password = value
            if isinstance(user, str) and isinstance(password, str):
                return user, password
        got = f"a {type(value).__name__} of {len(value)} item(s)"
        if len(value) == 2:
            got += ", not both str"
    else:
        got = type(value).__name__
    # The values themselves stay out of the message: one of them is a password.
    _bad_marker(
        f"@pytest.mark.{_PROXY_MARKER}: auth must be a (user, password) pair of str, "
        f'such as auth=("alice", "s3cret"); got {got}'
    )


def _bad_marker(message: str) -> NoReturn:
    """Fail the test's setup with ``message`` alone (no plugin traceback to wade through)."""
    pytest.fail(message, pytrace=False)


# -- certificates -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def janusnet_ca() -> trustme.CA:
    """A throw-away certificate authority (``trustme.CA``) for the whole session."""
    # Imported here: the plugin loads in every pytest run, trustme is for its fixtures.
    from janusnet.testing._origin import new_ca

    try:
        return new_ca()
    except ModuleNotFoundError as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)  # outside the except block: no chained traceback


# -- the TLS origin ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def janusnet_tls_server_session(janusnet_ca: trustme.CA) -> Iterator[TLSOrigin]:
    """The session's shared ``TLSOrigin`` itself, for fixtures of a wider scope.

    ``janusnet_tls_server`` is the per-test view of this same server. A module- or
    session-scoped fixture cannot use that one (pytest's ScopeMismatch), so it takes this one.
    Markers and the per-test reset apply only through ``janusnet_tls_server``: a test that
    also requests it starts with the server in ``tls`` mode and empty ``errors``. A
    connection lasts at most ``connection_timeout`` seconds (60), then the server cuts it:
    one a session-scoped fixture holds longer ends there.
    """
    from janusnet.testing import TLSOrigin

    with TLSOrigin(ca=janusnet_ca, dual_stack=True) as server:
        yield server


def _reset_origin(server: TLSOrigin) -> None:
    from janusnet.testing._servers import DEFAULT_CONNECTION_TIMEOUT

    server.mode = "tls"
    server.inject = b""
    server.connection_timeout = DEFAULT_CONNECTION_TIMEOUT
    server.reset_history()


@pytest.fixture
def janusnet_tls_server(
    request: pytest.FixtureRequest, janusnet_tls_server_session: TLSOrigin
) -> Iterator[TLSOrigin]:
    """A running ``TLSOrigin`` (certificate from ``janusnet_ca``), in TLS mode.

    ``@pytest.mark.janusnet_tls_server(mode=..., inject=...)`` sets it up for one test
    (markers on the function, its class and its module merge; the closest wins).
    ``mode``, ``inject``, ``connection_timeout``, ``errors`` and ``connections`` are reset
    before and after the test.
    """
    from janusnet.testing import OriginMode

    options = _marker_options(request, _SERVER_MARKER, _SERVER_OPTIONS)
    mode = _enum_option(OriginMode, options.get("mode", OriginMode.TLS), "mode", _SERVER_MARKER)
    inject = options.get("inject", b"")
    if not isinstance(inject, (bytes, bytearray, memoryview)):
        _bad_marker(
            f"@pytest.mark.{_SERVER_MARKER}: inject must be bytes, got {type(inject).__name__}"
        )
    server = janusnet_tls_server_session
    _reset_origin(server)
    server.mode = mode
    server.inject = bytes(inject)
    try:
        yield server
    finally:
        _reset_origin(server)


# -- the CONNECT proxy ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def janusnet_proxy_session() -> Iterator[ConnectProxy]:
    """The session's shared ``ConnectProxy`` itself, for fixtures of a wider scope.

    ``janusnet_proxy`` is the per-test view of this same proxy. A module- or session-scoped
    fixture cannot use that one (pytest's ScopeMismatch), so it takes this one. Markers and
    the per-test reset apply only through ``janusnet_proxy``: a test that also requests it
    starts with ``normal`` behaviour, no auth and empty ``log`` and ``errors``. A
    connection (tunnel included) lasts at most ``connection_timeout`` seconds (60), then
    the proxy cuts it: one a session-scoped fixture holds longer ends there.
    """
    from janusnet.testing import ConnectProxy

    with ConnectProxy(dual_stack=True) as server:
        yield server


def _reset_proxy(server: ConnectProxy) -> None:
    from janusnet.testing._servers import DEFAULT_CONNECTION_TIMEOUT

    server.behaviour = "normal"
    server.auth = None
    server.ssl_context = None
    server.connection_timeout = DEFAULT_CONNECTION_TIMEOUT
    server.reset_history()


@pytest.fixture
def janusnet_proxy(
    request: pytest.FixtureRequest, janusnet_proxy_session: ConnectProxy
) -> Iterator[ConnectProxy]:
    """A running ``ConnectProxy``: normal behaviour, no auth and an empty log at the start.

    ``@pytest.mark.janusnet_proxy(behaviour=..., auth=(user, password))`` sets it up for one
    test (markers on the function, its class and its module merge; the closest wins);
    assigning ``.behaviour`` or ``.auth`` in the test works too. ``behaviour``, ``auth``,
    ``ssl_context``, ``connection_timeout``, ``log``, ``errors`` and ``connections`` are
    reset before and after the test.
    """
    from janusnet.testing import ProxyBehaviour

    options = _marker_options(request, _PROXY_MARKER, _PROXY_OPTIONS)
    behaviour = _enum_option(
        ProxyBehaviour, options.get("behaviour", ProxyBehaviour.NORMAL), "behaviour", _PROXY_MARKER
    )
    auth = _auth_option(options.get("auth"))
    server = janusnet_proxy_session
    _reset_proxy(server)
    server.behaviour = behaviour
    server.auth = auth
    try:
        yield server
    finally:
        _reset_proxy(server)


@pytest.fixture
def janusnet_proxy_factory() -> Iterator[Callable[..., ConnectProxy]]:
    """``factory(**kwargs)`` starts a new ``ConnectProxy(**kwargs)``; stopped after the test.

    For what the shared ``janusnet_proxy`` cannot be: a second proxy, another listening
    address (``host="::1"``), or an HTTPS proxy (``ssl_context=server.server_context``).
    """
    from janusnet.testing import ConnectProxy

    started: list[ConnectProxy] = []

    def factory(**kwargs: object) -> ConnectProxy:
        server = ConnectProxy(**kwargs)  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.stop()


# -- the client side --------------------------------------------------------------------------


@pytest.fixture
def janusnet_client_port(janusnet_ca: trustme.CA) -> ClientPort:
    """A ``ClientPort`` (``TLSMode.OPTIONAL``) whose ``ssl_context`` trusts ``janusnet_ca``
    and nothing else."""
    from janusnet import ClientPort, TLSMode
    from janusnet.testing._origin import context_trusting

    context = context_trusting(janusnet_ca)  # and nothing else: no system store
    return ClientPort("JANUSNET-TEST", tls=TLSMode.OPTIONAL, ssl_context=context)

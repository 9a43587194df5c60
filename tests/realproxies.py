"""Launch REAL squid and tinyproxy processes on loopback for the test-suite (not shipped).

Each launcher writes a config into a fresh temporary directory, starts the proxy in the
foreground on a free loopback port, polls until it accepts connections, and on exit stops it
(terminate, wait, kill) and deletes the directory.

Choices worth knowing when writing tests:

* squid allows ``CONNECT`` to any port of ``127.0.0.0/8`` and ``::1`` except
  :data:`SQUID_DENIED_PORT` (9, "discard"), which gets ``403``. Every other destination is
  refused too: the suite never reaches beyond loopback.
* ``squid_basic`` checks Basic credentials with ``basic_ncsa_auth`` against an htpasswd file
  (APR1 hash) holding :data:`USER` / :data:`PASSWORD`; the password contains a ``:`` on
  purpose (a Basic user-pass splits at the *first* colon).
* ``squid_digest`` checks Digest credentials with ``digest_file_auth``. Its plain
  ``user:password`` file format splits at every colon, so a password with ``:`` cannot be
  written in clear; the file holds ``user:realm:{HHA1}md5(user:realm:password)`` instead, which
  the helper supports, so the same :data:`PASSWORD` works for Digest too.
* tinyproxy has no ``ConnectPort`` line (all ports allowed) and ``Allow 127.0.0.1``.

When running as root, squid drops to ``proxy`` and tinyproxy to ``nobody``/``nogroup``; the
temporary directory is handed over to that user so logs can be written.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

USER = "alice"
#: Digest users whose names are not ASCII (their UTF-8 bytes go on the wire; ß is C3 9F,
#: a byte that as latin-1 text would be a C1 control character).
NON_ASCII_USERS = ("j\u00fcrgen", "stra\u00dfe")
PASSWORD = "s3:cr3t@x"
REALM = "janusnet"
SQUID_DENIED_PORT = 9
REQUIRE_ENV = "JANUSNET_REQUIRE_REAL_PROXIES"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SQUID_HELPER_DIRS = ("/usr/lib/squid", "/usr/lib64/squid", "/usr/libexec/squid")


@dataclass(frozen=True)
class RealProxy:
    """A running real proxy, as a fixture hands it to a test."""

    name: str
    host: str
    port: int
    workdir: Path
    pid: int
    auth_scheme: str | None = None  # "basic", "digest" or None
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    denied_port: int | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_with_auth(self, user: str | None = None, password: str | None = None) -> str:
        """The proxy URL with percent-encoded userinfo (this proxy's credentials by default)."""
        user = self.username if user is None else user
        password = self.password if password is None else password
        if user is None or password is None:
            raise ValueError(f"{self.name} has no credentials")
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    def logs(self) -> str:
        """Everything the proxy logged so far, for assertion messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


def missing(what: str) -> None:
    """Skip (or fail, when ``JANUSNET_REQUIRE_REAL_PROXIES`` is set) for a missing tool."""
    message = (
        f"{what} not found; install it (apt-get install -y squid tinyproxy apache2-utils) "
        f"to run the real-proxy tests"
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{message} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(message)


def find_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        missing(name)
    assert found is not None
    return found


def find_squid_helper(name: str) -> str:
    for directory in SQUID_HELPER_DIRS:
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    missing(f"squid helper {name}")
    raise AssertionError("unreachable")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _traversable_base() -> str | None:
    """A temporary directory that a proxy running as another user can reach: TMPDIR's
    when every directory above it lets others in (``mktemp -d`` makes 0700 ones), else
    /tmp or /var/tmp; None for the default."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        path = Path(candidate)
        if path.is_dir() and all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
            return str(path)
    return None


def _workdir(prefix: str, owner: str | None) -> Path:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and the proxies drop privileges.
    dropping = owner is not None and os.geteuid() == 0
    base = _traversable_base() if dropping else None
    path = Path(tempfile.mkdtemp(prefix=f"janusnet-{prefix}-", dir=base))
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


def _hand_over(path: Path, owner: str | None) -> None:
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _wait_listening(process: subprocess.Popen[bytes], port: int, workdir: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{_tail(workdir)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {START_TIMEOUT}s")


def _tail(workdir: Path) -> str:
    text = []
    for path in sorted(workdir.iterdir()):
        if path.suffix in {".log", ".err"}:
            with contextlib.suppress(OSError):
                text.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
    return "\n".join(text)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextlib.contextmanager
def _run(
    name: str, argv: list[str], workdir: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    with open(workdir / f"{name}.err", "wb") as errors:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            _wait_listening(process, port, workdir, name)
            yield process
        finally:
            _stop(process)


# -- squid ------------------------------------------------------------------------------------


def _squid_config(port: int, workdir: Path, auth_lines: list[str], authed: bool) -> str:
    lines = [
        f"http_port 127.0.0.1:{port}",
        "pid_filename none",
        "cache deny all",
        "cache_mem 8 MB",
        f"access_log stdio:{workdir}/access.log",
        f"cache_log {workdir}/cache.log",
        "cache_store_log none",
        "logfile_rotate 0",
        f"coredump_dir {workdir}",
        "netdb_filename none",
        "pinger_enable off",
        "icp_port 0",
        "htcp_port 0",
        "visible_hostname janusnet-test",
        # No lookups are needed (targets are IP literals or /etc/hosts names); should one
        # happen anyway, it must not leave the machine.
        "dns_nameservers 127.0.0.1",
        "udp_incoming_address 127.0.0.1",
        "digest_generation off",
        "shutdown_lifetime 0 seconds",
        "acl loopback_src src 127.0.0.0/8 ::1",
        "acl loopback_dst dst 127.0.0.0/8 ::1",
        f"acl denied_port port {SQUID_DENIED_PORT}",
        "http_access deny !loopback_src",
        "http_access deny !loopback_dst",
        "http_access deny denied_port",
        *auth_lines,
        "http_access allow authed" if authed else "http_access allow all",
        "http_access deny all",
    ]
    if os.geteuid() == 0:
        lines.insert(1, "cache_effective_user proxy")
    return "\n".join(lines) + "\n"


def _basic_password_file(path: Path) -> None:
    htpasswd = shutil.which("htpasswd")
    if htpasswd is not None:
        subprocess.run(
            [htpasswd, "-bc", str(path), USER, PASSWORD], check=True, capture_output=True
        )
        return
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("htpasswd (apache2-utils) or openssl")
    assert openssl is not None
    hashed = (
        subprocess.run(
            [openssl, "passwd", "-apr1", "-stdin"],
            input=PASSWORD.encode(),
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .strip()
    )
    path.write_text(f"{USER}:{hashed}\n")


def _digest_password_file(path: Path) -> None:
    # digest_file_auth splits lines at every ':', so "alice:s3:cr3t@x" would read as realm "s3",
    # password "cr3t@x". The user:realm:{HHA1}<md5> form stores the hash, colons and all.
    lines = []
    for user in (USER, *NON_ASCII_USERS):
        ha1 = hashlib.md5(f"{user}:{REALM}:{PASSWORD}".encode()).hexdigest()
        lines.append(f"{user}:{REALM}:{{HHA1}}{ha1}\n")
    path.write_text("".join(lines), encoding="utf-8")


@contextlib.contextmanager
def launch_squid(auth: str | None = None) -> Iterator[RealProxy]:
    """Run squid on a free loopback port; ``auth`` is ``None``, ``"basic"``, ``"digest"``
    or ``"ntlm"``."""
    squid = find_binary("squid")
    auth_lines: list[str] = []
    owner = "proxy" if os.geteuid() == 0 else None
    workdir = _workdir(f"squid-{auth or 'open'}", owner)
    try:
        if auth == "basic":
            helper = find_squid_helper("basic_ncsa_auth")
            _basic_password_file(workdir / "htpasswd")
            _hand_over(workdir / "htpasswd", owner)
            auth_lines = [
                f"auth_param basic program {helper} {workdir}/htpasswd",
                f"auth_param basic realm {REALM}",
                "auth_param basic children 2 startup=1 idle=1",
                "acl authed proxy_auth REQUIRED",
            ]
        elif auth == "digest":
            helper = find_squid_helper("digest_file_auth")
            _digest_password_file(workdir / "digest_passwd")
            _hand_over(workdir / "digest_passwd", owner)
            auth_lines = [
                f"auth_param digest program {helper} {workdir}/digest_passwd",
                f"auth_param digest realm {REALM}",
                "auth_param digest children 2 startup=1 idle=1",
                "acl authed proxy_auth REQUIRED",
            ]
        elif auth == "ntlm":
            # Completes the NTLM handshake for any user (it checks the messages' form,
            # not a password): enough to show the rounds ride one connection.
            helper = find_squid_helper("ntlm_fake_auth")
            auth_lines = [
                f"auth_param ntlm program {helper}",
                "auth_param ntlm children 2 startup=1 idle=1",
                "acl authed proxy_auth REQUIRED",
            ]
        elif auth is not None:
            raise ValueError(f"unknown auth {auth!r}")
        port = free_port()
        config = workdir / "squid.conf"
        config.write_text(_squid_config(port, workdir, auth_lines, authed=auth is not None))
        with _run("squid", [squid, "-N", "-f", str(config)], workdir, port) as process:
            yield RealProxy(
                name=f"squid{'-' + auth if auth else ''}",
                host="127.0.0.1",
                port=port,
                workdir=workdir,
                pid=process.pid,
                auth_scheme=auth,
                username=USER if auth else None,
                password=PASSWORD if auth else None,
                realm=REALM if auth else None,
                denied_port=SQUID_DENIED_PORT,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _nobody_group() -> str:
    try:
        grp.getgrnam("nogroup")
    except KeyError:
        return "nobody"  # Fedora and friends
    return "nogroup"


# -- tinyproxy --------------------------------------------------------------------------------


@contextlib.contextmanager
def launch_tinyproxy(*, log_level: str = "Info") -> Iterator[RealProxy]:
    """Run tinyproxy in the foreground on a free loopback port; no auth, all ports allowed.

    ``log_level="Error"`` for benchmarks: at ``Info`` tinyproxy writes and fsyncs its log
    several times per tunnel, which measures the disk rather than the clients.
    """
    tinyproxy = find_binary("tinyproxy")
    owner = "nobody" if os.geteuid() == 0 else None
    workdir = _workdir("tinyproxy", owner)
    try:
        port = free_port()
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            "MaxClients 200",
            "Allow 127.0.0.1",
            f'LogFile "{workdir}/tinyproxy.log"',
            f"LogLevel {log_level}",
            "DisableViaHeader Yes",
        ]
        if os.geteuid() == 0:
            lines[:0] = ["User nobody", f"Group {_nobody_group()}"]
        config = workdir / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        with _run("tinyproxy", [tinyproxy, "-d", "-c", str(config)], workdir, port) as process:
            yield RealProxy(
                name="tinyproxy", host="127.0.0.1", port=port, workdir=workdir, pid=process.pid
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

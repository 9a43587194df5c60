"""The janusnet command: probe (through the embedded proxy, or not) and demo."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from janusnet import PendingDataError
from janusnet.__main__ import _pending_explanation, main
from janusnet.testing import ConnectProxy, OriginMode, ProxyBehaviour, TLSOrigin
from loopback import needs_ipv6, unusual_certificate

SECRET = "wr0ng-S3cret"


PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """probe reads the proxy variables: start every test without them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def origin() -> Iterator[TLSOrigin]:
    with TLSOrigin() as server:
        yield server


@pytest.fixture(scope="module")
def cafile(origin: TLSOrigin, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    origin.ca.cert_pem.write_to_path(str(path))
    return str(path)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_cli_probe_through_proxy_prints_every_step(origin: TLSOrigin, cafile: str) -> None:
    with ConnectProxy() as proxy:
        authority = proxy.authority
        status, text = run(
            "probe", f"localhost:{origin.port}", "--proxy", proxy.url, "--cafile", cafile
        )
    assert status == 0, text
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.startswith("  ")}
    assert " ok " in lines["tcp"] and authority in lines["tcp"]
    assert "HTTP/1.1 200 Connection established" in lines["connect"]
    assert "TLSv1." in lines["tls"] and "alpn=" in lines["tls"]
    for detail in ("subject:", "issuer:", "not_after:", "subject_alt_names: DNS:localhost"):
        assert detail in text
    # The summary line shows version, cipher and ALPN; they are not repeated below it.
    assert text.count("TLSv1.") == 1
    for repeated in ("version:", "cipher:", "alpn:"):
        assert repeated not in text
    assert text.rstrip().endswith("result: ok")


def test_cli_probe_json(origin: TLSOrigin, cafile: str) -> None:
    status, text = run("probe", f"127.0.0.1:{origin.port}", "--cafile", cafile, "--json")
    assert status == 0
    report = json.loads(text)
    assert report["ok"] is True
    assert [step["step"] for step in report["steps"]] == ["tcp", "tls"]
    assert report["steps"][1]["version"].startswith("TLSv1.")
    assert all(step["ms"] >= 0 for step in report["steps"])
    # Every documented key is there, null when it does not apply.
    assert report["proxy"] is None and report["proxy_from"] is None
    assert report["proxy_bypassed_by"] is None


def test_cli_probe_plaintext_port_names_the_tls_step(cafile: str) -> None:
    with TLSOrigin(mode=OriginMode.PLAIN) as plain:
        status, text = run("probe", f"localhost:{plain.port}", "--cafile", cafile)
    assert status == 1
    assert "tls       FAIL" in text
    assert "HandshakeError" in text
    assert "FAILED at step tls" in text


def test_cli_probe_wrong_proxy_password_names_proxy_step_without_secret(
    origin: TLSOrigin, cafile: str
) -> None:
    with ConnectProxy(auth=("alice", "right")) as proxy:
        url = proxy.url_with_auth("alice", SECRET)
        status, text = run("probe", f"localhost:{origin.port}", "--proxy", url, "--cafile", cafile)
        status_json, text_json = run("probe", f"localhost:{origin.port}", "--proxy", url, "--json")
    assert status == status_json == 1
    assert "connect   FAIL" in text
    assert "407" in text and "ProxyAuthenticationRequired" in text
    assert "credentials rejected" in text and "no credentials given" not in text
    assert "407 Proxy Authentication Required; credentials rejected\n" in text
    assert "proxy requires authentication" not in text  # the 407 says it already
    assert "credentials_given: yes\n" in text and "True" not in text
    assert "FAILED at step connect" in text
    failed = json.loads(text_json)["steps"][-1]
    assert failed["step"] == "connect"
    assert (failed["error"], failed["status"], failed["code"]) == (
        "ProxyAuthenticationRequired",
        407,
        None,
    )
    assert failed["credentials_given"] is True
    for output in (text, text_json):
        assert SECRET not in output
        assert "alice:" not in output


def test_cli_probe_unreachable_names_tcp_step() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    status, text = run("probe", f"127.0.0.1:{free}", "--timeout", "3")
    assert status == 1
    assert "tcp       FAIL" in text and "ConnectError" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-port"], "HOST:PORT"),
        (["::1:443"], "IPv6"),
        (["host:http"], "HOST:PORT"),
        (["localhost:99999"], "port"),
        (["localhost:0"], "port"),
        (["bad host:443"], "space"),
        (["localhost:\uff11\uff12\uff13"], "HOST:PORT"),  # full-width digits
        (["localhost:\u00b2"], "HOST:PORT"),
        (["[zz]:443"], "IPv6 addresses only"),
        (["localhost:443", "--timeout", "-1"], "positive number of seconds"),
        (["localhost:443", "--timeout", "nan"], "positive number of seconds"),
    ],
)
def test_cli_probe_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["probe", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nohostport"], "expected HOST:PORT, got 'nohostport'"),
        (["localhost:443", "--timeout", "abc"], "positive number of seconds"),
        ([], "the following arguments are required: HOST:PORT"),
        (["localhost:443", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        # What argparse quotes back, a proxy URL with its password, is withheld.
        (
            ["localhost:443", f"http://u:{SECRET}@proxy:3128"],
            "unrecognized arguments: http://***@",
        ),
        ([f"--pro=http://u:{SECRET}@proxy:3128", "h:1"], "ambiguous option: --pro=http://***@"),
        ([f"u:{SECRET}@proxy:3128x"], "got '***@proxy:3128x'"),
    ],
)
def test_cli_probe_json_argument_errors_are_json_too(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse's own errors, with --json anywhere: JSON on stdout, its text on stderr."""
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        main(["probe", "--json", *argv], out=out)
    assert info.value.code == 2
    report = json.loads(out.getvalue())
    assert report == {"ok": False, "error": "UsageError", "message": report["message"]}
    assert message in report["message"]
    err = capsys.readouterr().err
    assert message in err
    assert SECRET not in out.getvalue() + err
    # Without --json, nothing on stdout; an abbreviation argparse takes for it, JSON too.
    plain = io.StringIO()
    with pytest.raises(SystemExit):
        main(["probe", *argv], out=plain)
    assert plain.getvalue() == ""
    abbreviated = io.StringIO()
    with pytest.raises(SystemExit):
        main(["probe", "--jso", *argv], out=abbreviated)
    assert json.loads(abbreviated.getvalue())["message"] == report["message"]


@pytest.mark.parametrize(
    "argv",
    [
        # Characters a password may hold that no pattern tells from the text around it:
        # ' and / (argparse quotes the URL as given), a space (the shell kept it).
        ["localhost:443", "-x", "http://alice:it's-a-secret@127.0.0.1:3128"],
        ["localhost:443", "-x", "http://alice:pa/ss-secret@127.0.0.1:3128"],
        ["localhost:443", "--bogus=alice:spaced secret@proxy:1"],
        ["alice:it's-a-secret@proxy.example"],
    ],
    ids=["quote", "slash", "space", "stray-target"],
)
def test_cli_argument_errors_withhold_any_password(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        main(["probe", "--json", *argv], out=out)
    assert info.value.code == 2
    shown = out.getvalue() + capsys.readouterr().err
    assert "***@" in shown
    for piece in ("secret", "alice", "it'", "pa/"):
        assert piece not in shown, shown


def test_cli_argument_errors_withhold_only_the_userinfo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A one-letter user name is cut out where it stands before the @, not wherever its
    letter appears in argparse's words (which would spell it out)."""
    with pytest.raises(SystemExit):
        main(["probe", "localhost:443", "-x", "http://u@proxy.example:3128"])
    err = capsys.readouterr().err
    assert "error: unrecognized arguments: -x http://***@proxy.example:3128" in err


@pytest.mark.parametrize("kind", ["missing", "directory", "not-pem"])
def test_cli_probe_unusable_cafile_is_a_usage_error(
    kind: str, tmp_path: pathlib.Path, origin: TLSOrigin
) -> None:
    path = tmp_path / "ca.pem"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-pem":
        path.write_text("not a certificate\n")
    status, text = run("probe", f"localhost:{origin.port}", "--cafile", str(path))
    assert status == 2
    assert text.startswith("janusnet probe: cannot load --cafile")
    assert "Traceback" not in text


def test_cli_probe_insecure_still_shows_the_certificate(origin: TLSOrigin) -> None:
    status, text = run("probe", f"127.0.0.1:{origin.port}", "--insecure")
    assert status == 0, text
    assert "certificate NOT verified" in text
    for detail in ("sha256_fingerprint:", "issuer:", "subject_alt_names: DNS:localhost"):
        assert detail in text
    assert f"peer: 127.0.0.1:{origin.port}" in text


@needs_ipv6
def test_cli_probe_writes_ipv6_in_brackets() -> None:
    import socket

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        free = probe.getsockname()[1]
    status, text = run("probe", f"[::1]:{free}", "--timeout", "3")
    assert status == 1
    assert text.startswith(f"janusnet probe [::1]:{free}\n")
    assert f"cannot connect to [::1]:{free}" in text


def test_cli_probe_proxy_without_scheme_is_http(origin: TLSOrigin, cafile: str) -> None:
    with ConnectProxy() as proxy:
        status, text = run(
            "probe", f"localhost:{origin.port}", "--proxy", proxy.authority, "--cafile", cafile
        )
    assert status == 0, text
    assert "HTTP/1.1 200" in text


def probe_json(*argv: str) -> tuple[int, dict[str, Any]]:
    status, text = run("probe", *argv, "--json")
    return status, json.loads(text)


def step_names(report: dict[str, Any]) -> list[str]:
    return [step["step"] for step in report["steps"]]


@pytest.fixture(scope="module")
def https_proxy(origin: TLSOrigin) -> Iterator[ConnectProxy]:
    """An https:// proxy whose certificate comes from the origin's (private) CA."""
    with ConnectProxy(ssl_context=origin.server_context) as proxy:
        yield proxy


def https_url(proxy: ConnectProxy) -> str:
    return f"https://localhost:{proxy.port}"


def test_cli_probe_https_proxy_shows_its_own_tls_step(
    origin: TLSOrigin, cafile: str, https_proxy: ConnectProxy
) -> None:
    status, report = probe_json(
        f"localhost:{origin.port}",
        "--proxy",
        https_url(https_proxy),
        "--proxy-cafile",
        cafile,
        "--cafile",
        cafile,
    )
    assert status == 0, report
    assert step_names(report) == ["tcp", "proxy-tls", "connect", "tls"]
    proxy_tls = report["steps"][1]
    assert proxy_tls["version"].startswith("TLSv1.")
    assert proxy_tls["cipher"]
    assert proxy_tls["server_hostname"] == "localhost"
    assert "DNS:localhost" in proxy_tls["subject_alt_names"]
    assert proxy_tls["issuer"] and proxy_tls["not_after"]


def test_cli_probe_cafile_is_not_the_proxys_ca(
    origin: TLSOrigin, cafile: str, https_proxy: ConnectProxy
) -> None:
    """--cafile trusts the origin's CA only: the proxy's handshake fails, and is named."""
    status, text = run(
        "probe", f"localhost:{origin.port}", "--proxy", https_url(https_proxy), "--cafile", cafile
    )
    assert status == 1
    assert "proxy-tls FAIL" in text and "tcp       ok" in text
    assert "HandshakeError (-111)" in text and "certificate verify failed" in text
    assert "presented_certificate:" in text and "unverified handshake" in text
    assert "FAILED at step proxy-tls" in text


def test_cli_probe_proxy_cafile_is_not_the_origins_ca(
    origin: TLSOrigin, cafile: str, https_proxy: ConnectProxy
) -> None:
    status, report = probe_json(
        f"localhost:{origin.port}", "--proxy", https_url(https_proxy), "--proxy-cafile", cafile
    )
    assert status == 1
    assert step_names(report) == ["tcp", "proxy-tls", "connect", "tls"]
    assert [step["ok"] for step in report["steps"]] == [True, True, True, False]
    assert (report["steps"][-1]["error"], report["steps"][-1]["code"]) == ("HandshakeError", -111)


def test_cli_probe_insecure_is_for_the_origin_only(
    origin: TLSOrigin, cafile: str, https_proxy: ConnectProxy
) -> None:
    target, url = f"localhost:{origin.port}", https_url(https_proxy)
    status, report = probe_json(target, "--proxy", url, "--insecure")
    assert status == 1
    assert step_names(report) == ["tcp", "proxy-tls"]
    status, report = probe_json(target, "--proxy", url, "--proxy-insecure", "--cafile", cafile)
    assert status == 0, report
    proxy_tls, tls = report["steps"][1], report["steps"][3]
    assert "NOT verified" in proxy_tls["summary"] and "NOT verified" not in tls["summary"]
    assert "DNS:localhost" in proxy_tls["subject_alt_names"]
    assert len(proxy_tls["sha256_fingerprint"]) == 64


def test_cli_probe_proxy_not_speaking_tls_fails_at_proxy_tls(origin: TLSOrigin) -> None:
    with TLSOrigin(mode=OriginMode.GARBAGE) as plain:  # answers a ClientHello with non-TLS
        status, report = probe_json(
            f"localhost:{origin.port}", "--proxy", f"https://{plain.authority}"
        )
    assert status == 1
    assert step_names(report) == ["tcp", "proxy-tls"]
    failed = report["steps"][-1]
    assert (failed["error"], failed["code"], failed["status"]) == ("HandshakeError", -111, None)
    assert "presented_certificate" not in failed  # not a certificate failure: nothing to show


def test_cli_probe_stalled_proxy_handshake_times_out_at_proxy_tls(origin: TLSOrigin) -> None:
    with TLSOrigin(mode=OriginMode.STALL) as stall:
        status, report = probe_json(
            f"localhost:{origin.port}",
            "--proxy",
            f"https://localhost:{stall.port}",
            "--timeout",
            "0.5",
        )
    assert status == 1
    assert step_names(report) == ["tcp", "proxy-tls"]
    assert report["steps"][-1]["error"] == "TimeoutError"
    summary = report["steps"][-1]["summary"]
    assert summary.startswith("TimeoutError: ")
    assert "0.5 s deadline expired during the TLS handshake with the proxy" in summary


def test_cli_probe_timeout_says_what_it_waited_for(origin: TLSOrigin) -> None:
    with ConnectProxy(behaviour=ProxyBehaviour.NEVER_ANSWER) as proxy:
        status, text = run(
            "probe", f"localhost:{origin.port}", "--proxy", proxy.url, "--timeout", "0.5"
        )
        authority = proxy.authority
    assert status == 1
    failed = next(line for line in text.splitlines() if " FAIL " in line)
    assert failed.split()[0] == "connect"
    assert (
        f"TimeoutError: CONNECT localhost:{origin.port} via proxy {authority}: the 0.5 s "
        "deadline expired while waiting for the proxy's reply"
    ) in failed


def test_cli_probe_direct_timeout_names_the_tls_handshake(cafile: str) -> None:
    with TLSOrigin(mode=OriginMode.STALL) as stall:
        target = f"localhost:{stall.port}"
        status, report = probe_json(target, "--cafile", cafile, "--timeout", "0.5")
    assert status == 1
    failed = report["steps"][-1]
    assert (failed["step"], failed["error"]) == ("tls", "TimeoutError")
    assert failed["summary"] == (
        f"TimeoutError: connecting to {target}: the 0.5 s deadline expired "
        "during the TLS handshake"
    )


def test_cli_pending_explanation_of_a_direct_server_that_speaks_first() -> None:
    """TLS at once to a STARTTLS port (SMTP's 25): when the greeting came before the
    ClientHello (-112; after it, -111 quotes it), the probe quotes it and says the
    server may speak first."""
    text = _pending_explanation(PendingDataError("x", pending=11), None, "220 ready")
    assert text.startswith(
        "PendingDataError (-112): the server sent 11 byte(s) before TLS started, "
        "beginning '220 ready'; refused: the server speaks first (an SMTP"
    )


def test_cli_probe_injected_bytes_are_explained_for_a_cli_user(
    origin: TLSOrigin, cafile: str
) -> None:
    with ConnectProxy(behaviour=ProxyBehaviour.EXTRA_BYTES) as proxy:
        status, text = run(
            "probe", f"localhost:{origin.port}", "--proxy", proxy.url, "--cafile", cafile
        )
        _, report = probe_json(
            f"localhost:{origin.port}", "--proxy", proxy.url, "--cafile", cafile
        )
    assert status == 1
    failed = next(line for line in text.splitlines() if " FAIL " in line)
    assert failed.split()[0] == "tls"
    assert "PendingDataError (-112): " in failed
    assert (
        "came through the tunnel after the proxy's 200 reply, before TLS started, "
        "beginning 'INJECTED'" in failed
    )
    assert "refused" in failed and "injected" in failed and "speaks first" in failed
    assert "read them first" not in text  # advice for API callers, not for the CLI
    step = report["steps"][-1]
    assert (step["step"], step["error"], step["code"]) == ("tls", "PendingDataError", -112)


def test_cli_probe_407_without_credentials_says_none_were_given(origin: TLSOrigin) -> None:
    with ConnectProxy(auth=("alice", "right")) as proxy:
        status, text = run("probe", f"localhost:{origin.port}", "--proxy", proxy.url)
        _, report = probe_json(f"localhost:{origin.port}", "--proxy", proxy.url)
        authority = proxy.authority
    assert status == 1
    assert "no credentials given" in text and "credentials rejected" not in text
    assert f"http://USER:PASSWORD@{authority}" in text
    assert "credentials_given: no\n" in text and "False" not in text
    failed = report["steps"][-1]
    assert (failed["status"], failed["credentials_given"]) == (407, False)


@pytest.mark.parametrize(
    "args",
    [
        ["--proxy", f"socks5://u:{SECRET}@127.0.0.1:1080"],
        ["--proxy", "", "--cafile", __file__],  # not a certificate file
    ],
    ids=["bad-proxy-url", "bad-cafile"],
)
def test_cli_probe_json_usage_error_is_json(args: list[str]) -> None:
    """With --json every outcome is JSON, a usage error (exit 2) included."""
    status, text = run("probe", "localhost:443", "--json", *args)
    assert status == 2
    report = json.loads(text)
    assert report["ok"] is False and report["error"] == "UsageError" and report["message"]
    assert SECRET not in text


def test_cli_probe_ctrl_c_before_the_first_step_still_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while the CA bundle loads (before any step) gives the report too: JSON
    with "interrupted", not an empty output."""
    import janusnet.__main__ as cli

    def interrupted(cafile: str | None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "create_ssl_context", interrupted)
    status, text = run("probe", "localhost:443", "--proxy", "", "--json")
    assert status == 130
    report = json.loads(text)
    assert report["interrupted"] is True and report["ok"] is False and report["steps"] == []


def test_cli_probe_refuses_a_certificate_with_a_common_name_only(tmp_path: pathlib.Path) -> None:
    """No subjectAltName: janusnet does not fall back to the subject's CN (RFC 6125), and
    the probe must not pass what a janusnet program refuses (its --cafile context used
    to allow the fallback)."""
    import socketserver
    import ssl
    import threading

    ca_pem, cert_pem = unusual_certificate(names=[("CN", "localhost")])
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem")

    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(5)
            try:
                with server_context.wrap_socket(self.request, server_side=True) as tls:
                    tls.recv(1)
            except OSError:  # the probe refuses the certificate: an alert, or just a close
                pass

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handshake) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            status, text = run(
                "probe",
                f"localhost:{server.server_address[1]}",
                "--cafile",
                str(tmp_path / "ca.pem"),
                "--proxy",
                "",
                "--timeout",
                "5",
            )
        finally:
            server.shutdown()
            thread.join()
    assert status == 1, text
    assert "tls       FAIL" in text and "Hostname mismatch" in text, text
    assert "its CN 'localhost' does not count: names are checked against the" in text, text


@pytest.mark.parametrize("credentials", [True, False], ids=["with-credentials", "without"])
def test_cli_probe_407_with_only_unsupported_schemes_says_so(
    origin: TLSOrigin, credentials: bool
) -> None:
    """Credentials or not: the advice is that janusnet cannot answer these schemes (not
    "put credentials in the URL", which would not help)."""
    import socketserver
    import threading

    class NtlmOnly(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := self.request.recv(4096)):
                head += chunk
            self.request.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b"Proxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), NtlmOnly) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        userinfo = f"alice:{SECRET}@" if credentials else ""
        url = f"http://{userinfo}127.0.0.1:{server.server_address[1]}"
        try:
            status, text = run("probe", f"localhost:{origin.port}", "--proxy", url)
        finally:
            server.shutdown()
            thread.join()
    assert status == 1
    assert "it offers only ntlm, negotiate; the probe answers Basic and Digest" in text
    assert "a janusnet.ProxyAuth flow answers other schemes" in text
    assert "credentials rejected" not in text
    assert "no credentials given" not in text
    assert SECRET not in text


@pytest.fixture(scope="module")
def wrong_name(origin: TLSOrigin) -> Iterator[TLSOrigin]:
    """A server whose certificate (from the trusted CA) names another host."""
    with TLSOrigin(ca=origin.ca, hostnames=["wrong.example"]) as server:
        yield server


def test_cli_probe_hostname_mismatch_shows_the_presented_certificate(
    wrong_name: TLSOrigin, cafile: str
) -> None:
    status, report = probe_json(f"localhost:{wrong_name.port}", "--cafile", cafile)
    assert status == 1
    failed = report["steps"][-1]
    assert (failed["step"], failed["error"], failed["code"]) == ("tls", "HandshakeError", -111)
    presented = failed["presented_certificate"]
    assert "unverified handshake" in presented["note"]
    assert presented["subject_alt_names"] == ["DNS:wrong.example"]
    assert presented["issuer"] and presented["not_after"] and presented["subject"]


def test_cli_probe_untrusted_origin_through_proxy_shows_the_certificate(
    origin: TLSOrigin, cafile: str
) -> None:
    with ConnectProxy() as proxy:
        status, text = run("probe", f"localhost:{origin.port}", "--proxy", proxy.url)
        requests = len(proxy.log)
    assert status == 1
    assert "tls       FAIL" in text and "certificate verify failed" in text
    assert "presented_certificate:" in text and "DNS:localhost" in text
    assert requests == 2  # the probe's CONNECT, and the diagnostic handshake's


def test_cli_probe_unreachable_json_has_structured_error() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    status, report = probe_json(f"127.0.0.1:{free}", "--timeout", "3")
    assert status == 1
    failed = report["steps"][-1]
    assert (failed["step"], failed["error"], failed["code"], failed["status"]) == (
        "tcp",
        "ConnectError",
        None,
        None,
    )
    assert "cannot connect" in failed["summary"]


@pytest.mark.parametrize("variable", ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
def test_cli_probe_uses_the_proxy_from_the_environment(
    variable: str, origin: TLSOrigin, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv(variable, proxy.authority)
        status, text = run("probe", f"localhost:{origin.port}", "--cafile", cafile)
        targets = [record.target for record in proxy.log]
        authority = proxy.authority
    assert status == 0, text
    assert text.startswith(
        f"janusnet probe localhost:{origin.port} via proxy {authority} (from {variable})"
    )
    assert targets == [f"localhost:{origin.port}"]


@pytest.mark.parametrize(
    ("environment", "argv", "proxied"),
    [
        ({"NO_PROXY": "localhost"}, [], False),
        ({"no_proxy": "example.com, .localhost"}, [], False),
        ({"NO_PROXY": "example.com"}, [], True),
        ({"NO_PROXY": "*"}, [], False),
        ({"NO_PROXY": "localhost"}, ["--noproxy", ""], True),  # --noproxy replaces it
        ({}, ["--noproxy", "*"], False),
        ({}, ["--proxy", ""], False),  # --proxy "": direct, whatever the environment
        ({"NO_PROXY": "localhost"}, ["--proxy", "PROXY"], False),  # as curl: also --proxy
    ],
)
def test_cli_probe_no_proxy_rules(
    environment: dict[str, str],
    argv: list[str],
    proxied: bool,
    origin: TLSOrigin,
    cafile: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        argv = [proxy.url if arg == "PROXY" else arg for arg in argv]
        status, report = probe_json(f"localhost:{origin.port}", "--cafile", cafile, *argv)
        requests = len(proxy.log)
        authority = proxy.authority
    assert status == 0, report
    assert requests == (1 if proxied else 0)
    assert step_names(report) == (["tcp", "connect", "tls"] if proxied else ["tcp", "tls"])
    assert report["proxy"] == (authority if proxied else None)


def test_cli_probe_says_why_it_went_direct(
    origin: TLSOrigin, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "localhost")
    status, text = run("probe", f"localhost:{origin.port}", "--cafile", cafile)
    assert status == 0, text
    assert "direct (NO_PROXY matches; proxy from HTTPS_PROXY not used)" in text.splitlines()[0]


def test_cli_probe_says_why_empty_proxy_option_went_direct(
    origin: TLSOrigin, cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    status, text = run("probe", f"localhost:{origin.port}", "--cafile", cafile, "--proxy", "")
    assert status == 0, text
    assert text.splitlines()[0] == (
        f'janusnet probe localhost:{origin.port} direct (--proxy "" given; '
        "proxy from https_proxy not used)"
    )
    status, report = probe_json(f"localhost:{origin.port}", "--cafile", cafile, "--proxy", "")
    assert status == 0, report
    assert (report["proxy"], report["proxy_from"], report["proxy_bypassed_by"]) == (
        None,
        "https_proxy",
        "--proxy",
    )


def test_cli_probe_empty_proxy_option_without_environment_says_nothing(
    origin: TLSOrigin, cafile: str
) -> None:
    status, report = probe_json(f"localhost:{origin.port}", "--cafile", cafile, "--proxy", "")
    assert status == 0, report
    assert (report["proxy"], report["proxy_from"]) == (None, None)
    assert report["proxy_bypassed_by"] is None  # nothing was bypassed: null, as documented


def test_cli_probe_bad_proxy_in_environment_is_a_usage_error(
    origin: TLSOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", f"ftp://alice:{SECRET}@proxy:21")
    status, text = run("probe", f"localhost:{origin.port}")
    assert status == 2
    assert text.startswith("janusnet probe: https_proxy: ")
    assert SECRET not in text and "Traceback" not in text


def test_cli_probe_unusable_proxy_cafile_is_a_usage_error(
    tmp_path: pathlib.Path, origin: TLSOrigin
) -> None:
    status, text = run(
        "probe", f"localhost:{origin.port}", "--proxy-cafile", str(tmp_path / "missing.pem")
    )
    assert status == 2
    assert text.startswith("janusnet probe: cannot load --proxy-cafile")


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """A ``--help`` output, exit status checked, on one line (argparse wraps lines)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_cli_probe_help_explains_target_options_and_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(["probe", "--help"], capsys)
    for needle in (
        "[::1]:443",
        "--proxy-cafile FILE",
        "--proxy-insecure",
        "--noproxy LIST",
        "https_proxy",
        "0 every step succeeded",
        "1 a step failed",
        "2 usage error",
        "second, unverified handshake",
        "SHA-256 fingerprint",
    ):
        assert needle in text, needle


def test_cli_without_a_command_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: janusnet [-h] [--version] {probe,demo} ..." in err
    assert "the following arguments are required: {probe,demo}" in err


def test_cli_demo_help_describes_it(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["demo", "--help"], capsys)
    for needle in (
        "$Sock_SSL_On flow",
        "on loopback",
        "pip install 'janusnet[testing]'",
        "ProxyTunnel(...).open_tls()",
        "--backend {asyncio,trio} the event loop the client runs on",
        "trio needs trio installed",
    ):
        assert needle in text, needle


def test_cli_demo_without_trustme_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme -> ImportError
    status, text = run("demo")
    assert status == 2
    assert "pip install 'janusnet[testing]'" in text
    assert "Traceback" not in text


def test_cli_demo_trio_without_trio_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)  # as on a machine without trio
    status, text = run("demo", "--backend", "trio")
    assert status == 2
    assert "pip install trio" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_demo_runs_every_step(backend: str) -> None:
    status, text = run("demo", "--backend", backend)
    assert status == 0, text
    for step in (
        f"backend: {backend}\n",
        "1. connect",
        "with the client port definition 'DEMO' (a janusnet.ClientPort;",
        "2. set LINEND",
        "3. sent: CONNECT",
        "4. status line: 'HTTP/1.1 200 Connection established' (ended by parse token #1, CRLF)",
        "5. read headers",
        "6. ssl_on(): TLSv1.",
        "; certificate verified for localhost\n",
        "   certificate: no CN in the subject; subjectAltName: DNS:localhost",
        "   issued by: O=trustme",
        "7. sent: GET",
        "8. reply:",
        "| HTTP/1.1 200 OK",
        "| hello from janusnet origin: GET /demo",
        "ProxyTunnel(proxy_url).open_tls(host, port) does steps 1-6 in one call.",
    ):
        assert step in text, step
    assert "prsindx" not in text
    assert "Testing cert" not in text  # the leaf's OU is not shown as if it were its name


def test_cli_entry_point_runs_as_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "janusnet", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pathlib.Path(__file__).parent,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("janusnet ")


def test_testing_helpers_without_trustme_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from janusnet.testing._origin import new_ca

    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'janusnet\[testing\]'"):
        new_ca()
    with pytest.raises(ModuleNotFoundError, match=r"janusnet\.testing needs trustme"):
        TLSOrigin()


def _janusnet_process(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "janusnet", *args], stderr=subprocess.PIPE, **kwargs
    )


def _sigint_as_in_a_terminal() -> None:
    """``preexec_fn``: SIGINT back to its default in the child. A runner that starts the
    suite with SIGINT ignored (a background job of a non-interactive shell) passes that
    on, and Python then installs no KeyboardInterrupt handler: Ctrl-C could not be
    tested."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen[bytes], *, group: bool = False) -> tuple[bytes, bytes]:
    """``proc``'s output and errors once it ends; killed (its whole group) if it does not,
    so no process outlives the test."""
    import signal

    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.communicate()
        raise


def test_cli_reader_going_away_is_quiet() -> None:
    """``janusnet demo | head -c 5``: no traceback when the pipe closes early."""
    proc = _janusnet_process("demo", stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(5) == b"janus"
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr


def test_cli_with_stdout_closed_is_quiet() -> None:
    """``janusnet probe ... >&-``: the steps go nowhere, the exit status still tells."""
    proc = subprocess.Popen(  # the shell closes fd 1 before janusnet starts
        ["sh", "-c", 'exec "$0" -m janusnet probe 127.0.0.1:1 >&-', sys.executable],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in stderr, stderr


def test_cli_unwritable_stdout_is_one_line() -> None:
    """``janusnet probe ... > /dev/full``: one line on stderr, no traceback."""
    if not pathlib.Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb") as full:
        proc = _janusnet_process("probe", "127.0.0.1:1", stdout=full)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in stderr, stderr
    assert b"cannot write the output" in stderr


def test_cli_probe_escapes_what_a_hostile_proxy_sends(origin: TLSOrigin) -> None:
    """Reason phrase and headers from the proxy are printed escaped: an escape sequence
    in them cannot retitle, clear or repaint the operator's terminal."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 403 Forbidden \x1b]0;PWNED\x07\x1b[2J\r\n"
                b"X-Evil: \x1b[1;31mred\x1b[0m\r\nContent-Length: 0\r\n\r\n"
            )

    thread = threading.Thread(target=refuse)
    thread.start()
    try:
        port = listener.getsockname()[1]
        status, text = run(
            "probe", f"localhost:{origin.port}", "--proxy", f"http://127.0.0.1:{port}"
        )
    finally:
        thread.join(5)
        listener.close()
    assert status == 1
    assert "\\x1b]0;PWNED\\x07\\x1b[2J" in text
    assert "X-Evil: \\x1b[1;31mred\\x1b[0m" in text
    assert not any(ch in text for ch in "\x1b\x07")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_probe_ctrl_c_reports_the_steps_done(as_json: bool) -> None:
    """Ctrl-C during a step: the steps done so far, no traceback, then the end by SIGINT."""
    import signal
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        number = silent.getsockname()[1]
        args = ["probe", f"127.0.0.1:{number}", "--timeout", "30"]
        proc = _janusnet_process(
            *args,
            *(["--json"] if as_json else []),
            stdout=subprocess.PIPE,
            preexec_fn=_sigint_as_in_a_terminal,
        )
        conn, _ = silent.accept()  # TCP done: the probe now waits in its TLS step
        with conn:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            out, err = _finish(proc)
    # Ended by SIGINT itself (after its report), so a shell loop stops too (bash: 130).
    assert proc.returncode == -signal.SIGINT, (proc.returncode, out, err)
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err
    if as_json:
        report = json.loads(out)
        assert report["interrupted"] is True and report["ok"] is False
        assert [step["step"] for step in report["steps"]] == ["tcp"]
    else:
        assert b"tcp       ok" in out and b"result: INTERRUPTED" in out, out


def test_cli_probe_direct_to_a_zone_id_address_is_no_usage_error() -> None:
    """A zone ID cannot go to a proxy, but a direct probe may use one: it fails (or not)
    at its TCP step, like any address."""
    status, text = run("probe", "[fe80::1%lo]:9", "--timeout", "3", "--proxy", "")
    assert status == 1, text
    assert "tcp       FAIL" in text and "zone" not in text
    with pytest.raises(SystemExit) as info:
        main(["probe", "[fe80::zz%lo]:9"])
    assert info.value.code == 2


def test_cli_ctrl_c_stops_a_shell_loop_of_probes() -> None:
    """bash stops ``for ...; do janusnet probe ...; done`` at Ctrl-C only when the command
    died by SIGINT (a command that returns 130 "handled" it, and the loop goes on)."""
    import signal
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as silent:
        number = silent.getsockname()[1]
        script = (
            f'for i in 1 2 3; do "$0" -m janusnet probe 127.0.0.1:{number} --timeout 30; '
            'echo "after $i: $?"; done; echo finished'
        )
        shell = subprocess.Popen(
            ["bash", "-c", script, sys.executable],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, as a terminal's job is
            preexec_fn=_sigint_as_in_a_terminal,
        )
        conn, _ = silent.accept()
        with conn:
            time.sleep(0.5)
            os.killpg(shell.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
            out, _ = _finish(shell, group=True)
    assert b"after 2" not in out and b"finished" not in out, out


def test_cli_a_cancelled_main_task_counts_as_ctrl_c() -> None:
    """On Python 3.10 anyio's backported asyncio runner lets Ctrl-C out as the main task's
    ``CancelledError`` (tasks there have no ``uncancel()``): the command line must still
    see a ``KeyboardInterrupt``, report and end by SIGINT, not print a traceback. The
    same escape, made on purpose, on any version:"""
    import asyncio

    from janusnet._demo import run_interruptible

    async def cancelled_from_outside() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_soon(task.cancel)
        await asyncio.sleep(30)

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(cancelled_from_outside)
    assert run_interruptible(asyncio.sleep, 0, "done") == "done"


@pytest.mark.parametrize(
    ("variable", "advice"),
    [
        ("SSL_CERT_FILE", 'if the CA is in that bundle, --cafile "$SSL_CERT_FILE" trusts it'),
        ("SSL_CERT_DIR", "--cafile FILE trusts a CA file (the probe takes no directory)"),
    ],
)
def test_cli_probe_names_a_ca_variable_with_its_own_option(
    origin: TLSOrigin, cafile: str, monkeypatch: pytest.MonkeyPatch, variable: str, advice: str
) -> None:
    """The library's -111 says how to pass such a bundle in Python; the probe says it
    with its option (and with --cafile given, the variable is not what is missing)."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, cafile)
    status, text = run("probe", f"localhost:{origin.port}", "--proxy", "", "--json")
    assert status == 1
    [failed] = [step for step in json.loads(text)["steps"] if not step["ok"]]
    assert failed["summary"].endswith(
        f"({variable} is set, but janusnet reads no such variable: {advice})"
    ), failed["summary"]
    assert "create_ssl_context" not in text
    # --cafile "" is no file: certifi's bundle, never the store the variable names.
    status, text = run("probe", f"localhost:{origin.port}", "--proxy", "", "--cafile", "")
    assert status == 1 and "CERTIFICATE_VERIFY_FAILED" in text
    other = trustme.CA()
    with tempfile.NamedTemporaryFile(suffix=".pem") as file:
        other.cert_pem.write_to_path(file.name)
        target = f"localhost:{origin.port}"
        status, text = run("probe", target, "--proxy", "", "--cafile", file.name)
    assert status == 1 and "is set" not in text

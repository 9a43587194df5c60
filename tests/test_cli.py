"""The janusnet command: probe (through the embedded proxy, or not) and demo."""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from janusnet.__main__ import main
from janusnet.testing import ConnectProxy, OriginMode, TLSOrigin

SECRET = "wr0ng-S3cret"


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
    assert text.rstrip().endswith("result: ok")


def test_cli_probe_json(origin: TLSOrigin, cafile: str) -> None:
    status, text = run("probe", f"127.0.0.1:{origin.port}", "--cafile", cafile, "--json")
    assert status == 0
    report = json.loads(text)
    assert report["ok"] is True
    assert [step["step"] for step in report["steps"]] == ["tcp", "tls"]
    assert report["steps"][1]["version"].startswith("TLSv1.")
    assert all(step["ms"] >= 0 for step in report["steps"])


def test_cli_probe_plaintext_port_names_the_tls_step(cafile: str) -> None:
    with TLSOrigin(mode=OriginMode.PLAIN) as plain:
        status, text = run("probe", f"localhost:{plain.port}", "--cafile", cafile)
    assert status == 1
    assert "tls      FAIL" in text
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
    assert "connect  FAIL" in text
    assert "407" in text and "ProxyAuthenticationRequired" in text
    assert "FAILED at step connect" in text
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
    assert "tcp      FAIL" in text and "ConnectError" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-port"], "HOST:PORT"),
        (["::1:443"], "IPv6"),
        (["host:http"], "HOST:PORT"),
        (["localhost:99999"], "port"),
        (["localhost:0"], "port"),
        (["bad host:443"], "space"),
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


def test_cli_demo_without_trustme_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme -> ImportError
    status, text = run("demo")
    assert status == 2
    assert "pip install 'janusnet[testing]'" in text
    assert "Traceback" not in text


def test_cli_demo_runs_every_step() -> None:
    status, text = run("demo")
    assert status == 0, text
    for step in (
        "1. connect",
        "2. set LINEND",
        "3. sent: CONNECT",
        "4. status line",
        "5. read headers",
        "6. ssl_on(): TLSv1.",
        "7. sent: GET",
        "8. reply:",
        "| HTTP/1.1 200 OK",
        "| hello from janusnet origin: GET /demo",
    ):
        assert step in text


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

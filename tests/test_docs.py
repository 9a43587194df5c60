"""The generated API reference is the one the code gives today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_api.py")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert generated == committed, "run: python docs/gen_api.py > docs/api.md"


def test_public_annotations_resolve_at_run_time() -> None:
    """typing.get_type_hints() works on the public API (doc and validation tools use it)."""
    import inspect
    import typing

    import janusnet
    import janusnet.compat
    import janusnet.testing

    checked = 0
    for module in (janusnet, janusnet.compat, janusnet.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and module is not janusnet.compat:
                # Reprs and tracebacks name the public path, not the private module,
                # and the class's own annotations still resolve.
                assert obj.__module__ == module.__name__, obj
                typing.get_type_hints(obj)
                checked += 1
            if module is janusnet.testing:
                continue  # its signatures name trustme, imported only when used
            members = [obj]
            if inspect.isclass(obj):
                members += [
                    m for n, m in vars(obj).items() if callable(m) and not n.startswith("_")
                ]
                members.append(obj.__init__)
            for member in members:
                if inspect.isfunction(member) or inspect.ismethod(member):
                    typing.get_type_hints(member)
                    checked += 1
    assert checked > 50


def test_certificate_descriptions_are_hashable() -> None:
    import janusnet

    cert = janusnet.CertInfo(subject={"commonName": "a"}, subject_alt_names=(("DNS", "a"),))
    info = janusnet.TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", None, "a", cert, (cert,))
    assert hash(info) == hash(
        janusnet.TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", None, "a", cert, (cert,))
    )
    assert (
        len(
            {
                cert,
                janusnet.CertInfo(subject={"commonName": "a"}, subject_alt_names=(("DNS", "a"),)),
            }
        )
        == 1
    )

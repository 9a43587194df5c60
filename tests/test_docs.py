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

"""Every example in ``examples/`` runs offline and exits 0 (they are documentation)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parent.parent / "examples" / "run_all.py"


def test_examples_all_run_and_exit_zero() -> None:
    result = subprocess.run(
        [sys.executable, str(RUN_ALL)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "examples passed" in result.stdout

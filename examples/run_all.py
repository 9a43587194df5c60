"""Run every example, and the example user test suite, each in its own interpreter.

Exits non-zero when any of them fails (or hangs past its timeout), so ``nox -s examples``
and ``tests/test_examples.py`` catch an example that no longer matches the library.

    python examples/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Each example finishes in about a second; the timeout only stops a hang.
TIMEOUT = 120.0

EXAMPLES = [
    "seed_sslon.py",
    "tunnel_request.py",
    "starttls_line_protocol.py",
    "tunnel_trio.py",
    "hand_over.py",
]


def commands() -> list[tuple[str, list[str]]]:
    runs = [(name, [sys.executable, str(HERE / name)]) for name in EXAMPLES]
    suite = HERE / "user_test_suite"
    pytest = [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "-q"]
    runs.append(("user_test_suite", pytest))
    # As a user with janusnet[testing] and pytest but no pytest-asyncio runs it.
    runs.append(("user_test_suite without pytest-asyncio", [*pytest, "-p", "no:asyncio"]))
    return runs


def main() -> int:
    failed = []
    for name, argv in commands():
        print(f"=== {name}", flush=True)
        started = time.monotonic()
        try:
            result = subprocess.run(argv, cwd=REPO, timeout=TIMEOUT, check=False)
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        status = "ok" if code == 0 else f"FAILED (exit {code})" if code is not None else "HUNG"
        print(f"=== {name}: {status} in {took:.1f}s\n", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    print(f"all {len(commands())} examples passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

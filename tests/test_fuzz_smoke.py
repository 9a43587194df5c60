"""CI smoke run of the fuzz targets in ``fuzz/`` (a few seconds; the long runs are
``nox -s fuzz``).

The targets always run in-process through the harness's seeded mutation loop, so this
test exercises them — and can fail — whether or not atheris is installed. When atheris
is installed, each script also runs under libFuzzer for a bounded number of inputs; that
part skips cleanly without it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from reliability import report

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
TARGETS = ["fuzz_scan", "fuzz_connect"]
#: Inputs per target: about a second each on a slow core.
FALLBACK_ITERATIONS = {"fuzz_scan": 5000, "fuzz_connect": 5000}
ATHERIS_RUNS = 5000

FIGURES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if FIGURES:
        report("fuzz_smoke", {"targets": FIGURES})


def load(name: str) -> ModuleType:
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    return importlib.import_module(name)


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_fallback_loop(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a failing input is saved here as crash-<sha1>
    module = load(name)
    harness = load("_harness")
    started = time.perf_counter()
    done = harness.fallback_loop(module.test_one_input, module.SEEDS, FALLBACK_ITERATIONS[name])
    FIGURES.setdefault(name, {})["fallback_inputs"] = done
    FIGURES[name]["fallback_seconds"] = round(time.perf_counter() - started, 2)
    assert not list(tmp_path.glob("crash-*"))


def test_fuzz_targets_catch_a_broken_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan target really checks: a scanner that drops a byte is caught."""
    module = load("fuzz_scan")
    original = module.Scanner.take

    def lossy_take(self: object, max_bytes: int) -> bytes:
        data: bytes = original(self, max_bytes)
        return data[1:]

    monkeypatch.setattr(module.Scanner, "take", lossy_take)
    harness = load("_harness")
    monkeypatch.setattr(harness, "save_crash", lambda data: Path("not-saved"))
    with pytest.raises(AssertionError):
        harness.fallback_loop(module.test_one_input, module.SEEDS, 2000)


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_under_atheris(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ_DIR / f"{name}.py"),
            f"-runs={ATHERIS_RUNS}",
            "-max_total_time=30",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    FIGURES.setdefault(name, {})["atheris_runs"] = ATHERIS_RUNS
    FIGURES[name]["atheris_seconds"] = round(time.perf_counter() - started, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {ATHERIS_RUNS} runs" in result.stderr

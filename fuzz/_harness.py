"""Shared machinery for the fuzz targets: a byte decoder, and a runner with or without atheris.

Every target is a function ``test_one_input(data: bytes) -> None`` that decodes its
arguments from ``data`` with :class:`Provider` (so an input reproduces the same call
sequence under atheris and under the fallback loop) and raises ``AssertionError`` or an
unexpected exception when an invariant breaks.

``run(target, seeds)`` is each script's ``main``:

* with atheris installed, it hands ``sys.argv`` to libFuzzer (``-runs=N``,
  ``-max_total_time=S``, a corpus directory...), seeding a temporary corpus with ``seeds``
  when no corpus directory is given;
* without atheris (or with ``--no-atheris``), it runs a seeded mutation loop over
  ``seeds`` for ``--iterations N`` inputs (``-runs=N`` is accepted too), so the targets are
  exercised, and can fail, everywhere.

A failing input is written to ``crash-<sha1>`` in the current directory (libFuzzer's own
habit) so it can be replayed: ``python fuzz/fuzz_scan.py crash-...``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

Target = Callable[[bytes], None]

#: Default number of inputs for the fallback loop when neither flag says otherwise.
DEFAULT_ITERATIONS = 10_000


class Provider:
    """Decode typed values from fuzzer bytes; past the end every value is its minimum."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def int_in(self, low: int, high: int) -> int:
        """An int in ``[low, high]`` from one byte (two when the range needs it)."""
        span = high - low + 1
        value = self.byte()
        if span > 256:
            value = value << 8 | self.byte()
        return low + value % span

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def take(self, count: int) -> bytes:
        chunk = self._data[self._pos : self._pos + count]
        self._pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)


def load_atheris() -> ModuleType | None:
    """The atheris module, or None when it is not installed."""
    try:
        return importlib.import_module("atheris")
    except ImportError:
        return None


def _mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.randrange(7)
        at = rng.randint(0, len(buf))
        if choice == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif choice == 1:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice == 2 and buf:  # delete a run
            del buf[at : at + rng.randint(1, 8)]
        elif choice == 3 and buf:  # duplicate a run
            run = buf[at : at + rng.randint(1, 16)]
            buf[at:at] = run
        elif choice == 4:  # splice another seed
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            buf[at:at] = other[start : start + rng.randint(1, 32)]
        elif choice == 5:  # insert an interesting byte
            buf[at:at] = bytes([rng.choice(b"\r\n\x00 :\t\xff0")])
        elif buf:  # overwrite a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf[:4096])


def save_crash(data: bytes) -> Path:
    path = Path(f"crash-{hashlib.sha1(data).hexdigest()}")
    path.write_bytes(data)
    return path


def fallback_loop(
    target: Target, seeds: Sequence[bytes], iterations: int, *, seed: int = 0
) -> int:
    """Run ``iterations`` inputs (the seeds first, then mutants and random bytes).

    Returns:
        The number of inputs run.

    Raises:
        Whatever the target raised, after saving the input as ``crash-<sha1>``.
    """
    rng = random.Random(seed)
    corpus = list(seeds) or [b""]
    for count in range(iterations):
        if count < len(seeds):
            data = seeds[count]
        elif rng.random() < 0.1:
            data = rng.randbytes(rng.randint(0, 256))
        else:
            data = _mutate(rng, rng.choice(corpus), corpus)
        try:
            target(data)
        except BaseException:
            print(f"fuzz: failing input saved as {save_crash(data)}", file=sys.stderr)
            raise
        if count % 97 == 0 and len(corpus) < 512:
            corpus.append(data)
    return iterations


def _pop_flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def run(target: Target, seeds: Sequence[bytes], argv: Sequence[str] | None = None) -> None:
    """The ``main`` of a fuzz script (see the module docstring)."""
    args = list(sys.argv if argv is None else argv)
    iterations_flag = _pop_flag(args, "--iterations")
    no_atheris = "--no-atheris" in args
    args = [arg for arg in args if arg != "--no-atheris"]
    atheris = None if no_atheris else load_atheris()
    files = [Path(arg) for arg in args[1:] if not arg.startswith("-") and Path(arg).is_file()]
    if files:  # replay inputs, e.g. a saved crash
        for path in files:
            target(path.read_bytes())
        print(f"fuzz: replayed {len(files)} input(s) without failure")
        return
    if atheris is None:
        runs = _pop_flag(args, "-runs")
        iterations = int(iterations_flag or runs or DEFAULT_ITERATIONS)
        started = time.perf_counter()
        done = fallback_loop(target, seeds, iterations, seed=int(os.environ.get("FUZZ_SEED", 0)))
        print(
            f"fuzz: {done} inputs without failure (fallback loop, no atheris) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        return
    if iterations_flag is not None:
        args.append(f"-runs={iterations_flag}")
    if not any(not arg.startswith("-") and Path(arg).is_dir() for arg in args[1:]):
        # One working corpus per target, reused by every run (libFuzzer exits the
        # process, so a fresh directory per run could never be removed: they piled up).
        stem = Path(args[0]).stem or "target"
        corpus = Path(tempfile.gettempdir(), f"janusnet-fuzz-{stem}-{os.getuid()}")
        corpus.mkdir(mode=0o700, exist_ok=True)
        for seed_bytes in seeds:
            name = hashlib.sha1(seed_bytes).hexdigest()
            Path(corpus, name).write_bytes(seed_bytes)
        args.append(str(corpus))
    atheris.Setup(args, target)
    atheris.Fuzz()

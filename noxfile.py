"""Developer sessions: ``nox -s lint typecheck tests compat minimums examples bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the sources, tests, examples and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (real squid/tinyproxy tests run when they are installed)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=["3.10", "3.12", "3.13"])
def compat(session: nox.Session) -> None:
    """The test suite on the other supported Pythons (CI runs 3.11); missing ones are skipped."""
    session.install(".[dev]")
    session.run("pytest", *session.posargs)


#: The oldest release that pyproject.toml accepts (its floor) of each runtime dependency
#: and of each one the tests import; the tools (mypy, ruff, nox) and the benchmarks'
#: peers (httpcore, python-socks) take their newest, as the suite does not use them.
MINIMUMS = [
    "anyio==4.10.0",
    "certifi==2024.2.2",
    "cryptography==42.0.0",
    "h11==0.16.0",
    "hypothesis==6.100.0",
    "idna==3.7",
    "trustme==1.1.0",
    "pytest==8.4.0",
    "pytest-asyncio==1.4.0",
    "pyopenssl==24.3.0",
    "pyspnego==0.12.0",
    "trio==0.26.0",
    "truststore==0.9.1",
    "uvloop==0.21.0",
]


@nox.session
def minimums(session: nox.Session) -> None:
    """The test suite with every dependency it uses at the oldest version pyproject.toml
    accepts, so a floor is never a guess (CI runs it)."""
    session.install(".[dev]", *MINIMUMS)
    session.run("pytest", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example offline against the embedded proxy and TLS origin."""
    session.install("-e", ".[dev]")
    session.run("python", "examples/run_all.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside the peers; prints figures and ratios, asserts nothing."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The atheris fuzz targets, run longer than CI's smoke test (posargs go to libFuzzer)."""
    session.install("-e", ".[dev]")  # atheris comes with it where it has wheels
    runs = session.posargs or ["-runs=500000"]
    for target in ("fuzz/fuzz_scan.py", "fuzz/fuzz_connect.py"):
        session.run("python", target, *runs)

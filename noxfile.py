"""Task sessions: tests (= README test command), lint, perf (regression gate), demo, vitbase."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "venv"

TORCH = "torch==2.13.0"  # CPU wheel; never unpinned torch, which pulls GBs of CUDA wheels


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite except benchmarks (what .ci/run runs)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and scripts."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "variants")


@nox.session
def demo(session: nox.Session) -> None:
    """Re-train the bundled demo detector and regenerate the demo labelled set (torch, CPU)."""
    session.install(TORCH, "transformers>=4.45", "scikit-image>=0.24", "-e", ".")
    session.run("python", "variants/train_demo.py", *session.posargs)

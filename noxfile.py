"""Task sessions: tests (= README test command), lint, perf (regression gate), loadcheck, gpu, demo, vitbase."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "venv"

TORCH = "torch==2.13.0"  # CPU wheel; never unpinned torch, which pulls GBs of CUDA wheels
# The linters, pinned (as in pyproject's dev extra): a new ruff or mypy release must not fail an unchanged tree.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite except benchmarks (what .ci/run runs)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), the import layers contract, and mypy over all of bench/, with pinned tools."""
    # the project and its dependencies too: mypy checks bench against the types of the libraries it calls
    session.install("-e", ".[dev]", RUFF, MYPY)
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "variants")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py", "variants")
    session.run("lint-imports")
    session.run("mypy", "bench")


# The gate: `bench ab` of this tree's demo model against the base revision's, both measured in this job,
# interleaved, each block a fresh session. Cross-run `bench compare` against a stored baseline was not
# trustworthy here (8 of 8 fresh runs of unchanged code failed against the committed baseline on a busy
# box); the A/A and A/B counts behind this choice are in the README ("Verdicts you can trust").
# --threads 1: beside a busy neighbour a 2-thread pool waits on it at every op; one thread keeps the gate decided.
PERF_AB = ["--variant", "fp32", "--provider", "cpu", "--batch-size", "1", "--threads", "1"]


@nox.session
def perf(session: nox.Session) -> None:
    """Perf suite (pytest-benchmark) + the regression gate: `bench ab` of variants/demo against the base revision's.

    `-- --base REV` picks the revision to compare with (default HEAD; CI passes the pull request's base
    sha); `-- --against DIR` compares with a model folder instead; `-- --fail-on-inconclusive` makes an
    undecided gate fail too; anything else goes to pytest.
    """
    import io
    import subprocess
    import tarfile
    from pathlib import Path

    session.install("-e", ".[test]")
    args = list(session.posargs)

    def take(flag: str, default: str | None) -> str | None:
        if flag not in args:
            return default
        at = args.index(flag)
        value = args[at + 1]
        del args[at : at + 2]
        return value

    base_rev = take("--base", "HEAD")
    against = take("--against", None)
    strict = "--fail-on-inconclusive" in args
    args = [a for a in args if a != "--fail-on-inconclusive"]
    current = Path("reports/current")
    current.mkdir(parents=True, exist_ok=True)
    summary = current / "compare.md"
    summary.unlink(missing_ok=True)
    if against is None:  # the base revision's model folder, as committed
        archive = subprocess.run(["git", "archive", str(base_rev), "variants/demo"], check=True, capture_output=True)
        target = current / "base"
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
        against = str(target / "variants" / "demo")
        session.log(f"gate: variants/demo (this tree) against {base_rev}'s, in one job")
    # The gate first, so its Markdown table exists for the job summary whatever the suite says.
    session.run(
        "bench",
        "ab",
        "--model-dir",
        "variants/demo",
        "--against",
        against,
        *PERF_AB,
        "--out",
        str(current / "ab"),
        "--summary",
        str(summary),
        *(["--fail-on-inconclusive"] if strict else []),
    )
    session.run("pytest", "tests/benchmarks", f"--benchmark-json={current / 'benchmark.json'}", *args)


@nox.session
def loadcheck(session: nox.Session) -> None:
    """bench load's closed loop against wrk, and its open loop against h2load --rps, on /detect (needs wrk, h2load).

    Default: the demo service on CPU 0 with one ORT thread, both clients on CPU 1, N = 1, 4, 8, 10 s × 3.
    Arguments after -- replace these (see tests/benchmarks/load_crosscheck.py --help).
    """
    if shutil.which("wrk") is None:
        session.skip("wrk is not installed (apt-get install -y wrk)")
    session.install("-e", ".[test]")
    args = session.posargs or [
        "--concurrency",
        "1,4,8",
        "--duration",
        "10",
        "--repeats",
        "3",
        "--server-cpus",
        "0",
        "--client-cpus",
        "1",
        "--serve-arg=--threads",
        "--serve-arg=1",
    ]
    session.run("python", "tests/benchmarks/load_crosscheck.py", *args)
    # the open loop against an independent rate-limited client (h2load --rps; see the script for how open it is)
    if shutil.which("h2load") is None:
        session.log("open-loop cross-check skipped: h2load is not installed (apt-get install -y nghttp2-client)")
    elif not session.posargs:
        session.run("python", "tests/benchmarks/openloop_crosscheck.py", "--rates", "50,100,150", "--duration", "10")


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The prepared GPU check (tests/gpu/check.py) in the current environment: no venv, no download.

    One NVIDIA GPU, ≤ 8 min: bench info, the demo matrix over cpu,cuda,tensorrt × batch 1,8, a ViT-base on
    cuda (IOBinding, CUDA graph, end-to-end) and TensorRT (cold, warm cache), serve + load. Report folder:
    reports/gpu-check (or `-- --out DIR`); `-- --wheels DIR` installs onnxruntime-gpu & co from wheel files first.
    """
    import importlib.util
    import sys

    args = list(session.posargs)
    if "--out" not in args:
        args += ["--out", "reports/gpu-check"]
    # nox's own Python when bench is installed there (e.g. both in .venv), else the `python` on PATH
    python = sys.executable if importlib.util.find_spec("bench") else "python"
    session.run(python, "tests/gpu/check.py", *args, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """Re-train the bundled demo detector and regenerate the demo labelled set (torch, CPU)."""
    session.install(TORCH, "transformers>=4.45", "scikit-image>=0.24", "-e", ".")
    session.run("python", "variants/train_demo.py", *session.posargs)


@nox.session
def vitbase(session: nox.Session) -> None:
    """ViT-base export → every variant; sizes vs the released set (±5%), CPU latency, agreement (exit 1 if off)."""
    # torch from the CPU index (the PyPI Linux wheel pulls GBs of CUDA libraries); pinned, never unpinned.
    session.install(TORCH, "--index-url", "https://download.pytorch.org/whl/cpu")
    session.install("transformers>=4.45", "-e", ".")
    session.run("python", "variants/vitbase_check.py", *session.posargs)

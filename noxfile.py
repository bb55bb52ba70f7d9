"""Task sessions: tests (= README test command), lint, perf (regression gate), loadcheck, demo, vitbase."""

from __future__ import annotations

import shutil

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
    """ruff (lint + format check), the import layers contract, and mypy on the typed core."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "variants")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py", "variants")
    session.run("lint-imports")
    session.run("mypy", "bench/results.py", "bench/compare.py", "bench/timing.py")


# The gate's measurement: the demo bundle's fp32 on one CPU thread (less exposed to neighbours' load
# than ORT's all-cores default, so run-to-run noise stays under the 10 % tolerance).
PERF_RUN = [
    "--model-dir",
    "variants/demo",
    "--variant",
    "fp32",
    "--provider",
    "cpu",
    "--batch-size",
    "1",
    "--iterations",
    "300",
    "--warmup",
    "30",
    "--threads",
    "1",
]
PERF_FLAGS = ("--update-baseline", "--cross-machine")


@nox.session
def perf(session: nox.Session) -> None:
    """Perf suite (pytest-benchmark) + regression gate: demo bundle on CPU vs reports/baseline (exit 1 on a regression).

    `-- --update-baseline` re-measures the baseline on this machine instead; `-- --cross-machine` compares
    with a baseline from another machine (warned in the table); `-- --baseline PATH` picks another baseline
    file (e.g. one CI keeps per runner type); anything else goes to pytest.
    """
    from pathlib import Path

    session.install("-e", ".[test]")
    args = list(session.posargs)
    baseline = "reports/baseline/results.json"
    if "--baseline" in args:
        at = args.index("--baseline")
        baseline = args[at + 1]
        del args[at : at + 2]
    if "--update-baseline" in args:
        session.run("bench", "run", *PERF_RUN, "--out", str(Path(baseline).parent))
        session.log(f"baseline refreshed: {baseline} (commit it)")
        return
    current = Path("reports/current")
    current.mkdir(parents=True, exist_ok=True)
    summary = current / "compare.md"
    summary.unlink(missing_ok=True)
    # The gate first, so its Markdown table exists for the job summary whatever the suite says.
    session.run("bench", "run", *PERF_RUN, "--out", str(current))
    session.run(
        "bench",
        "compare",
        baseline,
        str(current / "results.json"),
        "--summary",
        str(summary),
        *(["--cross-machine"] if "--cross-machine" in args else []),
    )
    session.run(
        "pytest",
        "tests/benchmarks",
        f"--benchmark-json={current / 'benchmark.json'}",
        *[a for a in args if a not in PERF_FLAGS],
    )


@nox.session
def loadcheck(session: nox.Session) -> None:
    """bench load's closed loop against wrk on /detect, same image and N (exit 1 beyond 20%); needs wrk.

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

"""Issue 2's measurements of the harness itself: figures printed, and held to their targets.

A target fails only when the interval says so: the harness overhead fails when even the low end of
its 95 % interval is above 1.03 (likewise the sampler's 1.01), never on one noisy point estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import overhead
import pytest


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Any:
    def show(figure: dict[str, Any]) -> None:
        with capsys.disabled():
            print("\n" + overhead.format_figure(figure))

    return show


def test_harness_overhead(perf_engine: Any, report: Any) -> None:
    fig = overhead.harness_overhead(perf_engine)
    report(fig)
    assert fig["ci_low"] <= fig["target"], "bench's timed loop costs measurably more than a bare session.run loop"


def test_sampler_overhead(perf_engine: Any, report: Any) -> None:
    fig = overhead.sampler_overhead(perf_engine)
    report(fig)
    assert fig["sampler_ticks_per_block"] >= 3, "the sampler did not run during the blocks"
    assert fig["ci_low"] <= fig["target"], "sampling at 10 Hz slows the timed loop measurably"


def test_help_startup(report: Any) -> None:
    fig = overhead.help_startup()
    report(fig)
    assert fig["median_s"] < fig["target_s"], "bench --help imports something heavy at start-up"


@pytest.mark.parametrize("threads", [None, 1], ids=["default-threads", "one-thread"])
def test_run_to_run_spread(perf_bundle: Path, report: Any, threads: int | None) -> None:
    """Reported, not held to a target: this is the noise that makes bench ab the gate to trust."""
    fig = overhead.run_to_run_cv(perf_bundle, threads=threads)
    report(fig)
    assert len(fig["p50_ms"]) == 5 and all(p > 0 for p in fig["p50_ms"])

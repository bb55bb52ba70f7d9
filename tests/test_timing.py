from __future__ import annotations

import time

import pytest

from bench.errors import InputError
from bench.timing import LatencyStats, LoopSpec, timed_loop


def test_stats_hand_checked() -> None:
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.n, s.mean, s.min, s.max, s.p50) == (5, 3.0, 1.0, 5.0, 3.0)
    assert s.std == pytest.approx(1.5811388, rel=1e-6)  # sample std (ddof=1)
    assert s.p90 == pytest.approx(4.6)  # linear interpolation
    assert s.p99 == pytest.approx(4.96)


def test_single_sample_has_zero_std() -> None:
    assert LatencyStats.from_samples([7.0]).std == 0.0


def test_loop_counts_warmup_apart() -> None:
    calls = []
    samples = timed_loop(lambda: calls.append(1), LoopSpec(iterations=5, warmup=3))
    assert len(calls) == 8 and len(samples) == 5
    assert all(s >= 0 for s in samples)


def test_min_time_keeps_going_past_iterations() -> None:
    samples = timed_loop(lambda: time.sleep(0.002), LoopSpec(iterations=1, warmup=0, min_time_s=0.05))
    assert len(samples) > 5
    assert sum(samples) >= 40  # ms


def test_samples_measure_the_call() -> None:
    samples = timed_loop(lambda: time.sleep(0.01), LoopSpec(iterations=3, warmup=0))
    assert min(samples) >= 9.5


def test_progress_callback_sees_every_sample() -> None:
    seen: list[int] = []
    timed_loop(lambda: None, LoopSpec(iterations=4, warmup=1), lambda i, ms: seen.append(i))
    assert seen == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"iterations": 0}, "--iterations must be ≥ 1"),
        ({"iterations": -3}, "--iterations must be ≥ 1"),
        ({"warmup": -1}, "--warmup"),
        ({"min_time_s": 0}, "--min-time"),
    ],
)
def test_bad_loop_specs(kw: dict, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        LoopSpec(**kw)

"""``bench load --generators N``: the schedule split into N streams, raw samples pooled, each stream's ceiling judged.

The split and the merge are checked as pure functions; the whole path (spawned processes, a common start,
the merge) against a real ``bench serve`` on 127.0.0.1. The Ray-actor variant is in tests/test_ray.py.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import load
from bench.cli import main
from bench.errors import InputError
from bench.load import LoadSpec
from bench.load.engine import StreamPart, merge_parts
from bench.load.generators import plan_streams, schedule_times, split_count, split_offsets
from bench.load.payloads import build_payloads
from bench.service import harness

from models import make_bundle

SERVICE_DELAY_MS = 20  # each inference this much slower: latency dominated by a known figure, not by CPU noise


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    from PIL import Image

    from bench.datasets import image_files

    root = tmp_path_factory.mktemp("gen-images")
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray((rng.random((36, 40, 3)) * 255).astype("uint8")).save(root / f"img{i}.png")
    return tuple(image_files(root))


@pytest.fixture(scope="module")
def delayed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = make_bundle(tmp_path_factory.mktemp("gen-bundle") / "tiny")
    env = {"BENCH_FAULTS": json.dumps({"service_delay_ms": SERVICE_DELAY_MS})}
    with harness.serve_subprocess(model_dir, "fp32", "cpu", env=env, ready_timeout_s=120) as base:
        yield base


# --- the split ----------------------------------------------------------------------------------------


def test_constant_streams_are_phase_shifted_copies() -> None:
    rate, n = 30.0, 3
    total = load.arrival_offsets(rate, 2.0, "constant")
    streams = split_offsets(total, "constant", n, seed=0)
    for i, stream in enumerate(streams):
        assert stream[0] == pytest.approx(i / rate)  # phase i / (N · rate) of a stream at rate / N
        assert np.allclose(np.diff(stream), n / rate)
    assert np.array_equal(np.sort(np.concatenate(streams)), total)


def test_poisson_streams_are_independent_poisson_streams_that_add_up() -> None:
    rate, duration, n = 400.0, 10.0, 2
    total = load.arrival_offsets(rate, duration, "poisson", seed=5)
    streams = split_offsets(total, "poisson", n, seed=5)
    assert np.array_equal(np.sort(np.concatenate(streams)), total)  # together: the very same Poisson schedule
    expected = total.size / n
    for stream in streams:
        assert abs(stream.size - expected) <= 4 * math.sqrt(expected)
        gaps = np.diff(stream)
        assert abs(gaps.mean() - n / rate) < 0.1 * n / rate  # each stream: rate / N ...
        assert abs(gaps.std() / gaps.mean() - 1) < 0.1  # ... with exponential gaps (CV 1), not every N-th arrival
    again = split_offsets(total, "poisson", n, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(streams, again, strict=True))  # seeded


def test_plan_shares_rate_concurrency_and_keeps_the_remote_rule(image_paths: tuple[Path, ...]) -> None:
    assert split_count(10, 3) == [4, 3, 3]
    _, jobs = plan_streams(LoadSpec(url="http://127.0.0.1:9", rate=50, duration_s=1, images=image_paths), 2)
    assert [j.offsets.size for j in jobs] == [25, 25] and [j.health for j in jobs] == [True, False]
    _, jobs = plan_streams(LoadSpec(url="http://127.0.0.1:9", rate=None, concurrency=5, images=image_paths), 2)
    assert [j.spec.concurrency for j in jobs] == [3, 2]
    with pytest.raises(InputError, match="not a loopback address"):
        plan_streams(LoadSpec(url="http://192.0.2.10:8007", images=image_paths), 2)
    with pytest.raises(InputError, match="--generators must be between"):
        plan_streams(LoadSpec(url="http://127.0.0.1:9", images=image_paths), 0)
    with pytest.raises(InputError, match="cannot be shared by 4 generators"):
        plan_streams(LoadSpec(url="http://127.0.0.1:9", rate=None, concurrency=3, images=image_paths), 4)


def test_ceiling_bursts_take_turns_before_the_common_start() -> None:
    spec = LoadSpec(url="http://127.0.0.1:9", ceiling_s=1.0)
    ceilings, start = schedule_times(3, spec, now=100.0)
    assert ceilings == sorted(ceilings) and all(b - a >= spec.ceiling_s for a, b in itertools.pairwise(ceilings))
    assert start >= ceilings[-1] + spec.ceiling_s
    no_ceiling, start = schedule_times(3, LoadSpec(url="http://127.0.0.1:9", measure_ceiling=False), now=100.0)
    assert no_ceiling == [None] * 3 and start > 100.0


# --- the merge ----------------------------------------------------------------------------------------


def _part(index: int, samples: list[float], ceiling: float | None, lags: list[float]) -> StreamPart:
    return StreamPart(
        index=index,
        where=f"process {index}",
        samples=[(0.01 * k + index * 0.001, ms) for k, ms in enumerate(samples)],
        lags=lags,
        errors={"503": 1} if index else {},
        examples={"503": "busy"} if index else {},
        sent=len(samples) + (1 if index else 0),
        max_in_flight=2,
        send_end=1.0,
        last_done=1.05,
        scheduled=len(samples) + (1 if index else 0),
        last_offset=0.99,
        ceiling=ceiling,
        health=[{"rss_mb": 100.0, "gpu_mb": None}] * 3 if index == 0 else [],
    )


def test_percentiles_come_from_the_pooled_samples_not_averaged() -> None:
    spec = LoadSpec(url="http://127.0.0.1:9", endpoint="health", rate=100, duration_s=1.0)
    fast, slow = [1.0] * 90 + [2.0] * 10, [50.0] * 30
    parts = [_part(0, fast, 1000.0, [0.1] * 100), _part(1, slow, 1000.0, [0.2] * 30 + [9.0])]
    result = merge_parts(spec, "http://127.0.0.1:9", build_payloads("health", ()), parts)
    pooled = np.array(fast + slow)
    assert result.latency_ms["p50"] == pytest.approx(np.percentile(pooled, 50))
    assert result.latency_ms["p99"] == pytest.approx(np.percentile(pooled, 99))
    averaged = (np.percentile(fast, 99) + np.percentile(slow, 99)) / 2
    assert result.latency_ms["p99"] != pytest.approx(averaged)
    assert result.requests == 131 and result.ok == 130 and result.errors == {"503": 1}
    assert result.send_lag_ms["max"] == 9.0 and result.generator_ceiling_rps == 2000.0
    assert result.valid is True and [g["index"] for g in result.generators] == [0, 1]
    assert result.generators[1]["send_lag_ms"]["max"] == 9.0 and result.generators[0]["load_fraction"] == 0.05
    assert result.server["rss_start_mb"] == 100.0  # the first stream read /health


def test_a_generator_above_70_percent_of_its_ceiling_makes_the_run_invalid() -> None:
    spec = LoadSpec(url="http://127.0.0.1:9", endpoint="health", rate=100, duration_s=1.0)
    parts = [_part(0, [1.0] * 50, 1000.0, [0.1]), _part(1, [1.0] * 50, 60.0, [0.1])]  # 50/s on a 60/s ceiling
    result = merge_parts(spec, "http://127.0.0.1:9", build_payloads("health", ()), parts)
    assert result.valid is False and result.generators[1]["over_ceiling"] is True
    assert result.generators[0]["over_ceiling"] is False
    assert any("generator 1" in w and "invalid" in w for w in result.warnings)
    assert "valid" in result.to_dict() and "generators" in result.to_dict()


def test_one_generator_keeps_the_old_shape() -> None:
    spec = LoadSpec(url="http://127.0.0.1:9", endpoint="health", rate=100, duration_s=1.0)
    result = merge_parts(spec, "http://127.0.0.1:9", build_payloads("health", ()), [_part(0, [1.0] * 10, 500.0, [])])
    data = result.to_dict()
    assert "generators" not in data and "valid" not in data and result.generator_ceiling_rps == 500.0


# --- against a real bench serve ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_generator_processes_merge_like_one(delayed_service: str, image_paths: tuple[Path, ...]) -> None:
    """Same seeded Poisson schedule from 1 and from 2 processes: same requests, p50/p99 within noise."""
    spec = LoadSpec(
        url=delayed_service, rate=16, arrival="poisson", seed=11, duration_s=3.0, images=image_paths, ceiling_s=0.5
    )
    single = load.run_load(spec)
    double = load.run_generators(spec, 2)
    scheduled = load.arrival_offsets(16, 3.0, "poisson", seed=11).size
    assert single.requests == double.requests == scheduled
    assert double.ok == double.requests and double.errors == {}
    assert len(double.samples_ms) == double.latency_ms["n"] == double.ok
    assert [g["requests"] for g in double.generators] == [
        s.size for s in split_offsets(load.arrival_offsets(16, 3.0, "poisson", seed=11), "poisson", 2, 11)
    ]
    assert len({g["where"] for g in double.generators}) == 2  # two processes
    for g in double.generators:
        assert g["ceiling_rps"] is not None and g["ceiling_rps"] > 8 and g["send_lag_ms"]["p99"] is not None
    assert double.valid is True and double.generator_ceiling_rps is not None
    p50_1, p50_2 = single.latency_ms["p50"], double.latency_ms["p50"]
    assert p50_1 >= SERVICE_DELAY_MS and p50_2 >= SERVICE_DELAY_MS
    assert abs(p50_2 - p50_1) <= 0.3 * p50_1 + 5.0, (p50_1, p50_2)
    assert double.latency_ms["p99"] <= 2 * single.latency_ms["p99"] + 20.0
    assert abs(double.achieved_rate - single.achieved_rate) <= 0.1 * single.achieved_rate


@pytest.mark.slow
def test_cli_generators_closed_loop_and_bad_combinations(delayed_service: str, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["load", "--url", delayed_service, "--endpoint", "health", "--duration", "1", "--no-ceiling"]
    p = runner.invoke(main, [*args, "--concurrency", "4", "--generators", "2", "--json"])
    assert p.exit_code == 0, p.output
    doc = json.loads(p.stdout)
    assert doc["mode"] == "closed" and [g["concurrency"] for g in doc["generators"]] == [2, 2]
    assert doc["ok"] == doc["requests"] > 0 and "valid" not in doc  # no ceilings measured: not judged
    p = runner.invoke(main, [*args, "--find-max", "--generators", "2"])
    assert p.exit_code == 2 and "--find-max steps one local generator" in p.output
    p = runner.invoke(main, [*args, "--ray-address", "127.0.0.1:1"])
    assert p.exit_code == 2 and "--ray-address needs --executor ray" in p.output

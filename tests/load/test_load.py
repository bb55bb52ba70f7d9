"""bench.load and bench.service.harness against a real ``bench serve`` on 127.0.0.1 (tiny model), plus the pure
parts (schedules, verdicts).

Every run here is short and bounded; figures are asserted with margins wide enough for a busy 2-core CI box.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import load
from bench.cli import main
from bench.errors import InputError
from bench.load import LoadSpec, engine
from bench.results import LoadResult, RunResult
from bench.service import harness

from models import make_bundle

ARCH_FIELDS = [
    "url",
    "endpoint",
    "mode",
    "arrival",
    "target_rate",
    "achieved_rate",
    "duration_s",
    "requests",
    "ok",
    "errors",
    "latency_ms",
    "send_lag_ms",
    "generator_ceiling_rps",
    "server",
]
LATENCY_KEYS = {"n", "p50", "p90", "p99", "p999", "max", "mean"}
SERVER_KEYS = {"rss_start_mb", "rss_end_mb", "gpu_start_mb", "gpu_end_mb", "leak_suspected"}


# --- fixtures: real images, a real service, a slow one ---------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        pixels = (rng.random((40 + i, 48, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(root / (f"img{i}.png" if i % 2 else f"img{i}.jpg"))
    return root


@pytest.fixture(scope="module")
def image_paths(images: Path) -> tuple[Path, ...]:
    from bench.datasets import image_files

    return tuple(image_files(images))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def service(model_dir: Path) -> Iterator[str]:
    with harness.serve_subprocess(model_dir, "fp32", "cpu", ready_timeout_s=120) as base:
        yield base


@pytest.fixture(scope="module")
def slow_service(model_dir: Path) -> Iterator[str]:
    """The same service, each inference made 50 ms slower on purpose (test-only BENCH_FAULTS hook)."""
    with harness.serve_subprocess(
        model_dir, "fp32", "cpu", env={"BENCH_FAULTS": json.dumps({"service_delay_ms": 50})}, ready_timeout_s=120
    ) as base:
        yield base


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- pure parts: schedules, targets, verdicts, the search ------------------------------------------


def test_constant_schedule_is_exact_and_capped() -> None:
    offsets = load.arrival_offsets(40, 2.5, "constant")
    assert offsets.size == 100
    assert np.allclose(np.diff(offsets), 1 / 40)
    assert load.arrival_offsets(40, 2.5, "constant", cap=7).size == 7


def test_poisson_schedule_is_seeded_and_within_4_sigma() -> None:
    rate, duration = 200.0, 10.0
    expected = rate * duration
    counts = [load.arrival_offsets(rate, duration, "poisson", seed=s).size for s in range(20)]
    assert all(abs(n - expected) <= 4 * math.sqrt(expected) for n in counts)
    assert len(set(counts)) > 1, "different seeds must give different schedules"
    a, b = (load.arrival_offsets(rate, duration, "poisson", seed=7) for _ in range(2))
    assert np.array_equal(a, b)
    gaps = np.diff(a)
    assert abs(gaps.mean() - 1 / rate) < 0.1 / rate  # exponential gaps with mean 1/rate
    assert abs(gaps.std() / gaps.mean() - 1) < 0.15  # coefficient of variation 1, unlike constant arrivals
    assert a.max() < duration


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8007", "http://localhost:1/", "http://[::1]:8007", "http://127.3.2.1"]
)
def test_loopback_targets_are_allowed(url: str) -> None:
    assert load.check_target(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://192.0.2.10:8007", "http://example.com", "https://10.0.0.1/x"])
def test_remote_targets_are_refused_without_allow_remote(url: str) -> None:
    with pytest.raises(InputError, match="loopback"):
        load.check_target(url)
    assert load.check_target(url, allow_remote=True)


def test_remote_url_exits_2_from_the_cli() -> None:
    result = CliRunner().invoke(main, ["load", "--url", "http://192.0.2.10:8007", "--endpoint", "health"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output


def test_bad_flags_are_input_errors() -> None:
    with pytest.raises(InputError):
        LoadSpec(url="http://127.0.0.1:1", rate=10, concurrency=2)
    with pytest.raises(InputError):
        LoadSpec(url="http://127.0.0.1:1", rate=10, duration_s=0)
    with pytest.raises(InputError):
        LoadSpec(url="http://127.0.0.1:1", endpoint="nope")


def test_multipart_is_encoded_once_per_body(image_paths: tuple[Path, ...]) -> None:
    bodies = load.build_payloads("batch", image_paths, files_per_request=3)
    assert len(bodies) == len(image_paths)
    first = bodies[0]
    boundary = first.content_type.split("boundary=")[1]
    assert first.body.count(f"--{boundary}\r\n".encode()) == 3
    assert first.body.endswith(f"--{boundary}--\r\n".encode())
    assert image_paths[0].read_bytes() in first.body
    assert load.build_payloads("health", ()) == [load.Payload(b"", None, 0)]
    with pytest.raises(InputError):
        load.build_payloads("detect", ())


def test_leak_rule() -> None:
    assert load.leak_verdict(None, None, 500) is None
    assert load.leak_verdict(300, 310, 320) is False  # below max(50 MB, 10%)
    assert load.leak_verdict(300, 395, 400) is False  # grew early, then plateaued: warm-up, not a leak
    assert load.leak_verdict(300, 340, 400) is True  # still growing in the second half
    assert load.leak_verdict(2000, 2100, 2180) is False  # 180 MB < 10% of 2 GB
    verdict = load.server_verdict(
        {"rss_mb": 300, "gpu_mb": 1000}, {"rss_mb": 301, "gpu_mb": 1100}, {"rss_mb": 302, "gpu_mb": 1300}
    )
    assert verdict["leak_suspected"] is True  # GPU memory counts as well as RSS


def test_ceiling_warning_near_the_generators_limit() -> None:
    assert load.ceiling_warning(100, 1000) is None
    assert load.ceiling_warning(800, 1000) is not None and "80%" in load.ceiling_warning(800, 1000)
    assert load.ceiling_warning(None, 1000) is None


RULE = load.StepRule()  # the rule both `bench load --find-max` and `bench matrix --with-service` step by


def _step_result(
    rate: float, p99: float, errors: dict[str, int] | None = None, answers: int | None = None
) -> LoadResult:
    """A step as the engine would return it: ``answers`` answers (default: as many as the rule sends), all at
    ``p99`` ms but the fastest half, so the steady-state p99 is ``p99``."""
    n = RULE.step_requests if answers is None else answers
    samples = [p99 / 2] * (n // 2) + [p99] * (n - n // 2)
    rng = np.random.default_rng(int(rate))
    rng.shuffle(samples)
    return LoadResult(
        url="http://127.0.0.1:1",
        endpoint="detect",
        mode="open",
        arrival="constant",
        target_rate=rate,
        achieved_rate=rate,
        duration_s=RULE.step_seconds(rate),
        requests=n,
        ok=n - sum((errors or {}).values()),
        errors=errors or {},
        latency_ms={"n": n, "p50": p99 / 2, "p99": p99},
        send_lag_ms={},
        generator_ceiling_rps=None,
        server={},
        samples_ms=samples,
    )


def _quiet(step: Callable[[float], LoadResult]) -> Callable[[float], tuple[LoadResult, None]]:
    return lambda rate: (step(rate), None)


def test_every_step_holds_five_answers_beyond_its_p99_and_lasts_as_long_as_that_takes() -> None:
    assert RULE.answers_needed == 500  # ≥ 5 beyond p99, as bench compare requires of a tail quantile
    assert RULE.step_requests == 625  # 500 judged after the 20 % warm-up
    assert RULE.step_seconds(10) == pytest.approx(62.5)  # the duration follows from the rate ...
    assert RULE.step_seconds(1000) == load.findmax.MIN_STEP_S  # ... but a steady state takes a few seconds
    assert RULE.min_rate == pytest.approx(625 / load.findmax.MAX_STEP_S)
    few = load.judge_step(_step_result(100, 10.0, answers=100), RULE)
    assert not few.passed and "fewer than the 500" in few.why  # the slowest of 80 is not a p99
    enough = load.judge_step(_step_result(100, 10.0), RULE)
    assert enough.passed and enough.answers == 500 and enough.p99_ci_ms is not None


def test_the_verdict_the_step_record_and_the_plot_use_one_figure(tmp_path: Path) -> None:
    step = _step_result(50, 10.0)
    step.samples_ms = [200.0] * 125 + [10.0] * 500  # a slow warm-up: its answers are not judged
    verdict = load.judge_step(step, RULE)
    assert verdict.passed and verdict.p99_ms == 10.0 and verdict.answers == 500
    summary, _ = load.find_max_rate(lambda r: (step, None), load.StepRule(max_steps=1), start_rate=50)
    recorded = summary["steps"][0]
    assert recorded["p99_ms"] == verdict.p99_ms and recorded["p99_ci_ms"] == verdict.p99_ci_ms
    assert recorded["answers_judged"] == 500 and f"p99 {verdict.p99_ms:.1f}" in recorded["why"]
    # the plot draws each step's recorded p99: the same figure as the verdict, not the whole step's 200 ms tail
    from bench.report import plots
    from bench.results import RunResult

    result = RunResult(environment={}, config={}, service=[{"variant": "fp32", "provider": "cpu", "max_rate": summary}])
    series = plots._service_steps(result)
    assert [s["p99_ms"] for s in series[0][1]] == [10.0]


def test_find_max_answers_a_bracket_with_the_p99_interval_at_each_edge() -> None:
    capacity = 37.0
    asked: list[float] = []

    def step(rate: float) -> LoadResult:
        asked.append(rate)
        return _step_result(rate, 10.0 if rate <= capacity else 400.0)

    rule = load.StepRule(max_steps=12, tolerance=0.05)
    summary, best = load.find_max_rate(_quiet(step), rule, start_rate=5)
    assert asked[:5] == [5, 10, 20, 40, 40]  # a failing step is re-tested before it counts
    assert capacity * 0.95 <= summary["rate_rps"] <= capacity
    assert summary["limited_by"] == "slo" and summary["probes"] == len(summary["steps"]) <= 12
    low, high = summary["bracket"]
    assert low == summary["rate_rps"] and capacity < high <= capacity * 1.05
    passed, failed = summary["highest_pass"], summary["lowest_fail"]
    assert passed["rate"] == low and passed["p99_ms"] == 10.0 and passed["p99_ci_ms"][0] <= 10.0
    assert failed["rate"] == high and failed["p99_ms"] == 400.0 and failed["p99_ci_ms"][1] >= 400.0
    assert summary["rule"]["answers_needed"] == 500 and summary["start_rate"] == 5
    assert best is not None and best.target_rate == summary["rate_rps"]


def test_find_max_retests_a_failure_and_a_transient_one_does_not_cap_the_answer() -> None:
    calls: dict[float, int] = {}

    def step(rate: float) -> LoadResult:
        calls[rate] = calls.get(rate, 0) + 1
        hiccup = rate == 10 and calls[rate] == 1  # one bad step at a low rate (a neighbour's burst)
        return _step_result(rate, 400.0 if hiccup or rate > 70 else 10.0)

    summary, _ = load.find_max_rate(_quiet(step), load.StepRule(max_steps=20), start_rate=5)
    assert summary["rate_rps"] >= 60 and calls[10] == 2
    assert next(s for s in summary["steps"] if s["rate"] == 10 and s["retest"])["passed"]


def test_a_queue_that_grows_through_a_step_fails_it() -> None:
    growing = _step_result(50, 10.0)
    growing.samples_ms = list(np.linspace(2.0, 30.0, 625))  # p99 under the SLO, but latency climbs all along
    verdict = load.judge_step(growing, RULE)
    assert not verdict.passed and "backlog" in verdict.why
    steady = _step_result(50, 10.0)
    steady.samples_ms = [40.0] * 125 + [5.0] * 500  # a slow warm-up is not judged
    assert load.judge_step(steady, load.StepRule(slo_p99_ms=20)).passed


def test_littles_law_flags_an_answer_above_the_closed_loop_capacity() -> None:
    summary = {"rate_rps": 500.0}
    closed = _step_result(200, 10.0)
    closed.mode, closed.concurrency, closed.throughput_rps = "closed", 4, 200.0
    closed.latency_ms["mean"] = 20.0
    warning = load.littles_law_check(summary, closed)
    assert warning is not None and "closed-loop capacity 200" in warning
    assert summary["littles_law_rps"] == 200.0 and load.littles_law_check({"rate_rps": 150.0}, closed) is None


def test_find_max_errors_fail_a_step_and_halving_is_bounded() -> None:
    def step(rate: float) -> LoadResult:
        return _step_result(rate, 5.0, errors={"503": 1} if rate > 3 else None)

    summary, _ = load.find_max_rate(_quiet(step), RULE, start_rate=16)
    assert 2.7 <= summary["rate_rps"] <= 3
    summary, best = load.find_max_rate(_quiet(lambda r: _step_result(r, 500.0)), RULE, start_rate=8)
    assert summary["rate_rps"] is None and summary["limited_by"] == "min_rate" and best is not None
    assert summary["highest_pass"] is None and summary["lowest_fail"]["rate"] == summary["bracket"][1]
    summary, _ = load.find_max_rate(_quiet(lambda r: _step_result(r, 1.0)), RULE, start_rate=8, max_rate=30)
    assert summary["rate_rps"] == 30 and summary["limited_by"] == "max_rate" and summary["lowest_fail"] is None


def test_at_the_budget_the_bracket_so_far_is_reported() -> None:
    clock = [0.0]

    def step(rate: float) -> tuple[LoadResult, None]:
        clock[0] += RULE.step_seconds(rate)  # a step takes its time
        return _step_result(rate, 10.0 if rate <= 100 else 400.0), None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load.findmax.time, "monotonic", lambda: clock[0])
        summary, _ = load.find_max_rate(step, RULE, start_rate=10, deadline=100.0)
    assert summary["limited_by"] == "budget" and "budget reached" in summary["reason"]
    assert summary["bracket"] == [20.0, None] and clock[0] <= 100.0  # 10/s (62.5 s) and 20/s (31 s) fit; 40/s not


def test_the_start_follows_the_closed_loop_capacity() -> None:
    closed = _step_result(100, 10.0)
    for sustained, start in ((237.0, 100.0), (452.0, 200.0), (481.0, 200.0), (1000.0, 500.0), (30.0, 10.0)):
        closed.throughput_rps = sustained
        assert load.findmax.start_from_capacity(closed, RULE) == start  # the 1-2-5 step at or below half
    closed.throughput_rps = 0.3
    assert load.findmax.start_from_capacity(closed, RULE) == RULE.min_rate


def test_noisy_figure_names_why_a_service_answer_is_noisy() -> None:
    from bench.noise import noisy_figure

    quiet = {"noisy": False, "why": None, "others_cpu_cores": 0.01}
    busy = {"noisy": True, "why": "other processes used 1.02 cores", "contended": True}
    assert noisy_figure({"noise": quiet}) is None and noisy_figure(quiet) is None
    assert noisy_figure({"noise": busy}) == "other processes used 1.02 cores"
    summary, _ = load.find_max_rate(lambda r: (_step_result(r, 1.0), busy), RULE, start_rate=8, max_rate=8)
    assert summary["steps"][0]["noise"] == busy and noisy_figure(summary) is not None
    assert summary["highest_pass"]["noise"] == busy


# --- against a real bench serve --------------------------------------------------------------------


@pytest.mark.slow
def test_constant_open_loop_sends_the_requested_number(service: str, image_paths: tuple[Path, ...]) -> None:
    result = load.run_load(LoadSpec(url=service, rate=40, duration_s=2.5, images=image_paths))
    assert result.mode == "open" and result.arrival == "constant"
    assert abs(result.requests - 100) <= 2  # ±2%
    assert result.ok == result.requests and result.errors == {}
    assert abs(result.achieved_rate - 40) <= 0.05 * 40
    assert result.latency_ms["n"] == result.ok == len(result.samples_ms)
    assert set(result.latency_ms) >= LATENCY_KEYS and result.latency_ms["p50"] > 0
    assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.send_lag_ms["p50"] is not None and result.send_lag_ms["max"] >= 0
    assert result.generator_ceiling_rps is not None and result.generator_ceiling_rps > 40
    assert set(result.server) >= SERVER_KEYS
    assert result.server["rss_start_mb"] > 0 and result.server["rss_end_mb"] > 0
    assert result.server["leak_suspected"] is False
    assert list(result.to_dict())[: len(ARCH_FIELDS)] == ARCH_FIELDS


@pytest.mark.slow
def test_poisson_open_loop_count_is_within_4_sigma(service: str, image_paths: tuple[Path, ...]) -> None:
    spec = LoadSpec(
        url=service, rate=40, duration_s=2.5, arrival="poisson", seed=3, images=image_paths, measure_ceiling=False
    )
    result = load.run_load(spec)
    assert abs(result.requests - 100) <= 4 * math.sqrt(100)
    assert result.requests == load.arrival_offsets(40, 2.5, "poisson", seed=3).size  # the seeded schedule, all sent
    assert result.ok == result.requests and result.arrival == "poisson"
    assert result.generator_ceiling_rps is None


@pytest.mark.slow
def test_slow_server_shows_in_open_loop_p99_not_in_closed_loop(
    slow_service: str, image_paths: tuple[Path, ...]
) -> None:
    # One connection, 50 ms per inference: the service can answer ~20/s; asked for 40/s, a backlog builds.
    # Open loop counts from the scheduled send time, so the backlog is in the tail; a closed loop with one
    # client never builds one and sees only the 50 ms (the coordinated-omission blind spot).
    spec = LoadSpec(
        url=slow_service,
        rate=40,
        duration_s=2.0,
        connections=1,
        images=image_paths,
        measure_ceiling=False,
        timeout_s=10,
    )
    open_run = load.run_load(spec)
    closed = load.run_load(
        LoadSpec(url=slow_service, rate=None, concurrency=1, duration_s=1.0, images=image_paths, measure_ceiling=False)
    )
    assert closed.mode == "closed" and closed.target_rate is None and closed.send_lag_ms["p50"] is None
    assert 50 <= closed.latency_ms["p50"] < 300
    assert open_run.ok == open_run.requests == 80
    assert open_run.latency_ms["p99"] > 800  # ~2 s of backlog at the end
    assert open_run.latency_ms["p99"] > 4 * closed.latency_ms["p99"]


@pytest.mark.slow
def test_latency_counts_from_the_scheduled_time(service: str, image_paths: tuple[Path, ...]) -> None:
    # A request the generator sends 300 ms after its scheduled time carries those 300 ms in its latency
    # (and in send lag): the generator's own delay is never hidden.
    import asyncio

    payload = load.build_payloads("detect", image_paths[:1])[0]

    async def late_request() -> engine._Recorder:
        rec = engine._Recorder(record_lag=True)
        request = engine._request(service, "POST", "/detect", payload.body, payload.content_type)
        async with engine._session(1, 10.0) as session:
            await engine._send(session, request, 0, time.perf_counter(), rec)  # on time
            await engine._send(session, request, 1, time.perf_counter() - 0.3, rec)  # 300 ms late
        return rec

    rec = asyncio.run(late_request())
    (_, on_time), (_, late) = sorted(rec.latencies)
    assert late >= 300 > on_time
    assert rec.lags[1] >= 300 > rec.lags[0]


@pytest.mark.slow
def test_slow_server_p99_vs_normal_server(service: str, slow_service: str, image_paths: tuple[Path, ...]) -> None:
    fast = load.run_load(LoadSpec(url=service, rate=20, duration_s=1.5, images=image_paths, measure_ceiling=False))
    slow = load.run_load(LoadSpec(url=slow_service, rate=20, duration_s=1.5, images=image_paths, measure_ceiling=False))
    assert slow.latency_ms["p99"] >= 50
    assert slow.latency_ms["p50"] > fast.latency_ms["p50"] + 30


@pytest.mark.slow
def test_errors_are_counted_not_raised(service: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("this is not an image at all\n" * 10)
    result = load.run_load(
        LoadSpec(url=service, rate=20, duration_s=1.0, images=(bad / "notes.jpg",), measure_ceiling=False)
    )
    assert result.ok == 0 and result.errors == {"415": 20}
    assert "415" in result.error_examples
    assert result.latency_ms["n"] == 0 and result.latency_ms["p99"] is None and result.latency_ms["reason"]

    refused = load.run_load(
        LoadSpec(url=f"http://127.0.0.1:{closed_port()}", endpoint="health", rate=20, duration_s=0.5, timeout_s=2)
    )
    assert refused.requests == 10 and refused.ok == 0 and refused.errors == {"connect": 10}
    assert refused.generator_ceiling_rps is None and refused.warnings
    assert refused.server["rss_start_mb"] is None and refused.server["leak_suspected"] is None


@pytest.mark.slow
def test_generator_stops_by_itself_at_the_cap_and_the_duration(service: str, image_paths: tuple[Path, ...]) -> None:
    t0 = time.monotonic()
    capped = load.run_load(
        LoadSpec(url=service, rate=50, duration_s=600, max_requests=20, images=image_paths, measure_ceiling=False)
    )
    assert capped.requests == 20 and time.monotonic() - t0 < 15
    t0 = time.monotonic()
    closed = load.run_load(
        LoadSpec(url=service, rate=None, concurrency=2, duration_s=1.0, images=image_paths, measure_ceiling=False)
    )
    assert time.monotonic() - t0 < 8 and closed.requests > 0 and closed.wall_s < 2.5
    closed_cap = load.run_load(
        LoadSpec(
            url=service,
            rate=None,
            concurrency=3,
            duration_s=600,
            max_requests=25,
            images=image_paths,
            measure_ceiling=False,
        )
    )
    assert closed_cap.requests == 25


@pytest.mark.slow
def test_generator_stops_when_the_server_never_answers(image_paths: tuple[Path, ...]) -> None:
    # A socket that accepts connections (kernel backlog) but never answers: requests time out, the run ends.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        t0 = time.monotonic()
        result = load.run_load(
            LoadSpec(url=url, rate=10, duration_s=1.0, timeout_s=1.0, images=image_paths, measure_ceiling=False)
        )
        elapsed = time.monotonic() - t0
    assert result.requests == 10 and result.ok == 0 and result.errors == {"timeout": 10}
    assert elapsed < 1.0 + 1.0 + 1.0 + 3.0  # duration + timeout + drain grace + /health probes


def test_a_server_that_hangs_up_counts_as_disconnected(image_paths: tuple[Path, ...]) -> None:
    # A server that reads each request and closes the connection without answering.
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as rude:
        rude.bind(("127.0.0.1", 0))
        rude.listen(64)
        rude.settimeout(0.2)
        stop = threading.Event()

        def hang_up() -> None:
            while not stop.is_set():
                try:
                    conn, _ = rude.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(1.0)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            result = load.run_load(
                LoadSpec(
                    url=f"http://127.0.0.1:{rude.getsockname()[1]}",
                    rate=10,
                    duration_s=0.5,
                    timeout_s=2.0,
                    images=image_paths,
                    measure_ceiling=False,
                )
            )
        finally:
            stop.set()
            thread.join(timeout=5)
    assert result.requests == 5 and result.ok == 0 and result.errors == {"disconnected": 5}
    assert "disconnected" in result.error_examples


@pytest.mark.slow
def test_cli_json_batch_closed_and_out(
    service: str, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # from any working directory
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "load",
            "--url",
            service,
            "--endpoint",
            "batch",
            "--batch-files",
            "3",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--images",
            str(images),
            "--no-ceiling",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert data["mode"] == "closed" and data["endpoint"] == "batch" and data["files_per_request"] == 3
    assert data["ok"] == data["requests"] > 0 and data["errors"] == {}
    assert json.loads((out / "load.json").read_text())["requests"] == data["requests"]


@pytest.mark.slow
def test_cli_find_max_is_bounded_and_answers_a_bracket(service: str, images: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "load",
            "--url",
            service,
            "--find-max",
            "--p99-slo",
            "2000",
            "--rate",
            "100",
            "--duration",
            "0.8",
            "--max-steps",
            "3",
            "--images",
            str(images),
            "--no-ceiling",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    max_rate = data["max_rate"]
    steps = max_rate["steps"]
    assert steps[0]["rate"] == 100 and max_rate["probes"] == len(steps) == 3
    assert all(s["requests"] >= 625 and s["duration_s"] >= 625 / s["rate"] - 0.01 for s in steps)  # not --duration
    assert all(s["answers_judged"] >= 500 or not s["passed"] for s in steps)
    assert max_rate["slo_p99_ms"] == 2000 and max_rate["start_from"] == "--rate"
    assert max_rate["rule"] == load.StepRule(slo_p99_ms=2000, min_step_s=0.8, max_steps=3).record()
    low = max_rate["bracket"][0]
    assert low is not None and max_rate["highest_pass"]["rate"] == low == max_rate["rate_rps"]
    assert max_rate["highest_pass"]["p99_ci_ms"] is not None and "noise" in max_rate
    assert data["target_rate"] == low  # the LoadResult printed is the best step's


@pytest.mark.slow
def test_cli_human_output(service: str) -> None:
    result = CliRunner().invoke(
        main, ["load", "--url", service, "--endpoint", "health", "--rate", "20", "--duration", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "open loop" in result.stdout and "p99" in result.stdout and "generator ceiling" in result.stdout


@pytest.mark.slow
def test_service_figures_entry(model_dir: Path, image_paths: tuple[Path, ...]) -> None:
    entry = harness.service_figures(
        model_dir,
        "fp32",
        "cpu",
        images=image_paths,
        rate=10,
        duration_s=1.0,
        batch_files=3,
        batch_rate=3,
        slo_p99_ms=2000,
        find_max_step_s=0.8,
        find_max_steps=2,
    )
    assert entry["status"] == "ok", entry["reason"]
    assert (entry["variant"], entry["provider"]) == ("fp32", "cpu")
    assert entry["load"]["requests"] == 10 and entry["load"]["ok"] == 10
    assert entry["inprocess_p50_ms"] > 0
    assert entry["overhead_p50_ms"] == pytest.approx(
        entry["load"]["latency_ms"]["p50"] - entry["inprocess_p50_ms"], abs=1e-2
    )
    batch = entry["batch_endpoint"]
    assert batch["files_per_request"] == 3 and batch["ok"] == batch["requests"] == 3
    assert batch["ms_per_image_p50"] == pytest.approx(batch["latency_ms"]["p50"] / 3, abs=1e-2)
    max_rate = entry["max_rate"]
    assert max_rate["slo_p99_ms"] == 2000 and len(max_rate["steps"]) == 2
    # bench load --find-max's rule and start: half the closed-loop capacity, steps of ≥ 500 judged answers
    assert max_rate["start_from"] == "closed-loop capacity" and max_rate["closed_loop_capacity_rps"] > 0
    assert max_rate["rule"]["answers_needed"] == 500 and all(s["requests"] >= 625 for s in max_rate["steps"])
    noise = entry["noise"]
    assert noise["wall_s"] > 0 and noise["threads"] >= 1 and "contended" in noise  # the load phase's noise
    json.dumps(entry, allow_nan=False)


@pytest.mark.slow
def test_service_figures_reports_a_service_that_cannot_start(tmp_path: Path, image_paths: tuple[Path, ...]) -> None:
    entry = harness.service_figures(
        tmp_path / "no-such-model", "fp32", "cpu", images=image_paths, inprocess_p50_ms=1.0, ready_timeout_s=60
    )
    assert entry["status"] == "failed" and "bench serve" in entry["reason"]
    assert entry["load"] is None and entry["max_rate"] is None


def test_the_report_quotes_the_bracket_with_its_intervals_and_why_the_search_stopped() -> None:
    from bench.report.markdown import render_markdown

    fixture = Path(__file__).resolve().parents[1] / "data" / "report" / "results.json"
    result = RunResult.load(fixture)
    busy = {
        "wall_s": 1.0,
        "loadavg_1m": [2.0, 2.0],
        "cpu_count": 2,
        "others_cpu_cores": 1.02,
        "steal_pct": None,
        "cpu_freq_mhz": None,
        "noisy": True,
        "why": "other processes used 1.02 cores",
    }

    def step(rate: float) -> tuple[LoadResult, dict[str, object] | None]:
        return _step_result(rate, 10.0 if rate <= 40 else 400.0), busy if rate > 40 else None

    summary, _ = load.find_max_rate(step, load.StepRule(max_steps=4), start_rate=20)  # 20, 40, 80, 80: max_steps
    assert summary["bracket"] == [40.0, 80.0] and summary["limited_by"] == "max_steps"
    entry = next(e for e in result.service or [] if e.get("max_rate"))
    entry["max_rate"] = summary
    en, th = render_markdown(result, "en"), render_markdown(result, "th")
    service = en.split("## 8. Service")[1]
    assert "| 40–80 (p99 ≤ 50 ms) ⚠ |" in service  # the bracket, not one number; ⚠: a noisy step
    assert "highest passing rate 40 req/s (p99 10.0 ms, 95 % interval 10.0–10.0)" in service
    assert "lowest failing rate 80 req/s (p99 400.0 ms" in service and "the step limit (4 steps)" in service
    assert "⚠ noisy (other processes used 1.02 cores)" in service and "500 answers after its warm-up" in service
    assert "| 40–80 (p99 ≤ 50 ms) ⚠ |" in th and "อัตราสูงสุดที่ผ่าน 40 req/s" in th

"""Replicates, noise records, inconclusive verdicts, calibration and recommendation ties, end to end on real models."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from bench.cli import main
from bench.compare import compare_runs
from bench.noise import NoiseProbe, combine_noise, noise_reasons
from bench.report.analysis import recommend
from bench.report.policy import evaluate_policy, policy_for
from bench.results import CellResult, ModelInfo, RunResult
from bench.runner import REPLICATE_WARMUP, RunOptions
from bench.timing import LoopSpec


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def cell_with(
    samples: list[list[float]], variant: str = "fp32", size_mb: float = 1.0, noisy: bool = False
) -> CellResult:
    flat = [x for group in samples for x in group]
    cell = CellResult(variant=variant, provider="cpu", batch_size=1, samples_ms=flat)
    cell.sample_replicates = [r for r, group in enumerate(samples) for _ in group]
    cell.model = ModelInfo(file=f"model_{variant}.onnx", size_mb=size_mb, sha256=variant * 8)
    cell.latency_ms = {"p50": float(np.median(flat)), "p95": float(np.percentile(flat, 95)), "p99": max(flat)}
    cell.throughput_ips = 1000.0 / float(np.mean(flat))
    cell.memory = {"rss_peak_mb": 100.0}
    cell.accuracy = {"n": 100, "accuracy": 0.99}
    if noisy:
        cell.noise = {"noisy": True, "why": "other processes used 1.00 cores"}
    return cell


def groups(rng: np.random.Generator, scale: float, replicates: int = 8, calls: int = 40) -> list[list[float]]:
    return [list(scale * np.exp(rng.normal(0, 0.02) + rng.normal(0, 0.05, calls))) for _ in range(replicates)]


def test_replicates_share_the_calls_and_only_the_first_gets_the_full_warmup() -> None:
    loops = RunOptions(loop=LoopSpec(iterations=22, warmup=10), replicates=5).replicate_loops()
    assert [lp.iterations for lp in loops] == [5, 5, 4, 4, 4]
    assert [lp.warmup for lp in loops] == [10] + [REPLICATE_WARMUP] * 4
    assert [lp.warmup for lp in RunOptions(loop=LoopSpec(iterations=3, warmup=1), replicates=3).replicate_loops()] == [
        1
    ] * 3
    assert RunOptions(loop=LoopSpec(warmup=0)).as_config()["replicate_warmup"] == 0


def test_bench_run_splits_calls_over_fresh_sessions_and_records_noise(tiny_bundle: Path, tmp_path: Path) -> None:
    res = invoke(
        "run", "--model-dir", tiny_bundle, "--iterations", "40", "--warmup", "2", "--replicates", "4", "--out", tmp_path
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results.json").read_text())
    cell = data["cells"][0]
    assert data["config"]["replicates"] == 4 and data["config"]["gc_disabled_during_timing"] is True
    assert sorted(set(cell["sample_replicates"])) == [0, 1, 2, 3] and len(cell["sample_replicates"]) == 40
    assert cell["replicates"]["count"] == 4 and len(cell["replicates"]["session_create_ms"]) == 4
    assert cell["replicates"]["iterations_per_replicate"] == 10 and len(cell["replicates"]["p50_ms"]) == 4
    noise = cell["noise"]
    assert noise["wall_s"] > 0 and len(noise["loadavg_1m"]) == 2 and isinstance(noise["noisy"], bool)
    assert noise["others_cpu_cores"] >= 0
    assert RunResult.load(tmp_path).cells[0].sample_replicates == cell["sample_replicates"]  # it round-trips


@pytest.mark.slow
def test_noise_probe_sees_another_process_burning_cpu() -> None:
    import multiprocessing
    import time

    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    hog.start()
    try:
        time.sleep(0.2)
        probe = NoiseProbe(threads=os.cpu_count())
        with probe:
            time.sleep(1.0)  # this process idles; the other one burns a core
    finally:
        stop.set()
        hog.join(5)
    figures = probe.figures()
    assert figures["others_cpu_cores"] > 0.5 and figures["noisy"] is True and "other processes" in figures["why"]
    assert figures["contended"] is True and "dilutes latency differences" in figures["why"]


def test_bench_ab_fits_its_threads_beside_a_busy_neighbour_unless_told() -> None:
    import multiprocessing
    import time

    from bench.engine import SessionSpec
    from bench.noise import intra_op_threads
    from bench.runner import fit_threads  # bench run, matrix and ab share it

    if intra_op_threads(None) < 2:
        pytest.skip("one core: no fewer threads to fit")
    told = RunOptions(session=SessionSpec(threads=0))
    assert fit_threads("cpu", told) == (told, None) and fit_threads("cuda", RunOptions()) == (RunOptions(), None)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(0.2)
        fitted, why = fit_threads("cpu", RunOptions())
    finally:
        stop.set()
        for hog in hogs:
            hog.join(5)
    assert fitted.session.threads is not None and 1 <= fitted.session.threads < intra_op_threads(None)
    assert why is not None and "--threads 0 keeps ORT's default" in why


def test_contention_is_bench_threads_plus_the_others_load_beyond_the_cpus() -> None:
    why, contended = noise_reasons(1.0, None, threads=2, cpus=2)
    assert contended and "measure with --threads 1 or a quiet machine" in "; ".join(why)
    assert noise_reasons(1.0, None, threads=1, cpus=2) == (["other processes used 1.00 cores"], False)
    assert noise_reasons(0.1, None, threads=2, cpus=2) == ([], False)  # quiet: bench's own threads are no noise
    assert noise_reasons(1.01, None, threads=1, cpus=2)[1] is False  # one thread beside one busy core: room left
    why, contended = noise_reasons(1.6, 3.0, threads=1, cpus=2)
    assert contended and "measure with a quiet machine" in why[1] and why[2] == "steal 3.0%"
    assert noise_reasons(1.0, None, threads=None, cpus=2)[1] is False  # GPU cells: no CPU threads to contend


def test_blocks_measured_apart_combine_into_one_wall_weighted_noise_record() -> None:
    def block(others: float, wall: float) -> dict[str, object]:
        return {
            "wall_s": wall,
            "loadavg_1m": [0.5, 0.7],
            "cpu_count": 2,
            "others_cpu_cores": others,
            "steal_pct": None,
            "cpu_freq_mhz": None,
            "threads": 2,
            "noisy": others > 0.25,
            "contended": False,
        }

    both = combine_noise([block(0.0, 3.0), block(1.2, 1.0)])
    assert both is not None and both["wall_s"] == 4.0 and both["others_cpu_cores"] == 0.3
    assert both["noisy"] and both["contended"] and both["why"].startswith("other processes used 0.30 cores; ")
    assert combine_noise([block(0.0, 1.0)]) == block(0.0, 1.0) and combine_noise([]) is None


def test_the_served_models_own_cpu_time_is_not_noise() -> None:
    """Beside a load generator the served model burns CPU: that is the measurement, not a neighbour."""
    import multiprocessing
    import time

    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    server.start()
    try:
        time.sleep(0.2)
        everyone, beside = NoiseProbe(2), NoiseProbe(2, own_pids=[server.pid or 0])
        with everyone, beside:
            time.sleep(1.0)
    finally:
        stop.set()
        server.join(5)
    apart = everyone.figures()["others_cpu_cores"] - beside.figures()["others_cpu_cores"]
    assert apart > 0.5  # about the one core the "server" burned (less on a busy box: it shares the cores)


def _spin(stop: object) -> None:
    while not stop.is_set():  # type: ignore[attr-defined]
        sum(range(10_000))


def test_compare_names_noisy_sides_and_fail_on_inconclusive_exits_1(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    wide = [list(1.0 * np.exp(rng.normal(0, 0.3) + rng.normal(0, 0.05, 40))) for _ in range(4)]
    base = RunResult({"machine_id": "m"}, {}, [cell_with(wide)])
    cur = RunResult({"machine_id": "m"}, {}, [cell_with([[x * 1.2 for x in g] for g in wide], noisy=True)])
    result = compare_runs(base, cur)
    row = next(r for r in result.rows if r.metric == "latency_p50_ms")
    assert row.verdict == "inconclusive" and row.mde is not None and row.noisy == ["current"]
    assert "noisy machine" in row.why and any("noisy machine" in w for w in result.warnings)
    assert "1 inconclusive" in result.summary_line() or "inconclusive" in result.summary_line()
    base.write(tmp_path / "b")
    cur.write(tmp_path / "c")
    assert invoke("compare", tmp_path / "b", tmp_path / "c").exit_code == 0
    strict = invoke("compare", tmp_path / "b", tmp_path / "c", "--fail-on-inconclusive")
    assert strict.exit_code == 1 and "inconclusive" in strict.output


def test_a_directional_verdict_between_runs_under_different_load_is_inconclusive() -> None:
    rng = np.random.default_rng(2)
    tight = groups(rng, 1.0)

    def run(scale: float, others: float) -> RunResult:
        cell = cell_with([[x * scale for x in g] for g in tight])
        cell.noise = {"others_cpu_cores": others, "noisy": others > 0.25, "why": f"other processes used {others}"}
        return RunResult({"machine_id": "m"}, {}, [cell])

    def p50(base: RunResult, cur: RunResult) -> str:
        return next(r for r in compare_runs(base, cur).rows if r.metric == "latency_p50_ms").verdict

    assert p50(run(1.0, 0.9), run(1.4, 0.95)) == "regression"  # same load on both sides: the slowdown stands
    assert p50(run(1.0, 0.6), run(1.4, 1.05)) == "inconclusive"  # 0.45 cores more load: it may be the load's
    row = next(r for r in compare_runs(run(1.4, 1.05), run(1.0, 0.3)).rows if r.metric == "latency_p50_ms")
    assert row.verdict == "inconclusive" and "measured under different load" in row.why


def test_a_calibration_widens_cross_run_intervals_and_one_from_elsewhere_is_named_not_used() -> None:
    rng = np.random.default_rng(2)
    base = RunResult({"machine_id": "m"}, {}, [cell_with(groups(rng, 1.0))])
    cur = RunResult({"machine_id": "m"}, {}, [cell_with(groups(rng, 1.0))])
    plain = next(r for r in compare_runs(base, cur).rows if r.metric == "latency_p50_ms")
    here = {"kind": "bench calibration", "machine_id": "m", "cross_run": {"sigma_run": 0.05}}
    widened = compare_runs(base, cur, calibration=here)
    row = next(r for r in widened.rows if r.metric == "latency_p50_ms")
    assert row.ci_high - row.ci_low > plain.ci_high - plain.ci_low and "calibrated run-to-run" in row.why
    assert widened.calibration == {"machine_id": "m", "sigma_run": 0.05, "created": None}
    elsewhere = compare_runs(base, cur, calibration={**here, "machine_id": "other"})
    assert elsewhere.calibration is None and any("another machine (other" in w for w in elsewhere.warnings)


@pytest.mark.slow
def test_bench_calibrate_reports_false_alarms_and_sizing(tiny_bundle: Path, tmp_path: Path) -> None:
    res = invoke(
        "calibrate",
        "--model-dir",
        tiny_bundle,
        "--runs",
        "2",
        "--blocks",
        "3",
        "--iterations",
        "30",
        "--warmup",
        "2",
        "--replicates",
        "3",
        "--target-mde",
        "30%",
        "--out",
        tmp_path,
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    job, run = data["in_job"], data["cross_run"]
    assert data["kind"] == "bench calibration" and job["gates"] == 2 and run["gates"] == 2
    assert 0 <= job["false_alarms"] <= 2 and job["replicates_per_side"] == 3 and run["sigma_run"] >= 0
    assert len(run["run_medians_ms"]) == 3
    assert json.loads((tmp_path / "calibration.json").read_text())["machine_id"] == data["machine_id"]


@pytest.mark.slow
def test_bench_calibrate_on_an_unusable_provider_exits_3(tiny_bundle: Path) -> None:
    res = invoke("calibrate", "--model-dir", tiny_bundle, "--provider", "cuda", "--runs", "2", "--no-cross-run")
    assert res.exit_code == 3, res.output


def test_recommendation_names_a_tie_and_breaks_it_by_file_size() -> None:
    rng = np.random.default_rng(3)
    big = cell_with(groups(rng, 1.00), variant="fp32", size_mb=10.0)
    small = cell_with(groups(rng, 1.01), variant="int8", size_mb=3.0)
    slow = cell_with(groups(rng, 2.00), variant="q4", size_mb=1.0)
    result = RunResult({"machine_id": "m"}, {"reference_variant": "fp32"}, [big, small, slow])
    # latency alone decides here: 100 images cannot bound an accuracy drop to 0.5 pt (that check is inconclusive)
    policy = policy_for(result)
    latency_only = replace(policy, checks={k: v for k, v in policy.checks.items() if k != "max_accuracy_drop_pt"})
    verdict = evaluate_policy(result, latency_only)
    rec = recommend(result, verdict)
    assert {r.cell.variant for r in rec.tied} == {"fp32", "int8"}  # q4 is clearly slower: not tied
    assert rec.choice is not None and rec.choice.cell.variant == "int8" and rec.rule
    detail = rec.as_dict()
    assert detail["choice"]["variant"] == "int8" and len(detail["tied"]) == 2 and detail["rule"]
    low, high = detail["choice"]["interval"]
    assert low <= detail["choice"]["value"] <= high


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["session", "process"])
def test_ab_blocks_are_fresh_sessions_or_processes(tiny_bundle: Path, tmp_path: Path, isolation: str) -> None:
    res = invoke(
        "ab",
        "--model-dir",
        tiny_bundle,
        "--against-variant",
        "fp32",
        "--iterations",
        "40",
        "--warmup",
        "2",
        "--blocks",
        "4",
        "--isolation",
        isolation,
        "--no-memory",
        "--out",
        tmp_path,
        "--json",
    )
    assert res.exit_code == 0, res.output
    cur = RunResult.load(tmp_path / "current")
    cell = cur.cells[0]
    assert cur.config["isolation"] == isolation and sorted(set(cell.sample_replicates)) == [0, 1, 2, 3]
    assert cell.replicates is not None and cell.replicates["isolation"] == isolation
    row = next(r for r in json.loads(res.stdout)["rows"] if r["metric"] == "latency_p50_ms")
    assert row["verdict"] != "regression" and row["resampled"] == "replicates"

"""Change points: the E-divisive statistic, steps / flat / creep on simulated series, and `bench history detect`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from history_helpers import write_runs

from bench.history.detect import Method, change_points, detect, detect_series, matches, q_statistics
from bench.history.store import StoredPoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli import run_bench


def _points(values: np.ndarray, metric: str = "latency_p50_ms") -> list[StoredPoint]:
    return [
        StoredPoint(
            f"r{i:03d}",
            f"2026-11-01T00:{i // 60:02d}:{i % 60:02d}",
            f"c{i:03d}",
            "main",
            "m",
            "fp32",
            "cpu",
            1,
            "",
            metric,
            float(v),
            None,
            None,
            "ms",
        )
        for i, v in enumerate(values)
    ]


def _brute_q(x: np.ndarray, tau: int) -> float:
    a, b = x[:tau], x[tau:]
    m, n = len(a), len(b)
    e = (
        2 * np.abs(a[:, None] - b[None]).mean()
        - np.abs(a[:, None] - a[None]).sum() / (m * (m - 1))
        - np.abs(b[:, None] - b[None]).sum() / (n * (n - 1))
    )
    return float(m * n / (m + n) * e)


def test_q_statistic_is_matteson_james_energy_statistic() -> None:
    x = np.random.default_rng(3).normal(size=(2, 31))
    q = q_statistics(x, 4)
    for row in range(2):
        assert np.allclose(q[row], [_brute_q(x[row], t) for t in range(4, 28)])


def test_a_step_is_found_where_it_is_and_judged_against_the_tolerance() -> None:
    rng = np.random.default_rng(0)
    values = 2.0 * np.exp(rng.normal(0, 0.03, 80))
    values[37:] *= 1.25
    [change] = detect_series(("m", "fp32", "cpu", 1, "", "latency_p50_ms"), _points(values), Method())
    assert abs(change.index - 37) <= 2
    assert change.run_id == f"r{change.index:03d}"
    assert change.commit_range == [f"c{change.index - 1:03d}", f"c{change.index:03d}"]
    assert change.verdict == "regression" and change.ci[0] > 1.1 and 1.15 < change.ratio < 1.35
    assert change.p_value <= 0.01
    # the same fall of a larger-is-better figure is the regression; a rise of it the improvement
    [fall] = detect_series(
        ("m", "fp32", "cpu", 1, "", "throughput_ips"), _points(1 / values, "throughput_ips"), Method()
    )
    assert fall.verdict == "regression" and fall.ratio < 1
    [rise] = detect_series(("m", "fp32", "cpu", 1, "", "throughput_ips"), _points(values, "throughput_ips"), Method())
    assert rise.verdict == "improvement"


def test_a_small_step_is_listed_as_a_shift_not_a_regression() -> None:
    rng = np.random.default_rng(1)
    values = 2.0 * np.exp(rng.normal(0, 0.01, 80))
    values[40:] *= 1.04
    [change] = detect_series(("m", "fp32", "cpu", 1, "", "latency_p50_ms"), _points(values), Method())
    assert change.verdict == "shift" and change.ci[0] > 1.0 and change.ci[1] < 1.1


def test_flat_series_give_no_change_point() -> None:
    rng = np.random.default_rng(2)
    found = [change_points(np.exp(rng.normal(0, 0.05, 300)), Method()) for _ in range(5)]
    assert found == [[]] * 5


def test_a_creep_of_small_steps_is_one_regression_over_a_commit_range() -> None:
    """Ten +3 % changes (each passes a 10 % per-change gate): ×1.34 in all, flagged as one regression."""
    rng = np.random.default_rng(4)
    values = 2.0 * np.exp(rng.normal(0, 0.02, 80))
    for j in range(10):
        values[35 + j :] *= 1.03
    changes = detect_series(("m", "fp32", "cpu", 1, "", "latency_p50_ms"), _points(values), Method())
    regressions = [c for c in changes if c.verdict == "regression"]
    assert regressions, changes
    assert 33 <= regressions[0].index <= 46 and regressions[0].ratio > 1.15


def test_series_filters() -> None:
    key = ("CPU x", "fp32", "cpu", 8, "", "latency_p50_ms")
    assert matches(key, "variant=fp32,batch=8") and matches(key, "provider=c*") and matches(key, "fp32 · cpu")
    assert not matches(key, "variant=int8") and not matches(key, "batch=1")
    with pytest.raises(ValueError, match="unknown series field"):
        matches(key, "colour=red")


def test_detect_reports_every_series() -> None:
    rng = np.random.default_rng(5)
    flat = _points(2.0 * np.exp(rng.normal(0, 0.02, 40)))
    report = detect(flat, replace(Method(), seed=1))
    assert (
        report["series"] == 1 and report["runs"] == 40 and report["change_points"] == [] and report["regressions"] == 0
    )
    assert report["method"]["name"] == "e-divisive" and report["method"]["p_value"] == 0.01


@pytest.mark.slow
def test_cli_detect_json_and_fail_on_change(tmp_path: Path) -> None:
    """Real results files through `bench history add` and `detect`: the regression at run 12, exit 1 with
    --fail-on-change, JSON in the issue's shape; a bad --series is exit 2."""
    levels = [2.0] * 12 + [2.6] * 12
    paths = write_runs(tmp_path / "runs", levels)
    db = str(tmp_path / "h.sqlite")
    proc = run_bench("history", "add", *map(str, paths), "--db", db, "--commit", "c0")
    assert proc.returncode == 0, proc.stderr
    proc = run_bench("history", "detect", "--db", db, "--json", "--series", "variant=fp32", "--metric", "p50")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [change] = report["change_points"]
    assert set(change) >= {"series", "metric", "run_id", "commit", "ratio", "ci", "p_value", "verdict"}
    assert change["run_id"] == "r0012" and change["verdict"] == "regression" and change["metric"] == "latency_p50_ms"
    assert change["series"]["variant"] == "fp32" and change["ci"][0] > 1.1
    # by default the floor series (fastest replicate's p50) is looked at too, and sees the same step
    report = json.loads(run_bench("history", "detect", "--db", db, "--json", "--series", "variant=fp32").stdout)
    assert report["series"] == 2
    assert {(c["metric"], c["run_id"], c["verdict"]) for c in report["change_points"]} == {
        ("latency_p50_ms", "r0012", "regression"),
        ("latency_floor_ms", "r0012", "regression"),
    }
    proc = run_bench("history", "detect", "--db", db, "--fail-on-change")
    assert proc.returncode == 1, proc.stderr
    assert "regression" in proc.stdout and "fp32 · cpu · batch 1" in proc.stdout
    proc = run_bench("history", "detect", "--db", db, "--metric", "throughput", "--fail-on-change", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["change_points"][0]["ratio"] < 1
    proc = run_bench("history", "detect", "--db", db, "--series", "colour=red")
    assert proc.returncode == 2 and "unknown series field" in proc.stderr
    proc = run_bench("history", "detect", "--db", db, "--since", "yesterday")
    assert proc.returncode == 2 and "--since" in proc.stderr

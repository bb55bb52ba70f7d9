"""`bench ab --sequential` and `--target-precision`: the confidence sequence's error rate under
looks after every pair (simulated, fixed seed), its verdict rule, and the real CLI on a tiny ONNX model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from test_contract import undeclared

from bench.compare import compare_schema
from bench.results import results_schema
from bench.sequential import MIN_PAIRS, Rule, confidence_sequence, critical_t, mixture_ratio, verdict

from cli import run_bench
from models import make_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
from sequential_ab import naive_verdict, pair_noise, stream


def test_the_boundary_is_where_the_mixture_reaches_one_over_alpha() -> None:
    """c(n) solves e-value = 1/α: the closed form and the likelihood ratio it comes from agree."""
    for n in (3, 4, 8, 20, 100):
        c = critical_t(n, 0.025)
        assert math.isfinite(c)
        assert mixture_ratio(c, n) == pytest.approx(40.0, rel=1e-9)
    assert critical_t(2, 0.025) == math.inf  # two pairs cannot bound anything
    assert critical_t(100, 0.025) > 1.96  # wider than a fixed 95 % interval at every look


@pytest.mark.parametrize("shape", ["normal", "t3", "contaminated", "bimodal"])
def test_aa_streams_looked_at_after_every_pair_stay_within_alpha(shape: str) -> None:
    """600 A/A streams of 40 pairs at a 0 % tolerance ("same" cannot stop them): a verdict at any look is false.
    The sequence keeps them ≤ α/2 (the row's share); the same streams under a fixed 95 % interval peeked at after
    every pair go far past 5 % (the failure this design exists to prevent)."""
    rule, rng = Rule(0.0), np.random.default_rng(2028)
    seq_false = naive_false = 0
    for _ in range(600):
        seq, _n, naive, _m = stream(pair_noise(shape, rng, 40), rule)
        seq_false += seq in ("regression", "improvement")
        naive_false += naive in ("regression", "improvement")
    assert seq_false <= 0.025 * 600, seq_false
    assert naive_false > 0.10 * 600, naive_false


def test_a_large_slowdown_stops_in_a_few_pairs_and_is_never_an_improvement() -> None:
    rng = np.random.default_rng(7)
    pairs, verdicts = [], []
    for _ in range(300):
        seq, n, _v, _m = stream(math.log(1.25) + pair_noise("normal", rng, 40), Rule(0.10))
        pairs.append(n)
        verdicts.append(seq)
    assert verdicts.count("regression") == 300
    assert float(np.median(pairs)) <= 6


def test_verdicts_read_off_the_sequence() -> None:
    same = confidence_sequence([0.01, -0.01, 0.005, -0.004, 0.0, 0.002], 0.025)
    assert verdict(same, 0.10) == "same"
    slower = confidence_sequence([0.22, 0.23, 0.21, 0.225, 0.22], 0.025)
    assert verdict(slower, 0.10) == "regression"
    faster = confidence_sequence([-0.22, -0.23, -0.21, -0.225, -0.22], 0.025)
    assert verdict(faster, 0.10) == "improvement"
    early = confidence_sequence([0.3, 0.31], 0.025)  # before MIN_PAIRS the sequence is unbounded
    assert not early.finite and verdict(early, 0.10) == "inconclusive"
    assert MIN_PAIRS == 3
    # a point beyond the band with the interval across 1 is not a regression
    wide = confidence_sequence([0.3, -0.1, 0.25, -0.05], 0.025)
    assert verdict(wide, 0.10) == "inconclusive"
    assert naive_verdict(np.array([0.3, -0.1, 0.25, -0.05]), 0.10) == "inconclusive"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("seq") / "m", size=16)


@pytest.mark.slow
def test_bench_ab_sequential_records_every_look(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "ab"
    args = ("ab", "--model-dir", str(tiny), "--against", str(tiny), "--min-time", "0.3", "--no-memory", "--json")
    proc = run_bench(*args, "--sequential", "--no-explain", "--out", str(out), no_gpu=True)
    assert proc.returncode in (0, 1), proc.stderr[-800:]
    doc = json.loads(proc.stdout)
    seq = doc["sequential"]
    assert seq["stopped_because"] in ("regression", "improvement", "same", "budget", "max_pairs")
    assert seq["pairs"] == len(seq["looks"]) >= 1
    assert [look["pair"] for look in seq["looks"]] == list(range(1, seq["pairs"] + 1))
    assert {look["order"] for look in seq["looks"]} <= {"ABBA", "BAAB"}
    p50 = next(r for r in doc["rows"] if r["metric"] == "latency_p50_ms")
    assert p50["resampled"] == "pairs" and "confidence sequence" in p50["why"]
    assert p50["verdict"] == seq["looks"][-1]["p50"]["verdict"]
    # the rows the sequences judged are the family's (α/2 each), and the symmetry line counts them
    judged = [r for r in doc["rows"] if r["metric"] in ("latency_p50_ms", "latency_p95_ms") and r["level"]]
    assert doc["family"]["rows"] == len(judged) >= 1
    assert doc["family"]["expected_false"] == pytest.approx(len(judged) * 0.025)
    ratios = [r["ratio"] for r in judged]
    assert doc["symmetry"]["slower"] + doc["symmetry"]["faster"] == sum(x != 1 for x in ratios)
    config = json.loads((out / "current" / "results.json").read_text())["config"]
    assert config["design"] == "sequential" and config["looks"] == seq["looks"]
    assert config["stopped_because"] == seq["stopped_because"]
    cell = json.loads((out / "current" / "results.json").read_text())["cells"][0]
    assert len(set(cell["sample_replicates"])) == 2 * seq["pairs"]  # every block of every pair kept
    assert "Sequential design:" in (out / "compare.md").read_text() and "Sequential design:" not in fixed_md(tiny)
    # every key written is declared (the results contract), the looks included
    assert undeclared(json.loads((out / "compare.json").read_text()), compare_schema()) == []
    for side in ("baseline", "current"):
        assert undeclared(json.loads((out / side / "results.json").read_text()), results_schema()) == []

    fixed = run_bench(*args, "--sequential", "--no-explain", "--blocks", "4", no_gpu=True)  # --blocks: fixed
    assert fixed.returncode in (0, 1), fixed.stderr[-800:]
    assert "sequential" not in json.loads(fixed.stdout)


def fixed_md(tiny: Path) -> str:
    """The Markdown of a fixed-design ab (no sequential line)."""
    proc = run_bench("ab", "--model-dir", str(tiny), "--against", str(tiny), "--min-time", "0.1", "--blocks", "3",
                     "--no-memory", "--no-explain", no_gpu=True)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-800:]
    return proc.stdout


@pytest.mark.slow
def test_short_blocks_still_judge_the_p50_and_say_why_the_p95_is_not(tiny: Path) -> None:
    """Blocks of a few calls (a ms-scale model) have a median each but no p95: the p50 row is the sequence's."""
    args = ("ab", "--model-dir", str(tiny), "--against", str(tiny), "--iterations", "20", "--min-time", "0.0002")
    proc = run_bench(*args, "--sequential", "--no-memory", "--no-explain", "--max-time", "3", "--json", no_gpu=True)
    assert proc.returncode in (0, 1), proc.stderr[-800:]
    doc = json.loads(proc.stdout)
    rows = {r["metric"]: r for r in doc["rows"]}
    last = doc["sequential"]["looks"][-1]
    assert last["p95"] is None
    assert rows["latency_p50_ms"]["verdict"] == last["p50"]["verdict"]
    assert "confidence sequence" in rows["latency_p50_ms"]["why"]
    assert rows["latency_p95_ms"]["verdict"] == "inconclusive" and "no p95" in rows["latency_p95_ms"]["why"]


@pytest.mark.slow
def test_the_budget_answers_inconclusive(tiny: Path) -> None:
    args = ("ab", "--model-dir", str(tiny), "--against", str(tiny), "--min-time", "0.3", "--no-memory", "--json")
    proc = run_bench(*args, "--sequential", "--no-explain", "--max-time", "0.001", no_gpu=True)
    assert proc.returncode == 0, proc.stderr[-800:]
    doc = json.loads(proc.stdout)
    assert doc["sequential"]["stopped_because"] == "budget" and doc["sequential"]["pairs"] == 1
    p50 = next(r for r in doc["rows"] if r["metric"] == "latency_p50_ms")
    assert p50["verdict"] == "inconclusive"


def test_target_precision_adds_replicates_until_precise(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_bench(
        "run", "--model-dir", str(tiny), "--iterations", "40", "--target-precision", "50%", "--out", str(out),
        no_gpu=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-800:]
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["target_precision"] == 0.5
    assert undeclared(data, results_schema()) == []
    replicates = data["cells"][0]["replicates"]
    assert replicates["stopped_because"] == "precise"
    looks = replicates["looks"]
    assert looks and looks[-1]["half_width"] <= 0.5 and looks[-1]["replicates"] == replicates["count"]
    assert all(look["half_width"] > 0.5 for look in looks[:-1])  # it stopped at the first precise look


def test_target_precision_is_refused_outside_zero_to_one(tiny: Path) -> None:
    proc = run_bench("run", "--model-dir", str(tiny), "--target-precision", "150%", no_gpu=True)
    assert proc.returncode == 2 and "--target-precision" in proc.stderr


class _Probe:
    """A side's noise as NoiseProbe.figures() gives it: the blocks' neighbours, contended or not."""

    def __init__(self, contended: bool) -> None:
        self.contended = contended

    def figures(self) -> dict[str, object]:
        others = 1.0 if self.contended else 0.0
        return {"others_cpu_cores": others, "noisy": self.contended, "contended": self.contended, "threads": 1}


@pytest.mark.parametrize(("contended", "stops"), [(False, "regression"), (True, "same")])
def test_a_tail_verdict_the_noise_would_take_away_does_not_stop_the_pairs(contended: bool, stops: str) -> None:
    """The current side's p95 is ×1.5 and its p50 unchanged: on quiet sides the p95 regression stops the pairs;
    on two contended sides it would be demoted afterwards (a tail then times the neighbours), so the pairs go
    on and the p50 decides ("same") — not a stop on a verdict the result then loses."""
    from bench.ab import _run_sequential, _SideRun
    from bench.results import CellResult
    from bench.sequential import Rule

    rng = np.random.default_rng(3)
    runs = [
        _SideRun(side=None, cell=CellResult("v", "cpu", 1), sessions=None, probe=_Probe(contended))  # type: ignore[arg-type]
        for _ in range(2)
    ]

    def one_block(block: int, order: tuple[int, int], later: bool) -> None:
        base = np.exp(rng.normal(0.0, 0.02, 100))
        current = base * np.exp(rng.normal(0.0, 0.005, 100))
        current[base > np.quantile(base, 0.9)] *= 1.5  # the tail only
        for i in order:
            runs[i].timed.add(block, list(current if i == 0 else base), 1.0)

    record = _run_sequential(runs, one_block, Rule(0.10), 20, None, 0, None)
    assert record["stopped_because"] == stops
    last = record["looks"][-1]
    assert last["p95"] is not None and last["p95"]["verdict"] == "regression"  # seen at every look all the same

"""bench compare / bench ab: tolerance parsing, the noise-aware verdicts, bad input, CLI exit codes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from bench.cli import main
from bench.compare import (
    CompareResult,
    CompareRow,
    Tolerances,
    compare_runs,
    load_pair,
    mcnemar,
    parse_tolerance,
)
from bench.errors import InputError, VerdictFailed
from bench.results import CellResult, ModelInfo, RunResult

SHA_A, SHA_B = "a" * 64, "b" * 64


def samples(median: float = 10.0, n: int = 200, sigma: float = 0.05, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median * rng.lognormal(0.0, sigma, n))


def cell(
    xs: list[float] | None = None,
    variant: str = "fp32",
    provider: str = "cpu",
    batch: int = 1,
    sha: str = SHA_A,
    status: str = "ok",
    reason: str | None = None,
    rss: float | None = 100.0,
    size: float = 1.0,
    accuracy: dict | None = None,
    gpu: float | None = None,
) -> CellResult:
    xs = samples() if xs is None and status == "ok" else (xs or [])
    c = CellResult(
        variant=variant,
        provider=provider,
        batch_size=batch,
        status=status,
        reason=reason,
        model=ModelInfo(file="model.onnx", size_mb=size, sha256=sha),
        samples_ms=xs,
        accuracy=accuracy,
    )
    if status == "ok":
        c.latency_ms = {"p50": float(np.median(xs)), "p95": float(np.percentile(xs, 95))}
        c.memory = {
            "rss_peak_mb": rss,
            "gpu_process_peak_mb": gpu,
            "gpu_device_peak_mb": None,
            "gpu_reason": "GPU not sampled for a CPU cell" if gpu is None else None,
        }
    return c


def run(*cells: CellResult, machine: str = "m1", dataset: dict | None = None, **config: object) -> RunResult:
    return RunResult(
        environment={"machine_id": machine, "onnxruntime": "1.31.1"},
        config={"threads": None, **config},
        cells=list(cells),
        dataset=dataset,
    )


def rows(result: CompareResult, metric: str) -> list[CompareRow]:
    return [r for r in result.rows if r.metric == metric]


# --- tolerances -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("10%", "ratio", 0.10),
        ("0.1", "ratio", 0.10),
        (" 5 % ", "ratio", 0.05),
        ("0", "ratio", 0.0),
        ("0.5pt", "points", 0.5),
        ("1pt", "points", 1.0),
        ("0.5%", "points", 0.5),
        ("0.005", "points", 0.5),
    ],
)
def test_parse_tolerance(text: str, kind: str, expected: float) -> None:
    assert parse_tolerance(text, kind) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "kind", "needle"),
    [
        ("10", "ratio", "ambiguous"),
        ("0.5pt", "ratio", "accuracy only"),
        ("fast", "ratio", "not understood"),
        ("-5%", "ratio", "not understood"),
        ("2", "points", "ambiguous"),
    ],
)
def test_parse_tolerance_refuses(text: str, kind: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_tolerance(text, kind)


# --- the latency rule -----------------------------------------------------------------------------


def test_identical_runs_pass() -> None:
    result = compare_runs(run(cell()), run(cell()))
    assert result.verdict == "pass" and result.exit_code == 0
    p50 = rows(result, "latency_p50_ms")[0]
    assert p50.ratio == 1.0 and p50.ci_low < 1 < p50.ci_high and p50.verdict == "same"
    assert {r.metric for r in result.rows} == {"latency_p50_ms", "latency_p95_ms", "rss_peak_mb", "model_size_mb"}


def test_slower_current_is_a_regression_with_its_interval() -> None:
    result = compare_runs(run(cell(samples(10.0))), run(cell(samples(13.0, seed=1))))
    p50 = rows(result, "latency_p50_ms")[0]
    assert p50.verdict == "regression"
    assert 1.2 < p50.ratio < 1.4 and 1.0 < p50.ci_low <= p50.ratio <= p50.ci_high
    assert result.verdict == "regression" and result.exit_code == 1
    with pytest.raises(VerdictFailed, match="latency_p50_ms"):
        result.raise_for_verdict()


def test_noisy_slowdown_is_not_a_verdict() -> None:
    # 25 % slower on paper, but so few, so noisy samples that the interval straddles 1.
    base = samples(10.0, n=8, sigma=0.6, seed=2)
    cur = [x * 1.25 for x in samples(10.0, n=8, sigma=0.6, seed=2)]
    p50 = rows(compare_runs(run(cell(base)), run(cell(cur))), "latency_p50_ms")[0]
    assert p50.ratio == pytest.approx(1.25) and p50.ci_low is None
    assert p50.verdict == "inconclusive" and "n too small" in p50.why


def test_faster_current_is_an_improvement_and_passes() -> None:
    result = compare_runs(run(cell(samples(10.0))), run(cell(samples(7.0, seed=1))))
    assert rows(result, "latency_p50_ms")[0].verdict == "improvement"
    assert result.verdict == "pass"


def test_tail_only_regression_is_caught_by_p95() -> None:
    base = samples(10.0, n=400, sigma=0.02)
    cur = list(base)
    rng = np.random.default_rng(5)
    for i in rng.choice(len(cur), 40, replace=False):  # 10 % of calls twice as slow: median unchanged, p95 not
        cur[i] *= 2.0
    result = compare_runs(run(cell(base)), run(cell(cur)))
    assert rows(result, "latency_p50_ms")[0].verdict == "same"
    assert rows(result, "latency_p95_ms")[0].verdict == "regression"


def test_one_burst_of_slow_calls_is_not_a_tail_regression() -> None:
    base = samples(10.0, n=300, sigma=0.03)
    cur = samples(10.0, n=300, sigma=0.03, seed=1)
    cur[100:130] = [x * 20 for x in cur[100:130]]  # a neighbour's 30-call burst: 10 % of calls, contiguous
    p95 = rows(compare_runs(run(cell(base)), run(cell(cur))), "latency_p95_ms")[0]
    assert p95.verdict == "inconclusive" and p95.ci_low < 1, p95.why  # the burst's block is resampled as a unit
    assert float(np.percentile(cur, 95)) / float(np.percentile(base, 95)) > 10  # what resampling calls would see


def test_p95_needs_enough_calls() -> None:
    row = rows(compare_runs(run(cell(samples(n=60))), run(cell(samples(n=60, seed=1)))), "latency_p95_ms")[0]
    assert row.verdict == "inconclusive" and "n too small: 60 calls on a side (need ≥ 100 for p95)" in row.why


def test_latency_tolerance_is_honoured() -> None:
    base, cur = run(cell(samples(10.0))), run(cell(samples(10.8, seed=1)))
    assert rows(compare_runs(base, cur), "latency_p50_ms")[0].verdict == "same"
    assert rows(compare_runs(base, cur, Tolerances(latency=0.05)), "latency_p50_ms")[0].verdict == "regression"


def test_missing_raw_samples_give_no_verdict() -> None:
    bare = cell()
    bare.samples_ms = []
    row = rows(compare_runs(run(bare), run(cell())), "latency_p50_ms")[0]
    assert row.verdict == "incomparable" and "samples_ms" in row.why


# --- matching -------------------------------------------------------------------------------------


def test_unmatched_cells_are_listed() -> None:
    base = run(cell(), cell(variant="int8"))
    cur = run(cell(), cell(batch=8))
    result = compare_runs(base, cur)
    sides = {(u["key"]["variant"], u["key"]["batch_size"], u["side"]) for u in result.unmatched}
    assert sides == {("int8", 1, "baseline"), ("fp32", 8, "current")}
    assert result.verdict == "pass"
    assert "only in baseline" in result.to_markdown()


def test_changed_model_hash_is_called_out_not_compared() -> None:
    result = compare_runs(run(cell(sha=SHA_A)), run(cell(samples(30.0), sha=SHA_B)))
    (row,) = result.rows
    assert row.metric == "model_sha256" and row.verdict == "incomparable"
    assert "aaaaaaaaaaaa → bbbbbbbbbbbb" in row.why
    assert {u["side"] for u in result.unmatched} == {"baseline", "current"}
    assert result.verdict == "incomparable" and result.exit_code == 2
    warned = compare_runs(run(cell(sha=SHA_A), threads=1), run(cell(sha=SHA_B), threads=2))
    with pytest.raises(InputError, match="no cell could be compared"):
        warned.raise_for_verdict()


def test_different_machines_are_incomparable_unless_asked() -> None:
    base, cur = run(cell(), machine="m1"), run(cell(samples(13.0, seed=1)), machine="m2")
    result = compare_runs(base, cur)
    assert not result.same_machine and result.verdict == "incomparable" and result.exit_code == 2
    assert all(r.verdict == "incomparable" for r in result.rows)
    assert "would be regression" in rows(result, "latency_p50_ms")[0].why
    with pytest.raises(InputError, match="different machines"):
        result.raise_for_verdict()
    forced = compare_runs(base, cur, cross_machine=True)
    assert forced.verdict == "regression"
    assert "different machines" in forced.to_markdown() and "--cross-machine" in forced.to_markdown()


def test_config_differences_are_warned() -> None:
    result = compare_runs(run(cell(), threads=1), run(cell(), threads=2))
    assert any("threads" in w for w in result.warnings)


# --- cells that did not run -----------------------------------------------------------------------


def test_failed_current_cell_is_a_regression_not_a_latency_comparison() -> None:
    result = compare_runs(run(cell()), run(cell(status="failed", reason="cpu: inference failed — boom")))
    (row,) = result.rows
    assert row.metric == "status" and row.verdict == "regression" and "boom" in row.why


@pytest.mark.parametrize(
    ("base_status", "cur_status"),
    [
        ("ok", "unavailable"),
        ("failed", "ok"),
        ("unavailable", "unavailable"),
    ],
)
def test_cells_that_did_not_run_are_reported_not_compared(base_status: str, cur_status: str) -> None:
    base = run(cell(status=base_status, reason=None if base_status == "ok" else "no GPU"), cell(variant="int8"))
    cur = run(cell(status=cur_status, reason=None if cur_status == "ok" else "no GPU"), cell(variant="int8"))
    result = compare_runs(base, cur)
    fp32 = [r for r in result.rows if r.key["variant"] == "fp32"]
    assert [(r.metric, r.verdict) for r in fp32] == [("status", "incomparable")]
    assert result.verdict == "pass"  # the int8 cell was compared


# --- memory, size ---------------------------------------------------------------------------------


def test_memory_and_size_use_plain_tolerance() -> None:
    result = compare_runs(run(cell(rss=100.0, size=10.0)), run(cell(rss=125.0, size=10.5)))
    assert rows(result, "rss_peak_mb")[0].verdict == "regression"
    assert rows(result, "model_size_mb")[0].verdict == "same"
    loose = compare_runs(run(cell(rss=100.0)), run(cell(rss=125.0)), Tolerances(memory=0.3))
    assert rows(loose, "rss_peak_mb")[0].verdict == "same"
    smaller = compare_runs(run(cell(size=10.0)), run(cell(size=5.0)))
    assert rows(smaller, "model_size_mb")[0].verdict == "improvement"


def test_memory_measured_on_one_side_only_is_incomparable() -> None:
    result = compare_runs(run(cell(gpu=None)), run(cell(gpu=500.0)))
    row = rows(result, "gpu_process_peak_mb")[0]
    assert row.verdict == "incomparable" and "baseline" in row.why


# --- accuracy -------------------------------------------------------------------------------------

DATASET = {"path": "datasets/demo", "n": 200, "fingerprint": "f" * 64}


def accuracy(correct: list[bool]) -> dict:
    preds = [
        {"path": f"img{i}.png", "p_fake": 0.9, "label": "Deepfake", "pred": "Deepfake" if ok else "Real"}
        for i, ok in enumerate(correct)
    ]
    return {
        "n": len(correct),
        "accuracy": sum(correct) / len(correct),
        "positive_label": "Deepfake",
        "threshold": 0.5,
        "predictions": preds,
    }


def test_accuracy_drop_with_mcnemar() -> None:
    base = [True] * 180 + [False] * 20
    worse = [True] * 150 + [False] * 50  # 30 images right before, wrong now
    result = compare_runs(
        run(cell(accuracy=accuracy(base)), dataset=DATASET), run(cell(accuracy=accuracy(worse)), dataset=DATASET)
    )
    row = rows(result, "accuracy")[0]
    assert row.verdict == "regression" and row.delta == pytest.approx(-15.0)
    assert row.p_value is not None and row.p_value < 1e-6 and "McNemar" in row.why


def test_accuracy_drop_that_is_not_significant_is_same() -> None:
    base = [True] * 180 + [False] * 20
    worse = [True] * 178 + [False] * 22  # -1 pt, 2 discordant images: p = 0.5
    row = rows(
        compare_runs(
            run(cell(accuracy=accuracy(base)), dataset=DATASET), run(cell(accuracy=accuracy(worse)), dataset=DATASET)
        ),
        "accuracy",
    )[0]
    assert row.verdict == "same" and "not significant" in row.why


def test_accuracy_without_predictions_uses_plain_tolerance() -> None:
    base = {"accuracy": 0.90, "positive_label": "Deepfake", "threshold": 0.5}
    cur = {"accuracy": 0.89, "positive_label": "Deepfake", "threshold": 0.5}
    row = rows(
        compare_runs(run(cell(accuracy=base), dataset=DATASET), run(cell(accuracy=cur), dataset=DATASET)), "accuracy"
    )[0]
    assert row.verdict == "regression" and row.p_value is None and "no paired test" in row.why


def test_accuracy_on_different_datasets_is_incomparable() -> None:
    other = {**DATASET, "fingerprint": "e" * 64, "n": 120}
    acc = accuracy([True] * 10)
    result = compare_runs(run(cell(accuracy=acc), dataset=DATASET), run(cell(accuracy=acc), dataset=other))
    row = rows(result, "accuracy")[0]
    assert row.verdict == "incomparable" and "datasets differ" in row.why
    no_dataset = compare_runs(run(cell(accuracy=acc)), run(cell(accuracy=acc), dataset=DATASET))
    assert rows(no_dataset, "accuracy")[0].verdict == "incomparable"


def test_mcnemar_counts_discordant_pairs() -> None:
    test = mcnemar(accuracy([True, True, False, False]), accuracy([True, False, True, True]))
    assert test is not None and (test["b"], test["c"], test["n"]) == (1, 2, 4)
    assert test["p_value"] == pytest.approx(1.0)
    assert mcnemar({"accuracy": 0.5}, accuracy([True])) is None


# --- a whole matrix as one family -----------------------------------------------------------------


def replicated(rng: np.random.Generator, scale: float = 1.0, shift: float = 0.0) -> tuple[list[float], list[int]]:
    """5 replicates × 40 calls: replicate medians 3 % apart, calls 5 % within; the whole cell moved by a
    process-level factor of sd ``shift`` (what separate processes add, which replicates inside one cannot see)."""
    moved = scale * float(np.exp(rng.normal(0.0, shift)))
    xs: list[float] = []
    ids: list[int] = []
    for r in range(5):
        median = moved * float(np.exp(rng.normal(0.0, 0.03)))
        xs += list(median * rng.lognormal(0.0, 0.05, 40))
        ids += [r] * 40
    return xs, ids


def matrix_run(seed: int, shift: float, slower: str | None = None, contended: bool = False) -> RunResult:
    """A 16-variant × batch 1, 8 matrix (32 cells, 64 latency rows); ``slower`` is 25 % slower."""
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(16):
        for batch in (1, 8):
            xs, ids = replicated(rng, 1.25 if f"v{i}" == slower else 1.0, shift)
            made = cell(xs, variant=f"v{i}", batch=batch, rss=None)
            made.sample_replicates = ids
            if contended:
                made.noise = {"noisy": True, "contended": True, "others_cpu_cores": 1.0, "why": "a neighbour"}
            cells.append(made)
    return run(*cells)


def flagged(result: CompareResult) -> list[tuple[str, int, str, str]]:
    return [
        (r.key["variant"], r.key["batch_size"], r.metric, r.verdict)
        for r in result.rows
        if r.verdict in ("regression", "improvement")
    ]


QUICK = Tolerances(n_boot=1000)


def test_a_whole_aa_matrix_has_no_false_row_under_holm_where_rows_judged_alone_have_some() -> None:
    base, cur = matrix_run(0, shift=0.05), matrix_run(1, shift=0.05)
    alone = compare_runs(base, cur, replace(QUICK, family="none"))
    holm = compare_runs(base, cur, QUICK)
    assert len(flagged(alone)) >= 2 and flagged(holm) == []
    family = holm.family
    assert family is not None and family["method"] == "holm" and family["rows"] == 64
    assert family["expected_false"] == pytest.approx(0.05) and family["expected_false_unadjusted"] == pytest.approx(3.2)
    assert family["run_to_run"]["latency_p50_ms"]["source"] == "cells"
    assert 0.02 < family["run_to_run"]["latency_p50_ms"]["sigma"] < 0.10  # the cells' own 5 % shift, seen
    symmetry = holm.symmetry
    assert symmetry is not None and symmetry["regressions"] == symmetry["improvements"] == 0
    assert symmetry["slower"] + symmetry["faster"] == 64 and symmetry["sign_p"] is not None
    p50 = rows(holm, "latency_p50_ms")[0]
    assert p50.level is not None and p50.level > 0.99 and "Holm over 64 rows" in p50.why
    assert p50.p_adjusted is not None and p50.p_value is not None and p50.p_adjusted >= p50.p_value


def test_one_real_slowdown_in_a_whole_matrix_is_still_caught_and_nothing_else() -> None:
    result = compare_runs(matrix_run(2, shift=0.02), matrix_run(3, shift=0.02, slower="v7"), QUICK)
    found = flagged(result)
    assert found and {(variant, verdict) for variant, _, _, verdict in found} == {("v7", "regression")}
    assert result.verdict == "regression" and result.symmetry is not None and result.symmetry["improvements"] == 0


def test_a_row_interval_is_shown_at_its_holm_level_and_its_p_value_agrees() -> None:
    result = compare_runs(matrix_run(2, shift=0.02), matrix_run(3, shift=0.02, slower="v7"), QUICK)
    alpha = 0.05
    for r in result.rows:
        if r.level is None or r.p_value is None or r.ci_low is None or r.ci_high is None:
            continue
        excludes_one = r.ci_low > 1 or r.ci_high < 1
        assert excludes_one == (r.p_value < 1 - r.level), r  # the interval and the p-value are one test
        assert (r.p_adjusted is not None and r.p_adjusted <= alpha) == excludes_one, r


def test_a_tail_measured_on_two_contended_sides_is_inconclusive() -> None:
    base = samples(10.0, n=400, sigma=0.02)
    cur = list(base)
    for i in np.random.default_rng(5).choice(len(cur), 40, replace=False):  # the tail-only slowdown above
        cur[i] *= 2.0

    def compared(contended_sides: int) -> CompareResult:
        cells = [cell(base), cell(cur)]
        for made in cells[:contended_sides]:
            made.noise = {"noisy": True, "contended": True, "others_cpu_cores": 1.0, "why": "a neighbour"}
        for made in cells[contended_sides:]:
            made.noise = {"noisy": True, "contended": False, "others_cpu_cores": 1.0, "why": "a neighbour"}
        return compare_runs(run(cells[0]), run(cells[1]))

    p95 = rows(compared(2), "latency_p95_ms")[0]
    assert p95.verdict == "inconclusive" and "both sides were contended" in p95.why and p95.replicates_needed is None
    assert rows(compared(2), "latency_p50_ms")[0].verdict == "same"  # the median is not the neighbours' tail
    assert rows(compared(1), "latency_p95_ms")[0].verdict == "regression"  # one contended side: judged as before


def test_a_marginal_accuracy_finding_is_held_to_the_family() -> None:
    base = [True] * 180 + [False] * 20
    worse = [True] * 174 + [False] * 26  # -3 pt, 6 discordant images all one way: McNemar p = 0.031

    def accuracy_row(tol: Tolerances) -> CompareRow:
        a, b = run(cell(accuracy=accuracy(base)), dataset=DATASET), run(cell(accuracy=accuracy(worse)), dataset=DATASET)
        return rows(compare_runs(a, b, tol), "accuracy")[0]

    alone = accuracy_row(Tolerances(family="none"))
    assert alone.verdict == "regression" and alone.p_value == pytest.approx(0.03125)
    held = accuracy_row(Tolerances())  # with the p50 and p95 rows: three tests, the smallest p at α/3
    assert held.verdict == "same" and "not significant" in held.why and "Holm level" in held.why
    assert held.p_adjusted == pytest.approx(3 * 0.03125, rel=1e-3)


def test_bench_ab_pairs_are_not_widened_by_a_spread_between_runs() -> None:
    base, cur = matrix_run(4, shift=0.05), matrix_run(5, shift=0.05)
    pairs = list(zip(base.cells[:2], cur.cells[:2], strict=True))
    result = compare_runs(base, cur, QUICK, pairs=pairs)
    assert result.family is not None and result.family["rows"] == 4 and result.family["run_to_run"] == {}
    assert "run-to-run" not in result.to_markdown()


def test_the_family_and_its_symmetry_are_in_the_json_the_markdown_and_the_summary_line() -> None:
    result = compare_runs(matrix_run(0, shift=0.0), matrix_run(1, shift=0.0), QUICK)
    data = json.loads(result.to_json())
    assert set(data["family"]) == {
        "method",
        "why",
        "rows",
        "alpha",
        "expected_false",
        "expected_false_unadjusted",
        "run_to_run",
    }
    assert "Benjamini" in data["family"]["why"] and "Holm" in data["family"]["why"]
    assert set(data["symmetry"]) == {"regressions", "improvements", "slower", "faster", "sign_p"}
    tested = [r for r in data["rows"] if r["metric"] == "latency_p50_ms"]
    assert all({"level", "p_value", "p_adjusted"} <= set(r) for r in tested)
    size = next(r for r in data["rows"] if r["metric"] == "model_size_mb")
    assert "level" not in size and "p_adjusted" not in size  # plain tolerances are not tested: not in the family
    markdown = result.to_markdown()
    assert "Holm over 64 tested rows at α 5%: ≤ 0.05 false findings expected" in markdown
    assert "under A/A both are equally common" in markdown and "at 99." in markdown
    line = result.summary_line()
    assert line.startswith("pass: 0 regression, 0 improvement") and "Holm over 64" in line and "slower vs" in line


def test_a_family_control_that_is_not_known_is_refused() -> None:
    with pytest.raises(InputError, match="family control"):
        Tolerances(family="bonferroni")  # type: ignore[arg-type]


# --- bad input files ------------------------------------------------------------------------------


def write(path: Path, result: RunResult, **override: object) -> Path:
    data = result.to_dict() | override
    path.write_text(json.dumps(data))
    return path


def test_different_schema_versions_are_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", run(cell()))
    b = write(tmp_path / "b.json", run(cell()), schema_version=2)
    with pytest.raises(InputError, match="schema versions differ"):
        load_pair(a, b)


def test_results_without_cells_are_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", run(cell()))
    empty = write(tmp_path / "empty.json", run())
    with pytest.raises(InputError, match="no cells"):
        load_pair(a, empty)
    not_results = tmp_path / "other.json"
    not_results.write_text('{"benchmarks": []}')
    with pytest.raises(InputError, match="not a bench results file"):
        load_pair(a, not_results)


def test_compare_result_json_shape() -> None:
    data = json.loads(compare_runs(run(cell()), run(cell())).to_json())
    assert {"baseline", "current", "same_machine", "rows", "unmatched", "verdict"} <= set(data)
    row = data["rows"][0]
    assert set(row) >= {"key", "metric", "baseline", "current", "ratio", "ci_low", "ci_high", "verdict", "why"}
    assert row["key"] == {"variant": "fp32", "provider": "cpu", "batch_size": 1}


# --- CLI (real runs of a real ONNX model) ---------------------------------------------------------


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results.json of a real `bench run` on the tiny model."""
    from models import make_bundle

    root = tmp_path_factory.mktemp("measured")
    bundle = make_bundle(root / "tiny")
    res = invoke("run", "--model-dir", bundle, "--iterations", "60", "--warmup", "5", "--out", root / "r1")
    assert res.exit_code == 0, res.output
    return root / "r1" / "results.json"


def test_cli_compare_exit_codes(measured: Path, tmp_path: Path) -> None:
    same = invoke("compare", measured, measured)
    assert same.exit_code == 0, same.output
    assert "| fp32 · cpu · b1 | p50 latency (ms)" in same.output and "✅ pass" in same.output

    # The exit codes must not hinge on this box's noise: a real run whose replicates happened to differ ×4 (a CI
    # run under load) left a ×4 slowdown inconclusive. So the baseline is the measured run made steady (each call
    # its cell's median, ±2 %), and the current side that ×4.
    data = json.loads(measured.read_text())
    cell = data["cells"][0]
    middle = float(np.median(cell["samples_ms"]))
    cell["samples_ms"] = [middle * (0.98 + 0.01 * (i % 5)) for i in range(len(cell["samples_ms"]))]
    steady = tmp_path / "steady.json"
    steady.write_text(json.dumps(data))
    cell["samples_ms"] = [x * 4.0 for x in cell["samples_ms"]]
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(data))
    summary = tmp_path / "summary.md"
    res = invoke("compare", steady, slower, "--json", "--summary", summary)
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "regression"
    assert "❌ regression" in summary.read_text()
    assert invoke("compare", steady, slower, "--latency-tolerance", "400%").exit_code == 0

    data["environment"]["machine_id"] = "elsewhere"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    res = invoke("compare", steady, other)
    assert res.exit_code == 2 and "different machines" in res.output
    assert invoke("compare", steady, other, "--cross-machine").exit_code == 1


def test_cli_compare_bad_input(measured: Path, tmp_path: Path) -> None:
    data = json.loads(measured.read_text())
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({**data, "schema_version": 2}))
    res = invoke("compare", measured, v2)
    assert res.exit_code == 2 and "schema versions differ" in res.output
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**data, "cells": []}))
    assert invoke("compare", measured, empty).exit_code == 2
    assert invoke("compare", measured, tmp_path / "missing.json").exit_code == 2
    res = invoke("compare", measured, measured, "--latency-tolerance", "10")
    assert res.exit_code == 2 and "ambiguous" in res.output


@pytest.fixture
def two_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A 96 px model (~0.3 ms a call: long enough that timer and scheduler jitter do not dominate) and an
    identical copy under a path a BENCH_FAULTS slowdown can match."""
    from models import make_bundle

    old = make_bundle(tmp_path / "old", size=96, hidden=96)
    candidate = tmp_path / "candidate-model"
    shutil.copytree(old, candidate)
    return old, candidate


def slowed_ab(two_dirs: tuple[Path, Path], match: str, out: Path, *args: object) -> Result:
    """``bench ab`` of the candidate folder against the old one, one intra-op thread, no memory runs, JSON to stdout
    and files to ``out``, with every model file whose path holds ``match`` made ×2 slower (BENCH_FAULTS)."""
    old, new = two_dirs
    faults = json.dumps({"slowdown": {"factor": 1.0, "match": match}})
    common = ("--no-memory", "--threads", "1", "--json", "--out", out)
    return invoke("ab", "--model-dir", new, "--against", old, *args, *common, env={"BENCH_FAULTS": faults})


@pytest.mark.slow
def test_cli_ab_detects_an_injected_slowdown(two_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    res = slowed_ab(
        two_dirs,
        "candidate-model",
        tmp_path / "ab",
        "--iterations",
        "100",
        "--warmup",
        "5",
        "--fixed",  # the fixed design's blocks (bench ab is sequential by default: tests/test_sequential.py)
    )
    doc = json.loads(res.stdout)
    p50 = next(r for r in doc["rows"] if r["metric"] == "latency_p50_ms")
    assert res.exit_code == 1, p50
    assert p50["verdict"] == "regression" and p50["ratio"] > 1.3 and p50["ci_low"] > 1, p50
    assert (tmp_path / "ab" / "compare.md").is_file()
    cur = RunResult.load(tmp_path / "ab" / "current")
    order, blocks = cur.config["order"], cur.config["blocks"]
    assert cur.config["command"] == "ab" and cur.config["min_time_s"] == 1.0  # ab times each side ≥ 1 s
    assert len(cur.cells[0].samples_ms) >= 100 and 10 <= blocks <= 40  # blocks from the cost of a session
    pairs = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert len(pairs) == blocks and abs(pairs.count("AB") - pairs.count("BA")) <= 1  # randomised, balanced
    assert sorted(set(cur.cells[0].sample_replicates)) == list(range(blocks))


@pytest.mark.slow
def test_cli_ab_over_a_whole_matrix_flags_only_the_slowed_variant(two_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """--variant LIST × --batch-sizes: each cell interleaved in turn, every row one Holm family, one exit code."""
    old, new = two_dirs
    for folder in (old, new):
        shutil.copy(folder / "onnx" / "model.onnx", folder / "onnx" / "model_quantized.onnx")
    res = slowed_ab(
        two_dirs,
        "candidate-model/onnx/model_quantized",
        tmp_path / "ab",
        "--variant",
        "fp32,quantized",
        "--batch-sizes",
        "1,2",
        "--iterations",
        "60",
        "--no-explain",
    )
    doc = json.loads(res.stdout)
    assert res.exit_code == 1, res.output
    flagged = {
        (r["key"]["variant"], r["key"]["batch_size"], r["metric"]) for r in doc["rows"] if r["verdict"] == "regression"
    }
    assert ("quantized", 1, "latency_p50_ms") in flagged and ("quantized", 2, "latency_p50_ms") in flagged, flagged
    assert not [
        r for r in doc["rows"] if r["key"]["variant"] == "fp32" and r["verdict"] in ("regression", "improvement")
    ]
    assert doc["family"]["method"] == "holm" and doc["family"]["rows"] == 8  # p50 + p95 of 4 cells, one family
    cur = RunResult.load(tmp_path / "ab" / "current")
    assert [(c.variant, c.batch_size) for c in cur.cells] == [
        ("fp32", 1),
        ("fp32", 2),
        ("quantized", 1),
        ("quantized", 2),
    ]
    assert cur.config["batch_sizes"] == [1, 2] and cur.config["variants"] == ["fp32", "quantized"]
    designs = cur.config["ab_cells"]
    assert [(d["variant"], d["batch_size"]) for d in designs] == [(c.variant, c.batch_size) for c in cur.cells]
    assert all(10 <= d["blocks"] <= 40 and len(d["order"]) == 2 * d["blocks"] for d in designs)
    assert "blocks" not in cur.config  # each cell chose its own: ab_cells says how many
    assert "fixed design" in res.stderr  # the sequential default judges one cell; a matrix is said to be fixed

    res = invoke("ab", "--model-dir", new, "--variant", "fp32,quantized", "--against-variant", "fp32")
    assert res.exit_code == 2 and "namesake" in res.output
    res = invoke("ab", "--model-dir", new, "--against", old, "--variant", "fp32,int4x", "--no-build")
    assert res.exit_code == 2 and "int4x" in res.output and "cell 1/" not in res.output  # refused before measuring


@pytest.mark.slow
def test_cli_ab_same_model_passes_with_memory(two_dirs: tuple[Path, Path]) -> None:
    old, new = two_dirs
    # One intra-op thread: two 2-thread pools on a shared 2-core runner make every op wait on a neighbour.
    res = invoke(
        "ab", "--model-dir", new, "--against", old, "--iterations", "200", "--warmup", "10", "--threads", "1", "--json"
    )
    doc = json.loads(res.stdout)
    assert res.exit_code == 0, [(r["metric"], r["why"]) for r in doc["rows"] if r["verdict"] != "same"]
    assert doc["verdict"] == "pass" and doc["same_machine"]
    rss = next(r for r in doc["rows"] if r["metric"] == "rss_peak_mb")
    assert rss["baseline"] > 10 and rss["current"] > 10  # measured in each side's own process


@pytest.mark.slow
def test_cli_ab_against_variant_with_accuracy(tiny_bundle: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_bundle / "onnx" / "model.onnx", tiny_bundle / "onnx" / "model_quantized.onnx")
    dataset = tmp_path / "set"
    rng = np.random.default_rng(0)
    for label in ("fake", "real"):
        (dataset / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(dataset / label / f"{i}.png")
    res = invoke(
        "ab",
        "--model-dir",
        tiny_bundle,
        "--variant",
        "quantized",
        "--against-variant",
        "fp32",
        "--iterations",
        "40",
        "--no-memory",
        "--dataset",
        dataset,
        "--json",
    )
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(res.stdout)
    acc = next(r for r in doc["rows"] if r["metric"] == "accuracy")
    assert acc["verdict"] == "same" and acc["delta"] == 0 and acc["p_value"] == 1.0  # same weights, same answers
    assert acc["key"]["variant"] == "quantized" and acc["baseline_key"]["variant"] == "fp32"


def test_cli_ab_needs_a_baseline(tiny_bundle: Path) -> None:
    res = invoke("ab", "--model-dir", tiny_bundle)
    assert res.exit_code == 2 and "--against" in res.output
    res = invoke("ab", "--model-dir", tiny_bundle, "--against-variant", "int4x")
    assert res.exit_code == 2


def test_cli_ab_on_an_unavailable_provider_is_incomparable(tiny_bundle: Path) -> None:
    from bench.engine import probe_provider

    if probe_provider("cuda")["usable"]:
        pytest.skip("CUDA works here")
    res = invoke(
        "ab",
        "--model-dir",
        tiny_bundle,
        "--against",
        tiny_bundle,
        "--provider",
        "cuda",
        "--no-memory",
        "--iterations",
        "10",
        "--json",
    )
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    (row,) = doc["rows"]
    assert row["metric"] == "status" and row["verdict"] == "incomparable" and "cuda: unavailable" in row["why"]

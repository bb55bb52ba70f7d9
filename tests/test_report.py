"""Release reports: golden Markdown (en, th) from a fixed results.json, policy checks, recommendation, plots."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import InputError
from bench.report import REPORT_FILES, write_report
from bench.report.analysis import compare_to_reference, pareto_front, recommend
from bench.report.catalog import LANGUAGES, catalog, placeholders
from bench.report.markdown import render_markdown
from bench.report.plots import planned_plots
from bench.report.policy import (
    FAIL,
    NOT_APPLICABLE,
    NOT_MEASURED,
    PASS,
    Policy,
    evaluate_policy,
    load_policy,
    policy_for,
)
from bench.results import CellResult, RunResult

DATA = Path(__file__).parent / "data" / "report"
FIXTURE = DATA / "results.json"
RELAXED = DATA / "policy_relaxed.toml"
GOLDEN = DATA / "golden"
UPDATE = os.environ.get("BENCH_UPDATE_GOLDEN") == "1"


@pytest.fixture
def seedlike() -> RunResult:
    return RunResult.load(FIXTURE)


def _cell(result: RunResult, variant: str, provider: str, batch: int = 1) -> CellResult:
    return next(c for c in result.cells if c.key == (variant, provider, batch))


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"golden file {path} missing; run with BENCH_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file (BENCH_UPDATE_GOLDEN=1)"


# --- golden files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_report_matches_golden_with_default_policy(seedlike: RunResult, lang: str) -> None:
    _check_golden(f"report.default.{lang}.md", render_markdown(seedlike, lang))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_report_matches_golden_with_relaxed_policy(seedlike: RunResult, lang: str) -> None:
    policy = load_policy(RELAXED)
    policy = Policy.from_dict(policy.to_dict(), source="tests/data/report/policy_relaxed.toml")  # path-independent
    _check_golden(f"report.relaxed.{lang}.md", render_markdown(seedlike, lang, policy))


def test_rendering_is_deterministic_and_needs_no_clock(seedlike: RunResult) -> None:
    again = RunResult.load(FIXTURE)
    assert render_markdown(seedlike, "en") == render_markdown(again, "en")
    assert seedlike.created in render_markdown(seedlike, "en")


def test_both_languages_show_identical_figures(seedlike: RunResult) -> None:
    import re

    def numbers(text: str) -> list[str]:
        return re.findall(r"\d[\d,]*\.\d+", text)

    en, th = render_markdown(seedlike, "en"), render_markdown(seedlike, "th")
    assert numbers(en) == numbers(th)
    assert "2,329.0" in en and "2,329.0" in th


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    en = catalog("en").strings
    for lang in LANGUAGES:
        other = catalog(lang).strings
        assert set(other) == set(en), f"{lang}: keys differ: {sorted(set(other) ^ set(en))}"
        for key, text in en.items():
            assert placeholders(other[key]) == placeholders(text), f"{lang}.{key}: placeholders differ"
    assert catalog("th").t("s6.heading") != catalog("en").t("s6.heading")


def test_unknown_language_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown report language"):
        catalog("fr")


# --- release checks -------------------------------------------------------------------------------


def test_default_policy_holds_the_seed_targets() -> None:
    policy = load_policy()
    assert policy.checks == {
        "max_p99_ms": 10.0,
        "max_accuracy_drop_pt": 0.5,
        "max_gpu_memory_mb": 2048.0,
        "max_model_mb": 200.0,
    }
    assert policy.source is None and policy.reference == "fp32"


def test_seed_contradiction_is_flagged(seedlike: RunResult) -> None:
    """The seed calls 2.3 GB of GPU memory "within the 2 GB limit": bench must say ❌ with the value."""
    verdict = evaluate_policy(seedlike, load_policy())
    fp16 = next(r for r in verdict.rows if r.cell.key == ("fp16", "cuda", 1))
    gpu = next(o for o in fp16.outcomes if o.key == "max_gpu_memory_mb")
    assert (gpu.status, gpu.value, gpu.limit) == (FAIL, 2329.0, 2048.0)
    p99 = next(o for o in fp16.outcomes if o.key == "max_p99_ms")
    assert p99.status == PASS and p99.value < 10
    assert not fp16.passed and not verdict.passed
    text = render_markdown(seedlike, "en")
    assert "| fp16 · cuda · batch 1 | yes | ✅ 8.339 | ✅ ±0.00 | ❌ 2,329.0 | ✅ 171.00 | ❌ fail |" in text


def test_not_measured_is_never_a_pass(seedlike: RunResult) -> None:
    fp16 = _cell(seedlike, "fp16", "cuda")
    fp16.memory = {
        **(fp16.memory or {}),
        "gpu_device_peak_mb": None,
        "gpu_process_peak_mb": None,
        "gpu_reason": "NVML not usable",
    }
    policy = Policy.from_dict({"max_gpu_memory_mb": 4096, "max_p99_ms": 10})
    row = next(r for r in evaluate_policy(seedlike, policy).rows if r.cell is fp16)
    gpu = next(o for o in row.outcomes if o.key == "max_gpu_memory_mb")
    assert gpu.status == NOT_MEASURED and gpu.detail == "NVML not usable"
    assert not row.passed
    text = render_markdown(seedlike, "en", policy)
    assert "| fp16 · cuda · batch 1 | yes | ✅ 8.339 | not measured | ⚠ not measured |" in text
    assert "GPU memory ≤ 4,096 MB — not measured for fp16 · cuda · batch 1: GPU memory was not sampled: NVML" in text


def test_accuracy_checks_without_a_dataset_are_not_measured(seedlike: RunResult) -> None:
    for cell in seedlike.cells:
        cell.accuracy = None
    seedlike.config["accuracy_reason"] = "no labelled dataset given"
    verdict = evaluate_policy(seedlike, Policy.from_dict({"max_accuracy_drop_pt": 0.5, "min_accuracy_pct": 90}))
    measured = [r for r in verdict.rows if r.cell.status == "ok"]
    assert all(o.status == NOT_MEASURED for r in measured for o in r.outcomes)
    assert not verdict.passed and recommend(seedlike, verdict).choice is None
    assert "not measured — no labelled dataset given" in render_markdown(seedlike, "en")


def test_gpu_memory_does_not_apply_to_cpu_cells(seedlike: RunResult) -> None:
    row = next(r for r in evaluate_policy(seedlike, load_policy()).rows if r.cell.key == ("int8", "cpu", 1))
    assert next(o for o in row.outcomes if o.key == "max_gpu_memory_mb").status == NOT_APPLICABLE


def test_provider_overrides_and_candidates(seedlike: RunResult) -> None:
    policy = Policy.from_dict(
        {"max_p99_ms": 10, "providers": {"cpu": {"max_p99_ms": 100}}, "candidates": {"providers": ["cpu"]}}
    )
    verdict = evaluate_policy(seedlike, policy)
    cpu = next(r for r in verdict.rows if r.cell.key == ("fp32", "cpu", 1))
    assert cpu.outcomes[0].limit == 100 and cpu.passed
    assert {r.cell.provider for r in verdict.candidates} == {"cpu"}
    assert verdict.passed and recommend(seedlike, verdict).choice.cell.provider == "cpu"


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_p99 = 10", "unknown key 'max_p99'"),
        ("max_p99_ms = 'fast'", "must be a number"),
        ("rank_by = 'vibes'", "rank_by must be one of"),
        ("[providers.cpu]\nmax_latency = 3", "unknown key 'providers.cpu.max_latency'"),
        ("[candidates]\nvariants = 'fp16'", "must be a list"),
        ("max_p99_ms = [", "not valid TOML"),
    ],
)
def test_bad_policy_files_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_policy(path)


def test_missing_policy_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_policy(tmp_path / "nope.toml")


def test_policy_recorded_in_the_run_is_used_when_re_rendering(seedlike: RunResult) -> None:
    seedlike.config["policy"] = {"max_p99_ms": 100.0, "reference": "fp32", "rank_by": "p50_ms"}
    seedlike.config["policy_file"] = "release.toml"
    policy = policy_for(seedlike)
    assert policy.checks == {"max_p99_ms": 100.0} and policy.rank_by == "p50_ms" and policy.source == "release.toml"
    assert policy_for(seedlike, RELAXED).checks["max_gpu_memory_mb"] == 4096


# --- recommendation, comparison, Pareto ------------------------------------------------------------


def test_recommendation_is_the_fastest_passing_cell(seedlike: RunResult) -> None:
    verdict = evaluate_policy(seedlike, load_policy(RELAXED))
    rec = recommend(seedlike, verdict)
    passing = {r.cell.key for r in rec.passing}
    assert passing == {("fp16", "cuda", 1), ("fp32", "cpu", 1)}  # fp32/cuda: p99 12 ms; int8: accuracy −8.3 pt
    assert rec.choice.cell.key == ("fp16", "cuda", 1) and rec.runner_up.cell.key == ("fp32", "cpu", 1)
    slower = copy.deepcopy(seedlike)
    fp16 = _cell(slower, "fp16", "cuda")
    fp16.latency_ms = {**fp16.latency_ms, "p95": 500.0}  # now slower than fp32 on cpu at p95
    assert recommend(slower, evaluate_policy(slower, load_policy(RELAXED))).choice.cell.key == ("fp32", "cpu", 1)


def test_recommendation_names_what_blocked_every_candidate(seedlike: RunResult) -> None:
    rec = recommend(seedlike, evaluate_policy(seedlike, load_policy()))
    assert rec.choice is None and rec.candidates == 11
    assert dict(rec.blockers) == {
        "max_p99_ms": 5,
        "not_run": 5,
        "max_gpu_memory_mb": 4,
        "max_model_mb": 3,
        "max_accuracy_drop_pt": 1,
    }


def test_comparison_is_measured_against_the_same_provider_and_batch(seedlike: RunResult) -> None:
    rows = {r.cell.key: r for r in compare_to_reference(seedlike, "fp32")}
    fp16 = rows[("fp16", "cuda", 1)]
    base, cell = _cell(seedlike, "fp32", "cuda"), _cell(seedlike, "fp16", "cuda")
    assert fp16.speedup_p50 == pytest.approx(base.latency_ms["p50"] / cell.latency_ms["p50"])
    assert fp16.size_ratio == pytest.approx(171 / 343) and fp16.gpu_ratio == pytest.approx(2329 / 3105)
    assert rows[("int8", "cpu", 1)].accuracy_delta_pt == pytest.approx(-100 / 12)
    assert rows[("fp16", "cuda", 8)].accuracy_delta_pt == pytest.approx(0.0)  # accuracy of (variant, provider)


def test_pareto_front_drops_dominated_cells(seedlike: RunResult) -> None:
    front = [c.key for c in pareto_front(seedlike)]
    assert front == [("fp16", "cuda", 1)]
    _cell(seedlike, "fp16", "cuda").accuracy["accuracy"] = 0.5  # now less accurate than fp32: both on the front
    assert [c.key for c in pareto_front(seedlike)][:2] == [("fp16", "cuda", 1), ("fp32", "cuda", 1)]


# --- files and the CLI ----------------------------------------------------------------------------


def test_write_report_draws_plots_and_both_languages(seedlike: RunResult, tmp_path: Path) -> None:
    out = write_report(seedlike, tmp_path, langs=("en", "th"))
    for name in ("latency", "accuracy_latency", "size_latency"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name}.png)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.th.md").read_text().startswith("# รายงานการปล่อยรุ่น")
    assert out.recommendation is None and not out.verdict.passed


def test_plots_not_drawable_say_why(seedlike: RunResult) -> None:
    for cell in seedlike.cells:
        cell.accuracy = None
    plots = planned_plots(seedlike)
    assert plots["accuracy_latency"].file is None and plots["latency"].file
    text = render_markdown(seedlike, "en", plots=plots)
    assert "Accuracy vs p95 latency, with the Pareto front: not drawn — no accuracy was measured." in text


def test_service_section_renders_service_entries(seedlike: RunResult) -> None:
    seedlike.service = [
        {
            "variant": "fp16",
            "provider": "cuda",
            "status": "ok",
            "reason": None,
            "inprocess_p50_ms": 4.8,
            "overhead_p50_ms": 21.2,
            "load": {
                "target_rate": 50.0,
                "achieved_rate": 49.9,
                "requests": 500,
                "ok": 500,
                "errors": {},
                "latency_ms": {"p50": 26.0, "p90": 30.0, "p99": 41.5, "max": 60.0},
                "send_lag_ms": {"p50": 0.6},
                "server": {"leak_suspected": False},
            },
            "batch_endpoint": {"ms_per_image_p50": 4.3},
            "max_rate": {"slo_p99_ms": 50.0, "rate_rps": 180.0},
        },
        {
            "variant": "int8",
            "provider": "cpu",
            "status": "failed",
            "reason": "bench serve exited with 1",
            "load": None,
            "inprocess_p50_ms": 39.8,
            "overhead_p50_ms": None,
            "batch_endpoint": None,
            "max_rate": None,
        },
    ]
    text = render_markdown(seedlike, "en")
    assert (
        "| fp16 | cuda | ok | 49.9 / 50.0 | 500 | 0 | 26.000 | 30.000 | 41.500 | 60.000 | 4.800 | 21.200 | "
        "0.600 | 4.300 | 180.0 (p99 ≤ 50 ms) | ✅ none seen |"
    ) in text
    assert "- int8 · cpu — **failed**: bench serve exited with 1" in text


def test_cli_report_re_renders_from_results_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(FIXTURE, run_dir / "results.json")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["report", "run", "--lang", "th", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert (run_dir / REPORT_FILES["th"]).read_text(encoding="utf-8") == (GOLDEN / "report.default.th.md").read_text(
        encoding="utf-8"
    )
    assert not (run_dir / "report.md").exists()
    res = runner.invoke(main, ["report", "run", "--fail-on-policy", "--no-plots"])
    assert res.exit_code == 1 and "release checks failed" in res.output
    res = runner.invoke(main, ["report", "run", "--fail-on-policy", "--no-plots", "--policy", str(RELAXED)])
    assert res.exit_code == 0, res.output
    assert "Ship **fp16 · cuda · batch 1** (`model_fp16.onnx`)" in (run_dir / "report.md").read_text()


def test_cli_report_on_a_folder_without_results_is_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output

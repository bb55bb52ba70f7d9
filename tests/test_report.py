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
from bench.report.claims import ClaimOutcome, claims_for, evaluate_claims, load_claims
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
        "max_p99_ms_per_image": 10.0,
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
    p99 = next(o for o in fp16.outcomes if o.key == "max_p99_ms_per_image")
    assert p99.status == PASS and p99.value < 10
    assert not fp16.passed and not verdict.passed
    text = render_markdown(seedlike, "en")
    drop = "⚠ ±0.00 [−24.25, +24.25] — inconclusive, ≈770 images would decide it"  # 12 images: no verdict on 0.5 pt
    assert f"| fp16 · cuda · batch 1 | yes | ✅ 8.339 | {drop} | ❌ 2,329.0 | ✅ 171.00 | ❌ fail |" in text


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
        ("rank_margin = 0", "rank_margin must be a fraction between 0 and 1"),
        ("rank_margin = 5", "rank_margin must be a fraction between 0 and 1"),
        ("rank_margin = 'wide'", "rank_margin must be a number"),
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
    assert rec.choice is None and rec.candidates == 11  # the PyTorch row is the baseline, not a candidate
    assert dict(rec.blockers) == {
        "max_p99_ms_per_image": 3,  # per image: fp32 · cuda · batch 8 (59 ms a call, 7.4 ms an image) now passes
        "not_run": 5,
        "max_gpu_memory_mb": 4,
        "max_model_mb": 3,
        "max_accuracy_drop_pt": 3,  # 1 fails, 2 inconclusive (12 images cannot bound a 0.5 pt drop): both block
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


@pytest.mark.slow
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
    assert "with the Pareto front: not drawn — no accuracy was measured." in text


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
        "| fp16 · cuda | ok | 49.9 / 50.0 | 500 | 0 | 26.000 | 41.500 | 4.800 | — | 4.300 | 180.0 (p99 ≤ 50 ms) | "
        "✅ none seen |"
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
    # 20 calls a cell give p95 no interval: fp16 is the provisional choice, and the log says it is undecided
    assert "Provisionally **fp16 · cuda · batch 1** (`model_fp16.onnx`)" in (run_dir / "report.md").read_text()
    assert "recommendation: fp16 · cuda · batch 1 (undecided)" in res.output


def test_cli_report_on_a_folder_without_results_is_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output


# --- claims of the hand-written report ------------------------------------------------------------


def _claims(result: RunResult, claims_file: Path | None = None) -> dict[str, ClaimOutcome]:
    outcomes = evaluate_claims(result, load_claims(claims_file), policy_for(result))
    return {o.claim.id: o for o in outcomes}


def test_every_seed_claim_is_answered_from_the_measurements(seedlike: RunResult) -> None:
    """Each claim judged on its figure's interval against its accepted range (tests/test_claims.py has the rules)."""
    got = _claims(seedlike)
    assert set(got) == {c.id for c in load_claims().claims} and len(got) == 19
    fp16, torch = _cell(seedlike, "fp16", "cuda"), _cell(seedlike, "pytorch", "cuda")
    speed = got["faster_than_pytorch"]  # "2–3×": the interval [1.94, 2.53] straddles 2
    assert speed.status == "inconclusive" and speed.cell is fp16 and speed.facts["bound"] == 2.0
    assert speed.value == pytest.approx(torch.latency_ms["p50"] / fp16.latency_ms["p50"], rel=0.02)
    low, high = speed.interval
    assert low < 2.0 < speed.value < high  # two-level bootstrap over both rows' replicates
    assert (got["gpu_memory_2gb"].status, got["gpu_memory_2gb"].value) == ("fail", 2329.0)  # the seed's contradiction
    assert got["memory_half"].status == "fail" and got["memory_half"].value == pytest.approx(2329 / 3105)
    assert got["size_half"].status == "pass" and got["size_half"].value == pytest.approx(171 / 343)
    assert got["latency_under_10ms"].status == "inconclusive"  # a p99 of 20 calls has no interval
    assert got["gpu_utilisation"].status == "pass" and got["gpu_utilisation"].value == 30.0
    assert got["accuracy_9884"].status == "not_comparable" and got["accuracy_9884"].value == pytest.approx(250 / 3)
    assert (got["batch_per_image"].status, got["batch_per_image"].value) == ("pass", 4.3)
    assert got["detect_response_26ms"].status == "pass" and got["steady_7_8ms"].status == "fail"  # p99 41.5 ms
    assert got["health_200"].status == "pass" and got["no_memory_leak"].status == "inconclusive"  # 30 s only
    assert got["invalid_input"].value == 1.0
    text = render_markdown(seedlike, "en")
    assert text.index("## Claims of the hand-written report") < text.index("## Key figures")
    assert (
        "| GPU memory within the 2 GB allocation | 2,329.0 MB | none: judged on the value | ≤ 2,048 MB "
        "| fp16 · cuda · batch 1 | ❌ |" in text
    )
    assert "| /detect/batch: 4.3 ms per image (3 images in 12.9 ms, on a GPU) | 4.300 ms per image (3" in text


def test_claims_that_need_a_gpu_or_pytorch_say_why_they_are_not_measurable(seedlike: RunResult) -> None:
    """On a CPU-only box: no GPU claim is ✅, and each says "no GPU on this machine"; no PyTorch row says so."""
    no_torch = copy.deepcopy(seedlike)
    no_torch.cells = [c for c in no_torch.cells if c.variant != "pytorch"]
    assert _claims(no_torch)["faster_than_pytorch"].why == "reference_not_planned"
    assert "not measurable here: the run has no pytorch row: no PyTorch weights" in render_markdown(no_torch, "en")
    seedlike.environment["gpu"] = None
    seedlike.environment["gpu_reason"] = "NVML not usable"
    seedlike.cells = [
        c if c.provider == "cpu" else CellResult.not_run(c.variant, c.provider, c.batch_size, "unavailable", "x")
        for c in seedlike.cells
    ]
    seedlike.service = None
    got = _claims(seedlike)
    for claim in ("gpu_memory_2gb", "gpu_utilisation", "faster_than_pytorch"):
        assert got[claim].status == "not_measurable" and got[claim].why == "no_gpu_here"
    assert got["health_200"].why == "no_service"
    assert all(o.status == "not_measurable" or o.value is not None for o in got.values())
    text = render_markdown(seedlike, "en")
    assert "| GPU memory within the 2 GB allocation | — | — | ≤ 2,048 MB | — | not measurable here: no GPU on" in text
    assert "not measurable here: the run was made without --with-service" in text
    th = render_markdown(seedlike, "th")
    assert "วัดที่นี่ไม่ได้: ไม่มี GPU บนเครื่องนี้" in th


def test_a_users_claims_file_is_answered_and_recorded_for_re_rendering(
    seedlike: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "claims.toml"
    path.write_text(
        '[[claim]]\nid = "b8"\ntext.en = "Batch 8 under 5 ms per image"\ncheck = "max_p99_ms_per_image"\n'
        'limit = 5.0\nvariants = ["fp16"]\nbatch_sizes = [8]\n',
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(FIXTURE, run_dir / "results.json")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", "run", "--no-plots", "--claims", str(path)])
    assert res.exit_code == 0, res.output
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert (  # 20 calls give no p99 interval, so the point 4.309 ms decides nothing
        "| Batch 8 under 5 ms per image | 4.309 ms per image | — | ≤ 5 ms | fp16 · cuda · batch 8 | inconclusive: "
        "a p99 interval needs ≥ 500 calls in ≥ 3 replicates; this cell had 20 in 4" in text
    )
    assert "claims file `" in text and "98.84" not in text.split("## Key figures")[0]
    seedlike.config["claims"] = load_claims(path).to_config()  # as bench matrix --claims records it
    assert [c.id for c in claims_for(seedlike).claims] == ["b8"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no \\[\\[claim\\]\\] tables"),
        ('[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "max_speed"\nlimit = 1', "check must be one of"),
        ('[[claim]]\nid = "a"\ncheck = "max_p99_ms"\nlimit = 1', "needs text.en"),
        ('[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "min_speedup_p50"\nlimit = 2', "needs relative_to"),
        ('[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "gpu_util_mean_pct"\nlimit = 3', "limit must be \\[low, high\\]"),
        ('[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "max_p99_ms"\nlimit = "fast"', "limit must be a number"),
        ('[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "max_p99_ms"\nlimit = 1\n' * 2, "unique"),
    ],
)
def test_bad_claims_files_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "claims.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_claims(path)


# --- relative and per-image checks ----------------------------------------------------------------


def test_relative_checks_against_a_variant_and_a_previous_results_file(seedlike: RunResult, tmp_path: Path) -> None:
    previous = copy.deepcopy(seedlike)
    old = _cell(previous, "fp16", "cuda")
    old.samples_ms = [x * 0.5 for x in old.samples_ms]  # the previous release was twice as fast
    old.latency_ms = {k: (v * 0.5 if isinstance(v, float) else v) for k, v in old.latency_ms.items()}
    previous.write(tmp_path / "rc0")
    policy = Policy.from_dict(
        {
            "relative": {
                "pytorch": {"min_speedup_p50": 2.0},
                "fp32": {"max_size_ratio": 0.5, "max_memory_ratio": 0.9},
                "previous": {"results": str(tmp_path / "rc0" / "results.json"), "min_speedup_p50": 0.95},
            }
        }
    )
    assert Policy.from_dict(policy.to_dict()).relative == policy.relative  # recorded in the run, read back
    rows = {r.cell.key: {o.key: o for o in r.outcomes} for r in evaluate_policy(seedlike, policy).rows}
    fp16 = rows[("fp16", "cuda", 1)]
    assert fp16["relative.min_speedup_p50@pytorch"].status == PASS and fp16["relative.min_speedup_p50@pytorch"].interval
    assert fp16["relative.max_size_ratio@fp32"].value == pytest.approx(171 / 343)
    assert fp16["relative.max_memory_ratio@fp32"].status == PASS  # 0.75× GPU memory per process
    assert fp16["relative.min_speedup_p50@previous"].status == FAIL
    assert fp16["relative.min_speedup_p50@previous"].value == pytest.approx(0.5, rel=0.05)
    assert rows[("fp32", "cuda", 1)]["relative.max_size_ratio@fp32"].status == NOT_APPLICABLE  # the reference
    assert rows[("fp16", "cuda", 8)]["relative.min_speedup_p50@pytorch"].why == "reference_not_planned"
    assert rows[("int8", "cpu", 1)]["relative.max_memory_ratio@fp32"].why == "memory_rss"  # host RSS on cpu
    text = render_markdown(seedlike, "en", policy)
    assert "speed-up vs pytorch ≥ 2.00×" in text and "speed-up vs the previous release ≥ 0.95×" in text


def test_a_bad_relative_policy_is_an_input_error(tmp_path: Path) -> None:
    for text, says in (
        ("[relative.fp32]\nmax_speed = 1\n", "relative checks are"),
        ("[relative.previous]\nmin_speedup_p50 = 1\n", "needs results"),
    ):
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(InputError, match=says):
            load_policy(path)


def test_per_image_limit_is_fair_to_larger_batches(seedlike: RunResult) -> None:
    """p99 ≤ 10 ms per call fails every batch-8 cell; per image it judges what a user waits per image."""
    per_call = evaluate_policy(seedlike, Policy.from_dict({"max_p99_ms": 10}))
    per_image = evaluate_policy(seedlike, Policy.from_dict({"max_p99_ms_per_image": 10}))
    b8 = ("fp16", "cuda", 8)
    call = next(r for r in per_call.rows if r.cell.key == b8).outcomes[0]
    image = next(r for r in per_image.rows if r.cell.key == b8).outcomes[0]
    assert call.status == FAIL and image.status == PASS and image.value == pytest.approx(call.value / 8)


# --- readable on any machine ----------------------------------------------------------------------


def _cpu_only(result: RunResult) -> RunResult:
    """The seed-like run as a CPU-only box sees it: every GPU cell unavailable with ORT's reason."""
    result.environment["gpu"] = None
    result.environment["gpu_reason"] = "NVML not usable (NVML Shared Library Not Found)"
    why = {
        "cuda": "cuda: unavailable — libcublasLt.so.13 not found (CUDAExecutionProvider could not start; ORT fell "
        "back to CPU)",
        "tensorrt": "tensorrt: unavailable — TensorRT libraries (libnvinfer) not found (TensorrtExecutionProvider "
        "could not start; ORT fell back to CPU)",
    }
    cells = []
    for v in ("fp32", "fp16", "int8"):
        for p in ("cpu", "cuda", "tensorrt"):
            for b in (1, 8):
                found = next((c for c in result.cells if c.key == (v, "cpu", 1)), None) if p == "cpu" else None
                if found is not None and found.status == "ok":  # fp16 · cpu crashed in the fixture: left out
                    found = copy.deepcopy(found)
                    found.batch_size = b
                    cells.append(found)
                elif p != "cpu":
                    cells.append(CellResult.not_run(v, p, b, "unavailable", why[p]))
    result.cells = cells
    result.service = None
    return result


def test_cells_that_did_not_run_are_one_line_per_provider_and_reason(seedlike: RunResult) -> None:
    result = _cpu_only(seedlike)
    text = render_markdown(result, "en")
    assert "**Cells**: 4 ran of 16 planned; 12 unavailable (cuda, tensorrt: no GPU)" in text
    not_run = text.split("### 2.4 Cells that did not run")[1].split("## 3.")[0]
    items = [line for line in not_run.splitlines() if line.startswith("- ")]
    assert len(items) == 2 and items[0].startswith("- **cuda** — unavailable, 6 cells (fp32, fp16, int8 × batch 1, 8)")
    checks = text.split("## 5. Release checks")[1].split("## 6.")[0]
    assert "tensorrt" not in checks.split("Not shown")[0] and "Not shown: 12 candidate cells that did not run" in checks
    latency = text.split("### 2.1")[1].split("### 2.2")[0]
    assert latency.count("\n| ") == 1 + 4 and "unavailable" not in latency  # header + the 4 cells that ran
    th = render_markdown(result, "th")
    assert "ไม่พบไลบรารีที่จำเป็น" not in th  # a GPU provider on a box without a GPU: the reason is "no GPU"
    assert "ไม่มี GPU บนเครื่องนี้ (libcublasLt.so.13 not found" in th and "ใช้งานไม่ได้ 12 (cuda, tensorrt: ไม่มี GPU)" in th


def test_noisy_cells_and_ties_are_flagged(seedlike: RunResult) -> None:
    fp16 = _cell(seedlike, "fp16", "cuda")
    fp16.noise = {"noisy": True, "why": "other processes used 0.6 cores"}
    text = render_markdown(seedlike, "en", load_policy(RELAXED))
    assert "**Noisy cells**: 1 measured while other processes used the CPU — fp16 · cuda · batch 1" in text
    assert "| fp16 | cuda | 1 |" in text and "⚠ noisy |" in text
    assert "- ⚠ fp16 · cuda · batch 1 was measured while the machine was busy: other processes used 0.6 cores" in text


def test_thai_report_keeps_english_only_in_parentheses_and_names(seedlike: RunResult) -> None:
    th = render_markdown(seedlike, "th")
    not_run = th.split("### 2.4")[1].split("## 3.")[0]
    assert "ไม่พบไลบรารีที่จำเป็น (TensorRT libraries (libnvinfer) not found" in not_run
    assert "โปรเซสของเซลล์ล่ม (the cell's process crashed" in not_run
    assert "the run was made without" not in th and "not measurable" not in th


# --- service, plots, HTML -------------------------------------------------------------------------


def test_service_section_has_health_startup_leak_caveat_and_bad_uploads(seedlike: RunResult) -> None:
    text = render_markdown(seedlike, "en")
    service = text.split("## 8. Service")[1].split("## 9.")[0]
    assert '"status": "healthy", "service": "Deepfake Detection", "model_loaded": true' in service
    assert "| fp16 · cuda | 4.20 | 850.0 | 120.0 | 1,210.0 | 1,216.0 |" in service
    assert "30.0 s load at 20.0 req/s (600 requests)" in service and "only fast leaks" in service
    assert "| a truncated JPEG | `/detect` | 400 | 400 | ✅ |" in service
    assert "| fp16 · cuda | ok | 20.0 / 20.0 | 600 | 0 | 26.000 | 41.500 | 7.161 | 12.900 | 4.300 |" in service


@pytest.mark.slow
def test_bad_uploads_get_the_statuses_cli_md_promises(tiny_bundle: Path) -> None:
    """A real `bench serve` on loopback: each built-in bad upload answered with its documented 4xx."""
    from bench.service import harness

    with harness.serve_subprocess(tiny_bundle, "fp32", "cpu", ready_timeout_s=120) as base:
        cases = harness.bad_upload_statuses(base)
        health = harness.health_snapshot(base)
    assert [(c["case"], c["status"]) for c in cases] == [(c["case"], c["expected"]) for c in cases]
    assert {c["case"] for c in cases} == {name for name, _, _ in harness.BAD_UPLOADS}
    assert health["http_status"] == 200 and health["body"]["model"]["load_ms"] > 0


@pytest.mark.slow
def test_plots_separate_batch_sizes_and_keep_labels_apart(seedlike: RunResult, tmp_path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bench.report.plots import _figure, _place_labels, draw_plots

    plots = draw_plots(seedlike, tmp_path, load_policy())
    assert {n for n, p in plots.items() if p.file} == {"latency", "accuracy_latency", "size_latency", "service_rate"}
    fig = _figure(4.0, 3.0)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [(1.0 + 0.01 * i, 96.67, f"variant{i}") for i in range(7)]  # seven cells on one spot
    ax.scatter([x for x, _, _ in points], [y for _, y, _ in points])
    _place_labels(fig, ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 7
    overlaps = [(i, j) for i in range(7) for j in range(i + 1, 7) if boxes[i].overlaps(boxes[j])]
    assert not overlaps


@pytest.mark.slow
def test_html_report_is_one_file_with_the_plots_inlined(seedlike: RunResult, tmp_path: Path) -> None:
    out = write_report(seedlike, tmp_path, langs=("en", "th"), html=True)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and page.count("data:image/png;base64,") == 4
    assert 'src="plots/' not in page and "<script" not in page
    assert (tmp_path / "report.th.html").read_text(encoding="utf-8").count('lang="th"') == 1
    assert tmp_path / "report.html" in out.files


def test_matrix_rejects_a_non_positive_service_rate() -> None:
    res = CliRunner().invoke(main, ["matrix", "--with-service", "--service-rate", "0"])
    assert res.exit_code == 2 and "--service-rate" in res.output


# --- accuracy checks on intervals -----------------------------------------------------------------------------


def _with_drop(result: RunResult, point: float, interval: list[float], discordant: list[int] | None = None) -> None:
    """fp16 · cuda's paired accuracy drop against fp32 (points)."""
    agree = _cell(result, "fp16", "cuda").accuracy["agreement"]
    agree.update(accuracy_drop_pt=point, accuracy_drop_pt_ci=interval, discordant=discordant)


@pytest.mark.parametrize(
    ("point", "interval", "status"),
    [
        (0.1, [-0.3, 0.45], "pass"),  # the whole interval within 0.5 pt
        (1.2, [0.6, 1.9], "fail"),  # the whole interval beyond it
        (0.0, [-1.26, 1.26], "inconclusive"),  # straddles: 0 of 300 flipped bounds the drop only to ±1.26 pt
    ],
)
def test_accuracy_drop_check_is_judged_on_its_interval(
    seedlike: RunResult, point: float, interval: list[float], status: str
) -> None:
    from bench.report.policy import INCONCLUSIVE

    _with_drop(seedlike, point, interval)
    policy = Policy.from_dict({"max_accuracy_drop_pt": 0.5, "max_p99_ms": 100.0})
    row = next(r for r in evaluate_policy(seedlike, policy).rows if r.cell.key == ("fp16", "cuda", 1))
    drop = next(o for o in row.outcomes if o.key == "max_accuracy_drop_pt")
    assert (drop.status, drop.value, drop.interval) == (status, point, tuple(interval))
    assert row.passed == (status == PASS)  # an inconclusive check never passes
    if status == INCONCLUSIVE:
        # no discordant counts recorded: the half-width towards the limit narrows as 1/√n → 12 × (1.26 / 0.5)²
        assert drop.needed == 77 and drop.unit == "image"
        assert ("fp16", "cuda", 1) not in {
            r.cell.key for r in recommend(seedlike, evaluate_policy(seedlike, policy)).passing
        }
        text = render_markdown(seedlike, "en", policy)
        assert "⚠ ±0.00 [−1.26, +1.26] — inconclusive, ≈77 images would decide it" in text
        assert "⚠ inconclusive |" in text
        assert "ยังสรุปไม่ได้ ต้องใช้ราว 77 ภาพ" in render_markdown(seedlike, "th", policy)


def test_inconclusive_drop_projects_the_images_needed_from_the_discordant_pairs(seedlike: RunResult) -> None:
    """With the discordant counts recorded, the images needed come from Tango's interval itself at the same shares:
    nothing discordant needs ≈770 images to bound the drop below 0.5 pt (not 1/√n's 12 × 48.5² ≈ 28,000)."""
    policy = Policy.from_dict({"max_accuracy_drop_pt": 0.5})
    row = next(r for r in evaluate_policy(seedlike, policy).rows if r.cell.key == ("fp16", "cuda", 1))
    drop = next(o for o in row.outcomes if o.key == "max_accuracy_drop_pt")
    assert drop.status == "inconclusive" and drop.needed == 770


def test_accuracy_checks_of_the_reference_and_without_an_interval(seedlike: RunResult) -> None:
    from bench.report.policy import INCONCLUSIVE

    policy = Policy.from_dict({"max_accuracy_drop_pt": 30.0, "min_accuracy_pct": 50.0})
    rows = {r.cell.key: r for r in evaluate_policy(seedlike, policy).rows}
    fp32 = {o.key: o for o in rows[("fp32", "cuda", 1)].outcomes}
    assert fp32["max_accuracy_drop_pt"].status == NOT_APPLICABLE  # the reference is not compared with itself
    assert fp32["min_accuracy_pct"].status == PASS  # 83.33 % [55.2, 95.3] ≥ 50
    assert fp32["min_accuracy_pct"].interval == pytest.approx((55.20, 95.30), abs=0.01)
    strict = Policy.from_dict({"min_accuracy_pct": 90.0})
    fp32 = next(o for o in evaluate_policy(seedlike, strict).rows[0].outcomes if o.key == "min_accuracy_pct")
    assert fp32.status == INCONCLUSIVE and fp32.needed and fp32.needed > 12
    for cell in seedlike.cells:  # results from before intervals: never a pass on the bare point value
        if cell.accuracy:
            cell.accuracy.pop("accuracy_ci", None)
    fp32 = next(o for o in evaluate_policy(seedlike, policy).rows[0].outcomes if o.key == "min_accuracy_pct")
    assert (fp32.status, fp32.why) == (INCONCLUSIVE, "no_interval")
    assert "no interval was recorded" in render_markdown(seedlike, "en", policy)


def test_accuracy_tables_show_their_intervals_in_both_languages(seedlike: RunResult) -> None:
    en, th = render_markdown(seedlike, "en"), render_markdown(seedlike, "th")
    assert "| fp32 | cuda | 12 | 83.33% [55.2, 95.3] | 83.33% [55.3, 93.0] | 0.944 [0.556, 1.000] |" in en
    assert "| int8 · cpu · batch 1 | 1.50× | 1.03× | — | 0.25× | −8.33 [−35.39, +17.94] |" in en
    assert "counting the images as independent" in en and "นับแต่ละภาพ เป็นหน่วยที่เป็นอิสระต่อกัน" in th

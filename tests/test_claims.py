"""Claims judged with a tolerance and an interval, on the right cells: the accepted range from the claim's words or
the file, ✅ / ❌ / inconclusive from the figure's 95 % interval, fingerprints gating model-specific claims, GPU
claims only on GPU cells, noisy figures deciding nothing, and the leak claim's detection floor."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.errors import InputError
from bench.report.claims import (
    FAIL,
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_MEASURABLE,
    PASS,
    Accepted,
    ClaimOutcome,
    accepted_range,
    claims_for,
    evaluate_claims,
    load_claims,
    parse_claims,
    parse_tolerance,
)
from bench.report.markdown import render_markdown
from bench.report.policy import policy_for
from bench.results import CellResult, RunResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURE = Path(__file__).parent / "data" / "report" / "results.json"


@pytest.fixture
def seedlike() -> RunResult:
    return RunResult.load(FIXTURE)


def _answer(result: RunResult, toml: str) -> dict[str, ClaimOutcome]:
    outcomes = evaluate_claims(result, parse_claims(tomllib.loads(toml), "test.toml"), policy_for(result))
    return {o.claim.id: o for o in outcomes}


def _one(result: RunResult, check: str, limit: Any, text: str = "a claim", **extra: Any) -> ClaimOutcome:
    lines = ['id = "c"', f'text.en = "{text}"', f'check = "{check}"', f"limit = {limit!r}"]
    for key, value in extra.items():
        lines.append(f"{key} = {_toml(value)}")
    return _answer(result, "[[claim]]\n" + "\n".join(lines) + "\n")["c"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _cell(result: RunResult, variant: str, provider: str, batch: int = 1) -> CellResult:
    return next(c for c in result.cells if c.key == (variant, provider, batch))


# --- the accepted range, from the words or the file -----------------------------------------------


@pytest.mark.parametrize(
    "check, limit, wording, low, high, basis",
    [
        ("max_service_p50_ms", 26.0, "/detect answers in about 26 ms", 24.7, 27.3, "about"),
        ("max_service_p50_ms", 26.0, "/detect answers in ≈ 26 ms", 24.7, 27.3, "about"),
        ("max_service_p99_ms", 8.0, "Steady response of ~7–8 ms under load", 6.65, 8.4, "about_range"),
        ("min_speedup_p50", 2.0, "2–3× faster than PyTorch", 2.0, 3.0, "range"),
        ("min_speedup_p50", 2.0, "2-3x faster than PyTorch", 2.0, 3.0, "range"),
        ("gpu_util_mean_pct", (24.0, 36.0), "GPU utilisation 24–36%", 24.0, 36.0, "range"),
        ("max_p99_ms_per_image", 10.0, "consistently under 10 ms", None, 10.0, "bound"),
        ("max_gpu_memory_mb", 2048.0, "within the 2 GB allocation", None, 2048.0, "bound"),
        ("max_p99_ms", 5.0, "p99 ≤ 5 ms", None, 5.0, "bound"),
        ("max_size_ratio", 0.5, "Model file 50 % smaller than FP32", 0.475, 0.525, "less"),
        ("max_memory_ratio", 0.5, "50% less memory than fp32", 0.475, 0.525, "less"),
        ("min_accuracy_pct", 98.84, "Accuracy 98.84%", 98.84, None, "check"),
        ("min_speedup_p50", 2.0, "at least 2× faster", 2.0, None, "bound"),
        ("health_status", 200.0, "Health answers 200", 200.0, 200.0, "check"),
        ("no_leak", 1.0, "No leak over 30 s of load", None, 1.0, "check"),  # words never turn a bound round
        ("max_p99_ms", 3.0, "p99 1–2 s", None, 3.0, "check"),  # a range in another unit is not the claim's
    ],
)
def test_the_accepted_range_comes_from_the_claims_words(
    check: str, limit: Any, wording: str, low: float | None, high: float | None, basis: str
) -> None:
    got = accepted_range(check, limit, wording)
    assert (got.low, got.high, got.basis) == (
        pytest.approx(low) if low is not None else None,
        pytest.approx(high) if high is not None else None,
        basis,
    )


def test_the_files_tolerance_and_bounds_override_the_words() -> None:
    assert accepted_range("max_p99_ms", 10.0, "under 10 ms", parse_tolerance("t", "10%")).high == pytest.approx(11.0)
    about = accepted_range("max_service_p50_ms", 26.0, "about 26 ms", parse_tolerance("t", 0.5))
    assert (about.low, about.high, about.basis) == (25.5, 26.5, "tolerance")
    explicit = accepted_range("min_speedup_p50", 2.0, "2–3× faster", None, low=1.8, high=None)
    assert (explicit.low, explicit.high, explicit.basis) == (1.8, None, "file")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("5%", (0.05, True)),
        (" 2.5 % ", (0.025, True)),
        (0.5, (0.5, False)),
        ("0.5 ms", (0.5, False)),
        (0, (0.0, False)),
    ],
)
def test_tolerances_are_relative_with_a_percent_sign_else_absolute(value: Any, expected: tuple[float, bool]) -> None:
    assert parse_tolerance("t", value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["fast", -1, True, "5%%"])
def test_a_bad_tolerance_is_an_input_error(value: Any) -> None:
    with pytest.raises(InputError, match="tolerance must be"):
        parse_tolerance("t", value)


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (0.48, 0.52, PASS),
        (0.53, 0.60, FAIL),
        (0.40, 0.47, FAIL),
        (0.50, 0.56, INCONCLUSIVE),
        (0.40, 0.60, INCONCLUSIVE),
    ],
)
def test_an_interval_inside_holds_wholly_outside_fails_else_inconclusive(
    low: float, high: float, expected: str
) -> None:
    assert Accepted(0.475, 0.525, "less").judge(low, high) == expected
    assert Accepted(None, 0.525, "bound").judge(0.0, 0.5) == PASS


# --- interval verdicts on the measured cells --------------------------------------------------------


@pytest.mark.parametrize("limit, expected", [(9.0, PASS), (5.0, FAIL), (7.12, INCONCLUSIVE)])
def test_a_mean_latency_claim_is_judged_on_its_replicate_interval(
    seedlike: RunResult, limit: float, expected: str
) -> None:
    got = _one(seedlike, "max_mean_ms", limit, variants=["fp16"], providers=["cuda"], batch_sizes=[1])
    fp16 = _cell(seedlike, "fp16", "cuda")
    assert got.status == expected and got.cell is fp16 and got.basis == "interval"
    low, high = got.interval
    assert low < got.value < high and got.value == pytest.approx(fp16.latency_ms["mean"], rel=1e-3)
    if expected == INCONCLUSIVE:  # says which bound it straddles and how many replicates would decide it
        assert got.why == "straddles" and got.facts["bound"] == 7.12 and got.facts["have"] == 4
        assert got.facts["needed"] > 4 and got.facts["mde"] > 0


def test_a_p99_claim_without_enough_calls_for_an_interval_is_inconclusive_saying_what_it_needs(
    seedlike: RunResult,
) -> None:
    """20 calls give no p99 interval (the p99 of 20 calls is their maximum): never ✅ on that point."""
    got = _one(seedlike, "max_p99_ms_per_image", 100.0, variants=["fp16"], providers=["cuda"], batch_sizes=[1])
    assert got.status == INCONCLUSIVE and got.why == "no_interval" and got.interval is None
    assert (got.facts["need_calls"], got.facts["calls"], got.facts["groups"]) == (500, 20, 4)


def test_the_speedup_claim_uses_the_ratio_interval_over_both_rows(seedlike: RunResult) -> None:
    claim = dict(relative_to="pytorch", variants=["fp16"], providers=["cuda"], batch_sizes=[1])
    wide = _one(seedlike, "min_speedup_p50", [1.5, 3.0], **claim)
    assert wide.status == PASS and wide.interval[0] > 1.5
    straddling = _one(seedlike, "min_speedup_p50", [2.0, 3.0], "2–3× faster", **claim)
    assert straddling.status == INCONCLUSIVE and straddling.facts["bound"] == 2.0
    assert _one(seedlike, "min_speedup_p50", [3.0, 4.0], **claim).status == FAIL


def test_the_seeds_fifty_percent_smaller_passes_on_sizes_that_match_it(seedlike: RunResult) -> None:
    """171 MB / 343 MB = 0.499: "50 % smaller" is 0.5 ± 5 %, and a file size is exact."""
    got = _one(
        seedlike, "max_size_ratio", 0.5, "Model file 50% smaller than FP32", relative_to="fp32", variants=["fp16"]
    )
    assert got.status == PASS and got.value == pytest.approx(171 / 343) and got.basis == "exact"
    assert (got.claim.accepted.low, got.claim.accepted.high) == pytest.approx((0.475, 0.525))
    assert _one(seedlike, "max_size_ratio", 0.5, "half the size", relative_to="fp32", variants=["int8"]).status == PASS
    assert _one(seedlike, "max_size_ratio", 0.5, "50% smaller", relative_to="fp32", variants=["int8"]).status == FAIL


def test_a_memory_peak_has_no_interval_and_is_judged_on_the_value(seedlike: RunResult) -> None:
    got = _one(seedlike, "max_gpu_memory_mb", 2048, "within 2 GB", variants=["fp16"], providers=["cuda"])
    assert (got.status, got.value, got.basis, got.interval) == (FAIL, 2329.0, "point", None)
    assert _one(seedlike, "max_gpu_memory_mb", 2048, "x", tolerance="15%", variants=["fp16"]).status == PASS


def test_service_quantiles_get_an_interval_from_the_loads_samples(seedlike: RunResult) -> None:
    load = seedlike.service[0]["load"]
    assert _one(seedlike, "max_service_p50_ms", 26.0, "about 26 ms", variants=["fp16"]).basis == "point"
    load["samples_ms"] = [24.0 + (i % 7) * 0.5 for i in range(600)]
    got = _one(seedlike, "max_service_p50_ms", 30.0, "p50 under 30 ms", variants=["fp16"])
    assert got.status == PASS and got.basis == "interval" and got.interval[1] < 30.0


# --- comparable only on the named model and data set -----------------------------------------------


ACCURACY = 'check = "min_accuracy_pct"\nlimit = 80.0\nvariants = ["fp16"]\nproviders = ["cuda"]\n'


def test_a_model_card_claim_is_not_comparable_without_the_models_fingerprint(seedlike: RunResult) -> None:
    got = _answer(seedlike, f'[[claim]]\nid = "a"\ntext.en = "Accuracy 80%"\n{ACCURACY}')["a"]
    assert got.status == NOT_COMPARABLE and got.why == "model_unnamed" and got.value == pytest.approx(250 / 3)
    other = f'[[claim]]\nid = "a"\ntext.en = "x"\n{ACCURACY}model_sha256 = "{"f" * 64}"\n'
    got = _answer(seedlike, other)["a"]
    assert got.status == NOT_COMPARABLE and got.why == "model_differs" and got.facts["have"] == "b" * 12


def test_a_model_card_claim_is_judged_when_both_fingerprints_match(seedlike: RunResult) -> None:
    named = f'model_sha256 = "{"B" * 64}"\ndataset_fingerprint = "{"d" * 64}"\n'  # the file's: every claim's
    toml = named + f'[[claim]]\nid = "a"\ntext.en = "Accuracy 80%"\n{ACCURACY}'
    _cell(seedlike, "fp16", "cuda").accuracy.pop("accuracy_ci", None)  # type: ignore[union-attr]
    got = _answer(seedlike, toml)["a"]
    assert got.status == INCONCLUSIVE and got.why == "no_interval" and got.facts["no_ci"]  # no accuracy_ci recorded
    _cell(seedlike, "fp16", "cuda").accuracy["accuracy_ci"] = [0.55, 0.95]  # type: ignore[typeddict-unknown-key]
    got = _answer(seedlike, toml)["a"]
    assert got.status == INCONCLUSIVE and got.interval == pytest.approx((55.0, 95.0)) and got.facts["unit"] == "images"
    _cell(seedlike, "fp16", "cuda").accuracy["accuracy_ci"] = [0.81, 0.9]  # type: ignore[typeddict-unknown-key]
    assert _answer(seedlike, toml)["a"].status == PASS
    wrong_set = toml.replace("d" * 64, "0" * 64)
    assert _answer(seedlike, wrong_set)["a"].why == "dataset_differs"
    recorded = parse_claims(tomllib.loads(toml)).to_config()
    assert recorded["claim"][0]["model_sha256"] == "B" * 64  # bench report re-reads the same fingerprints


def test_a_claim_marked_specific_to_nothing_is_judged_anywhere(seedlike: RunResult) -> None:
    toml = f'[[claim]]\nid = "a"\ntext.en = "x"\n{ACCURACY}specific_to = []\n'
    assert _answer(seedlike, toml)["a"].status == INCONCLUSIVE


# --- GPU claims only on GPU cells ------------------------------------------------------------------


def _cpu_only(result: RunResult, gpu_on_machine: bool) -> RunResult:
    """The run without GPU cells; fp16 on the CPU ran (ORT emulates fp16 there)."""
    out = copy.deepcopy(result)
    fp16_cpu = copy.deepcopy(_cell(result, "fp16", "cuda"))
    fp16_cpu.provider = "cpu"
    out.cells = [c for c in out.cells if c.provider == "cpu" and c.variant != "fp16"] + [fp16_cpu]
    out.cells += [copy.deepcopy(c) for c in result.cells if c.variant == "pytorch"]
    for c in out.cells:
        c.provider = "cpu"
    if not gpu_on_machine:
        out.environment["gpu"], out.environment["gpu_reason"] = None, "NVML not usable"
    out.service[0]["provider"] = "cpu"
    return out


@pytest.mark.parametrize("gpu_on_machine, why", [(True, "gpu_only"), (False, "no_gpu_here")])
def test_a_gpu_claim_is_never_judged_on_a_cpu_cell(seedlike: RunResult, gpu_on_machine: bool, why: str) -> None:
    run = _cpu_only(seedlike, gpu_on_machine)
    got = {o.claim.id: o for o in evaluate_claims(run, load_claims(), policy_for(run))}
    for claim in (
        "latency_under_10ms",
        "benchmark_mean",
        "faster_than_pytorch",
        "memory_half",
        "gpu_memory_2gb",
        "gpu_utilisation",
        "system_ram",
        "steady_7_8ms",
        "batch_per_image",
    ):
        assert got[claim].status == NOT_MEASURABLE and got[claim].why == why, claim
        assert got[claim].value is None and got[claim].cell is None
    assert got["size_half"].status == PASS  # not a GPU claim: the file sizes answer it anywhere
    assert got["health_200"].status == PASS  # nor is the service's health
    text = render_markdown(run, "en")
    if gpu_on_machine:
        assert "not measurable here: a claim about a GPU, and no GPU cell answers it (this run: cpu)" in text
    assert "วัดที่นี่ไม่ได้" in render_markdown(run, "th")


def test_a_claims_file_can_mark_any_claim_as_a_gpu_claim(seedlike: RunResult) -> None:
    run = _cpu_only(seedlike, gpu_on_machine=True)
    assert _one(run, "max_mean_ms", 100.0, variants=["fp16"]).status == PASS  # any cell may answer
    assert _one(run, "max_mean_ms", 100.0, variants=["fp16"], gpu=True).why == "gpu_only"


# --- noisy figures decide nothing ------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["noisy", "contended"])
def test_a_timing_claim_on_a_noisy_cell_is_inconclusive_and_marked(seedlike: RunResult, flag: str) -> None:
    fp16 = _cell(seedlike, "fp16", "cuda")
    fp16.noise = {"noisy": flag == "noisy", "contended": flag == "contended", "why": "others used 1.20 cores"}
    got = _one(seedlike, "max_mean_ms", 9.0, variants=["fp16"], providers=["cuda"])
    assert got.status == INCONCLUSIVE and got.why == "noisy" and "1.20 cores" in got.noisy
    assert got.value is not None and got.interval is not None  # still shown, with its ⚠
    clear_fail = _one(seedlike, "max_mean_ms", 5.0, variants=["fp16"], providers=["cuda"])
    assert clear_fail.status == INCONCLUSIVE  # neither ✅ nor ❌ on a noisy figure
    size = _one(seedlike, "max_size_ratio", 0.5, "50% smaller", relative_to="fp32", variants=["fp16"])
    assert size.status == PASS and size.noisy is None  # a file size is not a timing figure


def test_a_speedup_is_noisy_when_its_reference_row_is(seedlike: RunResult) -> None:
    _cell(seedlike, "pytorch", "cuda").noise = {"noisy": True, "why": "steal 5 %"}
    got = _one(seedlike, "min_speedup_p50", [1.5, 3.0], relative_to="pytorch", variants=["fp16"], providers=["cuda"])
    assert got.status == INCONCLUSIVE and got.noisy == "steal 5 %"


def test_a_noisy_claim_row_carries_the_mark_in_both_languages(seedlike: RunResult) -> None:
    _cell(seedlike, "fp16", "cuda").noise = {"noisy": True, "why": "others used 1.20 cores"}
    en, th = render_markdown(seedlike, "en"), render_markdown(seedlike, "th")
    claims_en = en.split("## Key figures")[0]
    assert "7.102 ms ⚠ noisy" in claims_en and "inconclusive: measured on a noisy cell ⚠" in claims_en
    assert "⚠ มีสัญญาณรบกวน" in th


# --- the service's claims: leak, concurrency, /metrics ---------------------------------------------


def test_the_leak_claim_states_its_duration_and_the_smallest_leak_it_could_see(seedlike: RunResult) -> None:
    got = _one(seedlike, "no_leak", 1.0, "No memory leak", variants=["fp16"])
    # the rule flags growth above max(50 MB, 10 % of 1,210 MB) = 121 MB: over 30 s, 242 MB/min
    assert got.status == INCONCLUSIVE and got.why == "leak_floor"
    assert (got.facts["seconds"], got.facts["floor"], got.value) == (30.0, pytest.approx(242.0), pytest.approx(12.0))
    assert got.facts["seconds_needed"] == pytest.approx(121 * 60)
    load = seedlike.service[0]["load"]
    load["duration_s"] = 3 * 3600.0
    assert _one(seedlike, "no_leak", 1.0, "No memory leak", variants=["fp16"]).status == PASS
    load["server"]["leak_suspected"] = True
    assert _one(seedlike, "no_leak", 1.0, "No memory leak", variants=["fp16"]).status == FAIL
    text = render_markdown(RunResult.load(FIXTURE), "en")
    assert "this run could detect only a leak of ≥ 242.0 MB/min" in text and "in 30 s at 20 req/s" in text


def test_concurrency_needs_a_load_that_kept_requests_in_flight(seedlike: RunResult) -> None:
    got = _one(seedlike, "concurrent_requests", 2, "at least 2 in flight", variants=["fp16"])
    assert got.status == INCONCLUSIVE and got.why == "low_concurrency" and got.value == pytest.approx(40 * 0.027)
    seedlike.service[0]["load"]["achieved_rate"] = 100.0  # 100/s × 26.9 ms mean: 2.7 in flight, no error
    assert _one(seedlike, "concurrent_requests", 2, "x", variants=["fp16"]).status == PASS
    seedlike.service[0]["load"]["errors"] = {"503": 4}
    assert _one(seedlike, "concurrent_requests", 2, "x", variants=["fp16"]).status == FAIL


def test_metrics_are_not_measurable_until_the_service_run_probes_them(seedlike: RunResult) -> None:
    got = _one(seedlike, "metrics_status", 200, "/metrics answers", variants=["fp16"])
    assert got.status == NOT_MEASURABLE and got.why == "metrics_not_probed"
    seedlike.service[0]["metrics"] = {"http_status": 200}  # type: ignore[typeddict-unknown-key]
    assert _one(seedlike, "metrics_status", 200, "/metrics answers", variants=["fp16"]).status == PASS


# --- the seed's claims, each with a row --------------------------------------------------------------


def test_every_quantitative_seed_claim_has_a_row(seedlike: RunResult) -> None:
    ids = [c.id for c in load_claims().claims]
    for claim in (
        "benchmark_mean",  # mean 7.12 ms
        "benchmark_std",  # std 0.91 ms
        "detect_inference_4_8ms",  # inference 4.8 ms
        "system_ram",  # RAM 14.8 %
        "metrics_endpoint",  # /metrics answers
        "concurrency",  # handles concurrent requests
        "latency_under_10ms",
        "faster_than_pytorch",
        "size_half",
        "no_memory_leak",
    ):
        assert claim in ids
    got = {o.claim.id: o for o in evaluate_claims(seedlike, load_claims(), policy_for(seedlike))}
    assert all(o.status in (PASS, FAIL, INCONCLUSIVE, NOT_COMPARABLE, NOT_MEASURABLE) for o in got.values())
    assert all(o.status == NOT_MEASURABLE or o.value is not None for o in got.values())
    assert got["accuracy_9884"].status == NOT_COMPARABLE  # the demo's model and set are not the model card's
    assert got["detect_inference_4_8ms"].status == FAIL  # the session's mean interval lies above 4.8 ms


def test_the_claims_table_shows_value_interval_accepted_range_and_verdict(seedlike: RunResult) -> None:
    en = render_markdown(seedlike, "en").split("## Key figures")[0]
    assert "| claim | measured | 95 % interval | accepted | on | verdict |" in en
    assert (
        "| Model file 50% smaller than FP32 | 0.499× file size of fp32 | exact | 0.475–0.525× (“less/smaller”: ±5%) "
        "| fp16 · cuda · batch 1 | ✅ |" in en
    )
    assert "| 2–3× (the stated range) | fp16 · cuda · batch 1 | inconclusive: the interval straddles 2×" in en
    assert "not comparable here: a claim about a specific model" in en
    th = render_markdown(seedlike, "th")
    assert "ช่วงความเชื่อมั่น 95 %" in th and "เทียบกันไม่ได้ที่นี่" in th and "ยังสรุปไม่ได้" in th


# --- claims files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        ('tolerence = "5%"', "unknown key 'tolerence'"),
        ('tolerance = "fast"', "tolerance must be"),
        ('gpu = "yes"', "gpu must be true or false"),
        ('specific_to = ["weights"]', "specific_to takes"),
        ("model_sha256 = 3", "model_sha256 must be a string"),
        ("min = 'low'", "min must be a number"),
        ("limit = [3.0, 1.0]", "limit must be \\[low, high\\]"),
    ],
)
def test_bad_claim_keys_are_input_errors(extra: str, message: str) -> None:
    body = '[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "max_p99_ms"\n'
    body += extra + "\n" if extra.startswith("limit") else f"limit = 1\n{extra}\n"
    with pytest.raises(InputError, match=message):
        parse_claims(tomllib.loads(body))


def test_an_unknown_top_level_key_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown key 'models'"):
        parse_claims(tomllib.loads('models = 1\n[[claim]]\nid = "a"\ntext.en = "x"\ncheck = "max_p99_ms"\nlimit = 1\n'))


def test_a_run_that_answered_the_built_in_claims_is_re_rendered_with_them_as_they_are_now(
    seedlike: RunResult, tmp_path: Path
) -> None:
    """An old run recorded the seed claims without GPU marks; re-rendering applies today's (no fp16-on-CPU
    verdicts), while a user's claims file is answered as recorded."""
    old = {"id": "latency_under_10ms", "text": {"en": "under 10 ms"}, "check": "max_p99_ms", "limit": 10.0}
    seedlike.config["claims"] = {"source": None, "claim": [old]}
    assert claims_for(seedlike).claims == load_claims().claims
    mine = tmp_path / "mine.toml"
    mine.write_text('model_sha256 = "abc"\n[[claim]]\nid = "x"\ntext.en = "x"\ncheck = "max_p99_ms"\nlimit = 5\n')
    seedlike.config["claims"] = load_claims(mine).to_config()
    again = claims_for(seedlike).claims
    assert [c.id for c in again] == ["x"] and again[0].model_sha256 == ("abc",)

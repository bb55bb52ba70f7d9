"""The release report as Markdown, in any catalogue language, from a RunResult alone.

Layout: the hand-written seed report's claims answered one by one, then key figures, environment,
measurements (compact tables first, details after, cells that did not run collapsed to one line per
provider and reason), comparison, variants, checks, recommendation, plots, service, robustness. Every
figure comes from the results and every sentence from the catalogue; numbers go through
:func:`bench.formatting.fmt`, so both languages show identical figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.formatting import fmt
from bench.load.verdicts import LEAK_FLOOR_MB, LEAK_FRACTION
from bench.noise import noisy_figure
from bench.outdir import shown_path
from bench.providers import is_gpu
from bench.report import where_time_goes
from bench.report.analysis import (
    CANNOT_TELL,
    DECIDE_MAX_ROUNDS,
    DECIDED,
    SLOWER,
    TIED,
    Contender,
    Recommendation,
    compare_to_reference,
    ok_cells,
    rank_value,
    recommend,
)
from bench.report.catalog import Catalog, catalog
from bench.report.claims import FAIL as CLAIM_FAIL
from bench.report.claims import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_MEASURABLE,
    ClaimOutcome,
    ClaimSet,
    claims_for,
    evaluate_claims,
)
from bench.report.claims import PASS as CLAIM_PASS
from bench.report.claims import counts as claim_counts
from bench.report.detector import detector_parts
from bench.report.plots import PLOT_NAMES, PlotOutcome, planned_plots
from bench.report.policy import (
    ACCURACY_CHECKS,
    FAIL,
    NOT_APPLICABLE,
    NOT_MEASURED,
    PASS,
    CellChecks,
    Policy,
    PolicyVerdict,
    evaluate_policy,
    policy_for,
    relative_figure,
    relative_key,
    split_relative_key,
    split_robustness_key,
)
from bench.report.policy import INCONCLUSIVE as CHECK_INCONCLUSIVE
from bench.results import CellResult, RunResult, ServiceEntry
from bench.stats import PRACTICAL_FACTOR

MS, PCT = 3, 2  # digits: latency figures, percentages

# Why a cell did not run, by its reason text → catalogue key (reason.*, reason_short.*): the Thai report
# translates the reason and keeps ORT's own words in parentheses.
_REASON_KINDS: tuple[tuple[str, str], ...] = (
    ("no_gpu", r"no usable CUDA GPU|is_available\(\) is False|NVML|no NVIDIA|does not exist \(torch sees"),
    ("torch_missing", r"need torch|torch and transformers|CPU-only"),
    ("not_supported", r"PyTorch variants run on|half precision on CUDA|does not allow|not supported"),
    ("libs_missing", r"not found|cannot open shared object|could not start"),
    ("crashed", r"crashed|killed by signal"),
    ("timed_out", r"timed out"),
    ("build_failed", r"build|recipe"),
)


def reason_kind(reason: str | None) -> str:
    """The catalogue key of a not-run reason (``other`` when no pattern knows it)."""
    for kind, pattern in _REASON_KINDS:
        if reason and re.search(pattern, reason):
            return kind
    return "other"


def reason_detail(reason: str | None) -> str:
    """The reason without its "provider: status — " lead (the report states those itself)."""
    text = reason or "—"
    return re.sub(r"^\w[\w-]*: ((unavailable|failed) — )?", "", text)


def _esc(text: Any) -> str:
    """Safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    right = right or [False] * len(header)
    lines = [
        "| " + " | ".join(_esc(h) for h in header) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(_esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class _Writer:
    def __init__(
        self,
        result: RunResult,
        cat: Catalog,
        policy: Policy,
        plots: dict[str, PlotOutcome],
        claims: ClaimSet | None = None,
    ):
        self.r = result
        self.c = cat
        self.policy = policy
        self.ref = policy.reference
        self.plots = plots
        self.verdict: PolicyVerdict = evaluate_policy(result, policy)
        self.rec: Recommendation = recommend(result, self.verdict)
        self.claims = claims or claims_for(result)
        self.claim_outcomes: list[ClaimOutcome] = evaluate_claims(result, self.claims, policy)
        self.ran = ok_cells(result)

    # --- small formatters -------------------------------------------------------------------------
    def t(self, key: str, **kw: Any) -> str:
        return self.c.t(key, **kw)

    def cell(self, cell: CellResult) -> str:
        return self.t("common.cell", variant=cell.variant, provider=cell.provider, batch=cell.batch_size)

    def pair(self, variant: str, provider: str) -> str:
        return self.t("common.pair", variant=variant, provider=provider)

    def pct(self, fraction: float | None) -> str:
        return self.t("common.dash") if fraction is None else self.t("common.percent", value=fmt(fraction * 100.0, PCT))

    def ratio(self, value: float | None) -> str:
        return self.t("common.dash") if value is None else self.t("common.ratio", value=fmt(value, 2))

    def signed(self, value: float | None, digits: int = PCT) -> str:
        if value is None:
            return self.t("common.dash")
        text = fmt(abs(value), digits)
        return ("+" if value > 0 else "−" if value < 0 and text.strip("0.,") else "±") + text

    def status(self, status: str) -> str:
        return self.t(f"common.status_{status}")

    def check_name(self, key: str, limit: float) -> str:
        if split_robustness_key(key) is not None:
            return self.robustness_check_name(key)
        relative = split_relative_key(key)
        if relative is not None:
            check, reference = relative
            return self.t(f"s5.check_{check}", limit=fmt(float(limit), 2), reference=self._ref_name(reference))
        digits = 0 if float(limit).is_integer() else 2
        return self.t(f"s5.check_{key}", limit=fmt(float(limit), digits))

    def _ref_name(self, reference: str) -> str:
        return self.t("common.previous_release") if reference == "previous" else reference

    def why(self, code: str | None, detail: str | None = None, **kw: Any) -> str:
        """A reason code's sentence from the catalogue (``why.<code>``), its free-text detail filled in."""
        if not code:
            return self.t("common.dash")
        return self.t(f"why.{code}", detail=detail or self.t("common.dash"), reference=kw.get("reference", self.ref))

    def reason(self, cell_reason: str | None, provider: str = "") -> str:
        """A not-run reason in the report's language, the original words kept in parentheses."""
        kind = reason_kind(cell_reason)
        if kind != "no_gpu" and is_gpu(provider) and not self.r.environment.get("gpu"):
            return self.t("reason.no_gpu_here", detail=reason_detail(cell_reason), provider=provider)
        return self.t(f"reason.{kind}", detail=reason_detail(cell_reason), provider=provider)

    def short_reason(self, cell: CellResult) -> str:
        if is_gpu(cell.provider) and not self.r.environment.get("gpu") and cell.status == "unavailable":
            return self.t("reason_short.no_gpu")
        return self.t(f"reason_short.{reason_kind(cell.reason)}")

    def cells_text(self, cells: list[CellResult]) -> str:
        """A list of cells, shortened: "every cpu cell", "fp16 × batch 1, 8", or the cells one by one."""
        if not cells:
            return self.t("common.dash")
        providers = {c.provider for c in cells}
        if len(providers) == 1:
            provider = next(iter(providers))
            same = [c for c in self.ran if c.provider == provider]
            if len(cells) > 2 and {c.key for c in cells} == {c.key for c in same}:
                return self.t("common.every_cell_of", provider=provider)
        return ", ".join(self.cell(c) for c in cells)

    def grid_text(self, cells: list[CellResult]) -> str:
        """Not-run cells of one provider: "fp32, fp16 × batch 1, 8" when they form a full grid."""
        variants = list(dict.fromkeys(c.variant for c in cells))
        batches = list(dict.fromkeys(c.batch_size for c in cells))
        if len(cells) == len(variants) * len(batches):
            return self.t("common.grid", variants=", ".join(variants), batches=", ".join(fmt(b) for b in batches))
        return ", ".join(f"{c.variant} b{c.batch_size}" for c in cells)

    # --- sections ---------------------------------------------------------------------------------
    def render(self) -> str:
        parts = [
            self.title(),
            self.claims_section(),
            self.key_figures(),
            self.environment(),
            self.per_cell(),
            self.comparison(),
            self.variants(),
            self.checks(),
            self.recommendation(),
            self.plot_section(),
            where_time_goes.section(self.r, self.t, self.plots),
            self.service(),
            self.robustness(),
        ]
        return "\n\n".join(p.rstrip() for p in parts if p) + "\n"

    def title(self) -> str:
        model = Path(str(self.r.config.get("model_dir") or "model")).name or "model"
        return "\n\n".join(
            [
                self.t("title.heading", model=model),
                self.t("title.intro", run_id=self.r.run_id, created=self.r.created),
                self.decision(),
            ]
        )

    # --- claims of the hand-written report ---------------------------------------------------------
    def claims_section(self) -> str:
        """Each claim of the hand-written report → value, 95 % interval, accepted range → ✅ / ❌ / inconclusive /
        not comparable / not measurable here (why)."""
        outcomes = self.claim_outcomes
        if not outcomes:
            return ""
        source = (
            self.t("claims.source_file", path=self.claims.source)
            if self.claims.source
            else self.t("claims.source_seed")
        )
        n = claim_counts(outcomes)
        head = [
            self.t("claims.col_claim"),
            self.t("claims.col_measured"),
            self.t("claims.col_interval"),
            self.t("claims.col_accepted"),
            self.t("claims.col_on"),
            self.t("claims.col_verdict"),
        ]
        rows = [
            [
                o.claim.text_in(self.c.lang),
                self.claim_value(o),
                self.claim_interval(o),
                self.claim_accepted(o),
                self.claim_where(o),
                self.claim_verdict(o),
            ]
            for o in outcomes
        ]
        return "\n\n".join(
            [
                self.t("claims.heading"),
                self.t("claims.intro", source=source),
                _table(head, rows),
                self.t(
                    "claims.summary",
                    passed=fmt(n[CLAIM_PASS]),
                    failed=fmt(n[CLAIM_FAIL]),
                    inconclusive=fmt(n[INCONCLUSIVE]),
                    not_comparable=fmt(n[NOT_COMPARABLE]),
                    unmeasurable=fmt(n[NOT_MEASURABLE]),
                    total=fmt(len(outcomes)),
                ),
            ]
        )

    def claim_where(self, o: ClaimOutcome) -> str:
        if o.service is not None:
            return self.t(
                "claims.on_service", pair=self.pair(o.service.get("variant", "?"), o.service.get("provider", "?"))
            )
        if o.cell is not None and o.status != NOT_MEASURABLE:
            return self.cell(o.cell)
        return self.t("common.dash")

    def claim_verdict(self, o: ClaimOutcome) -> str:
        if o.status == CLAIM_PASS:
            return self.t("common.pass_mark")
        if o.status == CLAIM_FAIL:
            return self.t("common.fail_mark")
        if o.status == INCONCLUSIVE:
            return self.t("claims.inconclusive", reason=self.claim_undecided(o))
        if o.status == NOT_COMPARABLE:
            return self.t("claims.not_comparable", reason=self.t(f"claims.why_{o.why}", **o.facts))
        if o.why == "cell_not_run" and o.cell is not None:
            why = self.t("why.cell_not_run", cell=self.cell(o.cell), detail=self.reason(o.detail, o.cell.provider))
        elif o.why == "reference_not_planned" and str(o.claim.relative_to or "").startswith("pytorch"):
            why = self.t("why.no_pytorch_row", reference=o.claim.relative_to)
        elif o.why == "gpu_only":
            why = self.t("claims.why_gpu_only", providers=o.detail or self.t("common.dash"))
        elif o.why == "metrics_not_probed":
            why = self.t("claims.why_metrics_not_probed")
        else:
            why = self.why(o.why, o.detail, reference=o.claim.relative_to or self.ref)
        return self.t("claims.not_measurable", reason=why)

    def claim_undecided(self, o: ClaimOutcome) -> str:
        """Why an inconclusive claim is undecided, and what would decide it."""
        f = o.facts
        if o.why == "noisy":
            return self.t("claims.why_noisy", detail=o.detail or self.t("common.dash"))
        if o.why == "straddles":
            bound = self.claim_in_unit(o, self.claim_number(f["bound"]))
            unit = self.t(f"claims.unit_{f.get('unit') or 'replicates'}")
            needed, have = f.get("needed"), f.get("have")
            if needed is None:
                return self.t("claims.why_on_bound", bound=bound)
            if not f.get("practical", True):
                return self.t("claims.why_too_close", bound=bound, needed=fmt(needed), unit=unit, have=fmt(have))
            mde = self.t("common.dash") if f.get("mde") is None else fmt(f["mde"] * 100.0, 1)
            return self.t("claims.why_straddles", bound=bound, mde=mde, needed=fmt(needed), unit=unit, have=fmt(have))
        if o.why == "leak_floor":
            if f.get("seconds_needed") is None:
                return self.t("claims.why_leak_zero")
            return self.t(
                "claims.why_leak_floor",
                minutes=fmt(f["seconds_needed"] / 60.0, 0),
                tolerated=fmt(f.get("tolerated"), 1),
            )
        if o.why == "low_concurrency":
            return self.t(
                "claims.why_low_concurrency",
                value=fmt(o.value, 2),
                need=fmt(f.get("need"), 0),
                rate=fmt(f.get("rate_needed"), 0),
            )
        if f.get("no_ci"):
            return self.t("claims.why_no_ci")
        if f.get("need_calls") is not None:
            return self.t(
                "claims.why_few_calls",
                statistic=f.get("statistic"),
                need_calls=fmt(f["need_calls"]),
                need_groups=fmt(f.get("need_groups")),
                calls=fmt(f.get("calls")),
                groups=fmt(f.get("groups")),
            )
        return self.t("claims.why_no_interval")

    def claim_digits(self, o: ClaimOutcome) -> int:
        return {"ms": MS, "MB": 1, "img/s": 1, "MB/min": 1}.get(o.claim.unit, 2)

    def claim_number(self, value: float) -> str:
        """A stated limit or bound: up to four significant digits, no trailing zeros (10, 24.7, 0.475, 2,048)."""
        short = f"{value:.4g}"
        return fmt(float(value), len(short.split(".")[1]) if "." in short and "e" not in short else 0)

    def claim_in_unit(self, o: ClaimOutcome, text: str) -> str:
        """``text`` (a number, an interval) followed by the claim's unit."""
        unit = {"ms": "ms", "%": "pct", "×": "x", "MB": "mb", "pt": "pt", "img/s": "ips", "MB/min": "mb_min"}
        return self.t(f"claims.u_{unit.get(o.claim.unit, 'none')}", value=text)

    def claim_interval(self, o: ClaimOutcome) -> str:
        """The figure's 95 % interval, "exact", or that none exists and the value was judged."""
        if o.value is None or o.status == NOT_MEASURABLE:
            return self.t("common.dash")
        if o.basis == "exact":
            return self.t("claims.interval_exact")
        if o.basis == "point":
            return self.t("claims.interval_point")
        if o.basis == "interval" and o.interval is not None:
            digits = self.claim_digits(o)
            low, high = (fmt(x, digits) for x in o.interval)
            return self.claim_in_unit(o, self.t("claims.ci", low=low, high=high))
        return self.t("common.dash")

    def claim_accepted(self, o: ClaimOutcome) -> str:
        """The accepted range and where it came from (the claim's words, the claims file)."""
        a = o.claim.accepted
        if a.low is not None and a.high is not None and a.low == a.high:
            text = self.t("claims.accepted_equal", value=self.claim_in_unit(o, self.claim_number(a.low)))
        elif a.low is not None and a.high is not None:
            high = self.claim_in_unit(o, self.claim_number(a.high))
            text = self.t("claims.accepted_between", low=self.claim_number(a.low), high=high)
        elif a.high is not None:
            text = self.t("claims.accepted_at_most", high=self.claim_in_unit(o, self.claim_number(a.high)))
        elif a.low is not None and o.claim.direction == "all" and a.low == 1.0:
            text = self.t("claims.accepted_all")
        elif a.low is not None:
            text = self.t("claims.accepted_at_least", low=self.claim_in_unit(o, self.claim_number(a.low)))
        else:
            return self.t("common.dash")
        if a.basis in ("bound", "check"):
            return text
        tolerance = self.t("common.dash")
        if a.tolerance is not None:
            tolerance = (
                self.t("common.percent", value=self.claim_number(a.tolerance * 100.0))
                if a.relative
                else self.claim_in_unit(o, self.claim_number(a.tolerance))
            )
        return self.t("claims.accepted_with", range=text, note=self.t(f"claims.basis_{a.basis}", tolerance=tolerance))

    def claim_value(self, o: ClaimOutcome) -> str:
        """The measured value with what the reader needs to judge it (reference row, load, set size), marked ⚠ when
        the timing figure behind it was measured on a noisy or contended cell."""
        if o.value is None:
            return self.t("common.dash")
        text = self.claim_figure(o, o.value)
        return self.t("claims.noisy_value", value=text) if o.noisy else text

    def claim_figure(self, o: ClaimOutcome, v: float) -> str:
        check, f = o.claim.check, o.facts
        if check in ("max_p99_ms", "max_p99_ms_per_image", "max_service_p50_ms", "max_service_p99_ms"):
            text = self.t("claims.value_ms", value=fmt(v, MS))
            if check == "max_p99_ms_per_image" and o.cell is not None and o.cell.batch_size > 1:
                text = self.t("claims.value_ms_per_image", value=fmt(v, MS))
            if check.startswith("max_service"):
                text += " " + self.t(
                    "claims.value_load", rate=fmt(f.get("rate"), 0), seconds=fmt(f.get("duration_s"), 0)
                )
            return text
        if check in ("max_mean_ms", "max_std_ms"):
            return self.t("claims.value_ms", value=fmt(v, MS))
        if check == "min_speedup_p50":
            ref = (
                self.t("common.cell", variant=f.get("reference"), provider=o.cell.provider, batch=o.cell.batch_size)
                if o.cell is not None
                else self.t("common.dash")
            )
            return self.t("claims.value_speedup", value=fmt(v, 2), reference=ref)
        if check == "max_memory_ratio":
            kind = self.t("claims.memory_gpu" if f.get("memory") == "memory_gpu" else "claims.memory_rss")
            return self.t("claims.value_ratio_of", value=fmt(v, 2), what=kind, reference=f.get("reference"))
        if check == "max_size_ratio":
            return self.t(
                "claims.value_ratio_of", value=fmt(v, 3), what=self.t("claims.size"), reference=f.get("reference")
            )
        if check in ("max_gpu_memory_mb", "max_rss_mb", "max_model_mb"):
            return self.t("claims.value_mb", value=fmt(v, 1))
        if check == "gpu_util_mean_pct":
            return self.t("common.percent", value=fmt(v, 1))
        if check == "max_system_ram_pct":
            return self.t("claims.value_system_ram", value=fmt(v, 1))
        if check in ("min_accuracy_pct",):
            return self.t("claims.value_accuracy", value=fmt(v, PCT), n=fmt(f.get("n")))
        if check == "max_accuracy_drop_pt":
            return self.t("claims.value_pt", value=self.signed(v))
        if check == "min_throughput_ips":
            return self.t("s6.unit_ips", value=fmt(v, 1))
        if check == "max_batch_ms_per_image":
            return self.t(
                "claims.value_batch", value=fmt(v, MS), files=fmt(f.get("files")), request=fmt(f.get("request_p50"), MS)
            )
        if check in ("health_status", "metrics_status"):
            return self.t("claims.value_health", code=fmt(int(v)), status=f.get("status") or self.t("common.dash"))
        if check == "no_leak":
            return self.t(
                "claims.value_leak_yes" if o.status == CLAIM_FAIL else "claims.value_leak_no",
                start=fmt(f.get("start"), 1),
                end=fmt(f.get("end"), 1),
                seconds=fmt(f.get("seconds"), 0),
                rate=fmt(f.get("rate"), 0),
                growth=self.signed(v, 1),
                floor=fmt(f.get("floor"), 1),
            )
        if check == "concurrent_requests":
            return self.t(
                "claims.value_concurrency_errors" if f.get("errors") else "claims.value_concurrency",
                value=fmt(v, 2),
                rate=fmt(f.get("rate"), 0),
                errors=fmt(f.get("errors")),
            )
        if check == "invalid_inputs":
            return self.t("claims.value_invalid", handled=fmt(f.get("handled")), cases=fmt(f.get("cases")))
        return fmt(v, 2)

    # --- key figures ------------------------------------------------------------------------------
    def counts_text(self) -> str:
        """ "14 ran of 42 planned; 28 unavailable (cuda, tensorrt: no GPU)"."""
        cells = self.r.cells
        parts = [self.t("key.ran_of", ok=fmt(len(self.ran)), total=fmt(len(cells)))]
        for status in ("unavailable", "failed"):
            mine = [c for c in cells if c.status == status]
            if not mine:
                continue
            groups: dict[str, list[str]] = {}
            for c in mine:
                providers = groups.setdefault(self.short_reason(c), [])
                if c.provider not in providers:
                    providers.append(c.provider)
            why = "; ".join(f"{', '.join(p)}: {short}" for short, p in groups.items())
            parts.append(self.t(f"key.count_{status}", n=fmt(len(mine)), why=why))
        return "; ".join(parts)

    def key_figures(self) -> str:
        lines = []
        if self.rec.choice is not None:
            choice = self.cell(self.rec.choice.cell)
            status = self.t(f"decision.status_{self.rec.status}")
            if self.rec.tied:
                others = ", ".join(self.cell(r.cell) for r in self.rec.tied if r is not self.rec.choice)
                lines.append(
                    self.t(
                        "key.recommendation_tied",
                        choice=choice,
                        status=status,
                        others=others,
                        margin=self._margin(),
                        rule=self.t("s6.tie_rule"),
                    )
                )
            else:
                lines.append(self.t("key.recommendation", choice=choice, status=status))
        else:
            lines.append(self.t("key.recommendation_none"))
        candidates_ran = [r for r in self.verdict.candidates if r.cell.status == "ok"]
        lines.append(
            self.t(
                "key.checks",
                verdict=self.t("common.pass" if self.verdict.passed else "common.fail"),
                passing=fmt(len(self.verdict.passing)),
                candidates=fmt(len(candidates_ran)),
                not_run=fmt(len(self.verdict.candidates) - len(candidates_ran)),
            )
        )
        lines.append(self.t("key.cells", counts=self.counts_text()))
        if self.ran:
            fastest = min(self.ran, key=lambda c: ((c.latency_ms or {}).get("p50") or float("inf"), c.key))
            lines.append(
                self.t("key.fastest", p50=fmt((fastest.latency_ms or {}).get("p50"), MS), cell=self.cell(fastest))
            )
            best = max(self.ran, key=lambda c: c.throughput_ips or 0.0)
            lines.append(self.t("key.throughput", ips=fmt(best.throughput_ips, 1), cell=self.cell(best)))
        else:
            lines.append(self.t("key.none_ran"))
        ref = next(
            (
                c
                for c in self.r.cells
                if c.variant == self.ref and c.accuracy and c.accuracy.get("accuracy") is not None
            ),
            None,
        )
        ref_acc = ref.accuracy if ref is not None else None
        if ref is not None and ref_acc is not None:
            lines.append(
                self.t(
                    "key.accuracy",
                    reference=self.ref,
                    accuracy=self.pct(ref_acc.get("accuracy")),
                    n=fmt(ref_acc.get("n")),
                    provider=ref.provider,
                )
            )
        else:
            lines.append(self.t("key.accuracy_none", reason=self._accuracy_reason()))
        noisy = [c for c in self.ran if (c.noise or {}).get("noisy")]
        if noisy:
            lines.append(self.t("key.noisy", n=fmt(len(noisy)), cells=self.cells_text(noisy)))
        return self.t("key.heading") + "\n\n" + "\n".join(f"- {line}" for line in lines)

    def _accuracy_reason(self) -> str:
        reason = self.r.config.get("accuracy_reason")
        if reason:
            return str(reason)
        return self.t("key.no_reference_evaluated", reference=self.ref)

    def environment(self) -> str:
        env, cfg, d = self.r.environment, self.r.config, self.t("common.dash")
        cpu = env.get("cpu") or {}
        gpu = env.get("gpu")
        plat = env.get("platform") or {}
        env_rows = [
            (self.t("s1.run_id"), f"`{self.r.run_id}`"),
            (self.t("s1.created"), self.r.created),
            (self.t("s1.bench"), env.get("bench") or d),
            (
                self.t("s1.onnxruntime"),
                self.t("s1.ort_build", version=env.get("onnxruntime") or d, build=env.get("onnxruntime_build") or d),
            ),
            (self.t("s1.compiled"), ", ".join(env.get("onnxruntime_providers_compiled") or []) or d),
            (self.t("s1.python"), env.get("python") or d),
            (
                self.t("s1.platform"),
                " ".join(str(plat.get(k)) for k in ("system", "release", "machine") if plat.get(k)) or d,
            ),
            (
                self.t("s1.cpu"),
                self.t(
                    "s1.cpu_value",
                    model=cpu.get("model") or d,
                    physical=fmt(cpu.get("cores_physical")),
                    logical=fmt(cpu.get("cores_logical")),
                ),
            ),
            (self.t("s1.ram"), self.t("s1.ram_value", mb=fmt(env.get("memory_total_mb")))),
            (
                self.t("s1.gpu"),
                self.t(
                    "s1.gpu_value",
                    name=gpu.get("name"),
                    driver=gpu.get("driver"),
                    cuda=gpu.get("cuda"),
                    memory=fmt(gpu.get("memory_total_mb"), 0),
                )
                if gpu
                else self.t("s1.gpu_none", reason=env.get("gpu_reason") or d),
            ),
            (
                self.t("s1.gpu_libraries"),
                " · ".join(f"{k} {v or d}" for k, v in (env.get("cuda_libraries") or {}).items()) or d,
            ),
            (self.t("s1.machine_id"), f"`{env.get('machine_id')}`" if env.get("machine_id") else d),
        ]
        loop_key = "s1.loop_min_time" if cfg.get("min_time_s") else "s1.loop_value"
        threads = (cfg.get("threads"), cfg.get("inter_op_threads"))
        ds = self.r.dataset
        io = cfg.get("io_binding")
        cfg_rows = [
            (self.t("s1.model_dir"), f"`{shown_path(cfg.get('model_dir'))}`" if cfg.get("model_dir") else d),
            (self.t("s1.variants"), ", ".join(cfg.get("variants") or []) or d),
            (self.t("s1.providers"), ", ".join(cfg.get("providers") or []) or d),
            (self.t("s1.batch_sizes"), ", ".join(str(b) for b in cfg.get("batch_sizes") or []) or d),
            (
                self.t("s1.loop"),
                self.t(
                    loop_key,
                    warmup=fmt(cfg.get("warmup")),
                    iterations=fmt(cfg.get("iterations")),
                    seconds=fmt(cfg.get("min_time_s")),
                ),
            ),
            (
                self.t("s1.threads"),
                self.t("s1.threads_default")
                if threads == (None, None)
                else " / ".join(fmt(v) if v is not None else self.t("s1.threads_default") for v in threads),
            ),
            (self.t("s1.graph_opt"), cfg.get("graph_opt") or d),
            (
                self.t("s1.io_binding"),
                self.t("s1.io_binding_auto") if io is None else self.t("common.yes" if io else "common.no"),
            ),
            (self.t("s1.sampling"), self.t("s1.sampling_value", hz=fmt(cfg.get("sample_hz"), 1))),
            (self.t("s1.seed"), fmt(cfg.get("seed"))),
        ]
        if cfg.get("cell_timeout_s") is not None:
            cfg_rows.append(
                (self.t("s1.cell_timeout"), self.t("s1.cell_timeout_value", seconds=fmt(cfg["cell_timeout_s"], 0)))
            )
        cfg_rows.append(
            (
                self.t("s1.dataset"),
                self.t(
                    "s1.dataset_value",
                    path=shown_path(ds.get("path")),
                    n=fmt(ds.get("n")),
                    fingerprint=str(ds.get("fingerprint") or "")[:16],
                )
                if ds
                else self.t("s1.dataset_none"),
            )
        )
        threshold = cfg.get("threshold")
        cfg_rows += [
            (
                self.t("s1.threshold"),
                self.t("s1.threshold_default")
                if threshold is None
                else self.t("s1.threshold_value", value=fmt(float(threshold), 2)),
            ),
            (self.t("s1.positive_label"), cfg.get("positive_label") or self.t("s1.positive_auto")),
            (
                self.t("s1.accuracy"),
                self.t("s1.accuracy_value")
                if any(c.accuracy for c in self.r.cells)
                else self.t("s1.accuracy_none", reason=self._accuracy_reason()),
            ),
            (self.t("s1.policy"), f"`{self.policy.source}`" if self.policy.source else self.t("s1.policy_default")),
        ]
        if cfg.get("resumed"):
            cfg_rows.append((self.t("s1.resumed"), self.t("s1.resumed_value")))
        head = [self.t("s1.col_item"), self.t("s1.col_value")]
        return "\n\n".join(
            [
                self.t("s1.heading"),
                self.t("s1.env_heading"),
                _table(head, env_rows),
                self.t("s1.config_heading"),
                _table(head, cfg_rows),
            ]
        )

    def per_cell(self) -> str:
        """Compact latency table of the cells that ran, a detail table, accuracy, then the cells that did not
        run collapsed to one line per provider and reason (every row stays in results.json / results.csv)."""
        d = self.t("common.dash")
        parts = [self.t("s2.heading"), self.t("s2.latency_heading")]
        if not self.ran:
            parts.append(self.t("s2.none_ran"))
        else:
            samples = sorted({len(c.samples_ms) for c in self.ran})
            n_text = "–".join(fmt(s) for s in (samples[0], samples[-1])) if len(samples) > 1 else fmt(samples[0])
            parts.append(self.t("s2.latency_note", n=n_text))
            keys = ("variant", "provider", "batch", "p50", "p95", "p99", "p99_image", "ips", "rss", "noise")
            rows = []
            for c in self.ran:
                lat, mem = c.latency_ms or {}, c.memory or {}
                p99 = lat.get("p99")
                rows.append(
                    [
                        c.variant,
                        c.provider,
                        fmt(c.batch_size),
                        *(fmt(lat.get(k), MS) for k in ("p50", "p95", "p99")),
                        fmt(None if p99 is None else p99 / c.batch_size, MS),
                        fmt(c.throughput_ips, 1),
                        fmt(mem.get("rss_peak_mb"), 1),
                        self.t("s2.noisy") if (c.noise or {}).get("noisy") else d,
                    ]
                )
            parts.append(_table([self.t(f"s2.col_{k}") for k in keys], rows, [False] * 3 + [True] * 6 + [False]))
            noisy = [c for c in self.ran if (c.noise or {}).get("noisy")]
            if 0 < len(noisy) <= 3:
                parts.append(
                    "\n".join(
                        f"- {self.t('s2.noisy_item', cell=self.cell(c), why=(c.noise or {}).get('why') or d)}"
                        for c in noisy
                    )
                )
            elif noisy:  # many: one line with the range of what others used, not a line per cell
                others = [o for c in noisy if (o := (c.noise or {}).get("others_cpu_cores")) is not None]
                spread = f"{fmt(min(others), 2)}–{fmt(max(others), 2)}" if others else d
                parts.append(
                    "- " + self.t("s2.noisy_many", n=fmt(len(noisy)), cells=self.cells_text(noisy), cores=spread)
                )
            parts += [self.t("s2.detail_heading"), self.detail_table()]
        parts += [self.t("s2.accuracy_heading", reference=self.ref), self.accuracy_table()]
        parts += [self.t("s2.not_run_heading"), self.not_run_lines(), *detector_parts(self)]
        return "\n\n".join(parts)

    def detail_table(self) -> str:
        """Session creation, the rest of the latency distribution, CPU / RAM and, when measured, GPU figures."""
        gpu = any(
            (c.memory or {}).get(k) is not None
            for c in self.ran
            for k in ("gpu_process_peak_mb", "gpu_device_peak_mb", "gpu_util_mean_pct")
        )
        keys = ["cell", "create", "mean", "std", "min", "max", "cpu", "ram"]
        if gpu:
            keys += ["gpu", "gpu_util", "energy"]
        rows = []
        for c in self.ran:
            lat, mem = c.latency_ms or {}, c.memory or {}
            row = [
                self.cell(c),
                fmt(c.session_create_ms, 1),
                *(fmt(lat.get(k), MS) for k in ("mean", "std", "min", "max")),
                fmt(mem.get("cpu_mean_pct"), 1),
                fmt(mem.get("system_ram_peak_pct"), 1),
            ]
            if gpu:
                tele = mem.get("gpu_telemetry") or {}
                row += [
                    f"{fmt(mem.get('gpu_process_peak_mb'), 1)} / {fmt(mem.get('gpu_device_peak_mb'), 1)}",
                    f"{fmt(mem.get('gpu_util_mean_pct'), 1)} / {fmt(mem.get('gpu_util_max_pct'), 1)}",
                    fmt(tele.get("energy_per_image_j"), 3),
                ]
            rows.append(row)
        return _table([self.t(f"s2.col_{k}") for k in keys], rows, [False] + [True] * (len(keys) - 1))

    def not_run_lines(self) -> str:
        """One line per provider, status and reason, naming the cells it covers."""
        not_run = [c for c in self.r.cells if c.status != "ok"]
        if not not_run:
            return self.t("s2.not_run_none")
        groups: dict[tuple[str, str, str], list[CellResult]] = {}
        for c in not_run:
            groups.setdefault((c.provider, c.status, c.reason or ""), []).append(c)
        lines = [
            self.t(
                "s2.not_run_item" if len(cells) > 1 else "s2.not_run_item_one",
                provider=provider,
                status=self.status(status),
                n=fmt(len(cells)),
                cells=self.grid_text(cells),
                reason=self.reason(reason, provider),
            )
            for (provider, status, reason), cells in groups.items()
        ]
        return self.t("s2.not_run_note") + "\n\n" + "\n".join(f"- {line}" for line in lines)

    def with_interval(self, value: str, interval: Any, bound: Any) -> str:
        """``value [low, high]``, the bounds written by ``bound``; the value alone without an interval."""
        if not interval:
            return value
        return self.t("common.with_interval", value=value, low=bound(interval[0]), high=bound(interval[1]))

    def pct_ci(self, scores: Any, name: str) -> str:
        """A share (fraction) as a percentage with its 95 % interval in percent (one decimal)."""
        return self.with_interval(self.pct(scores.get(name)), scores.get(f"{name}_ci"), lambda b: fmt(b * 100.0, 1))

    def num_ci(self, scores: Any, name: str, digits: int = 3) -> str:
        """A figure such as ROC AUC with its 95 % interval, both to ``digits`` decimals."""
        return self.with_interval(fmt(scores.get(name), digits), scores.get(f"{name}_ci"), lambda b: fmt(b, digits))

    def accuracy_table(self) -> str:
        evaluated = [c for c in self.r.cells if c.accuracy]
        if not evaluated:
            return self.t("s2.accuracy_none", reason=self._accuracy_reason())
        d = self.t("common.dash")
        head = [
            self.t("s2.col_variant"),
            self.t("s2.col_provider"),
            self.t("s2.col_n"),
            self.t("s2.col_accuracy"),
            self.t("s2.col_balanced"),
            self.t("s2.col_auc"),
            self.t("s2.col_eer"),
            self.t("s2.col_flip", reference=self.ref),
            self.t("s2.col_max_dp", reference=self.ref),
        ]
        detail_head = [
            self.t("s2.col_pair"),
            self.t("s2.col_skipped"),
            self.t("s2.col_precision"),
            self.t("s2.col_recall"),
            self.t("s2.col_f1"),
            self.t("s2.col_ap"),
            self.t("s2.col_log_loss"),
            self.t("s2.col_ece"),
        ]
        rows, detail, notes = [], [], []
        for c in evaluated:
            a = c.accuracy or {}
            agree = a.get("agreement") or {}
            rows.append(
                [
                    c.variant,
                    c.provider,
                    fmt(a.get("n")),
                    self.pct_ci(a, "accuracy"),
                    self.pct_ci(a, "balanced_accuracy"),
                    self.num_ci(a, "roc_auc"),
                    self.pct_ci(a, "eer"),
                    self.pct(agree.get("flip_rate")) if c.variant != self.ref else d,
                    fmt(agree.get("max_abs_dp"), 4) if c.variant != self.ref else d,
                ]
            )
            detail.append(
                [
                    self.pair(c.variant, c.provider),
                    fmt(len(a.get("skipped") or [])),
                    self.pct_ci(a, "precision"),
                    self.pct_ci(a, "recall"),
                    fmt(a.get("f1"), 4),
                    self.num_ci(a, "average_precision"),
                    fmt(a.get("log_loss"), 4),
                    self.num_ci(a, "ece"),
                ]
            )
            for metric, reason in sorted((a.get("reasons") or {}).items()):
                notes.append(
                    self.t("s2.metric_reason", pair=self.pair(c.variant, c.provider), metric=metric, reason=reason)
                )
        n = sorted({fmt(c.accuracy.get("n")) for c in evaluated if c.accuracy})
        out = [
            self.t("s2.accuracy_note", n=" / ".join(n), reference=self.ref),
            _table(head, rows, [False, False] + [True] * 7),
        ]
        if any(a.get("accuracy_ci") for a in (c.accuracy or {} for c in evaluated)):
            groups = sorted({a.get("n_groups") or 0 for a in (c.accuracy or {} for c in evaluated)} - {0})
            unit = (
                self.t("s2.ci_unit_group", n=" / ".join(fmt(g) for g in groups))
                if groups
                else self.t("s2.ci_unit_image")
            )
            out.append(self.t("s2.accuracy_ci_note", unit=unit))
        accuracies = {(c.accuracy or {}).get("accuracy") for c in evaluated}
        if len(evaluated) > 1 and len(accuracies) == 1:
            out.append(self.t("s2.accuracy_tie", accuracy=self.pct(next(iter(accuracies)))))
        out += [self.t("s2.accuracy_detail_heading"), _table(detail_head, detail, [False] + [True] * 7)]
        if notes:
            out.append("\n".join(f"- {n}" for n in notes))
        return "\n\n".join(out)

    def comparison(self) -> str:
        rows = compare_to_reference(self.r, self.ref)
        parts = [self.t("s3.heading", reference=self.ref)]
        measured = [r for r in rows if r.baseline is not None]
        if not measured:
            parts.append(self.t("s3.none", reference=self.ref))
        else:
            parts.append(self.t("s3.intro", reference=self.ref))
            head = [
                self.t("s3.col_cell"),
                self.t("s3.col_speedup"),
                self.t("s3.col_rss"),
                self.t("s3.col_gpu"),
                self.t("s3.col_size"),
                self.t("s3.col_accuracy"),
                self.t("s3.col_auc_delta"),
                self.t("s3.col_flip"),
            ]
            parts.append(
                _table(
                    head,
                    [
                        [
                            self.cell(r.cell),
                            self.ratio(r.speedup_p50),
                            self.ratio(r.rss_ratio),
                            self.ratio(r.gpu_ratio),
                            self.ratio(r.size_ratio),
                            *self._paired_accuracy(r.cell, r.accuracy_delta_pt),
                            self.pct(r.flip_rate),
                        ]
                        for r in measured
                    ],
                    [False] + [True] * 7,
                )
            )
            if any(self._paired(r.cell) for r in measured):
                parts.append(self.t("s3.accuracy_ci_note", reference=self.ref))
        missing = [r for r in rows if r.baseline is None and not r.cell.variant.startswith("pytorch")]
        if missing:
            parts.append(
                "\n".join(f"- {self.t('s3.no_baseline', cell=self.cell(r.cell), reference=self.ref)}" for r in missing)
            )
        parts.append(self.pytorch_comparison())
        return "\n\n".join(p for p in parts if p)

    def _paired(self, cell: CellResult) -> dict[str, Any]:
        """The cell's paired accuracy figures against the report's reference (its accuracy's agreement), if any."""
        agree = (self.r.accuracy_of(cell.variant, cell.provider) or {}).get("agreement") or {}
        return dict(agree) if agree.get("reference") == self.ref and agree.get("accuracy_drop_pt") is not None else {}

    def _paired_accuracy(self, cell: CellResult, delta_pt: float | None) -> list[str]:
        """Accuracy Δ (points) and ROC AUC Δ against the reference, each with its paired 95 % interval when the run
        has one (Δ = −drop: the interval turns around)."""
        paired = self._paired(cell)
        if not paired:
            return [self.signed(delta_pt), self.t("common.dash")]
        drop_ci = paired.get("accuracy_drop_pt_ci")
        delta_ci = None if drop_ci is None else [-drop_ci[1], -drop_ci[0]]
        auc_ci = paired.get("roc_auc_delta_ci")
        return [
            self.with_interval(self.signed(-paired["accuracy_drop_pt"]), delta_ci, self._bound),
            self.with_interval(self.signed(paired.get("roc_auc_delta"), 3), auc_ci, lambda b: self._bound(b, 3)),
        ]

    def _bound(self, value: float, digits: int = PCT) -> str:
        """An interval's bound of a difference: signed, a plain 0 for zero (“[0.000, +0.021]”, not “[±0.000, …]”)."""
        return self.signed(value, digits) if value else fmt(0.0, digits)

    def pytorch_comparison(self) -> str:
        """Speed-up of each ONNX cell over the PyTorch row of the same provider and batch size (95 % interval)."""
        torch_cells = [c for c in self.ran if c.variant.startswith("pytorch")]
        if not torch_cells:
            planned = [c for c in self.r.cells if c.variant.startswith("pytorch")]
            if planned:
                c = planned[0]
                return self.t("s3.pytorch_not_run", reason=self.reason(c.reason, c.provider))
            return self.t("s3.pytorch_none")
        rows = []
        for c in self.ran:
            if c.variant.startswith("pytorch"):
                continue
            torch_row = next((t for t in torch_cells if (t.provider, t.batch_size) == (c.provider, c.batch_size)), None)
            if torch_row is None:
                continue
            fig = relative_figure("min_speedup_p50", torch_row.variant, c, self.r, None)
            low, high = fig.interval or (None, None)
            rows.append(
                [
                    self.cell(c),
                    self.ratio(fig.value),
                    self.t("s3.interval", low=fmt(low, 2), high=fmt(high, 2))
                    if low is not None
                    else self.t("common.dash"),
                    fmt((torch_row.latency_ms or {}).get("p50"), MS),
                    fmt((c.latency_ms or {}).get("p50"), MS),
                ]
            )
        if not rows:
            return ""
        head = [self.t(f"s3.col_{k}") for k in ("cell", "vs_torch", "interval", "torch_p50", "onnx_p50")]
        return "\n\n".join(
            [self.t("s3.pytorch_heading"), self.t("s3.pytorch_intro"), _table(head, rows, [False] + [True] * 4)]
        )

    def variants(self) -> str:
        d = self.t("common.dash")
        order = list(dict.fromkeys([*(self.r.config.get("variants") or []), *(c.variant for c in self.r.cells)]))
        rows = []
        for v in order:
            info = next((c.model for c in self.r.cells if c.variant == v and c.model is not None), None)
            if info is None:
                rows.append([v, d, d, d, d])
                continue
            rows.append(
                [v, f"`{info.file}`", fmt(info.size_mb, 2), self._recipe(info.recipe), f"`{info.sha256[:12]}…`"]
            )
        head = [self.t(f"s4.col_{k}") for k in ("variant", "file", "size", "recipe", "sha")]
        return "\n\n".join([self.t("s4.heading"), _table(head, rows, [False, False, True, False, False])])

    def _recipe(self, recipe: dict[str, Any] | None) -> str:
        """One line: the build sidecar's summary, tool and base variant; else its scalar fields (full in results)."""
        if not recipe:
            return self.t("s4.recipe_none")
        if recipe.get("summary"):
            base = (recipe.get("base") or {}).get("variant") if isinstance(recipe.get("base"), dict) else None
            tool = str(recipe.get("tool") or "").split(".")[0]
            return self.t(
                "s4.recipe_value",
                summary=recipe["summary"],
                tool=tool or self.t("common.dash"),
                base=base or self.t("common.dash"),
            )
        items = [f"{k}={v}" for k, v in recipe.items() if isinstance(v, (str, int, float, bool))]
        return ", ".join(items) or self.t("s4.recipe_none")

    def checks(self) -> str:
        p = self.policy
        parts = [self.t("s5.heading")]
        source = self.t("s5.policy_file", path=p.source) if p.source else self.t("s5.policy_default")
        parts.append(self.t("s5.policy", source=source, reference=p.reference))
        keys = p.all_check_keys() + [relative_key(c, ref) for ref, limits in p.relative.items() for c in limits]
        if not keys:
            parts.append(self.t("s5.none"))
            return "\n\n".join(parts)
        lines = []
        if p.checks or p.relative:
            limits = [self.check_name(k, v) for k, v in p.limits_for("").items()]
            limits += [
                self.check_name(relative_key(c, ref), v) for ref, lim in p.relative.items() for c, v in lim.items()
            ]
            lines.append(self.t("s5.limits", limits=", ".join(limits)))
        for provider, table in sorted(p.providers.items()):
            lines.append(
                self.t(
                    "s5.override", provider=provider, limits=", ".join(self.check_name(k, v) for k, v in table.items())
                )
            )
        if p.robustness:
            lines.append(self.t("s5.robustness_note"))
        if p.candidates:
            filters = [self.t(f"s5.filter_{k}", values=", ".join(str(x) for x in v)) for k, v in p.candidates.items()]
            lines.append(self.t("s5.candidates", filters="; ".join(filters)))
        else:
            lines.append(self.t("s5.candidates_all"))
        lines.append(self.t("s5.legend"))
        if any(k in ACCURACY_CHECKS for k in keys):
            lines.append(self.t("s5.legend_accuracy"))
        parts.append("\n".join(f"- {line}" for line in lines))

        head = [
            self.t("s5.col_cell"),
            self.t("s5.col_candidate"),
            *(self._check_header(k) for k in keys),
            self.t("s5.col_result"),
        ]
        rows = []
        for row in self.verdict.rows:
            if row.cell.status != "ok":
                continue
            by_key = {o.key: o for o in row.outcomes}
            rows.append(
                [
                    self.cell(row.cell),
                    self.t("common.yes" if row.candidate else "common.no"),
                    *(self._outcome(by_key.get(k)) for k in keys),
                    self._row_result(row),
                ]
            )
        parts.append(_table(head, rows) if rows else self.t("s2.none_ran"))
        not_run = [r for r in self.verdict.candidates if r.cell.status != "ok"]
        if not_run:
            parts.append(self.t("s5.not_run_candidates", n=fmt(len(not_run))))
        notes = self._check_notes()
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
        ran = [r for r in self.verdict.candidates if r.cell.status == "ok"]
        counts = {"candidates": fmt(len(ran)), "not_run": fmt(len(self.verdict.candidates) - len(ran))}
        parts.append(
            self.t("s5.verdict_pass", passing=fmt(len(self.verdict.passing)), **counts)
            if self.verdict.passed
            else self.t("s5.verdict_fail", **counts)
        )
        return "\n\n".join(parts)

    def _check_header(self, key: str) -> str:
        if split_robustness_key(key) is not None:
            return self.robustness_check_name(key)
        relative = split_relative_key(key)
        if relative is not None:
            return self.check_name(key, self.policy.relative[relative[1]][relative[0]])
        return (
            self.check_name(key, self.policy.checks[key])
            if key in self.policy.checks
            else self.t(f"s5.check_{key}", limit="…")
        )

    def _outcome(self, o: Any) -> str:
        if o is None:
            return self.t("common.dash")
        if o.status == NOT_MEASURED:
            return self.t("common.not_measured")
        if o.status == NOT_APPLICABLE:
            return self.t("common.not_applicable")
        relative = split_relative_key(o.key)
        mark = self.t("common.pass_mark" if o.status == PASS else "common.fail_mark")
        if o.status == CHECK_INCONCLUSIVE:
            mark = self.t("s5.inconclusive_mark")
        if relative is not None:
            value = self.ratio(o.value)
            if o.interval is not None:
                value += " " + self.t("s3.interval", low=fmt(o.interval[0], 2), high=fmt(o.interval[1], 2))
            return f"{mark} {value}"
        digits = {
            "max_p99_ms": MS,
            "max_p99_ms_per_image": MS,
            "min_throughput_ips": 1,
            "max_gpu_memory_mb": 1,
            "max_rss_mb": 1,
            "max_model_mb": 2,
        }.get(o.key, PCT)
        value = fmt(o.value, digits)
        if o.key in ACCURACY_CHECKS:
            signed = o.key == "max_accuracy_drop_pt"
            value = self.with_interval(
                self.signed(o.value) if signed else value, o.interval, self._bound if signed else lambda b: fmt(b, PCT)
            )
        over = ""
        if o.limit != self.policy.checks.get(o.key):
            over = f" (≤ {fmt(o.limit, 2)})" if o.key.startswith("max") else f" (≥ {fmt(o.limit, 2)})"
        needed = ""
        if o.status == CHECK_INCONCLUSIVE and o.needed:
            needed = " " + self.t("s5.needed", needed=fmt(o.needed), unit=self.t(f"s5.unit_{o.unit or 'image'}"))
        return f"{mark} {value}{over}{needed}"

    def _row_result(self, row: CellChecks) -> str:
        if row.cell.status != "ok":
            return self.t("s5.result_not_run")
        if any(o.status == FAIL for o in row.outcomes):
            return self.t("common.fail")
        if any(o.status == NOT_MEASURED for o in row.outcomes):
            return self.t("s5.result_not_measured")
        if any(o.status == CHECK_INCONCLUSIVE for o in row.outcomes):
            return self.t("s5.result_inconclusive")
        return self.t("common.pass")

    def _check_notes(self) -> list[str]:
        """Why checks were not measured / not applicable, and what a measured value means, once per reason."""
        groups: dict[tuple[str, str, str, str | None], list[CellResult]] = {}
        for row in self.verdict.rows:
            if row.cell.status != "ok":
                continue  # why it did not run is in section 2.4
            for o in row.outcomes:
                if split_robustness_key(o.key) is not None:
                    continue  # explained in the robustness section
                if o.why and o.why not in ("gpu_process", "memory_rss", "memory_gpu"):
                    groups.setdefault((o.key, o.status, o.why, o.detail), []).append(row.cell)
        notes = []
        for (key, status, why, detail), cells in groups.items():
            check = self._check_header(key)
            relative = split_relative_key(key)
            reason = self.why(why, detail, reference=relative[1] if relative else self.ref)
            if why == "reference_not_run":
                reason = self.t(
                    "why.reference_not_run", reference=relative[1] if relative else self.ref, detail=self.reason(detail)
                )
            if status in (NOT_MEASURED, NOT_APPLICABLE):
                label = self.t("common.not_measured" if status == NOT_MEASURED else "common.not_applicable")
                notes.append(
                    self.t("s5.reason_item", check=check, status=label, cells=self.cells_text(cells), reason=reason)
                )
            else:
                notes.append(self.t("s5.note_item", check=check, cells=self.cells_text(cells), note=reason))
        return notes

    def tie_text(self) -> str:
        """The tie behind the choice: each tied cell's figure and its ratio to the best with their intervals (all
        inside the margin), and the rule that chose among them."""
        rec, items = self.rec, []
        ratios = {c.row.cell.key: c for c in rec.contenders}
        digits = 1 if rec.rank_by == "throughput_ips" else MS
        for row in rec.tied:
            point, low, high = rec.intervals[row.cell.key]
            versus = ratios.get(row.cell.key)
            items.append(
                self.t(
                    "s6.tie_item",
                    cell=self.cell(row.cell),
                    value=fmt(point, digits),
                    low=fmt(low, digits),
                    high=fmt(high, digits),
                    versus="" if versus is None else self.t("s6.tie_versus", **self._ratio_figures(versus)),
                    size=fmt(row.cell.model.size_mb if row.cell.model else None, 2),
                )
            )
        return self.t(
            "s6.tied",
            margin=self._margin(),
            rank=self.t(f"s6.rank_{rec.rank_by}"),
            confidence=self._confidence(),
            lower=fmt(1.0 / (1.0 + rec.margin), 3),
            upper=fmt(1.0 + rec.margin, 3),
            cells="; ".join(items),
            rule=self.t("s6.tie_rule"),
        )

    # --- the decision: the first thing under the title ----------------------------------------------
    def decision(self) -> str:
        """Decided or undecided, and how sure: the margin, what is tied with the best and why (ratio intervals),
        what is slower beyond the margin, what cannot be told apart, what would settle it, --decide's looks."""
        rec = self.rec
        if rec.choice is None or rec.best is None:
            return self.t("decision.none")
        rank = self.t(f"s6.rank_{rec.rank_by}")
        head = self.t(
            f"decision.{rec.status}",
            choice=self.cell(rec.choice.cell),
            rank=rank,
            value=self._rank_text(rec.choice.cell),
            passing=fmt(len(rec.passing)),
            margin=self._margin(),
            confidence=self._confidence(),
        )
        lines = [] if rec.contenders else [self.t("decision.alone")]
        if rec.noisy:
            cells = "; ".join(f"{self.cell(row.cell)} ({why})" for row, why in rec.noisy)
            lines.append(self.t("decision.noisy", cells=cells))
        tied = [c for c in rec.contenders if c.verdict == TIED]
        if tied:
            lines.append(
                self.t(
                    "decision.tied",
                    best=self.cell(rec.best.cell),
                    lower=fmt(1.0 / (1.0 + rec.margin), 3),
                    upper=fmt(1.0 + rec.margin, 3),
                    cells="; ".join(self._versus(c) for c in tied),
                    rule=self.t("s6.tie_rule"),
                )
            )
        slower = sorted((c for c in rec.contenders if c.verdict == SLOWER), key=lambda c: c.ratio or 0.0)
        if slower:
            lines.append(
                self.t(
                    "decision.slower",
                    margin=self._margin(),
                    upper=fmt(1.0 + rec.margin, 3),
                    count=fmt(len(slower)),
                    closest=self._versus(slower[0]),
                )
            )
        if rec.undecided:
            cells = "; ".join(map(self._versus, rec.undecided))
            lines.append(self.t("decision.undecided_list", margin=self._margin(), cells=cells))
            lines.append(self._settle_text())
        if rec.held_back:
            cells = "; ".join(
                f"{self.cell(row.cell)} ({self._rank_text(row.cell)}): "
                + ", ".join(f"{self._check_header(o.key)} {self._outcome(o)}" for o in checks)
                for row, checks in rec.held_back
            )
            lines.append(self.t("decision.held_back", rank=rank, cells=cells))
        harmless = [c for c in rec.contenders if c.verdict == CANNOT_TELL and not c.could_change]
        if harmless:
            cells = "; ".join(map(self._versus, harmless))
            lines.append(self.t("decision.undecided_harmless", cells=cells))
        if rec.on_front:
            lines.append(self.t("decision.front", rank=rank))
        else:
            cells = ", ".join(self.cell(r.cell) for r in rec.dominated_by)
            lines.append(self.t("decision.off_front", rank=rank, cells=cells))
        if rec.decide:
            lines.append(self._looks_text())
        return head + "\n\n" + "\n".join(f"- {line}" for line in lines)

    def _margin(self) -> str:
        return f"{self.rec.margin * 100:g}"

    def _confidence(self) -> str:
        return f"{self.rec.confidence * 100:g}"

    def _ratio_figures(self, c: Contender) -> dict[str, str]:
        return {"ratio": fmt(c.ratio, 3), "low": fmt(c.low, 3), "high": fmt(c.high, 3)}

    def _versus(self, c: Contender) -> str:
        """A contender's ratio to the best with its interval, or why it has no interval."""
        cell = self.cell(c.row.cell)
        if c.low is not None:
            return self.t("decision.ratio_item", cell=cell, **self._ratio_figures(c))
        if c.calls_needed is not None:
            return self.t("decision.no_interval_calls", cell=cell, calls=fmt(c.calls_needed))
        if c.replicates_needed is not None:
            return self.t("decision.no_interval_replicates", cell=cell, replicates=fmt(c.replicates_needed))
        return self.t("decision.no_interval_samples", cell=cell)

    def _settle_text(self) -> str:
        """What would settle an undecided recommendation: more calls, more replicates, or a quieter machine."""
        undecided = self.rec.undecided
        calls = [c.calls_needed for c in undecided if c.calls_needed is not None]
        if calls:
            return self.t("decision.settle_calls", calls=fmt(max(calls)), rank=self.t(f"s6.rank_{self.rec.rank_by}"))
        if any(c.too_small and c.replicates_needed is None for c in undecided):
            return self.t("decision.settle_unknown")
        if any(c.too_noisy for c in undecided) or self.rec.replicates_needed is None:
            return self.t("decision.settle_noisy", factor=fmt(PRACTICAL_FACTOR))
        have = min(c.replicates for c in undecided)
        return self.t("decision.settle", needed=fmt(self.rec.replicates_needed), have=fmt(have))

    def _looks_text(self) -> str:
        """What `bench matrix --decide` measured further, and why it stopped."""
        looks = self.rec.decide or {}
        stopped = self.t(f"decision.stopped_{looks.get('stopped') or 'not_needed'}", max_rounds=fmt(DECIDE_MAX_ROUNDS))
        if not looks.get("rounds"):
            return self.t("decision.looks_none", budget=fmt(looks.get("budget_s"), 0), stopped=stopped)
        added = [
            self.t(
                "decision.added_item",
                cell=self.t(
                    "common.cell", variant=a.get("variant"), provider=a.get("provider"), batch=a.get("batch_size")
                ),
                replicates=fmt(a.get("replicates")),
            )
            for a in looks.get("added") or []
        ]
        return self.t(
            "decision.looks",
            rounds=fmt(looks.get("rounds")),
            seconds=fmt(looks.get("seconds"), 0),
            budget=fmt(looks.get("budget_s"), 0),
            cells=", ".join(added) or self.t("common.dash"),
            confidence=self._confidence(),
            max_rounds=fmt(DECIDE_MAX_ROUNDS),
            stopped=stopped,
        )

    def recommendation(self) -> str:
        rec, parts = self.rec, [self.t("s6.heading")]
        if rec.choice is not None:
            c = rec.choice.cell
            lat = c.latency_ms or {}
            acc = self.r.accuracy_of(c.variant, c.provider) or {}
            drop = next((o.value for o in rec.choice.outcomes if o.key == "max_accuracy_drop_pt"), None)
            delta = None if drop is None else -drop
            if delta is None:
                ref, _ = self.r.reference_accuracy(self.ref, c.provider)
                accuracy = acc.get("accuracy")
                if ref is not None and accuracy is not None:
                    delta = (accuracy - ref) * 100.0
            parts.append(
                " ".join(
                    [
                        self.t(
                            "s6.choice" if rec.status == DECIDED else "s6.choice_undecided",
                            cell=self.cell(c),
                            file=c.model.file if c.model else "?",
                        ),
                        self.t(
                            "s6.reason_tied" if rec.tied else "s6.reason",
                            checks=fmt(len(rec.choice.outcomes)),
                            rank=self.t(f"s6.rank_{rec.rank_by}"),
                            value=self._rank_text(c),
                            passing=fmt(len(rec.passing)),
                        ),
                    ]
                )
            )
            if rec.tied:
                parts.append(self.tie_text())
            if rec.contenders:
                items = [
                    self.t(
                        "s6.contender_item",
                        versus=self._versus(v),
                        verdict=self.t(f"decision.verdict_{v.verdict}"),
                    )
                    for v in rec.contenders
                ]
                parts.append(
                    self.t(
                        "s6.contenders",
                        best=self.cell(rec.best.cell) if rec.best else self.t("common.dash"),
                        rank=self.t(f"s6.rank_{rec.rank_by}"),
                        confidence=self._confidence(),
                        items="; ".join(items),
                    )
                )
            parts.append(
                self.t(
                    "s6.figures",
                    p50=fmt(lat.get("p50"), MS),
                    p95=fmt(lat.get("p95"), MS),
                    p99=fmt(lat.get("p99"), MS),
                    ips=fmt(c.throughput_ips, 1),
                    accuracy=self.pct(acc.get("accuracy")),
                    delta=self.signed(delta),
                    reference=self.ref,
                    size=fmt(c.model.size_mb if c.model else None, 2),
                )
            )
            if rec.runner_up is not None:
                parts.append(
                    self.t(
                        "s6.runner_up",
                        cell=self.cell(rec.runner_up.cell),
                        rank=self.t(f"s6.rank_{rec.rank_by}"),
                        value=self._rank_text(rec.runner_up.cell),
                    )
                )
        else:
            parts.append(self.t("s6.none", candidates=fmt(rec.candidates)))
            if rec.blockers:
                items = []
                for key, count in rec.blockers:
                    if key == "not_run":
                        items.append(self.t("s6.blocker_not_run", count=fmt(count)))
                    else:
                        items.append(
                            self.t(
                                "s6.blocker_item",
                                check=self._check_header(key),
                                count=fmt(count),
                            )
                        )
                parts.append(self.t("s6.blockers", blockers=", ".join(items)))
        if rec.pareto:
            items = [
                self.t(
                    "s6.pareto_item",
                    cell=self.cell(c),
                    accuracy=self.pct((self.r.accuracy_of(c.variant, c.provider) or {}).get("accuracy")),
                    p95=fmt((c.latency_ms or {}).get("p95"), MS),
                )
                for c in rec.pareto
            ]
            pareto = self.t("s6.pareto", cells="; ".join(items))
            choice = rec.choice.cell if rec.choice is not None else None
            on_set = choice is None or choice.key in {c.key for c in rec.pareto}
            if not on_set and choice is not None and self.r.accuracy_of(choice.variant, choice.provider):
                rank = self.t(f"s6.rank_{rec.rank_by}")
                why = self.t("s6.pareto_off", cell=self.cell(choice), rank=rank, margin=self._margin())
                pareto = f"{pareto} {why}"
            parts.append(pareto)
        else:
            parts.append(self.t("s6.pareto_none"))
        return "\n\n".join(parts)

    def _rank_text(self, cell: CellResult) -> str:
        value = rank_value(cell, self.rec.rank_by)
        if self.rec.rank_by == "throughput_ips":
            return self.t("s6.unit_ips", value=fmt(value, 1))
        return self.t("s6.unit_ms", value=fmt(value, MS))

    def plot_section(self) -> str:
        parts = [self.t("s7.heading")]
        for name in PLOT_NAMES:
            outcome = self.plots.get(name)
            if outcome is None:
                continue
            title = self.t(f"s7.{name}")
            if outcome.file:
                parts.append(f"![{title}]({outcome.file})")
            else:
                reason = self.t(f"s7.{outcome.reason}") if outcome.reason else "?"
                parts.append(self.t("s7.not_drawn", title=title, reason=reason))
        return "\n\n".join(parts)

    def service(self) -> str:
        entries = self.r.service or []
        if not entries:
            return "\n\n".join([self.t("s8.heading"), self.t("s8.none")])
        d = self.t("common.dash")
        keys = (
            "pair",
            "status",
            "rate",
            "requests",
            "errors",
            "p50",
            "p99",
            "inprocess",
            "batch_request",
            "batch",
            "max_rate",
            "leak",
        )
        rows, notes = [], []
        for e in entries:
            load = e.get("load") or {}
            lat = load.get("latency_ms") or {}
            errors = load.get("errors")
            leak = (load.get("server") or {}).get("leak_suspected")
            batch = e.get("batch_endpoint") or {}
            status = e.get("status") or "ok"
            label = self.status(status) if status in ("ok", "unavailable", "failed") else status
            if status != "ok" or e.get("reason"):
                notes.append(
                    self.t(
                        "s8.reason_item",
                        pair=self.pair(e.get("variant", d), e.get("provider", d)),
                        status=label,
                        reason=self.reason(e.get("reason"), e.get("provider", "")),
                    )
                )
            rate_text = self.max_rate_cell(e)
            rows.append(
                [
                    self.pair(e.get("variant", d), e.get("provider", d)),
                    label,
                    f"{fmt(load.get('achieved_rate'), 1)} / {fmt(load.get('target_rate'), 1)}" if load else d,
                    fmt(load.get("requests")),
                    fmt(sum(int(v) for v in errors.values())) if errors is not None else d,
                    fmt(lat.get("p50"), MS),
                    fmt(lat.get("p99"), MS),
                    fmt(e.get("inprocess_p50_ms"), MS),
                    fmt((batch.get("latency_ms") or {}).get("p50"), MS),
                    fmt(batch.get("ms_per_image_p50"), MS),
                    rate_text,
                    d if leak is None else self.t("s8.leak_yes" if leak else "s8.leak_no"),
                ]
            )
        first = next((e for e in entries if e.get("status") == "ok" and e.get("load")), None)
        files = (first.get("batch_endpoint") if first is not None else None) or {}
        parts = [
            self.t("s8.heading"),
            self.t("s8.intro", files=fmt(files.get("files_per_request"))),
            _table([self.t(f"s8.col_{k}") for k in keys], rows, [False] * 2 + [True] * 9 + [False]),
        ]
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
        parts += [
            self.max_rate_text(entries),
            self.startup_table(entries),
            self.leak_text(entries),
            self.health_text(entries),
            self.invalid_inputs_text(entries),
        ]
        plot = self.plots.get("service_rate")
        if plot is not None and plot.file:
            parts.append(f"![{self.t('s7.service_rate')}]({plot.file})")
        return "\n\n".join(p for p in parts if p)

    def max_rate_cell(self, e: ServiceEntry) -> str:
        """The max-rate column: the bracket [highest pass, lowest fail] (an older file: its one number), ⚠ if noisy."""
        max_rate = e.get("max_rate") or {}
        slo = fmt(max_rate.get("slo_p99_ms"), 0)
        low, high = [*(max_rate.get("bracket") or []), None, None][:2]
        if not max_rate:
            return self.t("common.dash")
        if "highest_pass" not in max_rate:  # written before brackets carried intervals: the number it recorded
            if max_rate.get("rate_rps") is None:
                return self.t("s8.max_rate_none", slo=slo)
            return self.t("s8.max_rate_value", rate=fmt(max_rate["rate_rps"], 1), slo=slo)
        if low is None:
            text = self.t("s8.max_rate_none", slo=slo)
        elif high is None:
            text = self.t("s8.max_rate_at_least", rate=fmt(low, 1), slo=slo)
        else:
            text = self.t("s8.max_rate_bracket", low=fmt(low, 1), high=fmt(high, 1), slo=slo)
        return f"{text} ⚠" if noisy_figure(e) or noisy_figure(max_rate) else text

    def max_rate_text(self, entries: list[ServiceEntry]) -> str:
        """Under the table: how each step was judged, each bracket's edges with the p99 interval there, what
        stopped the search, and why a figure was noisy."""
        found = [e for e in entries if "highest_pass" in (e.get("max_rate") or {})]
        if not found:
            return ""
        rule = (found[0].get("max_rate") or {}).get("rule") or {}
        lines = [
            self.t(
                "s8.max_rate_intro",
                answers=fmt(rule.get("answers_needed")),
                warmup=fmt(100 * float(rule.get("warmup_fraction") or 0), 0),
                step_s=fmt(rule.get("min_step_s"), 1),
            )
        ]
        for e in found:
            mr = e.get("max_rate") or {}
            edges = []
            for edge, name in (
                (mr.get("highest_pass"), "s8.max_rate_edge_pass"),
                (mr.get("lowest_fail"), "s8.max_rate_edge_fail"),
            ):
                if edge is None:
                    edges.append(self.t(f"{name}_none"))
                    continue
                ci = edge.get("p99_ci_ms")
                edges.append(
                    self.t(
                        name,
                        rate=fmt(edge.get("rate"), 1),
                        p99=fmt(edge.get("p99_ms"), 1),
                        low=fmt(ci[0] if ci else None, 1),
                        high=fmt(ci[1] if ci else None, 1),
                    )
                )
            stopped = self.t(
                f"s8.stopped_{mr.get('limited_by')}",
                tolerance=fmt(100 * float(rule.get("tolerance") or 0), 0),
                steps=fmt(mr.get("probes")),
            )
            why = noisy_figure(e) or noisy_figure(mr)
            lines.append(
                "- "
                + self.t(
                    "s8.max_rate_item",
                    pair=self.pair(e.get("variant", "?"), e.get("provider", "?")),
                    edges="; ".join(edges),
                    stopped=stopped,
                )
                + (" " + self.t("s8.max_rate_noisy", why=why) if why else "")
            )
        return "\n".join(lines)

    def startup_table(self, entries: list[ServiceEntry]) -> str:
        """Start-up per served variant: spawn → ready, the model's load and warm-up, RSS at start and end."""
        rows = []
        for e in entries:
            start = e.get("startup") or {}
            server = (e.get("load") or {}).get("server") or {}
            if not start and not server:
                continue
            rows.append(
                [
                    self.pair(e.get("variant", "?"), e.get("provider", "?")),
                    fmt(start.get("ready_s"), 2),
                    fmt(start.get("load_ms"), 1),
                    fmt(start.get("warmup_ms"), 1),
                    fmt(server.get("rss_start_mb"), 1),
                    fmt(server.get("rss_end_mb"), 1),
                ]
            )
        if not rows:
            return ""
        head = [self.t(f"s8.col_{k}") for k in ("pair", "ready", "load", "warmup", "rss_start", "rss_end")]
        return "\n\n".join([self.t("s8.startup_heading"), _table(head, rows, [False] + [True] * 5)])

    def leak_text(self, entries: list[ServiceEntry]) -> str:
        """What the leak verdict rests on: its duration and rate, and that a short run shows only fast leaks."""
        load = next((e["load"] for e in entries if (e.get("load") or {}).get("server")), None)
        if load is None:
            return ""
        return self.t(
            "s8.leak_caveat",
            seconds=fmt(load.get("duration_s"), 1),
            rate=fmt(load.get("target_rate"), 1),
            requests=fmt(load.get("requests")),
            rule=self.t("s8.leak_rule_default", floor=fmt(LEAK_FLOOR_MB, 0), fraction=fmt(LEAK_FRACTION * 100, 0)),
        )

    def health_text(self, entries: list[ServiceEntry]) -> str:
        """The first served variant's /health answer, in the seed's shape (bench's extras are in results.json)."""
        first = next((e for e in entries if (e.get("health") or {}).get("body")), None)
        if first is None:
            return ""
        health = first.get("health") or {}
        body = health.get("body") or {}
        seed_shape = {k: body.get(k) for k in ("status", "service", "model_loaded", "gpu_available", "memory_usage")}
        model = body.get("model") or {}
        seed_shape["variant"] = body.get("variant")
        seed_shape["providers_effective"] = body.get("providers_effective")
        seed_shape["model_file"] = model.get("file")
        seed_shape["rss_mb"] = (body.get("process") or {}).get("rss_mb")
        return "\n\n".join(
            [
                self.t(
                    "s8.health_heading",
                    pair=self.pair(first.get("variant", "?"), first.get("provider", "?")),
                    code=fmt(health.get("http_status")),
                ),
                "```json\n" + json.dumps(seed_shape, ensure_ascii=False) + "\n```",
            ]
        )

    def invalid_inputs_text(self, entries: list[ServiceEntry]) -> str:
        """Bad uploads: the status each served variant answered against the expected one."""
        served = [answers for e in entries if (answers := e.get("invalid_inputs"))]
        if not served:
            return ""
        cases = list(dict.fromkeys(c["case"] for answers in served for c in answers))
        rows = []
        for case in cases:
            found = [next((c for c in answers if c["case"] == case), None) for answers in served]
            got = sorted({str(c.get("status")) for c in found if c is not None})
            expected = next(c["expected"] for c in found if c is not None)
            endpoint = next(c.get("endpoint", "") for c in found if c is not None)
            ok = all(c is not None and c.get("status") == c.get("expected") for c in found)
            rows.append(
                [
                    self.t(f"s8.case_{case}") if f"s8.case_{case}" in self.c.strings else case,
                    f"`{endpoint}`",
                    fmt(expected),
                    " / ".join(got),
                    self.t("common.pass_mark" if ok else "common.fail_mark"),
                ]
            )
        head = [self.t(f"s8.col_{k}") for k in ("case", "endpoint", "expected", "got", "ok")]
        return "\n\n".join(
            [self.t("s8.invalid_heading", n=fmt(len(served))), _table(head, rows, [False, False, True, True, False])]
        )

    # --- robustness (bench eval/matrix --perturb) ----------------------------------------------------
    def robustness_check_name(self, key: str) -> str:
        check, perturbation = split_robustness_key(key) or ("", "")
        limit = self.policy.robustness.get(perturbation, {}).get(check, 0.0)
        digits = 0 if float(limit).is_integer() else 2
        return self.t(f"s9.check_{check}", limit=fmt(float(limit), digits), perturbation=perturbation)

    def _robust_pairs(self) -> list[CellResult]:
        """The first evaluated cell of each (variant, provider) with perturbed entries, in run order."""
        seen, cells = set(), []
        for c in self.r.cells:
            if (
                c.status == "ok"
                and c.accuracy
                and c.accuracy.get("perturbations")
                and (c.variant, c.provider) not in seen
            ):
                seen.add((c.variant, c.provider))
                cells.append(c)
        return cells

    def robustness(self) -> str:
        """Section 9: each variant under each perturbation — ΔAUC against its own clean figures, decision flips
        against the reference variant under the same perturbation, and the policy's robustness checks."""
        names = [n for n in self.r.config.get("perturbations") or [] if n != "clean"]
        cells = self._robust_pairs()
        if not names or not cells:
            return ""
        d = self.t("common.dash")
        parts = [self.t("s9.heading"), self.t("s9.intro", reference=self.ref, perturbations=", ".join(names))]
        head = [self.t("s9.col_pair"), self.t("s9.col_clean_auc"), *names]
        auc_rows, flip_rows = [], []
        for c in cells:
            acc = c.accuracy or {}
            perturbed = acc.get("perturbations") or []
            delta_auc = {e["perturbation"]: (e.get("vs_clean") or {}).get("delta_roc_auc") for e in perturbed}
            flip_rate = {e["perturbation"]: (e.get("agreement") or {}).get("flip_rate") for e in perturbed}
            auc_rows.append(
                [
                    self.pair(c.variant, c.provider),
                    self.num_ci(acc, "roc_auc"),
                    *(self.signed(_times100(delta_auc.get(n))) for n in names),
                ]
            )
            flip_rows.append(
                [
                    self.pair(c.variant, c.provider),
                    self.pct((acc.get("agreement") or {}).get("flip_rate")) if c.variant != self.ref else d,
                    *(self.pct(flip_rate.get(n)) if c.variant != self.ref else d for n in names),
                ]
            )
        right = [False] + [True] * (len(names) + 1)
        parts += [self.t("s9.auc_heading"), _table(head, auc_rows, right)]
        flip_head = [self.t("s9.col_pair"), self.t("s9.col_clean_flip"), *names]
        parts += [self.t("s9.flip_heading", reference=self.ref), _table(flip_head, flip_rows, right)]
        plot = self.plots.get("robustness")
        if plot is not None and plot.file:
            parts.append(f"![{self.t('s9.plot')}]({plot.file})")
        parts.append(self.robustness_checks())
        return "\n\n".join(p for p in parts if p)

    def robustness_checks(self) -> str:
        """The policy's robustness checks, per (variant, provider): marked as robustness checks, apart from the
        latency/memory/accuracy checks of section 5 (they count in its verdict all the same)."""
        if not self.policy.robustness:
            return self.t("s9.checks_none")
        keys = list(
            dict.fromkeys(o.key for row in self.verdict.rows for o in row.outcomes if split_robustness_key(o.key))
        )
        rows: list[list[str]] = []
        notes: dict[tuple[str, str, str], list[str]] = {}
        seen: set[tuple[str, str]] = set()
        for row in self.verdict.rows:
            pair = (row.cell.variant, row.cell.provider)
            if pair in seen:
                continue
            seen.add(pair)
            by_key = {o.key: o for o in row.outcomes}
            cells = []
            for key in keys:
                o = by_key.get(key)
                if o is None:
                    cells.append(self.t("common.dash"))
                elif o.status in (NOT_MEASURED, NOT_APPLICABLE):
                    label = self.t("common.not_measured" if o.status == NOT_MEASURED else "common.not_applicable")
                    cells.append(label)
                    reason = self.t(f"why.{o.why}", detail=o.detail or self.t("common.dash"), reference=self.ref)
                    notes.setdefault((key, label, reason), []).append(self.pair(*pair))
                else:
                    mark = self.t("common.pass_mark" if o.status == PASS else "common.fail_mark")
                    value = fmt(o.value, PCT) if o.key.split("@")[0].endswith("_pct") else self.signed(o.value)
                    cells.append(f"{mark} {value}")
            rows.append([self.pair(*pair), *cells])
        out = [
            self.t("s9.checks_heading"),
            self.t("s9.checks_intro"),
            _table([self.t("s9.col_pair"), *(self.robustness_check_name(k) for k in keys)], rows),
        ]
        if notes:
            items = [
                self.t(
                    "s5.reason_item", check=self.robustness_check_name(k), status=label, cells=", ".join(c), reason=r
                )
                for (k, label, r), c in notes.items()
            ]
            out.append("\n".join(f"- {item}" for item in items))
        return "\n\n".join(out)


def _times100(value: float | None) -> float | None:
    return None if value is None else value * 100.0


def render_markdown(
    result: RunResult,
    lang: str = "en",
    policy: Policy | None = None,
    plots: dict[str, PlotOutcome] | None = None,
    claims: ClaimSet | None = None,
) -> str:
    """The report in ``lang``; ``plots`` says which plot files exist (default: the ones the data allows);
    ``claims`` are the hand-written report's claims to answer (default: recorded in the run, else the seed's)."""
    return _Writer(result, catalog(lang), policy or policy_for(result), plots or planned_plots(result), claims).render()


__all__ = ["reason_detail", "reason_kind", "render_markdown"]

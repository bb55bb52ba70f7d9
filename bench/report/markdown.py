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
from bench.providers import is_gpu
from bench.report.analysis import (
    Recommendation,
    compare_to_reference,
    ok_cells,
    rank_value,
    recommend,
)
from bench.report.catalog import Catalog, catalog
from bench.report.claims import NOT_MEASURABLE, ClaimOutcome, ClaimSet, claims_for, evaluate_claims
from bench.report.claims import PASS as CLAIM_PASS
from bench.report.plots import PLOT_NAMES, PlotOutcome, planned_plots
from bench.report.policy import (
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
from bench.results import CellResult, RunResult, ServiceEntry

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
            self.service(),
            self.robustness(),
        ]
        return "\n\n".join(p.rstrip() for p in parts if p) + "\n"

    def title(self) -> str:
        model = Path(str(self.r.config.get("model_dir") or "model")).name or "model"
        return "\n\n".join(
            [self.t("title.heading", model=model), self.t("title.intro", run_id=self.r.run_id, created=self.r.created)]
        )

    # --- claims of the hand-written report ---------------------------------------------------------
    def claims_section(self) -> str:
        """Each claim of the hand-written report → the measured value → ✅ / ❌ / not measurable here (why)."""
        outcomes = self.claim_outcomes
        if not outcomes:
            return ""
        source = (
            self.t("claims.source_file", path=self.claims.source)
            if self.claims.source
            else self.t("claims.source_seed")
        )
        counts = {s: sum(1 for o in outcomes if o.status == s) for s in (CLAIM_PASS, "fail", NOT_MEASURABLE)}
        head = [
            self.t("claims.col_claim"),
            self.t("claims.col_measured"),
            self.t("claims.col_on"),
            self.t("claims.col_verdict"),
        ]
        rows = []
        for o in outcomes:
            rows.append(
                [
                    o.claim.text_in(self.c.lang),
                    self.claim_value(o),
                    self.claim_where(o),
                    self.claim_verdict(o),
                ]
            )
        return "\n\n".join(
            [
                self.t("claims.heading"),
                self.t("claims.intro", source=source),
                _table(head, rows),
                self.t(
                    "claims.summary",
                    passed=fmt(counts[CLAIM_PASS]),
                    failed=fmt(counts["fail"]),
                    unmeasurable=fmt(counts[NOT_MEASURABLE]),
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
        if o.status == "fail":
            return self.t("common.fail_mark")
        if o.why == "cell_not_run" and o.cell is not None:
            why = self.t("why.cell_not_run", cell=self.cell(o.cell), detail=self.reason(o.detail, o.cell.provider))
        elif o.why == "reference_not_planned" and str(o.claim.relative_to or "").startswith("pytorch"):
            why = self.t("why.no_pytorch_row", reference=o.claim.relative_to)
        else:
            why = self.why(o.why, o.detail, reference=o.claim.relative_to or self.ref)
        return self.t("claims.not_measurable", reason=why)

    def claim_value(self, o: ClaimOutcome) -> str:
        """The measured value with what the reader needs to judge it (reference row, load, set size)."""
        if o.value is None:
            return self.t("common.dash")
        check, f, v = o.claim.check, o.facts, o.value
        if check in ("max_p99_ms", "max_p99_ms_per_image", "max_service_p50_ms", "max_service_p99_ms"):
            text = self.t("claims.value_ms", value=fmt(v, MS))
            if check == "max_p99_ms_per_image" and o.cell is not None and o.cell.batch_size > 1:
                text = self.t("claims.value_ms_per_image", value=fmt(v, MS))
            if check.startswith("max_service"):
                text += " " + self.t(
                    "claims.value_load", rate=fmt(f.get("rate"), 0), seconds=fmt(f.get("duration_s"), 0)
                )
            return text
        if check == "min_speedup_p50":
            ref = (
                self.t("common.cell", variant=f.get("reference"), provider=o.cell.provider, batch=o.cell.batch_size)
                if o.cell is not None
                else self.t("common.dash")
            )
            low, high = o.interval or (None, None)
            if low is None:
                return self.t("claims.value_speedup", value=fmt(v, 2), reference=ref)
            return self.t("claims.value_speedup_ci", value=fmt(v, 2), low=fmt(low, 2), high=fmt(high, 2), reference=ref)
        if check == "max_memory_ratio":
            kind = self.t("claims.memory_gpu" if f.get("memory") == "memory_gpu" else "claims.memory_rss")
            return self.t("claims.value_ratio_of", value=fmt(v, 2), what=kind, reference=f.get("reference"))
        if check == "max_size_ratio":
            return self.t(
                "claims.value_ratio_of", value=fmt(v, 2), what=self.t("claims.size"), reference=f.get("reference")
            )
        if check in ("max_gpu_memory_mb", "max_rss_mb", "max_model_mb"):
            return self.t("claims.value_mb", value=fmt(v, 1))
        if check == "gpu_util_mean_pct":
            return self.t("common.percent", value=fmt(v, 1))
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
        if check == "health_status":
            return self.t("claims.value_health", code=fmt(int(v)), status=f.get("status") or self.t("common.dash"))
        if check == "no_leak":
            return self.t(
                "claims.value_leak_yes" if v else "claims.value_leak_no",
                start=fmt(f.get("rss_start"), 1),
                end=fmt(f.get("rss_end"), 1),
                seconds=fmt(f.get("duration_s"), 0),
                rate=fmt(f.get("rate"), 0),
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
            if self.rec.tied:
                others = ", ".join(self.cell(r.cell) for r in self.rec.tied if r is not self.rec.choice)
                lines.append(
                    self.t("key.recommendation_tied", choice=choice, others=others, rule=self.t("s6.tie_rule"))
                )
            else:
                lines.append(self.t("key.recommendation", choice=choice))
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
            (self.t("s1.model_dir"), f"`{cfg.get('model_dir')}`" if cfg.get("model_dir") else d),
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
                    path=ds.get("path"),
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
        parts += [self.t("s2.not_run_heading"), self.not_run_lines()]
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
                    self.pct(a.get("accuracy")),
                    self.pct(a.get("balanced_accuracy")),
                    fmt(a.get("roc_auc"), 4),
                    self.pct(a.get("eer")),
                    self.pct(agree.get("flip_rate")) if c.variant != self.ref else d,
                    fmt(agree.get("max_abs_dp"), 4) if c.variant != self.ref else d,
                ]
            )
            detail.append(
                [
                    self.pair(c.variant, c.provider),
                    fmt(len(a.get("skipped") or [])),
                    self.pct(a.get("precision")),
                    self.pct(a.get("recall")),
                    fmt(a.get("f1"), 4),
                    fmt(a.get("average_precision"), 4),
                    fmt(a.get("log_loss"), 4),
                    fmt(a.get("ece"), 4),
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
                            self.signed(r.accuracy_delta_pt),
                            self.pct(r.flip_rate),
                        ]
                        for r in measured
                    ],
                    [False] + [True] * 6,
                )
            )
        missing = [r for r in rows if r.baseline is None and not r.cell.variant.startswith("pytorch")]
        if missing:
            parts.append(
                "\n".join(f"- {self.t('s3.no_baseline', cell=self.cell(r.cell), reference=self.ref)}" for r in missing)
            )
        parts.append(self.pytorch_comparison())
        return "\n\n".join(p for p in parts if p)

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
        value = self.signed(o.value) if o.key == "max_accuracy_drop_pt" else fmt(o.value, digits)
        over = ""
        if o.limit != self.policy.checks.get(o.key):
            over = f" (≤ {fmt(o.limit, 2)})" if o.key.startswith("max") else f" (≥ {fmt(o.limit, 2)})"
        return f"{mark} {value}{over}"

    def _row_result(self, row: CellChecks) -> str:
        if row.cell.status != "ok":
            return self.t("s5.result_not_run")
        if any(o.status == FAIL for o in row.outcomes):
            return self.t("common.fail")
        if any(o.status == NOT_MEASURED for o in row.outcomes):
            return self.t("s5.result_not_measured")
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
        """The tie behind the choice: each tied cell's figure with its 95 % interval, and the rule applied."""
        rec, items = self.rec, []
        for row in rec.tied:
            point, low, high = rec.intervals[row.cell.key]
            digits = 1 if rec.rank_by == "throughput_ips" else MS
            items.append(
                self.t(
                    "s6.tie_item",
                    cell=self.cell(row.cell),
                    value=fmt(point, digits),
                    low=fmt(low, digits),
                    high=fmt(high, digits),
                    size=fmt(row.cell.model.size_mb if row.cell.model else None, 2),
                )
            )
        return self.t(
            "s6.tied", rank=self.t(f"s6.rank_{rec.rank_by}"), cells="; ".join(items), rule=self.t("s6.tie_rule")
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
                        self.t("s6.choice", cell=self.cell(c), file=c.model.file if c.model else "?"),
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
            parts.append(self.t("s6.pareto", cells="; ".join(items)))
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
            max_rate = e.get("max_rate") or {}
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
            if max_rate.get("rate_rps") is not None:
                rate_text = self.t(
                    "s8.max_rate_value", rate=fmt(max_rate["rate_rps"], 1), slo=fmt(max_rate.get("slo_p99_ms"), 0)
                )
            elif max_rate:
                rate_text = self.t("s8.max_rate_none", slo=fmt(max_rate.get("slo_p99_ms"), 0))
            else:
                rate_text = d
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
            self.startup_table(entries),
            self.leak_text(entries),
            self.health_text(entries),
            self.invalid_inputs_text(entries),
        ]
        plot = self.plots.get("service_rate")
        if plot is not None and plot.file:
            parts.append(f"![{self.t('s7.service_rate')}]({plot.file})")
        return "\n\n".join(p for p in parts if p)

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
                    fmt(acc.get("roc_auc"), 4),
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

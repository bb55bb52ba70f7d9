"""The release report as Markdown, in any catalogue language, from a RunResult alone.

Layout mirrors the hand-written seed report (key figures, environment, measurements, comparison,
variants, checks, recommendation) but every figure comes from the results and every sentence from
the catalogue; numbers go through :func:`bench.console.fmt`, so both languages show identical figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.formatting import fmt
from bench.report.analysis import (
    Recommendation,
    compare_to_reference,
    ok_cells,
    rank_value,
    recommend,
)
from bench.report.catalog import Catalog, catalog
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
    split_robustness_key,
)
from bench.results import CellResult, RunResult

MS, PCT = 3, 2  # digits: latency figures, percentages


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
    def __init__(self, result: RunResult, cat: Catalog, policy: Policy, plots: dict[str, PlotOutcome]):
        self.r = result
        self.c = cat
        self.policy = policy
        self.ref = policy.reference
        self.plots = plots
        self.verdict: PolicyVerdict = evaluate_policy(result, policy)
        self.rec: Recommendation = recommend(result, self.verdict)

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
        digits = 0 if float(limit).is_integer() else 2
        return self.t(f"s5.check_{key}", limit=fmt(float(limit), digits))

    # --- sections ---------------------------------------------------------------------------------
    def render(self) -> str:
        parts = [
            self.title(),
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

    def key_figures(self) -> str:
        cells = self.r.cells
        count = {s: sum(1 for c in cells if c.status == s) for s in ("ok", "unavailable", "failed")}
        lines = []
        if self.rec.choice is not None:
            lines.append(self.t("key.recommendation", choice=self.cell(self.rec.choice.cell)))
        else:
            lines.append(self.t("key.recommendation_none"))
        lines.append(
            self.t(
                "key.checks",
                verdict=self.t("common.pass" if self.verdict.passed else "common.fail"),
                passing=fmt(len(self.verdict.passing)),
                candidates=fmt(len(self.verdict.candidates)),
            )
        )
        lines.append(
            self.t(
                "key.cells",
                total=fmt(len(cells)),
                ok=fmt(count["ok"]),
                unavailable=fmt(count["unavailable"]),
                failed=fmt(count["failed"]),
            )
        )
        measured = ok_cells(self.r)
        if measured:
            fastest = min(measured, key=lambda c: ((c.latency_ms or {}).get("p50") or float("inf"), c.key))
            lines.append(
                self.t("key.fastest", p50=fmt((fastest.latency_ms or {}).get("p50"), MS), cell=self.cell(fastest))
            )
            best = max(measured, key=lambda c: c.throughput_ips or 0.0)
            lines.append(self.t("key.throughput", ips=fmt(best.throughput_ips, 1), cell=self.cell(best)))
        else:
            lines.append(self.t("key.none_ran"))
        ref = next(
            (c for c in cells if c.variant == self.ref and c.accuracy and c.accuracy.get("accuracy") is not None), None
        )
        if ref is not None:
            lines.append(
                self.t(
                    "key.accuracy",
                    reference=self.ref,
                    accuracy=self.pct(ref.accuracy["accuracy"]),
                    n=fmt(ref.accuracy.get("n")),
                    provider=ref.provider,
                )
            )
        else:
            lines.append(self.t("key.accuracy_none", reason=self._accuracy_reason()))
        return self.t("key.heading") + "\n\n" + "\n".join(f"- {line}" for line in lines)

    def _accuracy_reason(self) -> str:
        reason = self.r.config.get("accuracy_reason")
        if reason:
            return str(reason)
        return f"no {self.ref} cell was evaluated"

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
                    memory=fmt(gpu.get("memory_total_mb")),
                )
                if gpu
                else self.t("s1.gpu_none", reason=env.get("gpu_reason") or d),
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
        d = self.t("common.dash")
        head = [
            self.t(f"s2.col_{k}")
            for k in (
                "variant",
                "provider",
                "batch",
                "status",
                "ran_on",
                "create",
                "mean",
                "std",
                "min",
                "max",
                "p50",
                "p95",
                "p99",
                "ips",
                "rss",
                "gpu",
                "gpu_util",
            )
        ]
        rows = []
        for c in self.r.cells:
            lat, mem = c.latency_ms or {}, c.memory or {}
            gpu = d
            if mem.get("gpu_process_peak_mb") is not None or mem.get("gpu_device_peak_mb") is not None:
                gpu = f"{fmt(mem.get('gpu_process_peak_mb'), 1)} / {fmt(mem.get('gpu_device_peak_mb'), 1)}"
            util = d
            if mem.get("gpu_util_mean_pct") is not None:
                util = f"{fmt(mem.get('gpu_util_mean_pct'), 1)} / {fmt(mem.get('gpu_util_max_pct'), 1)}"
            ran_on = (
                c.providers_effective[0].removesuffix("ExecutionProvider")
                if c.providers_effective and c.status == "ok"
                else d
            )
            rows.append(
                [
                    c.variant,
                    c.provider,
                    fmt(c.batch_size),
                    self.status(c.status),
                    ran_on,
                    fmt(c.session_create_ms, 1),
                    *(fmt(lat.get(k), MS) for k in ("mean", "std", "min", "max", "p50", "p95", "p99")),
                    fmt(c.throughput_ips, 1),
                    fmt(mem.get("rss_peak_mb"), 1),
                    gpu,
                    util,
                ]
            )
        right = [False] * 5 + [True] * 12
        samples = sorted({len(c.samples_ms) for c in ok_cells(self.r)})
        n_text = (
            "–".join(fmt(s) for s in (samples[0], samples[-1]))
            if len(samples) > 1
            else fmt(samples[0])
            if samples
            else d
        )
        parts = [
            self.t("s2.heading"),
            self.t("s2.latency_heading"),
            self.t("s2.latency_note", n=n_text),
            _table(head, rows, right),
            self.t("s2.accuracy_heading", reference=self.ref),
            self.accuracy_table(),
        ]
        parts.append(self.t("s2.not_run_heading"))
        not_run = [c for c in self.r.cells if c.status != "ok"]
        if not_run:
            items = [
                self.t("s2.not_run_item", cell=self.cell(c), status=self.status(c.status), reason=c.reason or d)
                for c in not_run
            ]
            parts.append("\n".join(f"- {item}" for item in items))
        else:
            parts.append(self.t("s2.not_run_none"))
        return "\n\n".join(parts)

    def accuracy_table(self) -> str:
        evaluated = [c for c in self.r.cells if c.accuracy]
        if not evaluated:
            return self.t("s2.accuracy_none", reason=self._accuracy_reason())
        head = [
            self.t("s2.col_variant"),
            self.t("s2.col_provider"),
            self.t("s2.col_batch"),
            self.t("s2.col_n"),
            self.t("s2.col_skipped"),
            self.t("s2.col_accuracy"),
            self.t("s2.col_balanced"),
            self.t("s2.col_precision"),
            self.t("s2.col_recall"),
            self.t("s2.col_f1"),
            self.t("s2.col_auc"),
            self.t("s2.col_ap"),
            self.t("s2.col_eer"),
            self.t("s2.col_log_loss"),
            self.t("s2.col_ece"),
            self.t("s2.col_flip", reference=self.ref),
            self.t("s2.col_max_dp", reference=self.ref),
        ]
        rows, notes = [], []
        for c in evaluated:
            a = c.accuracy or {}
            agree = a.get("agreement") or {}
            rows.append(
                [
                    c.variant,
                    c.provider,
                    fmt(c.batch_size),
                    fmt(a.get("n")),
                    fmt(len(a.get("skipped") or [])),
                    self.pct(a.get("accuracy")),
                    self.pct(a.get("balanced_accuracy")),
                    self.pct(a.get("precision")),
                    self.pct(a.get("recall")),
                    fmt(a.get("f1"), 4),
                    fmt(a.get("roc_auc"), 4),
                    fmt(a.get("average_precision"), 4),
                    self.pct(a.get("eer")),
                    fmt(a.get("log_loss"), 4),
                    fmt(a.get("ece"), 4),
                    self.pct(agree.get("flip_rate")) if c.variant != self.ref else self.t("common.dash"),
                    fmt(agree.get("max_abs_dp"), 4) if c.variant != self.ref else self.t("common.dash"),
                ]
            )
            for metric, reason in sorted((a.get("reasons") or {}).items()):
                notes.append(
                    self.t("s2.metric_reason", pair=self.pair(c.variant, c.provider), metric=metric, reason=reason)
                )
        n = sorted({fmt(c.accuracy.get("n")) for c in evaluated if c.accuracy})
        out = [
            self.t("s2.accuracy_note", n=" / ".join(n), reference=self.ref),
            _table(head, rows, [False, False] + [True] * 15),
        ]
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
                self.t("s3.col_throughput"),
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
                            self.ratio(r.throughput_ratio),
                            self.ratio(r.rss_ratio),
                            self.ratio(r.gpu_ratio),
                            self.ratio(r.size_ratio),
                            self.signed(r.accuracy_delta_pt),
                            self.pct(r.flip_rate),
                        ]
                        for r in measured
                    ],
                    [False] + [True] * 7,
                )
            )
        missing = [r for r in rows if r.baseline is None]
        if missing:
            parts.append(
                "\n".join(f"- {self.t('s3.no_baseline', cell=self.cell(r.cell), reference=self.ref)}" for r in missing)
            )
        return "\n\n".join(parts)

    def variants(self) -> str:
        d = self.t("common.dash")
        order = list(dict.fromkeys([*(self.r.config.get("variants") or []), *(c.variant for c in self.r.cells)]))
        rows = []
        for v in order:
            info = next((c.model for c in self.r.cells if c.variant == v and c.model is not None), None)
            if info is None:
                rows.append([v, d, d, d, d])
                continue
            rows.append([v, f"`{info.file}`", fmt(info.size_mb, 2), self._recipe(info.recipe), f"`{info.sha256}`"])
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
        keys = p.all_check_keys()
        if not keys:
            parts.append(self.t("s5.none"))
            return "\n\n".join(parts)
        lines = []
        if p.checks:
            lines.append(
                self.t("s5.limits", limits=", ".join(self.check_name(k, v) for k, v in p.limits_for("").items()))
            )
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
            *(self.check_name(k, p.checks[k]) if k in p.checks else self.t(f"s5.check_{k}", limit="…") for k in keys),
            self.t("s5.col_result"),
        ]
        rows = []
        for row in self.verdict.rows:
            by_key = {o.key: o for o in row.outcomes}
            rows.append(
                [
                    self.cell(row.cell),
                    self.t("common.yes" if row.candidate else "common.no"),
                    *(self._outcome(by_key.get(k)) for k in keys),
                    self._row_result(row),
                ]
            )
        parts.append(_table(head, rows))
        notes = self._check_notes()
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
        parts.append(
            self.t(
                "s5.verdict_pass", passing=fmt(len(self.verdict.passing)), candidates=fmt(len(self.verdict.candidates))
            )
            if self.verdict.passed
            else self.t("s5.verdict_fail", candidates=fmt(len(self.verdict.candidates)))
        )
        return "\n\n".join(parts)

    def _outcome(self, o: Any) -> str:
        if o is None:
            return self.t("common.dash")
        if o.status == NOT_MEASURED:
            return self.t("common.not_measured")
        if o.status == NOT_APPLICABLE:
            return self.t("common.not_applicable")
        digits = {
            "max_p99_ms": MS,
            "min_throughput_ips": 1,
            "max_gpu_memory_mb": 1,
            "max_rss_mb": 1,
            "max_model_mb": 2,
        }.get(o.key, PCT)
        value = self.signed(o.value) if o.key == "max_accuracy_drop_pt" else fmt(o.value, digits)
        mark = self.t("common.pass_mark" if o.status == PASS else "common.fail_mark")
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
        groups: dict[tuple[str, str, str, str | None], list[str]] = {}
        for row in self.verdict.rows:
            if row.cell.status != "ok":
                continue  # why it did not run is in section 2.3
            for o in row.outcomes:
                if split_robustness_key(o.key) is not None:
                    continue  # explained in the robustness section
                if o.why and o.why != "gpu_process":
                    groups.setdefault((o.key, o.status, o.why, o.detail), []).append(self.cell(row.cell))
        notes = []
        for (key, status, why, detail), cells in groups.items():
            limit = self.policy.checks.get(key)
            check = self.check_name(key, limit) if limit is not None else self.t(f"s5.check_{key}", limit="…")
            reason = self.t(f"why.{why}", detail=detail or self.t("common.dash"), reference=self.ref)
            if status in (NOT_MEASURED, NOT_APPLICABLE):
                label = self.t("common.not_measured" if status == NOT_MEASURED else "common.not_applicable")
                notes.append(self.t("s5.reason_item", check=check, status=label, cells=", ".join(cells), reason=reason))
            else:
                notes.append(self.t("s5.note_item", check=check, cells=", ".join(cells), note=reason))
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
                if ref is not None and acc.get("accuracy") is not None:
                    delta = (acc["accuracy"] - ref) * 100.0
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
                                check=self.check_name(key, self.policy.limits_for("").get(key, 0.0)),
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
            title = self.t(f"s7.{name}")
            if outcome is not None and outcome.file:
                parts.append(f"![{title}]({outcome.file})")
            else:
                reason = self.t(f"s7.{outcome.reason}") if outcome is not None and outcome.reason else "?"
                parts.append(self.t("s7.not_drawn", title=title, reason=reason))
        return "\n\n".join(parts)

    def service(self) -> str:
        entries = self.r.service or []
        if not entries:
            return "\n\n".join([self.t("s8.heading"), self.t("s8.none")])
        d = self.t("common.dash")
        keys = (
            "variant",
            "provider",
            "status",
            "rate",
            "requests",
            "errors",
            "p50",
            "p90",
            "p99",
            "max",
            "inprocess",
            "overhead",
            "lag",
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
            if status != "ok" or e.get("reason"):
                notes.append(
                    self.t(
                        "s8.reason_item",
                        pair=self.pair(e.get("variant", d), e.get("provider", d)),
                        status=self.status(status) if status in ("ok", "unavailable", "failed") else status,
                        reason=e.get("reason") or d,
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
                    e.get("variant", d),
                    e.get("provider", d),
                    self.status(status) if status in ("ok", "unavailable", "failed") else status,
                    f"{fmt(load.get('achieved_rate'), 1)} / {fmt(load.get('target_rate'), 1)}" if load else d,
                    fmt(load.get("requests")),
                    fmt(sum(int(v) for v in errors.values())) if errors is not None else d,
                    fmt(lat.get("p50"), MS),
                    fmt(lat.get("p90"), MS),
                    fmt(lat.get("p99"), MS),
                    fmt(lat.get("max"), MS),
                    fmt(e.get("inprocess_p50_ms"), MS),
                    fmt(e.get("overhead_p50_ms"), MS),
                    fmt((load.get("send_lag_ms") or {}).get("p50"), MS),
                    fmt(batch.get("ms_per_image_p50"), MS),
                    rate_text,
                    d if leak is None else self.t("s8.leak_yes" if leak else "s8.leak_no"),
                ]
            )
        parts = [
            self.t("s8.heading"),
            self.t("s8.intro"),
            _table([self.t(f"s8.col_{k}") for k in keys], rows, [False] * 3 + [True] * 12 + [False]),
        ]
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
        return "\n\n".join(parts)

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
            by_name = {e["perturbation"]: e for e in acc.get("perturbations") or []}
            auc_rows.append(
                [
                    self.pair(c.variant, c.provider),
                    fmt(acc.get("roc_auc"), 4),
                    *(
                        self.signed(_times100((by_name.get(n) or {}).get("vs_clean", {}).get("delta_roc_auc")))
                        for n in names
                    ),
                ]
            )
            flip_rows.append(
                [
                    self.pair(c.variant, c.provider),
                    self.pct((acc.get("agreement") or {}).get("flip_rate")) if c.variant != self.ref else d,
                    *(
                        self.pct(((by_name.get(n) or {}).get("agreement") or {}).get("flip_rate"))
                        if c.variant != self.ref
                        else d
                        for n in names
                    ),
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
        rows, notes, seen = [], {}, set()
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
    result: RunResult, lang: str = "en", policy: Policy | None = None, plots: dict[str, PlotOutcome] | None = None
) -> str:
    """The report in ``lang``; ``plots`` says which plot files exist (default: the ones the data allows)."""
    return _Writer(result, catalog(lang), policy or policy_for(result), plots or planned_plots(result)).render()


__all__ = ["render_markdown"]

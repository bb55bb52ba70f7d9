"""The report's "Where the time goes" section: op-type shares per cell (a stacked bar per variant), achieved
GFLOP/s and the fraction of this machine's measured peak (``bench matrix --profile``), CUDA kernel times on a
GPU, and a note for each variant whose fast CPU kernels need a feature this CPU lacks (bench.cpufeatures)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.cpufeatures import variant_note_kind
from bench.formatting import fmt
from bench.report.plots import PlotOutcome, _figure, _save
from bench.results import CellResult, RunResult

TOP_OPS = 6  # op types drawn and listed per cell; the rest are "other"
PLOT_PREFIX = "where-"


def _profiled(result: RunResult) -> list[CellResult]:
    return [c for c in result.cells if c.status == "ok" and c.profile and c.profile.get("op_types")]


def plot_name(variant: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in variant)
    return f"{PLOT_PREFIX}{safe}"


def _shares(cell: CellResult, top: int = TOP_OPS) -> list[tuple[str, float]]:
    rows = (cell.profile or {}).get("op_types") or []
    head = [(str(r["op_type"]), float(r.get("share") or 0.0)) for r in rows[:top]]
    rest = sum(float(r.get("share") or 0.0) for r in rows[top:])
    return [*head, ("other", rest)] if rest > 0 else head


def draw(result: RunResult, out_dir: Path) -> dict[str, PlotOutcome]:
    """One PNG per profiled variant: a horizontal bar per cell (provider · batch), split into op-type shares."""
    by_variant: dict[str, list[CellResult]] = {}
    for cell in _profiled(result):
        by_variant.setdefault(cell.variant, []).append(cell)
    drawn: dict[str, PlotOutcome] = {}
    for variant, cells in by_variant.items():
        ops = list(dict.fromkeys(op for c in cells for op, _ in _shares(c)))
        fig = _figure(9.0, max(2.2, 1.2 + 0.5 * len(cells)))
        ax = fig.add_subplot()
        colours = {op: f"C{i % 10}" for i, op in enumerate(ops)}
        labels = [f"{c.provider} · b{c.batch_size}" for c in cells]
        for i, cell in enumerate(cells):
            left = 0.0
            for op, share in _shares(cell):
                ax.barh(i, share * 100, left=left, color=colours[op], edgecolor="white", label=op)
                if share >= 0.08:
                    ax.text(left + share * 50, i, f"{op}\n{share:.0%}", ha="center", va="center", fontsize=7)
                left += share * 100
        ax.set_yticks(range(len(cells)), labels)
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of operator time (%)")
        ax.set_title(f"{variant}: where the time goes (ORT profile, own session)")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=False))
        ax.legend(
            unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False
        )
        name = plot_name(variant)
        drawn[name] = _save(fig, out_dir, name)
    return drawn


def _notes(result: RunResult, t: Callable[..., str]) -> list[str]:
    features = ((result.environment or {}).get("cpu") or {}).get("features")
    seen: set[tuple[str, str]] = set()
    lines = []
    for cell in result.cells:
        kind = variant_note_kind(cell.variant, cell.provider, features)
        if kind is None or (cell.variant, kind) in seen:
            continue
        seen.add((cell.variant, kind))
        lines.append("- " + t(f"where.note_{kind}", variant=cell.variant))
    for cell in result.cells:  # a model property: 4-bit MatMul built without accuracy_level=4 (int8 compute)
        recipe = (cell.model.recipe if cell.model else None) or {}
        level = (recipe.get("params") or {}).get("accuracy_level")
        slow_path = recipe.get("method") == "nbits" and (level is None or level < 4)
        if cell.provider == "cpu" and slow_path and (cell.variant, "accuracy_level") not in seen:
            seen.add((cell.variant, "accuracy_level"))
            lines.append("- " + t("where.note_q4_accuracy_level", variant=cell.variant, level=fmt(level)))
    return lines


def section(result: RunResult, t: Callable[..., str], plots: Mapping[str, PlotOutcome]) -> str:
    """The Markdown section, or "" when the run has neither profiles nor CPU-feature notes."""
    cells = _profiled(result)
    notes = _notes(result, t)
    failed = [c for c in result.cells if c.profile and not c.profile.get("op_types") and c.profile.get("reason")]
    if not cells and not notes and not failed:
        return ""
    dash = t("common.dash")
    parts = [t("where.heading")]
    if cells:
        peak = next((c.profile.get("peak_gflops") for c in cells if c.profile and c.profile.get("peak_gflops")), None)
        parts.append(t("where.intro", peak=fmt(peak, 1) if peak is not None else dash))
        header = [
            t("where.col_cell"),
            t("where.col_p50"),
            t("where.col_gflops"),
            t("where.col_peak"),
            t("where.col_ops"),
        ]
        rows = []
        for c in cells:
            p: Mapping[str, Any] = c.profile or {}
            fraction = p.get("fraction_of_peak")
            ops = ", ".join(f"{op} {share:.0%}" for op, share in _shares(c, 3))
            rows.append(
                [
                    t("common.cell", variant=c.variant, provider=c.provider, batch=c.batch_size),
                    fmt(p.get("timed_p50_ms"), 3) if p.get("timed_p50_ms") is not None else dash,
                    fmt(p.get("achieved_gflops"), 1) if p.get("achieved_gflops") is not None else dash,
                    t("common.percent", value=fmt(fraction * 100, 0)) if fraction is not None else dash,
                    ops or dash,
                ]
            )
        parts.append(_table(header, rows))
        for variant in dict.fromkeys(c.variant for c in cells):
            outcome = plots.get(plot_name(variant))
            if outcome is not None and outcome.file:
                parts.append(f"![{t('where.plot', variant=variant)}]({outcome.file})")
        for c in cells:
            p = c.profile or {}
            kernels = p.get("kernels") or []
            cell_text = t("common.cell", variant=c.variant, provider=c.provider, batch=c.batch_size)
            if kernels:
                top = ", ".join(f"`{k['name'][:40]}` {fmt(k['ms'], 3)} ms" for k in kernels[:3])
                parts.append(t("where.kernels", cell=cell_text, kernels=top))
            elif c.provider in ("cuda", "tensorrt"):
                parts.append(t("where.no_kernels", cell=cell_text))
            if p.get("tensorrt_layers_note"):
                parts.append(t("where.tensorrt_layers", cell=cell_text))
    for c in failed:
        reason = str((c.profile or {}).get("reason"))
        parts.append(
            t(
                "where.not_profiled",
                cell=t("common.cell", variant=c.variant, provider=c.provider, batch=c.batch_size),
                reason=reason,
            )
        )
    if notes:
        parts.append(t("where.notes_heading"))
        parts.append("\n".join(notes))
    return "\n\n".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)

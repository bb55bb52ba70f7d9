"""Reliability diagrams: one PNG per evaluated variant (``plots/reliability_<variant>.png``).

Each shows the share of fake images against the mean p(fake) in each of the ten equal-width bins
(bench.metrics.reliability, stored in results.json), the diagonal a calibrated model follows, the Brier score
and ECE in the title, and how many images each bin holds (beside each point, and as bars below): an empty bin has
no point, not a 0, and a bin of fewer than ``FEW`` images is drawn hollow.
The variant's first evaluated cell is drawn (the reference provider first when a variant ran on several).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.report.plots import PLOTS_DIR, PlotOutcome, _figure, _save
from bench.results import CellResult, RunResult

PREFIX = "reliability_"
FEW = 10  # a bin with fewer images is drawn hollow: its share of fakes is a handful of images


def plot_name(variant: str) -> str:
    """The plot's name (and file stem) for ``variant``: characters a file name should not hold become ``_``."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", variant)


def reliability_cells(result: RunResult) -> list[CellResult]:
    """One evaluated cell per variant that has reliability data, in the run's order, CPU cells first."""
    chosen: dict[str, CellResult] = {}
    ok = [c for c in result.cells if c.status == "ok" and (c.accuracy or {}).get("reliability")]
    for cell in sorted(ok, key=lambda c: c.provider != "cpu"):
        chosen.setdefault(cell.variant, cell)
    order = list(dict.fromkeys(c.variant for c in result.cells))
    return [chosen[v] for v in order if v in chosen]


def reliability_diagram(cell: CellResult, out_dir: Path) -> PlotOutcome:
    """The reliability diagram of one cell (module docstring)."""
    acc: dict[str, Any] = dict(cell.accuracy or {})
    data = acc["reliability"]
    bins = int(data["bins"])
    centres = [(i + 0.5) / bins for i in range(bins)]
    fig = _figure(5.2, 5.6)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="calibrated")
    points = [
        (m, f, n)
        for m, f, n in zip(data["mean_p"], data["fake_rate"], data["count"], strict=True)
        if m is not None and f is not None
    ]
    if points:
        xs, ys, ns = zip(*points, strict=True)
        top.plot(xs, ys, color="tab:blue", linewidth=1, alpha=0.6)
        few = [n < FEW for n in ns]
        for hollow, label in ((False, f"{cell.variant} · {cell.provider}"), (True, f"bins of < {FEW} images")):
            chosen = [(x, y) for x, y, f in zip(xs, ys, few, strict=True) if f == hollow]
            if chosen:
                cx, cy = zip(*chosen, strict=True)
                face = "white" if hollow else "tab:blue"
                top.scatter(cx, cy, s=36, facecolors=face, edgecolors="tab:blue", zorder=3, label=label)
        for x, y, n in points:
            top.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.3")
    top.set_xlim(-0.02, 1.07)  # room for the count beside the last bin
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("share of fake images in the bin")
    brier, ece = acc.get("brier"), acc.get("ece")
    title = f"{cell.variant} · {cell.provider}: reliability ({acc.get('n')} images)"
    if brier is not None:
        ci = acc.get("brier_ci")
        title += f"\nBrier {brier:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    if ece is not None:
        title += f" · ECE {ece:.4f}"
    top.set_title(title, fontsize=9)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centres, data["count"], width=0.9 / bins, color="0.6")
    bottom.set_xlabel("p(fake), binned (mean p(fake) of the bin above)")
    bottom.set_ylabel("images")
    return _save(fig, out_dir, plot_name(cell.variant))


def reliability_plots(result: RunResult, out_dir: Path) -> dict[str, PlotOutcome]:
    """A reliability diagram per evaluated variant (none for a run without labelled accuracy)."""
    return {plot_name(c.variant): reliability_diagram(c, out_dir) for c in reliability_cells(result)}


def planned_reliability(result: RunResult) -> dict[str, PlotOutcome]:
    """What :func:`reliability_plots` would draw, without drawing."""
    return {
        (name := plot_name(c.variant)): PlotOutcome(name, f"{PLOTS_DIR}/{name}.png") for c in reliability_cells(result)
    }


__all__ = ["PLOTS_DIR", "planned_reliability", "plot_name", "reliability_plots"]

"""Report plots (matplotlib, Agg, no pyplot global state). Plot text stays English: default fonts lack Thai.

One panel per batch size (a batch-8 call is not comparable with a batch-1 call), limit lines from the
release policy, labels kept apart by adjustText with leader lines, and the accuracy axis zoomed to the data
(or flips against the reference plotted when every variant has the same accuracy).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.outdir import NO_SPACE, no_space_error
from bench.report.analysis import ok_cells
from bench.report.policy import Policy
from bench.results import MaxRateStep, RunResult

PLOTS_DIR = "plots"
PLOT_NAMES = ("latency", "accuracy_latency", "size_latency")
_MARKERS = "osD^v<>ph*"


@dataclass(frozen=True)
class PlotOutcome:
    """A drawn plot (``file`` relative to the report) or why it was not drawn (``reason``: a catalogue key)."""

    name: str
    file: str | None
    reason: str | None = None


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, out_dir: Path, name: str) -> PlotOutcome:
    folder = out_dir / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": None})
    try:
        (folder / f"{name}.png").write_bytes(png.getvalue())
    except OSError as exc:  # disk full: exit 2 naming the folder and the size (bench.outdir)
        if exc.errno in NO_SPACE:
            raise no_space_error(folder, len(png.getvalue())) from None
        raise
    return PlotOutcome(name, f"{PLOTS_DIR}/{name}.png")


def _horizontal() -> dict[str, Any]:
    """boxplot's horizontal switch: ``orientation`` since Matplotlib 3.10, ``vert`` before (deprecated after)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _latency_cells(result: RunResult) -> list[Any]:
    return [c for c in ok_cells(result) if c.samples_ms]


def _accuracy_points(result: RunResult) -> list[tuple[Any, float, float]]:
    points = []
    for cell in ok_cells(result):
        acc = (result.accuracy_of(cell.variant, cell.provider) or {}).get("accuracy")
        p95 = (cell.latency_ms or {}).get("p95")
        if acc is not None and p95 is not None:
            points.append((cell, p95, acc * 100.0))
    return points


def _size_cells(result: RunResult) -> list[Any]:
    return [c for c in ok_cells(result) if c.model is not None and (c.latency_ms or {}).get("p50") is not None]


def _service_steps(result: RunResult) -> list[tuple[str, list[MaxRateStep], float | None]]:
    """(variant · provider, find-max steps, SLO) of each served variant that stepped its rate."""
    out = []
    for entry in result.service or []:
        max_rate = entry.get("max_rate") or {}
        steps = [s for s in max_rate.get("steps") or [] if s.get("p99_ms") is not None]
        if steps:
            out.append((f"{entry.get('variant')} · {entry.get('provider')}", steps, max_rate.get("slo_p99_ms")))
    return out


def _batches(cells: list[Any]) -> list[int]:
    return sorted({c.batch_size for c in cells})


def _log_x_if_wide(ax: Any, values: list[float]) -> None:
    """A log x axis when the values span more than 10× (a linear one would crowd the fast cells together)."""
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1, 2, 5 × 10ⁿ written as plain numbers (matplotlib's minor labels overlap)."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    formatter = ticker.ScalarFormatter()
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(ticker.NullFormatter())


def _place_labels(fig: Any, ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Label each point without overlaps: adjustText moves the labels apart and draws leader lines.

    A single point has nothing to overlap: its label goes beside it (adjustText and the scipy it imports
    cost ~0.6 s, a third of a one-cell matrix's report).
    """
    if len(points) == 1:
        x, y, name = points[0]
        ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=4)
        return
    if not points:
        return
    from adjustText import adjust_text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the constrained layout first, so labels are placed in the final axes
    texts = [ax.text(x, y, name, fontsize=7, zorder=4) for x, y, name in points]
    adjust_text(
        texts,
        x=[x for x, _, _ in points],
        y=[y for _, y, _ in points],
        ax=ax,
        arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6},
        expand=(1.2, 1.4),
        iter_lim=400,
    )


def _per_call_limits(policy: Policy | None, batch: int) -> list[tuple[float, str]]:
    """The policy's p99 limits as per-call figures at ``batch`` (per-image limits × batch), with their labels."""
    if policy is None:
        return []
    limits = policy.limits_for("")
    out = []
    if "max_p99_ms" in limits:
        out.append((limits["max_p99_ms"], f"policy: p99 ≤ {limits['max_p99_ms']:g} ms per call"))
    if "max_p99_ms_per_image" in limits:
        per_image = limits["max_p99_ms_per_image"]
        out.append(
            (per_image * batch, f"policy: p99 ≤ {per_image:g} ms per image (= {per_image * batch:g} ms per call)")
        )
    return out


def latency_distribution(result: RunResult, out_dir: Path, policy: Policy | None = None) -> PlotOutcome:
    """Box plots of the raw per-call latencies, one panel per batch size, with the policy's p99 limit."""
    cells = _latency_cells(result)
    if not cells:
        return PlotOutcome("latency", None, "no_samples")
    batches = _batches(cells)
    rows = [[c for c in cells if c.batch_size == b] for b in batches]
    fig = _figure(8.5, 1.0 + sum(0.9 + 0.32 * len(r) for r in rows))
    axes = fig.subplots(len(batches), 1, squeeze=False, height_ratios=[0.9 + 0.32 * len(r) for r in rows])[:, 0]
    for ax, batch, mine in zip(axes, batches, rows, strict=True):
        ax.boxplot([c.samples_ms for c in mine], showfliers=True, flierprops={"markersize": 2}, **_horizontal())
        ax.set_yticks(range(1, len(mine) + 1), [f"{c.variant} · {c.provider}" for c in mine], fontsize=8)
        ax.invert_yaxis()
        values = [min(c.samples_ms) for c in mine] + [max(c.samples_ms) for c in mine]
        limits = _per_call_limits(policy, batch)
        # a limit far above the data would squash every box on a linear axis: log scale keeps both readable
        _log_x_if_wide(ax, values + [limit for limit, _ in limits])
        if limits and max(limit for limit, _ in limits) > 3 * max(values) and ax.get_xscale() != "log":
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        for i, (limit, _label) in enumerate(limits):
            ax.axvline(limit, color="tab:red", ls="--" if i else "-", lw=1.2)
        # the limit is named in the title, not a legend: a legend box would hide a slow cell's box
        named = "; ".join(("red line: " if i == 0 else "dashed: ") + label for i, (_, label) in enumerate(limits))
        ax.set_title(f"batch {batch}: latency per call (ms)" + (f" — {named}" if named else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("latency per call (ms)")
    fig.suptitle("Latency distribution per cell (raw samples)", fontsize=10)
    return _save(fig, out_dir, "latency")


def _flip_rate(result: RunResult, cell: Any) -> float:
    agree = (result.accuracy_of(cell.variant, cell.provider) or {}).get("agreement") or {}
    return float(agree.get("flip_rate") or 0.0) * 100.0


def accuracy_vs_latency(result: RunResult, out_dir: Path, policy: Policy | None = None) -> PlotOutcome:
    """Accuracy against p95 latency, one panel per batch size, with each panel's Pareto front; when every
    accuracy is the same, decision flips against the reference variant are plotted instead (they differ)."""
    points = _accuracy_points(result)
    if not points:
        return PlotOutcome("accuracy_latency", None, "no_accuracy")
    tie = len({round(a, 9) for _, _, a in points}) == 1
    batches = _batches([c for c, _, _ in points])
    fig = _figure(5.2 * len(batches), 4.8)
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        mine = [(c, p, _flip_rate(result, c) if tie else a) for c, p, a in points if c.batch_size == batch]
        providers = sorted({c.provider for c, _, _ in mine})
        for i, provider in enumerate(providers):
            group = [(p, y) for c, p, y in mine if c.provider == provider]
            ax.scatter(
                [p for p, _ in group],
                [y for _, y in group],
                marker=_MARKERS[i % len(_MARKERS)],
                label=provider,
                zorder=3,
                clip_on=not tie,  # a 0 % flip rate sits on the axis, whole
            )
        on_front = sorted((p, y) for c, p, y in mine if _panel_front(c, mine, tie))
        if on_front:
            ax.plot(
                [p for p, _ in on_front],
                [y for _, y in on_front],
                color="tab:red",
                lw=2.0,
                marker="*",
                markersize=12,
                alpha=0.8,
                label="Pareto front (this batch size)",
                zorder=2,
            )
        _log_x_if_wide(ax, [p for _, p, _ in mine])
        ys = [y for _, _, y in mine]
        pad = max(0.25 if tie else 0.5, 0.2 * (max(ys) - min(ys)))  # zoomed to the data, points off the frame
        # a flip rate is never below 0 %, nor an accuracy above 100 %: the axis stops there
        low = max(0.0, min(ys) - pad) if tie else min(ys) - pad
        ax.set_ylim(low, max(ys) + pad if tie else min(100.0 + pad / 2, max(ys) + pad))
        ax.set_xlabel("p95 latency per call (ms)")
        ax.set_ylabel("decisions that differ from the reference (%)" if tie else "accuracy (%)")
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        _place_labels(fig, ax, [(p, y, c.variant) for c, p, y in mine])
    acc = points[0][2]
    title = (
        f"Every variant has the same accuracy ({acc:.2f} %): flips vs the reference against p95 latency"
        if tie
        else "Accuracy against p95 latency"
    )
    fig.suptitle(_fit_title(title, 5.2 * len(batches)), fontsize=10)  # one panel is narrower than the title
    return _save(fig, out_dir, "accuracy_latency")


def _fit_title(text: str, width_in: float, fontsize: float = 10.0) -> str:
    """``text`` wrapped onto lines that fit a figure ``width_in`` inches wide (else the title is cut at both edges)."""
    import textwrap

    per_line = max(20, int(width_in * 72 / (0.55 * fontsize)))  # ~0.55 em per character of the default sans
    return textwrap.fill(text, per_line)


def _panel_front(cell: Any, mine: list[tuple[Any, float, float]], tie: bool) -> bool:
    """On the panel's front: no other point is as fast and better (more accurate, or fewer flips on a tie)."""
    _, p, y = next(m for m in mine if m[0] is cell)
    better = (lambda y2: y2 <= y) if tie else (lambda y2: y2 >= y)
    strictly = (lambda y2: y2 < y) if tie else (lambda y2: y2 > y)
    return not any(p2 <= p and better(y2) and (p2 < p or strictly(y2)) for c2, p2, y2 in mine if c2 is not cell)


def size_vs_latency(result: RunResult, out_dir: Path, policy: Policy | None = None) -> PlotOutcome:
    """Model file size against p50 latency, one panel per batch size, labels kept apart."""
    cells = _size_cells(result)
    if not cells:
        return PlotOutcome("size_latency", None, "no_samples")
    batches = _batches(cells)
    fig = _figure(5.2 * len(batches), 4.8)
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        mine = [c for c in cells if c.batch_size == batch]
        providers = sorted({c.provider for c in mine})
        for i, provider in enumerate(providers):
            group = [c for c in mine if c.provider == provider]
            ax.scatter(
                [c.model.size_mb for c in group],
                [(c.latency_ms or {})["p50"] for c in group],
                marker=_MARKERS[i % len(_MARKERS)],
                label=provider,
                zorder=3,
            )
        _log_x_if_wide(ax, [c.model.size_mb for c in mine])
        p50s = [(c.latency_ms or {})["p50"] for c in mine]
        if min(p50s) > 0 and max(p50s) / min(p50s) > 10:  # one slow row (PyTorch) would flatten the rest
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("model file size (MB)")
        ax.set_ylabel("p50 latency per call (ms)")
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        _place_labels(fig, ax, [(c.model.size_mb, (c.latency_ms or {})["p50"], c.variant) for c in mine])
    fig.suptitle("Model size against p50 latency", fontsize=10)
    return _save(fig, out_dir, "size_latency")


def service_latency_vs_rate(result: RunResult, out_dir: Path, policy: Policy | None = None) -> PlotOutcome:
    """The service's /detect p99 at each offered rate of the find-max search, with its interval and the p99 SLO.

    Each point is the figure its step was judged on (steady state: the warm-up answers left out), so the plot
    and the verdict cannot disagree; where a rate was re-tested, the try that decided it.
    """
    series = _service_steps(result)
    if not series:
        return PlotOutcome("service_rate", None, "no_service_steps")
    fig = _figure(10.0, 5.0)
    ax = fig.add_subplot()
    rates: list[float] = []
    for i, (label, steps, _slo) in enumerate(series):
        # one point per offered rate, the last try there (a retest decides its rate), so the line reads left to
        # right; × where that try failed the SLO
        by_rate: dict[float, MaxRateStep] = {float(step["rate"]): step for step in steps}
        xs = sorted(by_rate)
        ys = [float(by_rate[x].get("p99_ms") or 0.0) for x in xs]  # _service_steps kept steps with a p99
        low = [y - (by_rate[x].get("p99_ci_ms") or [y, y])[0] for x, y in zip(xs, ys, strict=True)]
        high = [(by_rate[x].get("p99_ci_ms") or [y, y])[1] - y for x, y in zip(xs, ys, strict=True)]
        rates += xs
        ax.errorbar(xs, ys, yerr=[low, high], marker=_MARKERS[i % len(_MARKERS)], capsize=3, label=label)
        failed = [(x, y) for x, y in zip(xs, ys, strict=True) if not by_rate[x].get("passed")]
        ax.scatter([x for x, _ in failed], [y for _, y in failed], marker="x", color="black", zorder=4)
    slo = next((s for _, _, s in series if s is not None), None)
    if slo is not None:
        ax.axhline(slo, color="tab:red", lw=1.2, label=f"p99 SLO {slo:g} ms (× = step failed)")
    _log_x_if_wide(ax, rates)
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("/detect steady-state p99, end to end (ms, 95 % interval)")
    ax.set_title("Service latency against offered load (find-max steps, as judged)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: one entry per line
    return _save(fig, out_dir, "service_rate")


def _robustness_grid(result: RunResult) -> tuple[list[str], list[str], Any, Any]:
    """(row labels "variant/provider", perturbation names, ΔAUC in points, flip rate vs reference in %);
    NaN where a figure is undefined. Empty when the run evaluated no perturbation."""
    import numpy as np

    names = [n for n in result.config.get("perturbations") or [] if n != "clean"]
    rows: list[str] = []
    dauc: list[list[float]] = []
    flips: list[list[float]] = []
    for cell in (c for c in result.cells if c.status == "ok"):
        acc = cell.accuracy or {}
        entries = {e["perturbation"]: e for e in acc.get("perturbations") or []}
        if not entries or f"{cell.variant}/{cell.provider}" in rows:
            continue
        rows.append(f"{cell.variant}/{cell.provider}")

        def value(e: Any, get: Any) -> float:
            v = get(e) if e else None
            return float("nan") if v is None else float(v) * 100.0

        dauc.append([value(entries.get(n), lambda e: (e.get("vs_clean") or {}).get("delta_roc_auc")) for n in names])
        flips.append([value(entries.get(n), lambda e: (e.get("agreement") or {}).get("flip_rate")) for n in names])
    return rows, names, np.array(dauc, dtype=float), np.array(flips, dtype=float)


def robustness_heatmap(result: RunResult, out_dir: Path) -> PlotOutcome:
    """Variants × perturbations: ΔAUC against the same variant's clean AUC, and decision flips against the
    reference variant under the same perturbation, each cell annotated with its value."""
    import numpy as np

    rows, names, dauc, flips = _robustness_grid(result)
    if not rows:
        return PlotOutcome("robustness", None, "no_perturbations")
    reference = str(result.config.get("reference_variant") or result.config.get("reference") or "fp32")
    fig = _figure(max(8.0, 1.4 + 0.75 * len(names)), 1.6 + 0.9 * len(rows))
    axes = fig.subplots(2, 1)
    panels = (
        (dauc, "ΔROC AUC vs the same variant on clean images (points)", "RdBu", "{:+.1f}"),
        (flips, f"decision flips vs {reference} under the same perturbation (%)", "Reds", "{:.1f}"),
    )
    for ax, (grid, title, cmap, text) in zip(axes, panels, strict=True):
        finite = grid[np.isfinite(grid)]
        if cmap == "RdBu":
            span = float(np.abs(finite).max()) if finite.size else 1.0
            limits = {"vmin": -max(span, 1e-9), "vmax": max(span, 1e-9)}
        else:
            limits = {"vmin": 0.0, "vmax": max(float(finite.max()) if finite.size else 1.0, 1e-9)}
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", **limits)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for (i, j), v in np.ndenumerate(grid):
            # black on light cells, white on dark ones (black on dark red was unreadable)
            ink = _ink(image.cmap(image.norm(v))) if np.isfinite(v) else "black"
            label = "—" if not np.isfinite(v) else text.format(v)
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color=ink)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, out_dir, "robustness")


def _ink(rgba: Any) -> str:
    """Text colour readable on ``rgba``: by its relative luminance (WCAG), white below 0.179 (where white and
    black have the same contrast on it), black above."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.179 else "black"


def draw_plots(result: RunResult, out_dir: Path, policy: Policy | None = None) -> dict[str, PlotOutcome]:
    """All report plots into ``out_dir/plots``; each either drawn or with the reason it was not. The
    robustness heatmap is there only for runs with --perturb, the service plot only with --with-service."""
    plots = {
        "latency": latency_distribution(result, out_dir, policy),
        "accuracy_latency": accuracy_vs_latency(result, out_dir, policy),
        "size_latency": size_vs_latency(result, out_dir, policy),
    }
    if result.service:
        plots["service_rate"] = service_latency_vs_rate(result, out_dir, policy)
    if result.config.get("perturbations"):
        plots["robustness"] = robustness_heatmap(result, out_dir)
    return plots


def planned_plots(result: RunResult) -> dict[str, PlotOutcome]:
    """What :func:`draw_plots` would produce, without drawing (to render the Markdown alone)."""
    have = {
        "latency": (bool(_latency_cells(result)), "no_samples"),
        "accuracy_latency": (bool(_accuracy_points(result)), "no_accuracy"),
        "size_latency": (bool(_size_cells(result)), "no_samples"),
    }
    if result.service:
        have["service_rate"] = (bool(_service_steps(result)), "no_service_steps")
    if result.config.get("perturbations"):
        have["robustness"] = (bool(_robustness_grid(result)[0]), "no_perturbations")
    return {
        name: PlotOutcome(name, f"{PLOTS_DIR}/{name}.png", None) if ok else PlotOutcome(name, None, why)
        for name, (ok, why) in have.items()
    }

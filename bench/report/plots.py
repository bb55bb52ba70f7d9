"""Report plots (matplotlib, Agg, no pyplot global state). Plot text stays English: default fonts lack Thai."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.analysis import ok_cells, pareto_front
from bench.results import RunResult

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
    fig.savefig(folder / f"{name}.png", metadata={"Software": None})
    return PlotOutcome(name, f"{PLOTS_DIR}/{name}.png")


def _horizontal() -> dict[str, Any]:
    """boxplot's horizontal switch: ``orientation`` since Matplotlib 3.10, ``vert`` before (deprecated after)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _label(cell: Any) -> str:
    return f"{cell.variant}/{cell.provider}/b{cell.batch_size}"


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


def _log_x_if_wide(ax: Any, values: list[float]) -> None:
    """A log x axis when the values span more than 30×."""
    if min(values) > 0 and max(values) / min(values) > 30:
        ax.set_xscale("log")


def _labelled_scatter(ax: Any, i: int, label: str, points: list[tuple[float, float, str]]) -> None:
    """One group of (x, y, name) points with the i-th marker, each point annotated with its name."""
    ax.scatter(
        [x for x, _, _ in points], [y for _, y, _ in points], marker=_MARKERS[i % len(_MARKERS)], label=label, zorder=3
    )
    for x, y, name in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def latency_distribution(result: RunResult, out_dir: Path) -> PlotOutcome:
    """Box plot of the raw per-call latencies of every measured cell."""
    cells = _latency_cells(result)
    if not cells:
        return PlotOutcome("latency", None, "no_samples")
    fig = _figure(8.0, 1.2 + 0.38 * len(cells))
    ax = fig.add_subplot()
    ax.boxplot([c.samples_ms for c in cells], showfliers=True, flierprops={"markersize": 2}, **_horizontal())
    ax.set_yticks(range(1, len(cells) + 1), [_label(c) for c in cells])
    ax.invert_yaxis()
    _log_x_if_wide(ax, [min(c.samples_ms) for c in cells] + [max(c.samples_ms) for c in cells])
    ax.set_xlabel("latency per call (ms)")
    ax.set_title("Latency distribution per cell (raw samples)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_dir, "latency")


def accuracy_vs_latency(result: RunResult, out_dir: Path) -> PlotOutcome:
    """Accuracy against p95 latency per measured cell, with the Pareto front."""
    points = _accuracy_points(result)
    if not points:
        return PlotOutcome("accuracy_latency", None, "no_accuracy")
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    providers = sorted({c.provider for c, _, _ in points})
    for i, provider in enumerate(providers):
        mine = [(p, a, f"{c.variant} b{c.batch_size}") for c, p, a in points if c.provider == provider]
        _labelled_scatter(ax, i, provider, mine)
    front = pareto_front(result)
    if front:
        xs = [(c.latency_ms or {})["p95"] for c in front]
        ys = [(result.accuracy_of(c.variant, c.provider) or {})["accuracy"] * 100.0 for c in front]
        ax.step(xs, ys, where="post", color="tab:red", alpha=0.6, label="Pareto front", zorder=2)
    _log_x_if_wide(ax, [p for _, p, _ in points])
    ax.set_xlabel("p95 latency per call (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs p95 latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "accuracy_latency")


def size_vs_latency(result: RunResult, out_dir: Path) -> PlotOutcome:
    """Model file size against p50 latency per measured cell."""
    cells = _size_cells(result)
    if not cells:
        return PlotOutcome("size_latency", None, "no_samples")
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    groups = sorted({(c.provider, c.batch_size) for c in cells})
    for i, (provider, batch) in enumerate(groups):
        mine = [
            (c.model.size_mb, (c.latency_ms or {})["p50"], c.variant)
            for c in cells
            if (c.provider, c.batch_size) == (provider, batch)
        ]
        _labelled_scatter(ax, i, f"{provider} b{batch}", mine)
    ax.set_xlabel("model file size (MB)")
    ax.set_ylabel("p50 latency per call (ms)")
    ax.set_title("Model size vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "size_latency")


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
            ax.text(j, i, "—" if not np.isfinite(v) else text.format(v), ha="center", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, out_dir, "robustness")


def draw_plots(result: RunResult, out_dir: Path) -> dict[str, PlotOutcome]:
    """All report plots into ``out_dir/plots``; each either drawn or with the reason it was not. The
    robustness heatmap is there only for runs with --perturb."""
    plots = {
        "latency": latency_distribution(result, out_dir),
        "accuracy_latency": accuracy_vs_latency(result, out_dir),
        "size_latency": size_vs_latency(result, out_dir),
    }
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
    if result.config.get("perturbations"):
        have["robustness"] = (bool(_robustness_grid(result)[0]), "no_perturbations")
    return {
        name: PlotOutcome(name, f"{PLOTS_DIR}/{name}.png", None) if ok else PlotOutcome(name, None, why)
        for name, (ok, why) in have.items()
    }

"""Plots a person can read (#29 item 16): a single-batch accuracy plot's title inside the figure, a flip-rate
axis that stops at 0 %, heatmap numbers readable on their cell, service steps joined left to right.

Real figures from the committed example's results (reshaped per case), drawn by bench.report.plots and
inspected through the figure matplotlib rendered (text extents, axis limits, text colours); the PNGs are
written too (``BENCH_KEEP_PLOTS=DIR`` keeps them to look at).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.report import plots
from bench.results import RunResult, validate_results

EXAMPLE = Path(__file__).resolve().parent.parent / "reports" / "example" / "results.json"


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Every figure plots._save writes, by name (the PNG is still written)."""
    figures: dict[str, Any] = {}
    save = plots._save

    def keep(fig: Any, out_dir: Path, name: str) -> Any:
        figures[name] = fig
        if os.environ.get("BENCH_KEEP_PLOTS"):
            save(fig, Path(os.environ["BENCH_KEEP_PLOTS"]), name)
        return save(fig, out_dir, name)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _example(change: Any) -> RunResult:
    data = json.loads(EXAMPLE.read_text())
    change(data)
    return validate_results(data)


def _tie_single_batch(data: dict[str, Any]) -> None:
    """Batch 1 only; every variant with the reference's accuracy and 0 flips (the flip-rate plot)."""
    data["cells"] = [c for c in data["cells"] if c["batch_size"] == 1]
    for cell in data["cells"]:
        acc = cell.get("accuracy")
        if acc:
            acc["accuracy"] = 0.9
            acc.setdefault("agreement", {})["flip_rate"] = 0.0


def test_single_batch_title_fits_and_flip_axis_stops_at_zero(drawn: dict[str, Any], tmp_path: Path) -> None:
    result = _example(_tie_single_batch)
    assert plots.accuracy_vs_latency(result, tmp_path).file is not None
    fig = drawn["accuracy_latency"]
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    box, frame = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1, (box, frame)  # not cut at either edge
    ax = fig.axes[0]
    assert ax.get_ylim()[0] >= 0.0  # no −0.2 % flip rate
    assert (tmp_path / "plots" / "accuracy_latency.png").stat().st_size > 0


def _perturbed(data: dict[str, Any]) -> None:
    """Perturbation figures from 0 to a large flip rate, so the heatmap has light and dark cells."""
    names = ["jpeg_q50", "blur_1", "noise_5"]
    data["config"]["perturbations"] = names
    rng = np.random.default_rng(0)
    for cell in data["cells"]:
        acc = cell.get("accuracy")
        if acc and cell["status"] == "ok":
            acc["perturbations"] = [
                {
                    "perturbation": n,
                    "vs_clean": {"delta_roc_auc": float(rng.uniform(-0.3, 0.3))},
                    "agreement": {"flip_rate": float(rng.choice([0.0, 0.05, 0.6]))},
                }
                for n in names
            ]


def test_heatmap_text_is_readable_on_its_cell(drawn: dict[str, Any], tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    result = _example(_perturbed)
    assert plots.robustness_heatmap(result, tmp_path).file is not None
    fig = drawn["robustness"]
    checked = dark = 0
    for ax in fig.axes:
        images = ax.get_images()
        if not images:
            continue  # a colour bar
        image = images[0]
        grid = image.get_array()
        for text in ax.texts:
            j, i = (round(v) for v in text.get_position())
            if np.ma.is_masked(grid[i, j]):
                continue
            background = image.cmap(image.norm(grid[i, j]))
            ink = to_rgba(text.get_color())
            assert _contrast(background, ink) >= 4.5, (text.get_text(), background, ink)
            checked += 1
            dark += _luminance(background) < 0.179
    assert checked and dark  # dark cells were there, and their numbers are readable


def _luminance(rgba: Any) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: Any, b: Any) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _stepped(data: dict[str, Any]) -> None:
    """Find-max steps in probe order (a bisection: up, down, up), one rate re-tested."""
    entry = data["service"][0]
    rule = entry["max_rate"]
    rule["steps"] = [
        {"rate": r, "p99_ms": p, "p99_ci_ms": [p * 0.9, p * 1.1], "passed": p < 50.0}
        for r, p in ((100.0, 12.0), (400.0, 90.0), (200.0, 20.0), (300.0, 45.0), (250.0, 30.0), (300.0, 60.0))
    ]
    data["service"] = [entry]


def test_service_steps_are_joined_by_rate(drawn: dict[str, Any], tmp_path: Path) -> None:
    result = _example(_stepped)
    assert plots.service_latency_vs_rate(result, tmp_path).file is not None
    lines = [line for line in drawn["service_rate"].axes[0].get_lines() if len(line.get_xdata()) > 2]
    xs = list(lines[0].get_xdata())
    assert xs == sorted(xs) and len(xs) == len(set(xs)) == 5  # left to right; the re-tested rate once


def test_the_copy_is_not_the_example(tmp_path: Path) -> None:
    """The cases above reshape a copy: the committed file stays a valid, untouched results file."""
    before = EXAMPLE.read_text()
    _example(lambda d: copy.deepcopy(d))
    assert EXAMPLE.read_text() == before

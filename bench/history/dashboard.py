"""``bench history report``: one self-contained HTML page (data inline, plots drawn as SVG by inline script, no
network asset) in English and Thai with filters, and a PNG per series (matplotlib, imported when drawn).

Each trend shows every run's figure, its 95 % interval as a band where the run has one, and the change
points as vertical marks labelled with the ratio and the commit range the change came in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.history.detect import SeriesKey, series_dict, series_label
from bench.history.store import StoredPoint

# The page's strings (the release report's catalogue is bench.report's, a layer above): en and th, same keys.
STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "bench history — trends and change points",
        "intro": "Every stored run's figure per series; the band is the run's 95 % interval where it has one; "
        "vertical marks are change points (E-divisive, permutation test), labelled with the ratio after/before and "
        "the commit range the change came in.",
        "source": "Source",
        "generated": "Generated",
        "runs": "runs",
        "series": "series",
        "changes": "change points",
        "regressions": "regressions",
        "variant": "Variant",
        "provider": "Provider",
        "metric": "Metric",
        "machine": "Machine",
        "all": "all",
        "only_changes": "only series with a change",
        "language": "Language",
        "shown": "shown",
        "none": "No series matches the filters.",
        "regression": "regression",
        "improvement": "improvement",
        "shift": "shift within tolerance",
        "inconclusive": "inconclusive",
        "run": "run",
        "commits": "commits",
        "first": "first run",
        "last": "last run",
        "step": "step",
        "creep": "creep over several runs",
    },
    "th": {
        "title": "ประวัติ bench — แนวโน้มและจุดเปลี่ยน",
        "intro": "ค่าของทุกการรันที่เก็บไว้ในแต่ละชุดข้อมูล แถบสีคือช่วงความเชื่อมั่น 95 % ของการรันนั้น (ถ้ามี) "
        "เส้นแนวตั้งคือจุดเปลี่ยน (E-divisive ทดสอบด้วยการสับเปลี่ยน) พร้อมอัตราส่วนหลัง/ก่อน "
        "และช่วงคอมมิตที่การเปลี่ยนแปลงเข้ามา",
        "source": "แหล่งข้อมูล",
        "generated": "สร้างเมื่อ",
        "runs": "การรัน",
        "series": "ชุดข้อมูล",
        "changes": "จุดเปลี่ยน",
        "regressions": "การถดถอย",
        "variant": "รุ่นโมเดล",
        "provider": "ผู้ให้บริการประมวลผล",
        "metric": "ตัวชี้วัด",
        "machine": "เครื่อง",
        "all": "ทั้งหมด",
        "only_changes": "เฉพาะชุดที่มีจุดเปลี่ยน",
        "language": "ภาษา",
        "shown": "แสดง",
        "none": "ไม่มีชุดข้อมูลที่ตรงกับตัวกรอง",
        "regression": "ถดถอย",
        "improvement": "ดีขึ้น",
        "shift": "เปลี่ยนภายในเกณฑ์ที่ยอมรับ",
        "inconclusive": "ยังสรุปไม่ได้",
        "run": "การรัน",
        "commits": "คอมมิต",
        "first": "การรันแรก",
        "last": "การรันล่าสุด",
        "step": "เปลี่ยนครั้งเดียว",
        "creep": "ค่อย ๆ เปลี่ยนในหลายการรัน",
    },
}
_COLOURS = {"regression": "#c62828", "improvement": "#2e7d32", "shift": "#6d6d6d", "inconclusive": "#ef6c00"}


def _r(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.5g}")


def dashboard_data(
    grouped: Mapping[SeriesKey, Sequence[StoredPoint]], report: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """The page's data: the runs once, each series as run indices and figures (5 significant digits)."""
    runs: dict[str, tuple[str, str | None]] = {}
    for pts in grouped.values():
        for p in pts:
            runs.setdefault(p.run_id, (p.created, p.commit))
    order = sorted(runs, key=lambda r: (runs[r][0], r))
    where = {r: i for i, r in enumerate(order)}
    changes: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in report.get("change_points", []):
        s = c["series"]
        key = (s["machine_class"], s["variant"], s["provider"], s["batch_size"], s["perturbation"], s["metric"])
        changes.setdefault(key, []).append(c)
    series: list[dict[str, Any]] = []
    for key, pts in grouped.items():
        cps = changes.get(key, [])
        series.append(
            {
                "key": series_dict(key),
                "label": series_label(key),
                "unit": pts[0].unit or "",
                "x": [where[p.run_id] for p in pts],
                "v": [_r(p.value) for p in pts],
                "lo": [_r(p.ci_low) for p in pts],
                "hi": [_r(p.ci_high) for p in pts],
                "changes": [
                    {
                        "i": c["index"],
                        "ratio": _r(c["ratio"]),
                        "ci": [_r(v) for v in c["ci"]],
                        "verdict": c["verdict"],
                        "kind": c["kind"],
                        "p": c["p_value"],
                        "range": [(x or "?")[:10] for x in c["commit_range"]],
                        "run": c["run_id"],
                    }
                    for c in cps
                ],
            }
        )
    series.sort(
        key=lambda s: (-sum(c["verdict"] == "regression" for c in s["changes"]), -len(s["changes"]), s["label"])
    )
    return {
        "runs": [[r, runs[r][0], (runs[r][1] or "")[:10]] for r in order],
        "series": series,
        "source": source,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "regressions": report.get("regressions", 0),
        "colours": _COLOURS,
    }


def render_html(data: Mapping[str, Any]) -> str:
    """The page: the data as inline JSON, the strings of both languages, the drawing script; nothing fetched."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    strings = json.dumps(STRINGS, ensure_ascii=False).replace("</", "<\\/")
    page = _PAGE.read_text(encoding="utf-8")
    return page.replace("__DATA__", blob).replace("__STRINGS__", strings).replace("__TITLE__", STRINGS["en"]["title"])


def write_dashboard(
    grouped: Mapping[SeriesKey, Sequence[StoredPoint]],
    report: Mapping[str, Any],
    out: Path,
    source: str = "",
    png: bool = True,
) -> tuple[Path, list[Path]]:
    """index.html (and plots/*.png unless ``png`` is False) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = dashboard_data(grouped, report, source)
    page = out / "index.html"
    page.write_text(render_html(data), encoding="utf-8")
    return page, (write_pngs(data, out / "plots") if png else [])


def write_pngs(data: Mapping[str, Any], folder: Path) -> list[Path]:
    """A PNG per series: the trend, its interval band, the change points with their commit range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    runs = data["runs"]
    written = []
    fig, ax = plt.subplots(figsize=(9, 3), dpi=100)
    for s in data["series"]:
        ax.clear()
        xs = list(range(len(s["v"])))
        band = [
            (x, lo, hi) for x, lo, hi in zip(xs, s["lo"], s["hi"], strict=True) if lo is not None and hi is not None
        ]
        if band:
            ax.fill_between(
                [b[0] for b in band],
                [b[1] for b in band],
                [b[2] for b in band],
                color="#90caf9",
                alpha=0.5,
                lw=0,
                label="95 % interval",
            )
        ax.plot(xs, s["v"], color="#1565c0", lw=1.2, marker="." if len(xs) <= 120 else None, label=s["key"]["metric"])
        for c in s["changes"]:
            colour = data["colours"].get(c["verdict"], "#6d6d6d")
            ax.axvline(c["i"] - 0.5, color=colour, ls="--", lw=1.2)
            ratio = f"×{c['ratio']:.3f}" if c["ratio"] is not None else "×?"
            ax.annotate(
                f"{ratio} {c['verdict']}\n{c['range'][0]}…{c['range'][1]}",
                (c["i"] - 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=7,
                color=colour,
            )
        first, last = runs[s["x"][0]], runs[s["x"][-1]]
        ax.set_title(s["label"], fontsize=9, loc="left")
        ax.set_xlabel(f"run ({first[1][:10]} … {last[1][:10]}, {len(xs)} runs)", fontsize=8)
        ax.set_ylabel(s["unit"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", s["label"]).strip("_") + ".png")
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written


# The page's markup and drawing script, beside this module (package data): placeholders __DATA__,
# __STRINGS__ and __TITLE__ are filled by render_html.
_PAGE = Path(__file__).with_name("dashboard.html")

__all__ = ["STRINGS", "dashboard_data", "render_html", "write_dashboard", "write_pngs"]

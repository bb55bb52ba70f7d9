"""Plain-text lines of a profile for the console (``bench profile`` without ``--json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _gf(value: float | None) -> str:
    return f"{value:,.1f} GFLOP/s" if value is not None else "—"


def profile_lines(data: Mapping[str, Any], top: int = 8) -> list[str]:
    lines = [
        f"{data['model']} · {data['provider']} · batch {data['batch_size']} · {data['runs']} profiled calls",
        f"bare call p50 {data['timed_p50_ms']:.4g} ms (profiled {data['profiled_p50_ms']:.4g} ms: the profiler's "
        f"own cost {data['profiler_overhead_ms']:+.3g} ms)",
        f"FLOPs per call {data['total_flops']:,} · achieved {_gf(data['achieved_gflops'])} · machine peak "
        f"{_gf(data['peak_gflops'])}"
        + (f" · {data['fraction_of_peak']:.0%} of peak" if data.get("fraction_of_peak") is not None else ""),
        f"{'op type':<24}{'calls':>7}{'ms/call':>10}{'share':>8}{'GFLOP/s':>10}",
    ]
    for row in data["op_types"][:top]:
        gf = f"{row['gflops']:,.1f}" if row.get("gflops") is not None else "—"
        lines.append(f"{row['op_type']:<24}{row['calls']:>7}{row['ms']:>10.4f}{row['share']:>8.1%}{gf:>10}")
    if data.get("not_counted"):
        lines.append("not counted in FLOPs (no formula, not guessed): " + ", ".join(data["not_counted"]))
    if data.get("unresolved"):
        lines.append("counted ops whose shapes were unknown (FLOPs a lower bound): " + ", ".join(data["unresolved"]))
    for key in ("kernels_note", "tensorrt_layers_note"):
        if data.get(key):
            lines.append(str(data[key]))
    return lines

"""What ``bench eval`` and ``bench audit`` print about a detector: operating points, calibration, threshold transfer,
and the shortcut audit's line (the figures come from bench.metrics, bench.evaluate and bench.audit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench.formatting import fmt
from bench.results import CellResult

if TYPE_CHECKING:
    from rich.table import Table


def pct(value: Any, ci: Sequence[float] | None = None, digits: int = 2) -> str:
    """``12.34 % [10.1, 14.9]`` (or "—")."""
    if value is None:
        return "—"
    text = f"{float(value) * 100:.{digits}f} %"
    if ci:
        text += f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"
    return text


def detector_table(cells: Sequence[CellResult], title: str | None = None) -> Table:
    """One row per evaluated cell: TPR at FPR 1 % and 0.1 %, FPR at the threshold, Brier, threshold transfer."""
    from rich.table import Table

    table = Table(title=title)
    for name in ("variant", "provider", "TPR@FPR 1 %", "TPR@FPR 0.1 %", "FPR @ thr", "Brier", "transfer", "flips"):
        table.add_column(name, justify="left" if name in ("variant", "provider") else "right")
    for c in cells:
        a: dict[str, Any] = dict(c.accuracy or {})
        if c.status != "ok" or not a:
            continue
        points = a.get("tpr_at_fpr") or {}
        brier = fmt(a.get("brier"), 4)
        if a.get("brier_ci"):
            brier += f" [{a['brier_ci'][0]:.3f}, {a['brier_ci'][1]:.3f}]"
        table.add_row(
            c.variant,
            c.provider,
            *(pct((points.get(k) or {}).get("tpr"), (points.get(k) or {}).get("tpr_ci"), 1) for k in ("0.01", "0.001")),
            pct(a.get("fpr"), a.get("fpr_ci")),
            brier,
            transfer_text(a.get("threshold_transfer")),
            flips_text(a.get("batch_flips")),
        )
    return table


def transfer_text(transfer: dict[str, Any] | None) -> str:
    """``thr 0.9123 → FPR 1.33 % · TPR 55.3 %`` (or "—")."""
    if not transfer:
        return "—"
    fpr, tpr = pct(transfer.get("fpr"), None, 1), pct(transfer.get("tpr"), None, 1)
    return f"{transfer['threshold']:.4f}: FPR {fpr}, TPR {tpr}"


def flips_text(rows: list[dict[str, Any]] | None) -> str:
    """``b1 0.67 % · b16 0.00 %`` (or "—")."""
    if not rows:
        return "—"
    return " ".join(f"b{r['batch_size']} {pct(r['flip_rate'])}" for r in rows)


def audit_line(audit: Mapping[str, Any]) -> str:
    """One line: the metadata-only classifier's AUC, the verdict, the separating features."""
    from bench.audit import fmt_auc

    if audit.get("metadata_auc") is None:
        why = (audit.get("reasons") or {}).get("metadata_auc", "not measured")
        return f"shortcut audit: metadata_auc — ({why})"
    features = ", ".join(f"{s['feature']} (AUC {s['auc']:.2f})" for s in audit.get("separating") or [])
    return (
        f"shortcut audit: metadata_auc {fmt_auc(audit)} · {audit.get('verdict')} (line {audit.get('shortcut_auc')})"
        + (f" · separating: {features}" if features else "")
    )

"""The report's detector section (issue 27): operating points and calibration per variant, the threshold transfer,
decision flips by batch size, the shortcut audit beside the model's AUC, per-group slices, the preprocessing used
and the reliability diagrams. Strings come from the ``detector`` table of the catalogues (en, th); the figures
from results.json (bench.metrics, bench.evaluate, bench.audit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.formatting import fmt
from bench.report.detector_plots import plot_name
from bench.results import CellResult

TARGETS = ("0.01", "0.001")
MAX_GROUP_ROWS = 30  # slices shown (worst accuracy first); every one is in results.json


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _evaluated(writer: Any) -> list[CellResult]:
    """One cell per (variant, provider) with a labelled evaluation that has the detector figures (results written
    before them have none: no section then), in run order."""
    seen: dict[tuple[str, str], CellResult] = {}
    for cell in writer.r.cells:
        acc = cell.accuracy or {}
        if cell.status == "ok" and acc.get("accuracy") is not None and "brier" in acc:
            seen.setdefault((cell.variant, cell.provider), cell)
    return list(seen.values())


def detector_parts(writer: Any) -> list[str]:
    """The section's Markdown blocks (none for a run without a labelled evaluation and no audit)."""
    cells = _evaluated(writer)
    audit = (writer.r.dataset or {}).get("audit")
    if not cells and not audit:
        return []
    t = writer.t
    parts = [t("detector.heading")]
    if audit:
        parts.append(_audit(writer, audit, cells))
    if cells:
        parts += [_operating_points(writer, cells), _transfer(writer, cells), _flips(writer, cells)]
        parts += [_groups(writer, cells), _preprocessing(writer, cells), _reliability(writer, cells)]
    return [p for p in parts if p]


def _ci_pct(writer: Any, value: Any, ci: Any) -> str:
    return writer.with_interval(writer.pct(value), ci, lambda b: fmt(b * 100.0, 1))


def _operating_points(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    head = [t("detector.col_pair"), t("detector.col_tpr_1"), t("detector.col_tpr_01"), t("detector.col_fpr")]
    head += [t("detector.col_brier"), t("detector.col_ece")]
    rows, missing = [], set()
    for c in cells:
        a: dict[str, Any] = dict(c.accuracy or {})
        points = a.get("tpr_at_fpr") or {}
        shown = []
        for key in TARGETS:
            point = points.get(key)
            if point is None:
                missing.add((a.get("reasons") or {}).get(f"tpr_at_fpr.{key}") or t("common.not_measured"))
                shown.append(t("common.dash"))
            else:
                shown.append(_ci_pct(writer, point.get("tpr"), point.get("tpr_ci")))
                no_ci = (a.get("reasons") or {}).get(f"tpr_at_fpr.{key}.tpr_ci")
                if point.get("tpr_ci") is None and no_ci:
                    missing.add(no_ci)
        rows.append(
            [
                writer.pair(c.variant, c.provider),
                *shown,
                _ci_pct(writer, a.get("fpr"), a.get("fpr_ci")),
                writer.num_ci(a, "brier", 4),
                writer.num_ci(a, "ece", 4),
            ]
        )
    threshold = fmt((cells[0].accuracy or {}).get("threshold"), 2)
    out = [t("detector.points_heading"), t("detector.points_note", threshold=threshold), _table(head, rows)]
    out += [f"- {t('detector.points_missing', why=why)}" for why in sorted(missing)]
    return "\n\n".join(out)


def _transfer(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    rows, why = [], None
    first = None
    for c in cells:
        a: dict[str, Any] = dict(c.accuracy or {})
        tr = a.get("threshold_transfer")
        if not tr:
            why = why or (a.get("reasons") or {}).get("threshold_transfer")
            continue
        first = first or tr
        rows.append(
            [
                writer.pair(c.variant, c.provider),
                fmt(tr["threshold"], 4),
                _ci_pct(writer, tr.get("fpr"), tr.get("fpr_ci")),
                _ci_pct(writer, tr.get("tpr"), tr.get("tpr_ci")),
                f"{tr.get('false_alarms')} / {tr.get('n_real')}",
            ]
        )
    heading = t("detector.transfer_heading")
    if first is None:
        return "\n\n".join([heading, t("detector.transfer_none", why=why or t("common.not_measured"))])
    head = [t("detector.col_pair"), t("detector.col_threshold"), t("detector.col_fpr_at"), t("detector.col_tpr_at")]
    head.append(t("detector.col_alarms"))
    note = t(
        "detector.transfer_note",
        reference=first["reference"],
        target=fmt(first["target_fpr"] * 100.0, 2),
        threshold=fmt(first["threshold"], 4),
    )
    return "\n\n".join([heading, note, _table(head, rows)])


def _flips(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    rows = []
    for c in cells:
        if c.variant == writer.ref:
            continue  # against itself: nothing can flip
        for r in (c.accuracy or {}).get("batch_flips") or []:
            rows.append(
                [
                    writer.pair(c.variant, c.provider),
                    fmt(r["batch_size"]),
                    f"{r['flips']} / {r['n']}",
                    _ci_pct(writer, r["flip_rate"], r.get("flip_rate_ci")),
                ]
            )
    if not rows:
        return ""
    head = [t("detector.col_pair"), t("detector.col_batch"), t("detector.col_flips"), t("detector.col_flip_rate")]
    return "\n\n".join(
        [t("detector.flips_heading"), t("detector.flips_note", reference=writer.ref), _table(head, rows)]
    )


def _audit(writer: Any, audit: dict[str, Any], cells: list[CellResult]) -> str:
    t = writer.t
    heading = t("detector.audit_heading")
    if audit.get("metadata_auc") is None:
        why = (audit.get("reasons") or {}).get("metadata_auc") or t("common.not_measured")
        return "\n\n".join([heading, t("detector.audit_none", why=why)])
    model_auc = "; ".join(
        f"{writer.pair(c.variant, c.provider)} {writer.num_ci(c.accuracy or {}, 'roc_auc')}" for c in cells
    )
    lines = [
        heading,
        t(
            "detector.audit_line",
            auc=writer.num_ci(audit, "metadata_auc"),
            verdict=t(f"detector.verdict_{audit.get('verdict', 'inconclusive').replace(' ', '_')}"),
            line=fmt(audit.get("shortcut_auc"), 2),
            model=model_auc or t("common.dash"),
            n=fmt(audit.get("n")),
        ),
    ]
    separating = audit.get("separating") or []
    if separating:
        head = [
            t("detector.col_feature"),
            t("detector.col_feature_auc"),
            t("detector.col_real"),
            t("detector.col_fake"),
        ]
        rows = [[s["feature"], fmt(s["auc"], 3), str(s["real"]), str(s["fake"])] for s in separating]
        lines.append(_table(head, rows))
    if audit.get("warnings"):
        lines.append(
            t("detector.audit_warning", auc=fmt(audit["metadata_auc"], 3), line=fmt(audit.get("shortcut_auc"), 2))
        )
    return "\n\n".join(lines)


def _groups(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    chosen = next((c for c in cells if c.variant == writer.ref and (c.accuracy or {}).get("group_slices")), None)
    chosen = chosen or next((c for c in cells if (c.accuracy or {}).get("group_slices")), None)
    if chosen is None:
        return ""
    slices = sorted((chosen.accuracy or {}).get("group_slices") or [], key=lambda s: (s["accuracy"], s["group"]))
    head = [t("detector.col_group"), t("detector.col_n"), t("detector.col_fakes"), t("detector.col_accuracy")]
    head += [t("detector.col_group_fpr"), t("detector.col_group_tpr")]
    rows = [
        [
            s["group"],
            fmt(s["n"]),
            fmt(s["n_fake"]),
            _ci_pct(writer, s["accuracy"], s.get("accuracy_ci")),
            writer.pct(s.get("fpr")),
            writer.pct(s.get("tpr")),
        ]
        for s in slices[:MAX_GROUP_ROWS]
    ]
    note = t(
        "detector.groups_note",
        pair=writer.pair(chosen.variant, chosen.provider),
        shown=fmt(len(rows)),
        total=fmt(len(slices)),
    )
    return "\n\n".join([t("detector.groups_heading"), note, _table(head, rows)])


def _preprocessing(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    lines = []
    for c in cells:
        a: dict[str, Any] = dict(c.accuracy or {})
        pre = a.get("preprocessing")
        if not pre:
            continue
        rescale = fmt(pre["rescale_factor"], 6) if pre.get("do_rescale") else t("common.no")
        normalise = f"mean {pre['image_mean']}, std {pre['image_std']}" if pre.get("do_normalize") else t("common.no")
        lines.append(
            "- "
            + t(
                "detector.pre_line",
                pair=writer.pair(c.variant, c.provider),
                height=fmt(pre["height"]),
                width=fmt(pre["width"]),
                resample=pre["resample"],
                rescale=rescale,
                normalise=normalise,
                batch=fmt(a.get("batch_size")),
            )
        )
    if not lines:
        return ""
    return "\n\n".join([t("detector.pre_heading"), "\n".join(lines)])


def _reliability(writer: Any, cells: list[CellResult]) -> str:
    t = writer.t
    images = []
    for variant in dict.fromkeys(c.variant for c in cells):
        outcome = writer.plots.get(plot_name(variant))
        if outcome is not None and outcome.file:
            images.append(f"![{t('detector.reliability_title', variant=variant)}]({outcome.file})")
    if not images:
        return ""
    return "\n\n".join([t("detector.reliability_heading"), t("detector.reliability_note"), *images])


__all__ = ["detector_parts"]

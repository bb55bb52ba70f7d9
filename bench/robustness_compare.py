"""Compare rows for perturbed accuracy (``accuracy.perturbations``), made by bench.compare's own accuracy row.

``bench compare`` / ``bench ab --dataset`` treat each perturbation like the clean accuracy: the delta in points
and an exact McNemar test on the paired per-image predictions, under the same tolerance. The verdict rule is
not repeated here: the caller passes its accuracy-row function, applied to each perturbation's entry, so
clean and perturbed rows can never be judged differently. This module imports nothing from bench.compare,
so bench.compare can import it at its top; in ``_compare_cells``, after the clean accuracy row::

    rows.extend(perturbed_accuracy_rows(b, c, lambda pb, pc: _accuracy_row(pb, pc, tol, dataset_ok, dataset_why, row)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

from bench.results import Accuracy, CellResult

Row = TypeVar("Row")  # bench.compare.CompareRow (a dataclass with ``metric`` and ``why``)


def perturbed_accuracy_rows(
    b: CellResult, c: CellResult, accuracy_row: Callable[[CellResult, CellResult], Row | None]
) -> list[Row]:
    """One ``accuracy@PERTURBATION`` row per perturbation evaluated on either side (the current run's order
    first). ``accuracy_row(baseline, current)`` judges a pair of cells on their ``accuracy``; each pair
    handed to it is the two cells with that perturbation's entry as their accuracy (None on a side that did
    not evaluate it, which the clean rule already reports as not measured there)."""
    ab: dict[str, Any] = dict(b.accuracy or {})
    ac: dict[str, Any] = dict(c.accuracy or {})
    eb = {e["perturbation"]: e for e in ab.get("perturbations") or []}
    ec = {e["perturbation"]: e for e in ac.get("perturbations") or []}
    rows = []
    for name in dict.fromkeys([*ec, *eb]):
        found: Any = accuracy_row(_proxy(b, ab, eb.get(name)), _proxy(c, ac, ec.get(name)))
        if found is None:
            continue
        rows.append(replace(found, metric=f"accuracy@{name}", why=found.why.replace("accuracy not", f"{name} not")))
    return rows


def _proxy(cell: CellResult, acc: dict[str, Any], entry: dict[str, Any] | None) -> CellResult:
    """The cell as if its accuracy were the perturbed entry (positive label and threshold from the clean one)."""
    if entry is None:
        return replace(cell, accuracy=None)
    merged = {"positive_label": acc.get("positive_label"), "threshold": acc.get("threshold"), **entry}
    # an Accuracy with the entry's own keys too (perturbation, vs_clean), which the accuracy row does not read
    return replace(cell, accuracy=cast(Accuracy, merged))


__all__ = ["perturbed_accuracy_rows"]

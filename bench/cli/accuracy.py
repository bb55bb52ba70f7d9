"""``bench eval``: accuracy of one or more variants on a labelled set (its options come from EvalSpec)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from bench.cli.common import (
    finish_cells,
    json_option,
    model_dir_option,
    no_build_option,
    out_option,
    perturb_option,
    provider_option,
)
from bench.cli.options import setting_options
from bench.console import log
from bench.errors import InputError
from bench.evaluate import EvalSpec


@click.command("eval")
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant name, a comma list, or all.")
@provider_option
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set: folder-per-class (real/, fake/ or the model's label names) or a path,label "
    "CSV/JSONL manifest. Default: $BENCH_DATASET, ./datasets/demo, then the bundled demo set.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Any folder of images (recursive, labels ignored): predictions and agreement only.",
)
@click.option(
    "--reference",
    default=None,
    help="Variant to measure agreement against (flip rate, |Δp(fake)|, KL); evaluated too if not listed. "
    "Default: fp32 when several variants including fp32 are evaluated; 'none' turns it off.",
)
@setting_options(EvalSpec, defaults={"threshold": 0.5})
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per inference call."
)
@perturb_option
@click.option(
    "--threshold-at-fpr",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="Threshold transfer: the reference variant's p(fake) cut-off for this FPR on the set, applied to every "
    "variant, with each variant's FPR/TPR at it (quantisation moves scores).",
)
@click.option(
    "--flip-batch-sizes",
    default=None,
    help="Batch sizes at which each variant's decisions are compared with the reference's at the same batch "
    "(dynamic quantisation depends on the batch). Default: 1 and the service's --max-batch (with a reference); "
    "'none' turns it off.",
)
@click.option(
    "--audit/--no-audit",
    default=True,
    show_default=True,
    help="Shortcut audit of the set (bench audit): can file metadata alone tell real from fake?",
)
@click.option(
    "--device-id", type=click.IntRange(min=0), default=0, show_default=True, help="GPU index for cuda/tensorrt."
)
@no_build_option
@json_option("the RunResult")
@out_option()
def eval_(
    model_dir: Path | None,
    variant: str,
    provider: str,
    dataset: Path | None,
    images: Path | None,
    reference: str | None,
    positive_label: str | None,
    threshold: float,
    batch_size: int,
    strict: bool,
    perturb: tuple[str, ...],
    threshold_at_fpr: float,
    flip_batch_sizes: str | None,
    audit: bool,
    device_id: int,
    no_build: bool,
    as_json: bool,
    out: Path | None,
) -> None:
    """Accuracy of one or more variants on a labelled set (+ agreement with a reference variant).

    Metrics (positive class = fake): accuracy, balanced accuracy, precision, recall, F1, ROC AUC, average
    precision, EER, log loss, ECE, Brier, TPR at FPR 1 % and 0.1 %, FPR at the threshold, confusion matrix;
    with a reference, the threshold transfer and the flips at the service's batch sizes. Unreadable images are
    skipped and listed (--strict fails instead). A cell that cannot run (provider unavailable, no fake class) → exit 3.
    """
    from bench.bundle import Bundle, resolve_model_dir
    from bench.cli.detector_view import audit_line, detector_table
    from bench.commands import default_reference, run_eval
    from bench.console import accuracy_table, cell_progress, footnotes, print_table, robustness_table
    from bench.datasets import load_images, load_labelled_set, resolve_dataset
    from bench.options import SessionSpec
    from bench.perturb import parse_perturbations
    from bench.providers import ProviderOptions, parse_providers
    from bench.variants import parse_variants

    if images is not None and dataset is not None:
        raise InputError("--dataset and --images exclude each other; pass one")
    parse_perturbations(perturb)  # a bad --perturb is a usage error before anything loads
    providers = parse_providers(provider)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variant, bundle)
    reference = default_reference(reference, variants)
    flips = _flip_batches(flip_batch_sizes, reference, images is not None)
    if images is not None and reference is None:
        log("note: --images has no labels, so only predictions are reported; add --reference fp32 for agreement")
    lset = load_images(images) if images is not None else load_labelled_set(resolve_dataset(dataset), strict=strict)
    session = SessionSpec(provider_options=ProviderOptions(device_id=device_id))
    with cell_progress(enabled=not as_json) as progress:
        result = run_eval(
            bundle,
            variants,
            providers,
            lset,
            reference=reference,
            positive_label=positive_label,
            threshold=threshold,
            batch_size=batch_size,
            strict=strict,
            allow_build=not no_build,
            session=session,
            log=log,
            progress=progress,
            perturb=perturb,
            threshold_at_fpr=threshold_at_fpr,
            flip_batch_sizes=flips,
            audit=audit and images is None,
        )

    def show() -> None:
        print_table(accuracy_table(result.cells, title=f"bench eval · {bundle.root} · {lset.root} ({lset.kind})"))
        if perturb:
            print_table(robustness_table(result.cells, title="robustness · Δ vs the same variant on clean images"))
        print_table(detector_table(result.cells, title="operating points · calibration · threshold transfer"))
        audit_found = (result.dataset or {}).get("audit")
        if audit_found:
            click.echo(audit_line(audit_found))
        for line in footnotes(result.cells):
            click.echo(line)

    finish_cells(result, out, as_json, show)


def _flip_batches(text: str | None, reference: str | None, unlabelled: bool) -> list[int]:
    """--flip-batch-sizes: default 1 and the service's max batch when there is a reference to compare with."""
    import dataclasses

    from bench.service.config import ServiceConfig

    if text is None:
        if reference is None or unlabelled:
            return []
        max_batch = next(f.default for f in dataclasses.fields(ServiceConfig) if f.name == "max_batch")
        return sorted({1, int(cast(int, max_batch))})
    if text.strip().lower() in ("", "none"):
        return []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise InputError(f"--flip-batch-sizes takes positive integers separated by commas (or none), got {text!r}")
    return sorted({int(p) for p in parts})

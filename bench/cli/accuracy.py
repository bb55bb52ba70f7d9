"""``bench eval``: accuracy of one or more variants on a labelled set (its options come from EvalSpec)."""

from __future__ import annotations

from pathlib import Path

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
    device_id: int,
    no_build: bool,
    as_json: bool,
    out: Path | None,
) -> None:
    """Accuracy of one or more variants on a labelled set (+ agreement with a reference variant).

    Metrics (positive class = fake): accuracy, balanced accuracy, precision, recall, F1, ROC AUC, average
    precision, EER, log loss, ECE, confusion matrix. Unreadable images are skipped and listed (--strict
    fails instead). A cell that cannot run (provider unavailable, no fake class) → exit 3.
    """
    from bench.bundle import Bundle, resolve_model_dir
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
        )

    def show() -> None:
        print_table(accuracy_table(result.cells, title=f"bench eval · {bundle.root} · {lset.root} ({lset.kind})"))
        if perturb:
            print_table(robustness_table(result.cells, title="robustness · Δ vs the same variant on clean images"))
        for line in footnotes(result.cells):
            click.echo(line)

    finish_cells(result, out, as_json, show)

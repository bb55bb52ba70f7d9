"""``bench audit``: can a labelled set's file metadata alone tell real from fake (bench.audit)?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.common import json_option
from bench.console import log


@click.command()
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set: folder-per-class or a path,label[,group][,sha256] CSV/JSONL manifest. Default: "
    "$BENCH_DATASET, ./datasets/demo, then the bundled demo set.",
)
@click.option("--strict", is_flag=True, help="Fail (exit 2) on a manifest file that is missing instead of skipping it.")
@click.option(
    "--fail-on-shortcut",
    is_flag=True,
    help="Exit 1 when the verdict is 'shortcut' (the metadata AUC's whole interval lies above 0.6).",
)
@json_option("the audit")
def audit(dataset: Path | None, strict: bool, fail_on_shortcut: bool, as_json: bool) -> None:
    """Shortcut audit: a metadata-only classifier (format, size, JPEG quality, EXIF …) on a labelled set.

    Trains a random forest on the files' headers (format, width, height, aspect, estimated JPEG quality,
    chroma subsampling, EXIF presence, bytes per pixel; no pixel is decoded) with 5-fold cross-validation,
    and reports metadata_auc with its 95 % interval, the features that separate the classes, and a warning
    (stderr, and `warnings` in JSON) when metadata_auc passes 0.6. Exit 0 · 1 with --fail-on-shortcut and the
    verdict 'shortcut' · 2 bad input.
    """
    from bench.audit import audit_dataset
    from bench.cli.detector_view import audit_line
    from bench.datasets import load_labelled_set, resolve_dataset
    from bench.errors import InputError, VerdictFailed

    labelled = load_labelled_set(resolve_dataset(dataset), strict=strict)
    if not labelled.labelled:
        raise InputError(f"{labelled.root} has no labels; the audit needs real and fake images")
    found = audit_dataset(labelled)
    for warning in found["warnings"]:
        log(f"warning: {warning}")
    if as_json:
        click.echo(json.dumps({"dataset": labelled.fingerprint(), "audit": found}, indent=2))
    else:
        click.echo(f"bench audit · {labelled.root} ({labelled.kind}) · {found['n']} images, {found['n_fake']} fake")
        click.echo(audit_line(found))
        for row in found["separating"]:
            click.echo(f"  {row['feature']}: AUC {row['auc']:.3f} · real {row['real']} · fake {row['fake']}")
        for skipped in found["skipped"]:
            click.echo(f"  skipped {skipped['path']}: {skipped['reason']}")
    if fail_on_shortcut and found["verdict"] == "shortcut":
        raise VerdictFailed(
            f"shortcut: metadata alone separates the classes (metadata_auc {found['metadata_auc']:.3f})"
        )

"""Check variants against fp32: run both on one probe batch and compare logits, probabilities and argmax.

What ``bench variants check`` reports; each variant passes or fails against its recipe's tolerance (or a
``--tolerance`` override). The probe is a seeded random tensor, or real images when ``--images`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.backends import open_engine
from bench.bundle import Bundle
from bench.datasets import image_files
from bench.engine import Engine, ModelLoadError, ProviderUnavailable, first_line, softmax
from bench.errors import CellNotRun, InputError, VerdictFailed
from bench.preprocess import ImageError, load_image, preprocess_batch
from bench.torch_engine import TorchEngine
from bench.variants.build import LogFn, ensure_variant
from bench.variants.names import variant_order
from bench.variants.recipes import RecipeBook, Tolerance, load_recipes


@dataclass
class VariantCheck:
    """One variant against fp32 on the probe batch."""

    variant: str
    file: str | None
    status: str  # ok | unavailable | failed
    reason: str | None = None
    max_abs_dlogit: float | None = None
    max_abs_dprob: float | None = None
    mean_abs_dprob: float | None = None
    agreement: float | None = None
    flips: int | None = None
    tolerance: dict[str, float | None] = field(default_factory=dict)
    within_tolerance: bool | None = None
    why: str | None = None


@dataclass
class CheckReport:
    """``bench variants check``: every variant vs the fp32 reference, and the verdict."""

    model_dir: str
    reference: str
    provider: str
    probe: dict[str, Any]
    variants: list[VariantCheck]

    @property
    def verdict(self) -> str:
        bad = [v for v in self.variants if v.status == "failed" or v.within_tolerance is False]
        return "fail" if bad else "pass"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "reference": self.reference,
            "provider": self.provider,
            "probe": self.probe,
            "variants": [asdict(v) for v in self.variants],
            "verdict": self.verdict,
        }

    def raise_on_failure(self) -> None:
        bad = [v for v in self.variants if v.status == "failed" or v.within_tolerance is False]
        if bad:
            raise VerdictFailed(
                "variants out of tolerance vs fp32: "
                + "; ".join(f"{v.variant}: {v.why or v.reason}" for v in bad)
                + " (loosen with --tolerance NAME=MAX_DPROB or fix the recipe)"
            )


def parse_tolerances(values: Sequence[str]) -> dict[str | None, float]:
    """``--tolerance 0.05`` (every variant) or ``--tolerance q4=0.2,bnb4=0.25`` → max |Δprob| per variant."""
    out: dict[str | None, float] = {}
    for value in values:
        for item in (v.strip() for v in value.split(",") if v.strip()):
            name, _, number = item.rpartition("=")
            try:
                limit = float(number)
            except ValueError:
                raise InputError(
                    f"--tolerance {item!r}: expected MAX_DPROB or VARIANT=MAX_DPROB, e.g. q4=0.2"
                ) from None
            if not limit >= 0:
                raise InputError(f"--tolerance {item!r}: the limit must be ≥ 0")
            out[name.strip() or None] = limit
    return out


def check_variants(
    bundle: Bundle,
    variants: Sequence[str] | None = None,
    provider: str = "cpu",
    probe_size: int = 16,
    seed: int = 0,
    tolerances: dict[str | None, float] | None = None,
    recipes: RecipeBook | None = None,
    allow_build: bool = True,
    log: LogFn | None = None,
    images: Path | None = None,
) -> CheckReport:
    """Run fp32 and each variant on one probe batch; compare logits, probabilities and argmax.

    The probe is a seeded standard-normal tensor in the model's input space, or with ``images`` the
    first ``probe_size`` images of that folder, preprocessed as the model expects.
    """
    if probe_size < 1:
        raise InputError(f"--probe-size must be ≥ 1, got {probe_size}")
    book = recipes or load_recipes(bundle)
    reference_path = bundle.variants.get("fp32")
    if reference_path is None:
        raise InputError(f"no fp32 reference (onnx/model.onnx) in {bundle.root} to check variants against; add it")
    if variants:
        names = [v for v in dict.fromkeys(variants) if v != "fp32"]
        paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in names}
    else:
        names = [v for v in variant_order(list(bundle.variants)) if v != "fp32"]
        paths = {v: bundle.variants[v] for v in names}
    if not names:
        raise InputError(
            f"nothing to check in {bundle.root}: only fp32 is on disk; build variants first "
            f"(bench variants build --model-dir {bundle.root})"
        )
    overrides = tolerances or {}
    try:
        reference = Engine(reference_path, provider)
    except (ProviderUnavailable, ModelLoadError) as exc:
        raise CellNotRun(f"the fp32 reference cannot run on {provider}: {exc}; check on another --provider") from exc
    if images is not None:
        probe, probe_info = _image_probe(bundle, reference, Path(images), probe_size)
    else:
        probe = _probe_batch(reference, probe_size, seed)
        probe_info = {"kind": "seeded standard-normal tensor", "seed": seed}
    ref_logits = _logits(reference, probe)
    ref_prob = softmax(ref_logits)
    rows = []
    for name in names:
        tol = book.tolerance(name)
        limit = overrides.get(name, overrides.get(None))
        if limit is not None:
            tol = Tolerance(max_abs_dprob=limit, max_abs_dlogit=tol.max_abs_dlogit, min_agreement=tol.min_agreement)
        row = VariantCheck(variant=name, file=paths[name].name, status="ok", tolerance=asdict(tol))
        try:
            logits = _logits(open_engine(paths[name], name, provider), probe)
        except (ProviderUnavailable, ModelLoadError) as exc:
            row.status, row.reason = "unavailable", str(exc)
            rows.append(row)
            continue
        except InputError as exc:
            row.status, row.reason = "failed", str(exc)
            rows.append(row)
            continue
        except Exception as exc:  # inference threw: the variant is broken here
            row.status, row.reason = "failed", f"{provider}: inference failed — {first_line(exc)}"
            rows.append(row)
            continue
        if logits.shape != ref_logits.shape:
            row.status = "failed"
            row.reason = f"output shape {list(logits.shape)} differs from fp32's {list(ref_logits.shape)}"
            rows.append(row)
            continue
        prob = softmax(logits)
        dprob = np.abs(prob - ref_prob)
        agree = prob.argmax(axis=-1) == ref_prob.argmax(axis=-1)
        row.max_abs_dlogit = float(np.abs(logits.astype(np.float64) - ref_logits).max())
        row.max_abs_dprob = float(dprob.max())
        row.mean_abs_dprob = float(dprob.mean())
        row.agreement = float(agree.mean())
        row.flips = int((~agree).sum())
        problems = tol.violations(row.max_abs_dlogit, row.max_abs_dprob, row.agreement)
        row.within_tolerance = not problems
        row.why = "; ".join(problems) or None
        rows.append(row)
    return CheckReport(
        model_dir=str(bundle.root),
        reference=reference_path.name,
        provider=provider,
        probe={"n": int(probe.shape[0]), **probe_info, "shape": list(probe.shape)},
        variants=rows,
    )


def _probe_batch(engine: Engine, n: int, seed: int) -> np.ndarray:
    dims = [n] + [d if isinstance(d, int) and d > 0 else 224 for d in engine.input.shape[1:]]
    return np.random.default_rng(seed).standard_normal(dims, dtype=np.float32)


def _image_probe(bundle: Bundle, engine: Engine, folder: Path, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The first ``n`` decodable images under ``folder`` (sorted, recursive), preprocessed for the model."""
    decoded: list[Image.Image] = []
    skipped = 0
    for path in image_files(folder):
        if len(decoded) == n:
            break
        try:
            decoded.append(load_image(path))
        except ImageError:
            skipped += 1
    if not decoded:
        raise InputError(f"--images {folder} holds no readable image to probe with; pass a folder of images")
    batch = preprocess_batch(decoded, bundle.preprocess_config(engine.input.image_hw()))
    return batch, {"kind": "images", "images": str(folder), "skipped": skipped}


def _logits(engine: Engine | TorchEngine, batch: np.ndarray) -> np.ndarray:
    """Logits for the whole probe batch, in chunks the model's (possibly fixed) batch axis accepts."""
    step = engine.input.fixed_batch or batch.shape[0]
    if batch.shape[0] % step:
        raise InputError(
            f"{engine.model_path.name} has its batch fixed to {step}; use a --probe-size that is a multiple of {step}"
        )
    return np.concatenate(
        [np.asarray(engine.run(batch[i : i + step]), dtype=np.float64) for i in range(0, batch.shape[0], step)]
    )

"""Image perturbations for robustness evaluation: applied to the decoded RGB image, before bench's preprocessing.

Deepfakes reach a detector re-encoded, resized and filtered; ``bench eval --perturb SPEC`` measures each
variant under such changes. A perturbation is a ``+``-joined chain of steps, applied left to right, in
memory, deterministically (the noise is seeded per image, so parallel order never changes a result):

- ``jpeg:Q`` — encode with Pillow's JPEG encoder (its bundled libjpeg-turbo), ``quality=Q`` and Pillow's
  defaults otherwise (4:2:0 chroma subsampling, no optimize, baseline), then decode. Q: integer 1–100.
- ``resize:F`` — down by factor F with ``Image.Resampling.BOX`` (the area mean; at F = 1/k exactly the k×k
  block mean, i.e. OpenCV's INTER_LINEAR at 1/2 and ImageNet-C's ``pixelate``), then back up to the
  original size with ``Image.Resampling.BILINEAR``. Sides round half up (at least 1 pixel). 0 < F < 1.
- ``blur:SIGMA`` — exact Gaussian blur (``scipy.ndimage.gaussian_filter``, σ in pixels, kernel cut at 4σ,
  edges replicated), per channel, rounded to 8 bits. 0 < σ ≤ 50.
- ``noise:SIGMA`` — additive Gaussian noise on [0, 1] pixels (x + N(0, σ²), clipped to [0, 1], rounded to
  8 bits), i.i.d. per pixel and channel. 0 < σ ≤ 1. The generator is numpy's PCG64, seeded with
  ``SeedSequence([seed, crc32(step), crc32(image key)])`` (step e.g. ``noise:0.05``, image key: its path).
- ``webp:Q`` — encode with Pillow's WebP encoder (libwebp, lossy), ``quality=Q``, its defaults otherwise
  (``method=4``), then decode. Q: integer 1–100.
- ``reshare:N`` — N rounds of what a social network does to an upload that is shared again and again: each round
  downscales by a factor drawn uniformly from [0.75, 0.95] (sides rounded half up, ``Image.Resampling.LANCZOS``),
  then JPEG-encodes at a quality drawn uniformly from the integers 70–85 (Pillow's encoder, as ``jpeg``) and
  decodes. The draws come from the step's seeded generator (as ``noise``): the same image gets the same rounds.
  The result is smaller than the original; the preprocessing resizes it to the model input as usual. N: 1–10.
- ``screenshot`` (no value) — a screenshot of the image shown on screen: resampled by 1.25 (a 125 % display
  scale, ``Image.Resampling.BICUBIC``), a slight gamma of 1.1 on [0, 1] values (x ** (1 / 1.1), rounded to
  8 bits), saved as PNG (lossless) and decoded.
- ``crop:F`` — centre crop keeping the fraction F of each side (rounded half up, at least 1 pixel,
  offset ⌊(side − kept) / 2⌋; the
  preprocessing then resizes it to the model input as usual). 0 < F < 1.

Tiers (``clean``, the unperturbed image, is always evaluated as well):

- ``standard``: JPEG 95/75/50/30, downscale 0.5/0.25, blur σ 1/2/3, noise σ 0.01/0.05, WebP 75, reshare 3.
- ``extended``: standard, plus the grid of DeeperForensics-1.0 (Jiang et al., CVPR 2020; their
  ``perturbation/add_distortion_to_video.py``, levels 1–5) for the three of its seven types that are
  image operations bench implements (values kept to 4 significant digits): ``GB`` Gaussian blur, kernel
  k = 7/9/13/17/21 with σ = k/6 → ``blur`` 1.167/1.5/2.167/2.833/3.5; ``GNC`` Gaussian noise, variance
  0.001/0.002/0.005/0.01/0.05 → ``noise`` σ = √variance = 0.03162/0.04472/0.07071/0.1/0.2236
  (DeeperForensics adds it in YCbCr, bench in RGB); their ``JPEG`` type, which in that code is
  pixelation (down by 1/k, k = 2…6, then up) → ``resize`` 0.5/0.3333/0.25/0.2/0.1667. Their colour
  saturation, contrast, block-wise and video compression types have no counterpart here. JPEG quality
  levels follow ImageNet-C's ``jpeg_compression`` (Hendrycks & Dietterich, ICLR 2019): 25/18/15/10/7.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

CLEAN = "clean"
DEFAULT_SEED = 0

STANDARD = (
    "jpeg:95",
    "jpeg:75",
    "jpeg:50",
    "jpeg:30",
    "resize:0.5",
    "resize:0.25",
    "blur:1",
    "blur:2",
    "blur:3",
    "noise:0.01",
    "noise:0.05",
    "webp:75",
    "reshare:3",
)
# DeeperForensics-1.0 levels 1–5 (GB, GNC, pixelation) and ImageNet-C JPEG qualities; see the module docstring.
_DEEPERFORENSICS = (
    *(f"blur:{k / 6:.4g}" for k in (7, 9, 13, 17, 21)),
    *(f"noise:{var**0.5:.4g}" for var in (0.001, 0.002, 0.005, 0.01, 0.05)),
    *(f"resize:{1 / k:.4g}" for k in (2, 3, 4, 5, 6)),
)
_IMAGENET_C_JPEG = tuple(f"jpeg:{q}" for q in (25, 18, 15, 10, 7))
EXTENDED = tuple(dict.fromkeys((*STANDARD, *_DEEPERFORENSICS, *_IMAGENET_C_JPEG)))
TIERS = {"standard": STANDARD, "extended": EXTENDED}


@dataclass(frozen=True)
class _Kind:
    """One step type: how its value reads, its valid range (as users see it), and the check."""

    range_text: str
    integer: bool
    valid: Callable[[float], bool]
    takes_value: bool = True


KINDS: dict[str, _Kind] = {
    "jpeg": _Kind("an integer quality 1–100", True, lambda v: 1 <= v <= 100),
    "resize": _Kind("a factor 0 < F < 1 (down by F, then back up)", False, lambda v: 0 < v < 1),
    "blur": _Kind("a Gaussian σ in pixels, 0 < σ ≤ 50", False, lambda v: 0 < v <= 50),
    "noise": _Kind("a Gaussian σ on [0, 1] pixels, 0 < σ ≤ 1", False, lambda v: 0 < v <= 1),
    "crop": _Kind("a kept fraction of each side, 0 < F < 1", False, lambda v: 0 < v < 1),
    "webp": _Kind("an integer quality 1–100", True, lambda v: 1 <= v <= 100),
    "reshare": _Kind("an integer number of rounds 1–10", True, lambda v: 1 <= v <= 10),
    "screenshot": _Kind("no value (write just screenshot)", True, lambda v: v == 0, takes_value=False),
}
RESHARE_SCALE = (0.75, 0.95)  # each round's downscale factor, drawn uniformly
RESHARE_QUALITY = (70, 85)  # each round's JPEG quality, drawn uniformly from these integers (both included)
SCREENSHOT_SCALE = 1.25
SCREENSHOT_GAMMA = 1.1


@dataclass(frozen=True)
class Step:
    """One perturbation step, e.g. ``jpeg:50``."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        if not KINDS[self.kind].takes_value:
            return self.kind
        return f"{self.kind}:{int(self.value) if KINDS[self.kind].integer else f'{self.value:g}'}"

    def apply(self, img: Image.Image, key: str, seed: int) -> Image.Image:
        return _APPLY[self.kind](img, self.value, _rng(seed, self.name, key))


@dataclass(frozen=True)
class Perturbation:
    """A chain of steps applied left to right; no steps is ``clean``."""

    steps: tuple[Step, ...] = ()

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.steps) or CLEAN

    @property
    def is_clean(self) -> bool:
        return not self.steps

    def apply(self, img: Image.Image, key: str = "", seed: int = DEFAULT_SEED) -> Image.Image:
        """The perturbed copy of an RGB image; ``key`` (the image's path) seeds the noise of this image."""
        for step in self.steps:
            img = step.apply(img, key, seed)
        return img


def parse_perturbations(specs: Iterable[str]) -> list[Perturbation]:
    """``--perturb`` values → perturbations, ``clean`` first, duplicates dropped, order kept.

    Each value is a tier (``standard``, ``extended``), ``clean``, a step list of one type
    (``jpeg:90,70,50``), or a combination of single steps (``jpeg:50+resize:0.5``). Anything else is
    an InputError naming the valid form or range.
    """
    out: dict[str, Perturbation] = {CLEAN: Perturbation()}
    for spec in specs:
        for item in _expand(str(spec)):
            out.setdefault(item.name, item)
    return list(out.values())


def perturbation_names(specs: Iterable[str]) -> list[str]:
    """Canonical names of ``parse_perturbations(specs)`` (what results and reports show)."""
    return [p.name for p in parse_perturbations(specs)]


def _expand(spec: str) -> list[Perturbation]:
    text = spec.strip().lower()
    if text in TIERS:
        return [_combination(s) for s in TIERS[text]]
    if text == CLEAN:
        return [Perturbation()]
    if not text:
        raise InputError(f"--perturb is empty; {_FORMS}")
    if "+" in text:
        return [_combination(text)]
    kind, _, values = text.partition(":")
    if values and kind.strip() in KINDS and not KINDS[kind.strip()].takes_value:
        return [_combination(text)]  # "screenshot:1": _step names the form
    return [Perturbation((_step(kind, v, spec),)) for v in values.split(",")] if values else [_combination(text)]


def _combination(text: str) -> Perturbation:
    steps = []
    for part in text.split("+"):
        kind, _, value = part.strip().partition(":")
        if "," in value:
            raise InputError(f"--perturb {text!r}: a combination takes one value per step (e.g. jpeg:50+resize:0.5)")
        steps.append(_step(kind, value, text))
    return Perturbation(tuple(steps))


_FORMS = "use standard, extended, clean, KIND:VALUE[,VALUE...] or KIND:VALUE+KIND:VALUE with KIND one of " + ", ".join(
    KINDS
)


def _step(kind: str, value: str, spec: str) -> Step:
    kind = kind.strip()
    if kind not in KINDS:
        raise InputError(f"--perturb {spec!r}: unknown perturbation {kind!r}; {_FORMS}")
    rule = KINDS[kind]
    value = value.strip()
    if not rule.takes_value:
        if value:
            raise InputError(f"--perturb {spec!r}: {kind} takes {rule.range_text}, got {value}")
        return Step(kind, 0.0)
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or (rule.integer and not number.is_integer()) or not rule.valid(number):
        shown = value or "(missing)"
        raise InputError(f"--perturb {spec!r}: {kind} takes {rule.range_text}, got {shown}")
    return Step(kind, float(int(number)) if rule.integer else number)


def _rng(seed: int, step: str, key: str) -> np.random.Generator:
    words = [seed, zlib.crc32(step.encode()), zlib.crc32(key.encode())]
    return np.random.default_rng(np.random.SeedSequence(words))


# --- the steps (Pillow and scipy imported on use: bench --help stays light) -------------------------


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    """``img`` as Pillow's JPEG encoder writes it at ``quality`` (its defaults otherwise)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: float, _rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg_bytes(img, int(quality)))) as decoded:
        return decoded.convert("RGB")


def webp_bytes(img: Image.Image, quality: int) -> bytes:
    """``img`` as Pillow's (lossy) WebP encoder writes it at ``quality`` (its defaults otherwise)."""
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=int(quality))
    return buf.getvalue()


def _webp(img: Image.Image, quality: float, _rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(webp_bytes(img, int(quality)))) as decoded:
        return decoded.convert("RGB")


def reshare_rounds(rounds: int, rng: np.random.Generator) -> list[tuple[float, int]]:
    """The (downscale factor, JPEG quality) of each round, in the order they are drawn from ``rng``."""
    out = []
    for _ in range(rounds):
        factor = float(rng.uniform(*RESHARE_SCALE))
        quality = int(rng.integers(RESHARE_QUALITY[0], RESHARE_QUALITY[1] + 1))
        out.append((factor, quality))
    return out


def _reshare(img: Image.Image, rounds: float, rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    for factor, quality in reshare_rounds(int(rounds), rng):
        small = img.resize((_side(img.width, factor), _side(img.height, factor)), resample=Image.Resampling.LANCZOS)
        img = _jpeg(small, quality, rng)
    return img


def _screenshot(img: Image.Image, _value: float, _rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    size = (_side(img.width, SCREENSHOT_SCALE), _side(img.height, SCREENSHOT_SCALE))
    shown = img.resize(size, resample=Image.Resampling.BICUBIC)
    table = _to_uint8(255.0 * (np.arange(256) / 255.0) ** (1.0 / SCREENSHOT_GAMMA)).tolist()
    shown = shown.point(table * 3)
    buf = io.BytesIO()
    shown.save(buf, format="PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        return decoded.convert("RGB")


def _resize(img: Image.Image, factor: float, _rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    small = (_side(img.width, factor), _side(img.height, factor))
    down = img.resize(small, resample=Image.Resampling.BOX)
    return down.resize(img.size, resample=Image.Resampling.BILINEAR)


def _blur(img: Image.Image, sigma: float, _rng: np.random.Generator) -> Image.Image:
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    x = np.asarray(img, dtype=np.float64)
    y = gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)
    return Image.fromarray(_to_uint8(y))


def _noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    from PIL import Image

    x = np.asarray(img, dtype=np.float64) / 255.0
    y = np.clip(x + rng.normal(0.0, sigma, size=x.shape), 0.0, 1.0) * 255.0
    return Image.fromarray(_to_uint8(y))


def _crop(img: Image.Image, fraction: float, _rng: np.random.Generator) -> Image.Image:
    w, h = _side(img.width, fraction), _side(img.height, fraction)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def _side(length: int, factor: float) -> int:
    """``length × factor`` rounded half up, at least 1 pixel."""
    return max(1, int(length * factor + 0.5))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_APPLY: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "jpeg": _jpeg,
    "resize": _resize,
    "blur": _blur,
    "noise": _noise,
    "crop": _crop,
    "webp": _webp,
    "reshare": _reshare,
    "screenshot": _screenshot,
}


__all__ = [
    "CLEAN",
    "DEFAULT_SEED",
    "EXTENDED",
    "KINDS",
    "STANDARD",
    "TIERS",
    "Perturbation",
    "Step",
    "jpeg_bytes",
    "parse_perturbations",
    "perturbation_names",
    "reshare_rounds",
    "webp_bytes",
]

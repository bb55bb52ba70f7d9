"""Image bytes → RGB → resized, rescaled, normalised NCHW tensor, per ``preprocessor_config.json``.

The one preprocessing path shared by the runner, the evaluator and the detect service, so they can
never disagree on what a "prediction" is.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images larger than this many pixels (decompression bombs); set explicitly, not inherited.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Formats we accept; anything else (SVG, HTML, random bytes, ...) is "unsupported", not "corrupt".
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class ImageError(ValueError):
    """An image could not be turned into a tensor; ``kind`` tells the service which status to answer."""

    kind = "corrupt"


class UnsupportedImage(ImageError):
    """Not an image format we accept (HTTP 415)."""

    kind = "unsupported"


class CorruptImage(ImageError):
    """An accepted format that does not decode: truncated, zero bytes, broken data (HTTP 400)."""

    kind = "corrupt"


class ImageTooLarge(ImageError):
    """More pixels than MAX_IMAGE_PIXELS: a decompression bomb or an absurd upload (HTTP 413)."""

    kind = "too_large"


@dataclass(frozen=True)
class PreprocessConfig:
    """What ``preprocessor_config.json`` says; defaults are Hugging Face ViTImageProcessor's."""

    height: int = 224
    width: int = 224
    resample: int = 2  # PIL.Image.BILINEAR
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_json(cls, cfg: Mapping[str, Any], fallback_hw: tuple[int, int] | None = None) -> PreprocessConfig:
        """Read the HF processor keys; ``size`` may be {height,width}, {shortest_edge} or an int."""
        size = cfg.get("size")
        if isinstance(size, Mapping) and "height" in size:
            hw = (int(size["height"]), int(size["width"]))
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            hw = (int(size["shortest_edge"]),) * 2
        elif isinstance(size, int):
            hw = (size, size)
        else:
            hw = fallback_hw or (cls.height, cls.width)
        mean = cfg.get("image_mean", cls.image_mean)
        std = cfg.get("image_std", cls.image_std)
        if isinstance(mean, (int, float)):
            mean = [mean] * 3
        if isinstance(std, (int, float)):
            std = [std] * 3
        return cls(
            height=hw[0],
            width=hw[1],
            resample=int(cfg.get("resample", cls.resample)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", cls.rescale_factor)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            image_mean=tuple(float(m) for m in mean),
            image_std=tuple(float(s) for s in std),
        )


def sniff_format(data: bytes) -> str | None:
    """Image format from magic bytes, before any decoding; None when it is no format we accept."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes) -> Image.Image:
    """Decode bytes to an RGB image: first frame, EXIF orientation applied, any mode converted to RGB."""
    if not data:
        raise CorruptImage("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage("not an image type we accept (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ACCEPTED_FORMATS:
                raise UnsupportedImage(f"image type {img.format} is not accepted")
            if img.width * img.height > MAX_IMAGE_PIXELS:  # Pillow itself only warns up to 2x its limit
                raise ImageTooLarge(
                    f"image too large: {img.width}x{img.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS:,}"
                )
            img.seek(0)
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img) or img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"{fmt} image does not decode: {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: palette, greyscale, RGBA (on black), CMYK, 16-bit and 32-bit integer."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read and decode one image file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptImage(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_image(data)


def to_tensor(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """One RGB image → float32 CHW, resized with the configured resample, rescaled and normalised."""
    if img.size != (cfg.width, cfg.height):
        img = img.resize((cfg.width, cfg.height), resample=Image.Resampling(cfg.resample))
    x = np.asarray(img, dtype=np.float32)
    if cfg.do_rescale:
        x = x * np.float32(cfg.rescale_factor)
    if cfg.do_normalize:
        x = (x - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: Iterable[Image.Image], cfg: PreprocessConfig) -> np.ndarray:
    """Decoded images → float32 NCHW batch."""
    return np.stack([to_tensor(img, cfg) for img in images])

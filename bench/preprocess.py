"""Image bytes → RGB → resized, rescaled, normalised NCHW tensor, per ``preprocessor_config.json``.

The one preprocessing path shared by the runner, the evaluator and the detect service, so they can
never disagree on what a "prediction" is.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images larger than this many pixels (decompression bombs); set explicitly, not inherited.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# A reduced decode keeps this many times the model's input size, so the final resize stays as fair as a full
# one (Pillow's docs for ``reducing_gap``: from 3.0 on, "indistinguishable from fair resampling").
REDUCING_GAP = 3.0

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
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # one per channel (as the JSON gives them)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_json(cls, cfg: Mapping[str, Any], fallback_hw: tuple[int, int] | None = None) -> PreprocessConfig:
        """Read the HF processor keys; ``size`` may be {height,width}, {shortest_edge} or an int. A value of the
        wrong type or range (``"image_mean": "half"``) is a :class:`ConfigFieldError` naming the field."""
        size = cfg.get("size")
        if isinstance(size, Mapping) and "height" in size:
            hw = (_positive_int(size.get("height"), "size.height"), _positive_int(size.get("width"), "size.width"))
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            hw = (_positive_int(size["shortest_edge"], "size.shortest_edge"),) * 2
        elif size is not None and not isinstance(size, Mapping):
            hw = (_positive_int(size, "size"),) * 2
        else:
            hw = fallback_hw or (cls.height, cls.width)
        resample = cfg.get("resample", cls.resample)
        if isinstance(resample, bool) or not isinstance(resample, int) or resample not in range(6):
            raise ConfigFieldError("resample", resample, "a Pillow resampling filter 0–5 (2 = bilinear)")
        rescale = cfg.get("rescale_factor", cls.rescale_factor)
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not rescale > 0:
            raise ConfigFieldError("rescale_factor", rescale, "a positive number (1/255 for 8-bit pixels)")
        return cls(
            height=hw[0],
            width=hw[1],
            resample=resample,
            do_rescale=_flag(cfg.get("do_rescale", True), "do_rescale"),
            rescale_factor=float(rescale),
            do_normalize=_flag(cfg.get("do_normalize", True), "do_normalize"),
            image_mean=_per_channel(cfg.get("image_mean", cls.image_mean), "image_mean", positive=False),
            image_std=_per_channel(cfg.get("image_std", cls.image_std), "image_std", positive=True),
        )

    def describe(self) -> dict[str, Any]:
        """What the results record as the preprocessing actually used (``accuracy.preprocessing``)."""
        try:
            resample = Image.Resampling(self.resample).name.lower()
        except ValueError:
            resample = str(self.resample)
        return {
            "height": self.height,
            "width": self.width,
            "resample": resample,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }


class ConfigFieldError(ValueError):
    """A ``preprocessor_config.json`` field of the wrong type or range; the caller names the file (an input error)."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"field {field!r} must be {expected}, got {value!r}")
        self.field = field


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigFieldError(name, value, "a positive integer number of pixels")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigFieldError(name, value, "true or false")
    return value


def _per_channel(value: Any, name: str, positive: bool) -> tuple[float, ...]:
    """One number for every channel, or a list of 1 or 3 numbers (std: each above 0)."""
    values = [value] * 3 if _number(value) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) not in (1, 3)
        or not all(_number(v) and (v > 0 or not positive) for v in values)
    ):
        expected = "a positive number or a list of 3" if positive else "a number or a list of 3 numbers"
        raise ConfigFieldError(name, value, expected + " (one per RGB channel)")
    return tuple(float(v) for v in (values * 3 if len(values) == 1 else values))


def sniff_format(data: bytes) -> str | None:
    """Image format from magic bytes, before any decoding; None when it is no format we accept."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass(frozen=True)
class DecodePlan:
    """What an upload's header says, before any pixel is decoded: format, stored size, size it decodes at."""

    format: str
    size: tuple[int, int]
    decode_size: tuple[int, int]

    @property
    def decode_pixels(self) -> int:
        return self.decode_size[0] * self.decode_size[1]


def plan_decode(data: bytes, fit: tuple[int, int] | None = None, max_pixels: int | None = None) -> DecodePlan:
    """Header-only check of an upload (cheap: nothing is decoded), so a budget can refuse it before decoding.

    ``fit`` (height, width) lets a JPEG decode at a reduced scale (``Image.draft``); ``max_pixels`` caps the
    pixels it would decode at (ImageTooLarge). Too little data for the claimed size is a CorruptImage.
    """
    with _open(data, fit, max_pixels) as (_, plan):
        return plan


def decode_image(data: bytes, *, fit: tuple[int, int] | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode bytes to an RGB image: first frame, EXIF orientation applied, any mode converted to RGB.

    Without ``fit`` the image is decoded in full (``bench eval``). With ``fit`` = the model's (height, width),
    it is decoded no larger than needed: a JPEG at a reduced DCT scale (``Image.draft``), any other format
    reduced by an integer factor (``Image.reduce``), both keeping ``REDUCING_GAP`` times the model's size so
    the final resize is as fair as a full one. ``max_pixels`` caps the pixels actually decoded.
    """
    with _open(data, fit, max_pixels) as (img, _):  # decoding errors raised here become CorruptImage there
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        rgb = img if img.mode == "RGB" else _to_rgb(img)
        if fit is not None:
            rgb = _reduce(rgb, fit)
        return rgb if rgb is not img else img.copy()  # the file's own image dies with it


@contextlib.contextmanager
def _open(data: bytes, fit: tuple[int, int] | None, max_pixels: int | None) -> Iterator[tuple[Any, DecodePlan]]:
    """The opened (not yet decoded) first frame and its plan, after every check that needs no decoding."""
    if not data:
        raise CorruptImage("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage("not an image type we accept (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ACCEPTED_FORMATS:
                raise UnsupportedImage(f"image type {img.format} is not accepted")
            size = img.size
            if size[0] * size[1] > MAX_IMAGE_PIXELS:  # Pillow itself only warns up to 2x its limit
                raise ImageTooLarge(
                    f"image too large: {size[0]}x{size[1]} pixels exceeds the limit of {MAX_IMAGE_PIXELS:,}"
                )
            img.seek(0)
            if fit is not None and img.format in ("JPEG", "MPO"):
                side = int(max(fit) * REDUCING_GAP)
                img.draft(None, (side, side))
            plan = DecodePlan(fmt, size, img.size)
            if max_pixels is not None and plan.decode_pixels > max_pixels:
                scale = "" if plan.decode_size == size else f" (decoded at {plan.decode_size[0]}x{plan.decode_size[1]})"
                raise ImageTooLarge(
                    f"image too large: {size[0]}x{size[1]} pixels{scale} exceeds the decode limit of "
                    f"{max_pixels:,} pixels (--max-pixels)"
                )
            _check_data_covers(fmt, data, size)
            yield img, plan
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"{fmt} image does not decode: {_public(exc)}") from exc


# Frame markers of Huffman-coded, non-hierarchical JPEG (baseline, extended, progressive, lossless). Every 8x8
# block of the full-resolution component costs at least one bit (its DC code), whatever the content.
_JPEG_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3})
_JPEG_ANY_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_DEFLATE_MAX_RATIO = 1032  # deflate's best case: a 258-byte match in 2 bits
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _check_data_covers(fmt: str, data: bytes, size: tuple[int, int]) -> None:
    """CorruptImage when the file is too short to hold the pixels its header claims.

    libjpeg (for JPEG) and Pillow (for PNG) fill in missing data silently when the stream ends early but
    well-formed; a few bytes claiming 8000x8000 would then decode, costly, to grey. The bound is the
    codec's best case, so no real file is refused.
    """
    width, height = size
    if fmt == "JPEG" and _jpeg_frame_marker(data) in _JPEG_HUFFMAN_FRAMES:
        need = -(-width // 8) * -(-height // 8) // 8
    elif fmt == "PNG" and len(data) >= 29:
        depth, colour = data[24], data[25]
        need = width * height * _PNG_CHANNELS.get(colour, 1) * depth // 8 // _DEFLATE_MAX_RATIO
    else:
        return
    if len(data) < need:
        raise CorruptImage(
            f"{fmt} data ends early: its header claims {width}x{height} pixels, which take at least "
            f"{need:,} bytes, but the file has {len(data):,} (truncated or crafted)"
        )


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker of a JPEG (which coding it uses), walking the marker segments before it."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in _JPEG_ANY_FRAME:
            return marker
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _public(exc: BaseException) -> str:
    """An exception's text without object reprs (Pillow names its BytesIO with a heap address)."""
    return _OBJECT_REPR.sub("the data", str(exc)).strip() or type(exc).__name__


_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")


def _reduce(img: Image.Image, fit: tuple[int, int]) -> Image.Image:
    """Shrink by the largest integer factor that keeps REDUCING_GAP x the model's size (Pillow's reducing_gap)."""
    factor = int(min(img.size) / (max(fit) * REDUCING_GAP))
    return img.reduce(factor) if factor >= 2 else img


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: palette, greyscale, RGBA (alpha dropped), CMYK, 16-bit and 32-bit integer, float.

    16/32-bit values map to 8 bits through a 65,536-entry table (``Image.point``), float through Pillow's
    clipping conversion: no full-size float64 copy; values as ``round(v / peak * 255)`` clipped to 0..255,
    peak 65535 for 16-bit data (or 32-bit data above 255), else 255.
    """
    if img.mode.startswith("I;16"):
        img = img.convert("I").point(_wide_to_8bit(65535), "L")
    elif img.mode == "I":
        _, top = cast("tuple[int, int]", img.getextrema())  # one band: (min, max), not one pair per band
        img = img.point(_wide_to_8bit(65535 if top > 255 else 255), "L")
    elif img.mode == "F":
        img = img.convert("L")  # clips to 0..255 and truncates, NaN → 0
    return img.convert("RGB")


@functools.cache
def _wide_to_8bit(peak: int) -> list[int]:
    """Lookup table 0..65535 → 0..255 (Pillow clamps 32-bit values outside it to its ends)."""
    values = np.arange(65536, dtype=np.float64)
    return np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8).tolist()


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
        mean, std = np.asarray(cfg.image_mean, np.float32), np.asarray(cfg.image_std, np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: Iterable[Image.Image], cfg: PreprocessConfig) -> np.ndarray:
    """Decoded images → float32 NCHW batch."""
    return np.stack([to_tensor(img, cfg) for img in images])

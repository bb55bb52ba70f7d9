from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.preprocess import (
    CorruptImage,
    ImageTooLarge,
    PreprocessConfig,
    UnsupportedImage,
    decode_image,
    plan_decode,
    preprocess_batch,
    to_tensor,
)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


CFG = PreprocessConfig(height=8, width=8)


def test_rescale_and_normalise_values() -> None:
    img = Image.new("RGB", (8, 8), (255, 0, 128))
    x = to_tensor(img, CFG)
    assert x.shape == (3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_resize_uses_configured_size() -> None:
    batch = preprocess_batch([Image.new("RGB", (100, 40))] * 2, CFG)
    assert batch.shape == (2, 3, 8, 8)


def test_from_json_sizes() -> None:
    assert PreprocessConfig.from_json({"size": {"shortest_edge": 96}}).height == 96
    assert PreprocessConfig.from_json({"size": 64, "image_mean": 0.5, "image_std": 0.25}).image_std == (0.25,) * 3
    assert PreprocessConfig.from_json({}, fallback_hw=(48, 40)).width == 40


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    img = Image.new(mode, (16, 16))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert decode_image(encode(img, fmt)).mode == "RGB"


def test_16bit_png_keeps_its_range() -> None:
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    img = Image.fromarray(arr)
    out = decode_image(encode(img, "PNG"))
    assert np.asarray(out)[0, 0, 0] == 255


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    r, g, _ = out.getpixel((5, 5))
    assert r > 200 and g < 50


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01random bytes\xff" * 10,
        b"<html><body>hi</body></html>",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    ],
)
def test_not_an_image_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        decode_image(data)


def test_truncated_and_empty_are_corrupt() -> None:
    good = encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    with pytest.raises(CorruptImage):
        decode_image(good[: len(good) // 2])
    with pytest.raises(CorruptImage, match="0 bytes"):
        decode_image(b"")


def test_pixels_between_the_limit_and_pillows_hard_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.preprocess.MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageTooLarge, match="exceeds the limit"):
        decode_image(encode(Image.new("RGB", (101, 100)), "PNG"))
    assert decode_image(encode(Image.new("RGB", (100, 100)), "PNG")).size == (100, 100)


def test_decompression_bomb_is_too_large() -> None:
    # a tiny PNG claiming 20000 x 20000 pixels (beyond 2x MAX_IMAGE_PIXELS → Pillow raises)
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge):
        decode_image(bomb)


# --- decoding within a budget (the detect service's path) ------------------------------------------


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth photo-like picture (noise upscaled): what a camera sends, unlike flat or random pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)


ONE_LEVEL = 2 / 255  # one 8-bit grey level after normalising to [-1, 1]


@pytest.mark.parametrize("fmt", ["JPEG", pytest.param("PNG", marks=pytest.mark.slow), "WEBP"])  # PNG: 2 s
def test_reduced_decode_is_within_grey_levels_of_the_full_one(fmt: str) -> None:
    """Pillow's reducing_gap promise ("indistinguishable from fair resampling"), checked on the model's input."""
    cfg = PreprocessConfig(height=224, width=224)
    data = encode(photo(2400, 1800), fmt, **({"quality": 90} if fmt != "PNG" else {}))
    diff = np.abs(to_tensor(decode_image(data), cfg) - to_tensor(decode_image(data, fit=(224, 224)), cfg))
    assert diff.max() <= 2 * ONE_LEVEL + 1e-6
    assert diff.mean() <= ONE_LEVEL / 4


def test_small_images_decode_exactly_as_in_full() -> None:
    """Under REDUCING_GAP x the model's size nothing is reduced: the service and bench eval agree exactly."""
    data = encode(photo(600, 500), "JPEG", quality=90)
    assert np.array_equal(np.asarray(decode_image(data)), np.asarray(decode_image(data, fit=(224, 224))))


def test_plan_counts_the_pixels_a_jpeg_decodes_at() -> None:
    data = encode(photo(4000, 3000), "JPEG", quality=80)
    plan = plan_decode(data, fit=(224, 224))
    assert plan.format == "JPEG" and plan.size == (4000, 3000)
    assert plan.decode_size == (1000, 750)  # DCT scale 1/4 keeps >= 3 x 224 on the short side
    assert plan_decode(data).decode_size == (4000, 3000)  # no fit: full size
    assert decode_image(data, fit=(224, 224), max_pixels=plan.decode_pixels).size == (1000, 750)
    with pytest.raises(ImageTooLarge, match="--max-pixels"):
        decode_image(data, fit=(224, 224), max_pixels=plan.decode_pixels - 1)


def test_pixel_budget_refuses_before_decoding() -> None:
    png = encode(Image.new("RGB", (2000, 2000)), "PNG")
    with pytest.raises(ImageTooLarge, match="exceeds the decode limit of 1,000,000"):
        plan_decode(png, fit=(224, 224), max_pixels=1_000_000)
    assert plan_decode(png, fit=(224, 224), max_pixels=4_000_000).decode_pixels == 4_000_000


def _patched_jpeg(side: int) -> bytes:
    data = bytearray(encode(photo(64, 64), "JPEG", quality=90))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = side.to_bytes(2, "big") * 2  # frame header: height, width
    return bytes(data)


def _png_with_short_data(side: int, rows: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = (b"\x00" + b"\x40" * (3 * side)) * rows
    head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data", [_patched_jpeg(8000), _png_with_short_data(3000, 2)], ids=["jpeg_header_patched", "png_short_data"]
)
def test_data_shorter_than_the_header_claims_is_corrupt(data: bytes) -> None:
    """libjpeg and Pillow would fill the missing rows in silently; both paths refuse before decoding."""
    for kwargs in ({}, {"fit": (224, 224)}):
        with pytest.raises(CorruptImage, match="ends early"):
            decode_image(data, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fmt, kw",
    [
        ("JPEG", {"quality": 1, "optimize": True}),
        ("JPEG", {"quality": 1, "progressive": True, "optimize": True}),
        ("PNG", {"optimize": True}),
    ],
)
def test_maximally_compressed_real_files_pass_the_length_check(fmt: str, kw: dict[str, object]) -> None:
    """The bound is the codec's best case: a flat image at its best compression still decodes."""
    data = encode(Image.new("L", (3000, 3000), 128), fmt, **kw)
    assert decode_image(data, fit=(224, 224)).mode == "RGB"


def _float64_reference(img: Image.Image) -> np.ndarray:
    """The former conversion (a float64 copy of the whole image), kept here as the specification."""
    if img.mode == "F":
        return np.clip(np.asarray(img), 0, 255).astype(np.uint8)
    arr = np.asarray(img, dtype=np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    return np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(65536, dtype=np.uint16).reshape(256, 256),  # every 16-bit value
        np.arange(-70000, 70000 * 5, 5, dtype=np.int32)[: 256 * 256].reshape(256, 256),  # 32-bit, out of range too
        np.arange(-3, 253, dtype=np.int32).reshape(16, 16),  # 32-bit within 0..255: peak 255
        np.linspace(-20, 300, 256 * 256, dtype=np.float32).reshape(256, 256),  # float
    ],
    ids=["I;16", "I", "I_8bit_range", "F"],
)
def test_wide_modes_convert_as_before_without_a_float64_copy(array: np.ndarray) -> None:
    img = Image.fromarray(array)
    grey = np.asarray(decode_image(encode(img, "TIFF")))[:, :, 0]
    assert np.array_equal(grey, _float64_reference(img))


def test_errors_do_not_carry_object_addresses() -> None:
    cut = encode(Image.new("RGB", (64, 64)), "TIFF", compression="tiff_deflate")[:64]
    with pytest.raises(CorruptImage) as info:
        decode_image(cut)
    assert " at 0x" not in str(info.value)

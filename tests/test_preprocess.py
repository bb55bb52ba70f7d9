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

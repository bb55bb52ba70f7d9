"""Perturbations (bench.perturb): each step against an independent computation on a small image; parsing."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from bench.errors import InputError
from bench.perturb import EXTENDED, STANDARD, parse_perturbations, perturbation_names


@pytest.fixture
def image() -> Image.Image:
    """A 37×29 RGB image with smooth structure plus texture (odd sides exercise rounding and centring)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:29, 0:37]
    base = np.stack([xx * 6, yy * 8, (xx + yy) * 3], axis=-1).astype(np.float64)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def one(spec: str):
    perturbations = parse_perturbations([spec])
    assert perturbations[0].is_clean and len(perturbations) == 2
    return perturbations[1]


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int64)


# --- parsing --------------------------------------------------------------------------------------


def test_tiers_lists_and_combinations_parse_to_canonical_names_clean_first() -> None:
    assert perturbation_names(["standard"]) == ["clean", *STANDARD]
    assert (
        len(STANDARD) == 13
        and {"webp:75", "reshare:3"} <= set(STANDARD)
        and len(EXTENDED) == len(set(EXTENDED)) > len(STANDARD)
    )
    names = perturbation_names(["jpeg:90,70", "JPEG:90", "jpeg:50 + resize:.50", "clean", "blur:2.0"])
    assert names == ["clean", "jpeg:90", "jpeg:70", "jpeg:50+resize:0.5", "blur:2"]
    assert perturbation_names([]) == ["clean"]


def test_extended_follows_the_cited_grids() -> None:
    ext = set(EXTENDED)
    assert set(STANDARD) <= ext
    # DeeperForensics-1.0 levels 1-5: GB σ = k/6, GNC σ = √variance, pixelation 1/k
    assert {"blur:1.167", "blur:1.5", "blur:2.167", "blur:2.833", "blur:3.5"} <= ext
    assert {"noise:0.03162", "noise:0.04472", "noise:0.07071", "noise:0.1", "noise:0.2236"} <= ext
    assert {"resize:0.5", "resize:0.3333", "resize:0.25", "resize:0.2", "resize:0.1667"} <= ext
    assert {"jpeg:25", "jpeg:18", "jpeg:15", "jpeg:10", "jpeg:7"} <= ext  # ImageNet-C


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("jpeg:0", "jpeg takes an integer quality 1–100, got 0"),
        ("jpeg:101", "1–100"),
        ("jpeg:50.5", "integer quality"),
        ("resize:2", "resize takes a factor 0 < F < 1"),
        ("resize:1", "0 < F < 1"),
        ("blur:0", "0 < σ ≤ 50"),
        ("noise:1.5", "0 < σ ≤ 1"),
        ("noise:nan", "0 < σ ≤ 1"),
        ("crop:0", "0 < F < 1"),
        ("blur", "got (missing)"),
        ("sharpen:2", "unknown perturbation 'sharpen'"),
        ("jpeg:50,30+blur:1", "one value per step"),
        ("", "--perturb is empty"),
    ],
)
def test_bad_specs_name_the_valid_form_or_range(spec: str, says: str) -> None:
    with pytest.raises(InputError, match="--perturb") as err:
        parse_perturbations([spec])
    assert says in str(err.value)


# --- each step against an independent computation --------------------------------------------------


@pytest.mark.parametrize("quality", [95, 50, 10])
def test_jpeg_is_pillows_own_encoder_bytes_decoded(image: Image.Image, quality: int) -> None:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out = one(f"jpeg:{quality}").apply(image, "k")
    assert out.size == image.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), expected)


def test_lower_jpeg_quality_loses_more(image: Image.Image) -> None:
    err = [np.abs(arr(one(f"jpeg:{q}").apply(image)) - arr(image)).mean() for q in (95, 50, 10)]
    assert err[0] < err[1] < err[2]


def _bilinear_up(small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Half-pixel-centred linear interpolation with clamped edges, written out (no Pillow)."""
    h, w = size
    sh, sw = small.shape[:2]

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = coords(h, sh)
    x0, x1, fx = coords(w, sw)
    s = small.astype(np.float64)
    top = s[y0][:, x0] * (1 - fx)[None, :, None] + s[y0][:, x1] * fx[None, :, None]
    bottom = s[y1][:, x0] * (1 - fx)[None, :, None] + s[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("k", [2, 4])
def test_resize_is_the_block_mean_then_bilinear_back(k: int) -> None:
    rng = np.random.default_rng(k)
    src = rng.integers(0, 256, (8 * k, 12 * k, 3), dtype=np.uint8)  # sides divisible by k: exact blocks
    img = Image.fromarray(src)
    out = one(f"resize:{1 / k}").apply(img)
    assert out.size == img.size
    blocks = src.reshape(8, k, 12, k, 3).astype(np.float64).mean(axis=(1, 3))
    expected = _bilinear_up(blocks, (8 * k, 12 * k))
    # Pillow rounds each pass to 8 bits in fixed point (≤ 1 level each; its 2×2 box mean rounds .25 and .5
    # up, a +0.5 level bias on average); the geometry itself is exact.
    assert np.abs(arr(out) - expected).max() <= 2.0
    assert np.abs(arr(out) - expected).mean() < 1.0


def test_resize_keeps_at_least_one_pixel_and_the_size(image: Image.Image) -> None:
    out = one("resize:0.01").apply(image)  # 37×29 → 1×1 → back
    assert out.size == image.size
    assert len(np.unique(arr(out).reshape(-1, 3), axis=0)) == 1


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_blur_matches_a_hand_built_gaussian_kernel(image: Image.Image, sigma: float) -> None:
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    x = np.pad(arr(image).astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(kernel[i] * x[i : i + image.height] for i in range(len(kernel)))
    expected = sum(kernel[i] * rows[:, i : i + image.width] for i in range(len(kernel)))
    out = arr(one(f"blur:{sigma}").apply(image))
    assert np.abs(out - expected).max() <= 0.5 + 1e-6  # only the final rounding to 8 bits differs


def test_noise_is_seeded_per_image_and_reproducible_from_the_documented_seed(image: Image.Image) -> None:
    p = one("noise:0.05")
    a, b = p.apply(image, "fake/1.png"), p.apply(image, "fake/1.png")
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(p.apply(image, "fake/2.png")))
    assert not np.array_equal(np.asarray(a), np.asarray(p.apply(image, "fake/1.png", seed=1)))
    words = [0, zlib.crc32(b"noise:0.05"), zlib.crc32(b"fake/1.png")]
    rng = np.random.default_rng(np.random.SeedSequence(words))
    x = arr(image) / 255.0
    expected = np.rint(np.clip(x + rng.normal(0.0, 0.05, x.shape), 0, 1) * 255)
    assert np.array_equal(arr(a), expected)


def test_noise_has_the_stated_sigma_on_unit_pixels() -> None:
    grey = Image.new("RGB", (128, 128), (128, 128, 128))
    diff = (arr(one("noise:0.05").apply(grey, "g")) - 128) / 255.0
    assert abs(diff.mean()) < 0.002 and diff.std() == pytest.approx(0.05, rel=0.03)


@pytest.mark.parametrize(("fraction", "box"), [(0.5, (9, 7, 28, 22)), (0.9, (2, 1, 35, 27))])
def test_crop_is_the_exact_centre(image: Image.Image, fraction: float, box: tuple[int, int, int, int]) -> None:
    out = one(f"crop:{fraction}").apply(image)
    left, top, right, bottom = box
    assert out.size == (right - left, bottom - top)
    assert np.array_equal(arr(out), arr(image)[top:bottom, left:right])


def test_a_combination_applies_left_to_right(image: Image.Image) -> None:
    combo = one("jpeg:50+resize:0.5").apply(image)
    by_hand = one("resize:0.5").apply(one("jpeg:50").apply(image))
    assert np.array_equal(np.asarray(combo), np.asarray(by_hand))
    assert not np.array_equal(np.asarray(combo), np.asarray(one("resize:0.5+jpeg:50").apply(image)))


# --- the social-media kinds (issue 27) -------------------------------------------------------------------


@pytest.mark.parametrize("quality", [90, 40])
def test_webp_is_libwebps_lossy_bytes_decoded(image: Image.Image, quality: int) -> None:
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=quality)
    data = buf.getvalue()
    assert data[:4] == b"RIFF" and data[12:16] == b"VP8 "  # the lossy codec, not VP8L
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = one(f"webp:{quality}").apply(image, "k")
    assert out.size == image.size and np.array_equal(np.asarray(out), expected)
    err = [np.abs(arr(one(f"webp:{q}").apply(image)) - arr(image)).mean() for q in (95, 40, 5)]
    assert err[0] < err[1] < err[2]


def test_reshare_replays_the_documented_seeded_rounds(image: Image.Image) -> None:
    """Independent replay: the draws from SeedSequence([seed, crc32(step), crc32(key)]), then LANCZOS down by the
    drawn factor (sides rounded half up) and Pillow's JPEG at the drawn quality, round after round."""
    out = one("reshare:3").apply(image, "fake/7.png")
    rng = np.random.default_rng(np.random.SeedSequence([0, zlib.crc32(b"reshare:3"), zlib.crc32(b"fake/7.png")]))
    img = image
    for _ in range(3):
        factor = rng.uniform(0.75, 0.95)
        quality = int(rng.integers(70, 86))
        assert 0.75 <= factor <= 0.95 and 70 <= quality <= 85
        size = (int(img.width * factor + 0.5), int(img.height * factor + 0.5))
        small = img.resize(size, resample=Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=quality)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert out.size == img.size and out.width < image.width
    assert np.array_equal(np.asarray(out), np.asarray(img))
    assert np.array_equal(np.asarray(out), np.asarray(one("reshare:3").apply(image, "fake/7.png")))
    assert out.size != one("reshare:3").apply(image, "fake/8.png").size or not np.array_equal(
        np.asarray(out), np.asarray(one("reshare:3").apply(image, "fake/8.png"))
    )


def test_screenshot_is_a_125_percent_resample_a_gamma_of_1_1_and_lossless_png(image: Image.Image) -> None:
    out = one("screenshot").apply(image, "k")
    size = (int(image.width * 1.25 + 0.5), int(image.height * 1.25 + 0.5))
    assert out.size == size
    shown = arr(image.resize(size, resample=Image.Resampling.BICUBIC)) / 255.0
    assert np.array_equal(arr(out), np.rint(255.0 * shown ** (1 / 1.1)))
    assert perturbation_names(["screenshot+jpeg:50", "reshare:1,2"]) == [
        "clean",
        "screenshot+jpeg:50",
        "reshare:1",
        "reshare:2",
    ]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("webp:0", "1–100"),
        ("reshare:0", "rounds 1–10"),
        ("reshare:1.5", "integer number of rounds"),
        ("screenshot:2", "screenshot takes no value"),
    ],
)
def test_bad_social_media_specs_name_the_valid_form(spec: str, says: str) -> None:
    with pytest.raises(InputError, match="--perturb") as err:
        parse_perturbations([spec])
    assert says in str(err.value)

#!/usr/bin/env python3
"""Build the bundled demo detector (variants/demo) and demo labelled set (datasets/demo).

One seeded, offline script:

1. generates a synthetic "manipulation" data set: "Real" images are crops of
   permissively licensed photographs shipped inside scikit-image plus procedural
   natural-statistics images; "Deepfake" images are the same kind of crops with
   generator-like artefacts (up-sampling checkerboards, periodic spectral peaks,
   blended face-swap-like patches, heavy JPEG re-compression);
2. trains a tiny ``transformers.ViTForImageClassification`` on CPU with torch;
3. exports it to ONNX (opset 17, ``pixel_values`` -> ``logits``, dynamic batch);
4. writes the held-out test split as PNG files (folder per class), reads them back
   from disk and measures accuracy with ONNX Runtime through the harness itself
   (``bench.preprocess`` and ``bench.engine``, so there is one preprocessing path);
   writes the training report ``TRAINING.md``.

This is a DEMO: the task is synthetic and says nothing about real deepfake detection.

Usage::

    python variants/train_demo.py [--out-model variants/demo] [--out-data datasets/demo]

Needs torch (CPU), transformers, scikit-image, onnx, onnxruntime, pillow, numpy and bench itself
(``pip install -e .``; ``nox -s demo`` installs all of them).
Nothing is downloaded: only the sample images bundled in the scikit-image wheel are read.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bundle import Bundle
from bench.engine import Engine, SessionSpec
from bench.preprocess import PreprocessConfig, load_image, preprocess_batch

REPO = Path(__file__).resolve().parent.parent

# Label order matters: index 0 = Deepfake (the positive, "fake" class), 1 = Real.
ID2LABEL = {0: "Deepfake", 1: "Real"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
FAKE, REAL = LABEL2ID["Deepfake"], LABEL2ID["Real"]

SIZE = 64  # model input size == saved PNG size (resize is then the identity)
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]
# preprocessor_config.json of the bundle; training reads its pixels through the same config
PREPROCESSOR = {
    "do_resize": True,
    "size": {"height": SIZE, "width": SIZE},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": MEAN,
    "image_std": STD,
    "image_processor_type": "ViTImageProcessor",
}
PREPROCESS = PreprocessConfig.from_json(PREPROCESSOR)
ORT_THREADS = 2

MODEL_CFG = dict(
    image_size=SIZE,
    patch_size=8,
    num_channels=3,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.0,
    layer_norm_eps=1e-12,
    qkv_bias=True,
)

# scikit-image sample images used as "real" photographs: all ship inside the wheel
# (no pooch download) and carry a public-domain / CC0 statement in their docstring.
PHOTOS = {
    "astronaut": "public domain (NASA; 'No known copyright restrictions, released into the public domain')",
    "coffee": "CC0 (photographer Rachel Michetti)",
    "chelsea": "CC0 (photographer Stefan van der Walt)",
    "rocket": "public domain (SpaceX launch photo released into the public domain)",
    "camera": "CC0 (photographer Lav Varshney)",
    "hubble_deep_field": "public domain (NASA / HubbleSite)",
    "retina": "CC0 1.0 (Mikael Haggstrom, Wikimedia Commons)",
    "brick": "CC0 (CC0Textures, Bricks25)",
    "grass": "CC0 (DeviantArt user linolafett, Grass-01)",
    "gravel": "CC0 (CC0Textures, Gravel04)",
    "clock": "public domain (photographer Stefan van der Walt)",
}

MIN_CROP = 80  # photo crops are MIN_CROP..200 px, down-sampled to SIZE

FAKE_KINDS = ("upsample", "spectral", "blend", "jpeg")
FAKE_WEIGHTS = (0.15, 0.2, 0.3, 0.35)  # the harder kinds are drawn more often


# --------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------- #
def load_photos() -> dict[str, np.ndarray]:
    import skimage.data as skd

    out = {}
    for name in PHOTOS:
        im = np.asarray(getattr(skd, name)())
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        out[name] = np.ascontiguousarray(im[..., :3].astype(np.uint8))
    return out


@dataclass
class Block:
    photo: str
    y0: int
    x0: int
    h: int
    w: int


def split_blocks(photos: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, list[Block]]:
    """Cut every photograph into a 3x3 grid; each cell belongs to exactly one split.

    Crops are drawn inside one cell, so train / val / test never share pixels.
    Per photo: 6 cells train, 1 val, 2 test.
    """
    splits: dict[str, list[Block]] = {"train": [], "val": [], "test": []}
    for name, im in photos.items():
        h, w = im.shape[:2]
        ys = np.linspace(0, h, 4).astype(int)
        xs = np.linspace(0, w, 4).astype(int)
        cells = [Block(name, ys[i], xs[j], ys[i + 1] - ys[i], xs[j + 1] - xs[j]) for i in range(3) for j in range(3)]
        order = rng.permutation(len(cells))
        for k, idx in enumerate(order):
            split = "train" if k < 6 else ("val" if k < 7 else "test")
            splits[split].append(cells[idx])
    return splits


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def resize_f(x: np.ndarray, size: tuple[int, int], resample=Image.LANCZOS) -> np.ndarray:
    """Resize a float HWC [0,255] array through PIL (per-channel float mode, no rounding)."""
    chans = [
        np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").resize(size, resample)) for c in range(3)
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def gaussian_blur_f(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect").astype(np.float32)


def pink_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = amp * np.exp(2j * np.pi * rng.random((n, n))) * rng.standard_normal((n, n))
    img = np.real(np.fft.ifft2(spec))
    return ((img - img.mean()) / (img.std() + 1e-8)).astype(np.float32)


def procedural(rng: np.random.Generator, n: int) -> np.ndarray:
    """A natural-statistics image, float HWC in [0,255]."""
    kind = rng.integers(3)
    if kind == 0:  # coloured 1/f^beta noise with correlated channels
        beta = rng.uniform(1.8, 2.8)
        base = np.stack([pink_noise(rng, n, beta) for _ in range(3)], axis=-1)
        mix = np.eye(3) * rng.uniform(0.2, 0.6) + rng.uniform(0.4, 1.0)
        img = base @ mix.T
        img = img / (img.std() + 1e-8) * rng.uniform(25, 55) + rng.uniform(70, 180, size=3)
    elif kind == 1:  # smooth gradient + texture
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        ang = rng.uniform(0, 2 * np.pi)
        t = np.cos(ang) * xx + np.sin(ang) * yy
        t = (t - t.min()) / (t.max() - t.min() + 1e-8)
        c0, c1 = rng.uniform(20, 235, size=3), rng.uniform(20, 235, size=3)
        img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
        tex = pink_noise(rng, n, rng.uniform(1.4, 2.4))
        img = img + tex[..., None] * rng.uniform(6, 20) * rng.uniform(0.7, 1.0, size=3)
    else:  # dead-leaves: occluding discs with power-law radii
        img = np.zeros((n, n, 3), np.float32) + rng.uniform(40, 200, size=3)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        for _ in range(int(rng.integers(40, 120))):
            r = n * 0.02 * (1 - rng.random()) ** (-1 / 1.5)
            r = min(r, n * 0.5)
            cy, cx = rng.uniform(0, n, size=2)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[m] = rng.uniform(10, 245, size=3)
        img = gaussian_blur_f(img, rng.uniform(0.4, 1.0))
        img = img + pink_noise(rng, n, 2.0)[..., None] * rng.uniform(2, 8)
    return np.clip(img, 0, 255).astype(np.float32)


class Sampler:
    """Draws base crops (float HWC [0,255], SIZE x SIZE) for one split."""

    def __init__(self, photos, blocks, rng: np.random.Generator):
        self.photos, self.blocks, self.rng = photos, blocks, rng

    def base(self) -> tuple[np.ndarray, str]:
        rng = self.rng
        if rng.random() < 0.65:
            for _ in range(50):
                b = self.blocks[rng.integers(len(self.blocks))]
                # always down-sample (>= 1.25x): removes the sources' own JPEG / demosaicing traces
                side = int(rng.integers(MIN_CROP, max(MIN_CROP, min(b.h, b.w, 200)) + 1))
                if side > min(b.h, b.w):
                    continue
                y = b.y0 + int(rng.integers(0, b.h - side + 1))
                x = b.x0 + int(rng.integers(0, b.w - side + 1))
                crop = self.photos[b.photo][y : y + side, x : x + side].astype(np.float32)
                if crop.std() < 12:  # skip flat regions (black retina border, empty sky)
                    continue
                src = b.photo
                break
            else:  # pragma: no cover - extremely unlikely
                crop, src = procedural(rng, SIZE), "procedural"
        else:
            side = int(rng.integers(SIZE, 160))
            crop, src = procedural(rng, side), "procedural"
        if crop.shape[0] != SIZE:  # down-sampling only, with an anti-aliasing filter
            crop = resize_f(crop, (SIZE, SIZE), Image.LANCZOS)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        # colour jitter: brightness, contrast, saturation
        crop = crop * rng.uniform(0.85, 1.15)
        m = crop.mean()
        crop = (crop - m) * rng.uniform(0.85, 1.15) + m
        g = crop.mean(axis=-1, keepdims=True)
        crop = g + (crop - g) * rng.uniform(0.8, 1.2)
        if rng.random() < 0.3:
            crop = gaussian_blur_f(crop, rng.uniform(0.3, 0.8))
        return np.clip(crop, 0, 255).astype(np.float32), src


# --------------------------------------------------------------------------- #
# Manipulations ("Deepfake" artefacts)
# --------------------------------------------------------------------------- #
def jpeg_roundtrip(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(to_u8(x)).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)


def soft_mask(rng, n, y, x, h, w, sigma) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    m = (((yy - (y + h / 2)) / (h / 2)) ** 2 + ((xx - (x + w / 2)) / (w / 2)) ** 2 <= 1.0).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(m, sigma)[..., None]


def fake_upsample(x: np.ndarray, rng) -> np.ndarray:
    """2x up-sampling artefacts: nearest, transposed-conv checkerboard, or bilinear + residual grid."""
    small = resize_f(x, (SIZE // 2, SIZE // 2), Image.LANCZOS)
    mode = rng.integers(3)
    if mode == 0:
        up = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
        if rng.random() < 0.5:
            up = gaussian_blur_f(up, rng.uniform(0.3, 0.6))
    elif mode == 1:  # zero insertion + uneven 3x3 kernel = transposed conv with stride 2
        from scipy.ndimage import convolve

        z = np.zeros((SIZE, SIZE, 3), np.float32)
        z[::2, ::2] = small
        v = np.array([rng.uniform(0.25, 0.75), 1.0, rng.uniform(0.25, 0.75)], np.float32)
        k = np.outer(v, v)
        up = np.stack([convolve(z[..., c], k, mode="reflect") for c in range(3)], axis=-1)
        ones = np.zeros((SIZE, SIZE), np.float32)
        ones[::2, ::2] = 1
        gain = convolve(ones, k, mode="reflect")
        up = up / gain.mean()  # keep brightness; the spatial gain pattern is the checkerboard
    else:
        up = resize_f(small, (SIZE, SIZE), Image.BILINEAR)
        tile = rng.standard_normal((2, 2)).astype(np.float32)
        tile -= tile.mean()
        tile /= np.abs(tile).max() + 1e-8
        grid = np.tile(tile, (SIZE // 2, SIZE // 2))[..., None]
        up = up + grid * rng.uniform(2.0, 6.0) * (0.5 + up / 255.0)
    return up


def fake_spectral(x: np.ndarray, rng) -> np.ndarray:
    """Periodic peaks in the Fourier spectrum (as left by strided generator layers)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = x.copy()
    for _ in range(int(rng.integers(1, 4))):
        u, v = rng.choice([0, 16, 32], size=2, p=[0.3, 0.35, 0.35])  # 2x / 4x up-sampling peaks
        if u == 0 and v == 0:
            u = 32
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.cos(2 * np.pi * (u * xx + v * yy) / SIZE + phase)
        amp = rng.uniform(3.5, 8.0) * rng.uniform(0.8, 1.2, size=3)
        out = out + wave[..., None] * amp
    return out


def fake_blend(x: np.ndarray, donor: np.ndarray, rng) -> np.ndarray:
    """Face-swap-like: a re-sampled, colour-mismatched patch from another image, soft-blended."""
    h, w = int(rng.integers(20, 42)), int(rng.integers(20, 42))
    sy, sx = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
    ty, tx = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
    # the "generated" face is rendered at a lower resolution and up-scaled
    f = rng.uniform(2.0, 3.0)
    lo = resize_f(donor, (max(8, int(SIZE / f)), max(8, int(SIZE / f))), Image.LANCZOS)
    donor_rs = resize_f(lo, (SIZE, SIZE), Image.BILINEAR)
    patch = np.zeros_like(x)
    patch[ty : ty + h, tx : tx + w] = donor_rs[sy : sy + h, sx : sx + w]
    sign = rng.choice([-1.0, 1.0], size=3)
    gain = 1.0 + sign * rng.uniform(0.06, 0.18, size=3)  # colour mismatch, never negligible
    offset = rng.choice([-1.0, 1.0], size=3) * rng.uniform(5, 16, size=3)
    patch = patch * gain + offset
    m = soft_mask(rng, SIZE, ty, tx, h, w, rng.uniform(2.0, 4.0))  # wider feather than any real edge
    return x * (1 - m) + patch * m


def fake_jpeg(x: np.ndarray, rng) -> np.ndarray:
    """Heavy JPEG re-compression of the whole image or of a region."""
    q = int(rng.integers(5, 16))
    # the 8x8 JPEG grid is usually not aligned with the final image (cropped / resized later):
    # compress with a random grid offset (0..7 px; 0 = aligned)
    oy, ox = int(rng.integers(8)), int(rng.integers(8))
    padded = np.pad(x, ((oy, 0), (ox, 0), (0, 0)), mode="reflect")
    j = jpeg_roundtrip(padded, q)[oy:, ox:]
    if rng.random() < 0.6:
        return j
    h, w = int(rng.integers(40, 57)), int(rng.integers(40, 57))
    y, x0 = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
    m = np.zeros((SIZE, SIZE, 1), np.float32)
    m[y : y + h, x0 : x0 + w] = 1
    if rng.random() < 0.5:
        from scipy.ndimage import gaussian_filter

        m = gaussian_filter(m, (1.5, 1.5, 0))
    return x * (1 - m) + j * m


def finish(x: np.ndarray, rng, real: bool) -> np.ndarray:
    """Camera-like finishing shared by both classes (sensor noise); real photos may carry a mild JPEG."""
    if rng.random() < 0.5:
        x = x + rng.standard_normal(x.shape).astype(np.float32) * rng.uniform(0.5, 2.0)
    if real and rng.random() < 0.2:
        x = jpeg_roundtrip(x, int(rng.integers(92, 99)))
    return to_u8(x)


def make_split(photos, blocks, n_per_class: int, rng: np.random.Generator):
    """Returns a list of (uint8 HWC image, label, kind, source)."""
    s = Sampler(photos, blocks, rng)
    items = []
    for _ in range(n_per_class):
        base, src = s.base()
        items.append((finish(base, rng, real=True), REAL, "real", src))
    for _ in range(n_per_class):
        base, src = s.base()  # a different crop from the real ones
        kinds = [str(rng.choice(FAKE_KINDS, p=FAKE_WEIGHTS))]
        if rng.random() < 0.15:
            kinds.append(str(rng.choice(FAKE_KINDS, p=FAKE_WEIGHTS)))
        x = base
        for k in kinds:
            if k == "upsample":
                x = fake_upsample(x, rng)
            elif k == "spectral":
                x = fake_spectral(x, rng)
            elif k == "blend":
                donor, _ = s.base()
                x = fake_blend(x, donor, rng)
            else:
                x = fake_jpeg(x, rng)
            x = np.clip(x, 0, 255)
        items.append((finish(x, rng, real=False), FAKE, "+".join(kinds), src))
    return items


# --------------------------------------------------------------------------- #
# Model, training, export
# --------------------------------------------------------------------------- #
def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def build_model():
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        **MODEL_CFG,
        num_labels=2,
        id2label={i: n for i, n in ID2LABEL.items()},
        label2id=dict(LABEL2ID),
    )
    cfg.architectures = ["ViTForImageClassification"]
    model = ViTForImageClassification(cfg)
    init_patch_embedding_dct(model)
    try:
        model.set_attn_implementation("eager")
    except Exception:  # older transformers
        model.config._attn_implementation = "eager"
    return model


def init_patch_embedding_dct(model) -> None:
    """Initialise the patch-embedding Conv with frequency-weighted 2D DCT bases (a forensic prior; still trained).

    Channels 0..63 see the luma DCT of the 8x8 patch, 64..127 the DCT of an R-B opponent channel.
    Only the initial weights change: the graph is the standard ViT one.
    """
    import torch

    p = MODEL_CFG["patch_size"]
    n = np.arange(p)
    d = np.array(
        [np.cos(np.pi * (2 * n + 1) * k / (2 * p)) * (np.sqrt(1 / p) if k == 0 else np.sqrt(2 / p)) for k in range(p)]
    )
    bases = np.einsum("ui,vj->uvij", d, d).reshape(p * p, p, p)
    # "whitening" gains: natural images have a ~1/f spectrum, so scale each basis by its frequency;
    # this lifts the weak high-frequency artefacts to the same scale as image content.
    u = np.arange(p)
    freq = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2).reshape(-1)
    gain = np.where(freq == 0, DCT_DC_GAIN, DCT_GAIN * freq)
    w = np.zeros((MODEL_CFG["hidden_size"], 3, p, p), dtype=np.float64)
    lum = np.array([1, 1, 1]) / np.sqrt(3)
    opp = np.array([1, 0, -1]) / np.sqrt(2)
    for i in range(min(p * p, MODEL_CFG["hidden_size"])):
        w[i] = lum[:, None, None] * bases[i] * gain[i]
    for i in range(min(p * p, MODEL_CFG["hidden_size"] - p * p)):
        w[p * p + i] = opp[:, None, None] * bases[i] * gain[i]
    conv = model.vit.embeddings.patch_embeddings.projection
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w).float())
        conv.bias.zero_()


DCT_GAIN, DCT_DC_GAIN = 0.25, 0.125


def pixel_batch(items) -> tuple[np.ndarray, np.ndarray]:
    """Images as the model sees them (the harness preprocessing, NCHW float32) and their labels."""
    x = preprocess_batch([Image.fromarray(im) for im, *_ in items], PREPROCESS)
    y = np.array([lab for _, lab, *_ in items], dtype=np.int64)
    return x, y


def torch_batch(items):
    import torch

    x, y = pixel_batch(items)
    return torch.from_numpy(x), torch.from_numpy(y)


def evaluate_torch(model, x, y, bs=256):
    import torch

    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            logits = model(pixel_values=x[i : i + bs]).logits
            loss += torch.nn.functional.cross_entropy(logits, y[i : i + bs], reduction="sum").item()
            correct += (logits.argmax(-1) == y[i : i + bs]).sum().item()
    return correct / len(x), loss / len(x)


LR = 5e-4


def train(model, xtr, ytr, xva, yva, epochs: int, seed: int, log):
    import torch

    g = torch.Generator().manual_seed(seed)
    bs = 64
    steps_per_epoch = (len(xtr) + bs - 1) // bs
    total = steps_per_epoch * epochs
    warm = steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / total)))
    )
    best = (-1.0, float("inf"), None, -1)
    history = []
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        flips = torch.rand(len(xtr), generator=g) < 0.5
        vflips = torch.rand(len(xtr), generator=g) < 0.5
        transp = torch.rand(len(xtr), generator=g) < 0.5
        t0, run_loss = time.time(), 0.0
        for i in range(0, len(xtr), bs):
            idx = perm[i : i + bs]
            xb = xtr[idx].clone()
            fb = flips[idx]
            xb[fb] = xb[fb].flip(-1)  # flips keep the 2x2 / 8x8 artefact grids aligned (64 = 8 * 8)
            vb = vflips[idx]
            xb[vb] = xb[vb].flip(-2)
            tb = transp[idx]
            xb[tb] = xb[tb].transpose(-1, -2)  # with the flips: all 8 dihedral symmetries
            logits = model(pixel_values=xb).logits
            loss = torch.nn.functional.cross_entropy(logits, ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
        va_acc, va_loss = evaluate_torch(model, xva, yva)
        history.append((ep + 1, run_loss / len(xtr), va_loss, va_acc, time.time() - t0))
        log(
            f"epoch {ep + 1:2d}/{epochs}  train_loss {run_loss / len(xtr):.4f}  val_loss {va_loss:.4f}"
            f"  val_acc {va_acc:.4f}  ({time.time() - t0:.1f}s)"
        )
        if (va_acc, -va_loss) > (best[0], -best[1]):
            best = (va_acc, va_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}, ep + 1)
    model.load_state_dict(best[2])
    return history, best[3], best[0]


def export_onnx(model, path: Path) -> None:
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    path.parent.mkdir(parents=True, exist_ok=True)
    wrap = Wrap(model).eval()
    dummy = torch.zeros(2, 3, SIZE, SIZE)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrap,
            (dummy,),
            str(path),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    model.eval()  # export restores the wrapper's mode; keep the model in inference mode
    import onnx

    m = onnx.load(str(path))
    assert not any(n.op_type == "Dropout" for n in m.graph.node), "dropout in the exported graph"
    onnx.checker.check_model(m)
    # make sure it is ONE self-contained file
    onnx.save_model(m, str(path), save_as_external_data=False)
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()


# --------------------------------------------------------------------------- #
# Writing outputs
# --------------------------------------------------------------------------- #
def write_configs(model, out_model: Path) -> None:
    cfg = model.config.to_dict()
    cfg["architectures"] = ["ViTForImageClassification"]
    cfg["id2label"] = {str(k): v for k, v in ID2LABEL.items()}
    cfg["label2id"] = {k: int(v) for k, v in LABEL2ID.items()}
    cfg["model_type"] = "vit"
    for k in ("_attn_implementation_autoset", "_name_or_path", "_attn_implementation", "transformers_version"):
        cfg.pop(k, None)
    import transformers

    cfg["transformers_version"] = transformers.__version__
    (out_model / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out_model / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")


def write_test_split(items, out_data: Path) -> list[tuple[Path, int, str]]:
    for cls in ("real", "fake"):
        d = out_data / cls
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    files = []
    nr = nf = 0
    for im, lab, kind, _src in items:
        if lab == REAL:
            p = out_data / "real" / f"real_{nr:03d}.png"
            nr += 1
        else:
            p = out_data / "fake" / f"fake_{nf:03d}_{kind.replace('+', '-')}.png"
            nf += 1
        Image.fromarray(im).save(p, format="PNG", optimize=True)
        files.append((p, lab, kind))
    return files


def evaluate_onnx(model_dir: Path, files) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fp32 model of ``model_dir`` on ``files`` as ``bench eval`` runs it: (pixels, labels, predictions, logits).

    Files are read back from disk and preprocessed by the bundle's preprocessor_config.json
    (bench.preprocess); inference is a bench.engine session on CPU.
    """
    bundle = Bundle.discover(model_dir)
    engine = Engine(bundle.variant_path("fp32"), "cpu", SessionSpec(threads=ORT_THREADS))
    preprocess = bundle.preprocess_config(engine.input.image_hw())
    x = preprocess_batch([load_image(p) for p, _, _ in files], preprocess)
    y = np.array([lab for _, lab, _ in files])
    logits = np.concatenate([engine.run(x[i : i + 64]) for i in range(0, len(x), 64)])
    return x, y, logits.argmax(-1), logits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-model", type=Path, default=REPO / "variants" / "demo")
    ap.add_argument("--out-data", type=Path, default=REPO / "datasets" / "demo")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=8000, help="training images per class")
    ap.add_argument("--n-val", type=int, default=200, help="validation images per class")
    ap.add_argument("--n-test", type=int, default=150, help="held-out test images per class (written to --out-data)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime
    import skimage
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    t_start = time.time()

    def log(msg: str) -> None:
        print(msg, flush=True)

    # ---- data ---------------------------------------------------------------
    t0 = time.time()
    photos = load_photos()
    ss = np.random.SeedSequence(args.seed)
    r_blocks, r_train, r_val, r_test = (np.random.default_rng(s) for s in ss.spawn(4))
    blocks = split_blocks(photos, r_blocks)
    train_items = make_split(photos, blocks["train"], args.n_train, r_train)
    val_items = make_split(photos, blocks["val"], args.n_val, r_val)
    test_items = make_split(photos, blocks["test"], args.n_test, r_test)
    t_data = time.time() - t0
    log(f"data: train {len(train_items)}, val {len(val_items)}, test {len(test_items)} images ({t_data:.1f}s)")

    # ---- model + training ---------------------------------------------------
    torch.manual_seed(args.seed)
    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    layers, hidden = MODEL_CFG["num_hidden_layers"], MODEL_CFG["hidden_size"]
    log(f"model: ViTForImageClassification {layers}x{hidden}, {n_params:,} parameters")
    xtr, ytr = torch_batch(train_items)
    xva, yva = torch_batch(val_items)
    t0 = time.time()
    history, best_epoch, best_val = train(model, xtr, ytr, xva, yva, args.epochs, args.seed, log)
    t_train = time.time() - t0
    log(f"training: {t_train:.1f}s, best val_acc {best_val:.4f} at epoch {best_epoch}")

    # ---- export --------------------------------------------------------------
    out_model: Path = args.out_model
    out_model.mkdir(parents=True, exist_ok=True)
    onnx_path = out_model / "onnx" / "model.onnx"
    export_onnx(model, onnx_path)
    write_configs(model, out_model)

    # ---- held-out test: write PNGs, read back, run with ONNX Runtime --------------
    files = write_test_split(test_items, args.out_data)
    x, y, pred, logits = evaluate_onnx(out_model, files)
    model.eval()
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(x)).logits.numpy()
    max_diff = float(np.abs(ref - logits).max())
    acc = float((pred == y).mean())
    # confusion, rows = true, cols = predicted, in id2label order
    cm = np.zeros((2, 2), dtype=int)
    for t, p in zip(y, pred, strict=True):
        cm[t, p] += 1
    per_kind: dict[str, list[int]] = {}
    for (_p, lab, kind), pr in zip(files, pred, strict=True):
        per_kind.setdefault(kind, []).append(int(pr == lab))
    tp, fn = cm[FAKE, FAKE], cm[FAKE, REAL]
    fp, tn = cm[REAL, FAKE], cm[REAL, REAL]
    log(
        f"ONNX Runtime held-out accuracy: {acc:.4f} ({int((pred == y).sum())}/{len(y)});"
        f" torch-vs-ORT max |dlogit| {max_diff:.2e}"
    )
    log(f"confusion (fake positive) [[tn, fp], [fn, tp]] = [[{tn}, {fp}], [{fn}, {tp}]]")
    onnx_mb = onnx_path.stat().st_size / 1e6
    data_bytes = sum(p.stat().st_size for p, _, _ in files)
    t_total = time.time() - t_start

    # ---- report --------------------------------------------------------------
    write_training_md(
        out_model / "TRAINING.md",
        args=args,
        n_params=n_params,
        history=history,
        best_epoch=best_epoch,
        best_val=best_val,
        t_data=t_data,
        t_train=t_train,
        t_total=t_total,
        acc=acc,
        cm=cm,
        per_kind=per_kind,
        max_diff=max_diff,
        onnx_mb=onnx_mb,
        data_bytes=data_bytes,
        n_test=len(files),
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "scikit-image": skimage.__version__,
            "numpy": np.__version__,
            "pillow": Image.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        n_items={"train": len(train_items), "val": len(val_items), "test": len(test_items)},
    )
    write_dataset_readme(args.out_data / "README.md", args=args, per_kind=per_kind, n_test=len(files))
    log(
        f"wrote {onnx_path} ({onnx_mb:.2f} MB), {len(files)} PNGs in {args.out_data}"
        f" ({data_bytes / 1e6:.2f} MB); total {t_total:.1f}s"
    )
    return 0


def write_training_md(
    path: Path,
    *,
    args,
    n_params,
    history,
    best_epoch,
    best_val,
    t_data,
    t_train,
    t_total,
    acc,
    cm,
    per_kind,
    max_diff,
    onnx_mb,
    data_bytes,
    n_test,
    versions,
    n_items,
) -> None:
    tp, fn = cm[FAKE, FAKE], cm[FAKE, REAL]
    fp, tn = cm[REAL, FAKE], cm[REAL, REAL]

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)

    rel_model, rel_data = rel(args.out_model), rel(args.out_data)
    hist = "\n".join(f"| {ep} | {tl:.4f} | {vl:.4f} | {va:.4f} | {dt:.1f} |" for ep, tl, vl, va, dt in history)
    kinds = "\n".join(f"| {k} | {len(v)} | {sum(v)} | {sum(v) / len(v):.4f} |" for k, v in sorted(per_kind.items()))
    cfg = "\n".join(f"| {k} | {v} |" for k, v in MODEL_CFG.items())
    md = f"""# Demo detector: training report

**This is a demo model trained on a synthetic task.** It exists so that `bench` has a small,
license-clean ViT bundle to benchmark and evaluate offline. It is *not* a deepfake detector
and its accuracy says nothing about real deepfakes.

Generated by `python variants/train_demo.py` (every number below was written by that run).

## Run
- seed: `{args.seed}` (Python `random`, NumPy `SeedSequence`, `torch.manual_seed`, deterministic torch algorithms)
- threads: `torch.set_num_threads({args.threads})`, CPU only
- data generation: {t_data:.1f} s; training: {t_train:.1f} s ({len(history)} epochs); whole script: {t_total:.1f} s
- versions: {", ".join(f"{k} {v}" for k, v in versions.items())}
- host: {platform.platform()}, {os.cpu_count()} logical CPUs

## Data
Images are {SIZE}x{SIZE} RGB, generated by the script (see `{rel_data}/README.md` for the recipe
and licences). Per class: train {args.n_train}, val {args.n_val}, test {args.n_test}
(total train {n_items["train"]}, val {n_items["val"]}, test {n_items["test"]}).
Splits are disjoint by source crop: every scikit-image photograph is cut into a 3x3 grid and each
cell belongs to one split only (6 train, 1 val, 2 test); procedural images are drawn from
independent random streams per split.

- **Real** (label 1): random crops (side {MIN_CROP}..200 px, anti-aliased down-sampling to {SIZE} px)
  of scikit-image sample photographs or procedural natural-statistics images (coloured 1/f noise,
  gradients with texture, dead-leaves); horizontal flip, brightness/contrast/saturation jitter,
  slight blur; sensor-like noise; 20% mild JPEG (quality 92-98). Photographs:
  {", ".join(PHOTOS)}.
- **Deepfake** (label 0): different crops of the same kind with one artefact (15%: two), drawn with
  probabilities {", ".join(f"{k} {w:g}" for k, w in zip(FAKE_KINDS, FAKE_WEIGHTS, strict=True))}:
  `upsample` (2x nearest / transposed-conv checkerboard / bilinear + periodic residual grid),
  `spectral` (1-3 periodic peaks at multiples of 1/4 cycles/px, i.e. 2x/4x up-sampling frequencies,
  added in the image domain), `blend` (face-swap-like: a patch of another crop, re-sampled at a lower
  resolution, colour-shifted, pasted with a soft elliptical mask, feather sigma 2-4 px), `jpeg`
  (quality 5-15 JPEG, 8x8 grid at a random offset, of the whole image or of a region);
  same sensor-like noise as real.

## Model
`transformers.ViTForImageClassification`, eager attention, `id2label = {{"0": "Deepfake", "1": "Real"}}`,
trained from scratch (no pretrained weights). The only departure from the default initialisation:
the patch-embedding Conv starts as the 64 2D-DCT bases of an 8x8 patch on luma (channels 0-63) and
on an R-B opponent channel (64-127), each scaled by its spatial frequency (DC {DCT_DC_GAIN:g}, else
{DCT_GAIN:g} x |f|), a forensic prior that makes weak high-frequency artefacts visible from the start.
It is trained like every other weight; the exported graph is the standard ViT graph.

| config | value |
|---|---|
{cfg}
| num_labels | 2 |

Parameters: **{n_params:,}**. ONNX: `{rel_model}/onnx/model.onnx`, fp32, {onnx_mb:.2f} MB, opset 17,
input `pixel_values` float32 `[batch_size, 3, {SIZE}, {SIZE}]`, output `logits` float32 `[batch_size, 2]`.

## Training
AdamW (lr {LR:g}, betas 0.9/0.98, weight decay 0.05), batch 64, one warm-up epoch then cosine decay,
gradient clipping 1.0, random flips and transposes (the 8 symmetries of the square, which keep
every artefact grid intact), dropout 0.1 (training only), cross-entropy. The checkpoint with the best
validation accuracy (epoch {best_epoch}, val accuracy {best_val:.4f}) was exported.

| epoch | train loss | val loss | val acc | seconds |
|---|---|---|---|---|
{hist}

## Held-out accuracy (ONNX Runtime, fp32)
Measured with `onnxruntime` (CPUExecutionProvider) on the {n_test} PNG files in `{rel_data}`,
read back from disk with the harness preprocessing: `Image.open` -> `ImageOps.exif_transpose` ->
`convert("RGB")` -> `resize(({SIZE}, {SIZE}), BILINEAR)` -> `/255` -> `(x - 0.5) / 0.5` -> CHW; prediction = argmax.

- **accuracy: {acc:.4f}** ({tp + tn}/{n_test})
- torch vs ONNX Runtime: max |logit difference| = {max_diff:.2e}

Confusion matrix (rows = true, columns = predicted):

| true \\ predicted | Deepfake | Real |
|---|---|---|
| Deepfake | {cm[FAKE, FAKE]} | {cm[FAKE, REAL]} |
| Real | {cm[REAL, FAKE]} | {cm[REAL, REAL]} |

With "Deepfake" as the positive class, `[[tn, fp], [fn, tp]] = [[{tn}, {fp}], [{fn}, {tp}]]`.

Per test-image kind:

| kind | n | correct | accuracy |
|---|---|---|---|
{kinds}
"""
    path.write_text(md)


def write_dataset_readme(path: Path, *, args, per_kind, n_test) -> None:
    counts = "\n".join(f"| {k} | {len(v)} |" for k, v in sorted(per_kind.items()) if k != "real")
    lic = "\n".join(f"| `skimage.data.{k}()` | {v} |" for k, v in PHOTOS.items())
    md = f"""# Demo labelled set

**This is a DEMO set, not a deepfake benchmark.** The images are synthetic: "fake" images carry
hand-made, generator-like artefacts, not the output of any face-swap or generative model. Use it to
check that `bench eval` / `bench matrix` work end to end and to compare variants of the bundled
demo detector with each other, never to judge a real detector.

- `real/` — {args.n_test} images, label `Real`
- `fake/` — {args.n_test} images, label `Deepfake` (the file name ends with the artefact kind)
- {SIZE}x{SIZE} RGB, lossless PNG: the saved pixels are exactly what the model sees.

Generated by `python variants/train_demo.py --seed {args.seed}` (deterministic); this is the
held-out test split of the data the demo detector in `variants/demo` was trained on
(train/val/test are disjoint by source crop). See `variants/demo/TRAINING.md` for the accuracy.

## Recipe
- **Real**: a random square crop ({MIN_CROP}..200 px) from one cell of a 3x3 grid over a scikit-image
  sample photograph (test uses cells that training never saw), or a procedural natural-statistics
  image (coloured 1/f^beta noise, smooth gradient with 1/f texture, dead-leaves discs);
  anti-aliased down-sampling to {SIZE} px, random horizontal flip, brightness / contrast /
  saturation jitter, occasional slight Gaussian blur, occasional sensor-like Gaussian noise,
  20% mild JPEG (quality 92-98).
- **Fake**: a different crop made the same way, then one artefact (15% of images get two), drawn
  with probabilities {", ".join(f"{k} {w:g}" for k, w in zip(FAKE_KINDS, FAKE_WEIGHTS, strict=True))}:
  - `upsample`: 2x down then up: nearest-neighbour, transposed-convolution checkerboard
    (zero insertion + uneven 3x3 kernel), or bilinear with a periodic 2x2 residual;
  - `spectral`: 1-3 periodic patterns whose Fourier peaks sit at multiples of 1/4 cycles/pixel
    (the frequencies left by 2x / 4x up-sampling layers);
  - `blend`: face-swap-like paste of a patch from another crop, re-sampled from a lower
    resolution, colour-mismatched and blended with a soft elliptical mask (feather sigma 2-4 px);
  - `jpeg`: heavy JPEG re-compression (quality 5-15, block grid at a random 0-7 px offset) of the
    whole image or of a region;
  followed by the same occasional sensor-like noise as the real images.

| fake kind | n |
|---|---|
{counts}

## Licences of the sources
Photographs are the sample images bundled in the scikit-image wheel (`skimage.data`, read
offline). Each is used only under the statement in its `skimage.data` docstring:

| source | licence / statement |
|---|---|
{lic}

Procedural images and all manipulations are generated by `variants/train_demo.py` (project
licence). Every photographic source is public domain or CC0, so the images in this folder are
released under CC0 1.0. scikit-image itself (which ships the photographs) is BSD-3-Clause.
"""
    path.write_text(md)


if __name__ == "__main__":
    sys.exit(main())

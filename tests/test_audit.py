"""Shortcut audit (bench.audit, ``bench audit``): features against what wrote the files, a planted shortcut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.audit import SHORTCUT_AUC, audit_dataset, estimate_jpeg_quality, ijg_table, image_features
from bench.cli import main
from bench.datasets import load_labelled_set

from cli import run_bench

ROOT = Path(__file__).resolve().parents[1]


def noise(side: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def planted(root: Path, n: int = 40) -> Path:
    """Classes that differ only in format and size (the pixels come from one distribution)."""
    for cls, fmt, side in (("real", "PNG", 32), ("fake", "JPEG", 40)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            noise(side, i + (0 if cls == "real" else 10_000)).save(root / cls / f"{i}.{fmt.lower()}", format=fmt)
    return root


def fair(root: Path, n: int = 40) -> Path:
    """Both classes written alike: JPEG at qualities and sizes drawn from one distribution."""
    rng = np.random.default_rng(1)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            side = int(rng.integers(24, 48))
            noise(side, int(rng.integers(1 << 30))).save(root / cls / f"{i}.jpg", quality=int(rng.integers(60, 96)))
    return root


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95, 100])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(tmp_path: Path, quality: int) -> None:
    path = tmp_path / "x.jpg"
    noise(32, 0).save(path, quality=quality)
    features = image_features(path)
    assert features["format"] == "JPEG" and features["jpeg_quality"] == quality
    assert features["chroma_subsampling"] == 2  # Pillow's default: 4:2:0
    assert features["bytes_per_pixel"] == pytest.approx(path.stat().st_size / (32 * 32))


def test_the_ijg_table_is_libjpegs_at_50_and_any_order_reads_the_same() -> None:
    assert ijg_table(50)[:8].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]  # T.81 Annex K, scale 100 %
    assert estimate_jpeg_quality(ijg_table(83)[::-1]) == 83


def test_subsampling_exif_and_other_formats(tmp_path: Path) -> None:
    img = noise(30, 1)
    img.save(tmp_path / "full.jpg", quality=80, subsampling=0)
    exif = Image.Exif()
    exif[0x010F] = "bench camera"  # Make
    img.save(tmp_path / "exif.jpg", quality=80, exif=exif)
    img.resize((60, 30)).save(tmp_path / "wide.png")
    assert image_features(tmp_path / "full.jpg")["chroma_subsampling"] == 0
    assert image_features(tmp_path / "full.jpg")["exif"] == 0
    assert image_features(tmp_path / "exif.jpg")["exif"] == 1
    wide = image_features(tmp_path / "wide.png")
    assert (wide["format"], wide["aspect"], wide["jpeg_quality"], wide["chroma_subsampling"]) == ("PNG", 2.0, -1, -1)


@pytest.mark.slow  # a subprocess and two audits: ~6 s on a quiet 2-core box
def test_a_planted_shortcut_is_flagged_and_fails_the_gate(tmp_path: Path) -> None:
    root = planted(tmp_path / "ds")
    found = audit_dataset(load_labelled_set(root))
    assert found["metadata_auc"] >= 0.95 and found["verdict"] == "shortcut"
    assert found["metadata_auc_ci"][0] > SHORTCUT_AUC
    separating = {s["feature"]: s for s in found["separating"]}
    assert {"format", "width", "height"} <= set(separating)
    assert separating["format"]["real"] == "PNG" and separating["format"]["fake"] == "JPEG"
    assert found["warnings"] and "metadata alone" in found["warnings"][0]
    run = run_bench("audit", "--dataset", str(root), "--json", "--fail-on-shortcut")
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert document["audit"]["verdict"] == "shortcut" and document["audit"]["warnings"]
    assert "warning: metadata alone tells real from fake" in run.stderr
    plain = CliRunner().invoke(main, ["audit", "--dataset", str(root)])
    assert plain.exit_code == 0 and "shortcut" in plain.output  # flagged, but no gate asked for


def test_a_set_written_alike_is_not_flagged(tmp_path: Path) -> None:
    found = audit_dataset(load_labelled_set(fair(tmp_path / "ds")))
    assert found["metadata_auc"] <= 0.65 and found["verdict"] != "shortcut" and not found["warnings"]


def test_the_demo_set_is_not_flagged() -> None:
    found = audit_dataset(load_labelled_set(ROOT / "datasets" / "demo"))
    assert found["n"] == 300 and found["metadata_auc"] <= 0.65 and found["verdict"] != "shortcut"


def test_groups_keep_a_group_on_one_side_and_too_few_images_say_why(tmp_path: Path) -> None:
    root = planted(tmp_path / "ds", n=12)
    lines = ["path,label,group"]
    lines += [
        f"{p.relative_to(root)},{p.parent.name},{p.parent.name}{i % 6}" for i, p in enumerate(sorted(root.rglob("*.*")))
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    grouped = audit_dataset(load_labelled_set(root))
    assert grouped["ci_unit"] == "group" and grouped["metadata_auc"] is not None
    small = tmp_path / "small"
    planted(small, n=3)
    found = audit_dataset(load_labelled_set(small))
    assert found["metadata_auc"] is None and "5-fold" in found["reasons"]["metadata_auc"]

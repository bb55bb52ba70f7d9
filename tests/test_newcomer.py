"""Rough edges a newcomer hit on models bench never made (#29 items 13, 14, 15): real ONNX files, real processes.

A model-zoo style export (opset 9, weights listed as graph inputs) where the dynamic int8/uint8 recipes fail;
a 1,000-class model; a labelled set with one truncated PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from cli import run_bench
from models import make_bundle


def _images(root: Path, per_class: int = 3, truncate: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(root / cls / f"{i}.png")
    if truncate:
        data = (root / truncate).read_bytes()
        (root / truncate).write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose weights are also graph inputs (as ONNX model-zoo opset-9 exports have them)."""
    root = make_bundle(tmp_path_factory.mktemp("zoo") / "zoo")
    path = root / "onnx" / "model.onnx"
    model = onnx.load(path)
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    model.ir_version, model.opset_import[0].version = 3, 9  # as old exports declare (dynamic quantisation fails)
    onnx.save(model, path)
    return root


def test_variants_build_tries_every_recipe_and_lists_each_failure(zoo: Path) -> None:
    p = run_bench("variants", "build", "--model-dir", str(zoo), timeout=300)
    assert p.returncode == 2, p.stderr
    assert "error: int8 failed — building int8" in p.stderr and "error: uint8 failed — building uint8" in p.stderr
    assert (zoo / "onnx" / "model_q4.onnx").is_file() and (zoo / "onnx" / "model_fp16.onnx").is_file()  # tried after
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 6 recipes failed on this model: int8, uint8") and "--only" in last
    assert "int8" in p.stdout and "failed" in p.stdout


def test_thousand_class_eval_names_the_problem_in_one_short_line(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "imagenet", labels=tuple(f"class{i}" for i in range(1000)))
    p = run_bench("eval", "--model-dir", str(bundle), "--dataset", str(_images(tmp_path / "ds", 2)), timeout=180)
    assert p.returncode == 3, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert len(line) < 400 and len(p.stderr) < 4000, len(p.stderr)
    assert "1,000-class model" in line and "0=class0" in line and "999=class999" in line and "500=class500" not in line
    assert "--positive-label 0" in line
    ok = run_bench(
        "eval", "--model-dir", str(bundle), "--dataset", str(tmp_path / "ds"), "--positive-label", "class1",
        timeout=180,
    )  # fmt: skip
    assert "500=class500" not in ok.stderr  # the dataset-label message is short as well


def test_run_skips_and_lists_a_truncated_image_as_eval_does(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "tiny")
    ds = _images(tmp_path / "ds", 3, truncate="fake/0.png")
    flags = ("--iterations", "5", "--warmup", "1", "--threads", "1")
    p = run_bench("run", "--model-dir", str(bundle), "--dataset", str(ds), "--batch-size", "4", *flags, timeout=180)
    assert p.returncode == 0, p.stderr
    assert "skipped 1 image(s) of the timed input: fake/0.png: corrupt:" in p.stderr
    for image in ds.rglob("*.png"):
        if image.name != "0.png" or image.parent.name != "fake":
            image.write_bytes(b"not an image")
    (ds / "fake" / "0.png").write_bytes(b"")
    q = run_bench("run", "--model-dir", str(bundle), "--dataset", str(ds), *flags, timeout=180)
    assert q.returncode == 2 and "none of the dataset's 6 images decodes" in q.stderr, q.stderr


def test_ab_against_a_missing_folder_names_against(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "tiny")
    p = run_bench("ab", "--model-dir", str(bundle), "--against", str(tmp_path / "nope"))
    assert p.returncode == 2
    line = p.stderr.strip().splitlines()[-1]
    assert f"model dir {tmp_path / 'nope'} does not exist; pass --against DIR" in line and "--model-dir" not in line


@pytest.mark.slow
def test_one_cell_matrix_says_one_cell(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "tiny")
    p = run_bench(
        "matrix", "--model-dir", str(bundle), "--variants", "fp32", "--providers", "cpu", "--batch-sizes", "1",
        "--no-accuracy", "--iterations", "5", "--warmup", "1", "--threads", "1", "--rounds", "1",
        "--out", str(tmp_path / "out"), timeout=240, no_gpu=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "(1 cell measured, 0 cells kept from the earlier run)" in p.stderr

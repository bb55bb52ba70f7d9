"""What the README tells a newcomer to type works as written (#29 item 17): files the curl examples upload
exist, the venv activation line, and the Hugging Face → model folder recipe on a real (tiny, local) checkpoint.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli import run_bench

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_curl_examples_upload_files_that_exist() -> None:
    uploads = re.findall(r"curl [^\n]*?-F \w+=@(\S+)", README) + re.findall(r"-F \w+=@(\S+)", README)
    assert uploads
    missing = sorted({u for u in uploads if not (ROOT / u).is_file()})
    assert not missing, f"README curl examples upload files that do not exist: {missing}"


def test_readme_says_how_to_activate_the_venv() -> None:
    assert ". .venv/bin/activate" in README
    activate = ROOT / ".venv" / "bin" / "activate"
    if activate.is_file():
        p = subprocess.run(
            ["bash", "-c", f". {activate} && command -v bench"], capture_output=True, text=True, check=False
        )
        assert p.returncode == 0 and p.stdout.strip().endswith(".venv/bin/bench"), p.stderr


def test_with_service_duration_and_bound_are_documented() -> None:
    text = README[README.index("`--service-budget SECONDS` bounds") :][:600]
    assert "800 s" in text and "--service-budget 180" in text


@pytest.mark.slow
def test_hugging_face_recipe_makes_a_model_folder_bench_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, id2label={0: "Real", 1: "Fake"}, label2id={"Real": 0, "Fake": 1},
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "ckpt")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "ckpt")
    assert "python variants/from_huggingface.py" in README
    p = subprocess.run(
        [sys.executable, str(ROOT / "variants" / "from_huggingface.py"), str(tmp_path / "ckpt"), str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "m" / "onnx" / "model.onnx").is_file() and (tmp_path / "m" / "config.json").is_file()
    r = run_bench("run", "--model-dir", str(tmp_path / "m"), "--batch-size", "2", "--iterations", "3", "--warmup", "1")
    assert r.returncode == 0, r.stderr

"""PyTorch rows for real: a tiny transformers ViT built here (random weights), saved as safetensors and
exported to ONNX, run through both backends on real images, and through the CLI and the service."""

from __future__ import annotations

import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch  # the test extra installs it (CLI.md: optional backends' tests run, not skip)

from bench.backends import open_engine
from bench.bundle import Bundle
from bench.datasets import image_files
from bench.engine import Engine, ProviderUnavailable, cell_failure
from bench.errors import InputError
from bench.preprocess import load_image, preprocess_batch
from bench.service import ServiceConfig
from bench.torch_engine import TorchEngine
from bench.variants import ensure_variant, list_variants, parse_variants

from cli import BENCH, run_bench
from models import PREPROCESSOR, make_classifier

pytestmark = pytest.mark.slow  # torch and transformers: a ViT built and exported here, CLI runs that import torch

FAKE = 0  # id2label 0 = Deepfake
TOLERANCE = 1e-4
bench = functools.partial(run_bench, timeout=300)  # bench(*args, env=..., prefix=...)


def make_hf_vit(root: Path, size: int = 32, seed: int = 0) -> Path:
    """A Hugging Face ViT checkpoint (config.json + model.safetensors) and its ONNX export, in bench's layout.

    ``initializer_range=0.3`` (ten times transformers' default) spreads p(fake) over (0, 1) on real images,
    so agreement to 1e-4 means something: near-constant outputs would agree whatever the backends did.
    """
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=size,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.3,
        id2label={0: "Deepfake", 1: "Real"},
        label2id={"Deepfake": 0, "Real": 1},
    )
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(str(root))
    (root / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR | {"size": {"height": size, "width": size}}))

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(pixel_values=x).logits

    (root / "onnx").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(model),
            (torch.zeros(2, 3, size, size),),
            str(root / "onnx" / "model.onnx"),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
            opset_version=17,
            dynamo=False,
        )
    return root


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_vit(tmp_path_factory.mktemp("hf") / "vit")


@pytest.fixture
def hf_copy(hf_vit: Path, tmp_path: Path) -> Path:
    """A copy to break (the module's checkpoint stays intact)."""
    return Path(shutil.copytree(hf_vit, tmp_path / "vit"))


def p_fake_both(model_dir: Path, images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    bundle = Bundle.discover(model_dir)
    onnx_engine = open_engine(bundle.variants["fp32"], "fp32")
    torch_engine = open_engine(bundle.require_pytorch_weights("pytorch"), "pytorch")
    batch = preprocess_batch([load_image(p) for p in images], bundle.preprocess_config(onnx_engine.input.image_hw()))
    return onnx_engine.predict_proba(batch)[:, FAKE], torch_engine.predict_proba(batch)[:, FAKE]


# --- the two backends agree ---------------------------------------------------------------------------


def test_onnx_and_pytorch_agree_on_real_images(hf_vit: Path, demo_dataset: Path) -> None:
    images = image_files(demo_dataset)
    onnx_p, torch_p = p_fake_both(hf_vit, images)
    assert len(images) >= 100
    assert onnx_p.max() - onnx_p.min() > 0.5, "outputs barely vary: agreement would prove nothing"
    assert np.abs(onnx_p - torch_p).max() <= TOLERANCE


def test_demo_bundle_weights_run_the_onnx_model(demo_bundle: Path, demo_dataset: Path) -> None:
    """variants/demo/model.safetensors holds the ONNX file's weights (variants/export_demo_weights.py)."""
    onnx_p, torch_p = p_fake_both(demo_bundle, image_files(demo_dataset))
    assert np.abs(onnx_p - torch_p).max() <= TOLERANCE
    assert ((onnx_p >= 0.5) == (torch_p >= 0.5)).all()


def test_torch_engine_answers_the_engine_interface(hf_vit: Path) -> None:
    engine = TorchEngine(hf_vit / "model.safetensors", "pytorch", "cpu")
    onnx_engine = Engine(hf_vit / "onnx" / "model.onnx", "cpu")
    assert engine.labels == {0: "Deepfake", 1: "Real"} and engine.num_classes == 2
    assert engine.providers_effective == ["torch:cpu"] and engine.session_create_ms > 0
    assert engine.input.image_hw() == (32, 32) and engine.input.fixed_batch is None
    assert engine.io_binding_default is False and engine.clock_sync is None
    batch = engine.random_batch(3, seed=7)
    np.testing.assert_array_equal(batch, onnx_engine.random_batch(3, seed=7))  # the same input for both rows
    logits = engine.run(batch)
    assert logits.shape == (3, 2) and logits.dtype == np.float32
    np.testing.assert_allclose(engine.predict_proba(batch).sum(axis=1), 1.0)
    for binding in (True, False):
        out = engine.timed_call(batch, io_binding=binding)()
        np.testing.assert_allclose(out.float().cpu().numpy(), logits, atol=1e-5)
    with pytest.raises(InputError, match="--batch-size must be ≥ 1"):
        engine.check_batch_size(0)


@pytest.mark.parametrize(
    ("variant", "provider", "reason"),
    [
        ("pytorch-fp16", "cpu", "cpu: unavailable — pytorch-fp16 is half precision on CUDA"),
        ("pytorch", "tensorrt", "tensorrt: unavailable — PyTorch variants run on cpu or cuda"),
    ],
)
def test_what_cannot_run_is_unavailable_with_the_reason(hf_vit: Path, variant: str, provider: str, reason: str) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        open_engine(hf_vit / "model.safetensors", variant, provider)
    assert str(info.value).startswith(reason)
    assert cell_failure(info.value, provider)[0] == "unavailable"


def test_cuda_runs_on_a_gpu_or_says_why_not(hf_vit: Path) -> None:
    if torch.cuda.is_available():
        engine = open_engine(hf_vit / "model.safetensors", "pytorch-fp16", "cuda")
        assert engine.providers_effective == ["torch:cuda:0"] and engine.clock_sync == "torch.cuda.synchronize"
        assert engine.io_binding_default is True and engine.run(engine.random_batch(2)).shape == (2, 2)
    else:
        with pytest.raises(ProviderUnavailable, match=r"^cuda: unavailable — "):
            open_engine(hf_vit / "model.safetensors", "pytorch", "cuda")


# --- variants: discovery, list, all -----------------------------------------------------------------


def test_variants_list_shows_pytorch_rows(hf_vit: Path) -> None:
    p = bench("variants", "list", "--model-dir", str(hf_vit), "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["variant"]: r for r in json.loads(p.stdout)["variants"]}
    assert list(rows) == ["fp32", "pytorch", "pytorch-fp16"]
    weights = sum(t.numel() for t in TorchEngine(hf_vit / "model.safetensors").model.state_dict().values())
    for name in ("pytorch", "pytorch-fp16"):
        assert rows[name]["file"] == "model.safetensors" and rows[name]["parameters"] == weights
        assert len(rows[name]["sha256"]) == 64
    assert rows["pytorch"]["precision"] == "fp32 eager PyTorch"


def test_all_includes_pytorch_only_when_weights_are_present(hf_vit: Path, tiny_bundle: Path) -> None:
    with_weights = Bundle.discover(hf_vit)
    assert parse_variants("all", with_weights)[-1] == "pytorch"
    assert "pytorch-fp16" not in parse_variants("all", with_weights)
    assert parse_variants("all,pytorch-fp16", with_weights)[-2:] == ["pytorch", "pytorch-fp16"]
    assert not {"pytorch", "pytorch-fp16"} & set(parse_variants("all", Bundle.discover(tiny_bundle)))
    assert [i.variant for i in list_variants(Bundle.discover(tiny_bundle))] == ["fp32"]


def test_a_checkpoint_without_onnx_is_a_model_folder(hf_copy: Path) -> None:
    shutil.rmtree(hf_copy / "onnx")
    bundle = Bundle.discover(hf_copy)
    assert parse_variants("all", bundle) == ["pytorch"]
    assert ensure_variant(bundle, "pytorch") == hf_copy / "model.safetensors"


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "eval"])
def test_missing_weights_exit_2_naming_them(tiny_bundle: Path, command: str) -> None:
    p = bench(command, "--model-dir", str(tiny_bundle), "--variant", "pytorch")
    assert p.returncode == 2, p.stderr
    assert "model.safetensors or pytorch_model.bin" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_missing_config_is_named(hf_copy: Path) -> None:
    (hf_copy / "config.json").unlink()
    with pytest.raises(InputError, match=r"but config\.json is missing there"):
        ensure_variant(Bundle.discover(hf_copy), "pytorch")


def test_architecture_transformers_cannot_load_exit_2(hf_copy: Path) -> None:
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertModel"]}))
    p = bench("eval", "--model-dir", str(hf_copy), "--variant", "pytorch")
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "transformers cannot load" in last and "BertConfig" in last and "Traceback" not in p.stderr


def test_weights_that_do_not_match_the_config_exit_2(hf_copy: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(hf_copy / "model.safetensors"))
    del state[next(k for k in state if k.endswith("classifier.weight"))]
    save_file(state, str(hf_copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"lacks 1 weight\(s\) .* \(first: classifier\.weight\)"):
        open_engine(hf_copy / "model.safetensors", "pytorch")


def test_labels_that_differ_from_the_onnx_files_warn_naming_both(hf_copy: Path) -> None:
    make_classifier(hf_copy / "onnx" / "model.onnx", size=32, num_labels=3)
    lines: list[str] = []
    ensure_variant(Bundle.discover(hf_copy), "pytorch", log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert "{0: Deepfake, 1: Real}" in lines[0] and "model.onnx has {0: 0, 1: 1, 2: 2}" in lines[0]
    quiet: list[str] = []
    ensure_variant(Bundle.discover(make_hf_vit(hf_copy.parent / "same")), "pytorch", log=quiet.append)
    assert quiet == []


# torch "not installed": its import fails. (Not sys.modules['torch'] = None: libraries that look a module up in
# sys.modules without importing it, as scikit-learn's array-API helpers do, would then see None, not "absent".)
BLOCK_TORCH = [
    sys.executable,
    "-c",
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] == 'torch': raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, NoTorch())\n"
    "from bench.cli import main; main()",
]


@pytest.mark.parametrize("command", ["run", "eval"])
def test_without_torch_the_row_is_unavailable_with_the_install_command(hf_vit: Path, command: str) -> None:
    p = bench(command, "--model-dir", str(hf_vit), "--variant", "pytorch", "--json", prefix=BLOCK_TORCH)
    assert p.returncode == 3, p.stderr
    cell = json.loads(p.stdout)["cells"][0]
    assert cell["status"] == "unavailable"
    assert cell["reason"].startswith("cpu: unavailable — PyTorch rows need torch and transformers")
    assert "pip install 'bench[torch]'" in cell["reason"]


# --- run / eval / matrix end to end -------------------------------------------------------------------


def test_run_measures_the_pytorch_row(hf_vit: Path) -> None:
    p = bench("run", "--model-dir", str(hf_vit), "--variant", "pytorch", "--iterations", "6", "--warmup", "2", "--json")
    assert p.returncode == 0, p.stderr
    cell = json.loads(p.stdout)["cells"][0]
    assert cell["status"] == "ok" and cell["variant"] == "pytorch"
    assert cell["providers_effective"] == ["torch:cpu"] and cell["io_binding"] is False
    assert cell["model"]["file"] == "model.safetensors" and cell["latency_ms"]["n"] == 6
    assert cell["memory"]["rss_peak_mb"] > 0


def test_eval_agreement_between_onnx_and_pytorch(hf_vit: Path, demo_dataset: Path) -> None:
    p = bench(
        "eval",
        "--model-dir",
        str(hf_vit),
        "--variant",
        "pytorch,fp32",
        "--reference",
        "pytorch",
        "--dataset",
        str(demo_dataset),
        "--json",
    )
    assert p.returncode == 0, p.stderr
    cells = {c["variant"]: c for c in json.loads(p.stdout)["cells"]}
    assert [c["status"] for c in cells.values()] == ["ok", "ok"]
    assert cells["pytorch"]["providers_effective"] == ["torch:cpu"]
    agreement = cells["fp32"]["accuracy"]["agreement"]
    assert agreement["reference"] == "pytorch" and agreement["flip_rate"] == 0.0
    assert agreement["max_abs_dp"] <= TOLERANCE
    assert cells["pytorch"]["accuracy"]["n"] == cells["fp32"]["accuracy"]["n"] >= 100


def test_matrix_has_the_pytorch_row(hf_vit: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    p = bench(
        "matrix",
        "--model-dir",
        str(hf_vit),
        "--variants",
        "fp32,pytorch",
        "--providers",
        "cpu",
        "--batch-sizes",
        "1",
        "--iterations",
        "4",
        "--warmup",
        "1",
        "--replicates",
        "1",
        "--no-accuracy",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    cells = {c["variant"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["pytorch"]["status"] == "ok", cells["pytorch"]["reason"]
    assert cells["pytorch"]["providers_effective"] == ["torch:cpu"]


# --- serve --fallback pytorch -------------------------------------------------------------------------


def test_fallback_must_be_a_pytorch_variant() -> None:
    with pytest.raises(InputError, match="--fallback 'fp16' is not a PyTorch variant"):
        ServiceConfig(fallback="fp16")


def test_serve_falls_back_to_pytorch_and_says_so(hf_vit: Path, hf_copy: Path, demo_dataset: Path) -> None:
    onnx = hf_copy / "onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:300])  # the ONNX variant cannot load: a truncated file
    serve = ["serve", "--model-dir", str(hf_copy), "--variant", "fp32", "--fallback", "pytorch"]
    proc = subprocess.Popen(
        [*BENCH, *serve, "--port", "0", "--max-batch", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url, seen = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and proc.stderr is not None:
            line = proc.stderr.readline()
            seen.append(line)
            match = re.search(r"(ready|model not loaded) on (http://127\.0\.0\.1:\d+)", line)
            assert match is None or match.group(1) == "ready", line
            url = match.group(2) if match else None
            assert line or proc.poll() is None, "".join(seen)
        assert url, "".join(seen)
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["model_loaded"] and health["variant"] == "pytorch"
        assert health["providers_effective"] == ["torch:cpu"]
        backend = health["backend"]
        assert backend["serving"] == "pytorch" and backend["requested_variant"] == "fp32"
        assert (
            backend["fallback_reason"].startswith("fp32 could not load: ")
            and "not a valid ONNX" in backend["fallback_reason"]
        )
        image = image_files(demo_dataset)[0]
        answer = httpx.post(url + "/detect", files={"file": (image.name, image.read_bytes())}, timeout=30).json()
        onnx_p, _ = p_fake_both(hf_vit, [image])
        assert abs(answer["fake_probability"] - float(onnx_p[0])) <= TOLERANCE
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert re.search(r'bench_service_model_info\{[^}]*backend="pytorch"', metrics)
        assert 'fallback_reason="fp32 could not load' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

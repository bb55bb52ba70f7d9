from __future__ import annotations

from pathlib import Path

import pytest

from bench.bundle import Bundle, positive_index, resolve_model_dir, variant_filename, variant_name
from bench.errors import InputError

from models import make_classifier


@pytest.mark.parametrize(
    ("filename", "variant"),
    [
        ("model.onnx", "fp32"),
        ("model_fp16.onnx", "fp16"),
        ("model_int8.onnx", "int8"),
        ("model_uint8.onnx", "uint8"),
        ("model_quantized.onnx", "quantized"),
        ("model_q4.onnx", "q4"),
        ("model_q4f16.onnx", "q4f16"),
        ("model_bnb4.onnx", "bnb4"),
        ("detector.onnx", "detector"),
    ],
)
def test_variant_names_follow_file_names(filename: str, variant: str) -> None:
    assert variant_name(Path(filename)) == variant
    if variant != "detector":
        assert variant_filename(variant) == filename


def test_transformers_js_layout(tiny_bundle: Path) -> None:
    (tiny_bundle / "onnx" / "model_fp16.onnx").write_bytes((tiny_bundle / "onnx" / "model.onnx").read_bytes())
    bundle = Bundle.discover(tiny_bundle)
    assert set(bundle.variants) == {"fp32", "fp16"}
    assert bundle.labels() == {0: "Deepfake", 1: "Real"}
    cfg = bundle.preprocess_config()
    assert (cfg.height, cfg.width, cfg.image_mean) == (32, 32, (0.5, 0.5, 0.5))


def test_bare_folder_of_onnx_files(tmp_path: Path) -> None:
    make_classifier(tmp_path / "model.onnx", num_labels=3)
    bundle = Bundle.discover(tmp_path)
    assert bundle.onnx_dir == tmp_path
    assert bundle.labels(num_outputs=3) == {0: "0", 1: "1", 2: "2"}
    assert positive_index(bundle.labels(3))[0] is None  # bare labels need --positive-label
    assert positive_index(bundle.labels(3), "2") == (2, None)


@pytest.mark.parametrize("setup", ["missing", "empty", "file"])
def test_missing_or_empty_model_dir_says_what_was_looked_for(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "m"
    if setup == "empty":
        target.mkdir()
    elif setup == "file":
        target.write_text("x")
    with pytest.raises(InputError) as err:
        Bundle.discover(target)
    assert "--model-dir" in str(err.value)
    if setup == "empty":
        assert "onnx/model*.onnx" in str(err.value)


def test_bad_config_json_is_an_input_error(tiny_bundle: Path) -> None:
    (tiny_bundle / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json is not valid JSON"):
        Bundle.discover(tiny_bundle)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({0: "Deepfake", 1: "Real"}, 0),
        ({0: "real", 1: "FAKE"}, 1),
        ({0: "Realism", 1: "AI"}, 1),
        ({0: "cat", 1: "dog"}, None),
        ({0: "fake", 1: "deepfake"}, None),
    ],
)
def test_positive_label_by_name(labels: dict[int, str], expected: int | None) -> None:
    index, reason = positive_index(labels)
    assert index == expected
    assert (reason is None) == (expected is not None)


def test_positive_label_override_by_name_and_unknown() -> None:
    labels = {0: "cat", 1: "dog"}
    assert positive_index(labels, "DOG") == (1, None)
    index, reason = positive_index(labels, "horse")
    assert index is None and "horse" in reason


def test_default_model_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_MODEL_DIR", str(tmp_path / "from-env"))
    assert resolve_model_dir("flag") == Path("flag")
    assert resolve_model_dir(None) == tmp_path / "from-env"
    monkeypatch.delenv("BENCH_MODEL_DIR")
    (tmp_path / "variants" / "demo").mkdir(parents=True)
    assert resolve_model_dir(None) == tmp_path / "variants" / "demo"
    (tmp_path / "variants" / "demo").rmdir()
    # from an unrelated directory the shipped demo (package data or source checkout) is found
    shipped = resolve_model_dir(None)
    assert shipped.name == "demo" and shipped.parent.name == "variants" and shipped.is_dir()

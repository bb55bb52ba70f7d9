"""bench.variants and ``bench variants list/build/check``: real ONNX files built in each test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bench import variants as V
from bench.bundle import Bundle
from bench.cli import main
from bench.errors import InputError
from bench.modelfile import model_info

from models import make_bundle

DEFAULT_RECIPES = ["fp16", "int8", "uint8", "q4", "q4f16", "bnb4"]


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sha256(path: Path) -> str:
    return model_info(path).sha256


def write_recipes(root: Path, text: str) -> Path:
    path = root / "recipes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_conv_only_bundle(root: Path) -> Path:
    """An image classifier without a single MatMul: Conv → global pool → Flatten (2 logits)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixel_values", "w", "b"], ["c"], strides=[8, 8]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["logits"]),
        ],
        "conv_only",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        [
            numpy_helper.from_array(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "onnx").mkdir(parents=True)
    onnx.save_model(model, root / "onnx" / "model.onnx")
    return root


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- building -------------------------------------------------------------------------------------


def test_build_all_recipes_writes_each_variant_with_a_sidecar(tiny_bundle: Path) -> None:
    bundle = Bundle.discover(tiny_bundle)
    lines: list[str] = []
    results = V.build_variants(bundle, log=lines.append)

    assert [r.variant for r in results] == DEFAULT_RECIPES
    assert {r.status for r in results} == {"built"}
    assert sorted(bundle.variants) == sorted(["fp32", *DEFAULT_RECIPES])
    assert any("building q4 (MatMulNBits 4-bit, block 32, symmetric)" in ln for ln in lines)
    assert leftovers(bundle.onnx_dir) == []
    fp32_sha = sha256(bundle.onnx_dir / "model.onnx")
    for name in DEFAULT_RECIPES:
        path = bundle.onnx_dir / f"model_{name}.onnx"
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["variant"] == name
        assert sidecar["output"]["sha256"] == sha256(path)
        assert sidecar["tools"]["onnxruntime"] and sidecar["tools"]["onnx"] and sidecar["tools"]["onnxconverter-common"]
        if name == "q4f16":
            assert sidecar["base"] == {**sidecar["base"], "variant": "fp16", "file": "model_fp16.onnx"}
        else:
            assert sidecar["base"]["sha256"] == fp32_sha
        assert model_info(path).recipe == sidecar  # what run/matrix record as model.recipe
    q4 = json.loads((bundle.onnx_dir / "model_q4.json").read_text())
    assert q4["params"] == {
        "bits": 4,
        "block_size": 32,
        "is_symmetric": True,
        "accuracy_level": None,
        "nodes_to_exclude": [],
    }
    assert json.loads((bundle.onnx_dir / "model_bnb4.json").read_text())["params"]["quant_type"] == "nf4"
    assert json.loads((bundle.onnx_dir / "model_int8.json").read_text())["params"]["weight_type"] == "QInt8"


def test_inspection_names_precision_quant_ops_and_the_same_parameter_count(tiny_bundle: Path) -> None:
    bundle = Bundle.discover(tiny_bundle)
    V.build_variants(bundle)
    infos = {i.variant: i for i in V.list_variants(bundle)}

    assert list(infos) == ["fp32", "fp16", "int8", "uint8", "q4", "q4f16", "bnb4"]
    assert infos["fp32"].precision == "fp32" and infos["fp32"].quant_ops == {}
    assert infos["fp16"].precision == "fp16 (fp32 I/O)"
    assert infos["int8"].precision.startswith("int8 weights, dynamic uint8 activations, per-tensor")
    assert infos["uint8"].precision.startswith("uint8 weights")
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= set(infos["int8"].quant_ops)
    assert infos["q4"].quant_ops == {"MatMulNBits": 3}
    assert infos["q4"].precision == "int4 MatMulNBits, block 32, sym; rest fp32"
    assert infos["q4f16"].precision.endswith("rest fp16")
    assert infos["bnb4"].quant_ops == {"MatMulBnb4": 3}
    assert infos["bnb4"].precision == "nf4 MatMulBnb4, block 64; rest fp32"
    # 64*3*8*8 + 64 (patch) + 64*128 + 128 (fc1) + 128*64 (fc2) + 64*2 + 2 (head) + 2*64 (LayerNorm)
    expected = 12288 + 64 + 8192 + 128 + 8192 + 128 + 2 + 128
    assert {i.parameters for i in infos.values()} == {expected}
    assert infos["fp16"].size_mb < infos["fp32"].size_mb
    assert infos["fp32"].sha256 == sha256(bundle.onnx_dir / "model.onnx")


def test_existing_variants_are_kept_unless_forced(tiny_bundle: Path) -> None:
    bundle = Bundle.discover(tiny_bundle)
    V.build_variants(bundle, only=["q4"])
    path = bundle.onnx_dir / "model_q4.onnx"
    path.write_bytes(path.read_bytes())  # same content, new mtime we can compare
    before = path.stat().st_mtime_ns
    again = V.build_variants(bundle, only=["q4"])
    assert again[0].status == "exists" and path.stat().st_mtime_ns == before
    forced = V.build_variants(bundle, only=["q4"], force=True)
    assert forced[0].status == "built" and path.stat().st_mtime_ns != before


def test_cli_build_only_and_list_json(tiny_bundle: Path) -> None:
    built = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "fp16,bnb4")
    assert built.exit_code == 0, built.output
    assert "built" in built.stdout and "model_bnb4.onnx" in built.stdout

    listed = invoke("variants", "list", "--model-dir", tiny_bundle, "--json")
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    rows = {r["variant"]: r for r in doc["variants"]}
    assert list(rows) == ["fp32", "fp16", "bnb4"]
    assert set(rows["bnb4"]) >= {
        "file",
        "size_mb",
        "precision",
        "quant_ops",
        "op_types",
        "parameters",
        "sha256",
        "recipe",
    }
    assert rows["bnb4"]["recipe"]["method"] == "bnb4" and rows["fp32"]["recipe"] is None
    assert len(rows["fp16"]["sha256"]) == 64


def test_list_works_from_any_directory_on_the_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_MODEL_DIR", raising=False)
    result = invoke("variants", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["variants"][0]["variant"] == "fp32"
    assert V.default_recipes_path().name == "recipes.toml"
    assert V.recipe_names() == DEFAULT_RECIPES


def test_a_failed_build_leaves_no_model_and_no_temp_file(tiny_bundle: Path) -> None:
    # The fp16 converter refuses a model that is already fp16: a real tool failure mid-build.
    write_recipes(tiny_bundle, '[recipes.fp16twice]\nmethod = "fp16"\nbase = "fp16"\n')
    result = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "fp16twice")
    assert result.exit_code == 2
    assert "building fp16twice from model_fp16.onnx failed" in result.stderr
    onnx_dir = tiny_bundle / "onnx"
    assert not (onnx_dir / "model_fp16twice.onnx").exists()
    assert not (onnx_dir / "model_fp16twice.json").exists()
    assert leftovers(onnx_dir) == []
    assert (onnx_dir / "model_fp16.onnx").exists()  # its base was built and kept


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_build_leaves_no_half_written_model(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    real_save = onnx.save_model

    def save_half_then_interrupt(model: object, path: str, *a: object, **kw: object) -> None:
        real_save(model, path, *a, **kw)
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # a matrix timeout or `kill`: handled like Ctrl-C during a build
        time.sleep(5)

    bundle = Bundle.discover(tiny_bundle)
    monkeypatch.setattr(onnx, "save_model", save_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        V.build_variant(bundle, "q4")
    monkeypatch.undo()
    assert not (bundle.onnx_dir / "model_q4.onnx").exists()
    assert leftovers(bundle.onnx_dir) == []
    # A killed build's temp file (dead pid) is never a variant and is swept by the next build.
    stale = bundle.onnx_dir / ".model_q4.onnx.999999999.tmp"
    stale.write_bytes(b"half")
    assert "q4" not in Bundle.discover(tiny_bundle).variants
    assert V.build_variant(bundle, "q4").status == "built"
    assert not stale.exists()


# --- ensure_variant (what bench run / matrix / eval call) ----------------------------------------


def test_ensure_variant_builds_a_missing_variant_once(tiny_bundle: Path) -> None:
    bundle = Bundle.discover(tiny_bundle)
    lines: list[str] = []
    path = V.ensure_variant(bundle, "q4f16", log=lines.append)
    assert path == bundle.onnx_dir / "model_q4f16.onnx" and path.is_file()
    assert lines[0].startswith("q4f16 is not on disk: building it")
    assert (bundle.onnx_dir / "model_fp16.onnx").is_file()  # its base, built on the way
    lines.clear()
    assert V.ensure_variant(bundle, "q4f16", log=lines.append) == path
    assert lines == []


def test_ensure_variant_refuses_without_build_and_lists_unknown_names(tiny_bundle: Path) -> None:
    bundle = Bundle.discover(tiny_bundle)
    with pytest.raises(InputError, match="--no-build forbids building it"):
        V.ensure_variant(bundle, "int8", allow_build=False)
    assert not (bundle.onnx_dir / "model_int8.onnx").exists()
    with pytest.raises(InputError, match=r"'int3' .* available: fp32, fp16, int8, uint8, q4, q4f16, bnb4"):
        V.ensure_variant(bundle, "int3")


def test_parse_variants_all_is_fp32_recipes_and_files_on_disk(tiny_bundle: Path) -> None:
    shutil.copy(tiny_bundle / "onnx" / "model.onnx", tiny_bundle / "onnx" / "model_quantized.onnx")
    bundle = Bundle.discover(tiny_bundle)
    assert V.parse_variants("all", bundle) == ["fp32", "fp16", "int8", "uint8", "quantized", "q4", "q4f16", "bnb4"]
    assert V.parse_variants("q4, fp32,q4", bundle) == ["q4", "fp32"]


def test_bench_run_builds_the_variant_and_records_its_recipe(tiny_bundle: Path) -> None:
    refused = invoke(
        "run",
        "--model-dir",
        tiny_bundle,
        "--variant",
        "q4",
        "--no-build",
        "--iterations",
        "2",
        "--warmup",
        "0",
        "--sample-hz",
        "0",
        "--json",
    )
    assert refused.exit_code == 2 and "--no-build" in refused.stderr
    result = invoke(
        "run",
        "--model-dir",
        tiny_bundle,
        "--variant",
        "q4",
        "--iterations",
        "2",
        "--warmup",
        "0",
        "--sample-hz",
        "0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert "q4 is not on disk: building it" in result.stderr
    cell = json.loads(result.stdout)["cells"][0]
    assert cell["status"] == "ok" and cell["model"]["file"] == "model_q4.onnx"
    assert cell["model"]["recipe"]["method"] == "nbits" and cell["model"]["recipe"]["params"]["block_size"] == 32


# --- checking -------------------------------------------------------------------------------------


def test_check_compares_every_variant_with_fp32(tiny_bundle: Path) -> None:
    V.build_variants(Bundle.discover(tiny_bundle), only=["fp16", "int8", "q4", "bnb4"])
    result = invoke("variants", "check", "--model-dir", tiny_bundle, "--json", "--probe-size", "8", "--seed", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "pass" and report["probe"]["n"] == 8 and report["probe"]["seed"] == 3
    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["fp16", "int8", "q4", "bnb4"]
    for row in rows.values():
        assert row["status"] == "ok" and row["within_tolerance"] is True
        assert 0 <= row["max_abs_dprob"] <= 1 and 0 <= row["agreement"] <= 1
    assert rows["fp16"]["max_abs_dprob"] < 1e-3 < rows["q4"]["max_abs_dprob"]  # fp16 is far closer than 4-bit
    assert rows["q4"]["tolerance"]["max_abs_dprob"] == 0.15


def test_check_fails_a_variant_out_of_tolerance(tiny_bundle: Path) -> None:
    V.build_variants(Bundle.discover(tiny_bundle), only=["fp16", "q4"])
    result = invoke("variants", "check", "--model-dir", tiny_bundle, "--tolerance", "q4=0.0001")
    assert result.exit_code == 1
    assert "q4: max |Δprob|" in result.stderr and "fp16" not in result.stderr.split("tolerance vs fp32:")[1]
    # the same verdict from a model folder's own recipe tolerance
    write_recipes(
        tiny_bundle, '[recipes.q4]\nmethod = "nbits"\ntolerance = { min_agreement = 1.0, max_abs_dlogit = 0.001 }\n'
    )
    report = V.check_variants(Bundle.discover(tiny_bundle), probe_size=4)
    q4 = next(v for v in report.variants if v.variant == "q4")
    assert report.verdict == "fail" and q4.within_tolerance is False and "max |Δlogit|" in (q4.why or "")


def test_check_needs_variants_and_a_fp32_reference(tiny_bundle: Path) -> None:
    nothing = invoke("variants", "check", "--model-dir", tiny_bundle)
    assert nothing.exit_code == 2 and "only fp32 is on disk" in nothing.stderr
    with pytest.raises(InputError, match="MAX_DPROB or VARIANT=MAX_DPROB"):
        V.parse_tolerances(["q4=lots"])
    assert V.parse_tolerances(["0.2", "q4=0.3,bnb4=0.4"]) == {None: 0.2, "q4": 0.3, "bnb4": 0.4}


# --- bad input ------------------------------------------------------------------------------------


def test_no_model_onnx_to_build_from(tiny_bundle: Path) -> None:
    onnx_dir = tiny_bundle / "onnx"
    (onnx_dir / "model.onnx").rename(onnx_dir / "model_fp16.onnx")
    result = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "q4")
    assert result.exit_code == 2
    assert "no fp32 model to start from" in result.stderr and "onnx/model.onnx" in result.stderr


def test_a_model_without_matmul_skips_4bit_recipes_with_a_warning(tmp_path: Path) -> None:
    root = make_conv_only_bundle(tmp_path / "convnet")
    result = invoke("variants", "build", "--model-dir", root, "--only", "q4,bnb4,int8")
    assert result.exit_code == 0, result.output
    assert "warning: q4 skipped" in result.stderr and "warning: bnb4 skipped" in result.stderr
    assert "no MatMul" in result.stderr
    assert sorted(p.name for p in (root / "onnx").glob("*.onnx")) == ["model.onnx", "model_int8.onnx"]
    with pytest.raises(InputError, match=r"cannot be built .* no MatMul"):
        V.ensure_variant(Bundle.discover(root), "q4")


def test_read_only_output_folder(tiny_bundle: Path) -> None:
    onnx_dir = tiny_bundle / "onnx"
    onnx_dir.chmod(0o555)
    immutable = False
    try:
        probe = onnx_dir / ".probe"
        try:
            probe.write_bytes(b"")  # root ignores mode bits: make the folder immutable instead
            probe.unlink()
            immutable = subprocess.run(["chattr", "+i", str(onnx_dir)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a folder read-only here (root without chattr)")
        except PermissionError:
            pass
        result = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "int8")
        assert result.exit_code == 2
        assert "cannot write int8 into" in result.stderr and "writable" in result.stderr
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(onnx_dir)], check=True)
        onnx_dir.chmod(0o755)
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.onnx"]


def test_unknown_recipe_name(tiny_bundle: Path) -> None:
    result = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "fp16,int3")
    assert result.exit_code == 2
    assert "no recipe named 'int3'" in result.stderr and "fp16, int8, uint8, q4, q4f16, bnb4" in result.stderr
    assert not (tiny_bundle / "onnx" / "model_fp16.onnx").exists()  # names are checked before building


def test_corrupt_recipes_toml_names_line_and_key(tiny_bundle: Path) -> None:
    write_recipes(tiny_bundle, '[recipes.q4]\nmethod = "nbits"\nblock_size 32\n')
    result = invoke("variants", "build", "--model-dir", tiny_bundle)
    assert result.exit_code == 2
    assert "recipes.toml is not valid TOML" in result.stderr
    assert "line 3" in result.stderr and "[recipes.q4]" in result.stderr and "`block_size 32`" in result.stderr

    write_recipes(tiny_bundle, '# mine\n[recipes.q4]\nmethod = "nbits"\nblock_size = "big"\n')
    result = invoke("variants", "list", "--model-dir", tiny_bundle)
    assert result.exit_code == 0  # list reads no recipes
    result = invoke("variants", "build", "--model-dir", tiny_bundle, "--only", "q4")
    assert result.exit_code == 2
    assert "line 4: [recipes.q4] block_size must be int, got 'big'" in result.stderr

    for text, needle in [
        ('[recipes.q4]\nmethod = "nbits"\nblok_size = 32\n', "line 3: [recipes.q4] blok_size is not a parameter"),
        ('[recipes.q4]\nmethod = "int4"\n', "line 2: [recipes.q4] method must be one of fp16, dynamic, nbits, bnb4"),
        ('[recipes.q4]\nmethod = "nbits"\nblock_size = 24\n', "block_size must be a power of two"),
        ('[recipes.a]\nmethod = "nbits"\nbase = "b"\n[recipes.b]\nmethod = "fp16"\nbase = "a"\n', "form a cycle"),
        ('[recipes.bnb4]\nmethod = "bnb4"\nquant_type = "nf3"\n', "quant_type must be one of nf4, fp4"),
    ]:
        write_recipes(tiny_bundle, text)
        with pytest.raises(InputError) as err:
            V.load_recipes(Bundle.discover(tiny_bundle))
        assert needle in str(err.value)


def test_a_model_dir_recipes_toml_overrides_and_adds(tiny_bundle: Path) -> None:
    write_recipes(
        tiny_bundle,
        '[recipes.q4]\nmethod = "nbits"\nblock_size = 64\nis_symmetric = false\n'
        '[recipes.fp4]\nmethod = "bnb4"\nquant_type = "fp4"\n',
    )
    bundle = Bundle.discover(tiny_bundle)
    assert V.recipe_names(bundle) == [*DEFAULT_RECIPES, "fp4"]
    V.build_variants(bundle, only=["q4", "fp4"])
    infos = {i.variant: i for i in V.list_variants(bundle)}
    assert infos["q4"].precision == "int4 MatMulNBits, block 64, asym; rest fp32"
    assert infos["fp4"].precision == "fp4 MatMulBnb4, block 64; rest fp32"
    assert infos["q4"].recipe["recipes_file"] == str(tiny_bundle / "recipes.toml")


def test_external_data_models_are_refused_clearly(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "ext")
    model_path = root / "onnx" / "model.onnx"
    onnx.save_model(
        onnx.load(model_path),
        model_path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    result = invoke("variants", "build", "--model-dir", root, "--only", "q4")
    assert result.exit_code == 2
    assert "external data" in result.stderr and "not support" in result.stderr
    assert not (root / "onnx" / "model_q4.onnx").exists()


def test_check_on_a_provider_that_cannot_run_exits_3(tiny_bundle: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine may really run TensorRT")
    V.build_variants(Bundle.discover(tiny_bundle), only=["fp16"])
    result = invoke("variants", "check", "--model-dir", tiny_bundle, "--provider", "tensorrt")
    assert result.exit_code == 3
    assert "the fp32 reference cannot run on tensorrt" in result.stderr


def test_check_can_probe_with_real_images(tiny_bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    V.build_variants(Bundle.discover(tiny_bundle), only=["int8"])
    result = invoke(
        "variants", "check", "--model-dir", tiny_bundle, "--images", tmp_path / "imgs", "--probe-size", "6", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["probe"]["kind"] == "images" and report["probe"]["n"] == 5 and report["probe"]["skipped"] == 1
    assert report["probe"]["shape"] == [5, 3, 32, 32]
    assert report["variants"][0]["status"] == "ok"
    empty = invoke("variants", "check", "--model-dir", tiny_bundle, "--images", folder / "none")
    assert empty.exit_code == 2


def test_a_variant_built_from_an_older_base_is_rebuilt(tmp_path: Path) -> None:
    from bench.bundle import Bundle
    from bench.variants import ensure_variant, stale_reason

    from models import make_bundle

    root = make_bundle(tmp_path / "m")
    bundle = Bundle.discover(root)
    first = ensure_variant(bundle, "int8").read_bytes()
    bundle.refresh()
    assert stale_reason(bundle, "int8") is None
    make_bundle(root, seed=1)  # a new fp32 file replaces the old one
    assert "int8 is stale: model.onnx changed" in stale_reason(bundle, "int8")
    lines: list[str] = []
    assert ensure_variant(bundle, "int8", allow_build=False, log=lines.append).read_bytes() == first
    assert lines and lines[0].startswith("warning: int8 is stale")
    rebuilt = ensure_variant(bundle, "int8", log=lines.append)
    assert rebuilt.read_bytes() != first and any("rebuilding" in line for line in lines)
    bundle.refresh()
    assert stale_reason(bundle, "int8") is None


def test_fp16_of_a_graph_with_a_noop_float_cast_loads(tmp_path: Path) -> None:
    """PyTorch's attention export has Softmax → Cast(to=float); the fp16 build must still load in ORT."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bench.bundle import Bundle
    from bench.engine import Engine
    from bench.variants import ensure_variant

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((48, 2)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["pixel_values", "shape"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["sm"], axis=-1),
        helper.make_node("Cast", ["sm"], ["cast"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["cast", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["b", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "m" / "onnx").mkdir(parents=True)
    onnx.save_model(model, tmp_path / "m" / "onnx" / "model.onnx")
    fp16 = ensure_variant(Bundle.discover(tmp_path / "m"), "fp16")
    engine = Engine(fp16)
    assert engine.run(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 2)

"""Evaluation: batched inference on real ONNX files and real images, bad input, agreement, ``bench eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.bundle import Bundle
from bench.cli import main
from bench.datasets import load_labelled_set
from bench.engine import Engine
from bench.errors import InputError
from bench.evaluate import add_agreement, evaluate_engine
from bench.preprocess import PreprocessConfig
from bench.results import CellResult, RunResult

from models import make_bundle, make_classifier

LABELS = {0: "Deepfake", 1: "Real"}


def write_set(root: Path, n_per_class: int = 4, seed: int = 0) -> Path:
    """real/ and fake/ folders of small random RGB PNGs of varied sizes (resize is exercised)."""
    rng = np.random.default_rng(seed)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            side = 24 + 8 * i
            Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def add_bad_files(root: Path) -> None:
    (root / "fake" / "zero.png").write_bytes(b"")
    (root / "fake" / "truncated.png").write_bytes((root / "fake" / "0.png").read_bytes()[:60])
    (root / "real" / "notes.jpg").write_text("this is text, not a JPEG")


@pytest.fixture
def two_variants(tiny_bundle: Path) -> Path:
    """The tiny bundle plus a differently seeded model as variant ``alt``."""
    make_classifier(tiny_bundle / "onnx" / "model_alt.onnx", seed=7)
    return tiny_bundle


def items_of(root: Path, positive: int = 0) -> list[tuple[Path, int | None]]:
    return load_labelled_set(root).indexed(LABELS, positive)


def test_p_fake_matches_an_independent_ort_run_and_metrics_match_predictions(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds")
    engine = Engine(tiny_bundle / "onnx" / "model.onnx")
    bundle = Bundle.discover(tiny_bundle)
    acc = evaluate_engine(
        engine,
        items_of(ds),
        LABELS,
        0,
        batch_size=3,
        root=ds,
        preprocess=bundle.preprocess_config(engine.input.image_hw()),
    )
    assert acc["n"] == 8 and acc["skipped"] == [] and acc["positive_label"] == "Deepfake"
    assert acc["agreement"] is None and acc["images_per_s"] > 0
    # Independent path: PIL bilinear to 32×32, /255, (x − 0.5)/0.5, plain ORT session; fake = column 0.
    session = ort.InferenceSession(str(tiny_bundle / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for pred in acc["predictions"]:
        img = Image.open(ds / pred["path"]).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
        x = ((np.asarray(img, np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
        logits = session.run(None, {"pixel_values": x})[0][0].astype(np.float64)
        expected = np.exp(logits[0]) / np.exp(logits).sum()
        assert pred["p_fake"] == pytest.approx(expected, abs=1e-5)
        assert pred["label"] == ("Deepfake" if pred["path"].startswith("fake/") else "Real")
        assert pred["pred"] == ("Deepfake" if pred["p_fake"] >= 0.5 else "Real")
    right = sum((p["p_fake"] >= 0.5) == p["path"].startswith("fake/") for p in acc["predictions"])
    assert acc["accuracy"] == pytest.approx(right / 8)
    tp = sum(p["p_fake"] >= 0.5 and p["path"].startswith("fake/") for p in acc["predictions"])
    assert acc["confusion"][1][1] == tp and sum(map(sum, acc["confusion"])) == 8


def test_labelled_set_input_and_preprocessing_read_from_the_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    cfg_path = tiny_bundle / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(image_mean=[0.2, 0.3, 0.4], image_std=[0.25, 0.2, 0.3], resample=0)
    cfg_path.write_text(json.dumps(cfg))
    ds = write_set(tmp_path / "ds", n_per_class=2)
    (tmp_path / "ds" / "list.csv").write_text("path,label\nreal/0.png,real\nfake/1.png,fake\nfake/gone.png,fake\n")
    lset = load_labelled_set(ds / "list.csv")
    engine = Engine(tiny_bundle / "onnx" / "model.onnx")
    implicit = evaluate_engine(engine, lset, LABELS, 0)  # as bench matrix calls it: no preprocess, no root
    explicit = evaluate_engine(
        engine, lset, LABELS, 0, preprocess=Bundle.discover(tiny_bundle).preprocess_config((32, 32))
    )
    hf_defaults = evaluate_engine(engine, lset, LABELS, 0, preprocess=PreprocessConfig(height=32, width=32))
    assert implicit["skipped"] == [{"path": "fake/gone.png", "reason": "file not found"}]
    assert [p["path"] for p in implicit["predictions"]] == ["real/0.png", "fake/1.png"]
    assert [p["label"] for p in implicit["predictions"]] == ["Real", "Deepfake"]
    assert implicit["predictions"] == explicit["predictions"]
    assert implicit["predictions"] != hf_defaults["predictions"]
    with pytest.raises(InputError, match="--positive-label"):
        evaluate_engine(engine, lset, LABELS, None)


def test_batch_size_does_not_change_predictions(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=3)
    engine = Engine(tiny_bundle / "onnx" / "model.onnx")
    one = evaluate_engine(engine, items_of(ds), LABELS, 0, batch_size=1, root=ds)
    many = evaluate_engine(engine, items_of(ds), LABELS, 0, batch_size=4, root=ds)
    assert [p["path"] for p in one["predictions"]] == [p["path"] for p in many["predictions"]]
    assert np.allclose([p["p_fake"] for p in one["predictions"]], [p["p_fake"] for p in many["predictions"]], atol=1e-6)


def test_fixed_batch_model_pads_the_last_batch(tmp_path: Path) -> None:
    model = make_classifier(tmp_path / "fixed.onnx", batch=2)
    free = make_classifier(tmp_path / "free.onnx")
    ds = write_set(tmp_path / "ds", n_per_class=2)
    items = items_of(ds)[:3]  # 3 images through a batch-2 model: the last batch is padded
    fixed = evaluate_engine(Engine(model), items, LABELS, 0, batch_size=32, root=ds)
    ref = evaluate_engine(Engine(free), items, LABELS, 0, batch_size=32, root=ds)
    assert fixed["n"] == 3 and fixed["batch_size"] == 2
    assert np.allclose([p["p_fake"] for p in fixed["predictions"]], [p["p_fake"] for p in ref["predictions"]])


def test_corrupt_zero_byte_and_non_image_files_are_skipped_and_listed(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=2)
    add_bad_files(ds)
    engine = Engine(tiny_bundle / "onnx" / "model.onnx")
    acc = evaluate_engine(engine, items_of(ds), LABELS, 0, batch_size=2, root=ds)
    assert acc["n"] == 4
    reasons = {s["path"]: s["reason"] for s in acc["skipped"]}
    assert reasons["fake/zero.png"] == "corrupt: empty file (0 bytes)"
    assert reasons["fake/truncated.png"].startswith("corrupt: PNG image does not decode")
    assert reasons["real/notes.jpg"].startswith("unsupported: not an image type we accept")
    assert "0x" not in reasons["fake/truncated.png"]
    assert {p["path"] for p in acc["predictions"]}.isdisjoint(reasons)
    with pytest.raises(InputError, match=r"fake/truncated.png: .*drop --strict"):
        evaluate_engine(engine, items_of(ds), LABELS, 0, root=ds, strict=True)


def test_nothing_decodable_is_an_input_error(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="no image could be evaluated: 1 skipped"):
        evaluate_engine(Engine(tiny_bundle / "onnx" / "model.onnx"), [(tmp_path / "fake" / "zero.png", 0)], LABELS, 0)


def test_unlabelled_items_give_predictions_and_null_metrics(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=2)
    items = [(p, None) for p, _ in items_of(ds)]
    acc = evaluate_engine(Engine(tiny_bundle / "onnx" / "model.onnx"), items, LABELS, 0, root=ds)
    assert acc["n"] == 4 and len(acc["predictions"]) == 4
    assert acc["accuracy"] is None and acc["roc_auc"] is None and acc["confusion"] is None
    assert acc["reasons"]["accuracy"] == "no labels"
    assert all(p["label"] is None for p in acc["predictions"])


def test_config_label_count_must_match_the_model(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=1)
    three = {0: "Deepfake", 1: "Real", 2: "Other"}
    with pytest.raises(InputError, match="names 3 labels"):
        evaluate_engine(Engine(tiny_bundle / "onnx" / "model.onnx"), items_of(ds), three, 0)


def _cell(variant: str, provider: str, p_fake: dict[str, float], status: str = "ok") -> CellResult:
    preds = [{"path": k, "p_fake": v, "label": None, "pred": None} for k, v in p_fake.items()]
    return CellResult(
        variant=variant,
        provider=provider,
        batch_size=1,
        status=status,
        accuracy={"n": len(preds), "predictions": preds, "agreement": None, "reasons": {}},
    )


def test_add_agreement_prefers_the_same_provider_then_any() -> None:
    cells = [
        _cell("fp32", "cpu", {"a": 0.2, "b": 0.6}),
        _cell("fp32", "cuda", {"a": 0.3, "b": 0.3}),
        _cell("int8", "cuda", {"a": 0.3, "b": 0.9}),
        _cell("int8", "tensorrt", {"b": 0.6, "a": 0.7, "c": 0.1}),  # no fp32 on tensorrt → any provider (cpu)
        _cell("q4", "cpu", {"z": 0.5}),
        _cell("fp16", "cpu", {}, status="failed"),
    ]
    add_agreement(cells, "fp32")
    assert cells[0].accuracy["agreement"]["flip_rate"] == 0.0
    int8_cuda = cells[2].accuracy["agreement"]
    assert int8_cuda["reference_provider"] == "cuda"
    assert int8_cuda["flip_rate"] == pytest.approx(0.5) and int8_cuda["max_abs_dp"] == pytest.approx(0.6)
    int8_trt = cells[3].accuracy["agreement"]
    assert int8_trt["reference_provider"] == "cpu" and int8_trt["n"] == 2  # matched by path; "c" has no partner
    assert int8_trt["flip_rate"] == pytest.approx(0.5) and int8_trt["mean_abs_dp"] == pytest.approx(0.25)
    assert cells[4].accuracy["agreement"] is None
    assert "no image in common" in cells[4].accuracy["reasons"]["agreement"]
    add_agreement(cells, "bnb4")
    assert "'bnb4' has no evaluated cell" in cells[0].accuracy["reasons"]["agreement"]


# --- bench eval -----------------------------------------------------------------------------------------


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, ["eval", *args])


def test_cli_eval_json_two_variants_with_default_reference(two_variants: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds")
    add_bad_files(ds)
    out = tmp_path / "out"
    res = invoke(
        "--model-dir",
        str(two_variants),
        "--dataset",
        str(ds),
        "--variant",
        "fp32,alt",
        "--batch-size",
        "3",
        "--json",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout holds exactly one JSON document
    assert doc["config"]["command"] == "eval" and doc["config"]["reference"] == "fp32"
    assert doc["dataset"]["n"] == 11
    fp32, alt = doc["cells"]
    assert (fp32["variant"], alt["variant"]) == ("fp32", "alt") and fp32["status"] == alt["status"] == "ok"
    for cell in (fp32, alt):
        acc = cell["accuracy"]
        assert acc["n"] == 8 and len(acc["skipped"]) == 3 and acc["positive_label"] == "Deepfake"
        assert set(acc) >= {
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "average_precision",
            "eer",
            "eer_threshold",
            "log_loss",
            "ece",
            "confusion",
            "agreement",
            "predictions",
            "images_per_s",
        }
    assert fp32["accuracy"]["agreement"]["flip_rate"] == 0.0
    flips = sum(
        (a["p_fake"] >= 0.5) != (b["p_fake"] >= 0.5)
        for a, b in zip(fp32["accuracy"]["predictions"], alt["accuracy"]["predictions"], strict=True)
    )
    assert alt["accuracy"]["agreement"]["flip_rate"] == pytest.approx(flips / 8)
    loaded = RunResult.load(out)
    assert loaded.cells[1].accuracy["agreement"]["reference"] == "fp32"
    assert "accuracy.roc_auc" in (out / "results.csv").read_text().splitlines()[0]


def test_cli_eval_table_from_a_temp_dir_with_env_defaults(
    two_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=2)
    (ds / "fake" / "zero.png").write_bytes(b"")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("BENCH_MODEL_DIR", str(two_variants))
    monkeypatch.setenv("BENCH_DATASET", str(ds))
    res = invoke("--variant", "alt", "--reference", "fp32")
    assert res.exit_code == 0, res.output
    for text in (
        "bench eval",
        "accuracy",
        "flip rate",
        "alt",
        "fp32",
        "agreement vs fp32",
        "skipped 1: fake/zero.png: corrupt: empty file (0 bytes)",
    ):
        assert text in res.stdout, text


def test_cli_eval_strict_fails_on_a_corrupt_image(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=1)
    (ds / "real" / "zero.png").write_bytes(b"")
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds), "--strict")
    assert res.exit_code == 2
    assert "real/zero.png: empty file (0 bytes)" in res.stderr and "--strict" in res.stderr


def test_cli_eval_unknown_label_exits_2_naming_it(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=1)
    (ds / "fake").rename(ds / "Cartoon")
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds))
    assert res.exit_code == 2
    assert "'Cartoon' (1 images) matches no model label (0=Deepfake, 1=Real)" in res.stderr


def test_cli_eval_one_class_set_reports_null_auc_with_reason(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=3)
    for f in (ds / "real").iterdir():
        f.unlink()
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds), "--json")
    assert res.exit_code == 0, res.output
    acc = json.loads(res.stdout)["cells"][0]["accuracy"]
    assert acc["n"] == 3 and acc["roc_auc"] is None and acc["eer"] is None and acc["average_precision"] is None
    assert "only one class (fake)" in acc["reasons"]["roc_auc"]
    assert "holds no images" in res.stderr  # the empty real/ folder is a warning, not an error
    table = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds))
    assert table.exit_code == 0 and "only one class (fake)" in table.stdout


def test_cli_eval_manifest_with_a_missing_file(tiny_bundle: Path, tmp_path: Path) -> None:
    manifest = write_set(tmp_path / "ds", n_per_class=1) / "list.csv"
    manifest.write_text("path,label\nreal/0.png,real\nfake/0.png,fake\nfake/missing.png,fake\n")
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(manifest), "--json")
    assert res.exit_code == 0, res.output
    acc = json.loads(res.stdout)["cells"][0]["accuracy"]
    assert acc["n"] == 2 and acc["skipped"] == [{"path": "fake/missing.png", "reason": "file not found"}]
    strict = invoke("--model-dir", str(tiny_bundle), "--dataset", str(manifest), "--strict")
    assert strict.exit_code == 2 and "fake/missing.png not found" in strict.stderr


def test_cli_eval_images_folder_reports_agreement_only(two_variants: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "imgs", n_per_class=2)
    res = invoke(
        "--model-dir", str(two_variants), "--images", str(ds), "--variant", "alt", "--reference", "fp32", "--json"
    )
    assert res.exit_code == 0, res.output
    cells = {c["variant"]: c for c in json.loads(res.stdout)["cells"]}
    assert set(cells) == {"alt", "fp32"}
    acc = cells["alt"]["accuracy"]
    assert acc["accuracy"] is None and acc["reasons"]["accuracy"] == "no labels"
    assert acc["agreement"]["reference"] == "fp32" and 0.0 <= acc["agreement"]["flip_rate"] <= 1.0
    assert acc["agreement"]["mean_abs_dp"] > 0  # two different models do not agree exactly


def test_cli_eval_positive_label_rules(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "pets", labels=("cat", "dog"))
    ds = tmp_path / "ds"
    write_set(ds, n_per_class=1)
    (ds / "real").rename(ds / "cat")
    (ds / "fake").rename(ds / "dog")
    none = invoke("--model-dir", str(bundle), "--dataset", str(ds), "--json")
    assert none.exit_code == 3
    cell = json.loads(none.stdout)["cells"][0]
    assert cell["status"] == "unavailable" and "no label names the fake class" in cell["reason"]
    ok = invoke("--model-dir", str(bundle), "--dataset", str(ds), "--positive-label", "dog", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["cells"][0]["accuracy"]["positive_label"] == "dog"
    bad = invoke("--model-dir", str(bundle), "--dataset", str(ds), "--positive-label", "horse")
    assert bad.exit_code == 2 and "'horse' matches no label" in bad.stderr


def test_cli_eval_bad_flags_exit_2(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=1)
    base = ("--model-dir", str(tiny_bundle), "--dataset", str(ds))
    assert invoke(*base, "--threshold", "1.5").exit_code == 2
    assert invoke(*base, "--batch-size", "0").exit_code == 2
    assert invoke(*base, "--images", str(ds)).exit_code == 2
    res = invoke(*base, "--variant", "nosuch")
    assert res.exit_code == 2 and "nosuch" in res.stderr


def test_cli_eval_unavailable_provider_is_a_cell_and_exit_3(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.engine

    real = bench.engine.compiled_in
    monkeypatch.setattr(
        bench.engine,
        "compiled_in",  # the provider list is the boundary we fake
        lambda p: (False, "CUDAExecutionProvider is not in this build") if p == "cuda" else real(p),
    )
    ds = write_set(tmp_path / "ds", n_per_class=1)
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds), "--provider", "cpu,cuda", "--json")
    assert res.exit_code == 3
    cells = {c["provider"]: c for c in json.loads(res.stdout)["cells"]}
    assert cells["cpu"]["status"] == "ok" and cells["cpu"]["accuracy"]["n"] == 2
    assert cells["cuda"]["status"] == "unavailable" and "not in this build" in cells["cuda"]["reason"]
    assert cells["cuda"]["accuracy"] is None


def test_cli_eval_records_intervals_clean_and_perturbed_over_the_manifests_groups(
    two_variants: Path, tmp_path: Path
) -> None:
    """A `path,label,group` manifest: every figure gets its `<metric>_ci` over groups (clean and under a
    perturbation), predictions carry their group, and the agreement holds the paired drop and ΔAUC with intervals
    — None, with the reason, for the reference against itself."""
    ds = write_set(tmp_path / "ds", n_per_class=6)
    rows = [f"{cls}/{i}.png,{cls},{cls}-video{i // 2}" for cls in ("real", "fake") for i in range(6)]
    (ds / "manifest.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    res = invoke(
        "--model-dir", str(two_variants), "--dataset", str(ds), "--variant", "fp32,alt", "--perturb", "jpeg:50",
        "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    fp32, alt = json.loads(res.stdout)["cells"]
    ci_keys = [f"{m}_ci" for m in ("accuracy", "balanced_accuracy", "precision", "recall")]
    ci_keys += [f"{m}_ci" for m in ("roc_auc", "average_precision", "eer", "ece")]
    for acc in (alt["accuracy"], alt["accuracy"]["perturbations"][0]):
        assert acc["ci_unit"] == "group" and acc["n_groups"] == 6
        assert set(ci_keys) <= set(acc)
        low, high = acc["accuracy_ci"]
        assert low <= acc["accuracy"] <= high
        for name in ci_keys:  # an interval, or None with the figure's reason (precision with nothing called fake)
            field = name.removesuffix("_ci")
            assert acc[name] is not None or acc[field] is None or name in acc["reasons"], name
    assert {p["group"] for p in alt["accuracy"]["predictions"]} == {
        f"{c}-video{i}" for c in ("real", "fake") for i in (0, 1, 2)
    }
    paired = alt["accuracy"]["agreement"]
    assert paired["accuracy_drop_pt_ci"][0] <= paired["accuracy_drop_pt"] <= paired["accuracy_drop_pt_ci"][1]
    assert paired["roc_auc_delta_ci"] is not None and sum(paired["discordant"]) <= 12
    assert alt["accuracy"]["perturbations"][0]["agreement"]["accuracy_drop_pt_ci"] is not None
    reference = fp32["accuracy"]
    assert reference["agreement"]["accuracy_drop_pt"] is None and reference["agreement"]["roc_auc_delta_ci"] is None
    assert "accuracy_drop_pt" not in reference["reasons"]  # nothing to differ: no reason to give
    assert reference["roc_auc_ci"] is not None  # the reference's own figures have intervals all the same


# --- detector figures (issue 27): threshold transfer, flips by batch, groups, preprocessing, report -------------


def _labelled_cell(
    variant: str, p_fake: list[float], labels: list[str], batches: dict[str, list[float]] | None = None
) -> CellResult:
    pairs = enumerate(zip(p_fake, labels, strict=True))
    preds = [{"path": f"{i}.png", "p_fake": p, "label": lab, "pred": None} for i, (p, lab) in pairs]
    acc = {"n": len(preds), "predictions": preds, "agreement": None, "reasons": {}, "positive_label": "Deepfake"}
    acc["threshold"] = 0.5
    if batches:
        acc["batch_p_fake"] = batches
    return CellResult(variant=variant, provider="cpu", batch_size=32, status="ok", accuracy=acc)


def test_threshold_transfer_applies_the_references_threshold_to_every_variant() -> None:
    rng = np.random.default_rng(0)
    labels = ["Real"] * 200 + ["Deepfake"] * 100
    ref_p = np.r_[rng.uniform(0, 0.8, 200), rng.uniform(0.3, 1.0, 100)]
    shifted = np.clip(ref_p + 0.03, 0, 1)  # a quantised variant whose scores moved up
    cells = [_labelled_cell("fp32", ref_p.tolist(), labels), _labelled_cell("int8", shifted.tolist(), labels)]
    add_agreement(cells, "fp32", target_fpr=0.01)
    ref, cur = (c.accuracy["threshold_transfer"] for c in cells)
    # independent: the threshold is the 3rd highest real score's (2 false alarms allowed at 1 % of 200)
    reals = np.sort(ref_p[:200])[::-1]
    assert (
        ref["threshold"] == pytest.approx(reals[1]) and ref["false_alarms"] == 2 and ref["fpr"] == pytest.approx(0.01)
    )
    assert cur["threshold"] == ref["threshold"] and cur["reference"] == "fp32"
    assert cur["false_alarms"] == int((shifted[:200] >= ref["threshold"]).sum()) > 2  # its FPR moved above 1 %
    assert cur["tpr"] == pytest.approx(float((shifted[200:] >= ref["threshold"]).mean()))
    assert cur["fpr_ci"][0] <= cur["fpr"] <= cur["fpr_ci"][1]
    small = [_labelled_cell("fp32", [0.1, 0.9], ["Real", "Deepfake"])]
    add_agreement(small, "fp32")
    assert small[0].accuracy["threshold_transfer"] is None
    assert "needs at least 100 real images" in small[0].accuracy["reasons"]["threshold_transfer"]


def test_batch_flips_compare_with_the_reference_at_the_same_batch() -> None:
    labels = ["Real", "Deepfake", "Real", "Deepfake"]
    ref = _labelled_cell("fp32", [0.2, 0.8, 0.4, 0.6], labels, {"1": [0.2, 0.8, 0.4, 0.6], "32": [0.2, 0.8, 0.4, 0.6]})
    cur = _labelled_cell(
        "int8", [0.2, 0.8, 0.4, 0.6], labels, {"1": [0.2, 0.8, 0.55, 0.45], "32": [0.2, 0.8, 0.4, 0.6]}
    )
    add_agreement([ref, cur], "fp32")
    rows = {r["batch_size"]: r for r in cur.accuracy["batch_flips"]}
    assert (rows[1]["flips"], rows[1]["n"], rows[32]["flips"]) == (2, 4, 0)
    assert rows[1]["flip_rate"] == pytest.approx(0.5) and rows[1]["reference"] == "fp32"


def test_cli_eval_records_preprocessing_groups_flips_audit_and_the_report_shows_them(
    two_variants: Path, tmp_path: Path
) -> None:
    import hashlib

    ds = write_set(tmp_path / "ds", n_per_class=6)
    rows = [
        f"{cls}/{i}.png,{cls},gen{i % 2},{hashlib.sha256((ds / cls / f'{i}.png').read_bytes()).hexdigest()}"
        for cls in ("real", "fake")
        for i in range(6)
    ]
    (ds / "manifest.csv").write_text("path,label,group,sha256\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    res = invoke(
        "--model-dir", str(two_variants), "--dataset", str(ds), "--variant", "fp32,alt", "--flip-batch-sizes", "1,3",
        "--json", "--out", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    document = json.loads(res.stdout)
    alt = document["cells"][1]
    acc = alt["accuracy"]
    assert acc["preprocessing"] == {
        "height": 32, "width": 32, "resample": "bilinear", "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }  # fmt: skip
    assert acc["batch_size"] == 32 and sorted(acc["batch_p_fake"]) == ["1", "3", "32"]
    assert [r["batch_size"] for r in acc["batch_flips"]] == [1, 3, 32]
    slices = {s["group"]: s for s in acc["group_slices"]}
    assert set(slices) == {"gen0", "gen1"} and sum(s["n"] for s in slices.values()) == 12
    expected = [p for p in acc["predictions"] if p["group"] == "gen0"]
    right = sum((p["pred"] == p["label"]) for p in expected)
    assert slices["gen0"]["accuracy"] == pytest.approx(right / len(expected))
    assert acc["threshold_transfer"] is None and "real images" in acc["reasons"]["threshold_transfer"]
    assert set(acc["tpr_at_fpr"]) == {"0.01", "0.001"} and acc["brier"] is not None and "reliability" in acc
    assert document["dataset"]["audit"]["n"] == 12 and document["config"]["flip_batch_sizes"] == [1, 3, 32]
    report = CliRunner().invoke(main, ["report", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "### 2.5 Detector" in text and "#### Per group" in text and "#### Decisions by batch size" in text
    assert "plots/reliability_alt.png" in text and (out / "plots" / "reliability_fp32.png").stat().st_size > 1000
    thai = (out / "report.th.md").read_text(encoding="utf-8") if (out / "report.th.md").exists() else ""
    if not thai:
        assert CliRunner().invoke(main, ["report", str(out), "--lang", "th"]).exit_code == 0
        thai = (out / "report.th.md").read_text(encoding="utf-8")
    assert "การย้ายค่าเกณฑ์" in thai and "แผนภาพความน่าเชื่อถือ" in thai


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_mean", "half"), ("image_std", [0.5, 0.0, 0.5]), ("size", {"height": "big", "width": 32}), ("resample", 9)],
)
def test_a_malformed_preprocessor_config_is_exit_2_naming_file_and_field(
    tiny_bundle: Path, tmp_path: Path, field: str, value: object
) -> None:
    config = tiny_bundle / "preprocessor_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {field: value}))
    ds = write_set(tmp_path / "ds", n_per_class=1)
    res = invoke("--model-dir", str(tiny_bundle), "--dataset", str(ds))
    assert res.exit_code == 2, res.output
    assert "preprocessor_config.json" in res.output and f"field '{field}" in res.output  # size → 'size.height'
    assert "inference failed" not in res.output

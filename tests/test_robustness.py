"""Robustness evaluation: accuracy under perturbations on real ONNX files and real images, the CLI, the
report's robustness section and checks, and the compare rows for perturbed accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_evaluate import LABELS, write_set

import bench.evaluate as evaluate_module
from bench.bundle import Bundle
from bench.cli import main
from bench.compare import Tolerances
from bench.datasets import load_labelled_set
from bench.engine import Engine
from bench.evaluate import ImageSource, add_agreement, evaluate_engine, labelled_set_evaluator
from bench.metrics import binary_metrics
from bench.perturb import parse_perturbations
from bench.report import load_policy, write_report
from bench.report.policy import NOT_APPLICABLE, NOT_MEASURED, evaluate_policy, robustness_key
from bench.results import CellResult, RunResult
from bench.robustness_compare import perturbed_accuracy_rows

from models import make_classifier

SPECS = ["jpeg:30", "blur:2+noise:0.05"]


def evaluate(bundle_dir: Path, ds: Path, model: str = "model.onnx", **kw: object) -> dict:
    engine = Engine(bundle_dir / "onnx" / model)
    bundle = Bundle.discover(bundle_dir)
    items = load_labelled_set(ds).indexed(LABELS, 0)
    return evaluate_engine(
        engine,
        items,
        LABELS,
        0,
        batch_size=3,
        root=ds,
        preprocess=bundle.preprocess_config(engine.input.image_hw()),
        perturbations=parse_perturbations(SPECS),
        **kw,  # type: ignore[arg-type]
    )


def test_each_perturbation_is_scored_against_its_own_predictions_and_the_clean_pass(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=5)
    acc = evaluate(tiny_bundle, ds)
    entries = acc["perturbations"]
    assert [e["perturbation"] for e in entries] == SPECS  # clean is the accuracy object itself
    clean_p = np.array([p["p_fake"] for p in acc["predictions"]])
    for entry in entries:
        preds = entry["predictions"]
        assert [p["path"] for p in preds] == [p["path"] for p in acc["predictions"]]
        p = np.array([x["p_fake"] for x in preds])
        y = np.array([int(x["label"] == "Deepfake") for x in preds])
        assert not np.allclose(p, clean_p)  # the perturbation really reached the model
        again = binary_metrics(y, p)  # every figure recomputes from the stored predictions
        for name in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "eer", "ece"):
            assert entry[name] == pytest.approx(again[name])
        vs = entry["vs_clean"]
        assert vs["delta_roc_auc"] == pytest.approx(entry["roc_auc"] - acc["roc_auc"])
        assert vs["delta_accuracy"] == pytest.approx(entry["accuracy"] - acc["accuracy"])
        assert vs["flip_rate"] == pytest.approx(((p >= 0.5) != (clean_p >= 0.5)).mean())
        assert vs["max_abs_dp"] == pytest.approx(np.abs(p - clean_p).max())


def test_images_are_decoded_once_for_every_perturbation_and_every_variant(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=3)
    (ds / "fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    make_classifier(tiny_bundle / "onnx" / "model_alt.onnx", seed=7)
    calls: list[Path] = []
    real = evaluate_module.load_image
    monkeypatch.setattr(evaluate_module, "load_image", lambda p: calls.append(p) or real(p))
    items = load_labelled_set(ds).indexed(LABELS, 0)
    source = ImageSource([p for p, _ in items], cache_bytes=1 << 26, workers=2)
    first = evaluate(tiny_bundle, ds, source=source)
    second = evaluate(tiny_bundle, ds, "model_alt.onnx", source=source)
    assert sorted(calls) == sorted(p for p, _ in items)  # 7 files, each read once across 2 variants × 3 passes
    for acc in (first, second):
        assert acc["n"] == 6 and [s["path"] for s in acc["skipped"]] == ["fake/broken.png"]
        assert all(e["n"] == 6 for e in acc["perturbations"])
    # same images, same seeded noise: the shared cache changes nothing
    alone = evaluate(tiny_bundle, ds)
    assert alone["perturbations"] == [
        {**e, "wall_s": a["wall_s"]} for e, a in zip(first["perturbations"], alone["perturbations"], strict=True)
    ]


def test_a_one_class_set_reports_two_class_metrics_as_null_with_the_reason(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=3)
    for f in (ds / "real").iterdir():
        f.unlink()
    (ds / "real").rmdir()
    acc = evaluate(tiny_bundle, ds)
    for entry in acc["perturbations"]:
        assert entry["accuracy"] is not None
        for name in ("roc_auc", "average_precision", "eer"):
            assert entry[name] is None and "only one class" in entry["reasons"][name]
        assert entry["vs_clean"]["delta_roc_auc"] is None
        assert "only one class" in entry["vs_clean"]["reasons"]["delta_roc_auc"]
        assert entry["vs_clean"]["delta_accuracy"] is not None


def test_agreement_under_each_perturbation_is_against_the_reference_under_the_same_one(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=4)
    make_classifier(tiny_bundle / "onnx" / "model_alt.onnx", seed=7)
    ref = CellResult("fp32", "cpu", 3, accuracy=evaluate(tiny_bundle, ds))
    alt = CellResult("alt", "cpu", 3, accuracy=evaluate(tiny_bundle, ds, "model_alt.onnx"))
    add_agreement([ref, alt], "fp32")
    for mine, theirs in zip(alt.accuracy["perturbations"], ref.accuracy["perturbations"], strict=True):
        a = np.array([p["p_fake"] for p in mine["predictions"]])
        r = np.array([p["p_fake"] for p in theirs["predictions"]])
        assert mine["agreement"]["flip_rate"] == pytest.approx(((a >= 0.5) != (r >= 0.5)).mean())
        assert mine["agreement"]["max_abs_dp"] == pytest.approx(np.abs(a - r).max())
    # the reference evaluated without that perturbation: null with the reason
    ref.accuracy["perturbations"] = ref.accuracy["perturbations"][:1]
    add_agreement([ref, alt], "fp32")
    last = alt.accuracy["perturbations"][1]
    assert last["agreement"] is None and "not evaluated under blur:2+noise:0.05" in last["reasons"]["agreement"]


def test_the_matrix_cell_evaluator_passes_the_specs_through(tiny_bundle: Path, tmp_path: Path) -> None:
    ds = write_set(tmp_path / "ds", n_per_class=2)
    run = labelled_set_evaluator(Bundle.discover(tiny_bundle), {"dataset": str(ds), "perturb": ["jpeg:50"]}, 4)
    acc = run(Engine(tiny_bundle / "onnx" / "model.onnx"))
    assert [e["perturbation"] for e in acc["perturbations"]] == ["jpeg:50"]


# --- CLI, report, policy, compare ----------------------------------------------------------------


@pytest.fixture
def eval_run(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, dict]:
    make_classifier(tiny_bundle / "onnx" / "model_alt.onnx", seed=7)
    ds = write_set(tmp_path / "ds", n_per_class=4)
    out = tmp_path / "run"
    args = ["eval", "--model-dir", str(tiny_bundle), "--dataset", str(ds), "--variant", "fp32,alt"]
    args += ["--perturb", "jpeg:75,50", "--perturb", "blur:1", "--out", str(out), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_bench_eval_perturb_end_to_end(eval_run: tuple[Path, dict]) -> None:
    out, doc = eval_run
    assert doc["config"]["perturbations"] == ["clean", "jpeg:75", "jpeg:50", "blur:1"]
    alt = next(c for c in doc["cells"] if c["variant"] == "alt")["accuracy"]
    assert [e["perturbation"] for e in alt["perturbations"]] == ["jpeg:75", "jpeg:50", "blur:1"]
    assert all(e["agreement"]["reference"] == "fp32" for e in alt["perturbations"])
    RunResult.load(out)  # the written file passes the results contract


@pytest.mark.parametrize(("spec", "says"), [("jpeg:0", "1–100"), ("resize:2", "0 < F < 1")])
def test_bench_eval_bad_perturb_is_exit_2_naming_the_range(tiny_bundle: Path, spec: str, says: str) -> None:
    res = CliRunner().invoke(main, ["eval", "--model-dir", str(tiny_bundle), "--perturb", spec])
    assert res.exit_code == 2 and says in res.output


def test_report_has_a_robustness_section_heatmap_and_marked_checks(eval_run: tuple[Path, dict]) -> None:
    out, _ = eval_run
    result = RunResult.load(out)
    policy = load_policy(None)  # the default: robustness checks under jpeg:75 and jpeg:50
    write_report(result, out, langs=("en", "th"), policy=policy)
    en, th = (out / "report.md").read_text(encoding="utf-8"), (out / "report.th.md").read_text(encoding="utf-8")
    assert "## 9. Robustness" in en and "## 9. ความทนทาน" in th
    assert "🛡 robustness: flips vs reference under jpeg:75 ≤ 1%" in en
    assert "🛡 robustness: ΔAUC under jpeg:50 ≥ -2 pt" in en
    assert "plots/robustness.png" in en and (out / "plots" / "robustness.png").stat().st_size > 0
    verdict = evaluate_policy(result, policy)
    by_cell = {row.cell.variant: {o.key: o for o in row.outcomes} for row in verdict.rows}
    flip = robustness_key("max_flip_rate_pct", "jpeg:75")
    assert by_cell["fp32"][flip].status == NOT_APPLICABLE  # the reference is not compared with itself
    alt = result.accuracy_of("alt", "cpu")["perturbations"][0]
    assert by_cell["alt"][flip].value == pytest.approx(alt["agreement"]["flip_rate"] * 100)


def test_robustness_checks_are_na_without_perturb_and_not_measured_for_a_missing_one(
    eval_run: tuple[Path, dict],
) -> None:
    out, _ = eval_run
    result = RunResult.load(out)
    policy = load_policy(None)
    missing = robustness_key("min_delta_auc_pt", "jpeg:30")
    policy.robustness["jpeg:30"] = {"min_delta_auc_pt": -5.0}
    rows = {r.cell.variant: {o.key: o for o in r.outcomes} for r in evaluate_policy(result, policy).rows}
    assert rows["alt"][missing].status == NOT_MEASURED and rows["alt"][missing].why == "perturbation_not_run"
    result.config["perturbations"] = []
    rows = {r.cell.variant: {o.key: o for o in r.outcomes} for r in evaluate_policy(result, policy).rows}
    assert {o.status for k, o in rows["alt"].items() if k.startswith("robustness.")} == {NOT_APPLICABLE}


def test_a_bad_robustness_policy_is_an_input_error(tmp_path: Path) -> None:
    from bench.errors import InputError

    for text, says in (
        ('[robustness."jpeg:0"]\nmax_flip_rate_pct = 1\n', "1–100"),
        ('[robustness."jpeg:75"]\nmax_flips = 1\n', "robustness checks are"),
    ):
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(InputError, match=says):
            load_policy(path)


def test_compare_rows_for_perturbed_accuracy_use_mcnemar_per_perturbation(eval_run: tuple[Path, dict]) -> None:
    out, _ = eval_run
    result = RunResult.load(out)
    fp32 = next(c for c in result.cells if c.variant == "fp32")
    alt = next(c for c in result.cells if c.variant == "alt")
    from bench.compare import CompareRow, _accuracy_row, cell_key

    def row(**kw: object) -> CompareRow:
        return CompareRow(key=cell_key(alt), **kw)  # type: ignore[arg-type]

    def judge(b: CellResult, c: CellResult) -> CompareRow | None:
        return _accuracy_row(b, c, Tolerances(), True, "", row)

    rows = perturbed_accuracy_rows(fp32, alt, judge)
    assert [r.metric for r in rows] == ["accuracy@jpeg:75", "accuracy@jpeg:50", "accuracy@blur:1"]
    for r, b, c in zip(rows, fp32.accuracy["perturbations"], alt.accuracy["perturbations"], strict=True):
        assert r.delta == pytest.approx((c["accuracy"] - b["accuracy"]) * 100, abs=1e-3)
        assert r.p_value is not None and "McNemar" in r.why
    alt.accuracy["perturbations"] = alt.accuracy["perturbations"][:1]
    rows = perturbed_accuracy_rows(fp32, alt, judge)
    assert rows[-1].verdict == "incomparable" and "blur:1 not measured in the current run" in rows[-1].why

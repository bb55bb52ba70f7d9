"""bench.results.load_frame: many results files as one tidy pandas table (run × cell × metric)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import InputError
from bench.results import ACCURACY_METRICS, CELL_METRICS, FRAME_COLUMNS, RunResult, load_frame

from models import make_variants_workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "example"  # a real matrix: 48 cells, replicates, accuracy, unavailable rows
BASELINE = ROOT / "reports" / "baseline" / "results.json"  # a real `bench run`, from before replicates


def test_one_row_per_run_cell_and_metric() -> None:
    frame = load_frame([EXAMPLE, BASELINE])
    assert list(frame.columns) == list(FRAME_COLUMNS)
    runs = [RunResult.load(EXAMPLE), RunResult.load(BASELINE)]
    timing = frame[frame["perturbation"].isna()]
    assert len(timing) == sum(len(r.cells) for r in runs) * len(CELL_METRICS)
    accuracy_cells = sum(1 for r in runs for c in r.cells if c.accuracy)
    assert len(frame) - len(timing) == accuracy_cells * len(ACCURACY_METRICS)
    assert set(frame["run_id"]) == {r.run_id for r in runs}
    assert not frame.duplicated(["run_id", "variant", "provider", "batch_size", "perturbation", "metric"]).any()
    assert frame["batch_size"].dtype == "int64" and frame["value"].dtype == "float64"
    assert str(frame["created"].dtype).startswith("datetime64") and frame["created"].notna().all()


def test_values_are_the_results_figures() -> None:
    run = RunResult.load(EXAMPLE)
    cell = next(c for c in run.cells if c.status == "ok" and c.accuracy)
    frame = load_frame(EXAMPLE)
    rows = frame[(frame["variant"] == cell.variant) & (frame["provider"] == cell.provider)]
    rows = rows[rows["batch_size"] == cell.batch_size]
    value = rows[rows["perturbation"].isna()].set_index("metric")["value"]
    latency, memory, accuracy = cell.latency_ms or {}, cell.memory or {}, cell.accuracy or {}
    assert value["latency_p50_ms"] == latency["p50"] and value["latency_p99_ms"] == latency["p99"]
    assert value["throughput_ips"] == cell.throughput_ips and value["rss_peak_mb"] == memory["rss_peak_mb"]
    assert math.isnan(value["gpu_process_peak_mb"])  # a CPU cell: null in the results, NaN here
    clean = rows[rows["perturbation"] == "clean"].set_index("metric")
    assert clean.loc["accuracy", "value"] == accuracy["accuracy"] and clean.loc["accuracy", "unit"] == "fraction"
    # the results' own intervals (Wilson for accuracy, bootstrap for AUC); none recorded for log loss
    assert [clean.loc["accuracy", "ci_low"], clean.loc["accuracy", "ci_high"]] == accuracy["accuracy_ci"]
    assert [clean.loc["roc_auc", "ci_low"], clean.loc["roc_auc", "ci_high"]] == accuracy["roc_auc_ci"]
    assert clean.loc["accuracy", "ci_low"] < clean.loc["accuracy", "value"] < clean.loc["accuracy", "ci_high"]


def test_latency_quantiles_carry_the_bootstrap_interval_where_the_samples_allow() -> None:
    frame = load_frame(EXAMPLE)
    p50 = frame[(frame["metric"] == "latency_p50_ms") & (frame["status"] == "ok")]
    assert p50["ci_low"].notna().all()  # 5 replicates × 100 calls: enough for a median
    assert ((p50["ci_low"] <= p50["value"]) & (p50["value"] <= p50["ci_high"])).all()
    p99 = frame[(frame["metric"] == "latency_p99_ms") & (frame["status"] == "ok")]
    assert p99["ci_low"].isna().all()  # 100 calls are too few for a p99 interval (bench.stats.min_samples)
    assert frame[frame["metric"] == "throughput_ips"]["ci_low"].isna().all()  # no interval in the results
    quick = load_frame(EXAMPLE, intervals=False)  # no bootstrap: latency rows without an interval
    assert quick[quick["metric"].str.startswith("latency")][["ci_low", "ci_high"]].isna().all().all()


def test_cells_that_did_not_run_keep_their_rows_with_nan() -> None:
    frame = load_frame(EXAMPLE)
    gone = frame[frame["status"] != "ok"]
    assert len(gone) and gone["value"].isna().all() and set(gone["metric"]) == {m for m, *_ in CELL_METRICS}


def test_folder_or_file_single_or_many(tmp_path: Path) -> None:
    by_folder = load_frame(EXAMPLE)
    by_file = load_frame(str(EXAMPLE / "results.json"))
    pd.testing.assert_frame_equal(by_folder.drop(columns="path"), by_file.drop(columns="path"))
    assert list(load_frame([]).columns) == list(FRAME_COLUMNS)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "cells": [{"variant": 1}]}))
    with pytest.raises(InputError, match="does not match the results contract"):  # validated as RunResult.load reads it
        load_frame(tmp_path)


def test_fresh_eval_with_perturbations(tmp_path: Path) -> None:
    """Accuracy under each perturbation gets its own rows, named by the perturbation."""
    root = make_variants_workspace(tmp_path, images_per_class=4)
    args = ["eval", "--model-dir", str(root / "tiny"), "--dataset", str(root / "ds"), "--variant", "fp32,seed2"]
    out = CliRunner().invoke(main, [*args, "--perturb", "jpeg:50", "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    frame = load_frame(tmp_path / "eval")
    accuracy = frame[frame["metric"] == "accuracy"]
    assert sorted(accuracy["perturbation"]) == ["clean", "clean", "jpeg:50", "jpeg:50"]
    flips = frame[(frame["metric"] == "flip_rate") & (frame["variant"] == "seed2")]
    assert flips["value"].notna().all()  # agreement with the reference variant, clean and perturbed


def test_pandas_is_imported_only_by_load_frame() -> None:
    code = "import sys, bench.results; sys.exit('pandas' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0

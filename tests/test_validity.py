"""Results files validated once, on load, for every command; disk full is exit 2 (#29 items 11, 15).

Real ``python -m bench compare`` / ``bench report`` processes on files derived from the committed example's
results.json; the disk-full case fills a real tmpfs (a private mount namespace, ``unshare``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.errors import InputError
from bench.results import RunResult
from bench.validity import MAX_DEPTH, nesting_depth, parse_results_text

from cli import BENCH, bench_env, run_bench

EXAMPLE = Path(__file__).resolve().parent.parent / "reports" / "example" / "results.json"


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    """The example run cut to its first two ok cells (fast to compare, still a real bench file)."""
    data = json.loads(EXAMPLE.read_text())
    data["cells"] = [c for c in data["cells"] if c["status"] == "ok"][:2]
    return data


def _write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _broken(small: dict[str, Any], change: Any) -> dict[str, Any]:
    data = copy.deepcopy(small)
    change(data)
    return data


CASES = {
    "cells_abc": (lambda d: d.update(cells="abc"), "cells: input should be a valid array"),
    "batch_0": (lambda d: d["cells"][0].update(batch_size=0), "cells[0].batch_size must be ≥ 1, got 0"),
    "negative_p50": (lambda d: d["cells"][0]["latency_ms"].update(p50=-1.0), "latency_ms.p50 must be a finite"),
    "negative_sample": (lambda d: d["cells"][1]["samples_ms"].__setitem__(3, -0.5), "cells[1].samples_ms[3]"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compare_and_report_refuse_malformed_files(small: dict[str, Any], tmp_path: Path, name: str) -> None:
    change, expected = CASES[name]
    good = _write(tmp_path / "good.json", small)
    bad = _write(tmp_path / f"{name}.json", _broken(small, change))
    p = run_bench("compare", str(good), str(bad))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"error: current {bad}") and expected in p.stderr
    folder = tmp_path / "report"
    folder.mkdir()
    shutil.copy(bad, folder / "results.json")
    r = run_bench("report", str(folder), "--no-plots")
    assert r.returncode == 2 and expected in r.stderr, r.stderr


def test_nan_infinity_and_deep_nesting_are_input_errors(small: dict[str, Any], tmp_path: Path) -> None:
    good = _write(tmp_path / "good.json", small)
    text = json.dumps(small)
    p50 = json.dumps(small["cells"][0]["latency_ms"]["p50"])
    nan = _write(tmp_path / "nan.json", text.replace(f'"p50": {p50}', '"p50": NaN', 1))
    inf = _write(tmp_path / "inf.json", text.replace(f'"p50": {p50}', '"p50": Infinity', 1))
    deep = _write(tmp_path / "deep.json", '{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for bad, expected in ((nan, "NaN is not a number"), (inf, "Infinity is not a number"), (deep, "nested 100001")):
        p = run_bench("compare", str(good), str(bad))
        assert p.returncode == 2 and expected in p.stderr, p.stderr
        assert "internal error" not in p.stderr
    with pytest.raises(InputError, match="nested"):
        RunResult.load(deep)
    assert nesting_depth('{"a": "[[[[", "b": [{"c": []}]}') == 4  # brackets inside strings do not count
    assert nesting_depth(EXAMPLE.read_text()) < MAX_DEPTH
    assert parse_results_text('{"x": "a \\" ["}', "t") == {"x": 'a " ['}


def test_compare_a_with_itself_warns(small: dict[str, Any], tmp_path: Path) -> None:
    path = _write(tmp_path / "a.json", small)
    p = run_bench("compare", str(path), str(path))
    assert p.returncode == 0, p.stderr
    assert f"both sides are the same run ({small['run_id']})" in p.stdout + p.stderr


def test_rss_under_different_isolation_is_incomparable_not_a_regression(small: dict[str, Any], tmp_path: Path) -> None:
    matrix_cell = copy.deepcopy(small)
    matrix_cell["cells"] = matrix_cell["cells"][:1]
    cli_run = copy.deepcopy(matrix_cell)
    cli_run["run_id"] += "-run"
    cli_run["config"]["command"] = "run"
    cli_run["cells"][0]["memory"]["rss_peak_mb"] *= 1.115  # the figure of the report: ×1.115
    base, cur = _write(tmp_path / "m.json", matrix_cell), _write(tmp_path / "r.json", cli_run)
    p = run_bench("compare", str(base), str(cur), "--json")
    assert p.returncode == 0, p.stderr
    rows = [r for r in json.loads(p.stdout)["rows"] if r["metric"] == "rss_peak_mb"]
    assert rows and rows[0]["verdict"] == "incomparable" and "different isolation" in rows[0]["why"]
    same = copy.deepcopy(cli_run)
    same["config"]["command"] = "matrix"  # same isolation: the ×1.115 is a regression as before
    q = run_bench("compare", str(base), str(_write(tmp_path / "m2.json", same)))
    assert q.returncode == 1 and "rss_peak_mb" in q.stderr


def _unshare() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    return ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def test_disk_full_is_exit_2_naming_the_folder(tmp_path: Path) -> None:
    mnt = tmp_path / "full"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99; cp {EXAMPLE} {mnt}/results.json; "
        f"dd if=/dev/zero of={mnt}/fill bs=4k 2>/dev/null; "
        f"{' '.join(BENCH)} report {mnt}; echo rc=$? >&2; "
        f"{' '.join(BENCH)} report {mnt} --no-plots; echo rc=$? >&2; "
        f"{' '.join(BENCH)} matrix --no-accuracy --providers cpu --variants fp32 --out {mnt}/run; echo rc=$? >&2"
    )
    p = subprocess.run([*_unshare(), "sh", "-c", script], capture_output=True, text=True, timeout=120, env=bench_env())
    if p.returncode == 99 or "Operation not permitted" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()[:200]}")
    lines = [line for line in p.stderr.splitlines() if line.startswith(("error:", "rc="))]
    assert lines[0].startswith(f"error: no space left in {mnt}/plots: writing needs ") and "bytes free" in lines[0]
    assert lines[1] == "rc=2"
    assert lines[2].startswith(f"error: no space left in {mnt}: writing needs ") and lines[3] == "rc=2"
    assert lines[4].startswith(f"error: no space left in {mnt}/run: writing needs ") and lines[5] == "rc=2"
    assert "internal error" not in p.stderr

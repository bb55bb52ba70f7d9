"""``bench matrix``: cells in their own processes, unavailable/failed rows, faults, Ctrl-C and --resume, exit codes.

Runs through a real ``python -m bench`` subprocess (exit codes, stdout, signals are the contract) on a tiny
bundle with three real variant files; ``CUDA_VISIBLE_DEVICES=""`` makes ``cuda`` unavailable on any machine.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import InputError
from bench.matrix import _InterruptGuard, _load_previous, _reusable, parse_batch_sizes, plan_cells
from bench.results import CellResult, ModelInfo, RunResult

from cli import BENCH, bench_env, cell_processes_in, run_bench
from models import make_variants_workspace

RUN = [*BENCH, "matrix"]
FAST = ["--iterations", "5", "--warmup", "1", "--threads", "1"]
bench = functools.partial(run_bench, "matrix", timeout=240, no_gpu=True)  # bench(*flags, cwd=..., env=...)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle with three variants (fp32, wide, seed2) and a 12-image labelled set."""
    return make_variants_workspace(tmp_path_factory.mktemp("matrix"), images_per_class=6)


@pytest.fixture(scope="module")
def full_run(workspace: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = workspace / "full"
    p = bench(
        "--model-dir",
        "tiny",
        "--variants",
        "fp32,wide,seed2",
        "--providers",
        "cpu,cuda",
        "--batch-sizes",
        "1,2",
        "--dataset",
        "ds",
        *FAST,
        "--json",
        "--out",
        "full",
        cwd=workspace,
    )
    return p, out


def _kept_lines(stderr: str) -> int:
    return sum(1 for ln in stderr.splitlines() if ln.startswith("[") and "kept from the earlier run" in ln)


# --- one full matrix run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_matrix_writes_every_cell_with_unavailable_rows(
    full_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    p, out = full_run
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # --json: exactly one RunResult on stdout
    keys = [(c["variant"], c["provider"], c["batch_size"]) for c in doc["cells"]]
    assert keys == [(v, pr, b) for v in ("fp32", "wide", "seed2") for pr in ("cpu", "cuda") for b in (1, 2)]
    for cell in doc["cells"]:
        assert len(cell["model"]["sha256"]) == 64
        if cell["provider"] == "cpu":
            assert cell["status"] == "ok" and cell["providers_effective"] == ["CPUExecutionProvider"]
            assert len(cell["samples_ms"]) == 5
        else:
            assert cell["status"] == "unavailable" and cell["reason"].startswith("cuda: unavailable")
            assert cell["latency_ms"] is None
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 12 and (csv["status"] == "unavailable").sum() == 6
    assert json.loads((out / "results.json").read_text())["run_id"] == doc["run_id"]
    # one progress line per cell, with an ETA
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("[")]
    assert len(lines) == 12 and all("/12]" in ln for ln in lines) and "ETA" in lines[0]


@pytest.mark.slow
def test_cells_run_in_their_own_processes(full_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    doc = json.loads(full_run[0].stdout)
    rss = [c["memory"]["rss_peak_mb"] for c in doc["cells"] if c["status"] == "ok"]
    # a fresh process per cell: each peak is that cell's own, not the growing total of one long-lived process
    assert max(rss) < 3 * min(rss)
    sessions = [c["session_create_ms"] for c in doc["cells"] if c["status"] == "ok"]
    assert all(s > 0 for s in sessions)


@pytest.mark.slow
def test_accuracy_once_per_variant_and_provider_with_agreement(
    full_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    doc = json.loads(full_run[0].stdout)
    cells = {(c["variant"], c["provider"], c["batch_size"]): c for c in doc["cells"]}
    for variant in ("fp32", "wide", "seed2"):
        first, second = cells[(variant, "cpu", 1)], cells[(variant, "cpu", 2)]
        assert first["accuracy"]["n"] == 12 and len(first["accuracy"]["predictions"]) == 12
        assert second["accuracy"] is None  # evaluated at the first batch size only
    assert cells[("fp32", "cpu", 1)]["accuracy"]["agreement"]["flip_rate"] == 0.0
    assert cells[("wide", "cpu", 1)]["accuracy"]["agreement"]["reference"] == "fp32"
    assert doc["dataset"]["n"] == 12 and doc["config"]["batch_sizes"] == [1, 2]


@pytest.mark.slow
def test_matrix_report_has_every_section_and_plot(full_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    out = full_run[1]
    en = (out / "report.md").read_text()
    th = (out / "report.th.md").read_text()
    for n in range(1, 9):
        assert f"\n## {n}. " in en and f"\n## {n}. " in th
    assert "**cuda** — unavailable, 6 cells (fp32, wide, seed2 × batch 1, 2)" in en  # one line per provider/reason
    for name in ("latency", "accuracy_latency", "size_latency"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert "**Recommendation**:" in en


@pytest.mark.slow
def test_resume_with_nothing_left_and_fail_on_policy(
    full_run: tuple[subprocess.CompletedProcess[str], Path], workspace: Path
) -> None:
    """A second run with --resume keeps every ok cell; an impossible policy → exit 1; --strict → exit 3."""
    before = json.loads((full_run[1] / "results.json").read_text())
    policy = workspace / "impossible.toml"
    policy.write_text("min_throughput_ips = 1e12\n")
    args = [
        "--model-dir",
        "tiny",
        "--variants",
        "fp32,wide,seed2",
        "--providers",
        "cpu,cuda",
        "--batch-sizes",
        "1,2",
        "--dataset",
        "ds",
        *FAST,
        "--out",
        "full",
        "--resume",
    ]
    p = bench(*args, "--policy", str(policy), "--fail-on-policy", cwd=workspace)
    assert p.returncode == 1, p.stderr
    assert "release checks failed" in p.stderr and _kept_lines(p.stderr) == 6
    after = json.loads((full_run[1] / "results.json").read_text())
    assert after["run_id"] == before["run_id"]
    ok_before = [c for c in before["cells"] if c["status"] == "ok"]
    ok_after = [c for c in after["cells"] if c["status"] == "ok"]
    assert [c["samples_ms"] for c in ok_after] == [c["samples_ms"] for c in ok_before]
    assert "❌" in (full_run[1] / "report.md").read_text()
    p = bench(*args, "--strict", cwd=workspace)
    assert p.returncode == 3 and "6 of 12 cells did not run" in p.stderr


# --- crash isolation ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_crashing_and_a_hanging_cell_fail_while_others_run(workspace: Path) -> None:
    faults = {"crash": {"variant": "wide"}, "slowdown": {"factor": 1e6, "match": "model_seed2"}}
    p = bench(
        "--model-dir",
        "tiny",
        "--variants",
        "fp32,wide,seed2",
        "--providers",
        "cpu",
        "--batch-sizes",
        "1",
        "--no-accuracy",
        *FAST,
        "--cell-timeout",
        "4",
        "--out",
        "faults",
        "--json",
        cwd=workspace,
        env={"BENCH_FAULTS": json.dumps(faults)},
    )
    assert p.returncode == 0, p.stderr
    cells = {c["variant"]: c for c in json.loads(p.stdout)["cells"]}
    assert cells["fp32"]["status"] == "ok"
    assert cells["wide"]["status"] == "failed" and "crashed (SIGABRT" in cells["wide"]["reason"]
    assert cells["seed2"]["status"] == "failed" and "timed out after 4 s" in cells["seed2"]["reason"]
    assert cells["wide"]["model"]["file"] == "model_wide.onnx"
    report = (workspace / "faults" / "report.md").read_text()
    assert "**cpu** — failed, 1 cell (wide × batch 1): the cell's process crashed (SIGABRT" in report


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (["--replicates", "2"], "--replicates: 5 then, 2 now"),
        (["--trt-int8"], "--trt-int8: False then, True now"),
        (["--threads", "2"], "--threads: 1 then, 2 now"),
    ],
)
def test_resume_refuses_cells_measured_under_other_settings(
    full_run: tuple[subprocess.CompletedProcess[str], Path], workspace: Path, changed: list[str], named: str
) -> None:
    """--resume never keeps a cell measured otherwise (before, --replicates 3 kept 1-replicate cells and recorded 3):
    exit 2 naming each differing flag and how to go on; the earlier results stay as they were."""
    before = (full_run[1] / "results.json").read_text()
    fast = FAST[:4] if "--threads" in changed else FAST  # FAST without its --threads 1
    args = ["--model-dir", "tiny", "--variants", "fp32,wide,seed2", "--providers", "cpu,cuda", "--batch-sizes", "1,2"]
    p = bench(*args, "--dataset", "ds", *fast, *changed, "--out", "full", "--resume", cwd=workspace)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --resume:") and named in line and "rerun with the same flags" in line
    assert (full_run[1] / "results.json").read_text() == before


# --- Ctrl-C and resume ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells_and_resume_completes(workspace: Path) -> None:
    args = [
        "--model-dir",
        "tiny",
        "--variants",
        "fp32,wide,seed2",
        "--providers",
        "cpu",
        "--batch-sizes",
        "1",
        "--no-accuracy",
        "--iterations",
        "5",
        "--warmup",
        "1",
        "--min-time",
        "1.5",
        "--out",
        "cut",
    ]
    results = workspace / "cut" / "results.json"
    proc = subprocess.Popen(
        [*RUN, *args],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench_env(no_gpu=True),
        # a shell's background job starts with SIGINT ignored, and Python then keeps ignoring it: the
        # Ctrl-C under test needs the default disposition, however pytest itself was started
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.is_file() and json.loads(results.read_text())["cells"]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume --out cut" in err
    kept = json.loads(results.read_text())
    assert 1 <= len(kept["cells"]) < 3 and all(c["status"] == "ok" for c in kept["cells"])
    time.sleep(0.3)
    assert not cell_processes_in(workspace), "the interrupted cell's process was left running"

    p = bench(*args, "--resume", cwd=workspace)
    assert p.returncode == 0, p.stderr
    done = json.loads(results.read_text())
    assert [c["variant"] for c in done["cells"]] == ["fp32", "wide", "seed2"]
    assert done["run_id"] == kept["run_id"] and done["config"]["resumed"] is True
    # a kept cell keeps its first round's calls and gets the rounds it lacked (--rounds: one per replicate)
    first = kept["cells"][0]
    assert done["cells"][0]["samples_ms"][: len(first["samples_ms"])] == first["samples_ms"]
    assert set(first["sample_replicates"]) == {0} and "processes" not in first["replicates"]
    assert sorted(set(done["cells"][0]["sample_replicates"])) == [0, 1, 2, 3, 4]
    assert done["cells"][0]["replicates"]["processes"] == 5
    assert _kept_lines(p.stderr) == len(kept["cells"])


@pytest.mark.slow
def test_rounds_spread_each_cells_replicates_over_fresh_processes(workspace: Path) -> None:
    """--rounds 3: every cell's 3 replicates come from 3 processes, one per round over the whole matrix, in plan
    order (round 2 of every cell before round 3 of any); --rounds 1 keeps them in one process."""
    args = ["--model-dir", "tiny", "--variants", "fp32,wide", "--providers", "cpu", "--batch-sizes", "1"]
    args += ["--no-accuracy", "--iterations", "6", "--warmup", "1", "--threads", "1", "--replicates", "3"]
    p = bench(*args, "--rounds", "3", "--json", "--out", "rounds", cwd=workspace)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["config"]["rounds"] == 3
    for cell in doc["cells"]:
        assert cell["replicates"]["count"] == 3 and cell["replicates"]["processes"] == 3
        assert sorted(set(cell["sample_replicates"])) == [0, 1, 2] and len(cell["samples_ms"]) == 6
        assert len(cell["replicates"]["session_create_ms"]) == 3
    rounds = [ln.split(":")[0] for ln in p.stderr.splitlines() if ln.startswith("round ")]
    assert rounds == [
        "round 2/3 [1/2] fp32 · cpu · batch 1",
        "round 2/3 [2/2] wide · cpu · batch 1",
        "round 3/3 [1/2] fp32 · cpu · batch 1",
        "round 3/3 [2/2] wide · cpu · batch 1",
    ]
    one = json.loads(bench(*args, "--rounds", "1", "--json", "--out", "one-round", cwd=workspace).stdout)
    assert all(c["replicates"]["count"] == 3 and "processes" not in c["replicates"] for c in one["cells"])


# --- units ---------------------------------------------------------------------------------------------


def test_round_shares_give_the_first_rounds_the_extra_replicates() -> None:
    from bench.options import LoopSpec, RunOptions

    assert RunOptions(replicates=5).round_shares() == [1, 1, 1, 1, 1]
    assert RunOptions(replicates=5, rounds=3).round_shares() == [2, 2, 1]
    assert RunOptions(replicates=2, rounds=9).round_shares() == [1, 1]
    five = RunOptions(replicates=5, rounds=1)
    assert five.round_shares() == [5] and five.first_round() is five
    first = RunOptions(replicates=5, rounds=3, loop=LoopSpec(iterations=100, warmup=3, min_time_s=1.0)).first_round()
    assert (first.replicates, first.loop.iterations, first.loop.min_time_s) == (2, 40, 0.4)


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("8, 1,8") == [1, 8]
    for bad in ("0", "a", "", "1,-2"):
        with pytest.raises(InputError):
            parse_batch_sizes(bad)


def test_plan_is_variant_major() -> None:
    plan = plan_cells(["fp32", "int8"], ["cpu", "cuda"], [1, 8])
    assert [c.key for c in plan][:4] == [
        ("fp32", "cpu", 1),
        ("fp32", "cpu", 8),
        ("fp32", "cuda", 1),
        ("fp32", "cuda", 8),
    ]


def test_resume_reuses_only_finished_cells_of_the_same_model() -> None:
    info = ModelInfo(file="model.onnx", size_mb=1.0, sha256="a" * 64)
    ok = CellResult("fp32", "cpu", 1, model=info)
    assert _reusable(ok, info)
    assert not _reusable(ok, ModelInfo(file="model.onnx", size_mb=1.0, sha256="b" * 64))  # model changed
    assert not _reusable(CellResult.not_run("fp32", "cpu", 1, "failed", "crash"), info)
    assert not _reusable(None, info)


def test_resume_with_other_measuring_flags_is_an_input_error(tmp_path: Path) -> None:
    old = RunResult(environment={}, config={"iterations": 100, "seed": 0}, cells=[])
    old.write(tmp_path)
    new = RunResult(environment={}, config={"iterations": 5, "seed": 0}, cells=[])
    with pytest.raises(InputError, match="iterations: 100 then, 5 now"):
        _load_previous(tmp_path, new, lambda _m: None)
    same = RunResult(environment={}, config={"iterations": 100, "seed": 0}, cells=[])
    assert _load_previous(tmp_path, same, lambda _m: None) == {} and same.run_id == old.run_id


def test_a_recipe_that_cannot_build_fails_its_cells_but_unknown_names_stay_exit_2(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.matrix
    from bench.bundle import Bundle
    from bench.matrix import _variant_files

    def fake_ensure(bundle: Bundle, variant: str, allow_build: bool = True, log: object = None) -> Path:
        if variant in bundle.variants:
            return bundle.variants[variant]
        raise InputError(f"variant {variant!r} cannot be built for {bundle.root}: nothing to quantise")

    monkeypatch.setattr(bench.matrix, "ensure_variant", fake_ensure)
    monkeypatch.setattr(bench.matrix, "recipe_names", lambda bundle=None: ["q4"])
    bundle = Bundle.discover(tiny_bundle)
    paths, unbuildable = _variant_files(bundle, ["fp32", "q4"], True, lambda _m: None)
    assert list(paths) == ["fp32"] and "q4 could not be built for this model" in unbuildable["q4"]
    with pytest.raises(InputError):
        _variant_files(bundle, ["fp32", "nonsense"], True, lambda _m: None)
    with pytest.raises(InputError):  # --no-build: a missing variant is a usage error (CLI.md)
        _variant_files(bundle, ["fp32", "q4"], False, lambda _m: None)


def test_matrix_fits_its_threads_as_run_does_and_resume_keeps_them(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells run here without --threads get threads fitted to the others' load (config.threads_why); a resumed
    run keeps the earlier run's threads, so its cells stay comparable on a machine that has since gone quiet."""
    from dataclasses import replace

    import bench.matrix
    from bench.bundle import Bundle
    from bench.matrix import run_matrix
    from bench.runner import RunOptions
    from bench.timing import LoopSpec

    def busy(provider: str, options: RunOptions, log: object = None, **_kw: object) -> tuple[RunOptions, str]:
        return replace(options, session=replace(options.session, threads=1)), "others used 1.60 of 2 CPUs: fitted"

    options = RunOptions(loop=LoopSpec(iterations=4, warmup=1), replicates=2, sample_hz=0)
    bundle = Bundle.discover(tiny_bundle)
    monkeypatch.setattr(bench.matrix, "fit_threads", busy)
    first = run_matrix(bundle, ["fp32"], ["cpu"], [1], options, out=tmp_path / "m")
    assert first.result.config["threads"] == 1 and first.result.config["threads_why"].endswith("fitted")
    assert first.result.cells[0].noise is not None and first.result.cells[0].noise["threads"] == 1  # the child's

    def quiet(provider: str, options: RunOptions, log: object = None, **_kw: object) -> tuple[RunOptions, None]:
        return options, None

    monkeypatch.setattr(bench.matrix, "fit_threads", quiet)
    again = run_matrix(bundle, ["fp32"], ["cpu"], [1], options, out=tmp_path / "m", resume=True)
    assert again.reused == 1 and again.result.config["threads"] == 1 and again.result.config["threads_why"]
    threads2 = replace(options, session=replace(options.session, threads=2))
    told = run_matrix(bundle, ["fp32"], ["cpu"], [1], threads2, out=tmp_path / "told")
    assert told.result.config["threads"] == 2 and "threads_why" not in told.result.config


def test_a_ctrl_c_lost_in_a_fork_hook_still_stops_the_matrix() -> None:
    """A clean-clone CI run saw Ctrl-C land in logging's at-fork lock release ("Exception ignored … _releaseLock
    … KeyboardInterrupt") and the matrix ran to the end with exit 0: the guard raises it again at the next cell."""
    before = signal.getsignal(signal.SIGINT)
    guard = _InterruptGuard()
    guard.install()
    try:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here
        except KeyboardInterrupt:
            pass  # what an at-fork hook does with it: prints it as ignored, drops it
        with pytest.raises(KeyboardInterrupt):
            guard.raise_if_swallowed()
        guard.raise_if_swallowed()  # raised once, not at every later cell
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        except KeyboardInterrupt:
            guard.handled()  # the matrix's own except clause: nothing left to raise
        guard.raise_if_swallowed()
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGINT) is before

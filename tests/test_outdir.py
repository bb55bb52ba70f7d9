"""One ``bench matrix`` per output folder, SIGTERM like Ctrl-C, temp folders of killed runs swept (#29 items 9, 10).

Real ``python -m bench matrix`` processes on a tiny bundle; each test gets its own TMPDIR so the temp folders it
looks for are its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import InputError
from bench.outdir import LOCK_NAME, lock_output, owned_tempdir, sweep_stale_temp

from cli import BENCH, bench_env, cell_processes_in, run_bench
from models import make_variants_workspace

ARGS = [
    "matrix", "--model-dir", "tiny", "--variants", "fp32,wide,seed2", "--providers", "cpu", "--batch-sizes", "1",
    "--no-accuracy", "--iterations", "5", "--warmup", "1", "--threads", "1", "--min-time", "1.0", "--rounds", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_variants_workspace(tmp_path_factory.mktemp("outdir"), images_per_class=2)


def _start(workspace: Path, out: str, tmp: Path) -> subprocess.Popen[str]:
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*BENCH, *ARGS, "--out", out],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench_env({"TMPDIR": str(tmp)}, no_gpu=True),
    )


def _wait_for(check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _cells(results: Path) -> list[dict[str, object]]:
    try:
        return list(json.loads(results.read_text())["cells"])
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.slow
def test_second_matrix_on_the_same_out_exits_2_naming_the_first(workspace: Path, tmp_path: Path) -> None:
    first = _start(workspace, "shared", tmp_path / "tmp")
    lock = workspace / "shared" / LOCK_NAME
    _wait_for(lambda: lock.is_file() and lock.read_text().strip())
    second = run_bench(*ARGS, "--out", "shared", cwd=workspace, no_gpu=True, timeout=120)
    _, err = first.communicate(timeout=180)
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("error: output folder shared is in use by `bench matrix`"), line
    assert f"PID {first.pid} on host" in line and "give another --out" in line
    assert first.returncode == 0, err
    done = json.loads((workspace / "shared" / "results.json").read_text())
    assert [c["variant"] for c in done["cells"]] == ["fp32", "wide", "seed2"]  # the first run's cells, all kept
    assert not lock.exists()  # released at the end


@pytest.mark.slow
def test_sigterm_ends_like_ctrl_c_and_kill_9_leftovers_are_swept(workspace: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    results = workspace / "term" / "results.json"
    proc = _start(workspace, "term", tmp)
    _wait_for(lambda: _cells(results))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume --out term" in err
    assert 1 <= len(_cells(results)) < 3
    assert not list(tmp.glob("bench-matrix-*")), "the temp folder was left behind"
    time.sleep(0.3)
    assert not cell_processes_in(workspace)
    assert not (workspace / "term" / LOCK_NAME).exists()

    # kill -9 leaves the temp folder and the lock file; the next run takes the stale lock and sweeps the folder
    killed = _start(workspace, "term", tmp)
    _wait_for(lambda: list(tmp.glob("bench-matrix-*/*.spec.json")))
    killed.kill()
    killed.communicate(timeout=30)
    _wait_for(lambda: not cell_processes_in(workspace), timeout=10)  # its cell died with it (PDEATHSIG)
    left = list(tmp.glob("bench-matrix-*"))
    assert len(left) == 1 and (workspace / "term" / LOCK_NAME).exists()
    resumed = subprocess.run(
        [*BENCH, *ARGS, "--out", "term", "--resume"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=180,
        env=bench_env({"TMPDIR": str(tmp)}, no_gpu=True),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "stale lock" in resumed.stderr and f"PID {killed.pid}" in resumed.stderr
    assert "removed 1 stale temp folder(s)" in resumed.stderr and not left[0].exists()
    assert len(_cells(results)) == 3 and not list(tmp.glob("bench-matrix-*"))


def test_resume_without_out_is_an_input_error(workspace: Path) -> None:
    p = run_bench(*ARGS, "--resume", cwd=workspace, no_gpu=True)
    assert p.returncode == 2 and "--resume needs --out DIR" in p.stderr
    assert not (workspace / "reports").exists()  # no new run was started


def test_lock_names_its_holder_across_processes(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path; from bench.outdir import lock_output\n"
         "with lock_output(Path(sys.argv[1]), 'bench matrix'):\n print('held', flush=True); time.sleep(60)",
         str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True, env=bench_env(),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"PID {holder.pid} on host .* since "), lock_output(tmp_path / "out"):
            pass
    finally:
        holder.kill()
        holder.wait()
    notes: list[str] = []
    with lock_output(tmp_path / "out", log=notes.append):  # the holder died: its lock is stale, taken over
        pass
    assert notes and "stale lock" in notes[0] and str(holder.pid) in notes[0]


def test_sweep_keeps_folders_in_use(tmp_path: Path) -> None:
    os.environ["TMPDIR"], old = str(tmp_path), os.environ.get("TMPDIR")
    try:
        import tempfile

        tempfile.tempdir = None
        used, fd = owned_tempdir("bench-matrix-")
        orphan = Path(tempfile.mkdtemp(prefix="bench-matrix-", dir=tmp_path))
        (orphan / ".owner").write_text("{}")  # nobody holds its flock: its owner died
        old_unowned = Path(tempfile.mkdtemp(prefix="bench-matrix-", dir=tmp_path))
        os.utime(old_unowned, (time.time() - 3 * 86400,) * 2)
        fresh_unowned = Path(tempfile.mkdtemp(prefix="bench-matrix-", dir=tmp_path))
        removed = sweep_stale_temp(tmp_path)
        assert sorted(removed) == sorted([orphan, old_unowned])
        assert used.is_dir() and fresh_unowned.is_dir()
        os.close(fd)
        assert sweep_stale_temp(tmp_path) == [used]
    finally:
        tempfile.tempdir = None
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old

"""CPU pinning: the list syntax, every thread of a process moved and moved back, a real ``bench serve --cpus``
and ``bench load --cpus`` on their CPUs, bad lists refused with exit 2 before anything runs."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import httpx
import pytest

from bench.affinity import available_cpus, parse_cpus, pin_process, pinned
from bench.errors import InputError
from bench.service.harness import served

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli import run_bench

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
CPUS = available_cpus() or ()


def test_cpu_lists_as_taskset_writes_them() -> None:
    first = CPUS[0]
    assert parse_cpus(str(first)) == (first,)
    assert parse_cpus(f"{first}-{first}") == (first,)
    assert parse_cpus(",".join(map(str, CPUS))) == CPUS
    for bad, says in (("x", "give CPU numbers"), ("3-1", "increasing range"), ("-1", "give CPU numbers")):
        with pytest.raises(InputError, match=says):
            parse_cpus(bad)
    with pytest.raises(InputError, match=r"--load-cpus '9999': CPU 9999 is not available to this process"):
        parse_cpus("9999", "--load-cpus")


def test_every_thread_is_moved_and_moved_back() -> None:
    """A thread started before the pin is moved too (taskset -a), and the block restores what was there."""
    started, stop = threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}

    def worker() -> None:
        started.set()
        stop.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    try:
        with pinned((CPUS[-1],)):
            assert t.native_id is not None
            seen["worker"] = os.sched_getaffinity(t.native_id)
            seen["main"] = os.sched_getaffinity(0)
        assert os.sched_getaffinity(0) == set(CPUS) and os.sched_getaffinity(t.native_id) == set(CPUS)
    finally:
        stop.set()
        t.join()
        pin_process(CPUS)
    assert seen == {"worker": {CPUS[-1]}, "main": {CPUS[-1]}}


@pytest.mark.slow
def test_bench_serve_runs_on_its_cpus_and_bench_load_on_its_own(module_bundle: Path) -> None:
    server_cpu, load_cpu = CPUS[-1], CPUS[0]
    with served(module_bundle, "fp32", "cpu", extra_args=["--cpus", str(server_cpu)]) as (url, pid):
        assert os.sched_getaffinity(pid) == {server_cpu}
        threads = os.listdir(f"/proc/{pid}/task")
        assert len(threads) > 1 and all(os.sched_getaffinity(int(t)) == {server_cpu} for t in threads)
        assert httpx.get(url + "/health").json()["status"] == "healthy"
        proc = run_bench(
            "load", "--url", url, "--rate", "20", "--duration", "1", "--cpus", str(load_cpu), "--json", timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-600:]
        assert f"generator pinned to CPU {load_cpu}" in proc.stderr
        assert json.loads(proc.stdout)["ok"] > 0


def test_bad_cpu_lists_are_exit_2_before_anything_runs(module_bundle: Path, tmp_path: Path) -> None:
    proc = run_bench("load", "--url", "http://127.0.0.1:9", "--cpus", "9999")
    assert proc.returncode == 2 and "CPU 9999 is not available" in proc.stderr
    proc = run_bench(
        "matrix", "--model-dir", str(module_bundle), "--with-service", "--service-cpus", "a-b", "--out", str(tmp_path)
    )
    assert proc.returncode == 2 and "--service-cpus 'a-b'" in proc.stderr
    assert not (tmp_path / "results.json").exists()
    proc = run_bench("serve", "--model-dir", str(module_bundle), "--port", "0", "--cpus", "9999")
    assert proc.returncode == 2 and "--cpus '9999'" in proc.stderr

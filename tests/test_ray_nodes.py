"""Ray across several nodes, simulated on this machine (#29 item 18): ``ray.cluster_utils.Cluster`` starts a head
and two worker raylets on loopback, one advertising a GPU (a custom ``GPU`` count: no device needed), each with
its own node-label resource. GPU cells land only on the GPU node; every cell records its node; killing a worker
node while it runs a cell fails that cell alone (with the node named) and the matrix keeps every other cell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench._cell import cell_spec
from bench.bundle import Bundle
from bench.engine import SessionSpec
from bench.executors import CellJob, RayExecutor
from bench.matrix import run_matrix
from bench.runner import RunOptions
from bench.timing import LoopSpec

from models import make_variants_workspace

pytestmark = pytest.mark.slow
FAST = RunOptions(loop=LoopSpec(iterations=5, warmup=1), session=SessionSpec(threads=1), rounds=1)
# Detect a killed raylet in about a second (Ray's defaults take tens of seconds).
FAST_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 2}


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, Any]]:
    """Head (no CPU: it schedules nothing), ``cpu-a`` (1 CPU), ``gpu-b`` (1 CPU, 1 GPU)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "_system_config": FAST_DEATH},
    )
    try:
        cpu_a = cluster.add_node(num_cpus=1, num_gpus=0, resources={"node:cpu-a": 1})
        gpu_b = cluster.add_node(num_cpus=1, num_gpus=1, resources={"node:gpu-b": 1})
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()
        yield {"ray": ray, "cluster": cluster, "cpu-a": cpu_a, "gpu-b": gpu_b}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_variants_workspace(tmp_path_factory.mktemp("raynodes"), images_per_class=1)


def _job(workspace: Path, variant: str, provider: str, options: RunOptions = FAST) -> CellJob:
    bundle = Bundle.discover(workspace / "tiny")
    spec = cell_spec(variant, provider, bundle.root, bundle.variants[variant], options)
    return CellJob((variant, provider, 1), spec, 120.0, f"{variant}-{provider}-1")


def test_gpu_cells_land_only_on_the_gpu_node_and_each_cell_names_its_node(
    nodes: dict[str, Any], workspace: Path
) -> None:
    executor = RayExecutor(schedule_timeout_s=30)
    try:
        jobs = [_job(workspace, v, p) for v in ("fp32", "wide") for p in ("cuda", "cpu")]
        for job in jobs:
            executor.submit(job)
        cells = {}
        while len(cells) < len(jobs):
            for job, cell in executor.wait():
                cells[job.key] = cell
    finally:
        executor.close()
    gpu_node, cpu_node = nodes["gpu-b"].node_id, nodes["cpu-a"].node_id
    for (variant, provider, _), cell in cells.items():
        assert cell.placement is not None, (variant, provider, cell.reason)
        if provider == "cuda":
            # on the GPU node, whatever became of it there (no real device here: the cell says why)
            assert cell.placement["node_id"] == gpu_node and cell.placement["gpu_ids"], cell.placement
        else:
            assert cell.status == "ok" and cell.placement["node_id"] in (gpu_node, cpu_node), cell.reason


def _on_node(raylet_pid: int) -> bool:
    """A cell's child process is running under that node's raylet (raylet → worker → bench._cell)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "bench._cell" in " ".join(proc.info["cmdline"] or []) and raylet_pid in {p.pid for p in proc.parents()}:
                return True
        except psutil.Error:
            continue
    return False


def test_killing_a_worker_node_fails_only_its_cell_and_keeps_the_rest(
    nodes: dict[str, Any], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray._private.ray_constants as constants

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    victim = nodes["gpu-b"]
    raylet = victim.all_processes[constants.PROCESS_TYPE_RAYLET][0].process.pid
    killed: list[float] = []

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not killed:
            if _on_node(raylet):
                nodes["cluster"].remove_node(victim, allow_graceful=False)
                killed.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_busy, daemon=True)
    watcher.start()
    slow = RunOptions(loop=LoopSpec(iterations=5, warmup=1, min_time_s=2.0), session=SessionSpec(threads=1), rounds=1)
    executor = RayExecutor(schedule_timeout_s=30)
    try:
        outcome = run_matrix(
            Bundle.discover(workspace / "tiny"),
            ["fp32", "wide", "seed2"],
            ["cpu"],
            [1, 2],
            slow,
            out=workspace / "killed",
            executor=executor,
        )
    finally:
        executor.close()
        watcher.join(timeout=5)
    assert killed, "no cell ever ran on the worker node"
    cells = outcome.result.cells
    assert len(cells) == 6  # every cell accounted for, in results.json too
    failed = [c for c in cells if c.status != "ok"]
    assert len(failed) == 1, [(c.key, c.status, c.reason) for c in cells]
    assert "died" in str(failed[0].reason) and failed[0].placement is not None
    assert failed[0].placement["node_id"] == victim.node_id
    ok = [c for c in cells if c.status == "ok"]
    assert all(c.placement and c.placement["node_id"] == nodes["cpu-a"].node_id for c in ok)

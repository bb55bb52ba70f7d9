"""Ray, for bench on a cluster: connecting with clear errors, where a cell ran, and machine classes.

Ray is imported only here, and only when a command is asked to use it (``--executor ray``), so
``bench --help`` and every local run stay free of it. Everything a driver needs to decide before it
sends work (is Ray installed, is the address reachable, can any node ever offer these resources) is
answered here with an :class:`~bench.errors.InputError` (exit 2) or a one-line reason.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.environment import fingerprint
from bench.errors import InputError
from bench.providers import is_gpu
from bench.results import CellResult, Placement, RunResult

RAY_INSTALL = "pip install 'bench[ray]'  (or: pip install 'ray>=2.30')"
CONNECT_TIMEOUT_S = 30.0
_RESERVED = {"CPU", "GPU", "memory", "object_store_memory"}


def import_ray(what: str = "--executor ray") -> Any:
    """The ``ray`` module, or an InputError (exit 2) that says how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"{what} needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


@dataclass
class RayConnection:
    """A driver's link to Ray; ``owned``: this process started it (a local Ray) or connected it, so closes it."""

    address: str | None
    owned: bool

    def close(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()
            self.owned = False


def connect(
    address: str | None, timeout_s: float = CONNECT_TIMEOUT_S, log: Callable[[str], None] | None = None
) -> RayConnection:
    """Join the Ray cluster at ``address`` (``ray://host:10001``, ``host:6379``, ``auto``), or start a local one.

    An unreachable address is an InputError naming it within ``timeout_s``: the TCP port is tried first (a
    few seconds), then ``ray.init`` runs with that deadline (an open port that is not Ray must not hang us).
    """
    ray = import_ray()
    if ray.is_initialized():  # a caller (a test, a notebook) already joined one: use it, leave it open
        return RayConnection(address=address, owned=False)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        host, port = _host_port(address)
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
                pass
        except OSError as exc:
            raise InputError(
                f"--ray-address {address}: cannot reach {host}:{port} ({exc.strerror or exc}); start the head with "
                "`ray start --head` (client port 10001, GCS 6379) or fix the address"
            ) from None
    # worker output stays in Ray's logs, so --json keeps exactly one document on stdout
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if log is not None:
        log(f"ray: {'connecting to ' + address if address else 'starting a local Ray on this machine'} …")
    if not address:
        ray.init(include_dashboard=False, **kwargs)
        return RayConnection(address=None, owned=True)
    kwargs["address"] = address
    failure: list[BaseException] = []

    def join() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    worker = threading.Thread(target=join, name="bench-ray-connect", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise InputError(f"--ray-address {address}: no Ray cluster answered within {timeout_s:g} s; is it Ray's port?")
    if failure:
        first = str(failure[0]).strip().splitlines()[0] if str(failure[0]).strip() else type(failure[0]).__name__
        hint = (
            "; if the cluster uses Ray's token authentication (the default of new clusters), set RAY_AUTH_MODE=token "
            "with the token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            if not os.environ.get("RAY_AUTH_MODE")
            else ""
        )
        raise InputError(f"--ray-address {address}: could not join the Ray cluster: {first}{hint}")
    return RayConnection(address=address, owned=True)


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of ``ray://host:port`` or ``host:port``; Ray's defaults when the port is left out."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if not parts.hostname:
        raise InputError(f"--ray-address must look like ray://HOST:10001 or HOST:6379, got {address!r}")
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"--ray-address {address!r}: the port is not a number") from None
    return parts.hostname, port or (10001 if parts.scheme == "ray" else 6379)


def parse_resources(text: str | None) -> dict[str, float]:
    """``--ray-resources '{"accelerator_type:H100": 0.001}'``: custom Ray resources every cell asks for.

    CPUs and GPUs are not given here: each cell asks for its own (a whole GPU, or its thread count in CPUs).
    """
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"--ray-resources is not JSON ({exc.msg}); e.g. '{{\"accelerator_type:A100\": 0.001}}'"
        ) from None
    if not isinstance(data, dict) or not data:
        raise InputError("--ray-resources must be a JSON object of resource name → amount, e.g. '{\"node_l4\": 1}'")
    out: dict[str, float] = {}
    for name, amount in data.items():
        if name in _RESERVED:
            raise InputError(
                f"--ray-resources: {name} is assigned per cell (GPU cells a whole GPU, CPU cells --threads CPUs); "
                "name a custom resource or an accelerator_type:… label instead"
            )
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise InputError(f"--ray-resources: {name} must be a positive number, got {amount!r}")
        out[str(name)] = float(amount)
    return out


def feasible(request: Mapping[str, float]) -> bool:
    """Could any alive node of the cluster ever run a task asking for ``request`` (by its total resources)?"""
    import ray

    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        total = node.get("Resources") or {}
        if all(total.get(name, 0.0) >= amount for name, amount in request.items() if amount > 0):
            return True
    return False


def describe_request(request: Mapping[str, float]) -> str:
    return ", ".join(f"{name}: {amount:g}" for name, amount in request.items() if amount > 0)


def cluster_summary() -> str:
    """One line: alive nodes and their total CPUs and GPUs."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum((n.get("Resources") or {}).get("CPU", 0.0) for n in alive)
    gpus = sum((n.get("Resources") or {}).get("GPU", 0.0) for n in alive)
    return f"{len(alive)} node(s), {cpus:g} CPUs, {gpus:g} GPUs"


# --- where a cell ran (called on the worker) -------------------------------------------------------


@functools.cache
def _host(gpu_index: int | None) -> dict[str, Any]:
    return fingerprint(gpu_index if gpu_index is not None else 0)


def placement(gpu_ids: Sequence[Any], gpu_index: int | None, gpu_cell: bool) -> Placement:
    """This Ray worker's node, its host fingerprint, and the GPU a cell was given (``gpu_index``, NVML's)."""
    import ray

    env = _host(gpu_index)
    gpu = env.get("gpu") if gpu_cell else None
    cpu = env.get("cpu") or {}
    return Placement(
        executor="ray",
        node_id=ray.get_runtime_context().get_node_id(),
        node_ip=ray.util.get_node_ip_address(),
        machine_id=str(env.get("machine_id")),
        machine_class=_class_label(gpu, cpu.get("model"), gpu_cell),
        cpu_model=str(cpu.get("model")),
        cores_logical=cpu.get("cores_logical"),
        memory_total_mb=int(env.get("memory_total_mb") or 0),
        gpu=gpu,
        gpu_ids=[str(g) for g in gpu_ids],
        gpu_reason=None if gpu is not None or not gpu_cell else env.get("gpu_reason"),
        onnxruntime=str(env.get("onnxruntime")),
    )


def _class_label(gpu: Mapping[str, Any] | None, cpu_model: Any, gpu_cell: bool) -> str:
    if gpu_cell:
        return str(gpu.get("name")) if gpu else "GPU (none found)"
    return f"CPU {cpu_model}" if cpu_model else "CPU (unknown)"


def worker_label() -> str:
    """``ray node IP`` inside a Ray worker, ``process PID`` elsewhere."""
    try:
        import ray

        if ray.is_initialized():
            return f"ray node {ray.util.get_node_ip_address()} pid {os.getpid()}"
    except ImportError:
        pass
    return f"process {os.getpid()}"


# --- machine classes (what a report groups by, what compare must not mix) -------------------------


def machine_class(cell: CellResult, run: RunResult) -> str:
    """The class a cell was measured on: its placement's when it has one, else the run's own machine's."""
    if cell.placement and cell.placement.get("machine_class"):
        return str(cell.placement["machine_class"])
    env = run.environment or {}
    gpu_cell = is_gpu(cell.provider)
    return _class_label(env.get("gpu") if gpu_cell else None, (env.get("cpu") or {}).get("model"), gpu_cell)


def cell_machine_id(cell: CellResult) -> str | None:
    """The machine id a cell carries itself (cluster runs), or None (the run's environment applies)."""
    return str(cell.placement["machine_id"]) if cell.placement and cell.placement.get("machine_id") else None


def group_by_machine_class(run: RunResult) -> list[tuple[str, list[CellResult]]]:
    """The run's cells, one group per machine class, in the order each class first appears (plan order).

    A run made on one machine (the local executor) gives one group per kind of device it used: its CPU for
    cpu cells, its GPU for cuda/tensorrt cells; a cluster run one per GPU type (and CPU model) it ran on.
    """
    groups: dict[str, list[CellResult]] = {}
    for cell in run.cells:
        groups.setdefault(machine_class(cell, run), []).append(cell)
    return list(groups.items())


__all__ = [
    "CONNECT_TIMEOUT_S",
    "RAY_INSTALL",
    "RayConnection",
    "cell_machine_id",
    "cluster_summary",
    "connect",
    "describe_request",
    "feasible",
    "group_by_machine_class",
    "import_ray",
    "machine_class",
    "parse_resources",
    "placement",
    "worker_label",
]

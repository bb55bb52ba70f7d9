"""Where ``bench matrix`` runs its cells: one at a time in child processes here (``local``), or as Ray tasks
on a cluster (``ray``). Both run the very same isolated child (``python -m bench._cell``, through
:func:`bench._cell.run_cell_process`), so a cell's timeout, crash and OOM classification do not depend on
the executor; the matrix decides what runs when and writes results, the executor only runs cells.

    executor.submit(job)             # start a cell (local: queued; ray: a task)
    for job, cell in executor.wait(): ...   # at least one finished cell
    executor.close()                 # cancels what is still running (Ctrl-C), releases the cluster

Ray tasks ask for a whole GPU (``num_gpus=1``) per GPU cell: a timing cell must have the device to itself,
as a second process on the same GPU would share its SMs, memory bandwidth and clocks and change what is
measured. CPU cells ask for ``--threads`` CPUs (1 when unset), plus any ``--ray-resources`` labels.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bench import cluster
from bench._cell import probe_process, run_cell_process
from bench.errors import InputError
from bench.outdir import owned_tempdir
from bench.providers import is_gpu
from bench.results import CellResult, Placement

EXECUTORS = ("local", "ray")
SCHEDULE_TIMEOUT_S = 120.0  # a cell no node can ever run waits this long for one to join, then is unavailable
RESULT_GRACE_S = 60.0  # beyond the cell timeout, for the task itself (placement, temp files, result transfer)
FEASIBILITY_CHECK_S = 2.0
HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has 1 of it (Ray ≥ 2.4)
# The driver's fault-injection setting (tests, A/B validation) travels with each cell, set or unset, so a cell
# behaves the same whichever executor runs it; nothing else of the driver's environment is sent.
FORWARDED_ENV = ("BENCH_FAULTS",)

LogFn = Callable[[str], None]


@dataclass
class CellJob:
    """One cell to run: its key, the worker's spec (bench._cell.cell_spec), its timeout and a file-name tag."""

    key: tuple[str, str, int]
    spec: dict[str, Any]
    timeout_s: float
    tag: str
    submitted: float = 0.0  # monotonic time it was handed to the executor
    started: float | None = None  # monotonic time it began running (after any queueing), once known


class Executor(Protocol):
    """What the matrix needs from an executor."""

    name: str
    slots: int  # cells the matrix may have in flight at once

    def probe(self, provider: str, timeout_s: float) -> tuple[dict[str, Any] | None, str]: ...

    def submit(self, job: CellJob) -> None: ...

    def wait(self) -> list[tuple[CellJob, CellResult]]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any] | None: ...


# --- local: child processes on this machine, one at a time ------------------------------------------


class LocalExecutor:
    """Each cell in a fresh child process here, one after another (timing needs the machine to itself)."""

    name = "local"
    slots = 1

    def __init__(self) -> None:
        self._queue: list[CellJob] = []
        self._tmp: Path | None = None
        self._owner_fd: int | None = None  # flocked while the folder is in use (bench.outdir sweeps the others)

    def _workdir(self) -> Path:
        if self._tmp is None:
            self._tmp, self._owner_fd = owned_tempdir("bench-matrix-")
        return self._tmp

    def probe(self, provider: str, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
        return probe_process(provider, timeout_s, self._workdir())

    def submit(self, job: CellJob) -> None:
        job.submitted = time.monotonic()
        self._queue.append(job)

    def wait(self) -> list[tuple[CellJob, CellResult]]:
        """Run the oldest queued cell to its end (a Ctrl-C kills its process, then propagates)."""
        job = self._queue.pop(0)
        job.started = time.monotonic()
        return [(job, run_cell_process(job.spec, job.timeout_s, self._workdir(), job.tag))]

    def close(self) -> None:
        self._queue.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def describe(self) -> dict[str, Any] | None:
        return None


# --- ray: tasks on a cluster ----------------------------------------------------------------------------


@dataclass
class _Flight:
    job: CellJob
    request: dict[str, float]
    started: float | None = None
    placement: Placement | None = None
    checked: float = 0.0


class _StartBoard:
    """A tiny actor (no CPU) where each cell's task notes where it started: the driver polls it, so it knows a
    cell is running (its timeout counts from then) rather than queued, and on which node. Plain tasks and an
    actor work alike through Ray Client (``ray://``), unlike streaming generators."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}

    def mark(self, tag: str, where: Any, at: float) -> None:
        self.started[tag] = (where, at)

    def take(self) -> dict[str, Any]:
        taken, self.started = self.started, {}
        return taken


class RayExecutor:
    """Each cell as a Ray task that runs the isolated child on whichever node has the resources it asks for.

    A task first notes where it landed (node, host fingerprint, GPU) on a start board, then runs the cell.
    The driver turns a
    cell no node can ever run into ``unavailable`` after ``schedule_timeout_s``, a task that outlives its
    cell timeout into ``failed``, and a dead worker or node into ``failed`` with the reason; the rest go on.
    """

    name = "ray"
    slots = 100_000  # Ray queues what the cluster cannot run yet; the matrix may submit everything

    def __init__(
        self,
        address: str | None = None,
        resources: Mapping[str, float] | None = None,
        schedule_timeout_s: float = SCHEDULE_TIMEOUT_S,
        log: LogFn | None = None,
    ) -> None:
        if schedule_timeout_s <= 0:
            raise InputError(f"--ray-schedule-timeout must be > 0 seconds, got {schedule_timeout_s}")
        self.address = address
        self.resources = dict(resources or {})
        self.schedule_timeout_s = schedule_timeout_s
        self._say = log or (lambda _m: None)
        self.connection = cluster.connect(address, log=log)
        import ray

        self._ray = ray
        # never retried: a cell that lost its worker is failed (and --resume re-runs it), not silently re-timed
        self._cell_task = ray.remote(max_retries=0)(_ray_cell)
        self._probe_task = ray.remote(max_retries=0)(_ray_probe)
        self._board: Any = self._new_board()
        self._flights: dict[Any, _Flight] = {}
        self._say(f"ray: {cluster.cluster_summary()}")

    def _new_board(self) -> Any:
        """The start board, on the head node: a worker node that dies (killed, preempted) must not take the
        board, and with it every other cell's start, along (Ray's head carries ``node:__internal_head__``)."""
        return self._ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001})(_StartBoard).remote()

    def describe(self) -> dict[str, Any] | None:
        return {"address": self.address, "resources": self.resources, "schedule_timeout_s": self.schedule_timeout_s}

    def request(self, provider: str, threads: int | None) -> dict[str, float]:
        """What one cell asks the cluster for: a whole GPU (GPU cells) or its threads in CPUs, plus labels."""
        base = {"GPU": 1.0, "CPU": 1.0} if is_gpu(provider) else {"CPU": float(threads or 1)}
        return {**base, **self.resources}

    def _options(self, request: Mapping[str, float]) -> dict[str, Any]:
        custom = {k: v for k, v in request.items() if k not in ("CPU", "GPU")}
        return {"num_cpus": request.get("CPU", 1.0), "num_gpus": request.get("GPU", 0.0), "resources": custom}

    def _unschedulable(self, provider: str, request: Mapping[str, float], waited_s: float) -> str:
        return (
            f"{provider}: unavailable — no node of the Ray cluster offers {cluster.describe_request(request)} "
            f"({cluster.cluster_summary()}); waited {waited_s:.0f} s for one to join (--ray-schedule-timeout)"
        )

    def _await_feasible(self, request: Mapping[str, float]) -> float | None:
        """Seconds waited until some node could run ``request`` (0 if one can now); None after the timeout."""
        start = time.monotonic()
        while not cluster.feasible(request):
            waited = time.monotonic() - start
            if waited >= self.schedule_timeout_s:
                return None
            time.sleep(min(FEASIBILITY_CHECK_S, self.schedule_timeout_s - waited))
        return time.monotonic() - start

    def probe(self, provider: str, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
        """Can ``provider`` run on the cluster? Probed once on a node that offers a cell's resources."""
        request = self.request(provider, None)
        if self._await_feasible(request) is None:
            return {"usable": False, "reason": self._unschedulable(provider, request, self.schedule_timeout_s)}, ""
        ref = self._probe_task.options(**self._options(request)).remote(provider, timeout_s, _forwarded_env())
        ready, _ = self._ray.wait([ref], timeout=timeout_s + self.schedule_timeout_s)
        if not ready:
            self._ray.cancel(ref, force=True)
            return None, f"did not answer on the cluster within {timeout_s + self.schedule_timeout_s:g} s"
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            return None, f"died on the cluster ({_first_line(exc)})"

    def submit(self, job: CellJob) -> None:
        job.submitted = time.monotonic()
        request = self.request(job.key[1], job.spec["options"]["session"].get("threads"))
        ref = self._cell_task.options(**self._options(request)).remote(
            _absolute_paths(job.spec), job.timeout_s, job.tag, _forwarded_env(), self._board
        )
        self._flights[ref] = _Flight(job, request)

    def wait(self) -> list[tuple[CellJob, CellResult]]:
        """Block until at least one cell finished (or was given up on); polls once a second for the deadlines."""
        while True:
            if not self._flights:
                return []
            ready, _ = self._ray.wait(list(self._flights), num_returns=1, timeout=1.0)
            self._note_starts()
            finished = [self._result(ref) for ref in ready]
            finished.extend(self._deadlines())
            if finished:
                return finished

    def _note_starts(self) -> None:
        """Which queued cells started since the last look, and where."""
        try:
            started: dict[str, Any] = self._ray.get(self._board.take.remote())
        except self._ray.exceptions.RayError as exc:  # its node died after all: a new board, starts seen from now
            self._say(f"ray: the start board was lost ({_first_line(exc)}); a new one is started")
            self._board = self._new_board()
            return
        for flight in self._flights.values():
            if flight.job.tag in started and flight.started is None:
                where, at = started[flight.job.tag]  # ``at``: the node's wall clock (NTP-synchronised)
                flight.started = time.monotonic() - max(0.0, time.time() - at)
                flight.placement, flight.job.started = where, flight.started

    def _result(self, ref: Any) -> tuple[CellJob, CellResult]:
        """A finished task's cell; a task that died (worker or node lost, cancelled) makes the cell failed."""
        flight = self._flights.pop(ref)
        provider = flight.job.key[1]
        try:
            return flight.job, CellResult.from_dict(self._ray.get(ref))
        except self._ray.exceptions.TaskCancelledError:
            return flight.job, _failed(flight.job, f"{provider}: the Ray task was cancelled")
        except self._ray.exceptions.RayError as exc:  # worker or node died, object lost, ...
            where = f" on node {flight.placement['node_ip']}" if flight.placement else ""
            why = f"{provider}: the Ray worker running the cell{where} died ({type(exc).__name__}: {_first_line(exc)})"
            cell = _failed(flight.job, why)
            cell.placement = flight.placement
            return flight.job, cell

    def _deadlines(self) -> list[tuple[CellJob, CellResult]]:
        """Give up on tasks no node can ever run, and on tasks that outlived their cell's timeout."""
        now = time.monotonic()
        out = []
        for ref, flight in list(self._flights.items()):
            job, provider = flight.job, flight.job.key[1]
            if flight.started is None:
                waited = now - job.submitted
                if waited < self.schedule_timeout_s or now - flight.checked < FEASIBILITY_CHECK_S:
                    continue
                flight.checked = now
                if cluster.feasible(flight.request):
                    continue  # queued behind other cells: Ray will run it when a node frees up
                self._cancel(ref)
                self._flights.pop(ref)
                out.append((job, _not_run(job, "unavailable", self._unschedulable(provider, flight.request, waited))))
            elif now - flight.started > job.timeout_s + RESULT_GRACE_S:
                self._cancel(ref)
                self._flights.pop(ref)
                cell = _failed(
                    job,
                    f"{provider}: the Ray task did not return within {job.timeout_s + RESULT_GRACE_S:g} s "
                    "(cell timeout + grace) and was cancelled",
                )
                cell.placement = flight.placement
                out.append((job, cell))
        return out

    def _cancel(self, ref: Any) -> None:
        with contextlib.suppress(Exception):
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        """Cancel every cell still queued or running (their child processes exit with their worker)."""
        for ref in list(self._flights):
            self._cancel(ref)
        self._flights.clear()
        if self._board is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(self._board)
            self._board = None
        self.connection.close()


def make_executor(
    name: str,
    address: str | None = None,
    resources_json: str | None = None,
    schedule_timeout_s: float = SCHEDULE_TIMEOUT_S,
    log: LogFn | None = None,
) -> Executor:
    """The executor ``bench matrix --executor NAME`` asked for; Ray flags without ``--executor ray`` are an error."""
    if name not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if address or resources_json:
            raise InputError("--ray-address and --ray-resources need --executor ray")
        return LocalExecutor()
    resources = cluster.parse_resources(resources_json)
    return RayExecutor(address, resources, schedule_timeout_s, log)


# --- inside the Ray worker ---------------------------------------------------------------------------


def _ray_cell(
    spec: dict[str, Any], timeout_s: float, tag: str, env: dict[str, str | None], board: Any
) -> dict[str, Any]:
    """The Ray task: note where it landed on the start board, run the cell's isolated child here, return it."""
    import ray

    gpu_cell = is_gpu(spec["provider"])
    gpu_ids = list(ray.get_gpu_ids()) if gpu_cell else []
    index, child_env = _gpu_binding(gpu_ids)
    where = cluster.placement(gpu_ids, index, gpu_cell)
    with contextlib.suppress(ray.exceptions.RayError):  # a lost board costs the start time, not the cell
        ray.get(board.mark.remote(tag, where, time.time()))
    missing = [p for p in (spec["model_path"], *spec.get("input_images", [])[:1]) if not Path(p).exists()]
    if missing:
        reason = (
            f"{spec['provider']}: {missing[0]} does not exist on node {where['node_ip']}: the model folder and "
            "dataset must be at the same path on every node (a shared filesystem, or baked into the image)"
        )
        cell = CellResult.not_run(spec["variant"], spec["provider"], spec["options"]["batch_size"], "failed", reason)
    else:
        if index is not None:
            spec = {**spec, "options": _with_device(spec["options"], index)}
        with _environ({**env, **child_env}), tempfile.TemporaryDirectory(prefix="bench-ray-cell-") as tmp:
            cell = run_cell_process(spec, timeout_s, Path(tmp), tag)
    cell.placement = where
    return asdict(cell)


def _ray_probe(provider: str, timeout_s: float, env: dict[str, str | None]) -> tuple[dict[str, Any] | None, str]:
    """The Ray task behind RayExecutor.probe: bench._cell's probe child, on a node that has the resources
    (under Ray's CUDA_VISIBLE_DEVICES: the probe's device 0 is the GPU Ray assigned)."""
    with _environ(env), tempfile.TemporaryDirectory(prefix="bench-ray-probe-") as tmp:
        return probe_process(provider, timeout_s, Path(tmp))


def _gpu_binding(gpu_ids: Sequence[Any]) -> tuple[int | None, dict[str, str | None]]:
    """(the GPU's index for the cell, the child's CUDA variables) for the GPU Ray assigned.

    Ray narrows ``CUDA_VISIBLE_DEVICES`` to the assigned GPU, but the cell reads the same ``--device-id``
    for ONNX Runtime (CUDA's numbering) and for its NVML sampler (the driver's numbering): the child
    gets the GPU's own index with every device visible and CUDA numbering devices like NVML (PCI bus
    order), so both mean the same GPU. Ids Ray gives as UUIDs keep Ray's narrowing (device 0).
    """
    if not gpu_ids:
        return None, {}
    first = str(gpu_ids[0])
    if first.isdigit():
        return int(first), {"CUDA_VISIBLE_DEVICES": None, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return 0, {}


def _absolute_paths(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with the driver's relative paths made absolute: a Ray worker does not run in the driver's folder."""
    evaluate = spec.get("evaluate")
    return {
        **spec,
        "model_dir": str(Path(spec["model_dir"]).resolve()),
        "model_path": str(Path(spec["model_path"]).resolve()),
        "input_images": [str(Path(p).resolve()) for p in spec.get("input_images") or []],
        "evaluate": {**evaluate, "dataset": str(Path(evaluate["dataset"]).resolve())} if evaluate else evaluate,
    }


def _with_device(options: dict[str, Any], index: int) -> dict[str, Any]:
    session = dict(options.get("session") or {})
    provider_options = dict(session.get("provider_options") or {})
    provider_options["device_id"] = index
    session["provider_options"] = provider_options
    return {**options, "session": session}


@contextlib.contextmanager
def _environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the child, restoring them after."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _forwarded_env() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in FORWARDED_ENV}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__


def _not_run(job: CellJob, status: Any, reason: str) -> CellResult:
    variant, provider, batch_size = job.key
    return CellResult.not_run(variant, provider, batch_size, status, reason)


def _failed(job: CellJob, reason: str) -> CellResult:
    return _not_run(job, "failed", reason)


__all__ = [
    "EXECUTORS",
    "SCHEDULE_TIMEOUT_S",
    "CellJob",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
]

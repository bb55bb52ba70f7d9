"""ORT's profiler, in a session of its own: per op type and per node (calls, time, share), FLOPs from shapes,
achieved GFLOP/s against the machine's measured peak.

The profiled session is never a timed one: the profiler adds its own cost to every node, so the call time a
profile reports (``profiled_p50_ms``) is kept apart from the bare call time measured in a second, plain session
(``timed_p50_ms``), and the difference is reported as the profiler's overhead. On CUDA, ORT's profile also has
one event per CUDA kernel (``kernels``); TensorRT runs a whole engine as one ORT node, so its per-layer times are
not in ORT's profile (``tensorrt_layers`` says so).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engine import Engine, ModelLoadError
from bench.options import SessionSpec
from bench.profile.flops import GraphFlops, fixed_inputs, graph_flops, is_counted, model_flops
from bench.providers import is_gpu
from bench.timing import LoopSpec, timed_loop

DEFAULT_RUNS = 20
DEFAULT_WARMUP = 3
NO_KERNELS_NOTE = "CUDA kernel times: none in ORT's profile of this session (not measured here)"
TENSORRT_LAYERS_NOTE = (
    "TensorRT per-layer times: not in ORT's profile (TensorRT runs the engine as one node); not measured here"
)


@dataclass
class TraceSummary:
    """What one ORT profile trace says, warm-up runs left out."""

    runs: int
    run_ms: list[float]  # per profiled call: the ``model_run`` event's duration
    nodes: dict[str, dict[str, Any]]  # node name → op_type, provider, calls, total_us, output shapes
    kernels: dict[str, dict[str, Any]]  # CUDA kernel name → op_name, calls, total_us (GPU only)


def _shapes(entries: Iterable[Mapping[str, Any]] | None) -> list[list[int]]:
    """``[{"float": [1, 3, 224, 224]}, …]`` → ``[[1, 3, 224, 224], …]``."""
    return [list(next(iter(e.values()))) for e in entries or [] if e]


def parse_trace(events: list[dict[str, Any]], warmup: int = 0) -> TraceSummary:
    """Sum ORT's Node (and CUDA Kernel) events per node over the profiled calls after the first ``warmup``
    ``model_run`` events; events inside a warm-up run are dropped."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    skipped = [(e["ts"], e["ts"] + e["dur"]) for e in runs[:warmup]]
    kept = runs[warmup:]

    def in_warmup(e: Mapping[str, Any]) -> bool:
        return any(lo <= e.get("ts", -1) <= hi for lo, hi in skipped)

    nodes: dict[str, dict[str, Any]] = {}
    kernels: dict[str, dict[str, Any]] = {}
    for e in events:
        if in_warmup(e) or e.get("ph") != "X":
            continue
        args = e.get("args", {})
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            row = nodes.setdefault(
                name,
                {
                    "op_type": args.get("op_name", "?"),
                    "provider": args.get("provider"),
                    "calls": 0,
                    "total_us": 0.0,
                    "durations_us": [],
                    "inputs": _shapes(args.get("input_type_shape")),
                    "outputs": _shapes(args.get("output_type_shape")),
                },
            )
            row["calls"] += 1
            row["total_us"] += float(e.get("dur", 0))
            row["durations_us"].append(float(e.get("dur", 0)))
        elif e.get("cat") == "Kernel":
            row = kernels.setdefault(str(e.get("name")), {"op_name": args.get("op_name"), "calls": 0, "total_us": 0.0})
            row["calls"] += 1
            row["total_us"] += float(e.get("dur", 0))
    return TraceSummary(len(kept), [e["dur"] / 1000 for e in kept], nodes, kernels)


def _flops_of(optimized: Path | None, trace: TraceSummary, model_path: Path, batch_size: int) -> GraphFlops:
    """Per-node FLOPs of the graph ORT ran: its optimised model's initializers and nodes, with the shapes the
    profile recorded for each node's outputs (ORT's contrib and layout ops need no shape inference then)."""
    import onnx

    if optimized is None or not optimized.is_file():
        return model_flops(model_path, batch_size)
    model = onnx.load(str(optimized), load_external_data=False)
    fixed_inputs(model, batch_size)
    extra: dict[str, list[int]] = {}
    for node in model.graph.node:
        row = trace.nodes.get(node.name)
        if row is None:
            continue
        for name, dims in zip(node.output, row["outputs"], strict=False):
            extra[name] = dims
        if len(row["inputs"]) == len(node.input):  # every input listed: the weights' shapes as the kernel saw them
            for name, dims in zip(node.input, row["inputs"], strict=True):
                extra.setdefault(name, dims)
    with contextlib.suppress(Exception):  # contrib/layout domains ORT wrote: the profile's shapes above suffice
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    return graph_flops(model, extra)


def _gflops(flops: int | None, ms: float) -> float | None:
    return round(flops / (ms * 1e6), 3) if flops and ms > 0 else None


@dataclass
class Profile:
    """One variant on one provider at one batch size, profiled; ``as_dict`` is `bench profile --json`."""

    model: str
    variant: str | None
    provider: str
    batch_size: int
    threads: int | None
    trace: TraceSummary
    flops: GraphFlops
    static_flops: int | None  # the model as written, shapes from ONNX shape inference (contrib ops: a lower bound,
    # ``static_unresolved`` counts the counted nodes inference gave no shapes for)
    timed_ms: list[float]  # bare calls in a plain session, after the profile
    peak: dict[str, Any] | None = None
    trace_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node_ms(self) -> dict[str, float]:
        """ms per inference of each node: the median of its calls × its calls per inference. The median, not the
        mean: on a shared machine some profiled calls are several times slower (a descheduled thread) and a mean
        would hand that delay to whichever nodes it fell on."""
        runs = max(self.trace.runs, 1)
        return {
            name: statistics.median(row["durations_us"]) / 1000 * row["calls"] / runs
            for name, row in self.trace.nodes.items()
            if row["durations_us"]
        }

    def op_types(self) -> list[dict[str, Any]]:
        flops = {n.name: n.flops for n in self.flops.nodes}
        per: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "ms": 0.0, "flops": 0, "counted": False})
        for name, ms in self.node_ms.items():
            row = self.trace.nodes[name]
            entry = per[row["op_type"]]
            entry["calls"] += row["calls"]
            entry["ms"] += ms
            if flops.get(name):
                entry["flops"] += flops[name]
            entry["counted"] = entry["counted"] or is_counted(row["op_type"])
        total = sum(e["ms"] for e in per.values()) or 1.0
        out = [
            {
                "op_type": op,
                "calls": e["calls"],
                "ms": round(e["ms"], 5),
                "share": round(e["ms"] / total, 4),
                "flops": e["flops"] if e["counted"] else None,
                "gflops": _gflops(e["flops"], e["ms"]) if e["counted"] else None,
            }
            for op, e in per.items()
        ]
        return sorted(out, key=lambda r: -r["ms"])

    def nodes(self) -> list[dict[str, Any]]:
        flops = {n.name: n.flops for n in self.flops.nodes}
        rows = [
            {
                "name": name,
                "op_type": self.trace.nodes[name]["op_type"],
                "provider": self.trace.nodes[name]["provider"],
                "calls": self.trace.nodes[name]["calls"],
                "ms": round(ms, 5),
                "flops": flops.get(name),
                "gflops": _gflops(flops.get(name), ms),
            }
            for name, ms in self.node_ms.items()
        ]
        return sorted(rows, key=lambda r: -r["ms"])

    @property
    def nodes_per_call(self) -> float:
        return round(sum(row["calls"] for row in self.trace.nodes.values()) / max(self.trace.runs, 1), 3)

    @property
    def node_overhead_ms(self) -> float | None:
        """What the profiler adds to each node's recorded time, at least: the part of the summed node times
        that the bare call does not have, per node (0 when the nodes sum to less than the bare call)."""
        timed = self.timed_p50_ms
        if timed is None or not self.nodes_per_call:
            return None
        return round(max(0.0, sum(self.node_ms.values()) - timed) / self.nodes_per_call, 6)

    @property
    def timed_p50_ms(self) -> float | None:
        return statistics.median(self.timed_ms) if self.timed_ms else None

    @property
    def profiled_p50_ms(self) -> float | None:
        return statistics.median(self.trace.run_ms) if self.trace.run_ms else None

    @property
    def achieved_gflops(self) -> float | None:
        """FLOPs of one call ÷ the bare call's median (the profiler's overhead is not in it)."""
        p50 = self.timed_p50_ms
        return _gflops(self.flops.total_flops, p50) if p50 else None

    def as_dict(self) -> dict[str, Any]:
        peak = (self.peak or {}).get("gflops")
        achieved = self.achieved_gflops
        profiled, timed = self.profiled_p50_ms, self.timed_p50_ms
        out: dict[str, Any] = {
            "model": self.model,
            "variant": self.variant,
            "provider": self.provider,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "runs": self.trace.runs,
            "total_flops": self.flops.total_flops,
            "static_flops": self.static_flops,
            "not_counted": self.flops.not_counted,
            "unresolved": self.flops.unresolved,
            "timed_p50_ms": round(timed, 5) if timed is not None else None,
            "profiled_p50_ms": round(profiled, 5) if profiled is not None else None,
            "profiler_overhead_ms": round(profiled - timed, 5) if profiled is not None and timed is not None else None,
            "op_time_ms": round(sum(self.node_ms.values()), 5),
            "nodes_per_call": self.nodes_per_call,
            "node_overhead_ms": self.node_overhead_ms,
            "achieved_gflops": achieved,
            "peak_gflops": peak,
            "fraction_of_peak": round(achieved / peak, 4) if achieved and peak else None,
            "peak": self.peak,
            "op_types": self.op_types(),
            "nodes": self.nodes(),
            **self.gpu_detail(),
            **self.extra,
        }
        if self.trace_file:
            out["trace_file"] = self.trace_file
        return out

    def gpu_detail(self) -> dict[str, Any]:
        if not is_gpu(self.provider):
            return {}
        runs = max(self.trace.runs, 1)
        kernels = sorted(
            (
                {"name": k, "op_name": v["op_name"], "calls": v["calls"], "ms": round(v["total_us"] / 1000 / runs, 5)}
                for k, v in self.trace.kernels.items()
            ),
            key=lambda r: -r["ms"],
        )
        return {
            "kernels": kernels or None,
            "kernels_note": None
            if kernels
            else "CUDA kernel times: none in ORT's profile of this session (not measured here)",
            "tensorrt_layers": None,
            "tensorrt_layers_note": TENSORRT_LAYERS_NOTE if self.provider == "tensorrt" else None,
        }


def profile_model(
    model_path: str | Path,
    provider: str = "cpu",
    spec: SessionSpec | None = None,
    batch_size: int = 1,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    variant: str | None = None,
    peak: dict[str, Any] | None = None,
    keep_trace: Path | None = None,
) -> Profile:
    """Profile ``runs`` calls (after ``warmup``) in a profiling session, then time as many bare calls in a
    plain session; FLOPs from the graph ORT ran. ``keep_trace``: copy ORT's JSON trace there."""
    model_path = Path(model_path)
    spec = spec or SessionSpec()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"

        def configure(opts: Any, save: bool = provider != "tensorrt") -> None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "ort")
            if not save:  # ORT cannot save a graph with compiled (TensorRT) nodes: static FLOPs then
                return
            opts.optimized_model_filepath = str(optimized)
            opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
            opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")

        try:
            engine = Engine(model_path, provider, spec, configure=configure)
        except ModelLoadError:  # saving the optimised graph failed, not the model: profile without it
            engine = Engine(model_path, provider, spec, configure=lambda opts: configure(opts, save=False))
        batch = engine.random_batch(batch_size)
        for _ in range(warmup + runs):
            engine.run(batch)
        trace_path = Path(engine.session.end_profiling())
        events = json.loads(trace_path.read_text(encoding="utf-8"))
        del engine
        trace = parse_trace(events, warmup)
        flops = _flops_of(optimized if optimized.is_file() else None, trace, model_path, batch_size)
        kept = None
        if keep_trace is not None:
            keep_trace.parent.mkdir(parents=True, exist_ok=True)
            keep_trace.write_bytes(trace_path.read_bytes())
            kept = str(keep_trace)
    try:
        written = model_flops(model_path, batch_size)
        static: int | None = written.total_flops
        static_unresolved = len(written.unresolved)
    except Exception:  # a model ONNX's shape inference cannot read: the profiled graph's count stands
        static, static_unresolved = None, None
    plain = Engine(model_path, provider, spec)
    timed = timed_loop(plain.timed_call(batch), LoopSpec(iterations=max(runs, 5), warmup=warmup))
    del plain
    return Profile(
        model=str(model_path),
        variant=variant,
        provider=provider,
        batch_size=batch_size,
        threads=spec.threads,
        trace=trace,
        flops=flops,
        static_flops=static,
        extra={"static_unresolved": static_unresolved},
        timed_ms=timed,
        peak=dict(peak) if peak is not None else None,
        trace_file=kept,
    )

"""Why B is slower than A: per op-type time deltas between two profiles, held against the end-to-end delta.

``explained`` = Σ op-type deltas ÷ end-to-end delta. The op-type times come from ORT's profiler (its own
sessions); the end-to-end delta comes from bare calls of both models timed interleaved in plain sessions, so
the profiler's per-node overhead (recorded per side as ``profiler_overhead_ms``) is in neither figure: op times
are kernel durations, end-to-end times are unprofiled. A delta the interval cannot tell from zero is said so.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.engine import Engine, first_line
from bench.modelfile import file_sha256
from bench.options import LoopSpec, SessionSpec
from bench.profile.profiler import DEFAULT_RUNS, Profile, profile_model
from bench.results import CellResult, RunResult
from bench.stats import ratio_interval
from bench.timing import timed_loop

LogFn = Callable[[str], None]
TOP = 3  # op types attached to a regression row
E2E_BLOCKS = 10  # interleaved blocks per side for the end-to-end delta
E2E_CALLS = 10  # calls per block
_SIDE_KEYS = (
    "model",
    "variant",
    "total_flops",
    "timed_p50_ms",
    "op_time_ms",
    "profiler_overhead_ms",
    "nodes_per_call",
    "node_overhead_ms",
)


def op_type_deltas(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per op type ``a_ms``, ``b_ms``, ``delta_ms`` (B − A, mean ms per inference) from two ``Profile.as_dict()``;
    largest absolute delta first."""
    a_ms = {r["op_type"]: r["ms"] for r in a["op_types"]}
    b_ms = {r["op_type"]: r["ms"] for r in b["op_types"]}
    rows = [
        {
            "op_type": op,
            "a_ms": round(a_ms.get(op, 0.0), 5),
            "b_ms": round(b_ms.get(op, 0.0), 5),
            "delta_ms": round(b_ms.get(op, 0.0) - a_ms.get(op, 0.0), 5),
        }
        for op in dict.fromkeys([*a_ms, *b_ms])
    ]
    return sorted(rows, key=lambda r: -abs(r["delta_ms"]))


def interleaved_e2e(
    path_a: Path, path_b: Path, provider: str, spec: SessionSpec, batch_size: int, blocks: int = E2E_BLOCKS
) -> dict[str, Any]:
    """Median bare call time of A and B (one plain session each, blocks alternating A B B A …) and B/A's ratio
    with its bootstrap interval over blocks."""
    import numpy as np

    engines = {"a": Engine(path_a, provider, spec), "b": Engine(path_b, provider, spec)}
    calls = {k: e.timed_call(e.random_batch(batch_size)) for k, e in engines.items()}
    loop = LoopSpec(iterations=E2E_CALLS, warmup=2)
    samples: dict[str, list[list[float]]] = {"a": [], "b": []}
    for i in range(blocks):
        for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
            samples[side].append(timed_loop(calls[side], loop))
    del engines, calls
    med = {k: statistics.median([x for block in v for x in block]) for k, v in samples.items()}
    ratio = ratio_interval([np.asarray(s) for s in samples["b"]], [np.asarray(s) for s in samples["a"]], unit="blocks")
    return {
        "a_p50_ms": round(med["a"], 5),
        "b_p50_ms": round(med["b"], 5),
        "e2e_delta_ms": round(med["b"] - med["a"], 5),
        "ratio": ratio.point,
        "ratio_ci": [ratio.low, ratio.high] if ratio.usable else None,
        "blocks": blocks,
        "calls_per_block": E2E_CALLS,
    }


def explain(a: Profile, b: Profile, e2e: Mapping[str, Any]) -> dict[str, Any]:
    """`bench profile --against`'s JSON: op-type deltas, the end-to-end delta and the share they explain."""
    pa, pb = a.as_dict(), b.as_dict()
    deltas = op_type_deltas(pa, pb)
    delta = e2e["e2e_delta_ms"]
    # the profiler's per-node cost, taken out of the summed deltas where B runs more (or fewer) nodes than A
    per_node = max(pa["node_overhead_ms"] or 0.0, pb["node_overhead_ms"] or 0.0)
    overhead = (pb["nodes_per_call"] - pa["nodes_per_call"]) * per_node
    op_delta = sum(r["delta_ms"] for r in deltas) - overhead
    ci = e2e.get("ratio_ci")
    decided = ci is not None and (ci[0] > 1 or ci[1] < 1)
    explained = round(op_delta / delta, 4) if delta and decided else None
    why = None
    if not decided:
        why = "the end-to-end delta is within the noise (B/A interval includes 1): nothing to explain"
    return {
        "a": {k: pa[k] for k in _SIDE_KEYS},
        "b": {k: pb[k] for k in _SIDE_KEYS},
        "provider": a.provider,
        "batch_size": a.batch_size,
        "op_types": deltas,
        "op_delta_ms": round(op_delta, 5),
        "profiler_overhead_removed_ms": round(overhead, 5),
        **e2e,
        "explained": explained,
        "explained_point": round(op_delta / delta, 4) if delta else None,  # the same share, decided or not
        "explained_why": why,
    }


def profile_against(
    path_a: Path,
    path_b: Path,
    provider: str = "cpu",
    spec: SessionSpec | None = None,
    batch_size: int = 1,
    runs: int = DEFAULT_RUNS,
    blocks: int = E2E_BLOCKS,
) -> tuple[Profile, Profile, dict[str, Any]]:
    """Profile A then B (each in its own session), then time both interleaved: (A, B, explanation)."""
    spec = spec or SessionSpec()
    a = profile_model(path_a, provider, spec, batch_size, runs=runs)
    b = profile_model(path_b, provider, spec, batch_size, runs=runs)
    e2e = interleaved_e2e(path_a, path_b, provider, spec, batch_size, blocks)
    return a, b, explain(a, b, e2e)


def top_line(deltas: Sequence[Mapping[str, Any]], n: int = TOP) -> str:
    """``Conv +1.20 ms, MatMul +0.31 ms`` — the ``n`` largest op-type deltas."""
    return ", ".join(f"{r['op_type']} {r['delta_ms']:+.3g} ms" for r in deltas[:n])


# --- regressions: bench ab and bench compare --------------------------------------------------------


def cell_model_path(run: RunResult, cell: CellResult) -> tuple[Path | None, str]:
    """The model file a results cell measured, if it is still here with the same sha256; else (None, why)."""
    if cell.model is None:
        return None, "the results file does not name the model file"
    root = Path(str(run.config.get("model_dir") or ""))
    for candidate in (root / "onnx" / cell.model.file, root / cell.model.file):
        if candidate.is_file():
            if file_sha256(candidate) == cell.model.sha256:
                return candidate, ""
            return None, f"{candidate} changed since it was measured (sha256 differs)"
    return None, f"{cell.model.file} is not under {root or 'the recorded model_dir'}"


def _find(run: RunResult, key: tuple[Any, ...]) -> CellResult | None:
    return next((c for c in run.cells if tuple(c.key) == key), None)


def _spec_of(run: RunResult) -> SessionSpec:
    """The session settings a results file was measured with (threads, graph optimisation)."""
    config: Mapping[str, Any] = run.config or {}
    threads = config.get("threads")
    return SessionSpec(
        threads=threads if isinstance(threads, int) else None, graph_opt=config.get("graph_opt") or "all"
    )


def explain_regressions(
    rows: Sequence[Any],
    baseline: RunResult,
    current: RunResult,
    runs: int = 10,
    log: LogFn | None = None,
) -> int:
    """Attach the top op-type deltas to each latency regression row (``row.explanation``; its ``why`` gets the
    short form), from profiles of both sides' model files taken now, after the verdict, in their own sessions.
    A row whose model files are not here (moved, or changed since) gets the reason instead. Returns how many
    rows were explained. ``rows`` are bench.compare's CompareRow (duck-typed: this layer sits below it)."""
    done = 0
    cache: dict[tuple[str, str, int], dict[str, Any]] = {}
    spec = _spec_of(current)
    for row in rows:
        if getattr(row, "verdict", None) != "regression" or not str(row.metric).startswith("latency"):
            continue
        cur_cell = _find(current, _key_tuple(row.key))
        base_cell = _find(baseline, _key_tuple(row.baseline_key or row.key))
        if cur_cell is None or base_cell is None:
            continue
        path_b, why_b = cell_model_path(current, cur_cell)
        path_a, why_a = cell_model_path(baseline, base_cell)
        if path_a is None or path_b is None:
            row.explanation = {"op_types": None, "why": f"not profiled: {why_a or why_b}"}
            continue
        profiles = []
        try:
            for path in (path_a, path_b):
                k = (str(path), cur_cell.provider, cur_cell.batch_size)
                if k not in cache:
                    if log:
                        log(f"explain: profiling {path} on {cur_cell.provider} (its own session, after the verdict)")
                    cache[k] = profile_model(path, cur_cell.provider, spec, cur_cell.batch_size, runs=runs).as_dict()
                profiles.append(cache[k])
        except Exception as exc:  # the verdict stands without its explanation: never lose it to a profile
            row.explanation = {"op_types": None, "why": f"not profiled: {first_line(exc)}"}
            continue
        deltas = op_type_deltas(profiles[0], profiles[1])
        op_delta = sum(r["delta_ms"] for r in deltas)
        e2e = (
            float(row.current) - float(row.baseline)
            if isinstance(row.current, (int, float)) and isinstance(row.baseline, (int, float))
            else None
        )
        explained = round(op_delta / e2e, 3) if e2e else None
        row.explanation = {
            "op_types": deltas[:TOP],
            "op_delta_ms": round(op_delta, 5),
            "e2e_delta_ms": round(e2e, 5) if e2e is not None else None,
            "explained": explained,
            "source": "ORT profiles of both model files, taken after the verdict in their own sessions",
        }
        text = f"where: {top_line(deltas)}"
        if explained is not None:
            text += f" ({explained:.0%} of the delta)"
            if explained < 0.5:
                text += "; most of the slowdown is outside the operators (framework, input, machine)"
        row.why = f"{row.why}; {text}" if row.why else text
        done += 1
    return done


def _key_tuple(key: Any) -> tuple[Any, ...]:
    """A compare row's CellKey (a dict in JSON, a mapping or tuple in memory) as (variant, provider, batch_size)."""
    if isinstance(key, Mapping):
        return (key.get("variant"), key.get("provider"), key.get("batch_size"))
    return tuple(key)

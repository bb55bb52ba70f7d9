"""``bench matrix --profile``: each ok ONNX cell profiled after every timed cell has finished, each in a
session of its own in the matrix's parent process (never inside a cell's process or its timed loop)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from bench.bundle import Bundle, is_pytorch_variant
from bench.engine import ModelLoadError, ProviderUnavailable, first_line
from bench.options import SessionSpec
from bench.profile.peak import machine_peak
from bench.profile.profiler import profile_model
from bench.results import CellProfile, RunResult

PROFILE_RUNS = 10
TOP_NODES = 15
_KEEP = (
    "total_flops",
    "not_counted",
    "timed_p50_ms",
    "profiled_p50_ms",
    "achieved_gflops",
    "peak_gflops",
    "fraction_of_peak",
    "op_types",
    "kernels",
    "tensorrt_layers_note",
)


def cell_profile(data: dict[str, Any]) -> CellProfile:
    """The results.json form of a full profile: the figures, the op types and the slowest nodes."""
    out = {k: data.get(k) for k in _KEEP if k in data}
    out["nodes"] = [{k: n[k] for k in ("name", "op_type", "ms", "flops")} for n in data.get("nodes", [])[:TOP_NODES]]
    return cast(CellProfile, out)


def profile_cells(
    result: RunResult,
    bundle: Bundle,
    spec: SessionSpec,
    out_dir: Path | None = None,
    runs: int = PROFILE_RUNS,
    log: Callable[[str], None] | None = None,
) -> int:
    """Profile every ok ONNX cell of ``result`` (sets ``cell.profile``; the full profile goes to
    ``out_dir/profiles/<variant>-<provider>-b<batch>.json``). Returns how many were profiled."""
    threads = result.config.get("threads")
    spec = SessionSpec(
        threads=threads if isinstance(threads, int) and threads > 0 else spec.threads,
        inter_op_threads=spec.inter_op_threads,
        graph_opt=spec.graph_opt,
        provider_options=spec.provider_options,
    )
    peaks: dict[str, dict[str, Any] | None] = {}
    done = 0
    for cell in result.cells:
        if cell.status != "ok" or is_pytorch_variant(cell.variant):
            continue
        path = bundle.variant_path(cell.variant)
        if not path.is_file():
            cell.profile = {"reason": f"{path} not found"}
            continue
        if log:
            log(f"profile: {cell.variant}/{cell.provider}/b{cell.batch_size} (its own session, after the timed cells)")
        try:
            if cell.provider not in peaks:
                peaks[cell.provider] = dict(machine_peak(cell.provider, spec.threads))
            data = profile_model(
                path, cell.provider, spec, cell.batch_size, runs=runs, variant=cell.variant, peak=peaks[cell.provider]
            ).as_dict()
        except (ProviderUnavailable, ModelLoadError) as exc:
            cell.profile = {"reason": str(exc)}
            continue
        except Exception as exc:  # the timed cells and the report stand without this profile
            cell.profile = {"reason": f"profile failed: {first_line(exc)}"}
            continue
        cell.profile = cell_profile(data)
        if out_dir is not None:
            folder = out_dir / "profiles"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{cell.variant}-{cell.provider}-b{cell.batch_size}.json"
            (folder / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        done += 1
    return done

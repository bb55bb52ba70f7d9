"""Regenerate ``results.json``: a fixed, seed-like matrix (GPU box, fp32/fp16/int8 × cuda/cpu/tensorrt, a
PyTorch row on CUDA) with a service entry for fp16.

Synthetic on purpose (no machine needed, fully deterministic); the figures echo the seed report's
(fp16 on CUDA ≈ 7 ms, 2.3 GB of GPU memory against a 2 GB limit, PyTorch ≈ 2.2× slower, /detect ≈ 26 ms,
/detect/batch 3 images in 12.9 ms) so the golden reports show every claim answered and the contradiction
flagged. Run: ``python tests/data/report/make_fixture.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.metrics import binary_metrics, paired_differences
from bench.results import CellResult, ModelInfo, RunResult
from bench.timing import LatencyStats

HERE = Path(__file__).parent
SHA = {"fp32": "a" * 64, "fp16": "b" * 64, "int8": "c" * 64, "pytorch": "e" * 64}
SIZE = {"fp32": 343.0, "fp16": 171.0, "int8": 87.0, "pytorch": 343.2}
FILES = {"fp32": "model.onnx", "pytorch": "model.safetensors"}
RECIPE = {
    "fp16": {
        "variant": "fp16",
        "recipe": "fp16",
        "method": "fp16",
        "summary": "float16, fp32 I/O",
        "tool": "onnxconverter_common.float16.convert_float_to_float16",
        "params": {"keep_io_types": True},
        "base": {"variant": "fp32", "sha256": "a" * 64},
    },
    "int8": {"recipe": "int8", "method": "dynamic", "per_channel": True},
}
PATHS = [f"{cls}/{i:02d}.png" for cls in ("fake", "real") for i in range(6)]
TRUTH = [1] * 6 + [0] * 6


def model(v: str) -> ModelInfo:
    return ModelInfo(file=FILES.get(v, f"model_{v}.onnx"), size_mb=SIZE[v], sha256=SHA[v], recipe=RECIPE.get(v))


def accuracy(p_fake: list[float]) -> dict:
    """The accuracy object bench would write for these predictions (figures and intervals from bench.metrics)."""
    return {
        "skipped": [],
        "positive_label": "Deepfake",
        **binary_metrics(TRUTH, p_fake),
        "agreement": None,
        "predictions": [
            {"path": p, "p_fake": round(q, 4), "label": "Deepfake" if t else "Real"}
            for p, q, t in zip(PATHS, p_fake, TRUTH, strict=True)
        ],
    }


def ok(
    v: str,
    provider: str,
    batch: int,
    mean: float,
    gpu: float | None,
    util: float | None,
    seed: int,
    acc: dict | None = None,
) -> CellResult:
    rng = np.random.default_rng(seed)
    samples = [round(float(x), 5) for x in rng.normal(mean, mean * 0.08, 20).clip(mean * 0.8)]
    stats = LatencyStats.from_samples(samples).as_dict()
    gpu_cell = provider != "cpu"
    return CellResult(
        variant=v,
        provider=provider,
        batch_size=batch,
        status="ok",
        sample_replicates=[i // 5 for i in range(len(samples))],  # 4 replicates of 5 calls
        providers_effective=[{"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[provider]]
        + (["CPUExecutionProvider"] if gpu_cell else []),
        io_binding=gpu_cell,
        model=model(v),
        session_create_ms=round(300.0 + 40 * seed, 3),
        latency_ms={k: round(x, 5) if isinstance(x, float) else x for k, x in stats.items()},
        samples_ms=samples,
        throughput_ips=round(batch / (stats["mean"] / 1000.0), 3),
        memory={
            "rss_peak_mb": 900.0 + 10 * seed,
            "rss_mean_mb": 880.0 + 10 * seed,
            "cpu_mean_pct": 99.0,
            "system_ram_peak_pct": 14.8,
            "gpu_process_peak_mb": gpu,  # the seed's figures are per process
            "gpu_device_peak_mb": None if gpu is None else gpu + 212.0,
            "gpu_total_mb": 6144.0 if gpu_cell else None,
            "gpu_util_mean_pct": util,
            "gpu_util_max_pct": None if util is None else util + 6,
            "gpu_reason": None if gpu_cell else "GPU not sampled for a CPU cell",
            "samples": 30,
        },
        accuracy=acc,
    )


def service_entry() -> dict:
    """fp16 served on CUDA: the seed's /health shape and figures (26 ms per /detect, 3 images in 12.9 ms)."""
    steps = [
        {
            "rate": r,
            "achieved_rate": r,
            "requests": int(r * 3),
            "ok": int(r * 3),
            "errors": {},
            "p50_ms": p50,
            "p99_ms": p99,
            "passed": p99 <= 50.0,
            "retest": False,
            "flaky": False,
            "why": "",
        }
        for r, p50, p99 in ((10.0, 25.1, 33.0), (20.0, 25.8, 36.2), (40.0, 27.0, 44.9), (80.0, 31.5, 58.3))
    ]
    return {
        "variant": "fp16",
        "provider": "cuda",
        "status": "ok",
        "reason": None,
        "inprocess_p50_ms": 7.161,
        "overhead_p50_ms": 18.839,
        "load": {
            "url": "http://127.0.0.1:8007",
            "endpoint": "detect",
            "mode": "open",
            "arrival": "constant",
            "target_rate": 20.0,
            "achieved_rate": 20.0,
            "duration_s": 30.0,
            "requests": 600,
            "ok": 600,
            "errors": {},
            "latency_ms": {"n": 600, "p50": 26.0, "p90": 30.0, "p99": 41.5, "p999": 48.0, "max": 60.0, "mean": 26.9},
            "send_lag_ms": {"p50": 0.6, "p99": 1.9, "max": 3.0},
            "generator_ceiling_rps": 900.0,
            "server": {
                "rss_start_mb": 1210.0,
                "rss_mid_mb": 1214.0,
                "rss_end_mb": 1216.0,
                "leak_suspected": False,
                "leak_rule": "growth above max(50 MB, 10 %) still rising in the second half",
            },
        },
        "batch_endpoint": {
            "files_per_request": 3,
            "rate": 4.0,
            "requests": 120,
            "ok": 120,
            "errors": {},
            "latency_ms": {"n": 120, "p50": 12.9, "p90": 14.0, "p99": 16.2, "max": 18.0, "mean": 13.1},
            "ms_per_image_p50": 4.3,
            "images_per_s": 12.0,
        },
        "max_rate": {
            "slo_p99_ms": 50.0,
            "rate_rps": 40.0,
            "bracket": [40.0, 80.0],
            "probes": 4,
            "limited_by": "slo",
            "steps": steps,
        },
        "health": {
            "http_status": 200,
            "body": {
                "status": "healthy",
                "service": "Deepfake Detection",
                "model_loaded": True,
                "gpu_available": True,
                "memory_usage": {
                    "gpu_memory_percent": 37.9,
                    "gpu_memory_used_mb": 2329.0,
                    "gpu_memory_total_mb": 6144.0,
                },
                "variant": "fp16",
                "providers_effective": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                "model": {"file": "model_fp16.onnx", "load_ms": 850.0, "warmup_ms": 120.0},
                "process": {"pid": None, "rss_mb": 1208.0},
            },
        },
        "startup": {"ready_s": 4.2, "load_ms": 850.0, "warmup_ms": 120.0},
        "invalid_inputs": [
            {"case": "text_as_image", "endpoint": "/detect", "expected": 415, "status": 415},
            {"case": "empty_file", "endpoint": "/detect", "expected": 400, "status": 400},
            {"case": "truncated_jpeg", "endpoint": "/detect", "expected": 400, "status": 400},
            {"case": "too_many_pixels", "endpoint": "/detect", "expected": 413, "status": 413},
            {"case": "missing_field", "endpoint": "/detect", "expected": 422, "status": 422},
            {"case": "empty_batch", "endpoint": "/detect/batch", "expected": 400, "status": 400},
        ],
    }


def main() -> None:
    fp32_p = [0.9, 0.8, 0.7, 0.95, 0.6, 0.4, 0.1, 0.2, 0.3, 0.05, 0.45, 0.55]
    fp16_p = [0.9, 0.8, 0.7, 0.95, 0.6, 0.4, 0.1, 0.2, 0.3, 0.05, 0.45, 0.52]
    int8_p = [0.9, 0.8, 0.6, 0.95, 0.45, 0.4, 0.1, 0.2, 0.3, 0.05, 0.45, 0.55]
    a32, a16, a8 = accuracy(fp32_p), accuracy(fp16_p), accuracy(int8_p)
    a16["agreement"] = {"reference": "fp32", "flip_rate": 0.0, "max_abs_dp": 0.03, "mean_abs_dp": 0.0025, "kl": 0.0001}
    a16["agreement"].update(paired_differences(np.array(TRUTH), np.array(fp32_p), np.array(fp16_p))[0])
    a8["agreement"] = {"reference": "fp32", "flip_rate": 1 / 12, "max_abs_dp": 0.15, "mean_abs_dp": 0.02, "kl": 0.003}
    a8["agreement"].update(paired_differences(np.array(TRUTH), np.array(fp32_p), np.array(int8_p))[0])
    a32_cpu = json.loads(json.dumps(a32))
    a32_torch = json.loads(json.dumps(a32))
    a32_torch["agreement"] = {"reference": "fp32", "flip_rate": 0.0, "max_abs_dp": 0.001, "mean_abs_dp": 0.0, "kl": 0.0}
    a32_torch["agreement"].update(paired_differences(np.array(TRUTH), np.array(fp32_p), np.array(fp32_p))[0])
    a8_cpu = json.loads(json.dumps(a8))
    trt = (
        "tensorrt: unavailable — TensorRT libraries (libnvinfer) not found (TensorrtExecutionProvider could "
        "not start; ORT fell back to CPU)"
    )
    cells = [
        ok("fp32", "cuda", 1, 11.4, 3105.0, 41.0, 1, a32),
        ok("fp32", "cuda", 8, 52.0, 3390.0, 78.0, 2),
        ok("fp32", "cpu", 1, 61.0, None, None, 3, a32_cpu),
        CellResult.not_run("fp32", "tensorrt", 1, "unavailable", trt),
        ok("fp16", "cuda", 1, 7.12, 2329.0, 30.0, 4, a16),
        ok("fp16", "cuda", 8, 30.5, 2550.0, 70.0, 5),
        CellResult.not_run(
            "fp16", "cpu", 1, "failed", "cpu: the cell's process crashed (SIGABRT: the process aborted)"
        ),
        CellResult.not_run("fp16", "tensorrt", 1, "unavailable", trt),
        CellResult.not_run(
            "int8", "cuda", 1, "failed", "cuda: the cell's process timed out after 900 s (a hang?) and was killed"
        ),
        ok("int8", "cpu", 1, 38.0, None, None, 6, a8_cpu),
        CellResult.not_run("int8", "tensorrt", 1, "unavailable", trt),
        ok("pytorch", "cuda", 1, 16.1, 3310.0, 55.0, 7, a32_torch),
    ]
    for c in cells:
        if c.model is None:
            c.model = model(c.variant)
    result = RunResult(
        environment={
            "onnxruntime": "1.31.1",
            "onnxruntime_build": "gpu",
            "onnxruntime_providers_compiled": [
                "TensorrtExecutionProvider",
                "CUDAExecutionProvider",
                "CPUExecutionProvider",
            ],
            "onnx": "1.19.0",
            "numpy": "2.3.0",
            "python": "3.11.7",
            "bench": "0.1.0",
            "platform": {"system": "Linux", "release": "6.8.0", "machine": "x86_64"},
            "cpu": {"model": "Example CPU @ 3.0GHz", "cores_physical": 8, "cores_logical": 16, "affinity": 16},
            "memory_total_mb": 32000,
            "gpu": {"name": "NVIDIA Example GPU 6GB", "driver": "575.51", "cuda": "12.9", "memory_total_mb": 6144},
            "gpu_reason": None,
            "cuda_libraries": {},
            "machine_id": "0123456789ab",
        },
        config={
            "command": "matrix",
            "model_dir": "variants/seedlike",
            "variants": ["fp32", "fp16", "int8", "pytorch"],
            "providers": ["cuda", "cpu", "tensorrt"],
            "batch_sizes": [1, 8],
            "cell_timeout_s": 900.0,
            "with_service": False,
            "iterations": 20,
            "warmup": 5,
            "min_time_s": None,
            "threads": None,
            "inter_op_threads": None,
            "graph_opt": "all",
            "device_id": 0,
            "trt_fp16": True,
            "trt_cache": None,
            "io_binding": None,
            "sample_hz": 10.0,
            "seed": 0,
            "threshold": None,
            "positive_label": None,
            "accuracy_reason": None,
            "reference_variant": "fp32",
            "policy_file": None,
            "policy": None,
        },
        dataset={"path": "datasets/seedlike", "n": 12, "fingerprint": "d" * 64},
        cells=cells,
        service=[service_entry()],
        run_id="20250530T101500Z-5eed00",
        created="2025-05-30T10:15:00+00:00",
    )
    (HERE / "results.json").write_text(result.to_json() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

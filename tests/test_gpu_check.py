"""The prepared GPU check's own logic: wheels split for small transfers are joined, cells summarised."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def check_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tests" / "gpu" / "check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_wheel_parts_are_joined_in_order(tmp_path: Path) -> None:
    wheel = tmp_path / "src" / "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("onnxruntime/__init__.py", "x" * 5000)
    data = wheel.read_bytes()
    folder = tmp_path / "wheels"
    folder.mkdir()
    for i in range(0, len(data), 1000):  # like `split -b 1000 -d x.whl x.whl.part`
        (folder / f"{wheel.name}.part{i // 1000:02d}").write_bytes(data[i : i + 1000])
    (folder / "nvidia_cublas-13.10.0.20-py3-none-manylinux1_x86_64.whl").write_bytes(b"whole")
    wheels = check_module().join_split_wheels(folder)
    assert [w.name for w in wheels] == sorted([wheel.name, "nvidia_cublas-13.10.0.20-py3-none-manylinux1_x86_64.whl"])
    assert (folder / wheel.name).read_bytes() == data
    assert zipfile.ZipFile(folder / wheel.name).namelist() == ["onnxruntime/__init__.py"]


def test_cell_rows_carry_the_gpu_figures() -> None:
    cell = {
        "variant": "fp16",
        "provider": "tensorrt",
        "batch_size": 1,
        "status": "ok",
        "latency_ms": {"p50": 1.5},
        "memory": {
            "gpu_process_peak_mb": None,
            "gpu_device_peak_mb": 900.0,
            "gpu_telemetry": {"energy_per_image_j": 0.2, "noise": []},
            "gpu_run": {"engine_build": {"cache": "cold", "build_ms": 41000.0}},
        },
    }
    (row,) = check_module().cell_rows({"cells": [cell]}, "vit-trt-cold")
    assert row["trt_cache"] == "cold" and row["trt_build_ms"] == 41000.0 and row["energy_per_image_j"] == 0.2
    assert row["gpu_process_peak_mb"] is None and row["gpu_device_peak_mb"] == 900.0

"""The prepared GPU check's own logic: wheels split for small transfers are joined, cells summarised, the CUDA
provider pruned to one GPU architecture (tests/gpu/slim_wheel.py) without moving a byte of anything else."""

from __future__ import annotations

import importlib.util
import io
import lzma
import struct
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def check_module(name: str = "check") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", ROOT / "tests" / "gpu" / f"{name}.py")
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


def fake_cuda_library(entries: list[tuple[int, int, bytes]], fat_size_error: int = 0) -> bytearray:
    """A minimal ELF64 with a ``.nv_fatbin`` section of one fatbin holding (kind, sm, payload) entries, laid out
    as nvcc writes them: a 16-byte fatbin header, then per entry a 64-byte header and its padded payload."""
    body = bytearray()
    for kind, sm, payload in entries:
        header = bytearray(64)
        struct.pack_into("<HHII", header, 0, kind, 0x101, 64, len(payload))
        struct.pack_into("<I", header, 28, sm)
        body += header + payload
    fatbin = struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body) + fat_size_error) + bytes(body)
    names = b"\0.shstrtab\0.nv_fatbin\0"
    elf = bytearray(64)
    elf[:4] = b"\x7fELF"
    names_at = len(elf)
    elf += names
    fatbin_at = len(elf)
    elf += fatbin
    shoff = len(elf)
    struct.pack_into("<Q", elf, 0x28, shoff)
    struct.pack_into("<HHH", elf, 0x3A, 64, 3, 1)
    elf += bytes(64)  # the null section
    elf += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    elf += struct.pack("<IIQQQQIIQQ", 11, 1, 2, 0, fatbin_at, len(fatbin), 0, 0, 8, 0)
    return elf


def test_other_architectures_code_is_zeroed_and_nothing_else_moves() -> None:
    slim = check_module("slim_wheel")
    sm80, sm90, ptx = b"\x11" * 32, b"\x22" * 48, b"\x33" * 16
    elf = fake_cuda_library([(2, 80, sm80), (2, 90, sm90), (1, 80, ptx)])
    before = bytes(elf)
    seen = slim.prune_fatbin(elf, 90)
    assert dict(seen) == {"sm_80 zeroed": 32, "sm_90 kept": 48, "ptx kept": 16}
    assert len(elf) == len(before)
    assert sm90 in elf and ptx in elf and sm80 not in elf
    changed = [i for i, (a, b) in enumerate(zip(before, elf, strict=True)) if a != b]
    start = before.index(sm80)
    assert changed == list(range(start, start + 32))  # exactly the sm_80 payload, headers untouched


def test_a_fatbin_layout_it_does_not_understand_is_refused() -> None:
    slim = check_module("slim_wheel")
    with pytest.raises(ValueError, match="the layout is not understood"):
        slim.prune_fatbin(fake_cuda_library([(2, 80, b"\x11" * 32)], fat_size_error=8), 90)
    with pytest.raises(ValueError, match=r"no \.nv_fatbin section"):
        slim.fatbin_section(fake_cuda_library([]).replace(b".nv_fatbin", b".nv_fatbix"))


def test_the_slim_wheel_unpacks_to_the_same_files(tmp_path: Path) -> None:
    slim = check_module("slim_wheel")
    wheel = tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    library = fake_cuda_library([(2, 75, b"\x44" * 64), (2, 90, b"\x55" * 64)])
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("onnxruntime/__init__.py", "version = '1.31.1'\n")
        zf.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so", bytes(library))
    out = tmp_path / "parts"
    assert slim.main([str(wheel), "--out", str(out), "--part-mb", "0.0002"]) == 0
    parts = sorted(out.iterdir())
    assert len(parts) > 1 and all(p.name.startswith(wheel.name.replace(".whl", "-sm90.tar.xz.part")) for p in parts)
    joined = lzma.decompress(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert files["onnxruntime/__init__.py"] == b"version = '1.31.1'\n"
    pruned = files["onnxruntime/capi/libonnxruntime_providers_cuda.so"]
    assert len(pruned) == len(library) and b"\x55" * 64 in pruned and b"\x44" * 64 not in pruned

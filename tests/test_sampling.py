from __future__ import annotations

import os
import time

import pytest

from bench import environment
from bench.gpu import Gpu, GpuUnavailable, probe
from bench.sampling import ResourceSampler

from fakes import fake_pynvml


def test_cpu_sampling_without_gpu_gives_reason() -> None:
    with ResourceSampler(hz=50, gpu_index=None) as sampler:
        blob = bytearray(30 * 1024 * 1024)  # touch memory so RSS moves
        time.sleep(0.1)
    stats = sampler.stats()
    del blob
    assert stats.samples >= 3
    assert stats.rss_peak_mb is not None and stats.rss_peak_mb >= stats.rss_mean_mb > 0
    assert stats.gpu_device_peak_mb is None and stats.gpu_reason == "GPU not sampled for a CPU cell"


def test_sampling_disabled() -> None:
    with ResourceSampler(hz=0, gpu_index=None) as sampler:
        pass
    stats = sampler.stats()
    assert stats.samples == 0 and stats.rss_peak_mb is None and "disabled" in stats.gpu_reason


def test_gpu_fields_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml(pid=os.getpid(), util=36))
    with ResourceSampler(hz=50, gpu_index=0) as sampler:
        time.sleep(0.05)
    stats = sampler.stats()
    assert stats.gpu_device_peak_mb == pytest.approx(2329.0)
    assert stats.gpu_total_mb == pytest.approx(6144.0)
    assert stats.gpu_process_peak_mb == pytest.approx(1200.0)
    assert stats.gpu_util_max_pct == 36 and stats.gpu_reason is None


def test_nvml_missing_is_a_reason_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml(fail_init=True))
    gpu, reason = probe(0)
    assert gpu is None and "NVML not usable" in reason
    with ResourceSampler(hz=20, gpu_index=0) as sampler:
        time.sleep(0.02)
    assert sampler.stats().gpu_device_peak_mb is None
    assert "NVML" in sampler.stats().gpu_reason


def test_missing_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml())
    with pytest.raises(GpuUnavailable, match="GPU 3 not present"):
        Gpu.open(3)


def test_fingerprint_with_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml())
    env = environment.fingerprint()
    assert env["gpu"] == {
        "index": 0,
        "name": "NVIDIA Fake GPU 6GB",
        "driver": "575.51",
        "cuda": "12.9",
        "memory_total_mb": 6144.0,
    }
    assert env["onnxruntime_build"] in ("gpu", "cpu")
    assert "hostname" not in str(env).lower()
    assert len(env["machine_id"]) == 12


def test_fingerprint_without_gpu_has_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml(fail_init=True))
    env = environment.fingerprint()
    assert env["gpu"] is None and env["gpu_reason"]
    assert set(env["cuda_libraries"]) == {"cudart", "cublas", "cudnn", "tensorrt"}

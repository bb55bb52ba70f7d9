"""The machine's GEMM peak: measured through ORT once per machine id × provider × threads, then cached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.profile import peak


def test_peak_is_measured_once_then_read_from_the_cache(peak_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[Any] = []
    real = peak.measure_peak

    def small(provider: str = "cpu", threads: int | None = None) -> peak.PeakRecord:
        measured.append((provider, threads))
        return real(provider, threads, sizes=(64, 128))

    monkeypatch.setattr(peak, "measure_peak", small)
    first = peak.machine_peak("cpu", 1, machine_id="m1")
    assert first["gflops"] > 0 and not first["cached"] and set(first["by_size"]) == {"64", "128"}
    again = peak.machine_peak("cpu", 1, machine_id="m1")
    assert again["cached"] and again["gflops"] == first["gflops"] and len(measured) == 1
    peak.machine_peak("cpu", 1, machine_id="m2")  # another machine: measured again
    peak.machine_peak("cpu", 1, machine_id="m1", refresh=True)
    assert len(measured) == 3
    stored = json.loads((peak_cache / "peak.json").read_text())
    assert set(stored) == {"m1/cpu/threads=1", "m2/cpu/threads=1"}


def test_a_damaged_cache_is_measured_again(peak_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peak_cache.mkdir(parents=True)
    (peak_cache / "peak.json").write_text("{not json")
    monkeypatch.setattr(peak, "measure_peak", lambda p="cpu", t=None: peak.PeakRecord(gflops=1.5, provider=p))
    assert peak.machine_peak("cpu", None, machine_id="m")["gflops"] == 1.5

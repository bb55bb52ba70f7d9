"""GPU telemetry through the NVML boundary (a fake ``pynvml``): memory attribution, the timed phase,
clocks, throttling and energy per image; and the policy's GPU-memory check when nothing is attributed."""

from __future__ import annotations

import os
import sys
import time

import pytest

from bench.gpu import Gpu, throttle_reason_names
from bench.report.policy import NOT_MEASURED, PASS, evaluate_policy, load_policy
from bench.results import CellResult, RunResult
from bench.sampling import ResourceSampler

from fakes import NvmlState, fake_pynvml


def use(monkeypatch: pytest.MonkeyPatch, **kw: object) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(**kw))  # type: ignore[arg-type]


def test_process_not_listed_is_null_with_a_reason_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, pid=None, other_pids=(4242,))  # a container: NVML lists host PIDs only
    mb, why = Gpu.open(0).process_memory(os.getpid())
    assert mb is None and f"does not list this process (PID {os.getpid()})" in why and "1 other" in why
    with ResourceSampler(hz=50, gpu_index=0) as sampler:
        time.sleep(0.03)
    stats = sampler.stats()
    assert stats.gpu_process_peak_mb is None
    assert "does not list this process" in stats.gpu_process_reason
    assert stats.gpu_reason.startswith("per-process GPU memory not measured")
    assert stats.gpu_device_peak_mb == pytest.approx(2329.0) and stats.gpu_device_scope.startswith("device-wide")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"pid": "me", "proc_mb": None}, "lists this process but not its memory"),
        ({"fail_processes": True}, "cannot list the processes"),
    ],
)
def test_other_attribution_failures_have_their_own_reason(
    monkeypatch: pytest.MonkeyPatch, kw: dict[str, object], reason: str
) -> None:
    if kw.get("pid") == "me":
        kw = {**kw, "pid": os.getpid()}
    use(monkeypatch, **kw)
    mb, why = Gpu.open(0).process_memory(os.getpid())
    assert mb is None and reason in why


def test_listed_process_is_attributed(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, pid=os.getpid(), proc_mb=812.5)
    assert Gpu.open(0).process_memory(os.getpid()) == (pytest.approx(812.5), None)


def test_means_cover_the_timed_phase_and_peaks_the_whole_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(sm_clock_mhz=1980)
    mod = fake_pynvml(pid=os.getpid(), state=state, util=10)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    with ResourceSampler(hz=100, gpu_index=0) as sampler:
        blob = bytearray(64 * 1024 * 1024)  # a "session creation" that peaks outside the timed phase
        blob[::4096] = b"x" * len(blob[::4096])
        time.sleep(0.05)
        del blob
        mod.nvmlDeviceGetUtilizationRates = lambda h: type("U", (), {"gpu": 90})()  # busy only while timed
        with sampler.timed():
            time.sleep(0.08)
        mod.nvmlDeviceGetUtilizationRates = lambda h: type("U", (), {"gpu": 5})()
        time.sleep(0.03)
    stats = sampler.stats(timed_images=40)
    assert stats.means_over == "timed" and stats.peaks_over == "cell"
    assert 2 <= stats.timed_samples < stats.samples
    assert stats.gpu_util_mean_pct == 90 and stats.gpu_util_max_pct == 90  # idle readings left out
    assert stats.rss_peak_mb > stats.rss_mean_mb + 30  # the peak saw the 64 MB, the timed mean did not


def test_without_a_marked_phase_means_cover_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, pid=os.getpid())
    with ResourceSampler(hz=50, gpu_index=0) as sampler:
        time.sleep(0.03)
    stats = sampler.stats()
    assert stats.means_over == "cell" and stats.timed_samples == 0
    assert stats.gpu_telemetry["energy_reason"] == "no timed phase was marked"


def test_energy_per_image_from_the_counter_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(energy_mj=1_000_000)
    mod = fake_pynvml(pid=os.getpid(), state=state)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler:  # one sample at each edge: readings under control
        sampler.mark_timed_start()
        state.energy_mj += 12_500  # 12.5 J spent in the timed phase
        sampler.mark_timed_end()
        state.energy_mj += 99_000  # after the phase: not counted
    tele = sampler.stats(timed_images=50).gpu_telemetry
    assert tele["energy_j"] == pytest.approx(12.5)
    assert tele["energy_per_image_j"] == pytest.approx(0.25)
    assert tele["energy_reason"] is None and tele["timed_s"] >= 0


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda st: st.unsupported.add("nvmlDeviceGetTotalEnergyConsumption"), "this GPU has no total-energy counter"),
        (lambda st: None, "the number of images in the timed phase was not given"),
    ],
)
def test_energy_not_measured_says_why(monkeypatch: pytest.MonkeyPatch, setup: object, reason: str) -> None:
    state = NvmlState(energy_step_mj=1000)
    setup(state)  # type: ignore[operator]
    use(monkeypatch, pid=os.getpid(), state=state)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler, sampler.timed():
        pass
    tele = sampler.stats().gpu_telemetry
    assert tele["energy_per_image_j"] is None and tele["energy_reason"] == reason


def test_energy_counter_reset_is_not_a_negative_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(energy_mj=9_000_000)
    use(monkeypatch, pid=os.getpid(), state=state)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler:
        sampler.mark_timed_start()
        state.energy_mj = 10  # the driver reloaded
        sampler.mark_timed_end()
    tele = sampler.stats(timed_images=10).gpu_telemetry
    assert tele["energy_j"] is None and "backwards" in tele["energy_reason"]


def test_clock_change_and_throttling_are_flagged_as_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(sm_clock_mhz=1980, mem_clock_mhz=2619)
    use(monkeypatch, pid=os.getpid(), state=state)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler:
        sampler.mark_timed_start()
        state.sm_clock_mhz, state.throttle_mask, state.power_mw = 1410, 0x4 | 0x20, 250_000  # power cap + thermal
        sampler.mark_timed_end()
    tele = sampler.stats(timed_images=1).gpu_telemetry
    assert tele["clocks_changed"] is True
    assert tele["sm_clock_mhz"] == {"mean": 1695.0, "min": 1410.0, "max": 1980.0}
    assert tele["mem_clock_mhz"]["min"] == tele["mem_clock_mhz"]["max"] == 2619.0
    assert tele["power_w"]["max"] == 250.0 and tele["temperature_c"]["mean"] == 55.0
    assert tele["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert any("SM clock changed" in n for n in tele["noise"]) and any("throttled" in n for n in tele["noise"])


def test_steady_clocks_and_idle_reason_are_not_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(throttle_mask=0x1)  # gpu_idle between calls says nothing about a slowdown
    use(monkeypatch, pid=os.getpid(), state=state)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler, sampler.timed():
        state.sm_clock_mhz = 1975  # 0.25 %: within tolerance
    tele = sampler.stats(timed_images=1).gpu_telemetry
    assert tele["clocks_changed"] is False and tele["noise"] == [] and tele["throttle_reasons"] == ["gpu_idle"]


def test_unsupported_readings_are_null(monkeypatch: pytest.MonkeyPatch) -> None:
    state = NvmlState(unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetCurrentClocksEventReasons"})
    use(monkeypatch, pid=os.getpid(), state=state)
    reading = Gpu.open(0).telemetry()
    assert reading["power_w"] is None and reading["throttle_reasons"] is None and reading["sm_clock_mhz"] == 1980.0


def test_throttle_reason_names() -> None:
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x8 | 0x40) == ["hw_slowdown", "hw_thermal_slowdown"]
    assert throttle_reason_names(0x1000) == ["other_0x1000"]


def _gpu_cell(memory: dict[str, object]) -> RunResult:
    cell = CellResult(variant="fp16", provider="cuda", batch_size=1, memory=memory)  # type: ignore[arg-type]
    cell.latency_ms = {"p99": 1.0}
    return RunResult(environment={}, config={}, cells=[cell])


def gpu_check(result: RunResult) -> object:
    verdict = evaluate_policy(result, load_policy())
    return next(o for o in verdict.rows[0].outcomes if o.key == "max_gpu_memory_mb")


def test_policy_never_passes_gpu_memory_it_could_not_attribute() -> None:
    """A 0 MB or device-only figure used to pass the 2 GB check; unattributed memory is 'not measured'."""
    outcome = gpu_check(
        _gpu_cell(
            {
                "gpu_process_peak_mb": None,
                "gpu_device_peak_mb": 900.0,
                "gpu_process_reason": "NVML does not list this process (PID 7)",
            }
        )
    )
    assert outcome.status == NOT_MEASURED and outcome.value is None
    assert "does not list this process" in outcome.detail and "device-wide peak 900 MB" in outcome.detail
    attributed = gpu_check(_gpu_cell({"gpu_process_peak_mb": 900.0, "gpu_device_peak_mb": 5000.0}))
    assert attributed.status == PASS and attributed.value == 900.0


def test_energy_adds_up_over_replicates_and_skips_the_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner times R replicates, each in its own timed() block; session creation between them is not counted."""
    state = NvmlState(energy_mj=0)
    use(monkeypatch, pid=os.getpid(), state=state)
    with ResourceSampler(hz=0.001, gpu_index=0) as sampler:
        for spent_mj in (4_000, 6_000):
            with sampler.timed():
                state.energy_mj += spent_mj
            state.energy_mj += 50_000  # the next session's creation (a TensorRT build, say)
    tele = sampler.stats(timed_images=20).gpu_telemetry
    assert tele["energy_j"] == pytest.approx(10.0) and tele["energy_per_image_j"] == pytest.approx(0.5)

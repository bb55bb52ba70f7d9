"""The prepared GPU check: one script, one NVIDIA GPU, ≤ 8 minutes, no download at run time.

    python tests/gpu/check.py --out gpu-check [--wheels DIR] [--vit DIR] [--budget-s 480]

Steps (each bounded; a step that cannot run is recorded with its reason and the rest go on):
  0. --wheels DIR: join split wheels (``x.whl.part00``, ``x.whl.part01``, … → ``x.whl``) and
     ``pip install --no-index --find-links DIR`` every wheel there (onnxruntime-gpu, nvidia-*, tensorrt).
  1. ``bench info --json`` (providers usable or why not, each library found or missing + the fix).
  2. The demo bundle: ``bench matrix`` over cpu,cuda,tensorrt × batch 1,8 (report folder).
  3. A ViT-base (random weights built here with torch + transformers, or the folder given by --vit):
     fp32/fp16/int8 on cuda with IOBinding, the same with --cuda-graph, fp32 end-to-end (--no-io-binding:
     copy in / compute / copy out), fp16 on TensorRT with a cold then a warm engine cache.
  4. ``bench serve --provider cuda`` + a short ``bench load``.
Writes OUT/summary.json and OUT/summary.md (every step: ok / unavailable / failed, the reason, the
figures), and each step's results beside them. Exit 0 when every step produced its result (GPU cells
may be unavailable: that is a result), 1 when a step broke (a bench internal error, a crash, a timeout).
On a machine without a GPU (the dry run) every cuda/tensorrt cell is reported unavailable with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "bench"]


class Check:
    """Runs the steps within a wall-time budget and records what each one gave."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.steps: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def run(self, name: str, args: list[str], timeout_s: float, ok_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """One bench (or pip) command; stdout to OUT/<name>.out, stderr to OUT/<name>.log."""
        timeout_s = min(timeout_s, self.left())
        step: dict[str, Any] = {"step": name, "command": " ".join(args), "status": "ok", "reason": None}
        start = time.monotonic()
        if timeout_s < 5:
            step.update(status="skipped", reason="the check's time budget was spent")
            self.steps.append(step)
            return step
        with (self.out / f"{name}.out").open("wb") as so, (self.out / f"{name}.log").open("wb") as se:
            try:
                rc = subprocess.run(args, stdout=so, stderr=se, timeout=timeout_s, cwd=ROOT, check=False).returncode
            except subprocess.TimeoutExpired:
                rc = None
        step["wall_s"] = round(time.monotonic() - start, 1)
        step["exit_code"] = rc
        if rc is None:
            step.update(status="failed", reason=f"timed out after {timeout_s:.0f} s")
        elif rc not in ok_codes:
            step.update(status="failed", reason=f"exit {rc}: {last_line(self.out / f'{name}.log')}")
        self.steps.append(step)
        return step

    def result(self, name: str) -> dict[str, Any] | None:
        """The JSON document a step printed on stdout, if it printed one."""
        try:
            return json.loads((self.out / f"{name}.out").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# --- step 0: wheels ---------------------------------------------------------------------------------


def join_split_wheels(folder: Path) -> list[Path]:
    """``name.whl.part00`` + ``name.whl.part01`` … → ``name.whl`` (parts in name order); returns every wheel."""
    groups: dict[str, list[Path]] = {}
    for part in folder.iterdir():
        m = re.match(r"(.+\.whl)\.part\w*$", part.name)
        if m:
            groups.setdefault(m.group(1), []).append(part)
    for wheel, parts in groups.items():
        target = folder / wheel
        if target.exists():
            continue
        tmp = target.with_suffix(".whl.tmp")
        with tmp.open("wb") as sink:
            for part in sorted(parts, key=lambda p: p.name):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, sink)
        tmp.rename(target)
    return sorted(folder.glob("*.whl"))


def install_wheels(check: Check, folder: Path) -> None:
    wheels = join_split_wheels(folder)
    if not wheels:
        check.steps.append({"step": "wheels", "status": "failed", "reason": f"no .whl files in {folder}"})
        return
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder), *map(str, wheels)]
    check.run("wheels", pip, timeout_s=240)


# --- step 3: the ViT-base model folder --------------------------------------------------------------


def build_vit(target: Path, layers: int) -> str | None:
    """A ViT-base classifier (random weights, 2 labels) exported to ONNX with a dynamic batch axis; None or why not."""
    try:
        import torch
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError as exc:
        return f"torch/transformers not importable ({exc}); pass --vit DIR with a ViT model folder"
    config = ViTConfig(num_hidden_layers=layers, num_labels=2, id2label={0: "real", 1: "fake"})
    config.label2id = {"real": 0, "fake": 1}
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    (target / "onnx").mkdir(parents=True, exist_ok=True)
    config.save_pretrained(target)
    preprocessor = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": 224, "width": 224},
    }
    (target / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    with torch.no_grad():
        torch.onnx.export(
            Logits(),
            (torch.zeros(1, 3, 224, 224),),
            str(target / "onnx" / "model.onnx"),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return None


# --- step 4: serve + load ---------------------------------------------------------------------------


def serve_and_load(check: Check, model_dir: Path, provider: str) -> None:
    name = "serve"
    step: dict[str, Any] = {"step": name, "status": "ok", "reason": None}
    check.steps.append(step)
    if check.left() < 30:
        step.update(status="skipped", reason="the check's time budget was spent")
        return
    log = (check.out / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*BENCH, "serve", "--model-dir", str(model_dir), "--variant", "fp32", "--provider", provider, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        url = None
        until = time.monotonic() + min(120.0, check.left())
        while time.monotonic() < until and proc.poll() is None:
            text = (check.out / "serve.log").read_text(encoding="utf-8", errors="replace")
            m = re.search(r"ready on (http://\S+)", text)
            if m:
                url = m.group(1)
                break
            if "failed to load" in text.lower() or "unavailable" in text.lower():
                break
            time.sleep(0.5)
        if url is None:
            why = last_line(check.out / "serve.log") or "no ready line"
            status = "unavailable" if "unavailable" in why else "failed"
            step.update(status=status, reason=f"bench serve --provider {provider} did not become ready: {why}")
            return
        step["url"] = url
        load = check.run(
            "load", [*BENCH, "load", "--url", url, "--rate", "50", "--duration", "5", "--json"], timeout_s=60
        )
        step["load"] = load["status"]
        result = check.result("load")
        if result:
            step["figures"] = {
                "achieved_rate": result.get("achieved_rate"),
                "p50_ms": (result.get("latency_ms") or {}).get("p50"),
                "p99_ms": (result.get("latency_ms") or {}).get("p99"),
                "errors": result.get("errors"),
            }
    finally:
        with_signal(proc)
        log.close()


def with_signal(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- figures and the summary ------------------------------------------------------------------------


def cell_rows(result: dict[str, Any] | None, label: str) -> list[dict[str, Any]]:
    """One row per cell of a RunResult: status/reason and the figures the closing note needs."""
    rows = []
    for cell in (result or {}).get("cells", []):
        mem = cell.get("memory") or {}
        tele = mem.get("gpu_telemetry") or {}
        run = mem.get("gpu_run") or {}
        build = run.get("engine_build") or {}
        rows.append(
            {
                "case": label,
                "variant": cell["variant"],
                "provider": cell["provider"],
                "batch_size": cell["batch_size"],
                "status": cell["status"],
                "reason": cell.get("reason"),
                "p50_ms": (cell.get("latency_ms") or {}).get("p50"),
                "throughput_ips": cell.get("throughput_ips"),
                "session_create_ms": cell.get("session_create_ms"),
                "gpu_process_peak_mb": mem.get("gpu_process_peak_mb"),
                "gpu_device_peak_mb": mem.get("gpu_device_peak_mb"),
                "gpu_util_mean_pct": mem.get("gpu_util_mean_pct"),
                "energy_per_image_j": tele.get("energy_per_image_j"),
                "noise": tele.get("noise"),
                "trt_cache": build.get("cache"),
                "trt_build_ms": build.get("build_ms"),
                "copy_breakdown_ms": run.get("copy_breakdown_ms"),
            }
        )
    return rows


def write_summary(check: Check, rows: list[dict[str, Any]], info: dict[str, Any] | None) -> None:
    providers = {
        name: {"usable": state.get("usable"), "reason": state.get("reason"), "missing": state.get("missing")}
        for name, state in ((info or {}).get("providers") or {}).items()
    }
    summary = {"gpu": (info or {}).get("gpu"), "providers": providers, "steps": check.steps, "cells": rows}
    (check.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = ["# bench GPU check", "", f"GPU: {summary['gpu'] or (info or {}).get('gpu_reason')}", ""]
    lines += ["| step | status | wall s | reason |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s.get('wall_s', '')} | {s.get('reason') or ''} |" for s in check.steps]
    lines += ["", "| case | variant | provider | batch | status | p50 ms | GPU MB (proc/dev) | J/image | reason |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gpu = f"{r['gpu_process_peak_mb']} / {r['gpu_device_peak_mb']}"
        lines.append(
            f"| {r['case']} | {r['variant']} | {r['provider']} | {r['batch_size']} | {r['status']} | "
            f"{r['p50_ms']} | {gpu} | {r['energy_per_image_j']} | {r['reason'] or ''} |"
        )
    (check.out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder to write")
    parser.add_argument("--wheels", type=Path, help="install every wheel here first (split *.part* joined), offline")
    parser.add_argument("--vit", type=Path, help="a ViT model folder (onnx/model.onnx + config.json) to use")
    parser.add_argument("--vit-layers", type=int, default=12, help="encoder layers of the ViT built here (base: 12)")
    parser.add_argument("--budget-s", type=float, default=480, help="wall-time budget for all steps (default 8 min)")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per cell")
    args = parser.parse_args(argv)
    check = Check(args.out.resolve(), args.budget_s)
    out = check.out
    cache = out / "trt-cache"

    if args.wheels:
        install_wheels(check, args.wheels)
    check.run("info", [*BENCH, "info", "--json"], timeout_s=60)
    info = check.result("info")
    rows: list[dict[str, Any]] = []
    measure = ["--iterations", str(args.iterations), "--warmup", "10", "--trt-cache", str(cache)]

    demo = ROOT / "variants" / "demo"
    check.run(
        "demo",
        [*BENCH, "matrix", "--model-dir", str(demo), "--variants", "fp32,fp16,int8", "--providers",
         "cpu,cuda,tensorrt", "--batch-sizes", "1,8", "--cell-timeout", "120", "--out", str(out / "demo"), *measure],
        timeout_s=240,
    )  # fmt: skip
    demo_result = out / "demo" / "results.json"
    if demo_result.is_file():
        rows += cell_rows(json.loads(demo_result.read_text(encoding="utf-8")), "demo")

    vit = args.vit
    if vit is None:
        vit = out / "vit-base"
        start = time.monotonic()
        why = build_vit(vit, args.vit_layers)
        check.steps.append(
            {"step": "vit-export", "status": "ok" if why is None else "unavailable", "reason": why,
             "wall_s": round(time.monotonic() - start, 1)}
        )  # fmt: skip
        if why is not None:
            vit = None
    if vit is not None:
        check.run("vit-build", [*BENCH, "variants", "build", "--model-dir", str(vit), "--only", "fp16,int8"], 180)
        cases = [
            ("vit-cuda", ["--variant", "fp32,fp16,int8", "--provider", "cuda"]),
            ("vit-cuda-graph", ["--variant", "fp32,fp16,int8", "--provider", "cuda", "--cuda-graph"]),
            ("vit-cuda-e2e", ["--variant", "fp32", "--provider", "cuda", "--no-io-binding"]),
            ("vit-trt-cold", ["--variant", "fp16", "--provider", "tensorrt"]),
            ("vit-trt-warm", ["--variant", "fp16", "--provider", "tensorrt"]),
        ]
        for name, flags in cases:
            # exit 3 = the cell could not run here: a result (unavailable/failed with its reason), not a broken step
            check.run(name, [*BENCH, "run", "--model-dir", str(vit), *flags, *measure, "--json"], 150, ok_codes=(0, 3))
            rows += cell_rows(check.result(name), name)
        serve_and_load(check, vit, "cuda")
    write_summary(check, rows, info)
    broken = [s for s in check.steps if s["status"] == "failed"]
    print(f"gpu check: {len(check.steps)} steps, {len(broken)} broken; summary in {out / 'summary.md'}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

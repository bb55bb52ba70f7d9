#!/usr/bin/env python3
"""Eager PyTorch vs ONNX Runtime variants: interleaved p50 latency, ratio with a bootstrap interval, and RSS.

Not part of the test run (pytest ignores tests/benchmarks/). Checks the seed report's "ONNX is 2–3× faster
than PyTorch" on this machine. All engines live in one process and take turns in rounds whose order is
shuffled every round, each round timing ``--calls`` calls of every engine on the same real-image batch
(the demo set through bench's preprocess), so drift of a shared machine falls on every engine alike. The
ratio ONNX p50 / PyTorch p50 gets a two-level bootstrap interval (rounds, then calls: bench.stats). RSS is
measured per engine in a fresh child process (after imports, after load + warm-up + calls, and peak).

    python tests/benchmarks/pytorch_vs_onnx.py                                   # demo bundle, cpu, batch 1 and 8
    python tests/benchmarks/pytorch_vs_onnx.py --vitbase /tmp/vitbase            # random-weight ViT-base (made once)
    python tests/benchmarks/pytorch_vs_onnx.py --rounds 20 --calls 30 --threads 2 --json out.json

Needs bench with the torch extra (pip install -e '.[torch]'). Missing int8/q4 files are built by bench's
recipes first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends import open_engine
from bench.bundle import Bundle, resolve_model_dir
from bench.datasets import image_files
from bench.engine import SessionSpec
from bench.preprocess import load_image, preprocess_batch
from bench.stats import quantile, ratio_interval
from bench.variants import ensure_variant

REPO = Path(__file__).resolve().parents[2]
REFERENCE = "pytorch"


def make_vitbase(root: Path, seed: int = 0) -> Path:
    """A random-weight ViT-base checkpoint (config.json + model.safetensors) and its ONNX export, once."""
    if (root / "model.safetensors").is_file() and (root / "onnx" / "model.onnx").is_file():
        return root
    import warnings

    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels = {0: "Real", 1: "Fake"}  # the released model's order
    config = ViTConfig(id2label=labels, label2id={v: k for k, v in labels.items()})  # ViT-base defaults: 224, 16, 768
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(str(root))
    (root / "onnx").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            str(root / "onnx" / "model.onnx"),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
            opset_version=17,
            dynamo=False,
        )
    preprocessor = {"size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (root / "preprocessor_config.json").write_text(json.dumps(preprocessor | {"resample": 2, "do_rescale": True}))
    return root


def real_batch(bundle: Bundle, batch_size: int, hw: tuple[int, int] | None) -> np.ndarray:
    paths = image_files(REPO / "datasets" / "demo")
    chosen = [paths[i * 7 % len(paths)] for i in range(batch_size)]
    return preprocess_batch([load_image(p) for p in chosen], bundle.preprocess_config(hw))


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def rss_child(model_path: str, variant: str, batch_size: int, threads: int | None, calls: int) -> dict[str, Any]:
    """In a fresh process: RSS after importing the backend, after load + calls, and the peak."""
    if variant.startswith("pytorch"):
        import torch  # noqa: F401
        import transformers  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    after_import = rss_mb()
    engine = open_engine(model_path, variant, "cpu", SessionSpec(threads=threads))
    batch = engine.random_batch(batch_size)
    call = engine.timed_call(batch, io_binding=False)
    for _ in range(calls):
        call()
    return {"after_import_mb": after_import, "loaded_mb": rss_mb(), "peak_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's high-water RSS: VmHWM (reset by exec, unlike ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most, an upper bound


def measure_rss(paths: dict[str, Path], batch_size: int, threads: int | None) -> dict[str, dict[str, float]]:
    out = {}
    for variant, path in paths.items():
        cmd = [sys.executable, __file__, "--rss-child", variant, str(path), "--batch-sizes", str(batch_size)]
        cmd += ["--threads", str(threads)] if threads else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        out[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def interleaved(engines: dict[str, Any], batch: np.ndarray, rounds: int, calls: int, seed: int) -> dict[str, list]:
    """Per engine, one array of per-call ms per round; each round visits the engines in a fresh random order."""
    timed = {name: e.timed_call(batch.astype(e.input.dtype), io_binding=False) for name, e in engines.items()}
    for call in timed.values():  # warm-up, untimed
        for _ in range(max(3, calls // 4)):
            call()
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    clock = time.perf_counter_ns
    names = list(engines)
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            call, ms = timed[names[i]], np.empty(calls)
            for k in range(calls):
                t0 = clock()
                call()
                ms[k] = (clock() - t0) / 1e6
            samples[names[i]].append(ms)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="HF + ONNX bundle (default: the demo)")
    parser.add_argument("--vitbase", type=Path, default=None, help="make (once) and use a random ViT-base here")
    parser.add_argument("--variants", default="fp32,int8,q4", help="ONNX variants compared with pytorch")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the bootstrap's top level)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per engine per round")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both (default: theirs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rss-child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        variant, path = args.rss_child
        print(json.dumps(rss_child(path, variant, int(args.batch_sizes), args.threads, args.calls)))
        return 0

    root = make_vitbase(args.vitbase) if args.vitbase else resolve_model_dir(args.model_dir)
    bundle = Bundle.discover(root)
    names = [REFERENCE, *[v.strip() for v in args.variants.split(",") if v.strip()]]
    paths = {v: ensure_variant(bundle, v, log=lambda m: print(m, file=sys.stderr)) for v in names}
    spec = SessionSpec(threads=args.threads)
    engines = {v: open_engine(paths[v], v, "cpu", spec) for v in names}
    import onnxruntime
    import torch

    load = os.getloadavg()
    conditions = {
        "model_dir": str(bundle.root),
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads or f"defaults (torch {torch.get_num_threads()}, ORT: all physical cores)",
        "loadavg_at_start": [round(x, 2) for x in load],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "io_binding": False,
        "input": "demo images through bench.preprocess (the same tensor for every engine)",
    }
    print(f"# PyTorch vs ONNX Runtime on cpu · {bundle.root}")
    print(json.dumps(conditions))
    report: dict[str, Any] = {"conditions": conditions, "batches": {}}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batch = real_batch(bundle, batch_size, engines["fp32"].input.image_hw() if "fp32" in engines else None)
        samples = interleaved(engines, batch, args.rounds, args.calls, args.seed)
        rss = measure_rss(paths, batch_size, args.threads)
        rows = []
        ref_p50 = quantile(np.concatenate(samples[REFERENCE]), 0.5)
        print(f"\n## batch {batch_size} (load average now {os.getloadavg()[0]:.2f})\n")
        print("| variant | p50 ms | ONNX/PyTorch p50 [95% CI] | speed-up vs PyTorch | RSS MB: imported, loaded, peak |")
        print("|---|---|---|---|---|")
        for v in names:
            p50 = quantile(np.concatenate(samples[v]), 0.5)
            row: dict[str, Any] = {"variant": v, "p50_ms": p50, **{f"rss_{k}": x for k, x in rss[v].items()}}
            if v == REFERENCE:
                ratio_text = speed_text = "reference"
            else:
                est = ratio_interval(samples[v], samples[REFERENCE], "median", seed=args.seed, unit="rounds")
                row.update(ratio=est.point, ratio_low=est.low, ratio_high=est.high)
                ratio_text = f"{est.point:.3f} [{est.low:.3f}, {est.high:.3f}]"
                speed_text = f"{1 / est.point:.2f}× [{1 / est.high:.2f}, {1 / est.low:.2f}]"
            rows.append(row)
            print(
                f"| {v} | {p50:.3f} | {ratio_text} | {speed_text} | {rss[v]['after_import_mb']:.0f}, "
                f"{rss[v]['loaded_mb']:.0f}, {rss[v]['peak_mb']:.0f} |"
            )
        print(f"\nPyTorch p50 {ref_p50:.3f} ms; seed claim: ONNX 2–3× faster than PyTorch.")
        report["batches"][str(batch_size)] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ViT-base check (``nox -s vitbase``): do bench's recipes reproduce the released variant sizes?

Exports a random-weight ViT-base image classifier with the released model's architecture (hidden 768,
12 layers, 12 heads, patch 16, 224×224, 2 labels) with the TorchScript exporter (opset 17) into a
transformers.js-style folder, builds every recipe with bench, and prints one Markdown table: size vs
the released set (model.onnx 343, fp16 171, int8 87, q4 56, bnb4 51 MB; each must be within ±5%),
CPU latency at batch 1 (median, through bench's runner) and ``bench variants check`` agreement with fp32.
Exit 1 when a size is off, 0 otherwise.

    python variants/vitbase_check.py                       # torch + transformers + bench in one env (nox)
    python variants/vitbase_check.py --export-python PY    # export in another interpreter that has torch
    python variants/vitbase_check.py --work DIR            # keep (and re-use) the export and variants in DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RELEASED_MB = {"fp32": 343, "fp16": 171, "int8": 87, "q4": 56, "bnb4": 51}
SIZE_TOLERANCE = 0.05
LABELS = {0: "Real", 1: "Fake"}


def export(model_dir: Path, seed: int = 0) -> Path:
    """A random-weight ViT-base ``ViTForImageClassification`` → ``model_dir/onnx/model.onnx`` (+ configs)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        image_size=224,
        num_channels=3,
        num_labels=2,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
    )
    model = ViTForImageClassification(config).eval()
    out = model_dir / "onnx" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(out),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
            opset_version=17,
            dynamo=False,
        )
    (model_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "vit",
                "architectures": ["ViTForImageClassification"],
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "patch_size": 16,
                "image_size": 224,
                "id2label": {str(k): v for k, v in LABELS.items()},
                "label2id": {v: k for k, v in LABELS.items()},
            },
            indent=2,
        )
    )
    (model_dir / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True,
                "size": {"height": 224, "width": 224},
                "resample": 2,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            },
            indent=2,
        )
    )
    params = sum(p.numel() for p in model.parameters())
    print(
        f"exported ViT-base ({params:,} parameters) to {out} in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )
    return out


def measure(model_dir: Path, iterations: int, warmup: int, threads: int | None, probe_size: int) -> tuple[str, bool]:
    """Build every recipe, then size / latency / agreement per variant; the Markdown table and whether sizes match."""
    from bench.bundle import Bundle
    from bench.engine import SessionSpec
    from bench.runner import RunOptions, measure_cell
    from bench.timing import LoopSpec
    from bench.variants import build_variants, check_variants, list_variants

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    bundle = Bundle.discover(model_dir)
    builds = {b.variant: b for b in build_variants(bundle, log=log)}
    infos = {i.variant: i for i in list_variants(bundle)}
    log("checking every variant against fp32 on the probe batch …")
    checks = {c.variant: c for c in check_variants(bundle, probe_size=probe_size).variants}
    options = RunOptions(
        batch_size=1,
        loop=LoopSpec(iterations=iterations, warmup=warmup),
        session=SessionSpec(threads=threads),
        sample_hz=0,
    )
    rows = []
    sizes_ok = True
    for name, info in infos.items():
        log(f"timing {name} on cpu, batch 1 ({warmup} warm-up + {iterations} calls) …")
        cell = measure_cell(Path(info.path), name, "cpu", options)
        p50 = f"{cell.latency_ms['p50']:.1f}" if cell.status == "ok" and cell.latency_ms else cell.reason or cell.status
        released = RELEASED_MB.get(name)
        if released is not None:
            delta = info.size_mb / released - 1
            ok = abs(delta) <= SIZE_TOLERANCE
            sizes_ok &= ok
            size_cols = [f"{released}", f"{delta * 100:+.1f}%", "✅" if ok else "❌"]
        else:
            size_cols = ["—", "—", "—"]
        check = checks.get(name)
        if name == "fp32":
            check_cols = ["reference", "—", "—", "—"]
        elif check is None or check.status != "ok":
            check_cols = [check.status if check else "—", "—", "—", check.reason if check else "—"]
        else:
            check_cols = [
                f"{check.max_abs_dlogit:.4f}",
                f"{check.max_abs_dprob:.4f}",
                f"{check.agreement * 100:.1f}%",
                "pass" if check.within_tolerance else f"FAIL: {check.why}",
            ]
        build = builds.get(name)
        build_s = f"{build.seconds:.1f}" if build and build.seconds is not None else "—"
        rows.append([name, f"{info.size_mb:.1f}", *size_cols, info.precision, build_s, p50, *check_cols])
    header = [
        "variant",
        "size MB",
        "released MB",
        "Δ size",
        "±5%",
        "precision",
        "build s",
        "p50 ms (cpu, b=1)",
        "max |Δlogit|",
        "max |Δprob|",
        "argmax agreement",
        "check",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines), sizes_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    exp = sub.add_parser("export", help="only export the ViT-base bundle (needs torch + transformers)")
    exp.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="keep the model folder here (re-used when present)")
    parser.add_argument("--export-python", default=None, help="interpreter with torch + transformers for the export")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per variant (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ORT's)")
    parser.add_argument("--probe-size", type=int, default=16, help="images in the check's probe batch (default 16)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.out)
        return 0

    with tempfile.TemporaryDirectory(prefix="vitbase-") as tmp:
        model_dir = args.work or Path(tmp) / "vit-base"
        if not (model_dir / "onnx" / "model.onnx").is_file():
            if args.export_python:
                subprocess.run([args.export_python, __file__, "export", "--out", str(model_dir)], check=True)
            else:
                export(model_dir)
        table, sizes_ok = measure(model_dir, args.iterations, args.warmup, args.threads, args.probe_size)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if not sizes_ok:
        print(f"error: a variant's size is more than ±{SIZE_TOLERANCE:.0%} off the released table", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do bench's 95 % accuracy intervals cover the truth 95 % of the time? Counted on simulated data sets.

    python tests/benchmarks/coverage.py                           # 1,000 data sets per scenario (~15 min, 1 core)
    python tests/benchmarks/coverage.py --datasets 1000 --workers 2   # the same on two cores (~8 min)
    python tests/benchmarks/coverage.py --datasets 50 --out /tmp/c.json   # a quick look
    python tests/benchmarks/coverage.py --sizes 100 --alternatives --out /tmp/alt.json   # methods bench did not pick

Each data set: n images (100, 300, 1000), label fake with probability 1/2, a latent score z ~ N(±μ, 1) (binormal;
μ = 1.2816, so accuracy at z ≥ 0 is 0.90 and ROC AUC Φ(μ√2) ≈ 0.965), p(fake) = logistic(z). With groups
(source videos: 5 images each, one label per group), z's spread is split into a group part N(0, 0.4) shared by
its images and an image part N(0, 0.6), so the marginal figures — the truth — are the same as without groups.
A second variant on the same images: z + 0.05·(−1) + N(0, 0.15²) per image (a slightly worse quantisation: few
decisions flip), whose truth is known in closed form too.

Counted per scenario, through bench.metrics exactly as `bench eval` calls it: accuracy (Wilson; with groups on
the effective n), ROC AUC (BCa bootstrap, stratified; with groups a cluster bootstrap), the paired accuracy
drop (MOVER on the discordant shares) and ΔAUC (paired bootstrap). Grouped data sets are also judged with the
groups ignored (image-level intervals), which shows why the group column matters. ``--alternatives`` also
counts the bootstrap choices bench did not make — ROC AUC by percentile, and by BCa not expanded; ΔAUC by BCa,
and by percentile not expanded — the evidence for bench.metrics' choices. A miss is counted by side
(the truth below the interval, or above it). Prints raw counts and rates; writes JSON (default
docs/measurements/accuracy-coverage.json). Target (issue #24): coverage 0.93–0.97.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, ndtr

from bench.metrics import (
    N_BOOT,
    accuracy_drop_interval,
    auc_delta_interval,
    bootstrap_intervals,
    group_codes,
    share_interval,
)

ROOT = Path(__file__).resolve().parents[2]
MU = 1.2816  # Φ(μ) = 0.90
GROUP_VAR = 0.4  # of the latent's unit variance, shared by a group's images
GROUP_SIZE = 5
SHIFT, JITTER = -0.05, 0.15  # the second variant: z + SHIFT + N(0, JITTER²)
SIZES = (100, 300, 1000)
FIGURES = ("accuracy", "roc_auc", "accuracy_drop", "roc_auc_delta")


def truth() -> dict[str, float]:
    """The population figures both variants estimate (binormal, closed form)."""
    spread_b = math.sqrt(1.0 + JITTER**2)
    acc_a = float(ndtr(MU))
    acc_b = 0.5 * float(ndtr((MU + SHIFT) / spread_b)) + 0.5 * float(ndtr((MU - SHIFT) / spread_b))
    auc_a = float(ndtr(2 * MU / math.sqrt(2.0)))
    auc_b = float(ndtr(2 * MU / (spread_b * math.sqrt(2.0))))
    return {"accuracy": acc_a, "roc_auc": auc_a, "accuracy_drop": acc_a - acc_b, "roc_auc_delta": auc_b - auc_a}


def simulate(n: int, grouped: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels, p(fake) of variant A, of variant B, group names or None) of one data set."""
    rng = np.random.default_rng(seed)
    if grouped:
        n_groups = n // GROUP_SIZE
        group = np.repeat(np.arange(n_groups), GROUP_SIZE)
        y = rng.integers(0, 2, n_groups)[group]
        z = np.where(y == 1, MU, -MU) + rng.normal(0, math.sqrt(GROUP_VAR), n_groups)[group]
        z += rng.normal(0, math.sqrt(1.0 - GROUP_VAR), n)
    else:
        group = None
        y = rng.integers(0, 2, n)
        z = np.where(y == 1, MU, -MU) + rng.normal(0, 1.0, n)
    z_b = z + SHIFT + rng.normal(0, JITTER, n)
    return y, expit(z), expit(z_b), None if group is None else group.astype(str)


# --alternatives: (figure, label, method, expanded) judged besides bench's own choice
ALTERNATIVES = (
    ("roc_auc", "roc_auc[percentile]", "percentile", True),
    ("roc_auc", "roc_auc[BCa, not expanded]", "BCa", False),
    ("roc_auc_delta", "roc_auc_delta[BCa]", "BCa", True),
    ("roc_auc_delta", "roc_auc_delta[percentile, not expanded]", "percentile", False),
)


def judge(n: int, grouped: bool, seed: int, n_boot: int, alternatives: bool = False) -> dict[str, dict[str, Any]]:
    """Per figure and analysis ("groups" or "images"): the interval's side of the truth and its width."""
    y, p_a, p_b, names = simulate(n, grouped, seed)
    true = truth()
    analyses = {"groups": group_codes(names), "images": None} if grouped else {"images": None}
    out: dict[str, dict[str, Any]] = {}
    for analysis, codes in analyses.items():
        ok_a, ok_b = (p_a >= 0.5) == y, (p_b >= 0.5) == y
        intervals = {
            "accuracy": share_interval(ok_a, codes),
            "roc_auc": bootstrap_intervals(y, p_a, groups=codes, n_boot=n_boot, seed=seed, fields=("roc_auc",))[
                "roc_auc"
            ],
            "accuracy_drop": accuracy_drop_interval(ok_a, ok_b, codes),
            "roc_auc_delta": auc_delta_interval(y, p_a, p_b, codes, n_boot=n_boot, seed=seed),
        }
        for figure, label, method, expand in ALTERNATIVES if alternatives else ():
            if figure == "roc_auc":
                intervals[label] = bootstrap_intervals(
                    y, p_a, groups=codes, n_boot=n_boot, seed=seed, fields=("roc_auc",), method=method, expand=expand
                )["roc_auc"]
            else:
                intervals[label] = auc_delta_interval(
                    y, p_a, p_b, codes, n_boot=n_boot, seed=seed, method=method, expand=expand
                )
        for label, interval in intervals.items():
            figure = label.split("[")[0]
            if interval is None:
                side = "none"
            elif true[figure] < interval[0]:
                side = "below"
            elif true[figure] > interval[1]:
                side = "above"
            else:
                side = "covered"
            width = None if interval is None else interval[1] - interval[0]
            out[f"{label}/{analysis}"] = {"side": side, "width": width}
    return out


def _job(args: tuple[int, bool, int, int, bool]) -> tuple[int, bool, dict[str, dict[str, Any]]]:
    n, grouped, seed, n_boot, alternatives = args
    return n, grouped, judge(n, grouped, seed, n_boot, alternatives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=1000, help="data sets per scenario (size × grouping)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="images per data set, comma-separated")
    parser.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples (bench's default)")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--seed", type=int, default=0, help="first data set's seed")
    parser.add_argument(
        "--alternatives", action="store_true", help="also count the bootstrap methods bench did not pick"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "measurements" / "accuracy-coverage.json")
    args = parser.parse_args(argv)
    if args.datasets < 1 or args.workers < 1 or args.n_boot < 100:
        print("error: --datasets and --workers must be ≥ 1, --n-boot ≥ 100", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    jobs = [
        (n, grouped, args.seed + 100_000 * i + k, args.n_boot, args.alternatives)
        for i, (n, grouped) in enumerate((n, g) for n in sizes for g in (False, True))
        for k in range(args.datasets)
    ]
    start = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            done = pool.map(_job, jobs, chunksize=8)
    else:
        done = [_job(job) for job in jobs]
    wall = time.perf_counter() - start

    scenarios: list[dict[str, Any]] = []
    print(f"{'scenario':<22} {'figure / analysis':<46} {'covered':>9} {'below':>6} {'above':>6} {'none':>5} "
          f"{'rate':>6} {'mean width':>11}")  # fmt: skip
    for n in sizes:
        for grouped in (False, True):
            mine = [r for m, g, r in done if m == n and g == grouped]
            name = f"n={n} " + (f"groups of {GROUP_SIZE}" if grouped else "no groups")
            rows = {}
            for key in mine[0]:
                sides = [r[key]["side"] for r in mine]
                widths = [r[key]["width"] for r in mine if r[key]["width"] is not None]
                counts = {s: sides.count(s) for s in ("covered", "below", "above", "none")}
                judged = len(sides) - counts["none"]
                rate = counts["covered"] / judged if judged else None
                rows[key] = {**counts, "datasets": len(sides), "rate": rate, "mean_width": float(np.mean(widths))}
                print(f"{name:<22} {key:<46} {counts['covered']:>5}/{len(sides):<4}{counts['below']:>6}"
                      f"{counts['above']:>6}{counts['none']:>5} {rate:>6.3f} {np.mean(widths):>11.4f}")  # fmt: skip
            scenarios.append({"n": n, "grouped": grouped, "figures": rows})
    print(f"{len(jobs)} data sets in {wall:.0f} s ({args.workers} worker(s)); truth: "
          + ", ".join(f"{k} {v:.4f}" for k, v in truth().items()))  # fmt: skip
    record = {
        "what": "coverage of bench's 95 % accuracy intervals on simulated binormal data sets",
        "command": "python tests/benchmarks/coverage.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "datasets_per_scenario": args.datasets,
        "n_boot": args.n_boot,
        "alternatives": args.alternatives,
        "model": {"mu": MU, "group_var": GROUP_VAR, "group_size": GROUP_SIZE, "shift": SHIFT, "jitter": JITTER},
        "truth": truth(),
        "wall_s": round(wall, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "workers": args.workers},
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

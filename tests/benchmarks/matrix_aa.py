"""A whole matrix through `bench compare`: how often does a comparison of two demo matrices say something false?

    python tests/benchmarks/matrix_aa.py --runs 20                        # the measurement (about 45 min, 2 cores)
    python tests/benchmarks/matrix_aa.py --runs 20 --accuracy             # + accuracy rows and the recommendation
    python tests/benchmarks/matrix_aa.py --runs 1 --record /tmp/aa.json   # does it work (a few minutes)
    python tests/benchmarks/matrix_aa.py --runs 20 --accuracy --threads 1 --out reports/matrix-aa-t1 \
        --record docs/measurements/matrix-aa-threads1.json              # one intra-op thread (about 77 min)

Every run is the real CLI in a fresh process: ``bench matrix --providers cpu --no-accuracy --batch-sizes 1,8`` of
the demo (every CPU variant, the PyTorch rows included: 16 cells, 64 rows), then ``bench compare A B --json``.

Conditions:
- ``quiet``: runs 0..N of the demo with nothing else running; comparisons (run i, run i+1). A/A: every row
  called a regression or an improvement is false.
- ``twin``: right after quiet run i, a copy of the demo with one variant (``--twin``, int8) replaced by a twin
  with about 25 % more compute (a side branch on the input whose result is added to the logits ×1e-30:
  the same predictions). Comparison (quiet i, twin i): the twin's latency rows should be regressions
  ("caught"); any other row flagged is false. bench compare refuses a changed model file, so the compared
  copy of the twin run carries the original file's sha256: the twin stands in for "the same model, slower".
  Its slowdown is measured before the runs (ORT sessions alternated, per batch size) and recorded.
- ``hog``: runs 0..N beside a one-core busy loop; comparisons (run i, run i+1). A/A.

Each comparison is also re-judged in-process with every row alone (``Tolerances(family="none")``: no Holm, no
spread between runs) to show what the family control changes. Writes raw counts per comparison (which rows,
regressions vs improvements, the family and symmetry objects) to ``--record`` and prints a table. Exit 0 always:
the targets (a false row in ≤ 1 of 20 comparisons; the twin caught in ≥ 19 of 20, nothing else flagged) are
judged by reading it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import DEMO, REPO, alternate, bench_json, cpu_hog, ratio_with_interval
from recommendation import judge_runs, summarise_run

MATRIX = ["--providers", "cpu", "--no-accuracy", "--batch-sizes", "1,8"]
TARGET_SLOWDOWN = 1.25
WIDTH = 64  # the side branch works on the input cut into rows of 64 values (demo: 3×64×64 → 192 rows an image)


# --- the slower twin ----------------------------------------------------------------------------------


def slower_twin(model: onnx.ModelProto, per_image: int, per_call: int) -> onnx.ModelProto:
    """The model plus a side branch: ``per_image`` (MatMul 64×64, Tanh) layers over every image of the batch and
    ``per_call`` over the first image only (a cost that does not grow with the batch), reduced to a scalar and
    added to the output ×1e-30 (the outputs do not change; the graph still has to compute it)."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    graph = twin.graph
    out = graph.output[0].name
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = f"{out}_core"
    rng = np.random.default_rng(0)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, WIDTH], dtype=np.int64), "twin_rows"),
            numpy_helper.from_array(
                (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), "twin_w"
            ),
            numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "twin_scale"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "twin_start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "twin_end"),
        ]
    )
    source = graph.input[0].name
    nodes = [
        helper.make_node("Slice", [source, "twin_start", "twin_end"], ["twin_first"]),
    ]
    ends = []
    for branch, feed, layers in (("all", source, per_image), ("one", "twin_first", per_call)):
        prev = f"twin_{branch}_0"
        nodes.append(helper.make_node("Reshape", [feed, "twin_rows"], [prev]))
        for i in range(layers):
            nodes.append(helper.make_node("MatMul", [prev, "twin_w"], [f"twin_{branch}_m{i}"]))
            nodes.append(helper.make_node("Tanh", [f"twin_{branch}_m{i}"], [f"twin_{branch}_{i + 1}"]))
            prev = f"twin_{branch}_{i + 1}"
        nodes.append(helper.make_node("ReduceMean", [prev], [f"twin_{branch}_mean"], keepdims=0))
        ends.append(f"twin_{branch}_mean")
    nodes.append(helper.make_node("Add", ends, ["twin_means"]))
    nodes.append(helper.make_node("Mul", ["twin_means", "twin_scale"], ["twin_sum"]))
    nodes.append(helper.make_node("Add", [f"{out}_core", "twin_sum"], [out]))
    graph.node.extend(nodes)
    onnx.checker.check_model(twin)
    return twin


def measured_slowdown(
    original: Path, twin: Path, threads: int | None = None, blocks: int = 24
) -> dict[int, list[float]]:
    """Per batch size: [point, low, high] of the twin's median time over the original's (at the matrices'
    ``threads``, None for ORT's default; sessions alternated ABBA…, each block ~0.1 s of calls)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (original, twin)]
    name = sessions[0].get_inputs()[0].name
    out: dict[int, list[float]] = {}
    for batch in (1, 8):
        x = np.random.default_rng(0).random((batch, 3, 64, 64), dtype=np.float32)
        first = [s.run(None, {name: x})[0] for s in sessions]
        assert np.allclose(first[0], first[1]), "the twin must answer as the original does"
        calls = max(4, 40 // batch)
        times = alternate([functools.partial(_seconds_per_call, s, {name: x}, calls) for s in sessions], blocks)
        out[batch] = [round(v, 4) for v in ratio_with_interval(times[1], times[0])]
    return out


def _seconds_per_call(session: Any, feed: dict[str, np.ndarray], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter() - start) / calls


def build_twin(
    out: Path,
    variant: str,
    layers: tuple[int, int] | None = None,
    threads: int | None = None,
    probe_layers: int = 16,
) -> tuple[Path, dict[str, Any]]:
    """A full copy of the demo with ``variant`` replaced by a twin ~25 % slower at batch 1 *and* 8.

    ``layers`` (per image, per call) as given, or found: two probes (``probe_layers`` per image, then per call)
    give each layer kind's cost at each batch size, and the counts that make both +25 % follow from that
    linear model (per-image layers alone, sized on batch 8, when noise makes it unsolvable). The chosen twin's
    slowdown is measured again and recorded."""
    folder = out / "models" / "demo-twin"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(DEMO, folder)
    target = folder / "onnx" / ("model.onnx" if variant == "fp32" else f"model_{variant}.onnx")
    if not target.is_file():
        raise SystemExit(f"the demo has no {target.name}: pick another --twin")
    original = DEMO / "onnx" / target.name
    base = onnx.load(str(original))
    target.with_suffix(".json").unlink(missing_ok=True)  # not what its recipe builds any more
    costs: dict[str, dict[int, float]] = {}
    if layers is None:
        probe = out / "models" / "probe.onnx"
        for kind, probe_counts in (("per_image", (probe_layers, 0)), ("per_call", (0, probe_layers))):
            onnx.save(slower_twin(base, *probe_counts), str(probe))
            costs[kind] = {
                b: (r[0] - 1.0) / probe_layers for b, r in measured_slowdown(original, probe, threads).items()
            }
        probe.unlink(missing_ok=True)
        layers = _layers_for(costs, TARGET_SLOWDOWN - 1.0, 4 * probe_layers)
    onnx.save(slower_twin(base, *layers), str(target))
    info = {
        "variant": variant,
        "per_image_layers": layers[0],
        "per_call_layers": layers[1],
        "probe_cost_per_layer": costs or None,
        "slowdown": measured_slowdown(original, target, threads),
    }
    return folder, info


def _layers_for(costs: dict[str, dict[int, float]], goal: float, most: int) -> tuple[int, int]:
    """Per-image and per-call layers adding ``goal`` at batch 1 and 8: a(b)·per_image + c(b)·per_call = goal."""
    a1, a8, c1, c8 = costs["per_image"][1], costs["per_image"][8], costs["per_call"][1], costs["per_call"][8]
    det = a1 * c8 - a8 * c1
    if abs(det) > 1e-12:
        per_image, per_call = goal * (c8 - c1) / det, goal * (a1 - a8) / det
        if 1 <= per_image <= most and 0 <= per_call <= most:
            return round(per_image), round(per_call)
    return (min(most, max(1, round(goal / a8))) if a8 > 0 else most // 4), 0


# --- runs and comparisons -----------------------------------------------------------------------------


def matrix(model_dir: Path, out: Path, extra: list[str]) -> Path | None:
    """One `bench matrix` run; its results.json, or None (said on stderr) when it failed."""
    start = time.monotonic()
    rc, _doc, err = bench_json("matrix", "--model-dir", model_dir, *MATRIX, "--out", out, *extra, timeout=3600)
    results = out / "results.json"
    took = time.monotonic() - start
    if rc != 0 or not results.is_file():
        print(
            f"   matrix {out.name} failed (exit {rc}): {err.strip().splitlines()[-1:] if err else ''}", file=sys.stderr
        )
        return None
    print(f"   matrix {out.parent.name}/{out.name}: {took:.0f} s", flush=True)
    return results


def as_original(twin_results: Path, baseline: Path, variant: str) -> Path:
    """A copy of the twin run whose twin cells carry the original file's sha256 (and size), so compare judges them."""
    base = json.loads(baseline.read_text(encoding="utf-8"))
    model = {c["batch_size"]: c["model"] for c in base["cells"] if c["variant"] == variant and c.get("model")}
    data = json.loads(twin_results.read_text(encoding="utf-8"))
    for c in data["cells"]:
        if c["variant"] == variant and c["batch_size"] in model and c.get("model"):
            c["model"]["sha256"], c["model"]["size_mb"] = (
                model[c["batch_size"]]["sha256"],
                model[c["batch_size"]]["size_mb"],
            )
    copy = twin_results.with_name("results-as-original.json")
    copy.write_text(json.dumps(data), encoding="utf-8")
    return copy


def flagged_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "variant": r["key"]["variant"],
            "batch": r["key"]["batch_size"],
            "metric": r["metric"],
            "verdict": r["verdict"],
            "ratio": r.get("ratio"),
            "interval": [r.get("ci_low"), r.get("ci_high")],
            "level": r.get("level"),
        }
        for r in rows
        if r["verdict"] in ("regression", "improvement")
    ]


def one_by_one(baseline: Path, current: Path) -> list[dict[str, Any]]:
    """The same comparison with every row judged alone (no Holm, no spread between runs): what it would flag."""
    from dataclasses import asdict

    from bench.compare import Tolerances, compare_runs, load_pair

    base, cur = load_pair(baseline, current)
    result = compare_runs(base, cur, Tolerances(family="none"))
    return flagged_rows([asdict(r) for r in result.rows])


def compare(baseline: Path, current: Path, twin: str | None) -> dict[str, Any]:
    """`bench compare --json` of two runs, counted: false rows, and for a twin comparison whether it was caught."""
    rc, doc, err = bench_json("compare", baseline, current, "--json")
    if doc is None:
        return {"baseline": str(baseline), "current": str(current), "error": f"exit {rc}: {err.strip()[-200:]}"}
    return {
        "baseline": str(baseline),
        "current": str(current),
        "exit": rc,
        **counted(doc, one_by_one(baseline, current), twin),
    }


def counted(doc: dict[str, Any], alone: list[dict[str, Any]], twin: str | None) -> dict[str, Any]:
    """A comparison's rows counted: the twin's latency regressions (caught) and every other flagged row (false),
    with and without family control (``alone``: the rows flagged when each is judged by itself)."""

    def is_catch(row: dict[str, Any]) -> bool:
        return twin is not None and row["variant"] == twin and row["metric"].startswith("latency")

    flagged = flagged_rows(doc["rows"])
    false = [r for r in flagged if not (is_catch(r) and r["verdict"] == "regression")]
    return {
        "verdict": doc["verdict"],
        "rows": len(doc["rows"]),
        "false_rows": false,
        "false_regressions": sum(r["verdict"] == "regression" for r in false),
        "false_improvements": sum(r["verdict"] == "improvement" for r in false),
        "caught": [r for r in flagged if is_catch(r) and r["verdict"] == "regression"] if twin else None,
        "one_by_one_false_rows": [r for r in alone if not (is_catch(r) and r["verdict"] == "regression")],
        "family": doc.get("family"),
        "symmetry": doc.get("symmetry"),
    }


def tally(condition: str, done: list[dict[str, Any]], errors: int) -> dict[str, Any]:
    """Counts over a condition's comparisons (each :func:`counted`): how many had a false row, how many rows."""
    summary = {
        "condition": condition,
        "comparisons": len(done),
        "errors": errors,
        "with_a_false_row": sum(bool(c["false_rows"]) for c in done),
        "false_rows": sum(len(c["false_rows"]) for c in done),
        "false_regressions": sum(c["false_regressions"] for c in done),
        "false_improvements": sum(c["false_improvements"] for c in done),
        "one_by_one_with_a_false_row": sum(bool(c["one_by_one_false_rows"]) for c in done),
        "one_by_one_false_rows": sum(len(c["one_by_one_false_rows"]) for c in done),
    }
    if condition == "twin":
        summary["caught"] = sum(bool(c["caught"]) for c in done)
    return summary


def summarise(condition: str, comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    done = [c for c in comparisons if "error" not in c]
    sigmas = [
        c["family"]["run_to_run"]["latency_p50_ms"]["sigma"]
        for c in done
        if c.get("family") and "latency_p50_ms" in c["family"]["run_to_run"]
    ]
    summary = {
        **tally(condition, done, len(comparisons) - len(done)),
        "median_p50_run_to_run_sigma": round(float(np.median(sigmas)), 4) if sigmas else None,
    }
    return summary


def print_table(summaries: list[dict[str, Any]], extra: tuple[str, str] | None = None) -> None:
    """The counts as a Markdown table; ``extra`` (heading, summary key) adds a column."""
    head = ["condition", "compared", "with a false row", "false rows (regr/impr)", "caught", "one by one"]
    print("\n| " + " | ".join(head + ([extra[0]] if extra else [])) + " |\n|" + "---|" * (len(head) + bool(extra)))
    for s in summaries:
        caught = f"{s['caught']} of {s['comparisons']}" if "caught" in s else "—"
        cells = [s["condition"], s["comparisons"], s["with_a_false_row"]]
        cells += [f"{s['false_rows']} ({s['false_regressions']}/{s['false_improvements']})", caught]
        cells += [s["one_by_one_with_a_false_row"], *([s[extra[1]]] if extra else [])]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="comparisons per condition (runs + 1 matrices)")
    ap.add_argument("--conditions", default="quiet,twin,hog", help="comma list of quiet, twin (needs quiet), hog")
    ap.add_argument("--twin", default="int8", help="the variant replaced by a +25 %% slower twin")
    ap.add_argument(
        "--twin-layers", default=None, help="PER_IMAGE,PER_CALL side-branch layers of the twin (default: measured)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "matrix-aa", help="matrices and twin model")
    ap.add_argument("--record", type=Path, default=REPO / "docs" / "measurements" / "matrix-aa.json")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of every matrix (bench matrix --threads) and of the twin's sizing (default: ORT's)",
    )
    ap.add_argument("--matrix-arg", action="append", default=[], help="extra argument for bench matrix (repeatable)")
    ap.add_argument(
        "--accuracy",
        action="store_true",
        help="measure accuracy too (the demo set): accuracy rows join the compare, and each quiet and hog run's "
        "release recommendation is counted (issue 24's 'same decided choice, or undecided; never a false tie')",
    )
    args = ap.parse_args()
    if args.threads:
        args.matrix_arg.append(f"--threads={args.threads}")
    if args.accuracy:
        MATRIX.remove("--no-accuracy")
    conditions = args.conditions.split(",")
    if "twin" in conditions and "quiet" not in conditions:
        raise SystemExit("the twin condition compares against the quiet runs: add quiet to --conditions")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "runs": args.runs,
        "matrix": [*MATRIX, *args.matrix_arg],
        "comparisons": {},
        "summary": [],
    }
    series: dict[str, list[Path | None]] = {}
    if "twin" in conditions:
        given = tuple(int(n) for n in args.twin_layers.split(",")) if args.twin_layers else None
        twin_dir, record["twin"] = build_twin(args.out, args.twin, given, args.threads)  # type: ignore[arg-type]
        print(f"twin of {args.twin}: {record['twin']}", flush=True)
    if "quiet" in conditions:
        series["quiet"], series["twin"] = [], []
        for i in range(args.runs + 1):
            series["quiet"].append(matrix(DEMO, args.out / "quiet" / f"run{i:02d}", args.matrix_arg))
            if "twin" in conditions and i < args.runs:
                series["twin"].append(matrix(twin_dir, args.out / "twin" / f"run{i:02d}", args.matrix_arg))
    if "hog" in conditions:
        with cpu_hog():
            series["hog"] = [
                matrix(DEMO, args.out / "hog" / f"run{i:02d}", args.matrix_arg) for i in range(args.runs + 1)
            ]
    for condition in (c for c in ("quiet", "twin", "hog") if c in conditions):
        if condition == "twin":
            pairs = [
                (b, as_original(t, b, args.twin))
                for b, t in zip(series["quiet"], series["twin"], strict=False)
                if b and t
            ]
        else:
            pairs = [(a, b) for a, b in itertools.pairwise(series[condition]) if a and b]
        twin = args.twin if condition == "twin" else None
        record["comparisons"][condition] = [compare(a, b, twin) for a, b in pairs]
        record["summary"].append(summarise(condition, record["comparisons"][condition]))
        if args.accuracy and condition != "twin":
            docs = [json.loads(p.read_text(encoding="utf-8")) for p in series[condition] if p]
            runs = [summarise_run(d, 0.0) for d in docs]
            record.setdefault("recommendations", {})[condition] = {"summary": judge_runs(condition, docs, runs)[0]}
            record["recommendations"][condition]["runs"] = runs
    record["wall_s"] = round(time.monotonic() - started, 1)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print_table(record["summary"])
    for condition, rec in record.get("recommendations", {}).items():
        s = rec["summary"]
        print(
            f"recommendation, {condition}: {s['completed']} matrices · decided {s['decided']} "
            f"({s['modal_choice']} in {s['modal_count']}) · undecided {s['undecided']} · ties beyond the margin "
            f"{s['ties_beyond_margin']} of {s['tied_contenders']} tied contenders"
        )
    print(f"\nwrote {args.record} ({record['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

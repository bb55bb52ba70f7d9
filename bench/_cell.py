"""One cell in its own process: the launcher (parent side) and the worker (``python -m bench._cell``).

    python -m bench._cell run SPEC.json OUT.json     # measure the cell SPEC describes
    python -m bench._cell probe PROVIDER OUT.json    # can PROVIDER run at all here? (bench.engine.probe_provider)

A fresh process per cell gives a fresh ONNX Runtime, clean memory peaks, and isolation: if the
provider segfaults, aborts or hangs, only this process dies and the parent records the cell as
``failed`` with the reason (signal, OOM kill, timeout). The result goes to a file (never stdout, where
native libraries may print). ``bench matrix`` and ``bench ab`` launch cells only through
:func:`run_cell_process` / :func:`probe_process`, so both get the same timeout and crash handling.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import faults
from bench.bundle import Bundle
from bench.engine import probe_provider
from bench.errors import BenchError
from bench.evaluate import labelled_set_evaluator
from bench.outdir import die_with_parent
from bench.results import CellResult, ModelInfo, atomic_write_text, json_default
from bench.runner import RunOptions, image_feed, measure_cell

_SIGNALS = {
    signal.SIGABRT: "crashed (SIGABRT: the process aborted)",
    signal.SIGSEGV: "crashed (SIGSEGV: segmentation fault)",
    signal.SIGBUS: "crashed (SIGBUS: bus error)",
    signal.SIGFPE: "crashed (SIGFPE: arithmetic fault)",
    signal.SIGILL: "crashed (SIGILL: illegal instruction)",
    signal.SIGKILL: "was killed (SIGKILL: most likely out of memory, by the kernel's OOM killer)",
}


# --- parent side ------------------------------------------------------------------------------------


def cell_spec(
    variant: str,
    provider: str,
    model_dir: Path,
    model_path: Path,
    options: RunOptions,
    input_images: list[str] | None = None,
    evaluate: dict[str, Any] | None = None,
    model: ModelInfo | None = None,
) -> dict[str, Any]:
    """The JSON a worker needs to measure one cell (``evaluate``: the labelled set to score, or None).

    ``model``: the file's ModelInfo when the parent hashed it already (a 343 MB file is hashed once per run).
    """
    return {
        "variant": variant,
        "provider": provider,
        "model_dir": str(model_dir),
        "model_path": str(model_path),
        "options": options.to_dict(),
        "input_images": list(input_images or []),
        "evaluate": evaluate,
        "model": asdict(model) if model is not None else None,
    }


def run_cell_process(spec: dict[str, Any], timeout_s: float, workdir: Path, tag: str) -> CellResult:
    """Measure ``spec`` in a fresh process; a crash, kill or timeout is a ``failed`` cell with the reason."""
    spec_path = workdir / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    data, why = _child(["run", str(spec_path)], workdir / f"{tag}.result.json", timeout_s, workdir / f"{tag}.log")
    if data is None:
        batch_size = spec["options"]["batch_size"]
        return CellResult.not_run(
            spec["variant"], spec["provider"], batch_size, "failed", f"{spec['provider']}: the cell's process {why}"
        )
    return CellResult.from_dict(data)


def probe_process(provider: str, timeout_s: float, workdir: Path) -> tuple[dict[str, Any] | None, str]:
    """``probe_provider`` in a fresh process: (its answer, "") or (None, why the probe itself died)."""
    return _child(["probe", provider], workdir / f"{provider}.json", timeout_s, workdir / f"{provider}.log")


def _child(args: list[str], out: Path, timeout_s: float, log_path: Path) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m bench._cell ARGS OUT``; (its JSON, "") or (None, why it produced none)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with log_path.open("wb") as sink:
        # A new session: the terminal's Ctrl-C reaches only the parent, which then stops the child itself.
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._cell", *args, str(out)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # a kill -9 of the matrix takes its cell with it (bench.outdir)
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            last = _last_line(log_path)
            doing = (
                f" while {last.removeprefix('bench: ')}" if last.startswith("bench: building a TensorRT engine") else ""
            )
            return None, f"timed out after {timeout_s:g} s{doing or ' (a hang?)'} and was killed"
        except BaseException:
            _kill(proc)
            raise
    if rc == 0 and out.is_file():
        return json.loads(out.read_text(encoding="utf-8")), ""
    if rc < 0:
        try:
            sig = signal.Signals(-rc)
        except ValueError:
            return None, f"was killed by signal {-rc}"
        return None, _SIGNALS.get(sig, f"was killed by {sig.name}")
    last = _last_line(log_path)
    return None, f"exited with code {rc}" + (f": {last}" if last else " without writing a result")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _last_line(path: Path, limit: int = 240) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- worker side ------------------------------------------------------------------------------------


def _watch_parent() -> None:
    """Exit when the parent process is gone (killed hard), so no orphan keeps a GPU busy."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="bench-cell-watchdog", daemon=True).start()


def _write(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, allow_nan=False, default=json_default) + "\n")


def run_cell(spec: dict[str, Any]) -> CellResult:
    """Measure the cell ``spec`` describes (called in the worker)."""
    variant, provider = spec["variant"], spec["provider"]
    faults.maybe_crash(variant, provider)
    options = RunOptions.from_dict(spec["options"])
    bundle = Bundle.discover(spec["model_dir"])
    images = [Path(p) for p in spec.get("input_images") or []]
    feed = image_feed(images, options.batch_size, bundle) if images else None
    evaluate = labelled_set_evaluator(bundle, spec["evaluate"], options.batch_size) if spec.get("evaluate") else None
    model = ModelInfo(**spec["model"]) if spec.get("model") else None
    return measure_cell(
        Path(spec["model_path"]), variant, provider, options, input_batch=feed, evaluate=evaluate, model=model
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("run", "probe"):
        print("usage: python -m bench._cell run SPEC.json OUT.json | probe PROVIDER OUT.json", file=sys.stderr)
        return 2
    _watch_parent()
    command, arg, out = argv[0], argv[1], Path(argv[2])
    if command == "probe":
        _write(out, probe_provider(arg))
        return 0
    spec = json.loads(Path(arg).read_text(encoding="utf-8"))
    try:
        cell = run_cell(spec)
    except BenchError as exc:  # an input problem of this cell only (fixed batch axis, broken file): a result
        cell = CellResult.not_run(spec["variant"], spec["provider"], spec["options"]["batch_size"], "failed", str(exc))
    _write(out, asdict(cell))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

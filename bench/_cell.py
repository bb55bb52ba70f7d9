"""Hidden worker of ``bench matrix``: measures ONE cell in a fresh process and writes its CellResult.

    python -m bench._cell run SPEC.json OUT.json     # measure the cell SPEC describes
    python -m bench._cell probe PROVIDER OUT.json    # can PROVIDER run at all here? (bench.engine.probe_provider)

A fresh process per cell gives a fresh ONNX Runtime, clean memory peaks, and isolation: if the
provider segfaults, aborts or hangs, only this process dies and the parent records the cell as
``failed``. The result goes to a file (never stdout, where native libraries may print).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def options_to_dict(options: Any) -> dict[str, Any]:
    """RunOptions → plain JSON (the child rebuilds it with :func:`options_from_dict`)."""
    data = asdict(options)
    cache = data["session"]["provider_options"].get("trt_cache_dir")
    data["session"]["provider_options"]["trt_cache_dir"] = str(cache) if cache is not None else None
    return data


def options_from_dict(data: dict[str, Any]) -> Any:
    from bench.engine import SessionSpec
    from bench.providers import ProviderOptions
    from bench.runner import RunOptions
    from bench.timing import LoopSpec

    session = dict(data["session"])
    po = dict(session.pop("provider_options"))
    if po.get("trt_cache_dir") is not None:
        po["trt_cache_dir"] = Path(po["trt_cache_dir"])
    return RunOptions(
        batch_size=data["batch_size"],
        loop=LoopSpec(**data["loop"]),
        session=SessionSpec(**session, provider_options=ProviderOptions(**po)),
        io_binding=data["io_binding"],
        sample_hz=data["sample_hz"],
        seed=data["seed"],
    )


def _watch_parent() -> None:
    """Exit when the parent matrix process is gone (killed hard), so no orphan keeps a GPU busy."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="bench-cell-watchdog", daemon=True).start()


def _write(path: Path, data: dict[str, Any]) -> None:
    from bench.results import atomic_write_text, json_default

    atomic_write_text(path, json.dumps(data, allow_nan=False, default=json_default) + "\n")


def run_cell(spec: dict[str, Any]) -> Any:
    """Measure the cell ``spec`` describes (called in the child; returns a CellResult)."""
    from bench import faults
    from bench.bundle import Bundle
    from bench.runner import images_batch, measure_cell

    variant, provider = spec["variant"], spec["provider"]
    faults.maybe_crash(variant, provider)
    options = options_from_dict(spec["options"])
    bundle = Bundle.discover(spec["model_dir"])
    feed = None
    images = [Path(p) for p in spec.get("input_images") or []]
    if images:

        def feed(engine: Any) -> Any:
            return images_batch(images, options.batch_size, engine, bundle.preprocess_config(engine.input.image_hw()))

    evaluate = None
    if spec.get("evaluate"):
        from bench.matrix import make_evaluator

        evaluate = make_evaluator(bundle, spec["evaluate"], options.batch_size)
    return measure_cell(Path(spec["model_path"]), variant, provider, options, input_batch=feed, evaluate=evaluate)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("run", "probe"):
        print("usage: python -m bench._cell run SPEC.json OUT.json | probe PROVIDER OUT.json", file=sys.stderr)
        return 2
    _watch_parent()
    command, arg, out = argv[0], argv[1], Path(argv[2])
    if command == "probe":
        from bench.engine import probe_provider

        _write(out, probe_provider(arg))
        return 0
    spec = json.loads(Path(arg).read_text(encoding="utf-8"))
    try:
        cell = run_cell(spec)
    except BenchError as exc:  # an input problem of this cell only (fixed batch axis, broken file): a result
        from bench.results import CellResult

        cell = CellResult.not_run(spec["variant"], spec["provider"], spec["options"]["batch_size"], "failed", str(exc))
    _write(out, asdict(cell))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

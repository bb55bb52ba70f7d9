"""Build variants from their recipes: atomically, cached next to the model, rebuilt when their base changes.

A build writes ``model_<name>.onnx`` through a temp file in the same folder (renamed into place only when
complete, removed on error, Ctrl-C or SIGTERM) plus its sidecar (:mod:`bench.variants.sidecar`).
:func:`ensure_variant` is what every command calls to get a variant's file, building it on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.bundle import Bundle, is_pytorch_variant, variant_filename
from bench.errors import InputError
from bench.quiet import quiet_libraries
from bench.variants.inspection import all_initializers, all_nodes
from bench.variants.methods import TARGET_OPS, has_quantisable_matmul, run_method
from bench.variants.names import variant_order
from bench.variants.recipes import RecipeBook, load_recipes
from bench.variants.sidecar import stale_reason, write_sidecar

if TYPE_CHECKING:
    import onnx

LogFn = Callable[[str], None]
PROTOBUF_LIMIT = 2**31 - 1  # one ONNX file cannot exceed this; bigger models need external data


@dataclass
class BuildResult:
    """What ``build_variant`` did for one name."""

    variant: str
    status: str  # built | exists | skipped | failed (build_variants: the recipe raised; reason says why)
    path: str
    reason: str | None = None
    seconds: float | None = None
    size_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_variant(bundle: Bundle, variant: str, allow_build: bool = True, log: LogFn | None = None) -> Path:
    """Path of ``variant``'s file; build it first (cached next to the model) when a recipe can and ``allow_build``.

    A variant that bench built from a base file which has changed since (its sidecar records the base's
    sha256) is stale: it is rebuilt, or, with ``allow_build=False``, used with a warning. A PyTorch variant's
    "file" is the checkpoint's weights, never built; labels that differ from the ONNX model's are a warning.
    """
    if is_pytorch_variant(variant):
        weights = bundle.require_pytorch_weights(variant)
        mismatch = pytorch_label_mismatch(bundle)
        if mismatch and log:
            log(f"warning: {mismatch}")
        return weights
    stale = stale_reason(bundle, variant) if variant in bundle.variants else None
    if variant in bundle.variants and stale is None:
        return bundle.variants[variant]
    if stale is not None and not allow_build:
        if log:
            log(f"warning: {stale}; using it anyway (--no-build)")
        return bundle.variants[variant]
    book = load_recipes(bundle)
    if variant not in book.recipes:
        available = ", ".join(variant_order(list(set(bundle.variants) | set(book.names())))) or "none"
        raise InputError(f"variant {variant!r} is not in {bundle.root} and no recipe builds it; available: {available}")
    if not allow_build:
        raise InputError(
            f"variant {variant!r} is not built in {bundle.onnx_dir} and --no-build forbids building it; "
            f"run `bench variants build --model-dir {bundle.root} --only {variant}` or drop --no-build"
        )
    if log:
        log(
            f"{stale}; rebuilding it"
            if stale
            else f"{variant} is not on disk: building it from its recipe (cached in {bundle.onnx_dir})"
        )
    result = build_variant(bundle, variant, force=stale is not None, recipes=book, log=log)
    if result.status == "skipped":
        raise InputError(
            f"variant {variant!r} cannot be built for {bundle.root}: {result.reason}; choose another variant"
        )
    return Path(result.path)


def pytorch_label_mismatch(bundle: Bundle) -> str | None:
    """Why the PyTorch checkpoint's labels differ from the ONNX model's (naming both), or None when they agree.

    The checkpoint's labels are what transformers reads from config.json; the ONNX model's are the ones bench
    gives its output (config.json's id2label, else "0".."k-1" by output width), or the ``id2label`` an
    exporter wrote into the file's metadata.
    """
    onnx_path = bundle.variants.get("fp32") or next(iter(bundle.variants.values()), None)
    if onnx_path is None:
        return None
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # an unreadable ONNX file is its own variant's error, not the PyTorch row's
        return None
    dims = model.graph.output[0].type.tensor_type.shape.dim
    width = int(dims[-1].dim_value) if dims and dims[-1].dim_value else None
    onnx_labels = bundle.labels(width)
    meta = {p.key: p.value for p in model.metadata_props}.get("id2label")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        onnx_labels = {int(k): str(v) for k, v in json.loads(meta or "").items()} or onnx_labels
    torch_labels = bundle.pytorch_labels()
    if width is not None and len(onnx_labels) != width:  # config.json names another class count than the file
        onnx_labels = {i: str(i) for i in range(width)}
    if torch_labels == onnx_labels:
        return None
    weights = bundle.pytorch_weights.name if bundle.pytorch_weights else "the PyTorch checkpoint"
    return (
        f"the PyTorch weights ({weights}, config.json) label the classes {_labels_text(torch_labels)} but "
        f"{onnx_path.name} has {_labels_text(onnx_labels)}; agreement between them compares class indices"
    )


def _labels_text(labels: dict[int, str]) -> str:
    return "{" + ", ".join(f"{i}: {n}" for i, n in sorted(labels.items())) + "}"


def build_variants(
    bundle: Bundle,
    only: Sequence[str] | None = None,
    force: bool = False,
    recipes: RecipeBook | None = None,
    log: LogFn | None = None,
) -> list[BuildResult]:
    """Derive every recipe's variant that is missing (``only``: those names; ``force``: rebuild them).

    Every recipe is tried: one that fails on this model (int8 on a model-zoo export whose weights are graph
    inputs) is a ``failed`` result with its reason and the next recipe is still built; the caller decides
    the exit code from the list.
    """
    book = recipes or load_recipes(bundle)
    names = list(dict.fromkeys(only)) if only else book.names()
    for name in names:
        book.get(name)  # unknown names fail before anything is built
    results = []
    for name in names:
        try:
            results.append(build_variant(bundle, name, force=force, recipes=book, log=log))
        except InputError as exc:
            if log:
                log(f"error: {name} failed — {exc}")
            results.append(BuildResult(name, "failed", str(bundle.onnx_dir / variant_filename(name)), reason=str(exc)))
    return results


def build_variant(
    bundle: Bundle,
    name: str,
    force: bool = False,
    recipes: RecipeBook | None = None,
    log: LogFn | None = None,
) -> BuildResult:
    """Build ``model_<name>.onnx`` from its recipe's base (building the base first when it is missing)."""
    book = recipes or load_recipes(bundle)
    recipe = book.get(name)
    out = bundle.onnx_dir / variant_filename(name)
    if out.exists() and not force:
        return BuildResult(name, "exists", str(out), size_mb=round(out.stat().st_size / 1e6, 3))
    if recipe.base == "fp32":
        source = bundle.onnx_dir / "model.onnx"
        if not source.is_file():
            raise InputError(
                f"cannot build {name}: no fp32 model to start from ({source} is missing); "
                "put the fp32 export there as onnx/model.onnx"
            )
    else:
        base = build_variant(bundle, recipe.base, force=False, recipes=book, log=log)
        if base.status == "skipped":
            return BuildResult(name, "skipped", str(out), reason=f"its base {recipe.base} was skipped: {base.reason}")
        source = Path(base.path)
    model = _load_source(source)
    if recipe.method in ("nbits", "bnb4") and not has_quantisable_matmul(model):
        reason = f"{source.name} has no MatMul with a constant 2-D weight, so {recipe.method} has nothing to quantise"
        if log:
            log(f"warning: {name} skipped — {reason}")
        return BuildResult(name, "skipped", str(out), reason=reason)

    partial = out.parent / f".{out.name}.{os.getpid()}.tmp"  # never *.onnx, so never taken for a variant
    _clean_stale_partials(out)
    try:
        partial.open("wb").close()
    except OSError as exc:
        raise InputError(
            f"cannot write {name} into {out.parent} ({exc.strerror or exc}); make the folder writable "
            "or copy the model dir somewhere writable and pass that --model-dir"
        ) from exc
    label = f"building {name} ({recipe.summary()}) from {source.name}"
    started = time.perf_counter()
    try:
        if log:
            log(f"{label} → {out.name}")
        with _progress(label, enabled=log is not None), quiet_libraries(), _terminate_as_interrupt():
            produced = run_method(recipe, model, partial)
        targets = TARGET_OPS[recipe.method]
        if targets and not any(n.op_type in targets for n in all_nodes(produced.graph)):
            reason = f"{recipe.method} found nothing to quantise in {source.name}"
            if log:
                log(f"warning: {name} skipped — {reason}")
            return BuildResult(name, "skipped", str(out), reason=reason)
        seconds = time.perf_counter() - started
        write_sidecar(out, recipe, source, partial, seconds)
        os.replace(partial, out)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(
            f"could not write {out} ({exc.strerror or exc}); check free space and permissions of {out.parent}"
        ) from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:240]
        raise InputError(
            f"building {name} from {source.name} failed in {recipe.tool}: {type(exc).__name__}: {first}; "
            "the model may not suit this recipe (change its parameters in recipes.toml)"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    bundle.refresh()
    size_mb = round(out.stat().st_size / 1e6, 3)
    if log:
        log(f"built {name}: {out} ({size_mb:,.1f} MB in {seconds:.1f} s)")
    return BuildResult(name, "built", str(out), seconds=round(seconds, 3), size_mb=size_mb)


def _load_source(source: Path) -> onnx.ModelProto:
    """The model a build starts from; external-data (> 2 GB) models are refused with a clear reason."""
    import onnx

    external = (
        f"{source.name} keeps its weights in external data (over the 2 GB protobuf limit or split); "
        "bench variants build does not support external-data models yet — build this variant with "
        "ORT's tools (use_external_data_format=True) and put it next to model.onnx"
    )
    if source.stat().st_size > PROTOBUF_LIMIT:
        raise InputError(external)
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{source} is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_initializers(model.graph)):
        raise InputError(external)
    return model


def _clean_stale_partials(out: Path) -> None:
    """Remove temp files an interrupted (killed) earlier build of this variant left behind."""
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        pid = stale.name[len(out.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a matrix timeout, ``kill``) unwinds like Ctrl-C, so the build's temp file is removed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _progress(label: str, enabled: bool) -> Iterator[None]:
    """A spinner with elapsed time on stderr while a build runs (terminals only; logs say the rest)."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    ) as bar:
        bar.add_task(label, total=None)
        yield

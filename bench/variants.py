"""Variants of a model: find them on disk, derive them from fp32 by recipe, and verify them against fp32.

Recipes live in ``variants/recipes.toml`` (found like the demo bundle: ``./variants`` → the copy in the
package → the source checkout; a model folder's own ``recipes.toml`` overrides single recipes). A build
writes ``model_<name>.onnx`` atomically (temp file in the same folder, then rename) plus a sidecar
``model_<name>.json`` that says exactly how it was made; ``bench.runner.model_info`` reads that sidecar
into every result's ``model.recipe``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.bundle import KNOWN_VARIANTS, PACKAGE_DATA, SOURCE_TREE, Bundle, variant_filename
from bench.errors import CellNotRun, InputError, VerdictFailed

LogFn = Callable[[str], None]

RECIPES_FILE = "recipes.toml"
PROTOBUF_LIMIT = 2**31 - 1  # one ONNX file cannot exceed this; bigger models need external data
QUANT_OP_PATTERN = re.compile(
    r"^(MatMulNBits|MatMulBnb4|MatMulInteger|ConvInteger|DynamicQuantize\w*|QLinear\w*|QuantizeLinear|"
    r"DequantizeLinear|MatMulIntegerToFloat|GatherBlockQuantized|QGemm|QAttention)$"
)
_TARGET_OPS = {  # what a method must produce; none of them → nothing was quantised
    "fp16": None,
    "dynamic": ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"),
    "nbits": ("MatMulNBits",),
    "bnb4": ("MatMulBnb4",),
}


# --- recipes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """How far a variant may drift from fp32 on the probe batch before ``variants check`` fails it."""

    max_abs_dprob: float | None = None  # max |p_variant − p_fp32| over images and classes
    max_abs_dlogit: float | None = None  # max |logit_variant − logit_fp32|
    min_agreement: float | None = None  # share of probe images whose argmax equals fp32's

    def violations(self, dlogit: float, dprob: float, agreement: float) -> list[str]:
        """Which limits the measured figures break (NaN breaks every limit it meets)."""
        out = []
        if self.max_abs_dprob is not None and not dprob <= self.max_abs_dprob:
            out.append(f"max |Δprob| {dprob:.4g} > {self.max_abs_dprob:g}")
        if self.max_abs_dlogit is not None and not dlogit <= self.max_abs_dlogit:
            out.append(f"max |Δlogit| {dlogit:.4g} > {self.max_abs_dlogit:g}")
        if self.min_agreement is not None and not agreement >= self.min_agreement:
            out.append(f"argmax agreement {agreement:.3f} < {self.min_agreement:g}")
        return out


# Each method's parameters: name → (accepted types, default). Unknown keys in recipes.toml are errors.
_LIST = (list,)
METHOD_PARAMS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "fp16": {
        "keep_io_types": ((bool,), True),
        "op_block_list": ((list, type(None)), None),  # None = onnxconverter-common's default list
        "node_block_list": (_LIST, []),
        "min_positive_val": ((float, int), 1e-7),
        "max_finite_val": ((float, int), 1e4),
    },
    "dynamic": {
        "weight_type": ((str,), "QInt8"),
        "per_channel": ((bool,), False),
        "reduce_range": ((bool,), False),
        "op_types_to_quantize": ((list, type(None)), None),  # None = every op ORT can quantise dynamically
        "nodes_to_exclude": (_LIST, []),
        "extra_options": ((dict,), {}),
    },
    "nbits": {
        "bits": ((int,), 4),
        "block_size": ((int,), 32),
        "is_symmetric": ((bool,), True),
        "accuracy_level": ((int, type(None)), None),
        "nodes_to_exclude": (_LIST, []),
    },
    "bnb4": {
        "quant_type": ((str,), "nf4"),
        "block_size": ((int,), 64),
        "nodes_to_exclude": (_LIST, []),
    },
}
_COMMON_KEYS = {"method", "base", "description", "tolerance"}
_CHOICES = {("dynamic", "weight_type"): ("QInt8", "QUInt8"), ("bnb4", "quant_type"): ("nf4", "fp4"),
            ("nbits", "bits"): (2, 4, 8)}


@dataclass(frozen=True)
class Recipe:
    """How one variant is derived: a method, its parameters, the variant it starts from, its tolerance."""

    name: str
    method: str
    params: dict[str, Any]
    base: str = "fp32"
    description: str = ""
    tolerance: Tolerance = field(default_factory=Tolerance)
    source: str = ""

    @property
    def tool(self) -> str:
        return {
            "fp16": "onnxconverter_common.float16.convert_float_to_float16",
            "dynamic": "onnxruntime.quantization.quantize_dynamic",
            "nbits": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            "bnb4": "onnxruntime.quantization.matmul_bnb4_quantizer.MatMulBnb4Quantizer",
        }[self.method]

    def summary(self) -> str:
        p = self.params
        if self.method == "fp16":
            text = "float16" + (", fp32 I/O" if p["keep_io_types"] else "")
        elif self.method == "dynamic":
            text = f"dynamic {p['weight_type']}" + (", per-channel" if p["per_channel"] else "")
        elif self.method == "nbits":
            text = (f"MatMulNBits {p['bits']}-bit, block {p['block_size']}, "
                    + ("symmetric" if p["is_symmetric"] else "asymmetric"))
        else:
            text = f"MatMulBnb4 {p['quant_type']}, block {p['block_size']}"
        return text if self.base == "fp32" else f"{text}, from {self.base}"


@dataclass
class RecipeBook:
    """The recipes in force for one model folder, and the tolerance for variants no recipe describes."""

    recipes: dict[str, Recipe]
    default_tolerance: Tolerance
    sources: list[str]

    def names(self) -> list[str]:
        return list(self.recipes)

    def get(self, name: str) -> Recipe:
        if name not in self.recipes:
            raise InputError(f"no recipe named {name!r} (recipes: {', '.join(self.recipes) or 'none'}; "
                             f"from {', '.join(self.sources)}); pick one of those or add [recipes.{name}]")
        return self.recipes[name]

    def tolerance(self, variant: str) -> Tolerance:
        recipe = self.recipes.get(variant)
        return recipe.tolerance if recipe else self.default_tolerance


def default_recipes_path() -> Path:
    """``./variants/recipes.toml`` → the copy in the package → the source checkout (like the demo bundle)."""
    for candidate in (Path.cwd() / "variants" / RECIPES_FILE, PACKAGE_DATA / "variants" / RECIPES_FILE,
                      SOURCE_TREE / "variants" / RECIPES_FILE):
        if candidate.is_file():
            return candidate
    raise InputError("no variants/recipes.toml found (not in ./variants, the package, or the source tree); "
                     "reinstall bench or pass --recipes FILE")


def load_recipes(bundle: Bundle | None = None, path: str | Path | None = None) -> RecipeBook:
    """The default recipes (or ``path``), overridden per recipe by ``<model dir>/recipes.toml`` when present."""
    base_path = Path(path) if path else default_recipes_path()
    if not base_path.is_file():
        raise InputError(f"recipes file {base_path} not found; pass an existing --recipes FILE")
    data = _read_toml(base_path)
    recipes = _parse_recipes(data, base_path)
    tolerance = _parse_tolerance(data.get("tolerance", {}), base_path, "tolerance")
    sources = [str(base_path)]
    if bundle is not None and (bundle.root / RECIPES_FILE).is_file() and path is None:
        local = bundle.root / RECIPES_FILE
        local_data = _read_toml(local)
        recipes.update(_parse_recipes(local_data, local))
        if "tolerance" in local_data:
            tolerance = _parse_tolerance(local_data["tolerance"], local, "tolerance")
        sources.append(str(local))
    book = RecipeBook(recipes=recipes, default_tolerance=tolerance, sources=sources)
    _check_bases(book)
    return book


def recipe_names(bundle: Bundle | None = None) -> list[str]:
    """Variant names the recipes can build (those of ``bundle``'s folder when it overrides them)."""
    return load_recipes(bundle).names()


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"line (\d+)", msg)
        lineno = int(m.group(1)) if m else None
        where = ""
        if lineno is not None:
            lines = text.splitlines()
            bad = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            table = _enclosing_table(lines, lineno)
            where = f" in [{table}]" if table else ""
            where += f": `{bad}`" if bad else ""
        raise InputError(f"{path} is not valid TOML ({msg}){where}; fix that line") from exc


def _enclosing_table(lines: list[str], lineno: int) -> str | None:
    for line in reversed(lines[: lineno - 1]):
        m = re.match(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if m:
            return m.group(1).strip()
    return None


def _key_line(path: Path, table: str, key: str | None) -> str:
    """`` line N`` of ``key`` inside ``[table]`` (or of the table header), for error messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    header = re.compile(r"^\s*\[" + re.escape(table) + r"\]\s*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if header.match(ln)), None)
    if start is None:
        return ""
    if key is None:
        return f" line {start + 1}"
    for i in range(start + 1, len(lines)):
        if re.match(r"^\s*\[", lines[i]):
            break
        if re.match(r"^\s*" + re.escape(key) + r"\s*=", lines[i]):
            return f" line {i + 1}"
    return f" line {start + 1}"


def _schema_error(path: Path, table: str, key: str | None, problem: str) -> InputError:
    where = _key_line(path, table, key)
    what = f"[{table}] {key}" if key else f"[{table}]"
    return InputError(f"{path}{where}: {what} {problem}; fix the recipe")


def _parse_tolerance(raw: Any, path: Path, table: str) -> Tolerance:
    if not isinstance(raw, dict):
        raise _schema_error(path, table, None, "must be a table like { max_abs_dprob = 0.1, min_agreement = 0.9 }")
    known = {"max_abs_dprob", "max_abs_dlogit", "min_agreement"}
    values: dict[str, float] = {}
    for key, value in raw.items():
        if key not in known:
            raise _schema_error(path, table, key, f"is not a tolerance key (use {', '.join(sorted(known))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _schema_error(path, table, key, f"must be a number ≥ 0, got {value!r}")
        values[key] = float(value)
    return Tolerance(**values)


def _parse_recipes(data: dict[str, Any], path: Path) -> dict[str, Recipe]:
    section = data.get("recipes", {})
    if not isinstance(section, dict):
        raise _schema_error(path, "recipes", None, "must hold [recipes.NAME] tables")
    out: dict[str, Recipe] = {}
    for name, raw in section.items():
        table = f"recipes.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name == "fp32":
            raise _schema_error(path, table, None, "is not a usable variant name (letters, digits, _; not fp32)")
        if not isinstance(raw, dict):
            raise _schema_error(path, "recipes", name, "must be a table")
        method = raw.get("method")
        if method not in METHOD_PARAMS:
            raise _schema_error(path, table, "method", f"must be one of {', '.join(METHOD_PARAMS)}, got {method!r}")
        schema = METHOD_PARAMS[method]
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _COMMON_KEYS:
                continue
            if key not in schema:
                raise _schema_error(path, table, key, f"is not a parameter of method {method!r} "
                                                      f"(known: {', '.join(schema)})")
            types = schema[key][0]
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise _schema_error(path, table, key, f"must be {names}, got {value!r}")
            choices = _CHOICES.get((method, key))
            if choices and value not in choices:
                raise _schema_error(path, table, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
            params[key] = value
        for key, (_, default) in schema.items():
            params.setdefault(key, default)
        size = params.get("block_size")
        if method in ("nbits", "bnb4") and (size < 16 or size & (size - 1)):
            raise _schema_error(path, table, "block_size", f"must be a power of two ≥ 16, got {params['block_size']}")
        base = raw.get("base", "fp32")
        if not isinstance(base, str):
            raise _schema_error(path, table, "base", f"must be a variant name, got {base!r}")
        tolerance = _parse_tolerance(raw.get("tolerance", {}), path, table)
        out[name] = Recipe(name=name, method=method, params=params, base=base,
                           description=str(raw.get("description", "")), tolerance=tolerance, source=str(path))
    return out


def _check_bases(book: RecipeBook) -> None:
    for recipe in book.recipes.values():
        seen = [recipe.name]
        base = recipe.base
        while base != "fp32":
            if base not in book.recipes:
                raise InputError(f"{recipe.source}: [recipes.{recipe.name}] base {base!r} is neither fp32 "
                                 "nor a recipe; fix the recipe")
            if base in seen:
                raise InputError(f"{recipe.source}: recipes {' → '.join([*seen, base])} form a cycle; fix their base")
            seen.append(base)
            base = book.recipes[base].base


# --- discovery and inspection ---------------------------------------------------------------------

def variant_order(names: Sequence[str]) -> list[str]:
    """fp32 first, then the CLI.md names in their order, then anything else alphabetically."""
    rank = {n: i for i, n in enumerate(KNOWN_VARIANTS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


@dataclass
class VariantInfo:
    """One variant file as ``bench variants list`` shows it."""

    variant: str
    file: str
    path: str
    size_mb: float
    sha256: str
    precision: str
    quant_ops: dict[str, int]
    parameters: int
    op_types: dict[str, int]
    recipe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_variants(bundle: Bundle) -> list[VariantInfo]:
    """Every variant file in the bundle, inspected (nothing is built)."""
    return [inspect_variant(bundle.variants[name], name) for name in variant_order(list(bundle.variants))]


def inspect_variant(path: Path, name: str | None = None) -> VariantInfo:
    """Size, sha256, precision, quantisation op types and parameter count of one .onnx file."""
    import onnx

    from bench.bundle import variant_name
    from bench.runner import model_info

    info = model_info(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                         "re-download or rebuild it (bench variants build --force)") from exc
    nodes = list(_all_nodes(model.graph))
    op_types: dict[str, int] = {}
    for node in nodes:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    quant_ops = {k: v for k, v in sorted(op_types.items()) if QUANT_OP_PATTERN.match(k)}
    return VariantInfo(
        variant=name or variant_name(path), file=path.name, path=str(path), size_mb=info.size_mb, sha256=info.sha256,
        precision=describe_precision(model, nodes), quant_ops=quant_ops, parameters=count_parameters(model, nodes),
        op_types=dict(sorted(op_types.items())), recipe=info.recipe,
    )


def _all_graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_graphs(g)


def _all_nodes(graph: Any) -> Iterator[Any]:
    for g in _all_graphs(graph):
        yield from g.node


def _all_initializers(graph: Any) -> Iterator[Any]:
    for g in _all_graphs(graph):
        yield from g.initializer


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_parameters(model: Any, nodes: Sequence[Any] | None = None) -> int:
    """Weights the model represents: packed 4-bit weights count as K×N; scales and zero points do not count.

    Only numeric weight tensors count (float, int8/uint8, 4-bit); int64 shape constants do not. So fp32,
    fp16, int8, q4 and bnb4 of one model report the same figure.
    """
    from onnx import TensorProto

    weight_types = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                    TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    inits = {t.name: t for t in _all_initializers(model.graph)}
    counts = {n: math.prod(t.dims) for n, t in inits.items() if t.data_type in weight_types}
    metadata: set[str] = set()
    for node in nodes if nodes is not None else _all_nodes(model.graph):
        op, ins = node.op_type, list(node.input)
        if op in ("MatMulNBits", "MatMulBnb4") and len(ins) > 1:
            k, n = _attr(node, "K"), _attr(node, "N")
            if k and n and ins[1] in counts:
                counts[ins[1]] = int(k) * int(n)
            metadata.update(ins[2:])
        elif op in ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"):
            metadata.update(ins[2:])
        elif op in ("DequantizeLinear", "QuantizeLinear"):
            metadata.update(ins[1:])
        elif op in ("QLinearMatMul", "QLinearConv"):
            metadata.update(x for i, x in enumerate(ins) if i in (1, 2, 4, 5, 6, 7))
    for name in list(counts):  # quantize_dynamic's W_scale / W_zero_point next to W_quantized
        for suffix in ("_scale", "_zero_point"):
            if name.endswith(suffix) and f"{name[: -len(suffix)]}_quantized" in inits:
                metadata.add(name)
    return int(sum(c for n, c in counts.items() if n not in metadata))


def describe_precision(model: Any, nodes: Sequence[Any] | None = None) -> str:
    """One phrase for how the weights are stored: ``fp32``, ``fp16 (fp32 I/O)``, ``int4 MatMulNBits block 32, sym``…"""
    import onnx
    from onnx import TensorProto

    nodes = list(nodes) if nodes is not None else list(_all_nodes(model.graph))
    inits = {t.name: t for t in _all_initializers(model.graph)}
    float_bytes: dict[int, int] = {}
    for t in inits.values():
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            float_bytes[t.data_type] = float_bytes.get(t.data_type, 0) + math.prod(t.dims)
    dominant = max(float_bytes, key=float_bytes.__getitem__) if float_bytes else TensorProto.FLOAT
    float_name = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}[dominant]
    rest = f"rest {float_name}"
    by_op = {n.op_type: n for n in nodes}
    if "MatMulNBits" in by_op:
        node = by_op["MatMulNBits"]
        sym = "asym" if len(node.input) > 3 and node.input[3] else "sym"
        return f"int{_attr(node, 'bits', 4)} MatMulNBits, block {_attr(node, 'block_size')}, {sym}; {rest}"
    if "MatMulBnb4" in by_op:
        node = by_op["MatMulBnb4"]
        kind = {0: "fp4", 1: "nf4"}.get(_attr(node, "quant_type"), "4-bit")
        return f"{kind} MatMulBnb4, block {_attr(node, 'block_size')}; {rest}"
    integer = by_op.get("MatMulInteger") or by_op.get("ConvInteger")
    if integer is not None:
        weight = inits.get(integer.input[1]) if len(integer.input) > 1 else None
        wtype = "uint8" if weight is not None and weight.data_type == TensorProto.UINT8 else "int8"
        scale = inits.get(integer.input[1][: -len("_quantized")] + "_scale") if weight is not None else None
        granularity = "per-channel" if scale is not None and math.prod(scale.dims) > 1 else "per-tensor"
        return f"{wtype} weights, dynamic uint8 activations, {granularity}; {rest}"
    if any(op.startswith("QLinear") for op in by_op):
        return f"int8 static (QLinear ops); {rest}"
    if "DequantizeLinear" in by_op:
        dq_types = {inits[n.input[0]].data_type for n in nodes
                    if n.op_type == "DequantizeLinear" and n.input[0] in inits}
        names = sorted(onnx.helper.tensor_dtype_to_np_dtype(t).name if t not in (TensorProto.INT4, TensorProto.UINT4)
                       else ("int4" if t == TensorProto.INT4 else "uint4") for t in dq_types)
        return f"{'/'.join(names) or 'quantised'} QDQ weights; {rest}"
    io_float = {i.type.tensor_type.elem_type for i in model.graph.input}
    if float_name == "fp16" and TensorProto.FLOAT in io_float:
        return "fp16 (fp32 I/O)"
    return float_name


# --- building --------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    """What ``build_variant`` did for one name."""

    variant: str
    status: str  # built | exists | skipped
    path: str
    reason: str | None = None
    seconds: float | None = None
    size_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_variants(
    bundle: Bundle,
    only: Sequence[str] | None = None,
    force: bool = False,
    recipes: RecipeBook | None = None,
    log: LogFn | None = None,
) -> list[BuildResult]:
    """Derive every recipe's variant that is missing (``only``: those names; ``force``: rebuild them)."""
    book = recipes or load_recipes(bundle)
    names = list(dict.fromkeys(only)) if only else book.names()
    for name in names:
        book.get(name)  # unknown names fail before anything is built
    return [build_variant(bundle, name, force=force, recipes=book, log=log) for name in names]


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
            raise InputError(f"cannot build {name}: no fp32 model to start from ({source} is missing); "
                             "put the fp32 export there as onnx/model.onnx")
    else:
        base = build_variant(bundle, recipe.base, force=False, recipes=book, log=log)
        if base.status == "skipped":
            return BuildResult(name, "skipped", str(out), reason=f"its base {recipe.base} was skipped: {base.reason}")
        source = Path(base.path)
    model = _load_source(source)
    if recipe.method in ("nbits", "bnb4") and not _has_quantisable_matmul(model):
        reason = (f"{source.name} has no MatMul with a constant 2-D weight, so {recipe.method} has nothing to "
                  "quantise")
        if log:
            log(f"warning: {name} skipped — {reason}")
        return BuildResult(name, "skipped", str(out), reason=reason)

    partial = out.parent / f".{out.name}.{os.getpid()}.tmp"  # never *.onnx, so never taken for a variant
    _clean_stale_partials(out)
    try:
        partial.open("wb").close()
    except OSError as exc:
        raise InputError(f"cannot write {name} into {out.parent} ({exc.strerror or exc}); make the folder writable "
                         "or copy the model dir somewhere writable and pass that --model-dir") from exc
    label = f"building {name} ({recipe.summary()}) from {source.name}"
    started = time.perf_counter()
    try:
        if log:
            log(f"{label} → {out.name}")
        with _progress(label, enabled=log is not None), _quiet_tools(), _terminate_as_interrupt():
            produced = _run_method(recipe, model, partial)
        targets = _TARGET_OPS[recipe.method]
        if targets and not any(n.op_type in targets for n in _all_nodes(produced.graph)):
            reason = f"{recipe.method} found nothing to quantise in {source.name}"
            if log:
                log(f"warning: {name} skipped — {reason}")
            return BuildResult(name, "skipped", str(out), reason=reason)
        seconds = time.perf_counter() - started
        _write_sidecar(out, recipe, source, partial, seconds)
        os.replace(partial, out)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"could not write {out} ({exc.strerror or exc}); check free space and permissions of "
                         f"{out.parent}") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:240]
        raise InputError(f"building {name} from {source.name} failed in {recipe.tool}: {type(exc).__name__}: {first}; "
                         "the model may not suit this recipe (change its parameters in recipes.toml)") from exc
    finally:
        partial.unlink(missing_ok=True)
    bundle.refresh()
    size_mb = round(out.stat().st_size / 1e6, 3)
    if log:
        log(f"built {name}: {out} ({size_mb:,.1f} MB in {seconds:.1f} s)")
    return BuildResult(name, "built", str(out), seconds=round(seconds, 3), size_mb=size_mb)


def _load_source(source: Path) -> Any:
    """The model a build starts from; external-data (> 2 GB) models are refused with a clear reason."""
    import onnx

    too_big = source.stat().st_size > PROTOBUF_LIMIT
    model = None
    if not too_big:
        try:
            model = onnx.load(str(source), load_external_data=False)
        except Exception as exc:
            raise InputError(f"{source} is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    if too_big or any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_initializers(model.graph)):
        raise InputError(f"{source.name} keeps its weights in external data (over the 2 GB protobuf limit or split); "
                         "bench variants build does not support external-data models yet — build this variant with "
                         "ORT's tools (use_external_data_format=True) and put it next to model.onnx")
    return model


def _has_quantisable_matmul(model: Any) -> bool:
    """A MatMul whose B input is a constant 2-D initializer (what both 4-bit quantisers need)."""
    inits = {t.name: t for t in _all_initializers(model.graph)}
    return any(n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
               for n in _all_nodes(model.graph))


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


def _run_method(recipe: Recipe, model: Any, out: Path) -> Any:
    """Run the recipe's tool on ``model`` (consumed), write the result to ``out``, return the ModelProto."""
    import onnx

    p = recipe.params
    if recipe.method == "fp16":
        from onnxconverter_common.float16 import convert_float_to_float16

        kwargs: dict[str, Any] = {"keep_io_types": p["keep_io_types"], "node_block_list": p["node_block_list"],
                                  "min_positive_val": p["min_positive_val"], "max_finite_val": p["max_finite_val"]}
        if p["op_block_list"] is not None:
            kwargs["op_block_list"] = p["op_block_list"]
        produced = convert_float_to_float16(drop_noop_casts(model), **kwargs)
        onnx.save_model(produced, str(out))
        return produced
    if recipe.method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(model, str(out), op_types_to_quantize=p["op_types_to_quantize"],
                         per_channel=p["per_channel"], reduce_range=p["reduce_range"],
                         weight_type=getattr(QuantType, p["weight_type"]),
                         nodes_to_exclude=p["nodes_to_exclude"], extra_options=p["extra_options"] or None)
        return onnx.load(str(out), load_external_data=False)
    if recipe.method == "nbits":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, bits=p["bits"], block_size=p["block_size"],
                                         is_symmetric=p["is_symmetric"], accuracy_level=p["accuracy_level"],
                                         nodes_to_exclude=p["nodes_to_exclude"])
        quantizer.process()
        produced = quantizer.model.model
        onnx.save_model(produced, str(out))
        return produced
    if recipe.method == "bnb4":
        from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

        quant_type = MatMulBnb4Quantizer.NF4 if p["quant_type"] == "nf4" else MatMulBnb4Quantizer.FP4
        quantizer = MatMulBnb4Quantizer(model, quant_type=quant_type, block_size=p["block_size"],
                                        nodes_to_exclude=p["nodes_to_exclude"])
        quantizer.process()
        produced = quantizer.model.model
        onnx.save_model(produced, str(out))  # one file, like the released models (no .data)
        return produced
    raise InputError(f"recipe {recipe.name}: unknown method {recipe.method!r}")  # pragma: no cover


def tool_versions() -> dict[str, str | None]:
    """Versions of everything that shapes a built file (recorded in each sidecar)."""
    from importlib import metadata

    import onnxruntime

    from bench import __version__

    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"bench": __version__, "onnxruntime": onnxruntime.__version__, "onnx": dist("onnx"),
            "onnxconverter-common": dist("onnxconverter-common"), "onnx-ir": dist("onnx-ir"), "numpy": dist("numpy")}


def _write_sidecar(out: Path, recipe: Recipe, source: Path, built: Path, seconds: float) -> None:
    from bench.runner import model_info

    src = model_info(source)
    product = model_info(built)
    document = {
        "variant": recipe.name,
        "recipe": recipe.name,
        "method": recipe.method,
        "tool": recipe.tool,
        "summary": recipe.summary(),
        "description": recipe.description,
        "params": recipe.params,
        "base": {"variant": recipe.base, "file": source.name, "sha256": src.sha256, "size_mb": src.size_mb},
        "output": {"file": out.name, "sha256": product.sha256, "size_mb": product.size_mb},
        "tools": tool_versions(),
        "recipes_file": recipe.source,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
    }
    sidecar = out.with_suffix(".json")
    partial = sidecar.parent / f".{sidecar.name}.{os.getpid()}.tmp"
    try:
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, sidecar)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_tools() -> Iterator[None]:
    """Keep the converters' chatter (logging INFO/WARNING, prints, warnings) off stdout and the user's screen."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a matrix timeout, ``kill``) unwinds like Ctrl-C, so the build's temp file is removed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
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

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        bar.add_task(label, total=None)
        yield


# --- the core's entry points ----------------------------------------------------------------------

def parse_variants(text: str, bundle: Bundle) -> list[str]:
    """``"fp16"``, ``"fp32,int8"`` or ``"all"`` → variant names; ``all`` = fp32 + every recipe + on disk."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise InputError("no variant given; pass --variant NAME[,NAME...] or all")
    if names == ["all"]:
        return variant_order(list(dict.fromkeys(["fp32", *recipe_names(bundle), *bundle.variants])))
    return list(dict.fromkeys(names))


def ensure_variant(bundle: Bundle, variant: str, allow_build: bool = True, log: LogFn | None = None) -> Path:
    """Path of ``variant``'s file; build it first (cached next to the model) when a recipe can and ``allow_build``.

    A variant that bench built from a base file which has changed since (its sidecar records the base's
    sha256) is stale: it is rebuilt, or, with ``allow_build=False``, used with a warning.
    """
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
        raise InputError(f"variant {variant!r} is not built in {bundle.onnx_dir} and --no-build forbids building it; "
                         f"run `bench variants build --model-dir {bundle.root} --only {variant}` or drop --no-build")
    if log:
        log(f"{stale}; rebuilding it" if stale else
            f"{variant} is not on disk: building it from its recipe (cached in {bundle.onnx_dir})")
    result = build_variant(bundle, variant, force=stale is not None, recipes=book, log=log)
    if result.status == "skipped":
        raise InputError(f"variant {variant!r} cannot be built for {bundle.root}: {result.reason}; "
                         "choose another variant")
    return Path(result.path)


def drop_noop_casts(model: Any) -> Any:
    """Remove Casts to float32 of tensors that already are float32 (exact in the fp32 graph).

    PyTorch's attention export writes ``Softmax → Cast(to=float)``; onnxconverter-common turns the tensor
    into float16 but leaves the Cast's ``to`` at float, and ORT then refuses the fp16 model ("Type Error:
    Type (tensor(float16)) of output arg … does not match expected type").
    """
    import onnx

    graph = model.graph
    typed = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    elem.update({t.name: t.data_type for t in graph.initializer})
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (node.op_type == "Cast" and to == onnx.TensorProto.FLOAT and node.output[0] not in outputs
                and elem.get(node.input[0]) == onnx.TensorProto.FLOAT):
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    if rename:
        del graph.node[:]
        graph.node.extend(keep)
    return model


def stale_reason(bundle: Bundle, variant: str) -> str | None:
    """Why ``variant`` is out of date with the file it was built from, or None (also when bench did not build it)."""
    from bench.runner import file_sha256

    sidecar = bundle.variants[variant].with_suffix(".json")
    try:
        base = json.loads(sidecar.read_text(encoding="utf-8"))["base"]
        base_path = bundle.variant_path(base["variant"])
        recorded = base["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not base_path.is_file() or file_sha256(base_path) == recorded:
        return None
    return f"{variant} is stale: {base_path.name} changed since {bundle.variants[variant].name} was built from it"


# --- checking --------------------------------------------------------------------------------------

@dataclass
class VariantCheck:
    """One variant against fp32 on the probe batch."""

    variant: str
    file: str | None
    status: str  # ok | unavailable | failed
    reason: str | None = None
    max_abs_dlogit: float | None = None
    max_abs_dprob: float | None = None
    mean_abs_dprob: float | None = None
    agreement: float | None = None
    flips: int | None = None
    tolerance: dict[str, float | None] = field(default_factory=dict)
    within_tolerance: bool | None = None
    why: str | None = None


@dataclass
class CheckReport:
    """``bench variants check``: every variant vs the fp32 reference, and the verdict."""

    model_dir: str
    reference: str
    provider: str
    probe: dict[str, Any]
    variants: list[VariantCheck]

    @property
    def verdict(self) -> str:
        bad = [v for v in self.variants if v.status == "failed" or v.within_tolerance is False]
        return "fail" if bad else "pass"

    def as_dict(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "reference": self.reference, "provider": self.provider,
                "probe": self.probe, "variants": [asdict(v) for v in self.variants], "verdict": self.verdict}

    def raise_on_failure(self) -> None:
        bad = [v for v in self.variants if v.status == "failed" or v.within_tolerance is False]
        if bad:
            raise VerdictFailed("variants out of tolerance vs fp32: "
                                + "; ".join(f"{v.variant}: {v.why or v.reason}" for v in bad)
                                + " (loosen with --tolerance NAME=MAX_DPROB or fix the recipe)")


def parse_tolerances(values: Sequence[str]) -> dict[str | None, float]:
    """``--tolerance 0.05`` (every variant) or ``--tolerance q4=0.2,bnb4=0.25`` → max |Δprob| per variant."""
    out: dict[str | None, float] = {}
    for value in values:
        for item in (v.strip() for v in value.split(",") if v.strip()):
            name, _, number = item.rpartition("=")
            try:
                limit = float(number)
            except ValueError:
                raise InputError(f"--tolerance {item!r}: expected MAX_DPROB or VARIANT=MAX_DPROB, "
                                 "e.g. q4=0.2") from None
            if not limit >= 0:
                raise InputError(f"--tolerance {item!r}: the limit must be ≥ 0")
            out[name.strip() or None] = limit
    return out


def check_variants(
    bundle: Bundle,
    variants: Sequence[str] | None = None,
    provider: str = "cpu",
    probe_size: int = 16,
    seed: int = 0,
    tolerances: dict[str | None, float] | None = None,
    recipes: RecipeBook | None = None,
    allow_build: bool = True,
    log: LogFn | None = None,
    images: Path | None = None,
) -> CheckReport:
    """Run fp32 and each variant on one probe batch; compare logits, probabilities and argmax.

    The probe is a seeded standard-normal tensor in the model's input space, or with ``images`` the
    first ``probe_size`` images of that folder, preprocessed as the model expects.
    """
    import numpy as np

    from bench.engine import Engine, ModelLoadError, ProviderUnavailable, first_line

    if probe_size < 1:
        raise InputError(f"--probe-size must be ≥ 1, got {probe_size}")
    book = recipes or load_recipes(bundle)
    reference_path = bundle.variants.get("fp32")
    if reference_path is None:
        raise InputError(f"no fp32 reference (onnx/model.onnx) in {bundle.root} to check variants against; add it")
    if variants:
        names = [v for v in dict.fromkeys(variants) if v != "fp32"]
        paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in names}
    else:
        names = [v for v in variant_order(list(bundle.variants)) if v != "fp32"]
        paths = {v: bundle.variants[v] for v in names}
    if not names:
        raise InputError(f"nothing to check in {bundle.root}: only fp32 is on disk; build variants first "
                         f"(bench variants build --model-dir {bundle.root})")
    overrides = tolerances or {}
    try:
        reference = Engine(reference_path, provider)
    except (ProviderUnavailable, ModelLoadError) as exc:
        raise CellNotRun(f"the fp32 reference cannot run on {provider}: {exc}; check on another --provider") from exc
    if images is not None:
        probe, probe_info = _image_probe(bundle, reference, Path(images), probe_size)
    else:
        probe = _probe_batch(reference, probe_size, seed)
        probe_info = {"kind": "seeded standard-normal tensor", "seed": seed}
    ref_logits = _logits(reference, probe)
    ref_prob = _softmax(ref_logits)
    rows = []
    for name in names:
        tol = book.tolerance(name)
        limit = overrides.get(name, overrides.get(None))
        if limit is not None:
            tol = Tolerance(max_abs_dprob=limit, max_abs_dlogit=tol.max_abs_dlogit, min_agreement=tol.min_agreement)
        row = VariantCheck(variant=name, file=paths[name].name, status="ok", tolerance=asdict(tol))
        try:
            logits = _logits(Engine(paths[name], provider), probe)
        except (ProviderUnavailable, ModelLoadError) as exc:
            row.status, row.reason = "unavailable", str(exc)
            rows.append(row)
            continue
        except InputError as exc:
            row.status, row.reason = "failed", str(exc)
            rows.append(row)
            continue
        except Exception as exc:  # inference threw: the variant is broken here
            row.status, row.reason = "failed", f"{provider}: inference failed — {first_line(exc)}"
            rows.append(row)
            continue
        if logits.shape != ref_logits.shape:
            row.status = "failed"
            row.reason = f"output shape {list(logits.shape)} differs from fp32's {list(ref_logits.shape)}"
            rows.append(row)
            continue
        prob = _softmax(logits)
        dprob = np.abs(prob - ref_prob)
        agree = prob.argmax(axis=-1) == ref_prob.argmax(axis=-1)
        row.max_abs_dlogit = float(np.abs(logits.astype(np.float64) - ref_logits).max())
        row.max_abs_dprob = float(dprob.max())
        row.mean_abs_dprob = float(dprob.mean())
        row.agreement = float(agree.mean())
        row.flips = int((~agree).sum())
        problems = tol.violations(row.max_abs_dlogit, row.max_abs_dprob, row.agreement)
        row.within_tolerance = not problems
        row.why = "; ".join(problems) or None
        rows.append(row)
    return CheckReport(model_dir=str(bundle.root), reference=reference_path.name, provider=provider,
                       probe={"n": int(probe.shape[0]), **probe_info, "shape": list(probe.shape)},
                       variants=rows)


def _probe_batch(engine: Any, n: int, seed: int) -> Any:
    import numpy as np

    dims = [n] + [d if isinstance(d, int) and d > 0 else 224 for d in engine.input.shape[1:]]
    return np.random.default_rng(seed).standard_normal(dims, dtype=np.float32)


def _image_probe(bundle: Bundle, engine: Any, folder: Path, n: int) -> tuple[Any, dict[str, Any]]:
    """The first ``n`` decodable images under ``folder`` (sorted, recursive), preprocessed for the model."""
    from bench.datasets import image_files
    from bench.preprocess import ImageError, load_image, preprocess_batch

    decoded, skipped = [], 0
    for path in image_files(folder):
        if len(decoded) == n:
            break
        try:
            decoded.append(load_image(path))
        except ImageError:
            skipped += 1
    if not decoded:
        raise InputError(f"--images {folder} holds no readable image to probe with; pass a folder of images")
    batch = preprocess_batch(decoded, bundle.preprocess_config(engine.input.image_hw()))
    return batch, {"kind": "images", "images": str(folder), "skipped": skipped}


def _logits(engine: Any, batch: Any) -> Any:
    """Logits for the whole probe batch, in chunks the model's (possibly fixed) batch axis accepts."""
    import numpy as np

    step = engine.input.fixed_batch or batch.shape[0]
    if batch.shape[0] % step:
        raise InputError(f"{engine.model_path.name} has its batch fixed to {step}; use a --probe-size that is a "
                         f"multiple of {step}")
    return np.concatenate([np.asarray(engine.run(batch[i : i + step]), dtype=np.float64)
                           for i in range(0, batch.shape[0], step)])


def _softmax(logits: Any) -> Any:
    from bench.engine import softmax

    return softmax(logits)

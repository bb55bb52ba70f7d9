"""Recipes: how each variant is derived from fp32, and how far it may drift from it.

Recipes live in ``variants/recipes.toml`` (found like the demo bundle: ``./variants`` → the copy in the
package → the source checkout); a model folder's own ``recipes.toml`` overrides single recipes. This
module reads and validates that file (with line numbers in every schema error) into a :class:`RecipeBook`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bundle import PACKAGE_DATA, SOURCE_TREE, Bundle
from bench.errors import InputError

RECIPES_FILE = "recipes.toml"


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

_CHOICES = {
    ("dynamic", "weight_type"): ("QInt8", "QUInt8"),
    ("bnb4", "quant_type"): ("nf4", "fp4"),
    ("nbits", "bits"): (2, 4, 8),
}


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
            text = f"MatMulNBits {p['bits']}-bit, block {p['block_size']}, " + (
                "symmetric" if p["is_symmetric"] else "asymmetric"
            )
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
            raise InputError(
                f"no recipe named {name!r} (recipes: {', '.join(self.recipes) or 'none'}; "
                f"from {', '.join(self.sources)}); pick one of those or add [recipes.{name}]"
            )
        return self.recipes[name]

    def tolerance(self, variant: str) -> Tolerance:
        recipe = self.recipes.get(variant)
        return recipe.tolerance if recipe else self.default_tolerance


def default_recipes_path() -> Path:
    """``./variants/recipes.toml`` → the copy in the package → the source checkout (like the demo bundle)."""
    for candidate in (
        Path.cwd() / "variants" / RECIPES_FILE,
        PACKAGE_DATA / "variants" / RECIPES_FILE,
        SOURCE_TREE / "variants" / RECIPES_FILE,
    ):
        if candidate.is_file():
            return candidate
    raise InputError(
        "no variants/recipes.toml found (not in ./variants, the package, or the source tree); "
        "reinstall bench or pass --recipes FILE"
    )


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
                raise _schema_error(
                    path, table, key, f"is not a parameter of method {method!r} (known: {', '.join(schema)})"
                )
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
        if method in ("nbits", "bnb4"):
            size = params["block_size"]  # always there: both schemas give it a default
            if size < 16 or size & (size - 1):
                raise _schema_error(path, table, "block_size", f"must be a power of two ≥ 16, got {size}")
        base = raw.get("base", "fp32")
        if not isinstance(base, str):
            raise _schema_error(path, table, "base", f"must be a variant name, got {base!r}")
        tolerance = _parse_tolerance(raw.get("tolerance", {}), path, table)
        out[name] = Recipe(
            name=name,
            method=method,
            params=params,
            base=base,
            description=str(raw.get("description", "")),
            tolerance=tolerance,
            source=str(path),
        )
    return out


def _check_bases(book: RecipeBook) -> None:
    for recipe in book.recipes.values():
        seen = [recipe.name]
        base = recipe.base
        while base != "fp32":
            if base not in book.recipes:
                raise InputError(
                    f"{recipe.source}: [recipes.{recipe.name}] base {base!r} is neither fp32 "
                    "nor a recipe; fix the recipe"
                )
            if base in seen:
                raise InputError(f"{recipe.source}: recipes {' → '.join([*seen, base])} form a cycle; fix their base")
            seen.append(base)
            base = book.recipes[base].base

"""What a results file must hold beyond its types, checked once, where every command reads one.

Why: the contract's types let through what no bench run writes and every reader trips on: a JSON nested
100,000 deep (RecursionError), ``NaN`` (bench writes ``allow_nan=False``), ``batch_size: 0``
(ZeroDivisionError in throughput), negative or infinite latencies ("Lowest p50 latency: nan ms"). Each is an
input error (exit 2) naming the file and the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from bench.errors import InputError

MAX_DEPTH = 64  # results.json nests ~8 deep (cells → accuracy → perturbations → agreement …)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Cell figures that are durations, rates or sizes: finite and ≥ 0 when present.
_CELL_NUMBERS = ("session_create_ms", "throughput_ips")
_CELL_GROUPS = ("latency_ms", "memory")


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, strings aside (linear, no recursion)."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub('""', text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number bench writes")


def parse_results_text(text: str, where: str) -> Any:
    """Parse a results file's text: InputError for malformed JSON, NaN/Infinity and nesting past ``MAX_DEPTH``."""
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise InputError(f"{where} is nested {depth} levels deep (results files stay under {MAX_DEPTH}): not results")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{where} is not a results JSON file ({exc})") from None


def check_values(data: dict[str, Any], where: str) -> None:
    """Refuse values that type-check but cannot be measurements (data already matched the contract's types)."""
    for i, cell in enumerate(data.get("cells") or []):
        at = f"{where}: cells[{i}]"
        size = cell.get("batch_size")
        if isinstance(size, int) and size < 1:
            raise InputError(f"{at}.batch_size must be ≥ 1, got {size}")
        for name in _CELL_NUMBERS:
            _measure(cell.get(name), f"{at}.{name}")
        for group in _CELL_GROUPS:
            for key, value in (cell.get(group) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    _measure(value, f"{at}.{group}.{key}")
        for j, value in enumerate(cell.get("samples_ms") or []):
            _measure(value, f"{at}.samples_ms[{j}]")


def _measure(value: Any, at: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value) and value >= 0):
        raise InputError(f"{at} must be a finite number ≥ 0, got {value!r}: not a measurement; re-measure it")

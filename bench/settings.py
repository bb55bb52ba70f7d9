"""Settings declared once: each config dataclass field carries its flag, help, role and valid range.

Everything else is derived from these declarations (the way optimum-benchmark and AIPerf put the CLI on the
config fields): the click options (``bench.cli.options``), the ``config`` a result records, the keys
``bench matrix --resume`` must find unchanged, and the keys ``bench compare`` warns about. A test fails when
a field has no role or a derived key is missing from the results schema.

Roles:
  ``measure``  changes what a figure means: a resumed run must match it;
  ``watch``    changes the figure *and* two runs that differ in it are warned about by ``bench compare``;
  ``record``   recorded only (where the output goes, how errors are handled).

Kept free of click and of everything heavy: library code validates with :func:`check` in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import MISSING, Field, dataclass
from pathlib import Path
from typing import Any, Literal

from bench.errors import InputError

Role = Literal["measure", "watch", "record"]
ROLES: tuple[Role, ...] = ("measure", "watch", "record")
_KEY = "bench.setting"
# More ORT threads than this only measures the scheduler: 10,000 threads on 2 cores took minutes at load ~270.
MAX_THREADS = 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Setting:
    """How one field is set on the command line, what it means for a result, and which values are valid.

    ``flag`` is the option's name (``--iterations``; "" for a field the CLI does not expose); ``negative`` makes
    a boolean an on/off pair (``--no-trt-fp16``); ``config_key`` is its key in a result's ``config`` (default:
    the field name; "" = not recorded). ``minimum``/``maximum`` bound numbers (``above``: the minimum itself is
    not allowed), ``choices`` bound strings.
    """

    flag: str
    help: str
    role: Role
    config_key: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    negative: str | None = None
    is_flag: bool = False
    path: bool = False
    comma_list: bool = False
    default_text: str | None = None
    show_default: bool = True
    percent: bool = False  # a fraction that the command line also takes as a percentage ("2%" → 0.02)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"setting {self.flag or '?'}: role must be one of {ROLES}, got {self.role!r}")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this setting, or None."""
        if value is None or isinstance(value, bool):
            return None
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if isinstance(value, (int, float)):
            low, high = self.minimum, self.maximum
            if low is not None and (value <= low if self.above else value < low):
                return f"must be {'>' if self.above else '≥'} {low:g}, got {value:g}"
            if high is not None and value > high:
                return f"must be ≤ {high:g}, got {value:g}"
        return None


def setting(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    flag: str,
    help: str,
    role: Role,
    **details: Any,
) -> Any:
    """A dataclass field declared as a setting: ``iterations: int = setting(100, flag="--iterations", ...)``."""
    meta = {_KEY: Setting(flag=flag, help=help, role=role, **details), "help": help}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_of(f: Field[Any]) -> Setting | None:
    value = f.metadata.get(_KEY)
    return value if isinstance(value, Setting) else None


def nested_type(f: Field[Any]) -> type | None:
    """The dataclass a field holds (``RunOptions.loop`` → LoopSpec), found from its default; None otherwise."""
    if f.default_factory is not MISSING and dataclasses.is_dataclass(f.default_factory):
        return f.default_factory
    return None


def walk(cls: type) -> Iterator[tuple[Field[Any], Setting | None]]:
    """Every leaf field of ``cls``, nested config dataclasses flattened, with its setting (None: undeclared)."""
    for f in dataclasses.fields(cls):
        inner = nested_type(f)
        if inner is not None:
            yield from walk(inner)
        else:
            yield f, setting_of(f)


def settings(cls: type) -> Iterator[tuple[Field[Any], Setting]]:
    """The declared settings of ``cls`` (nested ones included), in declaration order."""
    for f, s in walk(cls):
        if s is not None:
            yield f, s


def config_key(f: Field[Any], s: Setting) -> str:
    return f.name if s.config_key is None else s.config_key


def keys_with_role(cls: type, *roles: Role) -> tuple[str, ...]:
    """Recorded config keys of the settings of ``cls`` whose role is one of ``roles``."""
    return tuple(config_key(f, s) for f, s in settings(cls) if s.role in roles and config_key(f, s))


def recorded(obj: Any) -> dict[str, Any]:
    """The config a result records for ``obj``: every setting with a config key, nested ones flattened."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if nested_type(f) is not None:
            out.update(recorded(value))
            continue
        s = setting_of(f)
        if s is None or not config_key(f, s):
            continue
        out[config_key(f, s)] = _plain(value)
    return out


def check(obj: Any) -> None:
    """Raise InputError naming the flag of the first field of ``obj`` (not nested) outside its range."""
    for f in dataclasses.fields(obj):
        s = setting_of(f)
        if s is None:
            continue
        why = s.problem(getattr(obj, f.name))
        if why is not None:
            raise InputError(f"{s.flag or f.name} {why}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


__all__ = [
    "MAX_THREADS",
    "ROLES",
    "Role",
    "Setting",
    "check",
    "config_key",
    "keys_with_role",
    "nested_type",
    "recorded",
    "setting",
    "setting_of",
    "settings",
    "walk",
]

"""Click options derived from the settings declared on config dataclasses (bench.settings), and back.

``@setting_options(RunOptions)`` adds one option per declared field (nested config dataclasses included), with
its flag, help, default and valid range (click answers exit 2 naming the flag); ``build(RunOptions, kw)``
takes those values out of the command's keyword arguments and makes the dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, TypeVar

import click

from bench.settings import Setting, nested_type, settings

T = TypeVar("T")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class SettingError(click.BadParameter):
    """A value outside a setting's range: the message alone, in the words the library uses."""

    def format_message(self) -> str:
        return self.message


def _ranged(number: type, s: Setting) -> click.ParamType:
    """An IntRange/FloatRange (its range shown in --help) whose error names the flag as bench.settings does."""
    span = click.IntRange if number is int else click.FloatRange
    plain = click.INT if number is int else click.FLOAT

    class Ranged(span):  # type: ignore[valid-type,misc]
        def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
            if s.percent and isinstance(value, str) and value.strip().endswith("%"):
                value = float(value.strip()[:-1]) / 100.0
            parsed = plain.convert(value, param, ctx)
            problem = s.problem(parsed)
            if problem is not None:
                raise SettingError(f"{s.flag} {problem}", ctx=ctx, param=param)
            return parsed

    return Ranged(min=s.minimum, max=s.maximum, min_open=s.above)


def _choice(s: Setting) -> click.ParamType:
    """A click.Choice (its choices shown in --help) whose error names the flag as bench.settings does."""

    class Choice(click.Choice):
        def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
            problem = s.problem(value)
            if problem is not None:
                raise SettingError(f"{s.flag} {problem}", ctx=ctx, param=param)
            return value

    return Choice(s.choices or ())


def _value_type(f: Field[Any], s: Setting) -> Any:
    """The click type of a field, from its annotation (a string under ``from __future__ import annotations``)."""
    annotation = str(f.type)
    if s.choices is not None:
        return _choice(s)
    if s.path:
        return click.Path(path_type=Path)
    number = int if annotation.startswith("int") else float if annotation.startswith("float") else None
    if number is None:
        return None
    if s.minimum is None and s.maximum is None:
        return number
    return _ranged(number, s)


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _split_commas(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def click_option(f: Field[Any], s: Setting, default: Any = MISSING) -> Decorator:
    """The click option of one declared field; ``default`` overrides the field's own (a command's default)."""
    value = _default(f) if default is MISSING else default
    help_text = s.help + (f" [default: {s.default_text}]" if s.default_text else "")
    show = s.show_default and s.default_text is None and value is not None
    if s.negative:
        return click.option(f"{s.flag}/{s.negative}", f.name, default=value, show_default=show, help=help_text)
    if s.is_flag:
        return click.option(s.flag, f.name, is_flag=True, default=bool(value), help=help_text)
    if s.comma_list:
        shown = ",".join(value) if isinstance(value, (tuple, list)) else value
        return click.option(s.flag, f.name, default=shown, show_default=show, callback=_split_commas, help=help_text)
    return click.option(s.flag, f.name, type=_value_type(f, s), default=value, show_default=show, help=help_text)


def setting_options(cls: type, *, exclude: Collection[str] = (), defaults: dict[str, Any] | None = None) -> Decorator:
    """Every flagged setting of ``cls`` as click options, in declaration order; ``exclude`` names fields the
    command declares itself, ``defaults`` overrides a field's default for this command."""
    overrides = defaults or {}
    opts = [
        click_option(f, s, overrides.get(f.name, MISSING)) for f, s in settings(cls) if s.flag and f.name not in exclude
    ]
    return lambda fn: functools.reduce(lambda g, opt: opt(g), reversed(opts), fn)


def build(cls: type[T], kw: dict[str, Any], **given: Any) -> T:
    """``cls`` from the command's keyword arguments: each declared field's value is taken out of ``kw``
    (nested config dataclasses built the same way); ``given`` sets fields the command computed itself."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        inner = nested_type(f)
        if f.name in given:
            values[f.name] = given[f.name]
        elif inner is not None:
            values[f.name] = build(inner, kw)
        elif f.name in kw:
            values[f.name] = kw.pop(f.name)
    return cls(**values)


__all__ = ["SettingError", "build", "click_option", "setting_options"]

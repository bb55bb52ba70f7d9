"""Report text per language: one TOML catalogue per language (``en.toml``, ``th.toml``), same keys."""

from __future__ import annotations

import string
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).parent
LANGUAGES = ("en", "th")


class Catalog:
    """``t("s5.verdict_pass", passing=…)``: the string at section.key with its placeholders filled."""

    def __init__(self, lang: str, strings: dict[str, str]):
        self.lang = lang
        self.strings = strings

    def t(self, key: str, **params: Any) -> str:
        try:
            template = self.strings[key]
        except KeyError:
            raise KeyError(f"report catalogue {self.lang!r} has no string {key!r}") from None
        return template.format(**params) if params else template


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


@lru_cache(maxsize=len(LANGUAGES))
def catalog(lang: str) -> Catalog:
    if lang not in LANGUAGES:
        raise InputError(f"unknown report language {lang!r}; choose from {', '.join(LANGUAGES)}")
    data = tomllib.loads((HERE / f"{lang}.toml").read_text(encoding="utf-8"))
    return Catalog(lang, _flatten(data))


def placeholders(template: str) -> set[str]:
    """Names of the ``{placeholders}`` in a catalogue string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}

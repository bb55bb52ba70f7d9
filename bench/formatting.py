"""How numbers are written for people: one formatter for the console, logs and both report languages."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """Numbers formatted the same everywhere (console, Markdown, both languages); None → "—"."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


__all__ = ["fmt"]

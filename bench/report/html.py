"""A single-file HTML copy of a Markdown report, plots inlined, for people who read reports in a browser.

The Markdown stays the primary output; this converts it with markdown-it-py (CommonMark + tables: already
installed with rich, so no new dependency) and replaces each ``plots/*.png`` link with a base64 data URI, so
the one file can be mailed or attached. No script, no external request.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans Thai", sans-serif; max-width: 76rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.45; color: #1d1d1f; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.88rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d5; padding: 0.25rem 0.5rem; vertical-align: top; }
th { background: #f3f3f6; }
tr:nth-child(even) td { background: #fafafc; }
code { background: #f3f3f6; padding: 0 0.2rem; border-radius: 3px; font-size: 0.9em; }
pre { background: #f3f3f6; padding: 0.6rem; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #e0e0e5; }
h1, h2 { border-bottom: 1px solid #e0e0e5; padding-bottom: 0.2rem; }
"""

_IMG = re.compile(r'<img src="([^"]+\.png)"')


def markdown_to_html(markdown_text: str, base_dir: Path, lang: str = "en", title: str = "bench report") -> str:
    """The whole HTML page; images under ``base_dir`` are inlined (a missing one keeps its link)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)

    def inline(match: re.Match[str]) -> str:
        path = base_dir / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"'

    body = _IMG.sub(inline, body)
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


__all__ = ["markdown_to_html"]

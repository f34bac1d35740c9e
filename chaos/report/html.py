"""The report as one self-contained HTML page: `report.html` beside `report.md`.

The page is `report.md` rendered by markdown-it-py (CommonMark with GFM tables; raw HTML in the
markdown is escaped, so a description or a command line cannot inject markup), with every PNG
the report links inlined as a `data:image/png;base64` URI and a small inline stylesheet. It needs
nothing beside it: it can be mailed, attached to a CI run or opened from anywhere. Links to the
report's own files (the JSON documents) are kept as their text: the page references no file.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.5rem; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _is_local(url: str) -> bool:
    """A reference to a file of the report folder (no scheme, no host, not a fragment)."""
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith("#"))


def _inline(tokens: list[Token], folder: Path) -> None:
    """Images of `folder` become data URIs; links to its files keep only their text (a hidden
    `link_open` hides its `link_close`; links elsewhere stay whole)."""
    opened: list[bool] = []
    for token in tokens:
        if token.children:
            _inline(token.children, folder)
        if token.type == "image":
            src = str(token.attrGet("src") or "")
            path = folder / src
            if _is_local(src) and path.suffix == ".png" and path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                token.attrSet("src", f"data:image/png;base64,{data}")
        elif token.type == "link_open":
            token.hidden = _is_local(str(token.attrGet("href") or ""))
            opened.append(token.hidden)
        elif token.type == "link_close":
            token.hidden = opened.pop() if opened else False


def render_html(markdown_text: str, folder: Path, title: str = "herdlab report") -> str:
    """The page for `markdown_text`, with the PNGs it links (relative to `folder`) inlined."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown_text)
    _inline(tokens, folder)
    body = md.renderer.render(tokens, md.options, {})
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def write_html(folder: Path, markdown_text: str) -> Path:
    """Writes `folder/report.html` for the report's markdown; returns its path."""
    path = folder / "report.html"
    path.write_text(render_html(markdown_text, folder))
    return path

"""The web page's HTML with its first screen filled in on the server.

Why: the page used to arrive empty and be filled by JavaScript, so a plain headless screenshot (or a slow
client) caught a blank gallery and "loading…". The server already knows the index summary and the first
gallery page, so it writes them into the HTML; app.js adopts the rendered tiles and loads further pages.
Every value is HTML-escaped: item ids and paths come from file names, which may contain anything.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Sequence

#: the placeholders in static/index.html that `render_page` fills
SUMMARY_SLOT = '<p id="summary">loading…</p>'
GALLERY_SLOT = '<div id="gallery" class="grid"></div>'
COUNT_SLOT = '<small id="gallery-count"></small>'


def file_name(path: str | None, fallback: str) -> str:
    """The last component of an item's path (what a tile shows); the id when the path is unknown."""
    return Path(path).name if path else fallback


def tile_html(item: dict[str, Any], thumbnail: str) -> str:
    """One gallery tile: thumbnail, the file name as caption, the full path on hover."""
    path = item.get("path") or item["id"]
    name = escape(file_name(item.get("path"), item["id"]))
    return (f'<figure class="thumb" data-id="{escape(item["id"])}" title="{escape(path)}">'
            f'<img src="{escape(thumbnail)}" alt="{name}"><figcaption title="{escape(path)}">{name}'
            f"</figcaption></figure>")


def render_page(template: str, summary: str, items: Sequence[dict[str, Any]], thumbnails: Sequence[str],
                total: int) -> str:
    """``template`` (static/index.html) with the summary line and the first gallery page filled in."""
    tiles = "".join(tile_html(it, th) for it, th in zip(items, thumbnails))
    html = template.replace(SUMMARY_SLOT, f'<p id="summary">{escape(summary)}</p>')
    html = html.replace(GALLERY_SLOT, f'<div id="gallery" class="grid" data-rendered="{len(items)}" '
                                      f'data-total="{total}">{tiles}</div>')
    return html.replace(COUNT_SLOT, f'<small id="gallery-count">({len(items)} of {total})</small>')


def summary_line(info: dict[str, Any]) -> str:
    """The page's header line from `Retriever.describe()` (the same text app.js wrote before)."""
    return f"{info.get('items')} images · model {info.get('model')} · default method {info.get('method')}"

"""Result grids: one row per query — reference, modification text, top-k results with scores.

Written both as a PNG (matplotlib) and as a self-contained HTML page (thumbnails inlined as base64), so a
demo or a search result can be looked at without any server.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

logger = logging.getLogger(__name__)


@dataclass
class ResultRow:
    """One composed query and its ranked results."""

    reference: Image.Image
    text: str
    results: list[tuple[Image.Image, float, str]]  # (thumbnail, score, label)
    target_rank: int | None = None  # 1-based rank of the true target in the full ranking, if known
    correct: list[bool] = field(default_factory=list)  # per shown result: is it a ground truth?


def save_grid_png(rows: Sequence[ResultRow], path: str | Path, thumb: float = 1.3) -> Path:
    """Draw the rows as a matplotlib figure; ground-truth hits get a green frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(len(r.results) for r in rows)
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(thumb * (k + 1), thumb * 1.35 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        ax = axes[i][0]
        ax.imshow(row.reference)
        ax.set_title("reference", fontsize=7)
        ax.set_xlabel(_wrap(row.text, 28), fontsize=6)
        for j in range(k):
            ax = axes[i][j + 1]
            if j < len(row.results):
                img, score, label = row.results[j]
                ax.imshow(img)
                hit = j < len(row.correct) and row.correct[j]
                ax.set_title(f"#{j + 1} {score:.3f}" + (" ✓" if hit else ""), fontsize=7,
                             color="green" if hit else "black")
                for s in ax.spines.values():
                    s.set_edgecolor("limegreen" if hit else "lightgray")
                    s.set_linewidth(3 if hit else 1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _wrap(text: str, width: int) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines[:4])


def _data_uri(img: Image.Image, size: int = 128) -> str:
    im = img.convert("RGB")
    if max(im.size) > size:
        im.thumbnail((size, size))
    elif max(im.size) < size:
        im = im.resize((size, size * im.size[1] // im.size[0]), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def save_grid_html(rows: Sequence[ResultRow], path: str | Path, title: str = "zscir results") -> Path:
    """A self-contained HTML page with the same content as the PNG grid."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td{padding:4px;"
        "vertical-align:top;text-align:center;font-size:12px}img{border:3px solid #ddd;width:96px}"
        "img.hit{border-color:#2a2}td.q{max-width:180px;text-align:left}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1><table>",
    ]
    for row in rows:
        rank = "" if row.target_rank is None else f"<br>target rank: {row.target_rank}"
        parts.append(
            f"<tr><td><img src='{_data_uri(row.reference)}' alt='reference'><br>reference</td>"
            f"<td class='q'><b>{html.escape(row.text)}</b>{rank}</td>"
        )
        for j, (img, score, label) in enumerate(row.results):
            hit = j < len(row.correct) and row.correct[j]
            parts.append(
                f"<td><img class='{'hit' if hit else ''}' src='{_data_uri(img)}' alt='{html.escape(label)}'>"
                f"<br>#{j + 1} {score:.3f}{' ✓' if hit else ''}<br><small>{html.escape(label)}</small></td>"
            )
        parts.append("</tr>")
    parts.append("</table></body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out

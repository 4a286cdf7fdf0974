"""What `zscir data inspect` reads and reports: counts, sample records, problems, and — only when asked
with ``--grid`` — a picture of the samples.

The picture goes exactly where ``--grid`` says (an existing folder: ``DIR/data-inspect.png``), and the path
printed is the one written. An existing file is never replaced: zscir cannot tell a grid it drew earlier
from a picture of yours, so any existing file is refused, before the data is read; the file is created
exclusively, so one appearing meanwhile is not replaced either.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from zscir.data.cells import shorten

#: the file name used when ``--grid`` names an existing folder
GRID_NAME = "data-inspect.png"


def grid_path(grid: Path) -> Path:
    """The file ``--grid`` asks for, refused (one ``error:`` line) unless it can be created new."""
    from matplotlib.backend_bases import FigureCanvasBase

    from zscir.cli.common import check_output_file, fail
    from zscir.index.names import printable

    if grid.is_dir():
        grid = grid / GRID_NAME
    kinds = FigureCanvasBase.get_supported_filetypes()
    if grid.suffix.lower().lstrip(".") not in kinds:
        fail(f"--grid {printable(grid)}: name a picture file ending in one of "
             f"{', '.join('.' + k for k in sorted(kinds))} (or an existing folder)")
    if grid.exists() or grid.is_symlink():
        fail(f"--grid {printable(grid)}: the file exists; zscir never replaces an existing file (it cannot tell "
             "one it drew earlier from yours): choose another name or remove it")
    return check_output_file(grid, "sample grid (--grid)")



def _grid(rows: list[tuple[list[Image.Image], str]], path: Path) -> Path:
    """One row per sample: its image(s) and text (matplotlib, like `zscir.viz.grid`), into a new file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r[0]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.4 * cols, 2.2 * len(rows)), squeeze=False)
    for ax_row, (images, text) in zip(axes, rows):
        for j, ax in enumerate(ax_row):
            ax.axis("off")
            if j < len(images) and images[j] is not None:
                ax.imshow(images[j])
        ax_row[0].set_title(text[:60], fontsize=8, loc="left")
    fig.tight_layout()
    try:
        with open(path, "xb") as f:  # exclusive: never over a file, even one made since the check
            try:
                fig.savefig(f, dpi=80, format=path.suffix.lower().lstrip("."))
            except BaseException:
                path.unlink()  # the half-written file is the one just created here
                raise
    finally:
        plt.close(fig)
    return path


def _problem_lines(problems) -> list[str]:
    out = [f"problems: {problems.summary()}"]
    out += [f"  {shorten(str(p), 300)}" for p in problems.items[:20]]
    if problems.total > 20:
        out.append(f"  ... {problems.total - 20} more")
    return out


def _shard_lines(source, show: int = 20) -> list[str]:
    """Samples read from each WebDataset shard (shards cut short, or smaller than their writer recorded,
    are listed among the problems)."""
    counts = getattr(source, "samples_read", None)
    if not counts:
        return []
    per = [f"{Path(s).name} {n}" for s, n in list(counts.items())[:show]]
    more = f", ... {len(counts) - show} more" if len(counts) > show else ""
    return [f"samples read per shard ({len(counts)} of {len(source.shards)} shards): {', '.join(per)}{more}"]


def inspect_pairs(opts, samples: int, grid: Path | None) -> list[str]:
    data = opts.pair_data(opts.data)
    n, shown, lines, rows = 0, [], [f"source: {data.source.describe()}"], []
    for rec in data.records():
        n += 1
        if len(shown) < samples:
            shown.append(rec)
    lines.append(f"pairs: {n} usable" + (f" (read limit {data.limit})" if data.limit and n >= data.limit else ""))
    lines += _shard_lines(data.source)
    for rec in shown:
        extra = f" (+{len(rec.captions) - 1} variants)" if len(rec.captions) > 1 else ""
        lines.append(f"  {shorten(rec.key)}  {rec.image.size[0]}x{rec.image.size[1]}  {shorten(rec.caption)!r}{extra}")
        rows.append(([rec.image], rec.caption))
    lines += _problem_lines(data.problems)
    if rows and grid is not None:
        lines.append(f"sample grid: {_grid(rows, grid)}")
    return lines


def inspect_triplets(opts, samples: int, grid: Path | None) -> list[str]:
    data = opts.triplet_data(opts.data)
    lines = [f"source: {data.spec}", f"triplets: {len(data)} rows, {data.text_target_count} with a text target only"]
    quality: dict[str, int] = {}
    for r in data.rows:
        quality[r.quality or "-"] = quality.get(r.quality or "-", 0) + 1
    lines.append("quality: " + ", ".join(f"{k} {v}" for k, v in sorted(quality.items())))
    rows = []
    for rec in data:
        if len(rows) >= samples:
            break
        target = shorten(rec.target_id) if rec.target_id else f"[text] {shorten(rec.target_caption)!r}"
        lines.append(f"  {shorten(rec.reference_id)} + {shorten(rec.modification)!r} -> {target}")
        rows.append(([rec.reference_image, rec.target_image], rec.modification))
    lines += _problem_lines(data.problems)
    if rows and grid is not None:
        lines.append(f"sample grid: {_grid(rows, grid)}")
    return lines

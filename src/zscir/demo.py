"""`zscir demo`: the whole loop on the embedded default, in one command.

Builds the world gallery (the held-out CIRR-style part of the world benchmark), runs a handful of composed
queries — one per edit kind where possible — with the best method available for the default model,
prints the top results with scores and whether the true target was found, and writes a result grid as a
PNG and as a self-contained HTML page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

#: methods tried in order when the demo is asked for the "best" one
PREFERRED_METHODS = ("tscir", "fusiondiff", "pic2word", "sum")


@dataclass
class DemoQuery:
    reference: str
    text: str
    target: str
    kind: str
    results: list[tuple[str, float]]
    target_rank: int | None


def pick_method(model: str | None = None, device: str = "cpu") -> tuple[str, Composer]:
    """The first method of `PREFERRED_METHODS` that is registered and loads for the model."""
    from zscir.methods import create_composer, list_methods

    available = {m.name for m in list_methods()}
    errors = []
    for name in PREFERRED_METHODS:
        if name not in available:
            continue
        try:
            return name, create_composer(name, model=model, device=device)
        except (FileNotFoundError, OSError, ValueError) as e:  # e.g. no shipped checkpoint
            errors.append(f"{name}: {e}")
            logger.info("demo: method %s unavailable (%s)", name, e)
    raise RuntimeError("no method could be loaded: " + "; ".join(errors))


def _choose_queries(queries, kinds: dict[int, str], n: int) -> list:
    """Up to ``n`` queries, round-robin over edit kinds so the demo shows variety."""
    by_kind: dict[str, list] = {}
    for q in queries:
        by_kind.setdefault(kinds.get(q.pairid, "?"), []).append(q)
    chosen, i = [], 0
    while len(chosen) < n and any(i < len(v) for v in by_kind.values()):
        for k in sorted(by_kind):
            if i < len(by_kind[k]) and len(chosen) < n:
                chosen.append(by_kind[k][i])
        i += 1
    return chosen


def run_demo(
    out_dir: str | Path = "zscir-demo",
    method: str = "auto",
    model: str | None = None,
    n_queries: int = 8,
    k: int = 5,
    world_seed: int = 0,
    device: str = "cpu",
    world_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the queries with their results and the paths written."""
    import json

    from zscir.eval.benchmarks.cirr import load_cirr
    from zscir.eval.world import ensure_world_benchmark
    from zscir.index import exact_topk
    from zscir.methods import create_composer
    from zscir.viz.grid import ResultRow, save_grid_html, save_grid_png

    if method == "auto":
        method, composer = pick_method(model, device)
    else:
        composer = create_composer(method, model=model, device=device)
    root = ensure_world_benchmark(world_seed, **(world_overrides or {}))
    data = load_cirr(root / "cirr", "val")
    info = json.loads((root / "world.json").read_text())
    kinds = {int(k): v.get("kind", "?") for k, v in info.get("cirr", {}).items()}
    queries = _choose_queries(data.queries, kinds, n_queries)

    def load(name: str) -> Image.Image:
        return Image.open(data.gallery[data.index_of(name)].path).convert("RGB")

    gallery_imgs = [Image.open(g.path).convert("RGB") for g in data.gallery]
    with torch.no_grad():
        gallery = torch.cat([composer.encode_gallery(gallery_imgs[i : i + 256]) for i in range(0, len(gallery_imgs), 256)])
        q = composer.encode_queries([load(x.reference) for x in queries], [x.caption for x in queries])
    refs = [data.index_of(x.reference) for x in queries]
    scores, idx = exact_topk(q, gallery, len(gallery), exclude=refs)

    demo_queries, rows = [], []
    for qi, x in enumerate(queries):
        ranked = [data.gallery[j].id for j in idx[qi] if j >= 0]
        rank = ranked.index(x.target) + 1 if x.target in ranked else None
        top = [(str(ranked[j]), float(scores[qi, j])) for j in range(k)]
        demo_queries.append(DemoQuery(x.reference, x.caption, str(x.target), kinds.get(x.pairid, "?"), top, rank))
        rows.append(ResultRow(load(x.reference), x.caption,
                              [(gallery_imgs[int(idx[qi, j])], s, n) for j, (n, s) in enumerate(top)],
                              target_rank=rank, correct=[n == x.target for n, _ in top]))
    out = Path(out_dir)
    png = save_grid_png(rows, out / "results.png")
    page = save_grid_html(rows, out / "results.html", title=f"zscir demo — method {method} on world-clip")
    hits = sum(1 for d in demo_queries if d.target_rank is not None and d.target_rank <= k)
    return {"method": method, "queries": demo_queries, "png": png, "html": page, "hits": hits, "k": k,
            "gallery_size": len(gallery_imgs)}

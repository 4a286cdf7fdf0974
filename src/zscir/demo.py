"""`zscir demo`: the whole loop on the embedded default, in one command.

Builds the world gallery (the held-out CIRR-style part of the world benchmark), runs a handful of composed
queries — one per edit kind where possible — with the best method available for the default model,
prints the top results with scores and whether the true target was found, and writes a result grid as a
PNG and as a self-contained HTML page.

``real=True`` (`zscir demo --real`) does the same on real pictures: a small gallery of the real benchmark
(emoji and Tux Paint stamps rendered from their Debian packages, only concept families held out of every
training set) with the shipped real model ``lit-clipart`` (the ``[real]`` extra).
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
#: the method measured best for a built-in model where it is not the first of `PREFERRED_METHODS`: on the
#: real benchmark, weighted-sum fusion beats the trained methods with lit-clipart (docs/RESULTS.md)
BEST_METHOD = {"lit-clipart": "sum"}
#: written first into the output folder, listing the demo's files: a later run replaces only those, and a
#: folder without it that holds anything is refused (`zscir.data.outdir`), so a user's files are never touched
DEMO_MARKER = ".zscir-demo.json"
DEMO_FILES = ("results.png", "results.html")
#: the real-picture demo: its model and how many held-out concept families make its gallery
REAL_MODEL = "lit-clipart"
REAL_DEMO_FAMILIES = 24


@dataclass
class DemoQuery:
    reference: str
    text: str
    target: str
    kind: str
    results: list[tuple[str, float]]
    target_rank: int | None


def pick_method(model: str | None = None, device: str = "cpu") -> tuple[str, Composer]:
    """`BEST_METHOD` of the model, else the first of `PREFERRED_METHODS` that is registered and loads for it."""
    from zscir.methods import create_composer, list_methods

    if model in BEST_METHOD:
        return BEST_METHOD[model], create_composer(BEST_METHOD[model], model=model, device=device)
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
    # a user mistake such as an unknown --model fails every method the same way: say it once
    reasons = list(dict.fromkeys(e.split(": ", 1)[1] for e in errors))
    raise ValueError("no method could be loaded: " + ("; ".join(errors) if len(reasons) > 1 else reasons[0]))


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


def real_demo_gallery(n_families: int = REAL_DEMO_FAMILIES, progress: bool = False, sources=None) -> Path:
    """Build (once, into the cache) a small real benchmark of ``n_families`` test families of the full one.

    The families are spread over those of the full benchmark's test queries (held out of lit-clipart's training), so
    the gallery holds every variant of each (skin tones, genders, tints): the queries must find the exact one.
    ``sources`` (`zscir.data.real.sources.RealSources`) says where the Debian packages' files are; raises
    `BenchmarkBuildError`, naming the packages and the options, when they are missing.
    """
    from zscir.cache import cache_dir
    from zscir.data.real.benchmark import (BENCHMARK_VERSION, RealBenchmarkConfig, build_benchmark, built_from,
                                           gallery_items, is_complete, plan)

    from zscir.data.real.sources import V2_SOURCES

    # the Debian packages only (Noto emoji + Tux Paint), as the demo always read: the same gallery on every
    # machine, whatever npm emoji sets are installed, and the edit kinds lit-clipart was built for
    cfg = RealBenchmarkConfig(sources=V2_SOURCES)
    root = cache_dir("real") / f"demo-{BENCHMARK_VERSION}-{n_families}"
    if not (is_complete(root) and built_from(root, sources)):
        _, queries = plan(cfg, gallery_items(sources))
        test = sorted({q.family for q in queries["test"]})  # held-out families that have edit queries
        step = max(1, len(test) // n_families)
        cfg = RealBenchmarkConfig(families=tuple(test[::step][:n_families]), sources=V2_SOURCES)
        build_benchmark(root, cfg, progress=progress, sources=sources)
    return root


def run_demo(
    out_dir: str | Path = "zscir-demo",
    method: str = "auto",
    model: str | None = None,
    n_queries: int = 8,
    k: int = 5,
    world_seed: int = 0,
    device: str = "cpu",
    world_overrides: dict[str, Any] | None = None,
    real: bool = False,
    sources=None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the demo; returns the queries with their results and the paths written.

    ``n_queries`` and ``k`` must be at least 1 and ``k`` at most the gallery size - 1 (the reference is left
    out): a ``ValueError`` before any image is encoded, rather than an ``IndexError`` after (``-k 100000``)
    or an empty result grid (``-k 0``).
    ``real``: on real pictures (``sources``: where the Debian packages' files are, see `real_demo_gallery`).
    """
    import json

    from zscir.data.outdir import check_out, prepare_out, start_marker
    from zscir.eval.benchmarks.cirr import load_cirr
    from zscir.data.world.cache import ensure_world_benchmark
    from zscir.index import exact_topk
    from zscir.methods import create_composer
    from zscir.viz.grid import ResultRow, save_grid_html, save_grid_png

    for name, value in (("n_queries", n_queries), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"demo: {name} must be a positive integer, got {value!r}")
    out = Path(out_dir)
    check_out(out, DEMO_MARKER, "zscir demo")  # before any work: a user's folder is refused at once
    if real:
        model = model or REAL_MODEL
        root = real_demo_gallery(progress=progress, sources=sources) / "test"  # before the model: packages first
    if method == "auto":
        method, composer = pick_method(model, device)
    else:
        composer = create_composer(method, model=model, device=device)
    if real:
        data = load_cirr(root, "val")
        info = json.loads((root / "meta.json").read_text())
    else:
        root = ensure_world_benchmark(world_seed, progress=progress, **(world_overrides or {}))
        data = load_cirr(root / "cirr", "val")
        info = json.loads((root / "world.json").read_text())
    kinds = {int(k): v.get("kind", "?") for k, v in info.get("cirr", {}).items()}
    queries = _choose_queries(data.queries, kinds, n_queries)
    if k > len(data.gallery) - 1:  # the reference itself is left out of its own ranking
        raise ValueError(f"demo: -k {k} is more than the gallery can show: {len(data.gallery)} images, the "
                         f"reference left out, so k is at most {len(data.gallery) - 1}")
    if not queries:
        raise ValueError(f"demo: the gallery {root} has no composed queries")

    def open_rgb(path) -> Image.Image:
        # real clip-art has transparency: composite it on white (as the model's preprocessing does) rather
        # than letting convert("RGB") expose whatever colour the transparent pixels store
        from zscir.backbones.lit import flatten_alpha

        with Image.open(path) as im:
            im.load()
            return flatten_alpha(im)

    def load(name: str) -> Image.Image:
        return open_rgb(data.gallery[data.index_of(name)].path)

    gallery_imgs = [open_rgb(g.path) for g in data.gallery]
    from tqdm.auto import tqdm

    with torch.no_grad():
        gallery = torch.cat([composer.encode_gallery(gallery_imgs[i : i + 256]) for i in
                             tqdm(range(0, len(gallery_imgs), 256), desc="encode gallery", unit="batch",
                                  disable=not progress, leave=False)])
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
    prepare_out(out, DEMO_MARKER, "zscir demo", DEMO_FILES)
    rec = start_marker(out, DEMO_MARKER, "zscir demo", [], files=DEMO_FILES)
    png = save_grid_png(rows, out / DEMO_FILES[0])
    page = save_grid_html(rows, out / DEMO_FILES[1],
                          title=f"zscir demo — method {method} on {model or 'world-clip'}")
    for name in DEMO_FILES:
        rec.done(name)
    rec.close()
    hits = sum(1 for d in demo_queries if d.target_rank is not None and d.target_rank <= k)
    return {"method": method, "queries": demo_queries, "png": png, "html": page, "hits": hits, "k": k,
            "gallery_size": len(gallery_imgs)}

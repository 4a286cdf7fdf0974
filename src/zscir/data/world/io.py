"""Writers: the benchmark in the *official* CIRR/CIRCO annotation formats, and JSONL dumps.

Writing the world exactly like the real files (``cap.rc2.val.json``, ``split.rc2.val.json``,
CIRCO ``val.json``) means the loaders, metrics and submission code used for the real benchmarks
run unchanged on the world.  World-only information (edit kind, held-out flag) goes into a
separate manifest, ``world.json``, keyed by pairid / CIRCO id.  ``world.json`` is written last and
doubles as a cache stamp: :func:`ensure_benchmark` skips all work when it matches the config.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from .benchmark import WorldBenchmark, generate_benchmark
from .config import WORLD_VERSION, WorldConfig
from .pairs import Pair
from .render import render
from .triplets import Triplet

logger = logging.getLogger(__name__)

CIRR_CAPTIONS = Path("cirr/captions/cap.rc2.val.json")
CIRR_SPLIT = Path("cirr/image_splits/split.rc2.val.json")
CIRR_IMAGES = Path("cirr/dev")
CIRCO_ANNOTATIONS = Path("circo/annotations/val.json")
CIRCO_IMAGES = Path("circo/unlabeled2017")
MANIFEST = Path("world.json")


def _write_json(path: Path, obj: Any) -> None:
    """Atomic write (tmp + rename) so an interrupted run never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def cirr_annotations(bench: WorldBenchmark) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(cap.rc2.val.json entries, split.rc2.val.json mapping).  ``reference_rank`` and
    ``target_rank`` are the positions of reference and target in ``members``."""
    names = bench.cirr_names
    members = {s.id: [names[m.key()] for m in s.members] for s in bench.cirr_sets}
    caps = []
    for q in bench.cirr_queries:
        ref, tgt = names[q.reference.key()], names[q.target.key()]
        mem = members[q.set_id]
        caps.append({"pairid": q.pairid, "reference": ref, "target_hard": tgt,
                     "target_soft": {tgt: 1.0}, "caption": q.caption,
                     "img_set": {"id": q.set_id, "members": mem,
                                 "reference_rank": mem.index(ref), "target_rank": mem.index(tgt)}})
    split = {n: f"./dev/{n}.png" for n in sorted(bench.cirr_images())}
    return caps, split


def circo_annotations(bench: WorldBenchmark) -> list[dict[str, Any]]:
    """CIRCO val.json entries (``target_img_id == gt_img_ids[0]``)."""
    ids = bench.circo_ids
    out = []
    for q in bench.circo_queries:
        gts = [ids[s.key()] for s in q.gts]
        out.append({"reference_img_id": ids[q.reference.key()], "target_img_id": gts[0],
                    "relative_caption": q.text, "shared_concept": q.shared_concept,
                    "gt_img_ids": gts, "id": q.id, "semantic_aspects": [q.spec.kind]})
    return out


def manifest(bench: WorldBenchmark) -> dict[str, Any]:
    cfg = bench.config
    return {
        "world_version": WORLD_VERSION, "seed": cfg.seed, "config": cfg.to_dict(),
        "cache_key": cfg.cache_key(),
        "counts": {"cirr_sets": len(bench.cirr_sets), "cirr_queries": len(bench.cirr_queries),
                   "cirr_images": len(bench.cirr_names), "circo_queries": len(bench.circo_queries),
                   "circo_images": len(bench.circo_scenes)},
        "cirr": {str(q.pairid): {"kind": q.spec.kind, "heldout": q.heldout,
                                 "spec": q.spec.to_dict()} for q in bench.cirr_queries},
        "circo": {str(q.id): {"kind": q.spec.kind, "heldout": q.heldout, "n_gt": len(q.gts),
                              "spec": q.spec.to_dict()} for q in bench.circo_queries},
        "scenes": {"cirr": {n: s.to_dict() for n, s in bench.cirr_images().items()},
                   "circo": {str(i): s.to_dict() for i, s in bench.circo_images().items()}},
        "stats": bench.stats,
    }


def is_cached(cfg: WorldConfig, root: Path) -> bool:
    """True if ``root`` already holds the benchmark of ``cfg`` (same config and world version)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("cache_key") == cfg.cache_key()
    except (OSError, json.JSONDecodeError):
        return False


def write_benchmark(bench: WorldBenchmark, root: Path, progress: bool = False) -> dict[str, Any]:
    """Write annotations, PNG images and ``world.json`` under ``root``; returns the manifest.
    A no-op (returning the existing manifest) when ``root`` already matches the config. ``progress``: a bar
    with an ETA over the images (4,700 of them by default, some 20 s)."""
    root = Path(root)
    if is_cached(bench.config, root):
        logger.info("world benchmark at %s is up to date", root)
        return json.loads((root / MANIFEST).read_text())
    size = bench.config.image_size
    caps, split = cirr_annotations(bench)
    from tqdm.auto import tqdm

    cirr, circo = bench.cirr_images(), bench.circo_images()
    with tqdm(total=len(cirr) + len(circo), desc="write world benchmark", unit="img", disable=not progress) as bar:
        for name, scene in cirr.items():
            _save_png(scene, size, root / CIRR_IMAGES / f"{name}.png")
            bar.update()
        for i, scene in circo.items():
            _save_png(scene, size, root / CIRCO_IMAGES / f"{i:012d}.png")
            bar.update()
    _write_json(root / CIRR_CAPTIONS, caps)
    _write_json(root / CIRR_SPLIT, split)
    _write_json(root / CIRCO_ANNOTATIONS, circo_annotations(bench))
    man = manifest(bench)
    _write_json(root / MANIFEST, man)  # last: marks the directory complete
    logger.info("wrote world benchmark to %s", root)
    return man


def _save_png(scene, size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    render(scene, size).save(tmp, format="PNG")
    os.replace(tmp, path)


def ensure_benchmark(cfg: WorldConfig, root: Path) -> dict[str, Any]:
    """Generate and write the benchmark of ``cfg`` unless ``root`` already has it."""
    if is_cached(cfg, Path(root)):
        return json.loads((Path(root) / MANIFEST).read_text())
    return write_benchmark(generate_benchmark(cfg), Path(root))


def _write_jsonl(rows: Iterable[dict[str, Any]], path: Path, header: dict[str, Any]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w") as f:
        f.write(json.dumps({"__header__": header}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_pairs_jsonl(pairs: Iterable[Pair], path: Path, cfg: WorldConfig | None = None) -> int:
    """One pair per line (first line: a header with world_version and config). Returns count."""
    header = {"world_version": WORLD_VERSION, "config": cfg.to_dict() if cfg else None}
    return _write_jsonl((p.to_dict() for p in pairs), path, header)


def write_triplets_jsonl(triplets: Iterable[Triplet], path: Path,
                         cfg: WorldConfig | None = None) -> int:
    """One triplet per line (first line: a header). Images are re-rendered from the scenes."""
    header = {"world_version": WORLD_VERSION, "config": cfg.to_dict() if cfg else None}
    return _write_jsonl((t.to_dict() for t in triplets), path, header)


def read_jsonl(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, rows) of a file written by the writers above."""
    lines = Path(path).read_text().splitlines()
    header = json.loads(lines[0])["__header__"]
    return header, [json.loads(line) for line in lines[1:] if line]


def read_pairs_jsonl(path: Path) -> list[Pair]:
    return [Pair.from_dict(d) for d in read_jsonl(path)[1]]


def read_triplets_jsonl(path: Path) -> list[Triplet]:
    return [Triplet.from_dict(d) for d in read_jsonl(path)[1]]

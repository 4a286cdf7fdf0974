"""CIRR annotations (rc2 release): queries, image sets and the split's image list.

Layout (``--data-root R``), as distributed by the CIRR repository:

* ``R/captions/cap.rc2.{val,test1}.json`` — list of ``{pairid, reference, caption, img_set: {members},
  target_hard, ...}`` (``test1`` entries carry no target);
* ``R/image_splits/split.rc2.{val,test1}.json`` — ``{name: "./dev/<name>.png"}``;
* images wherever those relative paths point, relative to ``R``.

The common nesting ``R/cirr/{captions,image_splits}`` with images under ``R/dev``, ``R/test1`` (the CIRR
repository's own layout, also SEARLE's) is accepted too; relative image paths are then resolved against
``R`` first and ``R/cirr`` second.

The gallery is every image of the split in the order of the split file (SEARLE's ``CIRRDataset`` order),
so gallery indices are stable across runs and the feature cache can key on the list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import (BenchmarkDataError, DirectoryListing, GalleryImage, as_int_id, find_annotation_dir, read_json,
                     require, require_unique)

logger = logging.getLogger(__name__)

__all__ = ["CIRR_SPLITS", "CirrQuery", "CirrData", "normalize_cirr_split", "load_cirr"]

#: splits with public captions (train is not used by zero-shot methods)
CIRR_SPLITS = ("val", "test1")
_SPLIT_ALIASES = {"test": "test1", "dev": "val"}
_NESTINGS = ("cirr",)


@dataclass(frozen=True)
class CirrQuery:
    """One CIRR query. ``target`` is ``target_hard`` (``None`` on test1); ``members`` is ``img_set.members``."""

    pairid: int
    reference: str
    caption: str
    members: tuple[str, ...]
    target: str | None = None


@dataclass
class CirrData:
    """A loaded CIRR split: queries plus the gallery (every image of the split)."""

    split: str
    root: Path
    annotation_dir: Path
    queries: list[CirrQuery]
    gallery: list[GalleryImage]
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def index_of(self, name: str) -> int:
        """Gallery index of an image name."""
        if not self._index:
            self._index = {str(im.id): i for i, im in enumerate(self.gallery)}
        return self._index[name]

    @property
    def has_targets(self) -> bool:
        return all(q.target is not None for q in self.queries)


def normalize_cirr_split(split: str) -> str:
    """Map user spellings to CIRR's file names ("test" -> "test1", as SEARLE does)."""
    s = _SPLIT_ALIASES.get(split.lower(), split.lower())
    if s not in CIRR_SPLITS:
        raise ValueError(f"unknown CIRR split {split!r}; expected one of {', '.join(CIRR_SPLITS)}")
    return s


def _parse_query(entry: Any, i: int, path: Path, names: dict[str, str], with_target: bool) -> CirrQuery:
    require(isinstance(entry, dict), path, f"entry {i} is not an object; expected CIRR caption entries")
    for key in ("pairid", "reference", "caption", "img_set"):
        require(key in entry, path, f"entry {i} lacks {key!r}; expected pairid, reference, caption, img_set")
    members = entry["img_set"].get("members") if isinstance(entry["img_set"], dict) else None
    require(isinstance(members, list) and all(isinstance(m, str) for m in members), path,
            f"entry {i}: img_set.members must be a list of image names")
    require(isinstance(entry["caption"], str), path, f"entry {i}: caption must be a string")
    require(isinstance(entry["reference"], str), path, f"entry {i}: reference must be an image name (a string)")
    pairid = as_int_id(entry["pairid"], path, f"entry {i}: pairid")
    target = None
    if with_target:
        require(isinstance(entry.get("target_hard"), str), path,
                f"entry {i} lacks 'target_hard' as an image name (needed on the val split)")
        target = entry["target_hard"]
    for role, name in [("reference", entry["reference"]), ("target_hard", target)] + [
        ("img_set member", m) for m in members
    ]:
        if name is not None and name not in names:
            raise BenchmarkDataError(
                f"{path}: entry {i} ({role}) names image {name!r}, which is not in the split's image list"
            )
    return CirrQuery(pairid, str(entry["reference"]), entry["caption"], tuple(members), target)


def _pick_image_base(candidates: list[Path], relpaths: list[str]) -> Path:
    """The candidate folder under which a sample of the split's relative paths exists (most hits wins)."""
    listing = DirectoryListing()
    sample = relpaths[:20]
    scored = [(sum(listing.exists(c / r) for r in sample), -i, c) for i, c in enumerate(candidates)]
    hits, _, best = max(scored)
    if hits == 0:
        logger.debug("no CIRR image found under %s; image checks will report the first candidate", candidates)
        return candidates[0]
    return best


def load_cirr(data_root: Path | str, split: str = "val") -> CirrData:
    """Load and validate a CIRR split's annotations (images are checked later, only those used)."""
    split = normalize_cirr_split(split)
    root = Path(data_root).expanduser()
    cap_rel = f"captions/cap.rc2.{split}.json"
    split_rel = f"image_splits/split.rc2.{split}.json"
    ann_dir = find_annotation_dir(root, [cap_rel, split_rel], benchmark="CIRR", nestings=_NESTINGS)

    split_path = ann_dir / split_rel
    mapping = read_json(split_path, 'a CIRR image split: an object {"<name>": "./<split>/<name>.png"}')
    require(isinstance(mapping, dict) and mapping, split_path,
            'expected a non-empty object {"<name>": "./<split>/<name>.png"}')
    require(all(isinstance(v, str) for v in mapping.values()), split_path, "image paths must be strings")

    cap_path = ann_dir / cap_rel
    entries = read_json(cap_path, "CIRR captions: a list of {pairid, reference, caption, img_set, ...}")
    require(isinstance(entries, list) and entries, cap_path, "expected a non-empty list of caption entries")
    with_target = split != "test1"
    queries = [_parse_query(e, i, cap_path, mapping, with_target) for i, e in enumerate(entries)]
    require_unique([q.pairid for q in queries], cap_path, "pairids")

    relpaths = [p[2:] if p.startswith("./") else p for p in mapping.values()]
    bases = [root] if ann_dir == root else [root, ann_dir]
    base = _pick_image_base(bases, relpaths)
    gallery = [GalleryImage(name, base / rel, rel) for name, rel in zip(mapping.keys(), relpaths)]
    logger.info("CIRR %s: %d queries, %d gallery images (annotations %s, images %s)",
                split, len(queries), len(gallery), ann_dir, base)
    return CirrData(split, root, ann_dir, queries, gallery)

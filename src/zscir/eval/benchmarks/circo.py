"""CIRCO annotations and its COCO 2017 unlabeled gallery.

Layout (``--data-root R``): ``R/annotations/{val,test}.json`` (lists of ``{id, reference_img_id,
relative_caption, shared_concept, target_img_id, gt_img_ids, semantic_aspects}``; test entries have no
targets) and the COCO 2017 unlabeled images as ``R/unlabeled2017/<12-digit id>.jpg`` — or
``R/COCO2017_unlabeled/unlabeled2017/`` (SEARLE's and MagicLens' layout).

The gallery is, like in SEARLE and MagicLens, the image list of
``R/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`` (123,403 images) when that file is
present. Without it the gallery is every ``<digits>.{jpg,jpeg,png}`` file in the image folder, sorted by id:
this is how the project's procedural world benchmark (PNG images, no COCO info file) is read, and gives
the same gallery for a complete COCO download.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import (BenchmarkDataError, DirectoryListing, GalleryImage, as_int_id, find_annotation_dir, read_json,
                     require, require_unique)

logger = logging.getLogger(__name__)

__all__ = ["CIRCO_SPLITS", "SEMANTIC_ASPECTS", "CircoQuery", "CircoData", "load_circo", "circo_file_stem"]

CIRCO_SPLITS = ("val", "test")
#: the aspect order of CIRCO's official ``evaluation.py``
SEMANTIC_ASPECTS = (
    "cardinality",
    "addition",
    "negation",
    "direct_addressing",
    "compare_change",
    "comparative_statement",
    "statement_with_conjunction",
    "spatial_relations_background",
    "viewpoint",
)
_IMAGE_DIRS = ("unlabeled2017", "COCO2017_unlabeled/unlabeled2017")
_INFO_FILES = (
    "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
    "annotations/image_info_unlabeled2017.json",
)
_IMAGE_RE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
_EXT_PREFERENCE = {"jpg": 0, "jpeg": 1, "png": 2}


def circo_file_stem(image_id: int) -> str:
    """COCO's file stem: the id zero-padded to 12 digits."""
    return f"{int(image_id):012d}"


@dataclass(frozen=True)
class CircoQuery:
    """One CIRCO query; ``target``/``gt`` are empty on test. ``gt[0] == target`` on val."""

    id: int
    reference: int
    caption: str
    shared_concept: str | None = None
    target: int | None = None
    gt: tuple[int, ...] = ()
    semantic_aspects: tuple[str, ...] = ()


@dataclass
class CircoData:
    split: str
    root: Path
    queries: list[CircoQuery]
    gallery: list[GalleryImage]
    gallery_source: str
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def _ensure_index(self) -> dict[int, int]:
        if not self._index:
            self._index = {int(im.id): i for i, im in enumerate(self.gallery)}
        return self._index

    def index_of(self, image_id: int) -> int:
        """Gallery index of a COCO image id."""
        return self._ensure_index()[int(image_id)]

    def contains(self, image_id: int) -> bool:
        return int(image_id) in self._ensure_index()

    @property
    def has_targets(self) -> bool:
        return all(q.target is not None for q in self.queries)


def _parse_query(entry: Any, i: int, path: Path, with_target: bool) -> CircoQuery:
    require(isinstance(entry, dict), path, f"entry {i} is not an object; expected CIRCO query entries")
    for key in ("id", "reference_img_id", "relative_caption"):
        require(key in entry, path, f"entry {i} lacks {key!r}; expected id, reference_img_id, relative_caption, ...")
    require(isinstance(entry["relative_caption"], str), path, f"entry {i}: relative_caption must be a string")
    shared = entry.get("shared_concept")
    require(shared is None or isinstance(shared, str), path, f"entry {i}: shared_concept must be a string")
    qid = as_int_id(entry["id"], path, f"entry {i}: id")
    ref = as_int_id(entry["reference_img_id"], path, f"entry {i}: reference_img_id")
    target, gt, aspects = None, (), ()
    if with_target:
        require("target_img_id" in entry and isinstance(entry.get("gt_img_ids"), list) and entry["gt_img_ids"],
                path, f"entry {i} lacks target_img_id / a non-empty gt_img_ids list (needed on val)")
        target = as_int_id(entry["target_img_id"], path, f"entry {i}: target_img_id")
        gt = tuple(as_int_id(g, path, f"entry {i}: gt_img_ids item") for g in entry["gt_img_ids"])
        require(target in gt, path, f"entry {i}: target_img_id {target} is not among gt_img_ids")
        raw_aspects = entry.get("semantic_aspects", [])
        require(isinstance(raw_aspects, list) and all(isinstance(a, str) for a in raw_aspects), path,
                f"entry {i}: semantic_aspects must be a list of strings")
        aspects = tuple(raw_aspects)
    return CircoQuery(qid, ref, entry["relative_caption"], shared, target, gt, aspects)


def _gallery_from_info(info_path: Path, image_dir: Path, root: Path) -> list[GalleryImage]:
    info = read_json(info_path, 'the COCO 2017 unlabeled image info: {"images": [{"id", "file_name"}, ...]}')
    images = info.get("images") if isinstance(info, dict) else None
    require(isinstance(images, list) and images, info_path, 'expected {"images": [{"id", "file_name"}, ...]}')
    listing = DirectoryListing()
    rel_dir = image_dir.relative_to(root).as_posix()
    out = []
    for i, im in enumerate(images):
        require(isinstance(im, dict) and "id" in im and isinstance(im.get("file_name"), str), info_path,
                f"images[{i}] lacks id / file_name")
        img_id = as_int_id(im["id"], info_path, f"images[{i}].id")
        name = im["file_name"]
        if not listing.exists(image_dir / name):  # tolerate a PNG copy of a JPEG-named set
            alt = listing.find(image_dir, Path(name).stem, (".png", ".jpg", ".jpeg"))
            name = alt.name if alt is not None else name
        out.append(GalleryImage(img_id, image_dir / name, f"{rel_dir}/{name}"))
    return out


def _gallery_from_directory(image_dir: Path, root: Path) -> list[GalleryImage]:
    listing = DirectoryListing()
    chosen: dict[int, str] = {}
    for name in listing.names(image_dir):
        m = _IMAGE_RE.match(name)
        if not m:
            continue
        img_id = int(m.group(1))
        prev = chosen.get(img_id)
        if prev is None or _EXT_PREFERENCE[m.group(2).lower()] < _EXT_PREFERENCE[prev.rsplit(".", 1)[1].lower()]:
            if prev is not None:
                logger.warning("CIRCO image id %d exists as %s and %s; using %s", img_id, prev, name, name)
            chosen[img_id] = name
    rel_dir = image_dir.relative_to(root).as_posix()
    return [GalleryImage(i, image_dir / chosen[i], f"{rel_dir}/{chosen[i]}") for i in sorted(chosen)]


def load_circo(data_root: Path | str, split: str = "val", *, with_gallery: bool = True) -> CircoData:
    """Load and validate CIRCO annotations and (unless ``with_gallery=False``) list the gallery.

    With the gallery, every query's reference image must be a gallery image (it is in CIRCO and in the
    world benchmark); missing ground-truth images are reported when the evaluation checks its images.
    """
    split = split.lower()
    if split not in CIRCO_SPLITS:
        raise ValueError(f"unknown CIRCO split {split!r}; expected one of {', '.join(CIRCO_SPLITS)}")
    root = Path(data_root).expanduser()
    ann_rel = f"annotations/{split}.json"
    root = find_annotation_dir(root, [ann_rel], benchmark="CIRCO", nestings=("circo", "CIRCO"))
    ann_path = root / ann_rel
    entries = read_json(ann_path, "CIRCO annotations: a list of {id, reference_img_id, relative_caption, ...}")
    require(isinstance(entries, list) and entries, ann_path, "expected a non-empty list of query entries")
    queries = [_parse_query(e, i, ann_path, split == "val") for i, e in enumerate(entries)]
    require_unique([q.id for q in queries], ann_path, "query ids")

    gallery: list[GalleryImage] = []
    source = "none"
    if with_gallery:
        image_dir = next((root / d for d in _IMAGE_DIRS if (root / d).is_dir()), None)
        if image_dir is None:
            raise BenchmarkDataError(
                f"{root / _IMAGE_DIRS[0]}: CIRCO image folder not found; expected the COCO 2017 unlabeled images "
                f"as {' or '.join(str(root / d) + '/<12-digit id>.jpg' for d in _IMAGE_DIRS)}"
            )
        info_path = next((root / f for f in _INFO_FILES if (root / f).is_file()), None)
        if info_path is not None:
            gallery, source = _gallery_from_info(info_path, image_dir, root), "coco_info"
        else:
            gallery, source = _gallery_from_directory(image_dir, root), "directory"
            require(bool(gallery), image_dir, "no <id>.jpg / <id>.png images found; expected the COCO 2017 "
                                              "unlabeled images named by their 12-digit id")
        data = CircoData(split, root, queries, gallery, source)
        for q in queries:
            if not data.contains(q.reference):
                raise BenchmarkDataError(
                    f"{image_dir / (circo_file_stem(q.reference) + '.jpg')}: reference image of query {q.id} is not "
                    f"in the gallery ({source}); expected every reference image among the unlabeled2017 images"
                )
        # a ground-truth image missing from the gallery could never be retrieved: mAP would be silently low
        missing_gt = [(q.id, g) for q in queries for g in q.gt if not data.contains(g)]
        if missing_gt:
            qid, g = missing_gt[0]
            shown = ", ".join(f"{gid} (query {q_})" for q_, gid in missing_gt[:5])
            raise BenchmarkDataError(
                f"{image_dir / (circo_file_stem(g) + '.jpg')}: {len(missing_gt)} ground-truth image(s) are not in "
                f"the gallery ({source}): {shown}; expected every gt_img_ids image among the unlabeled2017 images"
            )
        logger.info("CIRCO %s: %d queries, %d gallery images (%s)", split, len(queries), len(gallery), source)
        return data
    return CircoData(split, root, queries, gallery, source)

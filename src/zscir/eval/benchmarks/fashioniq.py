"""FashionIQ annotations and the caption-joining modes used by the published zero-shot methods.

Layout (``--data-root R``): ``R/captions/cap.{dress,shirt,toptee}.{val,test}.json`` (lists of
``{candidate, target, captions: [c1, c2]}``), ``R/image_splits/split.{cat}.{split}.json`` (lists of ASINs),
images ``R/images/<asin>.{png,jpg}`` — both extensions occur in the wild (the original crawl is JPEG,
the widely shared re-hosted copy is PNG). The nestings ``R/fashionIQ_dataset/`` and ``R/fashion-iq/``
(SEARLE / Pic2Word READMEs) are accepted too.

Each FashionIQ query has two relative captions written by different annotators; how they become one
query text (the ``caption_mode`` protocol flag) is `zscir.data.fashioniq_captions`, which the triplet
readers of the data layer share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .layout import DirectoryListing, GalleryImage, find_annotation_dir, read_json, require

logger = logging.getLogger(__name__)

__all__ = [
    "FIQ_CATEGORIES",
    "FIQ_SPLITS",
    "IMAGE_EXTENSIONS",
    "FashionIQQuery",
    "FashionIQCategory",
    "FashionIQData",
    "load_fashioniq",
]

FIQ_CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("val", "test")
#: tried in this order when resolving ``images/<asin>``
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_NESTINGS = ("fashionIQ_dataset", "fashion-iq", "fashioniq")


@dataclass(frozen=True)
class FashionIQQuery:
    """One FashionIQ query: reference ``candidate``, its two ``captions``, ``target`` (``None`` on test)."""

    category: str
    candidate: str
    captions: tuple[str, ...]
    target: str | None = None


@dataclass
class FashionIQCategory:
    """Queries and gallery (the category's split image list) of one category."""

    category: str
    queries: list[FashionIQQuery]
    gallery: list[GalleryImage]
    image_paths: dict[str, GalleryImage]

    def image(self, name: str) -> GalleryImage:
        return self.image_paths[name]


@dataclass
class FashionIQData:
    split: str
    root: Path
    annotation_dir: Path
    categories: dict[str, FashionIQCategory]


def _parse_query(entry: Any, i: int, path: Path, category: str, with_target: bool) -> FashionIQQuery:
    require(isinstance(entry, dict), path, f"entry {i} is not an object; expected {{candidate, target, captions}}")
    require(isinstance(entry.get("candidate"), str), path, f"entry {i} lacks a string 'candidate'")
    caps = entry.get("captions")
    require(isinstance(caps, list) and all(isinstance(c, str) for c in caps), path,
            f"entry {i}: 'captions' must be a list of two strings")
    require(len(caps) == 2, path, f"entry {i}: {len(caps)} captions; FashionIQ entries have exactly two relative "
                                  "captions (from two annotators)")
    target = None
    if with_target:
        require(isinstance(entry.get("target"), str), path, f"entry {i} lacks a string 'target' (needed on val)")
        target = entry["target"]
    return FashionIQQuery(category, entry["candidate"], tuple(caps), target)


def _resolve(images_dir: Path, name: str, listing: DirectoryListing) -> GalleryImage:
    found = listing.find(images_dir, name, IMAGE_EXTENSIONS)
    path = found if found is not None else images_dir / f"{name}.png"
    return GalleryImage(name, path, f"{images_dir.name}/{path.name}")


def load_fashioniq(
    data_root: Path | str, split: str = "val", categories: Sequence[str] = FIQ_CATEGORIES
) -> FashionIQData:
    """Load and validate FashionIQ annotations for ``categories``; resolve each image's extension."""
    split = split.lower()
    if split not in FIQ_SPLITS:
        raise ValueError(f"unknown FashionIQ split {split!r}; expected one of {', '.join(FIQ_SPLITS)}")
    categories = tuple(categories)
    bad = [c for c in categories if c not in FIQ_CATEGORIES]
    if bad or not categories:
        raise ValueError(f"unknown FashionIQ categories {bad}; expected a subset of {', '.join(FIQ_CATEGORIES)}")
    root = Path(data_root).expanduser()
    required = [f"captions/cap.{c}.{split}.json" for c in categories] + [
        f"image_splits/split.{c}.{split}.json" for c in categories
    ]
    ann_dir = find_annotation_dir(root, required, benchmark="FashionIQ", nestings=_NESTINGS)
    images_dir = ann_dir / "images"
    if not images_dir.is_dir() and (root / "images").is_dir():
        images_dir = root / "images"
    listing = DirectoryListing()
    with_target = split != "test"
    out: dict[str, FashionIQCategory] = {}
    for cat in categories:
        split_path = ann_dir / f"image_splits/split.{cat}.{split}.json"
        names = read_json(split_path, "a FashionIQ image split: a list of image names (ASINs)")
        require(isinstance(names, list) and names and all(isinstance(n, str) for n in names), split_path,
                "expected a non-empty list of image names (ASINs)")
        cap_path = ann_dir / f"captions/cap.{cat}.{split}.json"
        entries = read_json(cap_path, "FashionIQ captions: a list of {candidate, target, captions}")
        require(isinstance(entries, list) and entries, cap_path, "expected a non-empty list of caption entries")
        queries = [_parse_query(e, i, cap_path, cat, with_target) for i, e in enumerate(entries)]
        in_split = set(names)
        paths = {n: _resolve(images_dir, n, listing) for n in dict.fromkeys(names)}
        for i, q in enumerate(queries):
            require(q.target is None or q.target in in_split, cap_path,
                    f"entry {i}: target {q.target!r} is not in {split_path.name} (the {cat} gallery)")
            if q.candidate not in paths:  # references need not be gallery images; resolve them too
                paths[q.candidate] = _resolve(images_dir, q.candidate, listing)
        gallery = [paths[n] for n in names]
        out[cat] = FashionIQCategory(cat, queries, gallery, paths)
        logger.info("FashionIQ %s/%s: %d queries, %d gallery images", cat, split, len(queries), len(gallery))
    return FashionIQData(split, root, ann_dir, out)

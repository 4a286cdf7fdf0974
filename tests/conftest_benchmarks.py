"""Fixtures for the benchmark tests: real annotation files + generated placeholder images.

The official annotation files live in ../shared/benchmarks (or $ZSCIR_BENCHMARKS_DIR); tests that need
them skip cleanly when they are absent. Images are never available, so each test session builds data roots
in the official layouts with one 8x8 solid-colour image per image name. The colour encodes the image's
index in the root (5 bits per channel, so it survives JPEG), which lets test composers recover which image
they were given: an oracle can then return the ground truth's embedding for every query.

Test modules import the fixtures they use by name (``from conftest_benchmarks import cirr_root, ...``):
pytest only auto-loads files named conftest.py, and tests/conftest.py is shared with other test suites.
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import pytest
import torch
from PIL import Image

from zscir.methods.base import Composer

__all__ = [
    "SHARED_BENCHMARKS",
    "shared_benchmarks",
    "PlaceholderRoot",
    "OracleComposer",
    "ReferenceComposer",
    "RandomComposer",
    "cirr_root",
    "fiq_root",
    "fiq_full_root",
    "circo_root",
    "decode_code",
    "make_table",
]


def _shared_dir() -> Path:
    env = os.environ.get("ZSCIR_BENCHMARKS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


SHARED_BENCHMARKS = _shared_dir()


def shared_benchmarks(sub: str) -> Path:
    """The shared annotation folder ``sub`` ("cirr", "fashioniq", "circo"), or skip the test."""
    path = SHARED_BENCHMARKS / sub
    if not path.is_dir():
        pytest.skip(f"benchmark annotations not available at {path}")
    return path


# ------------------------------------------------------------------------------------ placeholder images
def _colour(code: int) -> tuple[int, int, int]:
    if not 0 <= code < 32 ** 3:
        raise ValueError(code)
    return tuple(8 * ((code >> s) & 31) + 4 for s in (10, 5, 0))  # type: ignore[return-value]


def decode_code(image: Image.Image) -> int:
    r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))[:3]
    k = [min(31, max(0, round((c - 4) / 8))) for c in (r, g, b)]
    return (k[0] << 10) | (k[1] << 5) | k[2]


def _encoded(code: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), _colour(code)).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@dataclass
class PlaceholderRoot:
    """A generated data root: ``names[code]`` is the image id whose placeholder has colour ``code``."""

    root: Path
    names: list[Hashable] = field(default_factory=list)
    codes: dict[Hashable, int] = field(default_factory=dict)
    _dirs: set[Path] = field(default_factory=set, repr=False)

    def add(self, name: Hashable, path: Path) -> None:
        if name in self.codes:
            return
        code = len(self.names)
        self.names.append(name)
        self.codes[name] = code
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        with open(path, "wb") as f:
            f.write(_encoded(code, "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(src, target_is_directory=src.is_dir())
    except OSError:  # no symlinks (e.g. Windows without privileges): copy the JSON files
        if src.is_dir():
            dst.mkdir(exist_ok=True)
            for f in src.iterdir():
                (dst / f.name).write_bytes(f.read_bytes())
        else:
            dst.write_bytes(src.read_bytes())


# ------------------------------------------------------------------------------------ test composers
class _PlaceholderComposer(Composer):
    """Embeds placeholder image ``code`` as a fixed vector.

    ``dim=None`` gives one-hot vectors (all images exactly orthogonal: needed when a query mixes several
    ground truths, as for CIRCO); an int gives seeded random unit vectors of that size (enough when a
    query equals one image's embedding, and much cheaper to rank for large roots).
    """

    def __init__(self, root: PlaceholderRoot, dim: int | None = None) -> None:
        self.root = root
        self.onehot = dim is None
        self.dim = len(root.names) if dim is None else dim
        if not self.onehot:
            g = torch.Generator().manual_seed(1234)
            self.vectors = torch.nn.functional.normalize(torch.randn(len(root.names), self.dim, generator=g), dim=-1)
        self.gallery_calls = 0

    def embed(self, weighted_codes: Sequence[Sequence[tuple[int, float]]]) -> torch.Tensor:
        out = torch.zeros(len(weighted_codes), self.dim)
        for i, pairs in enumerate(weighted_codes):
            for code, w in pairs:
                if self.onehot:
                    out[i, code] += w
                else:
                    out[i] += w * self.vectors[code]
        return torch.nn.functional.normalize(out, dim=-1)

    def encode_gallery(self, images):
        self.gallery_calls += 1
        return self.embed([[(decode_code(im), 1.0)] for im in images])

    def gallery_cache_key(self) -> str:
        return f"test-placeholder:{'onehot' if self.onehot else 'random'}:{self.dim}"

    def describe(self) -> dict[str, Any]:
        return {"method": self.name}


class OracleComposer(_PlaceholderComposer):
    """Maps a (reference, text) query to the normalised sum of its ground truths' one-hot vectors.

    ``table[(reference id, text)]`` is a list with one ground-truth list per occurrence of that key in
    annotation order; with ``sequential=True`` the i-th call for a key gets the i-th entry (CIRR has a few
    (reference, caption) pairs with different targets), otherwise all entries are merged.
    """

    name = "oracle"

    def __init__(self, root: PlaceholderRoot, table: dict[tuple[Hashable, str], list[list[Hashable]]],
                 sequential: bool = True, dim: int | None = None) -> None:
        super().__init__(root, dim)
        self.table = table
        self.sequential = sequential
        self._seen: dict[tuple[Hashable, str], int] = defaultdict(int)

    def encode_queries(self, reference_images, texts):
        rows = []
        for im, text in zip(reference_images, texts):
            key = (self.root.names[decode_code(im)], text)
            entries = self.table[key]
            if self.sequential:
                gts = entries[self._seen[key] % len(entries)]
                self._seen[key] += 1
            else:
                gts = [g for e in entries for g in e]
            # the first ground truth (CIRCO's target_img_id) weighs more, so Recall@K of the target is 100 too
            rows.append([(self.root.codes[g], 1.5 if j == 0 else 1.0) for j, g in enumerate(gts)])
        return self.embed(rows)


class ReferenceComposer(_PlaceholderComposer):
    """Returns the reference image's own embedding as the query (the worst case for reference removal)."""

    name = "reference"

    def encode_queries(self, reference_images, texts):
        return self.embed([[(decode_code(im), 1.0)] for im in reference_images])


class RandomComposer(_PlaceholderComposer):
    """Pseudo-random image embeddings plus a text-dependent offset (non-trivial, deterministic rankings)."""

    name = "random"

    def __init__(self, root: PlaceholderRoot, dim: int = 32) -> None:
        super().__init__(root, dim)

    def encode_queries(self, reference_images, texts):
        out = []
        for im, t in zip(reference_images, texts):
            g = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(t)) % (2 ** 31))
            out.append(self.vectors[decode_code(im)] + torch.randn(self.dim, generator=g))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


# ------------------------------------------------------------------------------------ data roots
def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


#: roots built this session. Several test modules import the same fixture functions, and pytest keeps one
#: session cache per importing module, so the images are cached here to be generated only once.
_BUILT: dict[str, PlaceholderRoot] = {}


def _once(key: str, build: Callable[[], PlaceholderRoot]) -> PlaceholderRoot:
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


@pytest.fixture(scope="session")
def cirr_root(tmp_path_factory) -> PlaceholderRoot:
    """CIRR val + test1 in the official layout, one PNG per image of both splits."""
    shared = shared_benchmarks("cirr")

    def build() -> PlaceholderRoot:
        root = PlaceholderRoot(tmp_path_factory.mktemp("cirr"))
        for sub in ("captions", "image_splits"):
            _link(shared / sub, root.root / sub)
        for split in ("val", "test1"):
            for name, rel in _read(shared / "image_splits" / f"split.rc2.{split}.json").items():
                root.add(name, root.root / rel)
        return root

    return _once("cirr", build)


#: queries per FashionIQ category whose images the default root has
FIQ_PARTIAL_QUERIES = 30


def _build_fiq(tmp_path_factory, full_categories: Sequence[str]) -> PlaceholderRoot:
    shared = shared_benchmarks("fashioniq")
    root = PlaceholderRoot(tmp_path_factory.mktemp("fashioniq"))
    for sub in ("captions", "image_splits"):
        _link(shared / sub, root.root / sub)
    images = root.root / "images"

    def add(name: str) -> None:
        ext = ".jpg" if len(root.names) % 7 == 3 else ".png"  # both extensions occur in the wild
        root.add(name, images / f"{name}{ext}")

    for cat in ("dress", "shirt", "toptee"):
        if cat in full_categories:
            for name in _read(shared / "image_splits" / f"split.{cat}.val.json"):
                add(name)
        for q in _read(shared / "captions" / f"cap.{cat}.val.json")[:FIQ_PARTIAL_QUERIES]:
            add(q["candidate"])
            add(q["target"])
    return root


@pytest.fixture(scope="session")
def fiq_root(tmp_path_factory) -> PlaceholderRoot:
    """FashionIQ val with the images of the first 30 queries of each category (use ``limit=30``)."""
    shared_benchmarks("fashioniq")
    return _once("fashioniq", lambda: _build_fiq(tmp_path_factory, ()))


@pytest.fixture(scope="session")
def fiq_full_root(tmp_path_factory) -> PlaceholderRoot:
    """FashionIQ val with the whole dress gallery (3,817 images; for slow tests)."""
    shared_benchmarks("fashioniq")
    return _once("fashioniq-full-dress", lambda: _build_fiq(tmp_path_factory, ("dress",)))


#: ids that appear in no CIRCO annotation, used as gallery distractors
CIRCO_DISTRACTORS = 60


@pytest.fixture(scope="session")
def circo_root(tmp_path_factory) -> PlaceholderRoot:
    """CIRCO val + test annotations; images of every reference and ground truth plus distractors.

    No COCO info file, so the gallery is the image folder (as for the world benchmark). Even ids are PNG,
    odd ids JPEG, to exercise both extensions.
    """
    shared = shared_benchmarks("circo")

    def build() -> PlaceholderRoot:
        root = PlaceholderRoot(tmp_path_factory.mktemp("circo"))
        _link(shared / "annotations", root.root / "annotations")
        ids: list[int] = []
        for split in ("val", "test"):
            for q in _read(shared / "annotations" / f"{split}.json"):
                ids += [q["reference_img_id"], *q.get("gt_img_ids", [])]
        used = set(ids)
        distractors = [i for i in range(1, 10 ** 6, 7919) if i not in used][:CIRCO_DISTRACTORS]
        for img_id in list(dict.fromkeys(ids)) + distractors:
            ext = ".png" if img_id % 2 == 0 else ".jpg"
            root.add(img_id, root.root / "unlabeled2017" / f"{img_id:012d}{ext}")
        return root

    return _once("circo", build)


def make_table(items: Sequence[tuple[Hashable, str, Sequence[Hashable]]]) -> dict[tuple[Hashable, str], list]:
    """Oracle table from (reference, text, ground truths) triples in annotation order."""
    table: dict[tuple[Hashable, str], list] = defaultdict(list)
    for ref, text, gts in items:
        table[(ref, text)].append(list(gts))
    return dict(table)


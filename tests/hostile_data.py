"""Tiny synthetic benchmark roots (CIRR, CIRCO, FashionIQ) in the official layouts, built from scratch.

Used by the hostile-input tests: each root is small (a few dozen 8x8 PNGs) so that a loader or a whole
``zscir eval`` run on it takes well under a second, and each file can be damaged on purpose afterwards.
An image's colour encodes its number (``code_of``), so a test composer can recover which image it got.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

SET_SIZE = 6


def png(code: int, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (code % 256, (code // 256) % 256, 77)).save(buf, "PNG")
    return buf.getvalue()


def code_of(image: Image.Image) -> int:
    r, g, _ = image.convert("RGB").getpixel((0, 0))
    return r + 256 * g


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_cirr(root: Path, n_sets: int = 4, queries_per_set: int = 2) -> Path:
    """CIRR rc2 val + test1: ``n_sets`` image sets of 6 members; set ``s`` member 0 is the reference."""
    for split, folder in (("val", "dev"), ("test1", "test1")):
        mapping, caps = {}, []
        for s in range(n_sets):
            members = [f"{split}-{s}-img{j}" for j in range(SET_SIZE)]
            for j, name in enumerate(members):
                code = (0 if split == "val" else 1000) + s * SET_SIZE + j
                p = root / folder / f"{name}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(png(code))
                mapping[name] = f"./{folder}/{name}.png"
            for q in range(queries_per_set):
                entry = {"pairid": len(caps), "reference": members[0], "caption": f"{s * queries_per_set + q}",
                         "img_set": {"id": s, "members": members}}
                if split == "val":
                    entry["target_hard"] = members[1 + q % (SET_SIZE - 1)]
                caps.append(entry)
        write_json(root / "captions" / f"cap.rc2.{split}.json", caps)
        write_json(root / "image_splits" / f"split.rc2.{split}.json", mapping)
    return root


def make_circo(root: Path, n_images: int = 30, n_queries: int = 6) -> Path:
    """CIRCO val + test, directory gallery of ``n_images`` PNGs (ids 1..n)."""
    for i in range(1, n_images + 1):
        p = root / "unlabeled2017" / f"{i:012d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png(2000 + i))
    for split in ("val", "test"):
        entries = []
        for q in range(n_queries):
            e = {"id": q, "reference_img_id": 1 + q, "relative_caption": f"{q}", "shared_concept": "a thing"}
            if split == "val":
                gt = [1 + (q + 7) % n_images, 1 + (q + 11) % n_images]
                e.update(target_img_id=gt[0], gt_img_ids=gt, semantic_aspects=["addition"])
            entries.append(e)
        write_json(root / "annotations" / f"{split}.json", entries)
    return root


FIQ_CATS = ("dress", "shirt", "toptee")


def make_fiq(root: Path, n_images: int = 8, n_queries: int = 3) -> Path:
    """FashionIQ val + test for all three categories, ``n_images`` ASINs each."""
    code = 3000
    for cat in FIQ_CATS:
        for split in ("val", "test"):
            names = [f"{cat}{split}{i}" for i in range(n_images)]
            for n in names:
                p = root / "images" / f"{n}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(png(code))
                code += 1
            entries = []
            for q in range(n_queries):
                e = {"candidate": names[q], "captions": [f"is red {q}", f"has sleeves {q}"]}
                if split == "val":
                    e["target"] = names[(q + 3) % n_images]
                entries.append(e)
            write_json(root / "captions" / f"cap.{cat}.{split}.json", entries)
            write_json(root / "image_splits" / f"split.{cat}.{split}.json", names)
    return root

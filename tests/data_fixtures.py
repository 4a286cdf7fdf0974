"""Made-at-test-time datasets for the data-layer tests: coloured-shape images with exact captions.

Every source format is written from the same small corpus: WebDataset shards (as img2dataset writes
them: ``{key}.jpg`` + ``{key}.txt`` + ``{key}.json``), a tab-separated open_clip CSV, an HF ImageFolder
``metadata.jsonl``, a saved HF dataset, and canonical triplet manifests.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40),
           "purple": (140, 40, 170), "orange": (240, 140, 20)}
SHAPES = ("circle", "square", "triangle")


def make_image(colour: str, shape: str, size: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bg = tuple(int(x) for x in rng.integers(200, 255, 3))
    im = Image.new("RGB", (size + int(rng.integers(0, 16)), size), bg)
    d = ImageDraw.Draw(im)
    c, m = COLOURS[colour], int(rng.integers(4, 10))
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=c)
    elif shape == "square":
        d.rectangle(box, fill=c)
    else:
        d.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=c)
    return im


def corpus(n: int = 36) -> list[tuple[str, Image.Image, str]]:
    out = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        out.append((f"{i:06d}", make_image(colour, shape, seed=i), f"a {colour} {shape}"))
    return out


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_wds(root: Path, items, per_shard: int = 12, corrupt: set[str] = frozenset(),
              json_only: bool = False) -> str:
    """Shards ``root/{00000..NNNNN}.tar``; keys in ``corrupt`` get garbage image bytes. Returns the brace spec."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    n_shards = (len(items) + per_shard - 1) // per_shard
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as w:
            for key, im, cap in items[s * per_shard:(s + 1) * per_shard]:
                sample = {"__key__": key, "jpg": b"\xff\xd8 not a jpeg" if key in corrupt else jpeg(im),
                          "json": json.dumps({"caption": cap, "key": key}).encode()}
                if not json_only:
                    sample["txt"] = cap.encode()
                w.write(sample)
    return f"wds:{root}/{{00000..{n_shards - 1:05d}}}.tar"


def write_images(root: Path, items) -> list[str]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for key, im, _ in items:
        name = f"images/{key}.png"
        im.save(root / name)
        names.append(name)
    return names


def write_csv(root: Path, items) -> Path:
    """open_clip / Pic2Word layout: tab-separated ``filepath`` + ``title`` in a .csv file."""
    names = write_images(root, items)
    path = root / "train.csv"
    path.write_text("filepath\ttitle\n" + "".join(f"{n}\t{c}\n" for n, (_, _, c) in zip(names, items)))
    return path


def write_imagefolder(root: Path, items) -> Path:
    names = write_images(root, items)
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": c}) + "\n"
                                                 for n, (_, _, c) in zip(names, items)))
    return root


def write_hf(root: Path, items) -> Path:
    import datasets

    ds = datasets.Dataset.from_dict({"image": [im for _, im, _ in items], "text": [c for _, _, c in items]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "text": datasets.Value("string")}))
    ds.save_to_disk(str(root))
    return root


def write_triplets(root: Path, items, n: int = 40, text_targets: int = 0) -> Path:
    """Canonical triplets: "change the colour to X" / "make it a Y" between corpus images."""
    names = write_images(root, items)
    by = {c: name for name, (_, _, c) in zip(names, items)}
    rows, rng = [], np.random.default_rng(0)
    keys = list(by)
    while len(rows) < n:
        a = keys[int(rng.integers(len(keys)))]
        colour, shape = a.split()[1:]
        new = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        b = f"a {new} {shape}"
        if b == a or b not in by:
            continue
        rows.append({"reference": Path(by[a]).stem, "modification": f"change the colour to {new}",
                     "target": Path(by[b]).stem, "reference_caption": a, "target_caption": b,
                     "quality": "lq", "source": "test", "score_clip": 0.5})
    for r in rows[:text_targets]:
        r["target"] = ""
    path = root / "triplets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

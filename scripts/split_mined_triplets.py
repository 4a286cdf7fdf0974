"""HQ / LQ subsets of `zscir data make-triplets` mining output on the real corpus, for the Stage II ablation.

HQ = the reference and the target are variants of one corpus concept (an emoji and its skin-tone / gender
variant, a Tux Paint stamp and its tint): the two pictures differ only in what the modification says, the
closest thing to rendered targets without a diffusion model. LQ = a seeded random sample of all mined
triplets of the same size (mostly different pictures whose captions differ in a word). Both are written
beside the input as ``triplets-hq.jsonl`` / ``triplets-lq.jsonl`` (same image paths).

    python scripts/split_mined_triplets.py /tmp/real12/trip-mine /tmp/real12/corpus/manifest.csv
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys


def main(folder: str, manifest: str, seed: int = 0) -> None:
    def key(path: str) -> str:
        return os.path.splitext(os.path.basename(path))[0]

    for path in (os.path.join(folder, "triplets.jsonl"), manifest):
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path} not found (give a make-triplets folder and the corpus manifest.csv)")
    with open(manifest, newline="", encoding="utf-8") as f:
        concept = {key(r["filepath"]): r["concept"] for r in csv.DictReader(f)}
    with open(os.path.join(folder, "triplets.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    hq = [r for r in rows if concept[key(r["reference"])] == concept[key(r["target"])]]
    lq = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), len(hq)))]
    for name, subset in (("hq", hq), ("lq", lq)):
        with open(os.path.join(folder, f"triplets-{name}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in subset)
        print(f"{name}: {len(subset)} of {len(rows)} triplets")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/split_mined_triplets.py TRIPLETS_FOLDER CORPUS_MANIFEST_CSV")
    main(*sys.argv[1:3])

"""Where composed queries lose on the real benchmark: family retrieval vs variant choice, and text-tower ceilings.

For each method, on the CIRR part of one split (the gallery features come from the evaluation cache):

* ``R@1`` — the official metric (reference removed);
* ``family@1`` — the top result is *some* variant of the reference's family (the query's ``img_set``), i.e. the
  query kept the reference's identity;
* ``variant|family`` — R@1 / family@1: given the family, how often the exact variant is picked;
* ``Rsubset@1`` is the protocol's within-family score and is printed by ``zscir eval``.

Two ceilings of the text side of the model, with no reference image at all:

* ``oracle-caption`` — the *target's own caption* ("man elf: light skin tone") as a text-only query: the
  best a query made of words can do on this gallery with this text tower;
* ``pseudo-identity`` — Stage I's prompt with φ(reference) alone ("a photo of $"): family@1 of the
  pseudo-word without any modification (how much of the reference's identity the token carries).

Usage (methods as for ``zscir eval -m``)::

    python scripts/real_diagnostics.py --split test --model lit-clipart \\
        -m sum:weight=0.5 -m pic2word:checkpoint=runs/p2w -m tscir:checkpoint=runs/ts2
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch


def write_caption_bank(path: Path) -> None:
    """CSV (image, caption) of every picture of the built real benchmark: a diagnostic, not a fair captioner."""
    import csv

    from zscir.data.real.benchmark import gallery_items
    from zscir.eval.real import ensure_real_benchmark

    images = ensure_real_benchmark(progress=False) / "images"
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for it in sorted(gallery_items(), key=lambda it: it.key):
            if (images / f"{it.key}.png").exists():
                w.writerow([str(images / f"{it.key}.png"), it.caption])
                n += 1
    print(f"wrote {n} gallery pictures and their captions to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--model", default="lit-clipart")
    ap.add_argument("-m", "--method", action="append", default=[])
    ap.add_argument("--json", type=Path, help="write the table as JSON")
    ap.add_argument("--write-caption-bank", type=Path, metavar="CSV",
                    help="only write an oracle caption bank (image,caption of every gallery picture) for "
                         "Fusion-Diff's caption_bank= option, and exit")
    args = ap.parse_args()
    if args.write_caption_bank:
        write_caption_bank(args.write_caption_bank)
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    from zscir.cli.common import parse_options
    from zscir.data.real.benchmark import gallery_items
    from zscir.eval.benchmarks.cirr import load_cirr
    from zscir.eval.benchmarks.features import encode_gallery, encode_queries
    from zscir.eval.benchmarks.protocol import make_protocol
    from zscir.eval.real import ensure_real_benchmark
    from zscir.methods import create_composer

    root = ensure_real_benchmark(progress=False) / args.split
    data = load_cirr(root, "val")
    pre = make_protocol("cirr").image_preprocessing
    image = create_composer("image", model=args.model)
    gal = encode_gallery(image, data.gallery, pre, progress=False).features
    path_of = {str(im.id): im.path for im in data.gallery}
    qs = data.queries
    ref_idx = torch.tensor([data.index_of(q.reference) for q in qs])
    tgt_idx = torch.tensor([data.index_of(q.target) for q in qs])
    members = [{data.index_of(m) for m in q.members} for q in qs]

    def top1(feats: torch.Tensor) -> torch.Tensor:  # the reference removed, as in the protocol
        s = feats @ gal.T
        s[torch.arange(len(qs)), ref_idx] = -float("inf")
        return s.argmax(-1)

    def scores(t1: torch.Tensor) -> dict[str, float]:
        r1 = float((t1 == tgt_idx).float().mean()) * 100
        fam = sum(int(t) in m for t, m in zip(t1.tolist(), members)) / len(qs) * 100
        return {"R@1": round(r1, 2), "family@1": round(fam, 2),
                "variant|family": round(100 * r1 / fam, 1) if fam else 0.0}

    rows: dict[str, dict] = {}
    refs = [path_of[q.reference] for q in qs]
    for spec in args.method:
        name, _, kvs = spec.partition(":")  # NAME:KEY=VALUE,... as `zscir eval -m` reads it
        opts = parse_options([kv for kv in kvs.split(",") if kv])
        comp = create_composer(name, model=args.model, **opts)
        q = encode_queries(comp, refs, [[q.caption] for q in qs], pre, progress=False)
        rows[spec] = scores(top1(q))
        prompt = getattr(getattr(comp, "mapping", None), "cfg", None)
        if prompt is not None:  # the pseudo-word alone: Stage I's prompt, no modification text
            prompt = prompt.prompt
            alone = create_composer(name, model=args.model, **{**opts, "template": prompt + " {}"})
            q0 = encode_queries(alone, refs, [[""] for _ in qs], pre, progress=False)
            rows[f"{spec} pseudo-identity ('{prompt}')"] = {"family@1": scores(top1(q0))["family@1"]}
    captions = {it.key: it.caption for it in gallery_items()}
    with torch.no_grad():
        oracle = torch.nn.functional.normalize(image.backbone.encode_text([captions[q.target] for q in qs]).float(),
                                               dim=-1)
    rows["oracle-caption (target's caption, text only)"] = scores(top1(oracle))
    width = max(len(k) for k in rows)
    print(f"{'query':<{width}}  {'R@1':>6}  {'family@1':>8}  {'variant|family':>14}   (n={len(qs)}, {args.split})")
    for k, r in rows.items():
        print(f"{k:<{width}}  {r.get('R@1', float('nan')):>6}  {r['family@1']:>8}  {r.get('variant|family', ''):>14}")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "model": args.model, "n": len(qs), "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as e:  # an unknown method or model, a missing checkpoint or benchmark package
        raise SystemExit(f"error: {e}") from None

"""A 2-D map of Fusion-Diff's fused representations (the paper visualises its joint space).

For a few world-benchmark (CIRR-part) queries it embeds the reference (fused with its caption), the query
(fused reference image + modification text), the generated embedding (DDIM sample) and the target (the
gallery embedding), projects them together with the gallery by PCA or t-SNE (scikit-learn), and draws one
colour per query: reference ○ → generated ★, query △, target ■, gallery as grey dots. The nearest bank
captions of each generated embedding are listed beside the map and returned, so one can read what the
model "imagined".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


@dataclass
class FusedMapConfig:
    n_queries: int = 8
    n_gallery: int = 600
    method: str = "pca"  # pca | tsne
    n_captions: int = 3
    seed: int = 0


def _cirr_queries(root: Path) -> tuple[list[dict], dict[str, Path]]:
    base = root / "cirr"
    queries = json.loads((base / "captions" / "cap.rc2.val.json").read_text())
    split = json.loads((base / "image_splits" / "split.rc2.val.json").read_text())
    return queries, {k: base / v for k, v in split.items()}


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(x) - 1)).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


@torch.no_grad()
def fused_map(composer, out_png: str | Path, cfg: FusedMapConfig | None = None, world_seed: int = 0) -> dict[str, Any]:
    """Draw the map for a `FusionDiffComposer` and write ``out_png`` (+ a JSON with the captions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zscir.data.world.cache import ensure_world_benchmark
    from zscir.methods.fusiondiff.joint import fuse

    cfg = cfg or FusedMapConfig()
    root = ensure_world_benchmark(world_seed)
    queries, paths = _cirr_queries(root)
    rng = np.random.default_rng(cfg.seed)
    chosen = [queries[i] for i in rng.choice(len(queries), size=min(cfg.n_queries, len(queries)), replace=False)]
    load = lambda name: Image.open(paths[name]).convert("RGB")  # noqa: E731
    refs = [load(q["reference"]) for q in chosen]
    tgts = [load(q["target_hard"]) for q in chosen]
    texts = [q["caption"] for q in chosen]
    names = sorted(paths)
    gal_names = [names[i] for i in rng.choice(len(names), size=min(cfg.n_gallery, len(names)), replace=False)]

    bb, joint = composer.backbone, composer.joint
    img, txt = bb.encode_images(refs), bb.encode_texts(texts)
    parts = {
        "reference": composer.encode_gallery(refs),
        "query": fuse(img, txt, joint.weight),
        "generated": composer.generate(img, txt),
        "target": composer.encode_gallery(tgts),
    }
    gallery = composer.encode_gallery([load(n) for n in gal_names])
    allx = torch.cat([gallery] + list(parts.values())).numpy()
    xy = _project(allx, cfg.method, cfg.seed)
    g_xy, rest = xy[: len(gallery)], xy[len(gallery):]
    k = len(chosen)
    pxy = {name: rest[i * k:(i + 1) * k] for i, name in enumerate(parts)}

    captions: list[list[str]] = []
    cap = joint.captioner
    bank_embeds = getattr(cap, "bank_embeds", None)
    for z in parts["generated"]:
        if bank_embeds is None:
            captions.append([])
            continue
        idx = (bank_embeds @ z).topk(cfg.n_captions).indices.tolist()
        captions.append([cap.bank[i] for i in idx])
    cos = {name: float((parts[name] * parts["target"]).sum(-1).mean()) for name in ("reference", "query", "generated")}

    fig, (ax, tx) = plt.subplots(1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.scatter(g_xy[:, 0], g_xy[:, 1], s=6, c="lightgray", label="gallery (fused)")
    colours = plt.cm.tab10(np.arange(k) % 10)
    for i in range(k):
        c = colours[i]
        ax.scatter(*pxy["reference"][i], marker="o", s=70, color=c, edgecolors="k")
        ax.scatter(*pxy["query"][i], marker="^", s=70, color=c, edgecolors="k")
        ax.scatter(*pxy["generated"][i], marker="*", s=200, color=c, edgecolors="k")
        ax.scatter(*pxy["target"][i], marker="s", s=70, color=c, edgecolors="k")
        ax.annotate("", xy=pxy["generated"][i], xytext=pxy["reference"][i],
                    arrowprops=dict(arrowstyle="->", color=c, lw=1.2))
        ax.text(*pxy["reference"][i], f" {i}", fontsize=9)
    for m, lab in (("o", "reference"), ("^", "query (ref img + text)"), ("*", "generated"), ("s", "target")):
        ax.scatter([], [], marker=m, color="gray", edgecolors="k", label=lab)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Fusion-Diff {composer.cfg.joint.space} space ({cfg.method.upper()}); "
                 f"mean cos to target: ref {cos['reference']:.2f}, query {cos['query']:.2f}, "
                 f"generated {cos['generated']:.2f}", fontsize=9)
    tx.axis("off")
    lines = []
    for i, (t, caps) in enumerate(zip(texts, captions)):
        lines.append(f"{i}. \"{t}\"")
        lines += [f"     ★ {c}" for c in caps]
    tx.text(0, 1, "\n".join(lines), va="top", fontsize=7.5, family="monospace", wrap=True)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    info = {"png": str(out_png), "projection": cfg.method, "mean_cosine_to_target": cos,
            "queries": [{"reference": q["reference"], "target": q["target_hard"], "text": t, "nearest_captions": c}
                        for q, t, c in zip(chosen, texts, captions)]}
    out_png.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return info

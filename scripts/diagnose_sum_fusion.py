"""Diagnose sum fusion on the world benchmark (CIRR part), see docs/RESULTS.md.

Prints, for the image term (reference image) and the text term (modification text), how far the true
target scores above the gallery mean, and text-only retrieval with the *oracle* full caption of the target.
Usage: python scripts/diagnose_sum_fusion.py
"""
import json, torch
from PIL import Image
from zscir.backbones import create_backbone
from zscir.data.world.cache import ensure_world_benchmark
from zscir.eval.benchmarks.cirr import load_cirr
from zscir.data.world import Scene, canonical_caption
torch.set_num_threads(1)
bb = create_backbone("world-clip")
root = ensure_world_benchmark(0)
d = load_cirr(root / "cirr", "val")
info = json.loads((root / "world.json").read_text())
imgs = [Image.open(g.path).convert("RGB") for g in d.gallery]
G = bb.encode_images(imgs)
qs = d.queries
R = G[[d.index_of(q.reference) for q in qs]]
T = bb.encode_texts([q.caption for q in qs])
tgt = torch.tensor([d.index_of(q.target) for q in qs])
si, st = R @ G.T, T @ G.T
print("image term: mean sim %.3f, std over gallery %.3f, target-minus-mean %.3f" % (si.mean(), si.std(1).mean(), (si[torch.arange(len(qs)), tgt] - si.mean(1)).mean()))
print("text  term: mean sim %.3f, std over gallery %.3f, target-minus-mean %.3f" % (st.mean(), st.std(1).mean(), (st[torch.arange(len(qs)), tgt] - st.mean(1)).mean()))
# oracle: the target's full canonical caption as a text query
caps = [canonical_caption(Scene.from_dict(info["scenes"]["cirr"][q.target])) for q in qs]
so = bb.encode_texts(caps) @ G.T
ref = torch.tensor([d.index_of(q.reference) for q in qs])
for s, name in ((so, "oracle target caption (text-only)"),):
    s = s.clone(); s[torch.arange(len(qs)), ref] = -1e9
    rank = (s > s[torch.arange(len(qs)), tgt][:, None]).sum(1)
    print(f"{name}: R@1 {100*(rank<1).float().mean():.2f} R@5 {100*(rank<5).float().mean():.2f} R@50 {100*(rank<50).float().mean():.2f}")

"""Training triplets (reference image, modification text, target image).

Two qualities, built from the *same* sequence of (reference, edit, text) so that target quality
is the only difference between them:

* ``"hq"`` -- the target is rendered exactly from the edited scene (like synthetic,
  generator-made triplet sets): always correct.
* ``"lq"`` -- the target is an *existing* training-pair image whose caption is most similar
  (TF-IDF cosine) to the canonical caption of the edited scene, the way web-scale triplets are
  mined from captioned images.  It is often only approximately right; ``correct`` records
  whether the mined scene equals the edited one, so the noise rate can be measured.

References are training pairs (ids shared), so a trainer can render each scene once.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .captions import canonical_caption
from .config import WorldConfig, stream
from .edits import EditSpec, random_edit
from .pairs import Pair, generate_pairs
from .phrasing import phrase_edit
from .scene import Scene

logger = logging.getLogger(__name__)

QUALITIES: tuple[str, ...] = ("hq", "lq")


@dataclass(frozen=True)
class SceneRef:
    """An image given by id and scene (render the scene to get the pixels)."""

    id: str
    scene: Scene


@dataclass(frozen=True)
class Triplet:
    """One training triplet.  ``spec`` is the edit actually applied to the reference;
    ``target_scene`` is what the target image shows (for LQ, the mined image's scene)."""

    id: str
    reference: SceneRef
    text: str
    target_id: str
    target_scene: Scene
    kind: str
    spec: EditSpec
    correct: bool
    quality: str = "hq"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "quality": self.quality, "reference_id": self.reference.id,
                "reference_scene": self.reference.scene.to_dict(), "text": self.text,
                "target_id": self.target_id, "target_scene": self.target_scene.to_dict(),
                "kind": self.kind, "spec": self.spec.to_dict(), "correct": self.correct}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Triplet":
        return cls(d["id"], SceneRef(d["reference_id"], Scene.from_dict(d["reference_scene"])),
                   d["text"], d["target_id"], Scene.from_dict(d["target_scene"]), d["kind"],
                   EditSpec.from_dict(d["spec"]), bool(d["correct"]), d.get("quality", "hq"))


def edit_sequence(cfg: WorldConfig, pairs: Sequence[Pair], n: int) -> list[tuple[Pair, Scene, EditSpec, str]]:
    """The shared (reference, edited scene, spec, train-phrased text) sequence."""
    rng = random.Random(stream(cfg, "triplets"))
    out: list[tuple[Pair, Scene, EditSpec, str]] = []
    while len(out) < n:
        ref = pairs[rng.randrange(len(pairs))]
        res = random_edit(ref.scene, rng, exclude_combos=cfg.heldout_combos)
        if res is None:
            continue
        target, spec = res
        out.append((ref, target, spec, phrase_edit(spec, rng, "train")))
    return out


class CaptionMiner:
    """Nearest pair by TF-IDF cosine between a query text and the pairs' captions.

    ``field="captions"`` indexes all caption variants of a pair joined (a richer "page text",
    ~8% exact targets at the default size); ``"caption"`` only the one sampled caption (a bare
    alt-text, ~3% exact).  Unigrams + bigrams, so that "red circle" and "blue circle" differ beyond their words.  The
    world's vocabulary is tiny (a few hundred n-grams), so dense float32 matrices and a chunked
    matmul are faster than sparse products here.
    """

    def __init__(self, pairs: Sequence[Pair], chunk: int = 1024, field: str = "captions") -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.pairs = list(pairs)
        self.vec = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b",
                                   sublinear_tf=True, dtype=np.float32)
        texts = [" . ".join(p.captions) if field == "captions" else p.caption for p in self.pairs]
        self.docs = self.vec.fit_transform(texts).toarray()
        self.chunk = chunk
        self.index = {p.id: i for i, p in enumerate(self.pairs)}

    def nearest(self, queries: Sequence[str], exclude_ids: Sequence[str]) -> list[int]:
        """Index of the best pair for each query, never the pair named in ``exclude_ids``."""
        from threadpoolctl import threadpool_limits

        q = self.vec.transform(list(queries)).toarray()
        best: list[int] = []
        with threadpool_limits(1):  # the machine is shared with training jobs
            for s in range(0, len(q), self.chunk):
                sims = q[s:s + self.chunk] @ self.docs.T
                for j, rid in enumerate(exclude_ids[s:s + self.chunk]):
                    sims[j, self.index[rid]] = -1.0
                best.extend(np.argmax(sims, axis=1).tolist())
        return best


def generate_triplets(cfg: WorldConfig, quality: str = "hq", n: int | None = None,
                      pairs: Sequence[Pair] | None = None, mine_field: str = "captions"
                      ) -> list[Triplet]:
    """Generate ``n`` (default ``cfg.n_triplets``) training triplets of ``quality``.

    ``mine_field`` selects the text LQ targets are mined from (see :class:`CaptionMiner`).
    ``pairs`` defaults to ``generate_pairs(cfg)``; pass them in to avoid regenerating.  Neither
    references nor targets contain held-out combos (LQ targets are training pairs, which never do).
    """
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    n = cfg.n_triplets if n is None else n
    pairs = generate_pairs(cfg) if pairs is None else pairs
    edits = edit_sequence(cfg, pairs, n)
    if quality == "hq":
        return [Triplet(f"world-hq-{i:06d}", SceneRef(ref.id, ref.scene), text,
                        f"world-hq-{i:06d}-target", target, spec.kind, spec, True, "hq")
                for i, (ref, target, spec, text) in enumerate(edits)]
    miner = CaptionMiner(pairs, field=mine_field)
    best = miner.nearest([canonical_caption(t) for _, t, _, _ in edits], [r.id for r, _, _, _ in edits])
    out = []
    for i, ((ref, target, spec, text), b) in enumerate(zip(edits, best)):
        mined = miner.pairs[b]
        out.append(Triplet(f"world-lq-{i:06d}", SceneRef(ref.id, ref.scene), text, mined.id,
                           mined.scene, spec.kind, spec, mined.scene == target, "lq"))
    rate = sum(t.correct for t in out) / max(1, len(out))
    logger.info("mined %d LQ triplets; %.1f%% have the exact target", len(out), 100 * rate)
    return out

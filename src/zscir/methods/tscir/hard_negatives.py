"""Hard negative mining for Stage II.

Candidates (the *pool*, mined once): for each training triplet, the gallery images most similar to its
target under the frozen image encoder — the look-alikes a composed query must learn to rule out — plus
the targets of other triplets that share its reference (same image, different edit: exactly the
confusion the modification text has to resolve), after the negatives the manifest itself lists for the
triplet (``hard_negatives``: e.g. the same concept in another tone, from make-triplets ``-g variants``). Images identical to the target (same scene) are never
negatives.

Refresh (every ``hn_refresh`` steps): the pool is re-ranked with the *current* query model and the
``hard_negatives`` candidates it scores highest become the negatives until the next refresh, so the
negatives follow what the model actually confuses while the expensive gallery search is done once.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)


class HardNegativeMiner:
    """Pool of mined candidates per training triplet and the current hardest ``k`` of them."""

    def __init__(self, data, cfg, chunk: int = 1024):
        glob = data.gallery_bank.glob
        key_ids = scene_key_ids(data.gallery.keys)
        tgt = torch.as_tensor([data.tgt_idx[t.id] for t in data.train])
        self.k = min(cfg.hard_negatives, cfg.hn_pool)
        by_ref: dict[str, list[int]] = {}
        for t in data.train:
            by_ref.setdefault(t.reference.id, []).append(data.tgt_idx[t.id])
        pools = []
        for s in range(0, len(tgt), chunk):
            tc = tgt[s : s + chunk]
            sims = glob[tc] @ glob.T
            sims[key_ids[tc][:, None] == key_ids[None, :]] = float("-inf")  # identical images (incl. itself)
            pools.append(sims.topk(cfg.hn_pool, dim=1).indices)
        pool = torch.cat(pools)
        given = getattr(data, "given_negatives", {})
        for i, t in enumerate(data.train):  # listed ones, then same-reference targets, then the look-alikes
            shared = [j for j in given.get(t.id, []) + by_ref[t.reference.id] if key_ids[j] != key_ids[tgt[i]]]
            if shared:
                merged = list(dict.fromkeys(shared + pool[i].tolist()))[: cfg.hn_pool]
                pool[i] = torch.as_tensor(merged)
        self.pool = pool  # (N, pool)
        self.glob = glob
        self.current = pool[:, : self.k].clone()
        logger.info("hard negatives: pool %d per triplet, %d used, %d triplets share a reference",
                    pool.shape[1], self.k, sum(len(v) > 1 for v in by_ref.values()))

    def refresh(self, encode: Callable[[list], torch.Tensor], trips: list | None = None) -> None:
        """Re-rank each pool with the current queries (``encode(train triplets) -> (N, D)``)."""
        q = encode(trips) if trips is not None else encode(None)
        scores = torch.einsum("nd,npd->np", q, self.glob[self.pool])
        top = scores.topk(self.k, dim=1).indices
        self.current = self.pool.gather(1, top)

    def negatives(self, batch_idx) -> torch.Tensor:
        return self.current[torch.as_tensor(np.asarray(batch_idx))]


def encode_sharded(encode: Callable[[int, int], torch.Tensor], n: int, ctx, chunk: int = 256) -> torch.Tensor:
    """Rows ``[0, n)`` as ``encode(lo, hi)`` over fixed chunks of ``chunk`` rows, the chunks split over the
    ranks of ``ctx`` (a `DistContext`) and all-gathered in order.

    The refresh re-encodes the whole training set; under ``torchrun`` each rank encodes its share. The chunk
    boundaries do not depend on the world size, so every rank gets exactly the table that one process
    computes (batch composition can change bf16 results in the last bits, and a top-k can flip on them).
    """
    from zscir.train.distributed import all_gather_object, local_slice

    starts = list(range(0, n, chunk))
    mine = [encode(s, min(s + chunk, n)) for s in local_slice(starts, ctx)]
    parts = [q for rank_parts in all_gather_object(mine, ctx) for q in rank_parts]
    return torch.cat(parts)


def scene_key_ids(keys: list[str]) -> torch.Tensor:
    """Scene keys → integer ids (equal id = identical image)."""
    ids: dict[str, int] = {}
    return torch.as_tensor([ids.setdefault(k, len(ids)) for k in keys])

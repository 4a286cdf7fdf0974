"""Retrieval metrics of the composed image retrieval benchmarks, written to match the official evaluators.

Published numbers are only comparable when the metric is computed exactly as the benchmark's own code
computes it, so each function names the code it mirrors:

* `recall_at_k` — CIRR / FashionIQ Recall@K (fraction of queries whose single target is in the top K),
  as in CIRR's evaluation server and SEARLE's ``validate.py``.
* `remove_reference` — CIRR deletes the reference image from every full-gallery ranking before
  computing Recall@K and Recall_subset@K (SEARLE ``cirr_compute_val_metrics``).
* `subset_ranking` / `recall_subset_at_k` — CIRR Recall_subset@K: the ranking restricted to the query's
  ``img_set.members`` minus the reference (5 candidates), in the order of the *full-gallery* scores.
* `average_precision_at_k` / `map_at_k` — CIRCO mAP@K with
  ``AP@K = sum_{i<=K} P@i * rel_i / min(|GT|, K)`` (CIRCO ``src/evaluation.py``).

Rankings are sequences of per-query ranked id lists (or a 2-D numpy array of ids); ids can be strings
(CIRR / FashionIQ image names) or ints (CIRCO COCO ids). Every metric is returned as a percentage.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "hits_at_k",
    "recall_at_k",
    "remove_reference",
    "subset_ranking",
    "rank_subset",
    "recall_subset_at_k",
    "average_precision_at_k",
    "map_at_k",
]

Ranked = Sequence[Sequence[Hashable]] | np.ndarray


def _rows(ranked: Ranked) -> list[list[Any]]:
    """Normalise a ranking container to a list of per-query Python lists (numpy scalars -> Python)."""
    if isinstance(ranked, np.ndarray):
        if ranked.ndim != 2:
            raise ValueError(f"a ranking array must be 2-D (queries x ranks), got shape {ranked.shape}")
        return ranked.tolist()
    return [list(row.tolist()) if isinstance(row, np.ndarray) else list(row) for row in ranked]


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _check_lengths(n: int, **others: Sequence[Any]) -> None:
    for name, seq in others.items():
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries but the ranking has {n} queries")


def hits_at_k(ranked: Ranked, targets: Sequence[Hashable], k: int) -> np.ndarray:
    """Per query: whether its target id is among the first `k` ranked ids (a bool vector).

    The per-query form of `recall_at_k` (its mean, in percent), for intervals (`zscir.eval.bootstrap`).
    """
    _check_k(k)
    rows = _rows(ranked)
    _check_lengths(len(rows), targets=targets)
    return np.fromiter((target in row[:k] for row, target in zip(rows, targets)), dtype=bool, count=len(rows))


def recall_at_k(ranked: Ranked, targets: Sequence[Hashable], k: int) -> float:
    """Percentage of queries whose target id appears among the first `k` ranked ids.

    This is CIRR's / FashionIQ's Recall@K: one target per query, ``100 * mean(target in ranked[:k])``.
    A ranking shorter than `k` simply counts what it has (a target ranked beyond the list is a miss).
    """
    hits = hits_at_k(ranked, targets, k)
    if not hits.size:
        raise ValueError("recall_at_k needs at least one query")
    return 100.0 * int(hits.sum()) / hits.size


def remove_reference(ranked: Ranked, references: Sequence[Hashable]) -> list[list[Any]]:
    """Drop each query's reference id from its ranking (CIRR protocol).

    CIRR's official numbers are computed on full-gallery rankings from which the reference image has been
    deleted: the reference is trivially similar to a query built from it and is never the target.
    Every occurrence is removed; rankings without the reference are returned unchanged (copied).
    """
    rows = _rows(ranked)
    _check_lengths(len(rows), references=references)
    return [[x for x in row if x != ref] for row, ref in zip(rows, references)]


def subset_ranking(row: Sequence[Hashable], members: Iterable[Hashable], reference: Hashable) -> list[Any]:
    """The ids of ``members`` minus ``reference`` in the order they appear in the full ranking ``row``.

    This is how CIRR's evaluator builds the Recall_subset ranking: it masks the full-gallery ranking with
    the image-set members, so the subset order is the order of the full-gallery scores. ``row`` must
    therefore contain every member (pass the full ranking, not a top-50 cut); use `rank_subset` when only
    scores are at hand.
    """
    wanted = set(members)
    wanted.discard(reference)
    return [x for x in row if x in wanted]


def rank_subset(scores_row: Sequence[float] | np.ndarray, member_indices: Sequence[int]) -> np.ndarray:
    """Order ``member_indices`` (gallery indices) by descending ``scores_row[i]``, ties by gallery index.

    ``scores_row`` is one query's score vector over the whole gallery, and it must hold *the very scores
    the full ranking was sorted by*. Then the result is exactly the full ranking masked with the members
    (what the CIRR evaluator does): a stable descending sort restricted to a subset keeps the subset's
    relative order, and NaN scores sort last, as `zscir.index.search.exact_topk` treats them. Scores
    recomputed with another product (e.g. a matrix-vector product instead of the matrix product behind
    the ranking) may round differently in the last bits and reorder near-duplicate members; the benchmark
    runner therefore masks its full ranking instead of re-scoring. The caller removes the reference
    index first. Returns the indices as an int64 array.
    """
    scores = np.asarray(scores_row, dtype=np.float64)
    idx = np.asarray(member_indices, dtype=np.int64)
    if idx.size == 0:
        return idx
    if scores.ndim != 1:
        raise ValueError(f"scores_row must be one query's 1-D full-gallery score vector, got shape {scores.shape}")
    member_scores = np.nan_to_num(scores[idx], nan=-np.inf)
    # np.lexsort sorts by the last key first: descending score, then ascending gallery index.
    order = np.lexsort((idx, -member_scores))
    return idx[order]


def recall_subset_at_k(
    ranked: Ranked,
    targets: Sequence[Hashable],
    subsets: Sequence[Iterable[Hashable]],
    references: Sequence[Hashable],
    k: int,
) -> float:
    """CIRR Recall_subset@K: Recall@K within the query's image set, reference excluded.

    For each query the ranking is restricted to ``subsets[i]`` (``img_set.members``) minus
    ``references[i]`` — 5 candidates in CIRR — keeping the ranked order, and the target must be in the
    first `k` of them. ``ranked`` must cover all members (full-gallery rankings, with or without the
    reference removed, or rankings already restricted to the subset); a ranking that misses the target
    member raises ``ValueError`` because the result would silently differ from the official evaluator.
    """
    _check_k(k)
    rows = _rows(ranked)
    _check_lengths(len(rows), targets=targets, subsets=subsets, references=references)
    if not rows:
        raise ValueError("recall_subset_at_k needs at least one query")
    hits = 0
    for i, (row, target, members, ref) in enumerate(zip(rows, targets, subsets, references)):
        members = list(members)
        if target not in members:
            raise ValueError(f"query {i}: target {target!r} is not a member of its subset {members}")
        sub = subset_ranking(row, members, ref)
        if target not in sub:
            raise ValueError(
                f"query {i}: the ranking does not contain the target member {target!r}; Recall_subset needs "
                "full-gallery rankings (or rankings of the subset, see rank_subset), not truncated ones"
            )
        hits += target in sub[:k]
    return 100.0 * hits / len(rows)


def average_precision_at_k(row: Sequence[Hashable], gt: Iterable[Hashable], k: int) -> float:
    """CIRCO's AP@K of one ranking: ``sum_{i<=K} P@i * rel_i / min(|GT|, K)`` as a fraction in [0, 1].

    Mirrors CIRCO's ``compute_metrics`` line by line (``np.isin`` relevance labels, precision at every
    relevant position, normalisation by ``min(len(gt), K)``). The ground truth is de-duplicated first so a
    repeated GT id cannot inflate the denominator (CIRCO's files contain no repeats, so this never changes an
    official number). Repeated ids in ``row`` are counted at each position, as in the official code; valid
    rankings and submissions never repeat an id.
    """
    _check_k(k)
    gt_unique = list(dict.fromkeys(gt))
    if not gt_unique:
        raise ValueError("average_precision_at_k needs a non-empty ground-truth set")
    preds = list(row)[:k]
    if not preds:
        return 0.0
    gt_set = set(gt_unique)
    labels = np.fromiter((p in gt_set for p in preds), dtype=bool, count=len(preds))
    precisions = np.cumsum(labels) * labels / np.arange(1, labels.shape[0] + 1)
    return float(np.sum(precisions) / min(len(gt_unique), k))


def map_at_k(ranked: Ranked, gt_sets: Sequence[Iterable[Hashable]], k: int) -> float:
    """CIRCO mAP@K: mean of `average_precision_at_k` over queries, as a percentage."""
    _check_k(k)
    rows = _rows(ranked)
    _check_lengths(len(rows), gt_sets=gt_sets)
    if not rows:
        raise ValueError("map_at_k needs at least one query")
    aps = [average_precision_at_k(row, gt, k) for row, gt in zip(rows, gt_sets)]
    return 100.0 * float(np.mean(aps))

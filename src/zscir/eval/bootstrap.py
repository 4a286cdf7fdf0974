"""Percentile-bootstrap intervals of recall@K and of paired differences between two methods.

A benchmark number is a mean over a sample of queries; a second sample of the same kind would give another
number. The bootstrap estimates how far: it redraws the query sample with replacement ``samples`` times
(B = 2000 by default), recomputes the recall on each redraw and reports the 2.5th and 97.5th percentiles
(the percentile interval, 95 % by default).

**What is resampled.** Queries of the real benchmark come in *families* (one concept's variants: up to three
queries per family and edit kind, several kinds per family), and queries of one family succeed or fail
together much more often than independent queries would. Resampling single queries then treats them as
independent and gives intervals that are too narrow. Passing ``clusters`` (the family of each query)
resamples whole families instead (the cluster bootstrap): the recall of a redraw is the hits of the drawn
families over their queries. That is the default of the real benchmark; benchmarks without family labels
resample queries.

**Paired differences.** Two methods evaluated on the same queries are compared by redrawing the *same*
families (or queries) for both and taking the difference on each redraw, so the variation they share (hard
and easy queries) cancels; the interval of the difference is much narrower than the two intervals side by
side suggest. A method compared with itself gives exactly 0 with the interval [0, 0]. ``excludes_zero`` says
whether the interval lies entirely on one side of 0; no p-value is computed.

Every function is deterministic for a given ``seed`` (numpy's PCG64), and the redraws depend only on the
number of clusters and the seed, so intervals of different methods on the same queries use the same redraws.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["Interval", "DEFAULT_SAMPLES", "bootstrap_recall", "paired_difference"]

DEFAULT_SAMPLES = 2000
#: redraws computed at once (bounds the samples x clusters count matrix)
_CHUNK = 256


@dataclass(frozen=True)
class Interval:
    """A point estimate (percent) with its percentile-bootstrap interval ``[lo, hi]``."""

    estimate: float
    lo: float
    hi: float
    level: float
    n: int  #: queries
    n_clusters: int  #: resampled units (= n when queries are resampled)
    resample: str  #: "query" or "family"
    samples: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or entirely below 0."""
        return self.lo > 0 or self.hi < 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Interval":
        """The inverse of `as_dict` (result files keep intervals as dicts)."""
        return cls(**{k: v for k, v in d.items() if k != "excludes_zero"})

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


def _check(samples: int, level: float) -> None:
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"bootstrap samples must be a positive integer, got {samples!r}")
    if not (isinstance(level, (int, float)) and math.isfinite(level) and 0 < level < 1):
        raise ValueError(f"the interval level must be in (0, 1), got {level!r}")


def _hits(hits: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    h = np.asarray(hits, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D vector of per-query hits, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{what} holds a non-finite value")
    return h


def _cluster_ids(clusters: Sequence[Hashable] | None, n: int) -> tuple[np.ndarray, int]:
    """Integer cluster ids 0..C-1 in order of first appearance (each query its own cluster when None)."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} queries")
    first: dict[Hashable, int] = {}
    ids = np.fromiter((first.setdefault(c, len(first)) for c in clusters), dtype=np.int64, count=n)
    return ids, len(first)


def _stats(values: np.ndarray, ids: np.ndarray, n_clusters: int, samples: int, seed: int) -> np.ndarray:
    """The mean of ``values`` over each of ``samples`` cluster redraws (ratio of drawn sums to drawn counts), in
    percent, computed as ``100 * sum / count`` like the point estimate: hits are small integers, so a redraw
    equal to the sample gives the estimate bit for bit."""
    sums = np.bincount(ids, weights=values, minlength=n_clusters)
    counts = np.bincount(ids, minlength=n_clusters).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(samples)
    for s0 in range(0, samples, _CHUNK):
        m = min(_CHUNK, samples - s0)
        draws = rng.integers(0, n_clusters, size=(m, n_clusters))
        flat = (draws + (np.arange(m) * n_clusters)[:, None]).ravel()
        weights = np.bincount(flat, minlength=m * n_clusters).reshape(m, n_clusters).astype(np.float64)
        out[s0:s0 + m] = (100.0 * (weights @ sums)) / (weights @ counts)
    return out


def _interval(values: np.ndarray, clusters: Sequence[Hashable] | None, samples: int, seed: int,
              level: float) -> Interval:
    _check(samples, level)
    ids, n_clusters = _cluster_ids(clusters, len(values))
    stats = _stats(values, ids, n_clusters, int(samples), seed)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    estimate = 100.0 * float(values.sum()) / len(values)
    return Interval(estimate, float(lo), float(hi), float(level), len(values), n_clusters,
                    "query" if clusters is None else "family", int(samples), int(seed))


def bootstrap_recall(hits: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | None = None,
                     samples: int = DEFAULT_SAMPLES, seed: int = 0, level: float = 0.95) -> Interval:
    """Recall@K (percent) of per-query ``hits`` (1 = target in the top K) with its bootstrap interval.

    ``clusters``: one label per query (its family); whole clusters are resampled. None resamples queries.
    """
    return _interval(_hits(hits, "hits"), clusters, samples, seed, level)


def paired_difference(hits_a: Sequence[float] | np.ndarray, hits_b: Sequence[float] | np.ndarray,
                      clusters: Sequence[Hashable] | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                      level: float = 0.95) -> Interval:
    """Recall of method A minus recall of method B (percentage points) on the same queries, resampled together.

    ``hits_a[i]`` and ``hits_b[i]`` must be the same query; the same redraws apply to both, so the interval is
    that of the paired difference (see the module docstring).
    """
    a, b = _hits(hits_a, "hits_a"), _hits(hits_b, "hits_b")
    if a.shape != b.shape:
        raise ValueError(f"paired hits differ in length: {a.size} and {b.size} queries")
    return _interval(a - b, clusters, samples, seed, level)

"""zscir's data layer: every trainer reads image–caption pairs and triplets through it.

``get_pair_data(SPEC)`` and ``get_triplet_data(SPEC)`` (open_clip's ``get_data`` shape: the spec's kind
selects the pipeline) accept ``world`` (the default, the procedural world in `zscir.data.world`),
WebDataset shards, manifests (CSV/TSV/JSONL/parquet, HF ImageFolder folders) and HF ``datasets``; see
docs/DATA.md. Names are imported lazily, so ``import zscir.data.world`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "get_pair_data": "pairs", "PairData": "pairs", "PairTable": "pairs",
    "get_triplet_data": "triplets", "TripletData": "triplets",
    "PairRecord": "records", "TripletRecord": "records", "Problem": "records", "Problems": "records",
    "DataError": "records", "DataSpec": "spec", "parse_spec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"zscir.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'zscir.data' has no attribute {name!r}")

"""zscir's data layer: every trainer reads image–caption pairs and triplets through it.

``get_pair_data(SPEC)`` and ``get_triplet_data(SPEC)`` (open_clip's ``get_data`` shape: the spec's kind
selects the pipeline) accept ``world`` (the default, the procedural world in `zscir.data.world`),
WebDataset shards, manifests (CSV/TSV/JSONL/parquet, HF ImageFolder folders) and HF ``datasets``; see
docs/DATA.md. The world package itself stays importable as ``zscir.data.world``.
"""

from zscir.data.pairs import PairData, PairTable, get_pair_data
from zscir.data.records import DataError, PairRecord, Problem, Problems, TripletRecord
from zscir.data.spec import DataSpec, parse_spec
from zscir.data.triplets import TripletData, get_triplet_data

__all__ = ["get_pair_data", "get_triplet_data", "PairData", "PairTable", "TripletData", "PairRecord",
           "TripletRecord", "Problem", "Problems", "DataError", "DataSpec", "parse_spec"]

"""Real benchmarks (CIRR, FashionIQ, CIRCO) evaluated exactly as their official evaluators do.

Public entry points:

* `evaluate_benchmark` — metrics + every protocol flag + method/version info as a JSON-able dict;
* `run_benchmark` — the same plus per-query rankings;
* `write_submission` / `validate_submission` — CIRR test1 and CIRCO test server files;
* `format_table` — the standard table of a result;
* `targetpad_transform` — SEARLE's padding, for composers that want to apply it themselves.

Data layouts, protocols and reference numbers: docs/BENCHMARKS.md.
"""

from .circo import load_circo
from .cirr import load_cirr
from ...data.fashioniq_captions import CAPTION_MODES, compose_fashioniq_texts
from .fashioniq import load_fashioniq
from .features import FeatureCache
from .images import targetpad_transform
from .layout import BenchmarkDataError
from .protocol import BENCHMARK_NAMES, make_protocol
from .report import format_table
from .runner import BenchmarkRun, evaluate_benchmark, run_benchmark
from .submission import SubmissionCheck, check_submission, validate_submission, write_submission

__all__ = [
    "BENCHMARK_NAMES",
    "BenchmarkDataError",
    "BenchmarkRun",
    "CAPTION_MODES",
    "FeatureCache",
    "compose_fashioniq_texts",
    "evaluate_benchmark",
    "format_table",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "make_protocol",
    "run_benchmark",
    "targetpad_transform",
    "validate_submission",
    "check_submission",
    "SubmissionCheck",
    "write_submission",
]

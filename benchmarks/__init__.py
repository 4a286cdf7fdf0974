"""zscir performance suite (docs/PERFORMANCE.md): ratios measured side by side in one run.

Run ``python -m benchmarks --help`` (or ``zscir bench --help``). Every item writes JSON plus a markdown
table; absolute times on a shared machine are noisy, so each table reports *ratios* of things measured in
the same process, minutes apart at most, as medians of several repeats.
"""

__all__ = ["__version__"]
__version__ = "0.1"

"""zscir — zero-shot composed image retrieval.

Find a target image from a reference image plus a modification text. See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

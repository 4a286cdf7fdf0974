"""Where zscir keeps its caches: one root, set by ``ZSCIR_CACHE`` (default ``~/.cache/zscir``).

Every cache zscir writes lives under this root, so one environment variable moves (or isolates, as the
tests do) all of them. The sub-folders:

* ``world/``       the procedural world benchmarks (rendered once per seed and configuration);
* ``features/``    gallery features of the real benchmarks (CIRR, FashionIQ, CIRCO), shared by methods;
* ``fusiondiff/``  Fusion-Diff's training features and caption banks;
* ``serve/``       the built-in world gallery index of ``zscir serve`` without an index folder;
* ``lit/``         frozen tower features of ``zscir train lit``.

Model files are not zscir's: the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) holds hub models.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ZSCIR_CACHE"


def cache_root() -> Path:
    """The cache root: ``$ZSCIR_CACHE`` when set (read on every call), else ``~/.cache/zscir``."""
    env = os.environ.get(ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zscir"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache (``world``, ``features``, ``fusiondiff``, ``serve``) under the root."""
    return cache_root() / kind

"""How to install an optional extra without touching the pinned torch: one wording for every message.

Why: installing an extra without the constraint file resolves its dependencies afresh; a dry run of the
``[openclip]`` extra replaced the pinned CPU torch 2.13 with torch 2.14.1 and about 18 CUDA packages
(torchvision pins the newest torch). With ``-c constraints.txt`` pip keeps ``torch==2.13.0``. tests/test_install_docs.py checks every install line of
the docs and of these messages.
"""

from __future__ import annotations

#: the optional extras of pyproject.toml
EXTRAS = ("faiss", "openclip", "peers", "data", "serve", "real", "ray", "dev")


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` from a zscir checkout, keeping the pinned torch."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; one of {', '.join(EXTRAS)}")
    return f'pip install -c constraints.txt -e ".[{extra}]" (in the zscir checkout: it keeps the pinned torch)'

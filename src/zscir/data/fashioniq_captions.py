"""FashionIQ's caption modes: how a query's two relative captions become its query text(s).

Each FashionIQ query has two relative captions written by different annotators. How they become one
query text differs between papers and moves results by several points, so the mode is a recorded
protocol flag (`compose_fashioniq_texts`):

* ``searle`` — SEARLE ``validate.py``: "c1 and c2" and "c2 and c1" are both encoded and the two
  L2-normalised query embeddings averaged (then re-normalised);
* ``pic2word`` — Pic2Word ``data.py``: "c2 and c1";
* ``join`` — ``" and ".join(captions)`` (MagicLens ``data_utils.py``).

Captions are cleaned as SEARLE does, ``c.strip(".?, ")`` (leading/trailing dots, question marks, commas and
spaces), unless ``strip_captions`` is off (Pic2Word feeds them raw). Used by the FashionIQ benchmark
(`zscir.eval.benchmarks`) and by the data layer's FashionIQ triplet reader (`zscir.data.triplet_formats`),
so it lives on the lower of the two floors.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["CAPTION_MODES", "clean_caption", "compose_fashioniq_texts"]

CAPTION_MODES = ("searle", "pic2word", "join")
_STRIP_CHARS = ".?, "


def clean_caption(caption: str) -> str:
    """SEARLE's caption cleaning: strip dots, question marks, commas and spaces at both ends."""
    return caption.strip(_STRIP_CHARS)


def compose_fashioniq_texts(captions: Sequence[str], mode: str = "searle", *, strip: bool = True) -> list[str]:
    """The query text(s) for one FashionIQ query under a caption mode.

    Returns two texts for ``searle`` (their query embeddings are averaged by the caller) and one
    otherwise. ``captions`` is the annotation's ``[c1, c2]``; ``searle`` and ``pic2word`` need exactly two.

    >>> compose_fashioniq_texts(["is red.", " has long sleeves"], "searle")
    ['is red and has long sleeves', 'has long sleeves and is red']
    >>> compose_fashioniq_texts(["is red.", "has long sleeves"], "pic2word")
    ['has long sleeves and is red']
    >>> compose_fashioniq_texts(["is red.", "has long sleeves"], "join")
    ['is red and has long sleeves']
    """
    if mode not in CAPTION_MODES:
        raise ValueError(f"unknown FashionIQ caption mode {mode!r}; expected one of {', '.join(CAPTION_MODES)}")
    caps = [clean_caption(c) if strip else c for c in captions]
    if mode == "join":
        return [" and ".join(caps)]
    if len(caps) != 2:
        raise ValueError(f"caption mode {mode!r} needs exactly two captions, got {len(caps)}")
    c1, c2 = caps
    if mode == "searle":
        return [f"{c1} and {c2}", f"{c2} and {c1}"]
    return [f"{c2} and {c1}"]

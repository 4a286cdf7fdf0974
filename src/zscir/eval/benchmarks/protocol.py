"""Protocol flags: every evaluation choice that changes a number, typed, validated and recorded.

Published zero-shot CIR tables differ in small protocol choices (how FashionIQ captions are joined,
whether CIRCO's shared concept goes into the query, SEARLE's target padding). A number is only
comparable when those choices are known, so every choice is a field here and `Protocol.as_dict()` is
written verbatim into the result JSON next to the metrics. Defaults reproduce SEARLE's ``validate.py``
(the de-facto reference implementation) except ``preprocessing``, whose default is the backbone's own
preprocessor; pass ``preprocessing="targetpad"`` to reproduce SEARLE exactly.

Flags arrive as keyword arguments (``evaluate_benchmark(..., caption_mode="pic2word")``); ``None`` means
"default" so a CLI can forward unset options unchanged, and unknown names are rejected with the list of
accepted ones rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ...data.fashioniq_captions import CAPTION_MODES
from .fashioniq import FIQ_CATEGORIES
from .images import PREPROCESSING_CHOICES, ImagePreprocessing

__all__ = ["Protocol", "CirrProtocol", "FashionIQProtocol", "CircoProtocol", "BENCHMARK_NAMES", "make_protocol"]

BENCHMARK_NAMES = ("cirr", "fashioniq", "circo")


@dataclass(frozen=True)
class Protocol:
    """Flags shared by all benchmarks."""

    #: "default" (the backbone's preprocessor only) or "targetpad" (SEARLE's padding first)
    preprocessing: str = "default"
    #: target aspect ratio of targetpad (SEARLE uses 1.25)
    targetpad_ratio: float = 1.25

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_CHOICES:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}, "
                             f"got {self.preprocessing!r}")
        if not self.targetpad_ratio > 0:
            raise ValueError(f"targetpad_ratio must be positive, got {self.targetpad_ratio}")

    @property
    def image_preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(self.preprocessing, float(self.targetpad_ratio))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing_key"] = self.image_preprocessing.key()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class CirrProtocol(Protocol):
    """CIRR: full-split gallery, reference removed, R@{1,5,10,50}, Recall_subset@{1,2,3}."""

    #: delete the reference image from every ranking (the official protocol; off only for analysis)
    remove_reference: bool = True
    ks: tuple[int, ...] = (1, 5, 10, 50)
    subset_ks: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class FashionIQProtocol(Protocol):
    """FashionIQ: per-category gallery (the category's split), reference kept, R@10/R@50."""

    #: how the two relative captions become the query: "searle", "pic2word" or "join"
    caption_mode: str = "searle"
    #: strip ".?, " from both ends of each caption (SEARLE); Pic2Word feeds raw captions
    strip_captions: bool = True
    categories: tuple[str, ...] = FIQ_CATEGORIES
    ks: tuple[int, ...] = (10, 50)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.caption_mode not in CAPTION_MODES:
            raise ValueError(f"caption_mode must be one of {', '.join(CAPTION_MODES)}, got {self.caption_mode!r}")
        object.__setattr__(self, "categories", tuple(self.categories))
        bad = [c for c in self.categories if c not in FIQ_CATEGORIES]
        if bad or not self.categories:
            raise ValueError(f"categories must be a non-empty subset of {', '.join(FIQ_CATEGORIES)}, got {bad}")


@dataclass(frozen=True)
class CircoProtocol(Protocol):
    """CIRCO: mAP@{5,10,25,50} over all ground truths, Recall@K of target_img_id, semantic mAP@10."""

    #: put the annotation's shared_concept into the query text (off: SEARLE, LinCIR, CIReVL; on: MagicLens)
    use_shared_concept: bool = False
    #: how caption and shared concept are combined when use_shared_concept is on (MagicLens' template)
    shared_concept_template: str = "find {shared_concept} but {caption}"
    ks: tuple[int, ...] = (5, 10, 25, 50)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.shared_concept_template.format(shared_concept="x", caption="y")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"shared_concept_template must use only {{shared_concept}} and {{caption}}: {e}") from None

    def query_text(self, caption: str, shared_concept: str | None) -> str:
        if not self.use_shared_concept or not shared_concept:
            return caption
        return self.shared_concept_template.format(shared_concept=shared_concept, caption=caption)


_CLASSES: dict[str, type[Protocol]] = {"cirr": CirrProtocol, "fashioniq": FashionIQProtocol, "circo": CircoProtocol}
#: protocol fields that describe the benchmark rather than a user choice
_FIXED = {"ks", "subset_ks"}


def make_protocol(benchmark: str, **flags: Any) -> Protocol:
    """Build the protocol of ``benchmark`` from keyword flags (``None`` = default)."""
    try:
        cls = _CLASSES[benchmark]
    except KeyError:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARK_NAMES)}") from None
    accepted = {f.name for f in fields(cls)} - _FIXED
    given = {k: v for k, v in flags.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(f"unknown protocol flag(s) for {benchmark}: {', '.join(unknown)}; "
                         f"accepted: {', '.join(sorted(accepted))}")
    types = {f.name: str(f.type) for f in fields(cls)}
    return cls(**{k: _coerce(k, v, types[k]) for k, v in given.items()})


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, type_name: str) -> Any:
    """Accept CLI spellings ("false", "1.25", "dress,shirt") for typed flags; reject the wrong type."""
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"protocol flag {name} expects true/false, got {value!r}")
    if type_name == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"protocol flag {name} expects a number, got {value!r}") from None
    if type_name.startswith("tuple"):
        if isinstance(value, str):
            return tuple(c.strip() for c in value.split(",") if c.strip())
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ValueError(f"protocol flag {name} expects a comma-separated list, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"protocol flag {name} expects a string, got {value!r}")
    return value

"""The procedural CIR world: a deterministic, seeded composed-image-retrieval playground.

Images are 64 px renders of simple scenes -- 1-4 coloured shapes (7 shapes, 12 colours, 2 sizes,
3 textures) in the cells of a 3x3 grid on one of 4 backgrounds -- in the spirit of CSS (Vo et al.,
CVPR 2019).  Because every image is a rendered scene graph, every caption, edit and ground truth
is exact, which makes the world useful both to *train* small models (image-caption pairs for a
tiny CLIP; HQ rendered and LQ caption-mined triplets) and to *evaluate* them on a held-out
benchmark written in the official CIRR and CIRCO file formats (unseen scenes, unseen sentence
templates, unseen (shape, colour) compositions).  See docs/WORLD.md.

Everything is a pure function of :class:`WorldConfig` (and :data:`WORLD_VERSION`).
"""

from .benchmark import WorldBenchmark, generate_benchmark, training_keys
from .captions import (CAPTION_STYLES, canonical_caption, caption, caption_variants,
                       referring_expression)
from .circo import CircoQuery
from .cirr import CirrQuery, CirrSet
from .config import DEFAULT_HELDOUT, WORLD_VERSION, WorldConfig
from .constraints import Constraint, ObjPattern, satisfies
from .edits import EDIT_KINDS, EditSpec, applicable_kinds, apply_edit, random_edit
from .io import (ensure_benchmark, is_cached, read_pairs_jsonl, read_triplets_jsonl,
                 write_benchmark, write_pairs_jsonl, write_triplets_jsonl)
from .pairs import Pair, generate_pairs
from .phrasing import PHRASINGS, TEMPLATES, UNDERSPECIFIED_TEMPLATES, phrase_edit, templates_for
from .render import render, render_batch
from .scene import Obj, Scene, sample_scene
from .triplets import SceneRef, Triplet, generate_triplets
from .underspecified import UNDERSPECIFIED_KINDS, underspecified_edit, valid_targets

__all__ = [
    "WORLD_VERSION", "WorldConfig", "DEFAULT_HELDOUT",
    "Obj", "Scene", "sample_scene",
    "render", "render_batch",
    "CAPTION_STYLES", "caption", "caption_variants", "canonical_caption", "referring_expression",
    "EDIT_KINDS", "EditSpec", "apply_edit", "applicable_kinds", "random_edit",
    "UNDERSPECIFIED_KINDS", "underspecified_edit", "valid_targets",
    "Constraint", "ObjPattern", "satisfies",
    "PHRASINGS", "TEMPLATES", "UNDERSPECIFIED_TEMPLATES", "phrase_edit", "templates_for",
    "Pair", "generate_pairs", "SceneRef", "Triplet", "generate_triplets",
    "WorldBenchmark", "CirrSet", "CirrQuery", "CircoQuery", "generate_benchmark", "training_keys",
    "write_benchmark", "ensure_benchmark", "is_cached", "write_pairs_jsonl",
    "write_triplets_jsonl", "read_pairs_jsonl", "read_triplets_jsonl",
]

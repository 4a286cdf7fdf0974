"""A real-picture CIR benchmark with exact ground truth, rendered from Debian packages at build time.

Emoji and Tux Paint stamps come with *exact* variants: the font has a glyph for "thumbs up: dark skin tone"
next to "thumbs up", for "woman frowning" next to "person frowning", for "man: red hair" next to "man"; a
tintable stamp recoloured red is the red variant of that stamp. So "reference + modification → target"
has one right answer, known by construction, on real drawn pictures:

* emoji edits (`zscir.data.real.split.emoji_slots`): skin tone, gender, hair, colour — the target differs
  from the reference in exactly that attribute;
* stamp tints: a stamp (or one of its tints) → the same stamp in another tint colour;
* style (real-v3): an emoji → the same emoji (``emoji_id``) drawn in another art style ("as black line art",
  "in a flat style"); attribute edits stay within one style (reference and target drawn alike).

The gallery is every picture of the chosen sources (`RealBenchmarkConfig.sources`; default: Noto, Twemoji,
OpenMoji colour and black, Fluent colour, flat and high-contrast, and every stamp and tint: ~23K pictures,
flattened onto white; ``("emoji", "tuxpaint")`` is the Noto-only real-v2 gallery of ~5.9K). An emoji
concept is one family in every style (`zscir.data.real.split.item_family` reads every style's CLDR name),
so the split by family is a split across styles. Per-family caps (``per_family`` per attribute edit kind,
``per_family_style`` for the style kinds) keep a concept with 25 tone combinations in 7 styles from
outweighing one with a single picture per style.

Queries come only from *test* or *val* families of the concept split (`zscir.data.real.split`), which
the real training corpus leaves out (``build_real_corpus.py --exclude-split``). Modification
phrasings are written here and share no template with ``zscir data make-triplets`` (checked by a test).

Layout, per split (``test``, ``val``), in the formats the protocol code reads:

* ``<split>/captions/cap.rc2.val.json`` + ``<split>/image_splits/split.rc2.val.json`` + ``<split>/dev/`` —
  CIRR (one exact target; ``img_set.members`` = the reference and the other values of the edited attribute);
* ``<split>/annotations/val.json`` + ``<split>/unlabeled2017/`` — CIRCO (several valid targets: "in a
  different skin tone", "as a different gender", "in a different colour", "in any other art style");
* ``<split>/meta.json`` — the edit kind of each query (for per-kind breakdowns).

Pixel-identical pictures (a few glyphs the font draws the same — skin tones of the snowboarder, some
flags —, a tint that does not change a stamp) are found by a hash of the rendered pixels: each group keeps
its first picture in listing order, the others leave the gallery, queries are rewritten onto the kept
picture (a query whose target becomes its reference is dropped; several-target queries lose duplicates),
and the families of one group go into one split (two flags drawn alike are never test and train) — unless the
group spans `GENERIC_FAMILIES` or more families (OpenMoji's black line art draws every flag as one
outline): such a picture is in no query and ties no families. Dropping rather than listing every copy as
a correct target keeps one exact target per CIRR query and keeps R@K comparable; the groups are listed in
``benchmark.json`` (``identical``).

(The protocol code evaluates CIRR's and CIRCO's ``val`` files, so both splits use those file names.) The
images are written once under ``images/`` and hard-linked (same bytes and mtime, so the feature cache is
shared between the two splits). Same packages + same config → byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import hashlib
import random
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from zscir.data.outdir import OutputFolderError, Recorder, prepare_out, start_marker
from zscir.data.real.corpus import fit_square, png_bytes
from zscir.data.real.item import RealItem, SourceMissing
from zscir.data.real.render import render_items
from zscir.data.real.sources import BENCHMARK_SOURCES, DEFAULT_BENCHMARK_SOURCES, V2_SOURCES, RealSources
from zscir.data.real.split import TONES, ConceptSplit, emoji_slots, item_family, write_split

logger = logging.getLogger(__name__)

#: real-v3: every installed emoji style (npm packages) beside Noto, attribute edits within each style, the
#: ``style`` / ``any_style`` edits between styles; real-v2: one family per concept whatever the gender / tone
#: / number of people (split version 2), pixel-identical pictures merged (`merge_identical`). Older caches are
#: not reused
BENCHMARK_VERSION = "real-v3"
MARKER = "benchmark.json"
CREATED_BY = "zscir real benchmark"
SPLITS = ("test", "val")
#: every name the builder writes into its folder (a rebuild deletes only recorded files of these names)
PATTERNS = ("split.json", "images/*.png", *(f"{s}/{n}" for s in SPLITS for n in (
    "dev/*.png", "unlabeled2017/*.png", "captions/cap.rc2.val.json", "image_splits/split.rc2.val.json",
    "annotations/val.json", "meta.json")))
#: modification phrasings (none is a template of zscir.data.synth.templates.PHRASES)
PHRASINGS: dict[str, tuple[str, ...]] = {
    "tone": ("switch to {v} skin tone", "now in {v} skin tone"),
    "gender": ("as a {v}", "turn them into a {v}"),
    "hair": ("give them {v}", "now with {v}"),
    "bald": ("give them a bald head", "shave their head"),
    "colour": ("paint it {v}", "recolour it {v}"),
    "tint": ("paint it {v}", "recolour it {v}"),
    "any_tone": ("in a different skin tone", "any skin tone but this one"),
    "any_gender": ("as a different gender", "any gender but this one"),
    "any_colour": ("in a different colour", "any colour but this one"),
    "style": ("redraw this emoji {v}", "this very emoji, rendered {v}"),
    "any_style": ("this emoji drawn by another artist", "this emoji in any other art style"),
}
#: how the ``style`` phrasings name a target style (none is `zscir.data.synth.variants.STYLE_WORDS`' text)
STYLE_PHRASES = {
    "noto": "as a glossy Noto Color Emoji glyph", "google": "as a glossy Noto Color Emoji glyph",
    "twemoji": "in Twitter's flat Twemoji look", "twitter": "in Twitter's flat Twemoji look",
    "openmoji": "as an OpenMoji with black contour lines", "openmoji-black": "as black line art",
    "fluent-color": "with Fluent's soft colour gradients", "fluent-flat": "in a flat style",
    "fluent-high-contrast": "as a high-contrast black-and-white icon",
}
#: styles that are one artwork (emoji-datasource-google ships Noto's, -twitter Twemoji's): never a style edit
SAME_LOOK = {"google": "noto", "twitter": "twemoji"}
#: `zscir.data.real.corpus.READERS` names the benchmark may take (``--sources``); the default leaves out
#: emoji-google / emoji-twitter (the Noto and Twemoji artworks again, rasterised differently: near-copies in
#: the gallery would make every exact target ambiguous)
DEFAULT_SOURCES = DEFAULT_BENCHMARK_SOURCES  #: (owned by `zscir.data.real.sources`)
GENDER_WORDS = {"person": "gender-neutral person", "man": "man", "woman": "woman"}


class BenchmarkBuildError(OutputFolderError):
    """A user mistake or missing packages (printed as one ``error:`` line)."""


@dataclass
class RealBenchmarkConfig:
    seed: int = 0
    image_size: int = 160
    test: float = 0.2  #: share of families in the test split
    val: float = 0.1  #: share of families in the validation split
    per_family: int = 3  #: at most this many queries per (family, edit kind) for the attribute edits
    per_family_style: int = 6  #: at most this many ``style`` (and ``any_style``) queries per family
    families: tuple[str, ...] = ()  #: only these families in the gallery (small builds for tests); () = all
    sources: tuple[str, ...] = DEFAULT_SOURCES  #: `BENCHMARK_SOURCES` names, in gallery order
    workers: int = 1  #: processes rendering the gallery (the output does not depend on it)

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        self.families = tuple(self.families)
        bad = [s for s in self.sources if s not in BENCHMARK_SOURCES]
        if bad or not self.sources:
            raise BenchmarkBuildError(f"unknown benchmark source(s) {', '.join(bad) or '(none)'}: expected some "
                                      f"of {', '.join(BENCHMARK_SOURCES)}")
        if self.per_family < 1 or self.per_family_style < 0:
            raise BenchmarkBuildError("per-family caps must be positive (style: >= 0)")
        if not (0 <= self.test and 0 <= self.val and self.test + self.val <= 1):
            raise BenchmarkBuildError(f"split fractions test={self.test} val={self.val}: each >= 0, sum <= 1")

    def identity(self) -> dict:
        """What the files depend on (``workers`` does not): recorded in and compared with ``benchmark.json``."""
        d = asdict(self)
        d.pop("workers")
        return d


@dataclass(frozen=True)
class Query:
    kind: str
    reference: str
    caption: str
    targets: tuple[str, ...]  #: one for exact edits, several for CIRCO-style ones
    members: tuple[str, ...] = ()
    family: str = ""


def gallery_items(sources: RealSources | None = None, warn: bool = True,
                  names: tuple[str, ...] = DEFAULT_SOURCES) -> list[RealItem]:
    """Every picture of the sources ``names`` (`BENCHMARK_SOURCES`) in that order, each in listing order;
    missing packages are skipped (with a warning unless ``warn`` is False); none at all raises
    `BenchmarkBuildError`."""
    from zscir.data.real.corpus import READERS

    sources = sources or RealSources()
    items: list[RealItem] = []
    missing = []
    for name in names:
        try:
            items.extend(READERS[name](sources))
        except SourceMissing as e:
            missing.append(f"{name}: {e}")
    if not items:
        raise BenchmarkBuildError("the real pictures need their packages: " + "; ".join(missing))
    for m in missing if warn else ():
        logger.warning("real benchmark without a source: %s", m)
    return items


def select_families(items: list[RealItem], n: int) -> tuple[str, ...]:
    """The first ``n`` families (alphabetical) of ``items``: a small, still multi-style build for tests."""
    return tuple(sorted({item_family(it.metadata()) for it in items})[:n])


def style_of(it: RealItem) -> str | None:
    """An emoji item's art style ("noto" for Debian's font), None for a stamp."""
    if it.source == "fonts-noto-color-emoji":
        return str(it.extra.get("style") or "noto")
    return it.extra.get("style") if it.extra.get("emoji_id") else None


def _phrase(kind: str, value: str, rng: random.Random) -> str:
    return rng.choice(PHRASINGS[kind]).format(v=value)


def _emoji_queries(items: list[RealItem], rng: random.Random) -> list[Query]:
    """Exact single-attribute edits and several-target edits between emoji glyphs."""
    slots = {it.key: emoji_slots(it.caption) for it in items}
    attrs = {"tone": 3, "gender": 1, "hair": 4, "colour": 2}
    # per edited attribute: the other four slots → {value of the attribute: first glyph with it}
    variants: dict[int, dict[tuple, dict[Any, str]]] = {pos: defaultdict(dict) for pos in attrs.values()}
    for it in items:
        s = slots[it.key]
        sig = (s.template, s.gender, s.colour, s.tone, s.hair)
        for pos in attrs.values():
            variants[pos][sig[:pos] + sig[pos + 1:]].setdefault(sig[pos], it.key)
    out: list[Query] = []
    for it in items:
        s = slots[it.key]
        if s.tone == "multi":
            continue
        sig = (s.template, s.gender, s.colour, s.tone, s.hair)
        for attr, pos in attrs.items():
            if sig[pos] is None and attr in ("gender", "colour"):
                continue
            alts = {v: k for v, k in variants[pos][sig[:pos] + sig[pos + 1:]].items()
                    if v is not None and v != sig[pos]}
            if attr == "tone":
                alts = {v: k for v, k in alts.items() if v in TONES}
            if not alts:
                continue
            members = tuple([it.key] + [alts[v] for v in sorted(alts)])
            for value in sorted(alts):
                if attr == "hair" and value == "bald":
                    mod = _phrase("bald", value, rng)
                elif attr == "gender":
                    mod = _phrase("gender", GENDER_WORDS[value], rng)
                else:
                    mod = _phrase(attr, value, rng)
                out.append(Query(attr, it.key, mod, (alts[value],), members, s.family))
            if attr in ("tone", "gender", "colour") and len(alts) >= 2:
                out.append(Query(f"any_{attr}", it.key, _phrase(f"any_{attr}", "", rng),
                                 tuple(alts[v] for v in sorted(alts)), members, s.family))
    return out


def _stamp_queries(items: list[RealItem], rng: random.Random) -> list[Query]:
    """A stamp or one of its tints → the same stamp in another tint colour."""
    groups: dict[str, dict[str | None, str]] = defaultdict(dict)
    for it in items:
        groups[it.extra.get("file", it.key)][it.variant.get("tint")] = it.key
    out: list[Query] = []
    for file, variants in groups.items():
        tints = sorted(t for t in variants if t is not None)
        if len(tints) < 2:
            continue
        family = item_family({"source": "tuxpaint", "concept": next(i.concept for i in items
                                                                    if i.key == variants[tints[0]])})
        members = tuple([variants[None]] if None in variants else []) + tuple(variants[t] for t in tints)
        for ref_tint in [None] + tints:
            if ref_tint not in variants:
                continue
            others = [t for t in tints if t != ref_tint]
            for t in others:
                out.append(Query("tint", variants[ref_tint], _phrase("tint", t, rng), (variants[t],), members, family))
            out.append(Query("any_colour", variants[ref_tint], _phrase("any_colour", "", rng),
                             tuple(variants[t] for t in others), members, family))
    return out


def _style_queries(items: list[RealItem], rng: random.Random) -> list[Query]:
    """The same emoji (``emoji_id``) in another style: one exact query per (reference, other look), and one
    several-target query (every other look) per reference. Styles of one artwork (`SAME_LOOK`) never pair."""
    by_id: dict[str, dict[str, str]] = defaultdict(dict)
    fam: dict[str, str] = {}
    for it in items:
        style = style_of(it)
        if style is None:
            continue
        eid = str(it.extra["emoji_id"])
        by_id[eid].setdefault(style, it.key)
        fam.setdefault(eid, emoji_slots(it.caption).family)
    out: list[Query] = []
    for eid in sorted(by_id):
        styles = by_id[eid]
        members = tuple(styles.values())
        for ref_style, ref in styles.items():
            others = [s for s in styles if SAME_LOOK.get(s, s) != SAME_LOOK.get(ref_style, ref_style)]
            for s in others:
                words = STYLE_PHRASES.get(s, f"in the {s} style")
                out.append(Query("style", ref, _phrase("style", words, rng), (styles[s],), members, fam[eid]))
            if len(others) >= 2:
                out.append(Query("any_style", ref, _phrase("any_style", "", rng), tuple(styles[s] for s in others),
                                 members, fam[eid]))
    return out


def _subsample(queries: list[Query], split: ConceptSplit, which: str, cfg: RealBenchmarkConfig) -> list[Query]:
    """At most `RealBenchmarkConfig.per_family` queries per (family, kind) of the ``which`` split
    (``per_family_style`` for the style kinds), seeded, in a stable order."""
    groups: dict[tuple[str, str], list[Query]] = defaultdict(list)
    for q in queries:
        if split.split_of(q.family) == which:
            groups[(q.family, q.kind)].append(q)
    out = []
    for key in sorted(groups):
        qs = groups[key]
        cap = cfg.per_family_style if key[1] in ("style", "any_style") else cfg.per_family
        rng = random.Random(f"{cfg.seed}:{which}:{key}")
        out.extend(qs if len(qs) <= cap else rng.sample(qs, cap))
    return out


def plan(cfg: RealBenchmarkConfig, items: list[RealItem],
         identical: list[list[str]] = ()) -> tuple[ConceptSplit, dict[str, list[Query]]]:
    """The concept split and the queries of each split (no image is rendered). ``identical`` (groups of keys
    with the same pixels, `identical_groups`) puts their families into one split and merges their queries;
    a `generic_groups` picture is in no query and ties no families."""
    family = {it.key: item_family(it.metadata()) for it in items}
    generic = generic_groups(identical, family)
    identical = [g for g in identical if g not in generic]
    together = [{family[k] for k in g if k in family} for g in identical]
    split = ConceptSplit.from_families(set(family.values()), cfg.seed, cfg.test, cfg.val,
                                       together=[t for t in together if len(t) > 1])
    rng = random.Random(f"{cfg.seed}:phrasing")
    by_style: dict[str, list[RealItem]] = defaultdict(list)
    for it in items:
        if (style := style_of(it)) is not None:
            by_style[style].append(it)
    stamps = [it for it in items if it.source == "tuxpaint-stamps-default"]
    queries = [q for style in by_style for q in _emoji_queries(by_style[style], rng)]  # within one style
    queries += _stamp_queries(stamps, rng) + _style_queries(items, rng)
    queries = merge_identical(drop_keys(queries, {k for g in generic for k in g}), list(identical))
    return split, {s: _subsample(queries, split, s, cfg) for s in SPLITS}


#: a picture drawn identically for at least this many families (OpenMoji's black line art draws every flag
#: as one outline) identifies none of them: it is in no query, and its families are not tied into one split
#: (which would put 300 flags into one split); two families drawn alike (Noto's Australia and Heard Island
#: flags) still share one split, as in real-v2
GENERIC_FAMILIES = 3


def generic_groups(identical: list[list[str]], family: dict[str, str]) -> list[list[str]]:
    """The groups of ``identical`` whose pictures belong to at least `GENERIC_FAMILIES` families."""
    return [g for g in identical if len({family[k] for k in g if k in family}) >= GENERIC_FAMILIES]


def drop_keys(queries: list[Query], keys: set[str]) -> list[Query]:
    """Queries without the pictures ``keys``: a reference among them drops the query, a target is removed
    (a query left without a target, or an exact query that lost its one, is dropped)."""
    out = []
    for q in queries:
        targets = tuple(t for t in q.targets if t not in keys)
        several = q.kind.startswith("any_")
        if q.reference in keys or len(targets) < (2 if several else 1) or (not several and targets != q.targets):
            continue
        out.append(q if targets == q.targets else Query(q.kind, q.reference, q.caption, targets, q.members,
                                                        q.family))
    return out


def pixel_hash(im) -> str:
    """SHA-256 of a rendered picture's size, mode and pixels (not of its PNG bytes)."""
    import hashlib

    return hashlib.sha256(f"{im.mode}{im.size}".encode() + im.tobytes()).hexdigest()


def identical_groups(hashes: dict[str, str]) -> list[list[str]]:
    """Groups (≥ 2 keys, in the order given) of pictures with the same `pixel_hash`."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for key, h in hashes.items():
        by_hash[h].append(key)
    return [g for g in by_hash.values() if len(g) > 1]


def merge_identical(queries: list[Query], groups: list[list[str]]) -> list[Query]:
    """Queries rewritten onto the first picture of each identical group (see the module docstring)."""
    canon = {k: g[0] for g in groups for k in g[1:]}
    out = []
    for q in queries:
        ref = canon.get(q.reference, q.reference)
        targets = tuple(dict.fromkeys(t2 for t in q.targets if (t2 := canon.get(t, t)) != ref))
        if not targets:
            continue
        members = tuple(dict.fromkeys(canon.get(m, m) for m in q.members))
        out.append(Query(q.kind, ref, q.caption, targets, members, q.family))
    return out


def _dump(rec: Recorder, name: str, obj: Any) -> None:
    rec.mkdir(name.rsplit("/", 1)[0])
    rec.write_bytes(name, (json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def _link(rec: Recorder, src: str, dst: str) -> None:
    target = rec.claim(dst)
    try:
        os.link(rec.out / src, target)
    except OSError:  # a file system without hard links: a copy with the same mtime
        shutil.copy2(rec.out / src, target)
    rec.done(dst, same_as=src)


def _marker(root: Path) -> dict:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def is_complete(root: Path) -> bool:
    """Whether ``root`` holds a finished build of this benchmark version (any configuration)."""
    d = _marker(root)
    return bool(d.get("complete")) and d.get("version") == BENCHMARK_VERSION


def built_from(root: Path, sources: RealSources | None = None) -> bool:
    """Whether the build in ``root`` was rendered from the package files ``sources`` (older builds: Debian's)."""
    return _marker(root).get("sources", RealSources().as_dict()) == (sources or RealSources()).as_dict()


def is_built(root: Path, cfg: RealBenchmarkConfig, sources: RealSources | None = None) -> bool:
    """Whether ``root`` holds a finished build of exactly ``cfg`` from the package files ``sources``."""
    return (is_complete(root) and _marker(root).get("config") == json.loads(json.dumps(cfg.identity()))
            and built_from(root, sources))


def build_benchmark(root: str | Path, cfg: RealBenchmarkConfig | None = None, progress: bool = True,
                    sources: RealSources | None = None) -> dict:
    """Render the gallery and write both splits into ``root`` (new, empty, or an earlier build)."""
    cfg = cfg or RealBenchmarkConfig()
    sources = sources or RealSources()
    root = Path(root)
    items = gallery_items(sources, names=cfg.sources)
    if cfg.families:
        items = [it for it in items if item_family(it.metadata()) in set(cfg.families)]
    prepare_out(root, MARKER, "the real benchmark builder", PATTERNS)
    dirs = ["images", *SPLITS]
    rec = start_marker(root, MARKER, CREATED_BY, dirs)
    files: list[str] = []
    skipped: list[str] = []
    keys: list[str] = []
    pixels: dict[str, str] = {}
    first_of: set[str] = set()
    encode = lambda im: png_bytes(fit_square(im, cfg.image_size))  # noqa: E731 - run in the workers
    started = time.monotonic()
    for it, data, err in tqdm(render_items(items, encode, cfg.workers), total=len(items),
                              desc="render real benchmark", unit="img", disable=not progress):
        if data is None:  # a glyph the font lacks, a broken stamp, a refused SVG: not in the gallery
            skipped.append(f"{it.key}: {err}")
            continue
        # the PNG encoder is deterministic: the same pixels give the same bytes, so hashing them is
        # `pixel_hash` without keeping 20,000 pictures in memory; the first of a group is written
        pixels[it.key] = digest = hashlib.sha256(data).hexdigest()
        if digest in first_of:
            continue
        first_of.add(digest)
        p = rec.claim(f"images/{it.key}.png")
        p.write_bytes(data)
        os.utime(p, (0, 0))  # a fixed mtime: the feature cache fingerprint is the same for every build
        rec.done(f"images/{it.key}.png", data)
        keys.append(it.key)
    render_s = time.monotonic() - started
    identical = identical_groups(pixels)
    dropped = {k for g in identical for k in g[1:]}
    if identical:
        logger.info("real benchmark: %d groups of pixel-identical pictures, %d duplicates dropped: %s",
                    len(identical), len(dropped), "; ".join(" = ".join(g) for g in identical[:10]))
    split, queries = plan(cfg, items, identical)
    present = set(keys)
    ids = {k: i + 1 for i, k in enumerate(keys)}
    concepts = {it.key: it.concept for it in items}
    counts = {}
    for s in SPLITS:
        qs = [q for q in queries[s] if q.reference in present and all(t in present for t in q.targets)]
        rec.mkdir(f"{s}/dev")
        rec.mkdir(f"{s}/unlabeled2017")
        for k in keys:
            _link(rec, f"images/{k}.png", f"{s}/dev/{k}.png")
            _link(rec, f"images/{k}.png", f"{s}/unlabeled2017/{ids[k]:012d}.png")
        exact = [q for q in qs if len(q.targets) == 1 and not q.kind.startswith("any_")]
        several = [q for q in qs if q.kind.startswith("any_")]
        cirr = [{"pairid": i, "reference": q.reference, "caption": q.caption, "target_hard": q.targets[0],
                 "target_soft": {q.targets[0]: 1.0}, "img_set": {"id": i, "members": [m for m in q.members
                                                                                     if m in present]}}
                for i, q in enumerate(exact)]
        circo = [{"id": i, "reference_img_id": ids[q.reference], "relative_caption": q.caption,
                  "shared_concept": concepts[q.reference],
                  "target_img_id": ids[q.targets[0]], "gt_img_ids": [ids[t] for t in q.targets],
                  "semantic_aspects": []} for i, q in enumerate(several)]
        _dump(rec, f"{s}/captions/cap.rc2.val.json", cirr)
        _dump(rec, f"{s}/image_splits/split.rc2.val.json", {k: f"./dev/{k}.png" for k in keys})
        _dump(rec, f"{s}/annotations/val.json", circo)
        _dump(rec, f"{s}/meta.json", {"cirr": {str(i): {"kind": q.kind, "family": q.family}
                                               for i, q in enumerate(exact)},
                                      "circo": {str(i): {"kind": q.kind, "family": q.family}
                                                for i, q in enumerate(several)}})
        kinds: dict[str, int] = defaultdict(int)
        for q in exact + several:
            kinds[q.kind] += 1
        counts[s] = {"cirr": len(cirr), "circo": len(circo), "families": len({q.family for q in qs}),
                     "cirr_families": len({q.family for q in exact}), "kinds": dict(sorted(kinds.items()))}
    write_split(split, rec.claim("split.json"))
    rec.done("split.json")
    files.append("split.json")
    summary = {"created_by": CREATED_BY, "complete": True, "version": BENCHMARK_VERSION, "config": cfg.identity(),
               "sources": sources.as_dict(),
               "dirs": dirs, "files": files, "n_gallery": len(keys), "skipped": skipped, "queries": counts,
               "identical": identical,
               "generic": generic_groups(identical, {it.key: item_family(it.metadata()) for it in items}),
               "ids": ids}
    rec.finish(summary, indent=1, ensure_ascii=False, sort_keys=True)
    logger.info("real benchmark: %d pictures rendered in %.1f s (%d workers)", len(items), render_s, cfg.workers)
    return {**summary, "render_seconds": round(render_s, 1)}  # not in the file: a rebuild is byte-identical

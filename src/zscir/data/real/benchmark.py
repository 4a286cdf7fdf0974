"""A real-picture CIR benchmark with exact ground truth, rendered from Debian packages at build time.

Emoji and Tux Paint stamps come with *exact* variants: the font has a glyph for "thumbs up: dark skin tone"
next to "thumbs up", for "woman frowning" next to "person frowning", for "man: red hair" next to "man"; a
tintable stamp recoloured red is the red variant of that stamp. So "reference + modification → target"
has one right answer, known by construction, on real drawn pictures:

* emoji edits (`zscir.data.real.split.emoji_slots`): skin tone, gender, hair, colour — the target differs
  from the reference in exactly that attribute;
* stamp tints: a stamp (or one of its tints) → the same stamp in another tint colour.

The gallery is every emoji glyph of the font plus every stamp and tint (~5.9K pictures, flattened onto
white). Queries come only from *test* or *val* families of the concept split (`zscir.data.real.split`),
which the real training corpus leaves out (``build_real_corpus.py --exclude-split``). Modification
phrasings are written here and share no template with ``zscir data make-triplets`` (checked by a test).

Layout, per split (``test``, ``val``), in the formats the protocol code reads:

* ``<split>/captions/cap.rc2.val.json`` + ``<split>/image_splits/split.rc2.val.json`` + ``<split>/dev/`` —
  CIRR (one exact target; ``img_set.members`` = the reference and the other values of the edited attribute);
* ``<split>/annotations/val.json`` + ``<split>/unlabeled2017/`` — CIRCO (several valid targets: "in a
  different skin tone", "as a different gender", "in a different colour");
* ``<split>/meta.json`` — the edit kind of each query (for per-kind breakdowns).

Pixel-identical pictures (a few glyphs the font draws the same — skin tones of the snowboarder, some
flags —, a tint that does not change a stamp) are found by a hash of the rendered pixels: each group keeps
its first picture in listing order, the others leave the gallery, queries are rewritten onto the kept
picture (a query whose target becomes its reference is dropped; several-target queries lose duplicates),
and the families of one group go into one split (two flags drawn alike are never test and train). Dropping rather than listing every copy as
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
import random
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from zscir.data.outdir import OutputFolderError, Recorder, prepare_out, start_marker
from zscir.data.real.corpus import fit_square, png_bytes
from zscir.data.real.item import RealItem, SourceMissing
from zscir.data.real.sources import RealSources
from zscir.data.real.split import TONES, ConceptSplit, emoji_slots, item_family, write_split

logger = logging.getLogger(__name__)

#: real-v2: one family per concept whatever the gender / tone / number of people (split version 2), and
#: pixel-identical gallery pictures merged (`merge_identical`); real-v1 caches are not reused
BENCHMARK_VERSION = "real-v2"
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
}
GENDER_WORDS = {"person": "gender-neutral person", "man": "man", "woman": "woman"}


class BenchmarkBuildError(OutputFolderError):
    """A user mistake or missing packages (printed as one ``error:`` line)."""


@dataclass
class RealBenchmarkConfig:
    seed: int = 0
    image_size: int = 160
    test: float = 0.2  #: share of families in the test split
    val: float = 0.1  #: share of families in the validation split
    per_family: int = 3  #: at most this many queries per (family, edit kind)
    families: tuple[str, ...] = ()  #: only these families in the gallery (small builds for tests); () = all


@dataclass(frozen=True)
class Query:
    kind: str
    reference: str
    caption: str
    targets: tuple[str, ...]  #: one for exact edits, several for CIRCO-style ones
    members: tuple[str, ...] = ()
    family: str = ""


def gallery_items(sources: RealSources | None = None, warn: bool = True) -> list[RealItem]:
    """Every emoji glyph and every stamp (with its tints), in listing order; missing packages are skipped
    (with a warning unless ``warn`` is False); none at all raises `BenchmarkBuildError`."""
    from zscir.data.real.emoji import read_emoji
    from zscir.data.real.tuxpaint import read_stamps

    sources = sources or RealSources()
    items: list[RealItem] = []
    missing = []
    for reader in (lambda: read_emoji(Path(sources.emoji_font), Path(sources.emoji_test)),
                   lambda: read_stamps(Path(sources.tuxpaint_dir))):
        try:
            items.extend(reader())
        except SourceMissing as e:
            missing.append(str(e))
    if not items:
        raise BenchmarkBuildError("the real pictures need Debian packages: " + "; ".join(missing))
    for m in missing if warn else ():
        logger.warning("real benchmark without a source: %s", m)
    return items


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


def _subsample(queries: list[Query], split: ConceptSplit, which: str, per_family: int, seed: int) -> list[Query]:
    """At most ``per_family`` queries per (family, kind) of the ``which`` split, seeded, in a stable order."""
    groups: dict[tuple[str, str], list[Query]] = defaultdict(list)
    for q in queries:
        if split.split_of(q.family) == which:
            groups[(q.family, q.kind)].append(q)
    out = []
    for key in sorted(groups):
        qs = groups[key]
        rng = random.Random(f"{seed}:{which}:{key}")
        out.extend(qs if len(qs) <= per_family else rng.sample(qs, per_family))
    return out


def plan(cfg: RealBenchmarkConfig, items: list[RealItem],
         identical: list[list[str]] = ()) -> tuple[ConceptSplit, dict[str, list[Query]]]:
    """The concept split and the queries of each split (no image is rendered). ``identical`` (groups of keys
    with the same pixels, `identical_groups`) puts their families into one split and merges their queries."""
    family = {it.key: item_family(it.metadata()) for it in items}
    together = [{family[k] for k in g if k in family} for g in identical]
    split = ConceptSplit.from_families(set(family.values()), cfg.seed, cfg.test, cfg.val,
                                       together=[t for t in together if len(t) > 1])
    rng = random.Random(f"{cfg.seed}:phrasing")
    emoji = [it for it in items if it.source == "fonts-noto-color-emoji"]
    stamps = [it for it in items if it.source == "tuxpaint-stamps-default"]
    queries = merge_identical(_emoji_queries(emoji, rng) + _stamp_queries(stamps, rng), list(identical))
    return split, {s: _subsample(queries, split, s, cfg.per_family, cfg.seed) for s in SPLITS}


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
    return (is_complete(root) and _marker(root).get("config") == json.loads(json.dumps(asdict(cfg)))
            and built_from(root, sources))


def build_benchmark(root: str | Path, cfg: RealBenchmarkConfig | None = None, progress: bool = True,
                    sources: RealSources | None = None) -> dict:
    """Render the gallery and write both splits into ``root`` (new, empty, or an earlier build)."""
    cfg = cfg or RealBenchmarkConfig()
    sources = sources or RealSources()
    root = Path(root)
    items = gallery_items(sources)
    if cfg.families:
        items = [it for it in items if item_family(it.metadata()) in set(cfg.families)]
    prepare_out(root, MARKER, "the real benchmark builder", PATTERNS)
    dirs = ["images", *SPLITS]
    rec = start_marker(root, MARKER, CREATED_BY, dirs)
    files: list[str] = []
    skipped: list[str] = []
    keys: list[str] = []
    pixels: dict[str, str] = {}
    rendered = []
    for it in tqdm(items, desc="render real benchmark", unit="img", disable=not progress):
        try:
            im = fit_square(it.load(), cfg.image_size)
        except Exception as e:  # noqa: BLE001 - a glyph the font lacks or a broken stamp: not in the gallery
            skipped.append(f"{it.key}: {type(e).__name__}: {e}")
            continue
        pixels[it.key] = pixel_hash(im)
        rendered.append((it, png_bytes(im)))
    identical = identical_groups(pixels)
    dropped = {k for g in identical for k in g[1:]}
    if identical:
        logger.info("real benchmark: %d groups of pixel-identical pictures, %d duplicates dropped: %s",
                    len(identical), len(dropped), "; ".join(" = ".join(g) for g in identical[:10]))
    split, queries = plan(cfg, items, identical)
    for it, data in rendered:
        if it.key in dropped:
            continue
        p = rec.claim(f"images/{it.key}.png")
        p.write_bytes(data)
        os.utime(p, (0, 0))  # a fixed mtime: the feature cache fingerprint is the same for every build
        rec.done(f"images/{it.key}.png", data)
        keys.append(it.key)
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
        counts[s] = {"cirr": len(cirr), "circo": len(circo),
                     "families": len({q.family for q in qs})}
    write_split(split, rec.claim("split.json"))
    rec.done("split.json")
    files.append("split.json")
    summary = {"created_by": CREATED_BY, "complete": True, "version": BENCHMARK_VERSION, "config": asdict(cfg),
               "sources": sources.as_dict(),
               "dirs": dirs, "files": files, "n_gallery": len(keys), "skipped": skipped, "queries": counts,
               "identical": identical,
               "ids": ids}
    rec.finish(summary, indent=1, ensure_ascii=False, sort_keys=True)
    return summary

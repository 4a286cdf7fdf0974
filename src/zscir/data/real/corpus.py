"""Build a small real captioned corpus from Debian packages: WebDataset shards + a CSV manifest.

``scripts/build_real_corpus.py`` is the command line; this module is the logic. The corpus is what the
tests and the next real-data experiments train on, so it must be reproducible: candidates are listed in
path order, a seeded sample of at most ``max_per_source`` is drawn per source, images are fitted into a
white ``image_size`` square and PNG-encoded (deterministic bytes), and the tar members get a fixed
mtime — the same command writes byte-identical shards. Every row keeps its source package, licence,
concept and variant, and the licence texts of the packages used are copied into ``licenses/``.
With ``heldout`` (a held-out folder, `zscir.data.real.heldout`) every item of a held-out concept is left
out before the sample is drawn, and the removals are counted per list, rule and source in ``corpus.json``.

The output folder must be new, empty or a corpus this module wrote before (it is then rebuilt, deleting
only the files its ``corpus.json`` lists): user files are never touched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image
from tqdm.auto import tqdm

from zscir.data.outdir import OutputFolderError, check_out, prepare_out, start_marker
from zscir.data.real.heldout import HeldoutError, HeldoutLists, RemovalReport, filter_items, load_heldout
from zscir.data.real.icons import THEMES
from zscir.data.real.item import RealItem, SourceMissing
from zscir.data.real.render import render_items
from zscir.data.real.sources import RealSources, requirement_text

logger = logging.getLogger(__name__)

MARKER = "corpus.json"
CREATED_BY = "zscir build_real_corpus"
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("filepath", "title", "key", "source", "licence", "concept", "variant", "meta")
#: every name the builder writes into its folder (a rebuild deletes only recorded files of these names)
PATTERNS = (MANIFEST, "shards/corpus-*.tar", "images/*.png", "licenses/*.copyright")
COPYRIGHT = {
    "emoji": [Path("/usr/share/doc/fonts-noto-color-emoji/copyright")],
    "tuxpaint": [Path("/usr/share/doc/tuxpaint-stamps-default/copyright")],
    "openclipart": [Path("/usr/share/doc/openclipart-png/copyright")],
}


def _emoji(sources: RealSources) -> Iterator[RealItem]:
    from zscir.data.real.emoji import read_emoji

    return read_emoji(Path(sources.emoji_font), Path(sources.emoji_test))


def _tuxpaint(sources: RealSources, tint_colours=None) -> Iterator[RealItem]:
    from zscir.data.real.tuxpaint import TINT_COLOURS, read_stamps

    return read_stamps(Path(sources.tuxpaint_dir), tint_colours=tuple(TINT_COLOURS) if tint_colours is None
                       else tint_colours)


def _openclipart(sources: RealSources) -> Iterator[RealItem]:
    from zscir.data.real.openclipart import read_openclipart

    return read_openclipart(Path(sources.openclipart_dir))


def _npm(kind: str, *args) -> Callable[[RealSources], Iterator[RealItem]]:
    def read(sources: RealSources) -> Iterator[RealItem]:
        from zscir.data.real import emoji_sets, flags

        fn = {"datasource": emoji_sets.read_datasource, "openmoji": emoji_sets.read_openmoji,
              "twemoji": emoji_sets.read_twemoji, "fluent": emoji_sets.read_fluent, "flags": flags.read_flags}[kind]
        return fn(*args, sources.npm_dir, sources.emoji_test)

    return read


def _icons(theme: str) -> Callable[[RealSources], Iterator[RealItem]]:
    def read(sources: RealSources) -> Iterator[RealItem]:
        from zscir.data.real.icons import read_icons

        return read_icons(theme, sources.icons_dir)

    return read


#: npm source → its package (licence files are copied from the package folder)
NPM_PACKAGES = {"emoji-google": "emoji-datasource-google", "emoji-twitter": "emoji-datasource-twitter",
                "openmoji": "openmoji", "twemoji": "@twemoji/svg", "fluent-emoji": "fluentui-emoji",
                "flags": "flag-icons"}
for _name, _theme in THEMES.items():
    COPYRIGHT[f"icons-{_name}"] = [Path(f"/usr/share/doc/{_theme.package}/copyright")]

#: source name → reader of the `RealSources` paths (one module per package or package family)
READERS: dict[str, Callable[..., Iterator[RealItem]]] = {
    "emoji": _emoji, "tuxpaint": _tuxpaint, "openclipart": _openclipart,
    "emoji-google": _npm("datasource", "google"), "emoji-twitter": _npm("datasource", "twitter"),
    "openmoji": _npm("openmoji"), "twemoji": _npm("twemoji"), "fluent-emoji": _npm("fluent"),
    "flags": _npm("flags"), **{f"icons-{t}": _icons(t) for t in THEMES},
}


def licence_files(name: str, sources: RealSources) -> list[tuple[str, Path]]:
    """(name in ``licenses/``, file) of each licence text of a source's package."""
    if name in NPM_PACKAGES:
        from zscir.data.real.emoji_sets import licence_files as npm_licences

        pkg = NPM_PACKAGES[name]
        return [(f"{pkg.strip('@').replace('/', '-')}-{p.stem}", p) for p in npm_licences(sources.npm_dir, pkg)]
    return [(p.parent.name, p) for p in COPYRIGHT.get(name, [])]


class CorpusError(OutputFolderError):
    """A user mistake (bad option, foreign output folder): reported as one ``error:`` line."""


@dataclass
class CorpusConfig:
    """What to build. ``max_per_source`` ≤ 0 means every item of the source."""

    out: str
    sources: tuple[str, ...] = ("emoji", "tuxpaint", "openclipart")
    max_per_source: int = 1000
    image_size: int = 224
    seed: int = 0
    shard_size: int = 1000
    tint_colours: tuple[str, ...] | None = None  #: Tux Paint tints (None: all of tuxpaint.TINT_COLOURS)
    workers: int = 1  #: processes rendering pictures (the output does not depend on it)
    write_images: bool = True  #: also write images/<key>.png for the CSV manifest
    exclude_split: str | None = None  #: a concept split file: leave out its test and val families
    heldout: str | None = None  #: a held-out folder (`zscir.data.real.heldout`): its concepts never enter
    heldout_match: str = "concept"  #: "concept" (ids, stamp files and concept names) or "ids" (exact only)
    packages: RealSources = field(default_factory=RealSources)  #: where the packages' files are
    extra: dict = field(default_factory=dict)


def _heldout_lists(cfg: CorpusConfig) -> HeldoutLists | None:
    """The held-out lists of ``cfg.heldout`` (names learnt from the packages' files), or None with a warning."""
    if not cfg.heldout:
        logger.warning("no --heldout folder: the corpus is not checked against the held-out concepts "
                       "(docs/DATA.md); pass --heldout ../shared/heldout for any training data")
        return None
    try:
        return load_heldout(cfg.heldout, cfg.heldout_match, cfg.packages.emoji_test, cfg.packages.tuxpaint_dir)
    except HeldoutError as e:
        raise CorpusError(str(e)) from None


def select(items: list[RealItem], n: int, seed: int, source: str) -> list[RealItem]:
    """A seeded sample of at most ``n`` items, kept in listing order (independent of the other sources)."""
    if n <= 0 or n >= len(items):
        return list(items)
    rng = random.Random(f"{seed}:{source}")
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]


def fit_square(im: Image.Image, size: int) -> Image.Image:
    """The picture scaled to fit a white ``size`` square, centred (alpha composited onto white)."""
    rgba = im.convert("RGBA")
    scale = min(size / rgba.width, size / rgba.height)
    w, h = max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))
    rgba = rgba.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(rgba, ((size - w) // 2, (size - h) // 2), rgba.getchannel("A"))
    return canvas


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def build_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    """Write shards, CSV manifest, licences and ``corpus.json`` into ``cfg.out``; returns the summary."""
    import webdataset as wds

    unknown = [s for s in cfg.sources if s not in READERS]
    if unknown or not cfg.sources:
        raise CorpusError(f"unknown source(s) {unknown or '(none)'}: expected some of {', '.join(READERS)}")
    if cfg.image_size < 8:
        raise CorpusError(f"--image-size must be at least 8, got {cfg.image_size}")
    if cfg.shard_size < 1:
        raise CorpusError(f"--shard-size must be positive, got {cfg.shard_size}")
    out = Path(cfg.out)
    check_out(out, MARKER, "build_real_corpus")  # before the slow listing
    chosen: list[RealItem] = []
    counts: dict[str, dict] = {}
    held = None
    if cfg.exclude_split:
        from zscir.data.real.split import read_split

        try:
            held = read_split(cfg.exclude_split)
        except ValueError as e:
            raise CorpusError(str(e)) from None
    lists = _heldout_lists(cfg)
    removed = RemovalReport()
    for name in cfg.sources:
        try:
            items = list(READERS[name](cfg.packages, cfg.tint_colours) if name == "tuxpaint"
                         else READERS[name](cfg.packages))
        except SourceMissing as e:
            logger.warning("skipping source %s: %s", name, e)
            counts[name] = {"available": 0, "missing": str(e)}
            continue
        except ValueError as e:
            raise CorpusError(str(e)) from None
        n_all = len(items)
        if held is not None:  # benchmark test/val concepts never enter training data
            items = [it for it in items if not held.held_out(it.metadata())]
        n_split = len(items)
        mine = RemovalReport()
        items = filter_items(items, lists, mine)  # the external evaluation's concepts: never trained on
        removed.merge(mine)
        picked = select(items, cfg.max_per_source, cfg.seed, name)
        counts[name] = {"available": n_all, "selected": len(picked)}
        if held is not None:
            counts[name]["held_out"] = n_all - n_split
        if lists is not None:
            counts[name]["heldout_removed"] = mine.as_dict()
            logger.info("%s: removed %s", name, mine.summary())
        chosen.extend(picked)
    if not chosen:
        raise CorpusError("no source is available: install the Debian packages (or give their paths) "
                          + requirement_text(tuple(RealSources().as_dict())))
    prepare_out(out, MARKER, "build_real_corpus", PATTERNS)
    dirs = ["shards", "licenses"] + (["images"] if cfg.write_images else [])
    rec = start_marker(out, MARKER, CREATED_BY, dirs)  # before any file: an interrupted build is cleared next time
    files: list[str] = []
    skipped: list[dict] = []
    duplicates: list[dict] = []  #: pixel-identical to an earlier written picture (not written again)
    first_of: dict[str, str] = {}
    rows: list[dict] = []
    n_shards = -(-len(chosen) // cfg.shard_size)
    for i in range(n_shards):  # the writer opens them itself: each name is claimed (checked, recorded) first
        rec.claim(f"shards/corpus-{i:05d}.tar")
    pattern = str(out / "shards" / "corpus-%05d.tar")
    done_shard = lambda path: rec.done(f"shards/{Path(path).name}")  # noqa: E731 - called as each shard closes
    with wds.ShardWriter(pattern, maxcount=cfg.shard_size, mtime=0.0, verbose=0, post=done_shard) as sink:
        encode = lambda im: png_bytes(fit_square(im, cfg.image_size))  # noqa: E731 - run in the workers
        for item, data, err in tqdm(render_items(chosen, encode, cfg.workers), total=len(chosen), desc="corpus",
                                    disable=not progress):
            if data is None:  # a broken package file or a refused SVG must not stop the build
                skipped.append({"key": item.key, "source": item.source, "reason": err})
                continue
            digest = hashlib.sha1(data).hexdigest()  # PNG bytes are deterministic: same bytes = same pixels
            if digest in first_of:
                duplicates.append({"key": item.key, "source": item.source, "same_as": first_of[digest]})
                continue
            first_of[digest] = item.key
            meta = item.metadata()
            sink.write({"__key__": item.key, "png": data, "txt": item.caption.encode("utf-8"),
                        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")})
            rel = f"images/{item.key}.png"
            if cfg.write_images:
                rec.write_bytes(rel, data)
                files.append(rel)
            extra = {k: v for k, v in meta.items()
                     if k not in ("key", "caption", "source", "licence", "concept", "variant")}
            rows.append({"filepath": rel if cfg.write_images else "", "title": item.caption, "key": item.key,
                         "source": item.source, "licence": item.licence, "concept": item.concept,
                         "variant": json.dumps(item.variant, ensure_ascii=False, sort_keys=True),
                         "meta": json.dumps(extra, ensure_ascii=False, sort_keys=True)})
    shards = sorted(p.name for p in (out / "shards").glob("corpus-*.tar"))
    files += [f"shards/{s}" for s in shards]
    with open(rec.claim(MANIFEST), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    rec.done(MANIFEST)
    files.append(MANIFEST)
    for name in cfg.sources:
        for stem, src in licence_files(name, cfg.packages):
            dst = f"licenses/{stem}.copyright"
            if counts.get(name, {}).get("selected") and src.exists() and dst not in files:
                rec.write_bytes(dst, src.read_bytes())
                files.append(dst)
    per_source: dict[str, int] = {}
    for r in rows:
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
    summary = {
        "created_by": CREATED_BY, "complete": True, "dirs": dirs, "config": asdict(cfg), "counts": counts,
        "written": len(rows), "written_per_source": per_source, "skipped": skipped,
        "duplicates": len(duplicates), "duplicate_items": duplicates,
        "shards": f"shards/corpus-{{00000..{max(len(shards) - 1, 0):05d}}}.tar", "n_shards": len(shards),
        "manifest": MANIFEST, "files": files,
        "heldout": None if lists is None else {**lists.describe(), **removed.as_dict(), "summary": removed.summary()},
    }
    rec.finish(summary, indent=1, ensure_ascii=False)
    return summary

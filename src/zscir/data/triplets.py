"""`get_triplet_data`: training triplets from the world, a triplet manifest, or an HF dataset.

Triplet sets are small (the papers train on tens of thousands), so their rows are read into memory and
their images are loaded on demand: `TripletData.images(ids, size)` decodes each distinct image once
through the hardened loader, logging and skipping what is missing or corrupt (a triplet whose reference
or target image is unusable is dropped by `usable`). Image ids resolve against ``image_root`` — as given,
with a known image extension added, or through ``id_template`` (e.g. ``"images/{id}.jpg"``; `IdTemplate`:
``{id}`` is its only field). Rows whose texts are not text or too long (`zscir.data.cells`) and rows with
an empty modification are skipped and counted in ``problems``.

A triplet may have only a ``target_caption`` (a text target): `require_target_images` is how a method
that needs target images refuses such a set with a clear message.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from zscir.data.cells import parse_json, shorten
from zscir.data.files import expand_user, open_regular
from zscir.data.images import open_image, to_uint8
from zscir.data.records import DataError, Problem, Problems, TripletRecord
from zscir.data.source import file_fingerprint
from zscir.data.spec import DataSpec, parse_spec
from zscir.data.triplet_formats import EMBEDDED, detect_format, rows_to_triplets

logger = logging.getLogger(__name__)

__all__ = ["TripletData", "ImageResolver", "IdTemplate", "ID_TEMPLATE_FIELDS", "get_triplet_data"]

_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".JPG", ".JPEG", ".PNG")


#: the fields an ``--id-template`` may name (``{id}``: the image id of the row, as written there)
ID_TEMPLATE_FIELDS = ("id",)
#: the longest ``--id-template`` accepted, in characters
MAX_ID_TEMPLATE_CHARS = 1000


class IdTemplate:
    """An ``--id-template`` such as ``"images/{id}.jpg"``: plain substitution of `ID_TEMPLATE_FIELDS`.

    The template is parsed once (`DataError` for anything else) and filled by joining its pieces, never by
    ``str.format``: a field with attribute or index access (``{id.__class__}``), a positional field
    (``{0}``), an unknown name, a conversion (``!r``) or a format spec (``{id:>99999999999}``) is refused,
    so a template can neither reach Python objects nor allocate without bound. ``{{`` and ``}}`` are
    literal braces.
    """

    def __init__(self, template: str):
        if len(template) > MAX_ID_TEMPLATE_CHARS:
            raise DataError(f"--id-template has {len(template)} characters; at most {MAX_ID_TEMPLATE_CHARS}")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise DataError(f"--id-template {shorten(template)!r}: {e} "
                            "(write {{ and }} for literal braces)") from None
        self.pieces: list[tuple[str, bool]] = []  # (literal text, then the id?)
        for literal, field, spec, conversion in parsed:
            if field is not None and (field not in ID_TEMPLATE_FIELDS or spec or conversion):
                shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise DataError(f"--id-template {shorten(template)!r}: {shorten(shown, 60)} is not allowed; the only "
                                f"field is {{id}} (no attributes, indexes, conversions or format specs)")
            self.pieces.append((literal, field is not None))
        if not any(is_id for _, is_id in self.pieces):
            raise DataError(f"--id-template {shorten(template)!r} has no {{id}}: every image would be the same file")
        self.text = template

    def __call__(self, image_id: str) -> str:
        return "".join(lit + (image_id if is_id else "") for lit, is_id in self.pieces)


class ImageResolver:
    """Maps an image id to a file: ``root/id``, ``root/id + ext``, or ``root/template(id)`` (`IdTemplate`)."""

    def __init__(self, root: str | Path | None, template: str | IdTemplate | None = None):
        self.root = expand_user(root) if root else None
        self.template = IdTemplate(template) if isinstance(template, str) else template

    def __call__(self, image_id: str) -> Path:
        name = self.template(image_id) if self.template else image_id
        p = expand_user(name)
        if not p.is_absolute() and self.root is not None:
            p = self.root / p
        if p.exists() or self.template:
            return p
        for ext in _EXTS:
            q = p.with_name(p.name + ext)
            if q.exists():
                return q
        return p


class TripletData:
    """Triplet rows plus on-demand images (see the module docstring). ``world`` is set for the world source:
    (triplets, pairs) as the world generates them, for the trainers' exact world recipes."""

    def __init__(self, rows: list[TripletRecord], spec: str, resolver: ImageResolver | None,
                 fingerprint: str, world=None, problems: Problems | None = None):
        self.rows = rows
        self.spec = spec
        self.resolver = resolver
        self._fingerprint = fingerprint
        self.world = world
        self.problems = problems if problems is not None else Problems()  # rows skipped while reading, then images
        self._bad: set[str] = set()

    @property
    def is_world(self) -> bool:
        return self.world is not None

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def text_target_count(self) -> int:
        return sum(1 for r in self.rows if not r.has_target_image)

    def require_target_images(self, method: str) -> None:
        """Refuse a set with text-only targets for a method that needs target images."""
        n = self.text_target_count
        if n:
            raise DataError(f"{self.spec}: {n} of {len(self.rows)} triplets have a target caption but no target "
                            f"image; {method} trains on target images (drop those rows, or use a method that "
                            f"takes text targets)")

    def _payload(self, image_id: str, row: TripletRecord | None = None):
        if row is not None:
            for key, rid in zip(EMBEDDED, (row.reference_id, row.target_id)):
                if rid == image_id and key in row.meta:
                    return row.meta[key]
        if self.resolver is None:
            raise DataError(f"{self.spec}: image {image_id!r} has no embedded pixels and no --image-root was given")
        return self.resolver(image_id)

    def open(self, image_id: str, row: TripletRecord | None = None):
        """The decoded image of ``image_id`` or a `Problem` (logged, and the id remembered as bad)."""
        if self.world is not None:
            from PIL import Image

            from zscir.data.world_source import render_scenes

            return Image.fromarray(render_scenes([self._world_scene(image_id)], 64)[0])
        payload = self._payload(image_id, row)
        im = open_image(payload, f"{image_id} ({payload})" if isinstance(payload, Path) else image_id)
        if isinstance(im, Problem):
            if image_id not in self._bad:
                self._bad.add(image_id)
                self.problems.add(im)
        return im

    def _world_scene(self, image_id: str):
        for t in self.world[0]:
            if t.reference.id == image_id:
                return t.reference.scene
            if t.target_id == image_id:
                return t.target_scene
        raise KeyError(image_id)

    def images(self, ids: Sequence[str], size: int, progress: bool = False) -> tuple[list[str], np.ndarray]:
        """Distinct usable ids among ``ids`` (first-seen order) and their (N, size, size, 3) uint8 pixels."""
        from tqdm.auto import tqdm

        by_id = {}
        for r in self.rows:
            for key, rid in zip(EMBEDDED, (r.reference_id, r.target_id)):
                if key in r.meta and rid is not None:
                    by_id[rid] = r
        out_ids, arrs, seen = [], [], set()
        for i in tqdm(ids, desc="load images", disable=not progress, leave=False):
            if i in seen or i is None:
                continue
            seen.add(i)
            im = self.open(i, by_id.get(i))
            if isinstance(im, Problem):
                continue
            out_ids.append(i)
            arrs.append(to_uint8(im, size))
        empty = np.zeros((0, size, size, 3), np.uint8)
        return out_ids, (np.stack(arrs) if arrs else empty)

    def problem_note(self) -> str:
        """`` (12 missing, e.g. images/x.png: ...)`` for error messages; empty without problems."""
        if not self.problems.total:
            return ""
        return f" ({self.problems.summary()}; e.g. {self.problems.items[0]})"

    def usable(self, ok_ids: set[str], need_target_image: bool = True) -> list[TripletRecord]:
        """Rows whose reference (and target, if needed and present) image loaded."""
        out = []
        for r in self.rows:
            if r.reference_id not in ok_ids:
                continue
            if r.target_id is not None and r.target_id not in ok_ids:
                continue
            if need_target_image and r.target_id is None:
                continue
            out.append(r)
        return out

    def __iter__(self) -> Iterator[TripletRecord]:
        """Rows with their images loaded; rows with an unusable image are skipped (and logged)."""
        for r in self.rows:
            ref = self.open(r.reference_id, r)
            tgt = self.open(r.target_id, r) if r.target_id is not None else None
            if isinstance(ref, Problem) or isinstance(tgt, Problem):
                continue
            yield TripletRecord(r.reference_id, r.modification, r.target_id, ref, tgt, r.reference_caption,
                                r.target_caption, r.quality, r.source, dict(r.scores),
                                {k: v for k, v in r.meta.items() if k not in EMBEDDED})


def _cirr_splits(path: Path, explicit: str | None) -> dict[str, str]:
    """CIRR's ``image_splits/split.rc2.<split>.json`` (name -> relative path) next to the captions file."""
    cands = [Path(explicit)] if explicit else []
    split = path.name.split(".")[-2] if path.name.count(".") >= 2 else "train"
    for base in (path.parent, path.parent.parent, path.parent.parent / "cirr"):
        cands.append(base / "image_splits" / f"split.rc2.{split}.json")
    for c in cands:
        if c.exists():
            try:
                with open_regular(c, "CIRR image_splits file", text=True) as f:
                    names = parse_json(f.read())
            except (ValueError, UnicodeDecodeError) as e:  # DataError is a ValueError: keep its own message
                raise e if isinstance(e, DataError) else DataError(f"{c}: not a JSON file ({e})") from None
            if not isinstance(names, dict):
                raise DataError(f"{c}: expected a JSON object (image name -> path), not {type(names).__name__}")
            return names
    if explicit:
        raise DataError(f"no CIRR image_splits file at {explicit}")
    return {}


def get_triplet_data(spec: str | DataSpec | None = "world", *, image_root=None, id_template: str | None = None,
                     format: str | None = None, fiq_caption_mode: str = "searle", image_splits: str | None = None,
                     quality: str | None = None, limit: int | None = None, world_seed: int = 0,
                     world_n: int | None = None, world_pairs=None) -> TripletData:
    """Training triplets named by ``spec``: ``world``, a triplet manifest (JSONL/CSV/parquet/JSON array in
    any format of `zscir.data.triplet_formats`), or ``hf:...`` (e.g. an InstructPix2Pix-style set).

    ``quality`` keeps only rows of that tier (``hq``/``lq``; for the world it selects the generator).
    """
    s = parse_spec(spec)
    if limit is not None and limit < 1:
        raise DataError(f"the triplet limit must be >= 1 (or None for all), got {limit}")
    template = IdTemplate(id_template) if id_template else None  # refused before any row is read
    if s.is_world:
        from zscir.data.world_source import world_triplets

        trips, pairs = world_triplets(world_seed, quality or "hq", world_n, pairs=world_pairs)
        rows = [TripletRecord(t.reference.id, t.text, t.target_id, quality=t.quality, source="world",
                              meta={"id": t.id}) for t in trips]
        return TripletData(rows, s.text, None, f"world-s{world_seed}-{quality or 'hq'}-n{len(trips)}",
                           world=(trips, pairs))
    opts = {"fiq_caption_mode": fiq_caption_mode}
    if s.kind == "hf":
        from zscir.data.hf_source import load_hf

        ds = load_hf(s.location, s.split)
        cols = list(ds.column_names)
        fmt = detect_format(cols, s.text, format)
        rows_iter = (dict(r) for r in ds)
        fp = file_fingerprint([], f"hf|{getattr(ds, '_fingerprint', s.location)}|{fmt}")
        root = image_root
    elif s.kind == "manifest":
        from zscir.data.manifest_source import manifest_path
        from zscir.data.tables import iter_rows, read_header

        path = manifest_path(s.location)
        fmt = detect_format(read_header(path), str(path), format)
        if fmt == "cirr":
            opts["image_splits"] = _cirr_splits(path, image_splits)
        rows_iter = iter_rows(path)
        fp = file_fingerprint([path], f"triplets|{fmt}|{fiq_caption_mode}|{image_root}|{id_template}")
        root = image_root if image_root is not None else path.parent
    else:
        raise DataError(f"{s.text}: triplets come from 'world', a triplet manifest or 'hf:...', not {s.kind} shards")
    rows = []
    problems = Problems()
    for r in rows_to_triplets(rows_iter, fmt, opts, s.text, problems):
        if quality and r.quality and r.quality != quality:
            continue
        if not r.modification:
            problems.add(Problem("no_modification", f"{s.text}:{r.meta.get('id', '?')}", "empty modification text"))
            continue
        rows.append(r)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{s.text}: no triplet rows" + (f" of quality {quality!r}" if quality else "")
                        + (f" ({problems.summary()})" if problems.total else ""))
    logger.info("%s: %d triplets (%s format)", s.text, len(rows), fmt)
    if problems.total:
        logger.warning("%s: skipped %s", s.text, problems.summary())
    return TripletData(rows, s.text, ImageResolver(root, template), fp, problems=problems)

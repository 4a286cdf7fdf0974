"""Item metadata of a training set, read without decoding a picture, and the held-out check on it.

``zscir data check-heldout`` (anyone verifying a training set), ``zscir data make-triplets --heldout`` and
the Fusion-Diff caption bank ask `HeldoutLists.match` about each item; this module finds each item's
metadata: the ``.json`` member of a WebDataset sample (what `zscir.data.real.corpus` writes), the metadata
columns of a manifest (``source``, ``concept``, ``variant``, ``meta`` of the corpus's ``manifest.csv``), or —
for data without metadata — only its caption (then only the concept-name rule can match).

Accepted inputs: a corpus folder (its ``shards/*.tar``, else its ``manifest.csv``), a shard file or brace
pattern (``wds:`` prefix optional), a ``.csv``/``.tsv``/``.jsonl`` manifest (a triplet manifest's reference
and target captions are checked by name). Tar members are read as data
(regular ``.json``/``.txt`` members only, each at most `MAX_MEMBER` bytes); nothing is extracted.
"""

from __future__ import annotations

import csv
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zscir.data.real.heldout import HeldoutError, HeldoutLists, RemovalReport

logger = logging.getLogger(__name__)

MAX_MEMBER = 1 << 20  #: a metadata member larger than this is reported, not parsed
CAPTION_FIELDS = ("caption", "title", "text")


@dataclass
class MetaScan:
    """Every item's (key, metadata) plus what could not be read."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: int = 0


def _tar_items(path: Path, scan: MetaScan) -> None:
    """(key, metadata) of one WebDataset shard: the sample's .json, else its .txt as the caption."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                if "." not in base:
                    continue
                key, ext = base.split(".", 1)
                key = f"{m.name.rsplit('/', 1)[0]}/{key}" if "/" in m.name else key
                if ext not in ("json", "txt"):
                    samples.setdefault(key, {})
                    continue
                if m.size > MAX_MEMBER:
                    scan.problems.append(f"{path}:{m.name}: {m.size} bytes, not read")
                    continue
                f = tf.extractfile(m)
                raw = f.read() if f else b""
                if ext == "json":
                    try:
                        d = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError) as e:
                        scan.problems.append(f"{path}:{m.name}: not JSON ({type(e).__name__})")
                        continue
                    if isinstance(d, dict):
                        samples.setdefault(key, {}).update(d)
                else:
                    samples.setdefault(key, {}).setdefault("caption", raw.decode("utf-8", "replace").strip())
    except (tarfile.TarError, OSError, EOFError) as e:
        scan.problems.append(f"{path}: not a readable tar ({type(e).__name__}: {e})")
    scan.files += 1
    scan.items.extend(samples.items())


def _manifest_items(path: Path, scan: MetaScan) -> None:
    """(key, metadata) of a CSV/TSV/JSONL manifest; the corpus's ``meta``/``variant`` JSON columns merged."""
    try:
        if path.suffix.lower() == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            r = json.loads(line)
                        except ValueError:
                            scan.problems.append(f"{path}: line {n} is not JSON")
                            continue
                        if isinstance(r, dict):
                            rows.append(r)
        else:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise HeldoutError(f"{path}: not a readable manifest ({type(e).__name__}: {e})") from None
    scan.files += 1
    for n, r in enumerate(rows):
        if "reference_caption" in r or "target_caption" in r:  # a triplet manifest: both pictures' captions
            for side in ("reference", "target"):
                cap = r.get(f"{side}_caption")
                if isinstance(cap, str) and cap:
                    scan.items.append((f"{r.get('id', n)}:{side}", caption_meta(cap)))
            continue
        meta = {k: v for k, v in r.items() if k not in ("meta", "variant") and isinstance(k, str)}
        for col in ("meta", "variant"):
            v = r.get(col)
            if isinstance(v, str) and v.strip().startswith("{"):
                try:
                    d = json.loads(v)
                except ValueError:
                    scan.problems.append(f"{path}: row {n + 1}: bad JSON in column {col}")
                    continue
                if isinstance(d, dict):
                    meta.update(d) if col == "meta" else meta.__setitem__("variant", d)
            elif isinstance(v, dict):
                meta.update(v) if col == "meta" else meta.__setitem__("variant", v)
        if "caption" not in meta:
            meta["caption"] = next((str(meta[c]) for c in CAPTION_FIELDS if meta.get(c)), "")
        scan.items.append((str(meta.get("key") or meta.get("filepath") or n), meta))


def shard_paths(spec: str) -> list[Path]:
    """The local shard files of a ``wds:`` spec or a brace pattern ("corpus-{00000..00006}.tar")."""
    from braceexpand import braceexpand

    text = spec[4:] if spec.startswith("wds:") else spec
    return [Path(p).expanduser() for p in braceexpand(text)]


def scan_metadata(target: str | Path) -> MetaScan:
    """Read the metadata of every item of a corpus folder, shard pattern or manifest (see the docstring)."""
    text = str(target)
    p = Path(text).expanduser()
    scan = MetaScan()
    if text.startswith(("pipe:", "http://", "https://", "hf:")):
        raise HeldoutError(f"{text}: only local corpora, shards and manifests can be checked")
    if p.is_dir():
        shards = sorted((p / "shards").glob("*.tar")) or sorted(p.glob("*.tar"))
        if shards:
            for s in shards:
                _tar_items(s, scan)
        elif (p / "manifest.csv").is_file():
            _manifest_items(p / "manifest.csv", scan)
        else:
            raise HeldoutError(f"{p}: a folder without shards (*.tar, shards/*.tar) or manifest.csv")
        return scan
    if p.suffix.lower() in (".csv", ".tsv", ".jsonl") and not text.startswith("wds:"):
        if not p.is_file():
            raise HeldoutError(f"{p}: manifest not found")
        _manifest_items(p, scan)
        return scan
    if not p.exists() and "{" not in text and not text.startswith("wds:"):
        raise HeldoutError(f"{p}: not found (expected a corpus folder, WebDataset shards or a manifest)")
    paths = shard_paths(text)
    missing = [q for q in paths if not q.is_file()]
    if missing:
        raise HeldoutError(f"{missing[0]}: shard not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                                               else ""))
    for q in paths:
        _tar_items(q, scan)
    return scan


def metadata_by_key(target: str | Path) -> dict[str, dict[str, Any]]:
    """{name: metadata} of `scan_metadata`: each item under its sample key (without folders, as WebDataset
    names it), and a manifest row also under its ``filepath`` cell and that file's stem."""
    out: dict[str, dict[str, Any]] = {}
    for k, m in scan_metadata(target).items:
        out[k.rsplit("/", 1)[-1]] = m
        fp = m.get("filepath")
        if isinstance(fp, str) and fp:
            out.setdefault(fp, m)
            out.setdefault(Path(fp).stem, m)
    return out


def lookup(metas: dict[str, dict[str, Any]], key: str, caption: str) -> dict[str, Any]:
    """The metadata of a pair record (by key, file path or file stem), else its caption alone."""
    m = metas.get(key) or metas.get(key.rsplit("/", 1)[-1]) or metas.get(Path(key).stem)
    return m if m is not None else caption_meta(caption)


def caption_meta(caption: str) -> dict[str, Any]:
    """The metadata of an item known only by its caption (only the concept-name rule can match it)."""
    return {"caption": caption, "concept": caption}


def check(target: str | Path, lists: HeldoutLists) -> tuple[RemovalReport, list[tuple[str, str]], MetaScan]:
    """(counts, [(key, reason)] of every held-out item, the scan) of a training set."""
    scan = scan_metadata(target)
    report = RemovalReport()
    found: list[tuple[str, str]] = []
    for key, meta in scan.items:
        m = lists.match(meta if ("source" in meta or "emoji" in meta or "emoji_id" in meta or "file" in meta)
                        else {**caption_meta(str(meta.get("caption", ""))), **meta})
        if m is not None:
            report.add(m, str(meta.get("source", "?")), key)
            found.append((key, str(m)))
    return report, found, scan

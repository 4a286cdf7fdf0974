"""Data specs: the one string a user types to name a dataset (``--data SPEC``).

=========================================  ==========================================================
spec                                       source
=========================================  ==========================================================
``world`` (default), ``world:val``          the procedural CIR world (docs/WORLD.md)
``wds:data/{00000..00331}.tar``, ``*.tar``  WebDataset shards as img2dataset writes them (brace lists)
``path/manifest.csv|tsv|jsonl|parquet``     a manifest table, image paths relative to ``--image-root``
``path/folder`` with ``metadata.jsonl``     an HF ImageFolder (``file_name`` + ``text``)
``path/folder`` with ``*.tar`` shards       every shard in the folder
``hf:name_or_saved_dir[:split]``            an HF ``datasets`` dataset (saved to disk, or the hub)
=========================================  ==========================================================

Like open_clip's ``--dataset-type``, the kind selects the pipeline; unlike it, the kind is read from the
spec itself (``kind:`` prefix or the path), so one ``--data`` option is enough.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from zscir.data.records import DataError

__all__ = ["DataSpec", "parse_spec", "expand_shards", "check_shard_commands", "MANIFEST_SUFFIXES", "KINDS"]

KINDS = ("world", "wds", "manifest", "hf")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec: ``kind`` selects the pipeline, ``location`` is what it reads, ``split`` optional."""

    kind: str
    location: str = ""
    split: str | None = None
    text: str = ""  # the spec as typed (for messages and fingerprints)

    @property
    def is_world(self) -> bool:
        return self.kind == "world"


def _split_suffix(rest: str) -> tuple[str, str | None]:
    """``name:split`` → (name, split); a Windows drive letter or a bare path keeps its colon."""
    if ":" in rest and not os.path.exists(rest):
        name, split = rest.rsplit(":", 1)
        if split and "/" not in split:
            return name, split
    return rest, None


def parse_spec(spec: str | DataSpec | None) -> DataSpec:
    """Read a spec string (see the module docstring); raises `DataError` when it names nothing usable."""
    if isinstance(spec, DataSpec):
        return spec
    text = (spec or "world").strip()
    if text == "world" or text.startswith("world:"):
        return DataSpec("world", "", text.split(":", 1)[1] if ":" in text else None, text)
    if text.startswith("wds:"):
        return DataSpec("wds", text[4:], None, text)
    if text.startswith("hf:"):
        name, split = _split_suffix(text[3:])
        return DataSpec("hf", name, split, text)
    if text.startswith("manifest:"):
        return DataSpec("manifest", text[9:], None, text)
    if "{" in text or text.endswith(".tar") or text.endswith(".tar.gz"):
        return DataSpec("wds", text, None, text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "metadata.jsonl").exists() or (path / "metadata.csv").exists():
            return DataSpec("manifest", str(path), None, text)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return DataSpec("hf", str(path), None, text)
        if sorted(path.glob("*.tar")):
            return DataSpec("wds", str(path), None, text)
        raise DataError(f"{text}: a folder, but with no metadata.jsonl, no *.tar shards and no saved HF dataset")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.exists():
            raise DataError(f"{text}: no such manifest file")
        return DataSpec("manifest", str(path), None, text)
    raise DataError(f"cannot tell what {text!r} is: expected 'world', 'wds:SHARDS', a *.tar brace pattern, a "
                    f"manifest ({'/'.join(MANIFEST_SUFFIXES)}), a folder, or 'hf:NAME[:SPLIT]'")


def expand_shards(location: str) -> list[str]:
    """Shard paths of a WebDataset location: brace lists (``{000..009}``), globs, a folder, ``::``-joined lists."""
    import braceexpand

    out: list[str] = []
    for part in location.split("::"):
        if shard_scheme(part):  # pipe:CMD or a URL: kept as typed (a Path folds '//'), never globbed
            out.extend(braceexpand.braceexpand(part))
            continue
        p = Path(part).expanduser()
        if p.is_dir():
            out.extend(str(x) for x in sorted(p.glob("*.tar")))
            continue
        for name in braceexpand.braceexpand(str(p)):
            matches = sorted(glob.glob(name)) if any(c in name for c in "*?[") else [name]
            out.extend(matches)
    missing = [s for s in out if not shard_scheme(s) and not os.path.exists(s)]  # pipe:/URLs are not files
    if not out:
        raise DataError(f"{location}: names no shard")
    if len(missing) == len(out):
        raise DataError(f"{location}: none of the {len(out)} shards exists (first: {out[0]})")
    return out


def shard_scheme(shard: str) -> str:
    """The URL scheme webdataset dispatches ``shard`` on ('' for a local path)."""
    from urllib.parse import urlparse

    try:
        return urlparse(shard).scheme.lower()
    except ValueError:
        return ""


def check_shard_commands(shards: list[str], spec: str, allow_pipe: bool = False) -> None:
    """Refuse shards that make webdataset run a command, unless the user allowed it (``--allow-pipe``).

    webdataset opens ``pipe:CMD`` by running CMD through ``sh``, and every other URL scheme (``http(s)://``,
    ``gs://``, ``scp://``...) through a shell command line too (curl, gsutil, ...): a spec is then code, not
    data. Only a spec the user typed may do that, and only with the explicit flag (docs/DATA.md); checkpoints
    and configs never reach this with the flag set.
    """
    if allow_pipe:
        return
    for shard in shards:
        scheme = shard_scheme(shard)
        if scheme and scheme != "file":
            what = "runs the shell command after 'pipe:'" if scheme == "pipe" else \
                f"is a {scheme}: URL that webdataset fetches by running a shell command"
            raise DataError(f"{spec}: shard {shard!r} {what}; zscir runs commands from a data spec only when "
                            "you allow it with --allow-pipe (allow_pipe=True), see docs/DATA.md")

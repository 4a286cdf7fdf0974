"""What a field of a checkpoint, model folder or cache may name: files inside its own folder, or model names.

A checkpoint is data someone hands you. Fields that zscir turns into file reads, model loads or data specs
(Fusion-Diff's ``joint.caption_bank`` and ``captioner_model``, TSCIR's ``stage1``, LiT's towers, the backbone a
prior was trained on) are therefore checked here, once, before anything is opened:

* a *file reference* (`resolve_in_folder`) is a relative path without ``..``, ``~``, a ``scheme:`` prefix
  (``pipe:``, ``wds:``, ``http:``, ``hf:``...), brace / glob characters or control characters, and it
  resolves (symlinks followed) inside the folder — never a command, a URL, or a file elsewhere;
* a *model reference* (`model_ref_in_folder`) is such a folder inside the checkpoint, or a plain hub name
  (``org/name``) that ``transformers`` looks up by name — never a path elsewhere on the machine;
* a *backbone name* recorded by a trainer (`checked_model_name`) is a built-in name, ``hf-hub:ORG/NAME`` or
  ``open_clip:ARCH/TAG``; a ``local-dir:`` / bare folder recorded in a checkpoint must be given again by the
  user (``--model``), who then names it explicitly.

Violations raise `FolderRefError` (a ``ValueError``: one ``error:`` line on the CLI) naming the file and
field. Commands (``pipe:``) are accepted only from a user's own ``--data`` with ``--allow-pipe``
(`zscir.data.spec.check_shard_commands`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

__all__ = ["FolderRefError", "resolve_in_folder", "model_ref_in_folder", "field_location", "is_hub_name"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_HUB_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SPECIAL = set("{}*?[]!|;&$`<>\"'\\")


class FolderRefError(ValueError):
    """A checkpoint / model folder field names a command, a URL or a path outside its folder."""


def field_location(source: str | os.PathLike, field: str) -> str:
    """How messages name a field: ``<file>: field '<name>'``."""
    return f"{source}: field {field!r}"


def resolve_in_folder(folder: str | os.PathLike, ref: object, field: str, source: str | os.PathLike | None = None,
                      must_exist: bool = True) -> Path:
    """The absolute path of ``ref`` inside ``folder`` (see the module docstring for what is refused).

    ``source`` names the file the field came from (default: ``folder/config.json``) in the message.
    """
    folder = Path(folder).expanduser()
    where = field_location(source or folder / "config.json", field)
    if not isinstance(ref, str) or not ref.strip():
        raise FolderRefError(f"{where} must be a file name inside {folder}, got {ref!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in ref):
        raise FolderRefError(f"{where} holds control characters")
    if _SCHEME.match(ref):
        raise FolderRefError(f"{where} is {ref!r}: a checkpoint may not name a command, URL or data spec "
                             f"(only a file inside its own folder)")
    if any(c in _SPECIAL for c in ref) or "::" in ref:
        raise FolderRefError(f"{where} is {ref!r}: brace, glob and shell characters are not allowed in a "
                             "checkpoint's file names")
    parts = PurePosixPath(ref).parts
    if ref.startswith(("/", "~")) or ".." in parts or not parts:
        raise FolderRefError(f"{where} is {ref!r}: it must be a relative path inside {folder} "
                             "(no absolute path, '~' or '..')")
    base = folder.resolve()
    target = (base / ref).resolve()
    if target != base and base not in target.parents:
        raise FolderRefError(f"{where} is {ref!r}, which leads outside {folder} (a symbolic link?)")
    if must_exist and not target.exists():
        raise FolderRefError(f"{where} names {ref!r}, which is not in {folder}")
    return target


def is_hub_name(name: str) -> bool:
    """``name`` or ``owner/name`` made of hub-safe characters (no '.'/'..' parts)."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(_HUB_PART.match(p) and p not in (".", "..") for p in parts)


def model_ref_in_folder(folder: str | os.PathLike, name: object, field: str,
                        source: str | os.PathLike | None = None) -> str | Path:
    """A model a checkpoint names: a folder inside it (absolute `Path`) or a plain hub name (``str``).

    A hub-style name that also exists as a path relative to the working directory is refused: a library
    would read that path, which is not in the checkpoint.
    """
    folder = Path(folder).expanduser()
    if isinstance(name, str) and is_hub_name(name):
        if (folder / name).exists():
            return resolve_in_folder(folder, name, field, source)
        if Path(name).exists():
            raise FolderRefError(f"{field_location(source or folder / 'config.json', field)} is {name!r}, which names "
                                 f"{Path(name).resolve()} outside {folder}")
        return name
    return resolve_in_folder(folder, name, field, source)  # refuses URLs, commands, absolute and '..' paths

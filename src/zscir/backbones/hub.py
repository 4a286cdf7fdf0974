"""Finding a transformers CLIP checkpoint's files on disk before anything loads them.

Why a module of its own: handing a hub id straight to ``from_pretrained`` on a machine without network makes
huggingface_hub retry every file with back-off (74 s, each retry printed twice) and end with a message that
neither says which files are missing nor how to provide them. Here the order is fixed and fast:

1. a ``local-dir:`` folder must exist and hold the `REQUIRED_FILES` (named precisely when it does not);
2. a hub id is looked up in the local HF cache first (no network);
3. only when ``HF_HUB_OFFLINE`` is not set, *one* short request asks the hub which files the repository has
   (no retries); unreachable → an error at once that lists the missing files, the two ways to provide them
   (``local-dir:`` or the HF cache layout) and ``HF_HUB_OFFLINE=1``;
4. the needed files (not the TF/Flax/ONNX copies) are downloaded, and the caller loads from the snapshot
   folder with ``local_files_only=True``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

#: what a CLIP checkpoint folder needs: each entry is a list of alternatives (any one of them suffices);
#: an alternative with several names needs all of them
REQUIRED_FILES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("config.json",),),
    (("model.safetensors",), ("pytorch_model.bin",), ("model.safetensors.index.json",),
     ("pytorch_model.bin.index.json",)),
)
#: what a checkpoint normally has besides: without them the loader falls back (OpenAI's tokenizer for an
#: OpenAI vocabulary, OpenAI's preprocessing) or names what is missing (`HFCLIPBackbone.from_pretrained`)
EXPECTED_FILES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("tokenizer.json",), ("vocab.json", "merges.txt")),
    (("preprocessor_config.json",),),
)
#: also fetched when the repository has them (tokenizer settings); never required
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
#: seconds for the single request that tells whether the hub is reachable
HUB_TIMEOUT_S = 5.0
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelFilesMissing(FileNotFoundError):
    """A model's files are not on this machine (and could not be fetched); the message says how to fix it."""


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _words(groups) -> list[str]:
    return [" or ".join(" + ".join(names) for names in alternatives) for alternatives in groups]


def required_files_text() -> str:
    """The expected file list in words, for error messages and docs."""
    return "; ".join(_words(REQUIRED_FILES)) + "; normally also " + " and ".join(_words(EXPECTED_FILES))


def missing_files(present: set[str]) -> list[str]:
    """The `REQUIRED_FILES` groups not satisfied by the file names in ``present`` (as text, one per group)."""
    out = []
    for alternatives in REQUIRED_FILES:
        if not any(all(n in present for n in names) for names in alternatives):
            out.append(" or ".join(" + ".join(names) for names in alternatives))
    return out


def _files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def check_local_dir(path: str | os.PathLike) -> Path:
    """The folder of a ``local-dir:`` model, checked: it exists and holds every required file."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelFilesMissing(f"model folder {folder} does not exist (local-dir: needs a folder with "
                                f"{required_files_text()})")
    if not folder.is_dir():
        raise ModelFilesMissing(f"model path {folder} is not a folder (local-dir: needs a folder with "
                                f"{required_files_text()})")
    missing = missing_files(_files_in(folder))
    if missing:
        raise ModelFilesMissing(f"model folder {folder} lacks {', '.join(missing)} (a transformers CLIP "
                                f"folder needs {required_files_text()})")
    return folder


def _how_to_provide(repo_id: str) -> str:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    return (f"provide the files either as a folder (--model local-dir:/path/to/folder with "
            f"{required_files_text()}), or in the Hugging Face cache layout: run `hf download {repo_id}` on a "
            f"machine with network and copy {Path(cache) / ('models--' + repo_id.replace('/', '--'))} "
            f"into {cache} here (HF_HUB_CACHE moves it)")


def _cached_snapshot(repo_id: str) -> tuple[Path | None, list[str]]:
    """(snapshot folder, missing required files) of ``repo_id`` in the local HF cache; no network."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and friends: simply "not cached"
        return None, missing_files(set())
    return folder, missing_files(_files_in(folder))


def _wanted_files(siblings: list[str]) -> list[str]:
    """Of a repository's files, the ones to download: the first available alternative per group."""
    have = set(siblings)
    wanted: list[str] = []
    for alternatives in REQUIRED_FILES + EXPECTED_FILES:
        for names in alternatives:
            if all(n in have for n in names):
                wanted.extend(names)
                break
    wanted += [n for n in OPTIONAL_FILES if n in have]
    if "model.safetensors.index.json" in wanted or "pytorch_model.bin.index.json" in wanted:
        stem = "model-" if "model.safetensors.index.json" in wanted else "pytorch_model-"
        wanted += [n for n in siblings if n.startswith(stem) and "/" not in n]
    return wanted


def resolve_hub_model(repo_id: str) -> Path:
    """A local folder holding ``repo_id``'s checkpoint: from the HF cache, or downloaded with one short try."""
    if not _REPO_ID.match(repo_id):
        raise ModelFilesMissing(f"hf-hub:{repo_id}: a hub id has the form org/name, e.g. "
                                "hf-hub:openai/clip-vit-large-patch14 (for a folder use local-dir:/path)")
    folder, missing = _cached_snapshot(repo_id)
    if folder is not None and not missing:
        return folder
    where = (f"the local Hugging Face cache has {repo_id} without {', '.join(missing)}" if folder is not None
             else f"{repo_id} is not in the local Hugging Face cache")
    if hub_offline():
        raise ModelFilesMissing(f"model hf-hub:{repo_id}: {where}, and HF_HUB_OFFLINE is set (no download); "
                                f"{_how_to_provide(repo_id)}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:  # the one short network attempt: which files does the repository have?
        info = HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as e:
        raise ModelFilesMissing(f"model hf-hub:{repo_id}: no such repository on the hub (or it is private: "
                                f"log in with `hf auth login`)") from e
    except Exception as e:  # noqa: BLE001 - connection, DNS, proxy, timeout: all mean "no hub from here"
        raise ModelFilesMissing(
            f"model hf-hub:{repo_id}: {where}, and the hub is not reachable ({type(e).__name__}); "
            f"{_how_to_provide(repo_id)}; set HF_HUB_OFFLINE=1 to skip the network attempt") from e
    siblings = [s.rfilename for s in info.siblings or []]
    lacking = missing_files(set(siblings))
    if lacking:
        raise ModelFilesMissing(f"model hf-hub:{repo_id} is not a transformers CLIP checkpoint: the repository "
                                f"has no {', '.join(lacking)}")
    from huggingface_hub import snapshot_download

    logger.info("downloading %s from the hub", repo_id)
    return Path(snapshot_download(repo_id, allow_patterns=_wanted_files(siblings)))

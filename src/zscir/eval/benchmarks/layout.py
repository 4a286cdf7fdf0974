"""Finding and validating benchmark data roots, with one clear error per problem.

Users point ``--data-root`` at folders assembled by hand from several downloads, so the common failure
is a wrong folder, a missing image or a truncated JSON file. Each of those must surface as a single
`BenchmarkDataError` that names the path and says what was expected, instead of a ``KeyError`` or
``FileNotFoundError`` from deep inside a data loader half an hour into feature extraction. That is why
loaders validate everything (annotation schema, every image file) *before* any model runs.

Image existence checks list each image folder once (`DirectoryListing`) rather than calling ``stat``
per file: CIRCO's gallery has 123K files.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "BenchmarkDataError",
    "GalleryImage",
    "DirectoryListing",
    "read_json",
    "require",
    "as_int_id",
    "require_unique",
    "find_annotation_dir",
    "check_images_exist",
]

#: how many offending paths an error message lists before summarising
_MAX_EXAMPLES = 5


class BenchmarkDataError(ValueError):
    """A benchmark data root has the wrong layout, a missing image or a malformed annotation file.

    The message always names the offending path and what was expected there; the CLI prints it as-is.
    """


@dataclass(frozen=True)
class GalleryImage:
    """One image of a benchmark: its id as the benchmark names it and where it is on disk.

    ``id`` is a ``str`` for CIRR / FashionIQ (image names) and an ``int`` for CIRCO (COCO ids);
    ``relpath`` is relative to the data root and goes into the feature-cache fingerprint, so moving the
    whole root does not invalidate cached features.
    """

    id: str | int
    path: Path
    relpath: str


def read_json(path: Path, expected: str) -> Any:
    """Load a JSON file, turning a missing or malformed file into a `BenchmarkDataError`.

    ``expected`` describes the file (e.g. "CIRR captions: a list of {pairid, reference, caption, ...}")
    and is repeated in the error so the user knows what should be there.
    """
    if not path.is_file():
        raise BenchmarkDataError(f"{path}: file not found; expected {expected}")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchmarkDataError(f"{path}: malformed JSON ({e}); expected {expected}") from None
    except RecursionError:
        raise BenchmarkDataError(f"{path}: JSON nested too deeply to read; expected {expected}") from None
    except OSError as e:
        raise BenchmarkDataError(f"{path}: cannot read ({e.strerror or e}); expected {expected}") from None


def require(condition: bool, path: Path, message: str) -> None:
    """Raise `BenchmarkDataError` naming ``path`` unless ``condition`` holds (schema checks)."""
    if not condition:
        raise BenchmarkDataError(f"{path}: {message}")


def as_int_id(value: Any, path: Path, what: str) -> int:
    """An integer id (CIRR pairid, CIRCO query / COCO image id) read from JSON, or `BenchmarkDataError`.

    Accepted: an int, an integral float (``12.0``) or a decimal string (``"12"``). Refused with the path:
    booleans, fractions, ``1e400`` (JSON reads it as infinity), NaN, lists, objects.
    """
    if isinstance(value, bool):
        raise BenchmarkDataError(f"{path}: {what} {value!r} is not an integer id")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise BenchmarkDataError(f"{path}: {what} {shown} is not an integer id")


def require_unique(ids: Sequence[Any], path: Path, what: str) -> None:
    """Raise `BenchmarkDataError` naming the repeated values when ``ids`` has duplicates.

    A repeated query id makes a submission (a JSON object keyed by id) silently drop queries, so it is
    refused when the annotations are loaded.
    """
    seen: set[Any] = set()
    dups = []
    for i in ids:
        if i in seen and i not in dups:
            dups.append(i)
        seen.add(i)
    if dups:
        shown = ", ".join(repr(d) for d in dups[:_MAX_EXAMPLES])
        more = f" and {len(dups) - _MAX_EXAMPLES} more" if len(dups) > _MAX_EXAMPLES else ""
        raise BenchmarkDataError(f"{path}: {len(dups)} {what} occur more than once ({shown}{more}); "
                                 f"expected unique {what}")


def find_annotation_dir(
    data_root: Path | str,
    required: Sequence[str],
    *,
    benchmark: str,
    nestings: Sequence[str] = (),
) -> Path:
    """Return the folder under which all ``required`` relative paths exist.

    Tries ``data_root`` itself, then each ``data_root / nesting`` (e.g. CIRR's annotations commonly sit in
    ``<root>/cirr/``). If none fits, the error lists the expected files and which of them are missing in
    the best candidate, so a typo in one folder name is easy to spot.
    """
    root = Path(data_root).expanduser()
    if not root.exists():
        raise BenchmarkDataError(f"{root}: data root does not exist; expected a {benchmark} data root")
    if not root.is_dir():
        raise BenchmarkDataError(f"{root}: data root is not a directory; expected a {benchmark} data root")
    candidates = [root] + [root / n for n in nestings]
    best: tuple[int, Path, list[str]] | None = None
    for cand in candidates:
        missing = [r for r in required if not (cand / r).is_file()]
        if not missing:
            return cand
        n_found = len(required) - len(missing)
        if best is None or n_found > best[0]:
            best = (n_found, cand, missing)
    assert best is not None
    where = " or ".join(str(c) for c in candidates)
    raise BenchmarkDataError(
        f"{best[1]}: not a {benchmark} data root; expected {', '.join(required)} under {where}; "
        f"missing: {', '.join(best[2])}"
    )


class DirectoryListing:
    """The file names of directories, each listed once on first use.

    Resolving 123K CIRCO image ids or 16K FashionIQ names with one ``os.scandir`` per folder is orders of
    magnitude faster than a ``stat`` per file on network file systems.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, frozenset[str]] = {}

    def names(self, directory: Path) -> frozenset[str]:
        """File names in ``directory`` (empty if it does not exist)."""
        directory = Path(directory)
        if directory not in self._cache:
            try:
                with os.scandir(directory) as it:
                    self._cache[directory] = frozenset(e.name for e in it if not e.is_dir())
            except (FileNotFoundError, NotADirectoryError):
                self._cache[directory] = frozenset()
        return self._cache[directory]

    def exists(self, path: Path) -> bool:
        """Whether ``path`` is a file, using the cached listing of its parent."""
        return path.name in self.names(path.parent)

    def find(self, directory: Path, stem: str, extensions: Sequence[str]) -> Path | None:
        """``directory / (stem + ext)`` for the first extension present, else ``None``."""
        names = self.names(directory)
        for ext in extensions:
            if stem + ext in names:
                return directory / (stem + ext)
        return None


def check_images_exist(
    images: Iterable[GalleryImage],
    *,
    what: str,
    listing: DirectoryListing | None = None,
) -> None:
    """Raise one `BenchmarkDataError` listing missing image files (count + first examples).

    ``what`` says where the names come from, e.g. "the images named by image_splits/split.rc2.val.json".
    """
    listing = listing or DirectoryListing()
    images = list(images)
    missing = [im.path for im in images if not listing.exists(im.path)]
    if missing:
        examples = ", ".join(str(p) for p in missing[:_MAX_EXAMPLES])
        more = f" and {len(missing) - _MAX_EXAMPLES} more" if len(missing) > _MAX_EXAMPLES else ""
        raise BenchmarkDataError(
            f"{missing[0]}: {len(missing)} of {len(images)} image files are missing ({examples}{more}); "
            f"expected {what}"
        )

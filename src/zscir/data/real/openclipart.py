"""Open Clip Art Library pictures from Debian's ``openclipart-png`` (public domain): file names are titles.

The package names each file ``(title + "_" + author)[:24]`` plus a number ("armadillo_architetto_fra_01",
"bison_leif_lodahl_01"), so the caption is the title with the author removed. Authors are not listed
anywhere, so they are learnt from the package itself: a two-word suffix that ends at least
``min_author_files`` different titles is an author name, and a 24-character stem whose tail is a prefix of
such a name was cut inside it. The raw file name is kept in the metadata; the category is the folder
("animals/birds"). Some clip art is over 100 MP: pictures go through zscir's hardened loader, which reads
the header size before decoding.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

from zscir.data.real.item import RealItem, SourceMissing, load_package_image, make_key
from zscir.data.real.sources import RealSources, missing_message

PACKAGE = "openclipart-png"
LICENCE = "public-domain"
ROOT = Path(RealSources().openclipart_dir)  # Debian's; other places: RealSources / --openclipart-dir
#: the package's file names are cut at this many characters (before the ``_NN`` counter)
NAME_LIMIT = 24
#: folders without depicting titles (gradients, page-layout examples)
SKIP_CATEGORIES = ("special",)
_COUNTER = re.compile(r"(_\d+)?_?$")


def _tokens(stem: str) -> list[str]:
    return [t for t in _COUNTER.sub("", stem).split("_") if t]


def learn_authors(paths: Sequence[Path], min_author_files: int = 3) -> set[str]:
    """Two-word suffixes ("dan_gerhards") that end at least ``min_author_files`` distinct titles in at least
    two folders (a suffix shared within one folder only is part of a title series). A heuristic: a few title
    endings shared across folders ("down_arrow") are taken for authors too, which shortens those captions."""
    titles: dict[str, set[str]] = {}
    folders: dict[str, set[str]] = {}
    for path in paths:
        t = _tokens(path.stem)
        if len(t) >= 3 and max(len(t[-2]), len(t[-1])) > 1:  # "c_a": a card, not an author
            a = "_".join(t[-2:])
            titles.setdefault(a, set()).add("_".join(t[:-2]))
            folders.setdefault(a, set()).add(path.parent.as_posix())
    return {a for a, ts in titles.items() if len(ts) >= min_author_files and len(folders[a]) >= 2}


def title_of(stem: str, authors: set[str]) -> str:
    """The title part of a file stem, words joined by spaces ("2_dead_frogs_lumen_desig_01" → "2 dead frogs")."""
    t = _tokens(stem)
    full = "_".join(t)
    truncated = len(full) >= NAME_LIMIT - 1
    for k in range(1, len(t)):
        tail = "_".join(t[k:])
        if tail in authors or (truncated and len(tail) >= 3 and any(a.startswith(tail) for a in authors)):
            t = t[:k]
            break
    return " ".join(w.replace("-", " ") for w in t).strip()


def read_openclipart(root: Path = ROOT, skip_categories: Sequence[str] = SKIP_CATEGORIES,
                     min_author_files: int = 3) -> Iterator[RealItem]:
    """Every PNG with a non-empty title, in path order; raises `SourceMissing` without the package."""
    root = Path(root)
    if not root.is_dir():
        raise SourceMissing(missing_message("openclipart_dir", root))
    files = [p for p in sorted(root.rglob("*.png"))
             if p.parent.relative_to(root).parts[:1] not in [(c,) for c in skip_categories]]
    authors = learn_authors(files, min_author_files)
    seen: Counter[str] = Counter()
    for png in files:
        title = title_of(png.stem, authors)
        if not title or not re.search(r"[a-zA-Z]{2}", title):
            continue
        category = png.parent.relative_to(root).as_posix()
        key = make_key("oc", category.replace("/", "_"), png.stem)
        seen[key] += 1
        if seen[key] > 1:  # sanitising may merge two names
            key = f"{key}-{seen[key]}"
        yield RealItem(key, title, PACKAGE, LICENCE, title.lower(), lambda p=png: load_package_image(p), {},
                       {"category": category, "file": png.relative_to(root).as_posix()})

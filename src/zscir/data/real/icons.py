"""Freedesktop icon themes from Debian (Papirus, Breeze, Adwaita, …): icon names become captions.

An icon theme holds each icon *name* ("folder-music", "application-pdf", "firefox") in several sizes and
contexts (``48x48/places``, ``places/64``, ``scalable/apps``), and many names are symbolic links to one
drawing (aliases). One theme gives one picture per drawing:

* per (context, name) one file: a scalable SVG first, else the largest size up to 256 px (512 px PNGs rank
  just below: decoding them costs more and shows nothing more at 224 px); ``@2x`` copies are skipped;
* ``-symbolic`` icons (monochrome glyphs meant to be recoloured by the desktop) are left out: they are
  line art of the same names, drawn at 16 px, and mostly duplicate each other across themes;
* names whose chosen files are one drawing (same resolved path) are one item, captioned by the shortest
  name of the file that is no link (else the shortest); the other names are kept as ``keywords``. Files
  linking outside the icons folder are skipped.

Caption rule (`icon_caption`): the name's words, in the order English puts them, with the context:
"folder-music" → "a music folder icon", "application-pdf" → "a pdf file icon", "text-x-python" → "a python
text file icon", "org.gnome.Calculator" → "the calculator app icon", "edit-copy" → "an edit copy icon".
``concept`` is the phrase without article and "icon" ("music folder"), ``style`` the theme.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from zscir.data.real.item import RealItem, SourceMissing, load_package_image, make_key
from zscir.data.real.sources import RealSources
from zscir.data.real.svg import SvgLimits, rasterise_svg


@dataclass(frozen=True)
class Theme:
    folder: str  #: under the icons folder (/usr/share/icons)
    package: str  #: the Debian package
    licence: str  #: of the drawings, from the package's copyright file


#: source name → theme (licences read from /usr/share/doc/<package>/copyright; see docs/DATA.md)
THEMES: dict[str, Theme] = {
    "papirus": Theme("Papirus", "papirus-icon-theme", "GPL-3.0-only"),
    "breeze": Theme("breeze", "breeze-icon-theme", "LGPL-3.0-or-later"),
    "adwaita": Theme("Adwaita", "adwaita-icon-theme", "LGPL-3.0-only OR CC-BY-SA-3.0"),
    "oxygen": Theme("oxygen", "oxygen-icon-theme", "LGPL-3.0-or-later"),
    "elementary": Theme("elementary-xfce", "elementary-xfce-icon-theme", "GPL-2.0-or-later"),
    "yaru": Theme("Yaru", "yaru-theme-icon", "CC-BY-SA-4.0"),
    "moka": Theme("Moka", "moka-icon-theme", "CC-BY-SA-4.0 OR GPL-3.0-or-later"),
    "faba": Theme("Faba", "moka-icon-theme", "CC-BY-SA-4.0 OR GPL-3.0-or-later"),
    "paper": Theme("Paper", "paper-icon-theme", "CC-BY-SA-3.0"),
    "gnome": Theme("gnome", "gnome-icon-theme", "GPL-2.0-or-later"),
    "tango": Theme("Tango", "tango-icon-theme", "public-domain"),
    "mate": Theme("mate", "mate-icon-theme", "LGPL-3.0-or-later OR CC-BY-SA-3.0"),
    "suru": Theme("suru", "suru-icon-theme", "CC-BY-SA-3.0"),
    "numix": Theme("Numix", "numix-icon-theme", "GPL-3.0-or-later"),
    "deepin": Theme("bloom", "deepin-icon-theme", "LGPL-3.0-or-later"),
}
CONTEXTS = ("actions", "animations", "applets", "apps", "categories", "devices", "emblems", "emotes",
            "intl", "legacy", "mimetypes", "mimes", "places", "preferences", "status", "ui")
#: contexts without pictures of things (spinner frames, widget parts)
SKIP_CONTEXTS = ("animations", "ui")
_SIZE = re.compile(r"^(\d+)(?:x\d+)?$")
_REVERSE_DNS = re.compile(r"^(org|com|net|io|de|fr|uk|info|me|app|dev|ca|eu|fi|nl|ch|cz|it|xyz)\.", re.I)
MIME_KINDS = {"application": "file", "text": "text file", "image": "image file", "audio": "audio file",
              "video": "video file", "font": "font file", "model": "3D model file", "package": "package file",
              "inode": "", "x": "file", "multipart": "file", "message": "message file"}
MAX_ICON_SIDE = 256


def _rank(path: Path) -> float | None:
    """How good a file is as *the* picture of its name (higher is better); None for files never used."""
    sizes, scalable = [], False
    for part in path.parts:
        if part.endswith("@2x") or part.endswith("@3x"):
            return None
        m = _SIZE.match(part)
        if m:
            sizes.append(int(m.group(1)))
        elif part.startswith("scalable"):
            scalable = part == "scalable"
    if scalable:
        return 1000.0 if path.suffix == ".svg" else None
    if not sizes:
        return 1.0
    s = sizes[-1]
    score = float(s) if s <= MAX_ICON_SIDE else MAX_ICON_SIDE - s / 10000
    return score + (0.5 if path.suffix == ".svg" else 0.0)


def _split_words(name: str) -> list[str]:
    if _REVERSE_DNS.match(name) and name.count(".") >= 2:
        name = name.rsplit(".", 1)[-1]
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[-_.\s+]+", name.lower()) if w]


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def icon_concept(name: str, context: str) -> str:
    """What the icon shows, in words ("folder-music", "places" → "music folder")."""
    words = _split_words(name)
    if not words:
        return ""
    if context in ("mimetypes", "mimes") and len(words) > 1 and words[0] in MIME_KINDS:
        kind, rest = words[0], words[1:]
        if rest and rest[0] == "x" and len(rest) > 1:
            rest = rest[1:]
        kind_word = "directory" if kind == "inode" and rest == ["directory"] else MIME_KINDS[kind]
        if kind_word == "directory":
            return "directory"
        return " ".join(rest + ([kind_word] if kind_word else []))
    if words[0] in ("folder", "user") and len(words) > 1:
        return " ".join(words[1:] + words[:1])
    return " ".join(words)


def icon_caption(name: str, context: str) -> str:
    """The caption of an icon name in a context ("folder-music" → "a music folder icon")."""
    concept = icon_concept(name, context)
    if not concept:
        return ""
    if context == "apps":
        return f"the {concept} app icon"
    return f"{_article(concept)} {concept} icon"


def _context(rel: Path) -> str:
    for part in rel.parts[:-1]:
        if part in CONTEXTS:
            return part
    return ""


def read_icons(theme: str, icons_dir: str | Path = RealSources().icons_dir) -> Iterator[RealItem]:
    """One item per drawing of a theme (see the module docstring), in name order."""
    t = THEMES[theme]
    root = Path(icons_dir) / t.folder
    if not root.is_dir():
        raise SourceMissing(f"{root} not found: install the Debian package {t.package} (apt install "
                            f"{t.package}) or give the icon themes' folder with --icons-dir")
    real_root = os.path.realpath(icons_dir)  # themes link into each other (Faba ← Moka), never out
    best: dict[tuple[str, str], tuple[float, Path]] = {}
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for fn in filenames:
            stem, ext = os.path.splitext(fn)
            if ext not in (".svg", ".png") or "symbolic" in stem or "symbolic" in dirpath:
                continue
            path = Path(dirpath) / fn
            rel = path.relative_to(root)
            context = _context(rel)
            if context in SKIP_CONTEXTS or rel.parts[0] in ("cursors",):
                continue
            score = _rank(rel)
            if score is None:
                continue
            k = (context, stem)
            if k not in best or score > best[k][0] or (score == best[k][0] and path < best[k][1]):
                best[k] = (score, path)
    drawings: dict[str, list[tuple[str, str, Path]]] = {}
    for (context, stem), (_, path) in best.items():
        real = os.path.realpath(path)
        if not real.startswith(real_root + os.sep):
            continue  # a link leaving the icon themes
        drawings.setdefault(real, []).append((context, stem, path))
    items = []
    for real, names in drawings.items():
        names.sort(key=lambda n: (n[2].is_symlink(), len(n[1]), n[1], n[0]))  # the drawn file's own name first
        context, stem, path = names[0]
        caption = icon_caption(stem, context)
        if not caption or not re.search(r"[a-z]{2}", caption):
            continue
        keywords = sorted({n[1] for n in names})
        load = ((lambda p=Path(real): rasterise_svg(p, SvgLimits(size=256))) if real.endswith(".svg")
                else (lambda p=Path(real): load_package_image(p, max_side=MAX_ICON_SIDE)))
        items.append(RealItem(make_key("icon", theme, context, stem), caption, t.package, t.licence,
                              icon_concept(stem, context), load, {},
                              {"style": theme, "icon_name": stem, "context": context, "keywords": keywords,
                               "file": path.relative_to(root).as_posix()}))
    items.sort(key=lambda it: it.key)
    seen: set[str] = set()
    for it in items:
        if it.key in seen:  # names differing only in characters a key cannot hold
            continue
        seen.add(it.key)
        yield it

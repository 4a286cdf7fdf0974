"""Where the packages of the real pictures are: one record of their paths, with Debian's defaults.

Why a record: the real benchmark, the real demo and the real corpus read the same packages, and on a
system that is not Debian (or keeps them elsewhere) each path is given on the command line
(``--emoji-font``, ``--emoji-test``, ``--tuxpaint-dir``, ``--openclipart-dir``). A missing path is reported
with the package that provides it and the option that replaces it (`missing_message`). The npm picture
packages (emoji sets, flags) live in one ``node_modules`` folder, ``npm_dir``, installed by
``.ci/install-real-npm.sh`` (never fetched by zscir itself).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


#: where ``.ci/install-real-npm.sh`` installs the npm picture packages by default
NPM_DIR = str(Path("~/.local/share/zscir/npm/node_modules").expanduser())


@dataclass(frozen=True)
class RealSources:
    """Paths of the package files (strings: the record is written into benchmark and corpus markers)."""

    emoji_font: str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"  #: fonts-noto-color-emoji
    emoji_test: str = "/usr/share/unicode/emoji/emoji-test.txt"  #: unicode-data
    tuxpaint_dir: str = "/usr/share/tuxpaint/stamps"  #: tuxpaint-stamps-default
    openclipart_dir: str = "/usr/share/openclipart/png"  #: openclipart-png
    icons_dir: str = "/usr/share/icons"  #: freedesktop icon themes (papirus-icon-theme, breeze-icon-theme...)
    npm_dir: str = NPM_DIR  #: node_modules of the npm picture packages (.ci/install-real-npm.sh)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_options(cls, **given: Any) -> "RealSources":
        """The defaults with the paths given (None = the default), each ``~``-expanded."""
        return cls(**{k: str(Path(v).expanduser()) for k, v in given.items() if v is not None})


#: field of `RealSources` -> (the Debian package providing it, the command-line option replacing it)
PACKAGES: dict[str, tuple[str, str]] = {
    "emoji_font": ("fonts-noto-color-emoji", "--emoji-font"),
    "emoji_test": ("unicode-data", "--emoji-test"),
    "tuxpaint_dir": ("tuxpaint-stamps-default", "--tuxpaint-dir"),
    "openclipart_dir": ("openclipart-png", "--openclipart-dir"),
    "icons_dir": ("papirus-icon-theme", "--icons-dir"),
    "npm_dir": ("npm picture packages", "--npm-dir"),
}
assert set(PACKAGES) == {f.name for f in fields(RealSources)}

#: what the real benchmark and `zscir demo --real` read (openclipart only feeds the training corpus)
BENCHMARK_FIELDS = ("emoji_font", "emoji_test", "tuxpaint_dir")


def missing_message(field: str, path: str | Path) -> str:
    """``<path> not found: install the Debian package P (apt install P) or give its path with --option``."""
    package, option = PACKAGES[field]
    what = "folder" if field.endswith("_dir") else "file"
    if field == "npm_dir":
        return (f"{path} not found: install the npm picture packages (.ci/install-real-npm.sh) or give their "
                f"node_modules folder with {option}")
    return (f"{path} not found: install the Debian package {package} (apt install {package}) or give the "
            f"{what}'s path with {option}")


def requirement_text(which: tuple[str, ...] = BENCHMARK_FIELDS) -> str:
    """One line naming the packages and options of ``which`` (help texts, errors)."""
    return ", ".join(f"{PACKAGES[f][0]} ({PACKAGES[f][1]})" for f in which)


#: the sources `zscir data build-benchmark` can draw on (the emoji styles and Tux Paint), its default (every
#: emoji style whose drawings are its own: emoji-google / emoji-twitter repeat Noto's and Twemoji's), and
#: the Noto-only set of real-v2. Here, not in `benchmark`, so that the CLI's help needs no image library.
BENCHMARK_SOURCES = ("emoji", "twemoji", "openmoji", "fluent-emoji", "emoji-google", "emoji-twitter", "tuxpaint")
DEFAULT_BENCHMARK_SOURCES = ("emoji", "twemoji", "openmoji", "fluent-emoji", "tuxpaint")
V2_SOURCES = ("emoji", "tuxpaint")

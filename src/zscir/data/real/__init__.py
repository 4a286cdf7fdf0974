"""Real captioned pictures from Debian and npm packages, one reader per package, and the corpus builder.

* `emoji` — fonts-noto-color-emoji glyphs named by unicode-data's emoji-test.txt (OFL-1.1);
* `tuxpaint` — tuxpaint-stamps-default stamps with their caption files, plus tinted variants (GPL-2:
  built at run time, never committed);
* `openclipart` — openclipart-png pictures titled by their file names (public domain);
* `emoji_sets` — emoji in other art styles from npm (emoji-datasource-google/-twitter, openmoji, @twemoji/svg,
  fluentui-emoji), named by the same emoji-test.txt (``emoji_id``, ``style``, ``keywords`` in the metadata);
* `flags` — flag-icons SVG flags, named like the flag emoji; `icons` — freedesktop icon themes (Papirus,
  Breeze, Adwaita, …): icon names become captions ("folder-music" → "a music folder icon");
* `svg` — the one bounded SVG rasteriser (cairosvg: no fetches, no entities, size/time limits);
  `render` — the builder's ordered process pool;
* `corpus` — `build_corpus`: WebDataset shards + CSV manifest (``scripts/build_real_corpus.py``).
"""

from importlib import import_module
from typing import Any

__all__ = ["CorpusConfig", "CorpusError", "RealItem", "SourceMissing", "build_corpus"]
#: names of this package's interface -> the module that owns them; imported on first use, so that importing
#: a light submodule (the package paths in `sources`, for the CLI's help texts) does not load Pillow
_OWNERS = {"CorpusConfig": "corpus", "CorpusError": "corpus", "build_corpus": "corpus", "RealItem": "item",
           "SourceMissing": "item"}


def __getattr__(name: str) -> Any:
    if name in _OWNERS:
        return getattr(import_module(f"zscir.data.real.{_OWNERS[name]}"), name)
    raise AttributeError(f"module 'zscir.data.real' has no attribute {name!r}")

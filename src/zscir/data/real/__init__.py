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

from zscir.data.real.corpus import CorpusConfig, CorpusError, build_corpus
from zscir.data.real.item import RealItem, SourceMissing

__all__ = ["CorpusConfig", "CorpusError", "RealItem", "SourceMissing", "build_corpus"]

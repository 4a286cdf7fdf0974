"""Real captioned pictures from Debian packages, one reader per package, and the corpus builder.

* `emoji` — fonts-noto-color-emoji glyphs named by unicode-data's emoji-test.txt (OFL-1.1);
* `tuxpaint` — tuxpaint-stamps-default stamps with their caption files, plus tinted variants (GPL-2:
  built at run time, never committed);
* `openclipart` — openclipart-png pictures titled by their file names (public domain);
* `corpus` — `build_corpus`: WebDataset shards + CSV manifest (``scripts/build_real_corpus.py``).
"""

from zscir.data.real.corpus import CorpusConfig, CorpusError, build_corpus
from zscir.data.real.item import RealItem, SourceMissing

__all__ = ["CorpusConfig", "CorpusError", "RealItem", "SourceMissing", "build_corpus"]

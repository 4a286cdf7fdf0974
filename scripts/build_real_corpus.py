"""Build a real captioned corpus from installed Debian and npm packages (logic: zscir.data.real.corpus).

    python scripts/build_real_corpus.py --out data/real-corpus --heldout ../shared/heldout   # 1000 per source
    python scripts/build_real_corpus.py --out data/emoji --sources emoji --max-per-source 0 --image-size 128 \
        --heldout ../shared/heldout
    python scripts/build_real_corpus.py --out data/real-all --sources all --max-per-source 0 \
        --heldout ../shared/heldout                                                         # everything

Writes ``shards/corpus-{00000..N}.tar`` (WebDataset: png + txt + json per key), ``manifest.csv``
(``filepath,title`` + metadata columns, images in ``images/``), the packages' licence texts in
``licenses/`` and ``corpus.json`` (counts, skipped items, the file list). The output folder must be new,
empty, or a corpus this script wrote before. Sources: emoji (fonts-noto-color-emoji + unicode-data),
tuxpaint (tuxpaint-stamps-default), openclipart (openclipart-png) by default; with --sources all also
icons-<theme> (Debian icon themes under
--icons-dir), and the npm picture packages under --npm-dir (.ci/install-real-npm.sh installs them):
emoji-google, emoji-twitter, openmoji, twemoji, fluent-emoji, flags. A missing package is skipped.
Pixel-identical pictures are written once (corpus.json counts the duplicates). Outside Debian's paths give
the files with --emoji-font, --emoji-test, --tuxpaint-dir, --openclipart-dir and --icons-dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from zscir.data.outdir import OutputFolderError
    from zscir.data.real.corpus import READERS, CorpusConfig, build_corpus
    from zscir.data.real.sources import PACKAGES, RealSources

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="Output folder (new, empty, or an earlier corpus).")
    default_sources = ",".join(CorpusConfig.__dataclass_fields__["sources"].default)
    ap.add_argument("--sources", default=default_sources,
                    help=f"Comma-separated, of: {', '.join(READERS)}; 'all' = every one (default {default_sources}).")
    ap.add_argument("--max-per-source", type=int, default=1000, help="Seeded sample size per source; 0 = all.")
    ap.add_argument("--image-size", type=int, default=224, help="Side of the square images (white padding).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", type=int, default=1000, help="Samples per tar shard.")
    ap.add_argument("--tint-colours", default=None,
                    help="Comma-separated Tux Paint tints for recolourable stamps ('' = none; default: all).")
    ap.add_argument("--exclude-split", default=None,
                    help="Concept split JSON (zscir data build-benchmark writes one): leave out its test and "
                         "val families.")
    ap.add_argument("--heldout", default=None,
                    help="Held-out folder (emoji-ids.txt, tuxpaint-stamps.txt): its concepts are left out and "
                         "counted per list in corpus.json. Give it for any training data (docs/DATA.md).")
    ap.add_argument("--heldout-match", default="concept", choices=("concept", "ids"),
                    help="concept (default): held-out ids, stamp files and the same concept names in any source; "
                         "ids: the listed emoji and stamps (with tints) only.")
    ap.add_argument("--no-images", action="store_true", help="Shards only (the CSV then has no file paths).")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="Processes rendering pictures (default: the CPU count; the output does not depend on it).")
    ap.add_argument("--no-progress", action="store_true")
    defaults = RealSources()
    for field, (package, option) in PACKAGES.items():
        ap.add_argument(option, dest=field, default=None,
                        help=f"from the Debian package {package} (default {getattr(defaults, field)})")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tints = None if a.tint_colours is None else tuple(c.strip() for c in a.tint_colours.split(",") if c.strip())
    sources = (tuple(READERS) if a.sources.strip() == "all"
               else tuple(s.strip() for s in a.sources.split(",") if s.strip()))
    cfg = CorpusConfig(out=a.out, sources=sources,
                       max_per_source=a.max_per_source, image_size=a.image_size, seed=a.seed,
                       shard_size=a.shard_size, tint_colours=tints, write_images=not a.no_images,
                       exclude_split=a.exclude_split, heldout=a.heldout, heldout_match=a.heldout_match,
                       workers=a.workers,
                       packages=RealSources.from_options(**{f: getattr(a, f) for f in PACKAGES}))
    try:
        r = build_corpus(cfg, progress=not a.no_progress)
    except OutputFolderError as e:  # CorpusError and a foreign output folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {r['written']} items {r['written_per_source']} to {a.out}: {r['shards']} + {r['manifest']}"
          f" ({len(r['skipped'])} skipped, {r['duplicates']} pixel-identical duplicates not written)")
    if r["heldout"] is not None:
        print(f"held out ({r['heldout']['match']} match, {r['heldout']['folder']}): {r['heldout']['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pairs (and triplet rows) from HF ``datasets``: a folder saved with ``save_to_disk`` or a hub name.

Image columns are read *undecoded* (``Image(decode=False)``: bytes or a path) so every image goes through
the hardened loader like any other source. ``streaming=True`` (hub datasets only) never downloads the
whole set. Hub access needs the network; offline, only saved folders and the local HF cache work.
"""

from __future__ import annotations

from typing import Iterator

from zscir.data.cells import BadCell, caption_variants, image_payload
from zscir.data.files import expand_user
from zscir.data.records import DataError, Problem
from zscir.data.source import PairSource, Partition, RawPair, file_fingerprint
from zscir.data.tables import TEXT_COLUMNS, pick_column

__all__ = ["HFSource", "load_hf", "image_payload", "HF_IMAGE_COLUMNS"]

HF_IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "file_name", "filepath")


def load_hf(name: str, split: str | None = None, streaming: bool = False):
    """A ``datasets`` Dataset (or IterableDataset): ``name`` is a saved folder or a hub id."""
    try:
        import datasets
    except ModuleNotFoundError:
        from zscir.extras import install_hint

        raise DataError(f"hf: specs need HF datasets: {install_hint('data')}") from None

    path = expand_user(name)
    if path.exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"{name}: not a dataset saved with save_to_disk ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            want = split or ("train" if "train" in ds else next(iter(ds)))
            if want not in ds:
                raise DataError(f"{name}: no split {want!r}; splits: {', '.join(ds)}")
            ds = ds[want]
        elif split:
            raise DataError(f"{name}: a single saved split; drop ':{split}' from the spec")
        return ds
    try:
        return datasets.load_dataset(name, split=split or "train", streaming=streaming)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, gated: one clear line
        raise DataError(f"hf:{name}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def undecoded(ds, columns):
    """``ds`` with its Image-typed ``columns`` left as bytes/paths."""
    import datasets

    for c in columns:
        feat = ds.features.get(c) if ds.features else None
        if isinstance(feat, datasets.Image) and feat.decode:
            ds = ds.cast_column(c, datasets.Image(decode=False))
    return ds


class HFSource(PairSource):
    def __init__(self, name: str, split: str | None = None, spec: str = "", image_column: str | None = None,
                 text_column: str | None = None, streaming: bool = False):
        self.name, self.split = name, split
        self.spec = spec or f"hf:{name}"
        self.ds = load_hf(name, split, streaming)
        cols = list(self.ds.column_names or (self.ds.features or {}).keys())
        self.image_column = pick_column(cols, image_column, HF_IMAGE_COLUMNS, "image", self.spec, "--image-column")
        self.text_column = pick_column(cols, text_column, TEXT_COLUMNS, "caption", self.spec, "--text-column")
        self.ds = undecoded(self.ds, [self.image_column])
        self.size = len(self.ds) if hasattr(self.ds, "__len__") and not streaming else None

    def fingerprint(self) -> str:
        fp = getattr(self.ds, "_fingerprint", None)
        path = expand_user(self.name)
        base = fp or (file_fingerprint(sorted(path.rglob("*.arrow"))) if path.exists() else self.name)
        return file_fingerprint([], f"hf|{base}|{self.split}|{self.image_column}|{self.text_column}")

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        for i, row in enumerate(self.ds):
            if not partition.takes(i):
                continue
            where = f"{self.spec}[{i}]"
            img = image_payload(row.get(self.image_column))
            try:
                caps = caption_variants(row.get(self.text_column))
            except BadCell as e:
                yield Problem(e.code, where, str(e))
                continue
            if img is None:
                yield Problem("no_image", where, f"empty {self.image_column!r}")
            elif not caps:
                yield Problem("no_caption", where, f"empty {self.text_column!r}")
            else:
                yield RawPair(str(i), img, caps, {"row": i})

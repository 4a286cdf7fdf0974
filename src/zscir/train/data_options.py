"""`DataOptions`: the ``--data`` / ``--val-data`` options every trainer shares, as one typed config.

A trainer's config holds one `DataOptions`; with ``data="world"`` (the default) the trainer runs its world
recipe unchanged, otherwise it reads the spec through `zscir.data` (docs/DATA.md). Saved in each run's
``train_log.json`` with the rest of the config, so a run records what it trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from zscir.data import PairData, TripletData, get_pair_data, get_triplet_data, parse_spec

__all__ = ["DataOptions"]


@dataclass
class DataOptions:
    data: str = "world"
    val_data: str | None = None
    image_root: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    id_template: str | None = None  # triplets: image id -> file name under image_root, e.g. "{id}.jpg"
    triplet_format: str | None = None  # auto-detected from the columns when None
    fiq_caption_mode: str = "searle"
    streaming: bool | None = None  # None: stream WebDataset shards and streaming HF sets, hold the rest in RAM
    workers: int = 2  # DataLoader worker processes decoding images
    shuffle_buffer: int = 1000
    max_items: int | None = None  # read at most this many pairs / triplets of a real dataset
    tokenizer_corpus: int = 20000  # captions a newly trained tokenizer learns from (streamed data)
    cache_features: bool = True  # frozen-encoder features cached on disk, keyed by backbone + data fingerprint
    allow_pipe: bool = False  # --allow-pipe: WebDataset shards may be pipe:CMD / URLs (run through sh)

    @property
    def is_world(self) -> bool:
        return parse_spec(self.data).is_world

    def pair_data(self, spec: str, limit: int | None = None) -> PairData:
        return get_pair_data(spec, image_root=self.image_root, image_column=self.image_column,
                             text_column=self.text_column, streaming=self.streaming,
                             limit=limit if limit is not None else self.max_items, allow_pipe=self.allow_pipe)

    def triplet_data(self, spec: str, quality: str | None = None) -> TripletData:
        return get_triplet_data(spec, image_root=self.image_root, id_template=self.id_template,
                                format=self.triplet_format, fiq_caption_mode=self.fiq_caption_mode,
                                quality=quality, limit=self.max_items)

    def streams(self, data: PairData) -> bool:
        """Whether ``data`` is read batch by batch (not decoded into RAM first)."""
        if self.streaming is not None:
            return bool(self.streaming)
        return parse_spec(data.spec).kind == "wds"

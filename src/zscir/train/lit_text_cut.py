"""The text tower's cut cache for `zscir train lit --text-unlock-layers K`.

With K of the text tower's N layers unlocked, the first N − K layers (and the embeddings) are frozen, so
what they compute is a pure function of the caption string: each distinct caption runs through them ONCE
and its hidden states at the input of the first unlocked layer are kept, in float16, at the caption's real
token length (no padding; the attention mask of an entry is all ones over its length, so it is implied by
the shape). Each step then runs only the last K layers on the batch's cached states (`lit_tuning.
text_tail_pooled`): ~K/N of a tuned tower's cost instead of all of it.

The cache file sits beside the image cache (``lit-text-<fingerprint>-cut<N-K>.pt``), keyed by the text
tower's weights digest, the tokenizer, the cut and the tokenised length (``max_text_len``: the cached
states serve training and evaluation, so training sees the same token length the saved model embeds
with). A damaged, foreign or poisoned file (wrong shapes, dtype, width, length, non-finite values) is
ignored as a whole and rebuilt. Memory and disk grow with the number of distinct phrasings (MiniLM: 384 ×
2 bytes per token, ~12 kB for a 16-token caption); above `TEXT_CACHE_CAP_BYTES` the run stops with one
line suggesting fewer phrasings.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from zscir.backbones.lit_tuning import module_digest, text_front, text_layer_count
from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors

logger = logging.getLogger(__name__)

__all__ = ["TEXT_CACHE_CAP_BYTES", "TextCutCache", "pad_hidden"]

#: the most bytes of cached hidden states one run may hold (in memory and on disk)
TEXT_CACHE_CAP_BYTES = 4 * 2**30
_FORMAT = "lit-text-cut-v1"


class TextCutCache:
    """Cached hidden states (T_i, W) float16 by caption hash, for one text tower and one cut."""

    def __init__(self, cache_dir: str | Path | None, backbone, k: int, cap_bytes: int | None = None):
        self.backbone, self.k = backbone, k
        self.cut = text_layer_count(backbone.text_model) - k
        self.max_len = int(backbone.cfg.max_text_len)
        self.width = int(backbone.text_model.config.hidden_size)
        self.cap_bytes = cap_bytes or TEXT_CACHE_CAP_BYTES
        key = [_FORMAT, module_digest(backbone.text_model), backbone.tokenizer_signature(), self.cut, self.max_len]
        fp = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"lit-text-{fp}-cut{self.cut}.pt" if cache_dir else None
        self.data: dict[str, torch.Tensor] = {}
        self.dirty = False
        if self.path is not None and self.path.exists():
            try:
                self.data = self._check(load_torch_tensors(self.path))
                logger.info("text cut cache %s: %d captions", self.path, len(self.data))
            except TensorFileError as e:
                logger.warning("ignoring the text cut cache %s (rebuilt): %s", self.path, e)

    def _check(self, obj) -> dict[str, torch.Tensor]:
        """The entries of a loaded file, or `TensorFileError` if any of it is not what this cache writes."""
        if not (isinstance(obj, dict) and set(obj) == {"format", "text"} and obj["format"] == _FORMAT
                and isinstance(obj["text"], dict)):
            raise TensorFileError(f"{self.path}: not a LiT text cut cache")
        for k, t in obj["text"].items():
            if not (isinstance(k, str) and isinstance(t, torch.Tensor) and t.dtype == torch.float16 and t.ndim == 2
                    and 1 <= t.shape[0] <= self.max_len and t.shape[1] == self.width
                    and bool(torch.isfinite(t).all())):
                raise TensorFileError(f"{self.path}: entry {str(k)[:16]!r} is not a ({self.max_len} at most, "
                                      f"{self.width}) float16 hidden state")
        return dict(obj["text"])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.data.values())

    @torch.no_grad()
    def add(self, items: list[tuple[str, str]]) -> None:
        """Run the frozen layers once on the (key, caption) pairs not cached yet."""
        items = [(k, t) for k, t in items if k not in self.data]
        if not items:
            return
        bb = self.backbone
        tok = bb.tokenizer([t for _, t in items], padding=True, truncation=True, max_length=self.max_len,
                           return_tensors="pt")
        lengths = tok["attention_mask"].sum(1).tolist()
        total = self.nbytes + sum(lengths) * self.width * 2
        if total > self.cap_bytes:
            n = len(self.data) + len(items)
            raise ValueError(f"the text cut cache would exceed {self.cap_bytes / 2**30:.2g} GiB ({n} "
                             "distinct captions so far); use fewer phrasings (--caption-augment none) or less data")
        hidden = text_front(bb.text_model, tok["input_ids"].to(bb.device), tok["attention_mask"].to(bb.device), self.k)
        for (key, _), h, n in zip(items, hidden, lengths):
            self.data[key] = h[:n].to(torch.float16).cpu().clone()
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        save_torch_tensors({"format": _FORMAT, "text": self.data}, self.path)
        self.dirty = False


def pad_hidden(states: list[torch.Tensor], dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached (T_i, W) states → (B, max T_i, W) in ``dtype`` and the (B, max T_i) attention mask."""
    t = max(s.shape[0] for s in states)
    h = torch.zeros(len(states), t, states[0].shape[1], dtype=dtype, device=device)
    mask = torch.zeros(len(states), t, dtype=torch.long, device=device)
    for i, s in enumerate(states):
        h[i, :s.shape[0]] = s.to(device, dtype)
        mask[i, :s.shape[0]] = 1
    return h, mask

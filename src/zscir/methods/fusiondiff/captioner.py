"""Captioners: give a gallery image (which has no text) the caption its fused embedding needs.

Fusion-Diff retrieves multimodal-to-multimodal: gallery items are fused (image + text) embeddings, so an
image without text must first get a caption. The default is *retrieval-based* — the nearest captions of a
caption bank built from the training pairs, by the backbone's own image–text similarity — because it
needs no generative captioning model and runs on CPU. The oracle captioner (the world's exact scene
caption, found by the image's pixels) bounds how much a better captioner could help (ablation 7).

For real galleries the world bank describes the wrong pictures, so two more sources of captions:

* `bank_from_data` collects the distinct captions of any pair spec (WebDataset shards, a manifest, an HF
  dataset: ``caption_bank=SPEC`` / ``--caption-bank SPEC``) without decoding a single image, for the
  `RetrievalCaptioner`;
* `GenerativeCaptioner` writes a caption per image with any ``transformers`` image-to-text model chosen by
  name (BLIP, GIT, VisionEncoderDecoder... — what ``AutoModelForImageTextToText`` loads). Generating is
  slow, so captions are cached by image content hash (`image_key`) in one JSONL file per model under the
  zscir cache root (``$ZSCIR_CACHE``): a gallery is captioned once, whatever its file names.

Both expose `embed_captions(image_embeds, images)` → normalised text embeddings, which is all the fusion
needs; `captions(...)` returns the strings for inspection and visualisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zscir.backbones.base import Backbone
from zscir.backbones.tensor_files import (TensorFileError, check_module_finite, check_safetensors, load_torch_tensors,
                                         save_torch_tensors)

logger = logging.getLogger(__name__)


def image_key(image: Image.Image) -> str:
    """Content hash of an image's RGB pixels (identifies benchmark images without their file names)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()


class Captioner(ABC):
    """Maps gallery images to caption embeddings in the backbone's text space."""

    backbone: Backbone

    @abstractmethod
    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        """One caption string per image."""

    def embed_captions(self, image_embeds: torch.Tensor,
                       images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        """(N, D) normalised text embeddings of the images' captions."""
        return self.backbone.encode_texts(self.captions(image_embeds, images))

    @abstractmethod
    def cache_key(self) -> str:
        """Identifies the captioner's output (part of the gallery cache key)."""


class RetrievalCaptioner(Captioner):
    """Nearest bank captions by image→text cosine; the fused caption is the mean of the top-k embeddings."""

    def __init__(self, backbone: Backbone, bank: Sequence[str], k: int = 1, cache_dir: str | Path | None = None):
        if not bank:
            raise ValueError("the caption bank is empty")
        self.backbone = backbone
        self.bank = list(bank)
        self.k = int(k)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._bank_embeds: torch.Tensor | None = None
        self._bank_hash = hashlib.sha1("\n".join(self.bank).encode()).hexdigest()[:12]

    @property
    def bank_embeds(self) -> torch.Tensor:
        """(M, D) normalised text embeddings of the bank, computed once (and cached on disk if allowed)."""
        if self._bank_embeds is None:
            path = None
            if self.cache_dir is not None:
                # "v2": a bank cached before text-side modules became owner-gated may have been embedded
                # through another method's adapters on a shared backbone; such files are never read
                path = self.cache_dir / f"bank-v2-{self.backbone.fingerprint()}-{self._bank_hash}.pt"
                if path.exists():
                    try:  # a cache is data: weights_only, and anything odd is re-embedded, never trusted
                        emb = load_torch_tensors(path)
                        if not (isinstance(emb, torch.Tensor) and emb.ndim == 2 and len(emb) == len(self.bank)):
                            raise TensorFileError(f"{path}: not the embeddings of this caption bank")
                        self._bank_embeds = emb
                        return emb
                    except TensorFileError as e:
                        logger.warning("ignoring the caption-bank cache %s and embedding again: %s", path, e)
            logger.info("embedding a caption bank of %d captions", len(self.bank))
            self._bank_embeds = self.backbone.encode_texts(self.bank, batch_size=1024)
            if path is not None:
                save_torch_tensors(self._bank_embeds, path)
        return self._bank_embeds

    def nearest(self, image_embeds: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) of the k nearest bank captions per image, chunked to bound memory."""
        k = k or self.k
        bank = self.bank_embeds
        scores, idx = [], []
        for s in range(0, len(image_embeds), 1024):
            sim = image_embeds[s:s + 1024].float() @ bank.T
            v, i = sim.topk(k, dim=-1)
            scores.append(v)
            idx.append(i)
        return torch.cat(scores), torch.cat(idx)

    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        _, idx = self.nearest(image_embeds, 1)
        return [self.bank[i] for i in idx[:, 0].tolist()]

    def embed_captions(self, image_embeds: torch.Tensor,
                       images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        _, idx = self.nearest(image_embeds)
        return F.normalize(self.bank_embeds[idx].mean(1), dim=-1)

    def cache_key(self) -> str:
        return f"retrieval(k={self.k},bank={len(self.bank)}:{self._bank_hash})"


class OracleCaptioner(Captioner):
    """The exact caption of each image, looked up by pixel hash (world benchmark ablation only)."""

    def __init__(self, backbone: Backbone, lookup: dict[str, str], name: str = "oracle"):
        self.backbone = backbone
        self.lookup = dict(lookup)
        self.name = name

    @classmethod
    def from_world_benchmark(cls, backbone: Backbone, world_seed: int = 0, image_size: int = 64) -> "OracleCaptioner":
        """Render every benchmark scene of ``world.json`` and map its pixels to `canonical_caption`."""
        import json

        from zscir.data.world import Scene, canonical_caption, render
        from zscir.data.world.cache import ensure_world_benchmark

        root = ensure_world_benchmark(world_seed)
        scenes = json.loads((root / "world.json").read_text())["scenes"]
        lookup: dict[str, str] = {}
        for part in scenes.values():
            for sd in part.values():
                scene = Scene.from_dict(sd)
                lookup[image_key(render(scene, size=image_size))] = canonical_caption(scene)
        logger.info("oracle captioner: %d benchmark scenes", len(lookup))
        return cls(backbone, lookup, name=f"oracle-world-seed{world_seed}")

    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        if images is None:
            raise ValueError("the oracle captioner needs the images themselves")
        out = []
        for im in images:
            key = image_key(im)
            if key not in self.lookup:
                raise KeyError("oracle captioner: image not found among the world benchmark scenes")
            out.append(self.lookup[key])
        return out

    def cache_key(self) -> str:
        return self.name


def bank_from_data(spec: str, limit: int | None = None, heldout=None, **data_kw) -> list[str]:
    """Distinct captions (every variant, first-seen order) of a pair dataset; images are not decoded.

    ``data_kw`` goes to `zscir.data.get_pair_data` (``image_root``, ``text_column``, ...). ``heldout`` (a
    `zscir.data.real.heldout.HeldoutLists`) leaves out the captions of held-out items (judged by the item
    metadata of a local corpus, else by the caption). Raises `zscir.data.DataError` for a bad spec or an
    empty bank.
    """
    from zscir.data import DataError, get_pair_data
    from zscir.data.records import Problem
    from zscir.data.source import Partition

    data = get_pair_data(spec, **data_kw)
    seen: dict[str, None] = {}
    n = 0
    metas, removed = _heldout_metadata(spec, heldout)
    for item in data.source.iter_raw(Partition()):
        if isinstance(item, Problem):
            continue
        if heldout is not None:
            from zscir.data.real.check import lookup

            meta = lookup(metas, item.key, item.captions[0] if item.captions else "")
            hit = heldout.match(meta)
            if hit is not None:
                removed.add(hit, str(meta.get("source", "?")), item.key)
                continue
        for c in item.captions:
            if c and c.strip():
                seen.setdefault(c.strip(), None)
        n += 1
        if limit is not None and n >= limit:
            break
    if not seen:
        raise DataError(f"{spec}: no captions found for a caption bank")
    logger.info("caption bank from %s: %d distinct captions of %d items", spec, len(seen), n)
    if heldout is not None:
        logger.info("caption bank: left out %s", removed.summary())
    return list(seen)


def _heldout_metadata(spec: str, heldout) -> tuple[dict, object]:
    """({key: item metadata} of a local corpus, a removal report) for ``bank_from_data``'s held-out check."""
    if heldout is None:
        return {}, None
    from zscir.data.real.check import metadata_by_key
    from zscir.data.real.heldout import HeldoutError, RemovalReport

    try:
        return metadata_by_key(spec), RemovalReport()
    except HeldoutError as e:
        logger.warning("caption bank --heldout: %s; captions are checked by name only", e)
        return {}, RemovalReport()


class GenerativeCaptioner(Captioner):
    """Captions from an image-to-text model, cached by image hash (see the module docstring)."""

    def __init__(self, backbone: Backbone, model, image_processor, tokenizer, name: str,
                 cache_dir: str | Path | None = None, batch_size: int = 16, max_new_tokens: int = 30):
        self.backbone = backbone
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        tag = hashlib.sha1(f"{name}|{self.max_new_tokens}".encode()).hexdigest()[:16]
        self.cache_path = Path(cache_dir) / "captions" / f"{tag}.jsonl" if cache_dir else None
        self.cache: dict[str, str] = {}
        self.generated = 0  #: captions generated (not read from the cache) by this object
        if self.cache_path is not None and self.cache_path.exists():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["image"]] = row["caption"]
                except (ValueError, KeyError):  # a line cut by a crash: ignore it
                    continue

    @classmethod
    def from_pretrained(cls, backbone: Backbone, name: str, cache_dir: str | Path | None = None,
                        device: str | torch.device | None = None, **kw) -> "GenerativeCaptioner":
        """Load any ``AutoModelForImageTextToText`` captioner (hub name in the local HF cache, or a folder)."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        folder = Path(name).expanduser()
        for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            check_safetensors(f)  # a damaged file: one error naming it
        try:
            model = AutoModelForImageTextToText.from_pretrained(name)
            image_processor = AutoImageProcessor.from_pretrained(name)
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load the image-to-text model {name!r} ({e})") from None
        check_module_finite(model, name)
        model = model.to(device or backbone.device)
        return cls(backbone, model, image_processor, tokenizer, name, cache_dir, **kw)

    @torch.no_grad()
    def _generate(self, images: Sequence[Image.Image]) -> list[str]:
        pix = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        out = self.model.generate(pixel_values=pix.to(device), max_new_tokens=self.max_new_tokens, do_sample=False)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def captions(self, image_embeds: torch.Tensor | None = None,
                 images: Sequence[Image.Image] | None = None) -> list[str]:
        if images is None:
            raise ValueError("the generative captioner needs the images themselves")
        keys = [image_key(im) for im in images]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        new: list[tuple[str, str]] = []
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            for k, cap in zip(chunk, self._generate([images[first[k]] for k in chunk])):
                self.cache[k] = cap
                new.append((k, cap))
        self.generated += len(new)
        if new and self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"image": k, "caption": c}, ensure_ascii=False) + "\n" for k, c in new)
        return [self.cache[k] for k in keys]

    def cache_key(self) -> str:
        return f"generative({self.name},max_new_tokens={self.max_new_tokens})"


def tiny_random_captioner_model(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ViT→GPT-2 `VisionEncoderDecoderModel` with its image processor and a word-level
    tokenizer into ``folder`` (loadable by name through `GenerativeCaptioner.from_pretrained`; tests only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, ViTConfig, ViTImageProcessor,
                              ViTModel, VisionEncoderDecoderModel)

    words = "a an the red blue green square circle star small large picture of with and on".split()
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                  eos_token="<eos>")
    torch.manual_seed(seed)
    enc = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, initializer_range=0.5))
    dec = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                     add_cross_attention=True, is_decoder=True, bos_token_id=2, eos_token_id=3,
                                     pad_token_id=0, initializer_range=0.5))
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    model.config.decoder_start_token_id, model.config.pad_token_id, model.config.eos_token_id = 2, 0, 3
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 3
    folder = Path(folder)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_captioner(backbone: Backbone, cfg, cache_dir: str | Path | None = None, world_seed: int = 0,
                    bank: Sequence[str] | None = None, **data_kw) -> Captioner:
    """The captioner a `JointConfig` names — the public entry point for trainers and composers.

    ``retrieval``: nearest captions of ``bank`` (a checkpoint's own bank, `checkpoint.captioner_inputs`),
    else of ``cfg.caption_bank`` — a pair spec *the user typed*, read with ``data_kw`` (``allow_pipe``...,
    see `bank_from_data`) — or, when unset, of the world caption bank; ``generative``: ``cfg.captioner_model``
    (an image-to-text model name or folder), captions cached under ``cache_dir``; ``oracle``: the world
    benchmark's exact captions.
    """
    if cfg.captioner == "retrieval":
        if bank is not None:
            bank = list(bank)
        elif getattr(cfg, "caption_bank", None):
            bank = bank_from_data(cfg.caption_bank, limit=getattr(cfg, "caption_bank_limit", None), **data_kw)
        else:
            from zscir.methods.fusiondiff.features import caption_bank

            bank = caption_bank(cfg.bank_pairs, cfg.bank_world_seed)
        return RetrievalCaptioner(backbone, bank, k=cfg.caption_k, cache_dir=cache_dir)
    if cfg.captioner == "generative":
        if not getattr(cfg, "captioner_model", None):
            raise ValueError("captioner=generative needs captioner_model=NAME (a transformers image-to-text model)")
        return GenerativeCaptioner.from_pretrained(backbone, cfg.captioner_model, cache_dir=cache_dir)
    if cfg.captioner == "oracle":
        return OracleCaptioner.from_world_benchmark(backbone, world_seed=world_seed)
    raise ValueError(f"unknown captioner {cfg.captioner!r}: expected 'retrieval', 'generative' or 'oracle'")

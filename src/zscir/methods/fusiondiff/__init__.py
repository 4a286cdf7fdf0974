"""Fusion-Diff (arXiv 2512.01636): generative editing in a joint vision-language space.

Pieces (one concept per module): `joint` (encode_joint: clip-fusion) with `captioner` (retrieval / oracle),
`mllm` (Qwen2-VL family joint encoder), `prior` (diffusion prior: denoiser + diffusers schedulers),
`control_adapter` (ControlNet-style Control-Adapter), `train_prior` / `train_adapter` (the two stages),
`composer` (retrieval), `checkpoint` and `register` (methods ``fusiondiff`` and ``fusiondiff-image``); the
commands ``zscir train fusiondiff-prior|fusiondiff-adapter`` are `zscir.cli.train_fusiondiff`. Design notes: docs/DESIGN-CHOICES.md (Fusion-Diff).
"""

from zscir.methods.fusiondiff.config import (AdapterConfig, FusionDiffConfig, JointConfig, PriorConfig,
                                             SamplingConfig)

__all__ = ["AdapterConfig", "FusionDiffConfig", "JointConfig", "PriorConfig", "SamplingConfig"]

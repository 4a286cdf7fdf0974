"""Optional HQ target images for text-target triplets (diffusers), with CLIP-score filters.

A text-target triplet (reference image, modification, target caption) becomes an image triplet by
generating its target: ``ip2p`` edits the reference with an InstructPix2Pix pipeline and the modification
as instruction; ``t2i`` renders the target caption with a text-to-image pipeline. Generated targets are
then scored with a CLIP model (any zscir backbone) as InstructPix2Pix filtered its data:

* ``text_image`` — cos(image(target), text(target caption)): the picture shows the caption;
* ``direction`` — cos(image(target) − image(reference), text(target caption) − text(reference caption)):
  the picture changed the way the captions did;
* ``image_image`` — cos(image(reference), image(target)): the edit kept the reference.

Rows under a threshold (``min_*``, off by default) are dropped and counted; the scores stay on each row
either way, with ``quality: hq``. Every row gets its own seeded torch generator, so the output does not
depend on processing order.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

MODES = ("ip2p", "t2i")
#: bounds of the diffusion settings: image-editing pipelines run 10-100 steps and guidance scales of 1-20;
#: past these a run only costs time (``--hq-steps 10**9``) or produces noise
MAX_STEPS, MAX_GUIDANCE = 1000, 100.0
DEFAULT_MODELS = {"ip2p": "timbrooks/instruct-pix2pix", "t2i": "stable-diffusion-v1-5/stable-diffusion-v1-5"}


@dataclass
class HQConfig:
    mode: str = "ip2p"
    model: str | None = None  #: diffusers pipeline name or folder (default per mode: DEFAULT_MODELS)
    steps: int = 20
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5  #: ip2p only
    seed: int = 0
    image_size: int = 256
    clip_model: str = "world-clip"
    min_text_image: float | None = None
    min_direction: float | None = None
    min_image_image: float | None = None

    def check(self) -> None:
        """`DataError` for an impossible setting, before any pipeline is loaded (option names as the CLI spells
        them): ``--hq-steps`` in [1, `MAX_STEPS`], guidance scales finite in [0, `MAX_GUIDANCE`], CLIP-score
        thresholds cosines in [-1, 1]. A NaN fails every range test."""
        from zscir.data.records import DataError

        wrong = []
        if self.mode not in MODES:
            wrong.append(f"--hq must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= MAX_STEPS):
            wrong.append(f"--hq-steps must be in [1, {MAX_STEPS}], got {self.steps}")
        for name, value in (("--hq-guidance", self.guidance_scale), ("image guidance", self.image_guidance_scale)):
            if not (isinstance(value, (int, float)) and 0.0 <= value <= MAX_GUIDANCE):
                wrong.append(f"{name} must be in [0, {MAX_GUIDANCE}], got {value}")
        for name, value in (("--min-clip-text-image", self.min_text_image), ("--min-clip-direction", self.min_direction),
                            ("--min-clip-image-image", self.min_image_image)):
            if value is not None and not (isinstance(value, (int, float)) and -1.0 <= value <= 1.0):
                wrong.append(f"{name} must be a cosine in [-1, 1], got {value}")
        if wrong:
            raise DataError("; ".join(wrong))


def clip_scores(scorer, ref: Image.Image, tgt: Image.Image, ref_caption: str | None,
                tgt_caption: str) -> dict[str, float]:
    """The three CLIP scores of one generated target (see the module docstring)."""
    img = scorer.encode_images([ref, tgt]).float()
    caps = [tgt_caption] + ([ref_caption] if ref_caption else [])
    txt = scorer.encode_texts(caps).float()
    out = {"text_image": float(img[1] @ txt[0]), "image_image": float(img[0] @ img[1])}
    if ref_caption:
        out["direction"] = float(F.cosine_similarity(img[1] - img[0], txt[0] - txt[1], dim=0))
    return {k: round(v, 6) for k, v in out.items()}


class HQTargets:
    """Generates, scores and filters targets for the text-target rows of a make-triplets run."""

    def __init__(self, pipe, cfg: HQConfig, scorer, model_name: str | None = None):
        if cfg.mode not in MODES:
            raise ValueError(f"--hq must be one of {', '.join(MODES)}, got {cfg.mode!r}")
        self.pipe, self.cfg, self.scorer = pipe, cfg, scorer
        self.model_name = model_name or cfg.model or DEFAULT_MODELS[cfg.mode]
        self.images: dict[str, Image.Image] = {}  #: generated targets by key; make-triplets writes them

    @classmethod
    def from_pretrained(cls, cfg: HQConfig, device: str = "cpu") -> "HQTargets":
        cfg.check()  # before diffusers is imported and the (large) pipeline loads
        from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

        from zscir.backbones import create_backbone

        if cfg.mode not in MODES:
            raise ValueError(f"--hq must be one of {', '.join(MODES)}, got {cfg.mode!r}")
        name = cfg.model or DEFAULT_MODELS[cfg.mode]
        kls = StableDiffusionInstructPix2PixPipeline if cfg.mode == "ip2p" else StableDiffusionPipeline
        try:
            pipe = kls.from_pretrained(name, safety_checker=None, requires_safety_checker=False).to(device)
        except (OSError, ValueError) as e:  # not a folder / not a cached or reachable hub name
            raise FileNotFoundError(f"cannot load the diffusers pipeline {name!r} ({e})") from None
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, cfg, create_backbone(cfg.clip_model, device=device), name)

    def _generate(self, row: dict, ref: Image.Image, seed: int) -> Image.Image:
        c = self.cfg
        gen = torch.Generator("cpu").manual_seed(seed)
        if c.mode == "ip2p":
            return self.pipe(prompt=row["modification"], image=ref.convert("RGB").resize((c.image_size, c.image_size)),
                             num_inference_steps=c.steps, guidance_scale=c.guidance_scale,
                             image_guidance_scale=c.image_guidance_scale, generator=gen).images[0]
        return self.pipe(prompt=row["target_caption"], height=c.image_size, width=c.image_size,
                         num_inference_steps=c.steps, guidance_scale=c.guidance_scale, generator=gen).images[0]

    def _passes(self, scores: dict[str, float]) -> str | None:
        c = self.cfg
        for name, floor in (("text_image", c.min_text_image), ("direction", c.min_direction),
                            ("image_image", c.min_image_image)):
            if floor is not None and name in scores and scores[name] < floor:
                return f"hq:{name}<{floor:g}"
        return None

    def run(self, rows: list[dict], data, rejected: Counter, progress: bool = True) -> list[dict]:
        """Rows with generated targets (``quality: hq``) replace the text-target rows that pass the filters."""
        todo = [i for i, r in enumerate(rows) if not r["target"] and r.get("target_caption")]
        refs_needed = {rows[i]["reference"] for i in todo}
        refs: dict[str, Image.Image] = {}
        for rec in data.records():
            if rec.key in refs_needed and rec.key not in refs:
                refs[rec.key] = rec.image.convert("RGB")
        keep = [True] * len(rows)
        for n, i in enumerate(tqdm(todo, desc=f"hq targets ({self.cfg.mode})", disable=not progress)):
            row = rows[i]
            ref = refs.get(row["reference"])
            if ref is None:
                rejected["hq:reference_unreadable"] += 1
                keep[i] = False
                continue
            seed = self.cfg.seed * 1_000_003 + i
            tgt = self._generate(row, ref, seed)
            scores = clip_scores(self.scorer, ref, tgt, row.get("reference_caption"), row["target_caption"])
            why = self._passes(scores)
            if why:
                rejected[why] += 1
                keep[i] = False
                continue
            key = f"gen-{self.cfg.mode}-{i}"
            self.images[key] = tgt
            rows[i] = {**row, "target": key, "_generated": True, "quality": "hq",
                       "generator": f"{row['generator']}+{self.cfg.mode}",
                       "model": {"text": row.get("model"), "image": self.model_name, "clip": self.cfg.clip_model},
                       "scores": {**row.get("scores", {}), **scores},
                       "hq": {"steps": self.cfg.steps, "guidance_scale": self.cfg.guidance_scale, "seed": seed}}
        return [r for r, k in zip(rows, keep) if k]


def tiny_random_pipeline(mode: str = "ip2p", seed: int = 0):
    """A tiny random Stable Diffusion (or InstructPix2Pix) pipeline built offline (tests only)."""
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionInstructPix2PixPipeline,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    words = "make it add remove red blue green yellow a an the square circle with without".split()
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                  eos_token="<eos>", model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=8 if mode == "ip2p" else 4, out_channels=4,
                                block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16)
    kls = StableDiffusionInstructPix2PixPipeline if mode == "ip2p" else StableDiffusionPipeline
    pipe = kls(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe

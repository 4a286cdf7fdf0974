"""The mllm joint encoder: an instruction-prompted Qwen2-VL-family model as the joint vision-language space.

Following the secondary summary of the paper (and E5-V-style prompting), an image, a text or an
(image, text) pair is wrapped in a prompt that asks the model to summarise it "in one word"; the final
hidden state of the last token, l2-normalised, is the embedding. Distinct prompts for the three input
kinds put them in one space. The paper uses a 72B model; `Qwen/Qwen2-VL-2B-Instruct` is the default here
because it is the smallest of the family — this path is meant for GPU users and is exercised offline by the
tests with a tiny random model of the same class (`tiny_random_qwen2vl`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass
class MLLMPrompts:
    """Prompt per input kind; ``{image}`` marks where the vision tokens go, ``{text}`` the text."""

    image: str = "{image}Summarize the above image in one word:"
    text: str = "{text}\nSummarize the above sentence in one word:"
    pair: str = "{image}{text}\nSummarize the above image and sentence in one word:"


@dataclass
class MLLMConfig:
    model: str = "Qwen/Qwen2-VL-2B-Instruct"
    dtype: str = "bfloat16"
    use_chat_template: bool = True
    prompts: MLLMPrompts = field(default_factory=MLLMPrompts)


class MLLMJointEncoder:
    """`encode_joint(images=None, texts=None)` → (N, hidden) unit vectors from a Qwen2-VL-family model."""

    def __init__(self, model, processor, cfg: MLLMConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.cfg = cfg or MLLMConfig()

    @classmethod
    def from_pretrained(cls, name: str = "Qwen/Qwen2-VL-2B-Instruct", device: str = "cuda",
                        dtype: str = "bfloat16", **kw) -> "MLLMJointEncoder":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(name, dtype=getattr(torch, dtype), **kw).to(device)
        processor = AutoProcessor.from_pretrained(name, **kw)
        processor.tokenizer.padding_side = "left"
        return cls(model, processor, MLLMConfig(model=name, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt(self, kind: str, text: str | None = None) -> str:
        """The full prompt string for one input (chat-formatted when the processor has a template)."""
        body = getattr(self.cfg.prompts, kind).format(image=VISION, text=text or "")
        template = getattr(self.processor, "chat_template", None)
        if self.cfg.use_chat_template and template:
            pieces = body.split(VISION)
            content = []
            for i, piece in enumerate(pieces):
                if i > 0:
                    content.append({"type": "image"})
                if piece:
                    content.append({"type": "text", "text": piece})
            msgs = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return body

    @torch.no_grad()
    def encode_joint(self, images: Sequence[Image.Image] | None = None,
                     texts: Sequence[str] | None = None) -> torch.Tensor:
        """Last-token final hidden state, l2-normalised, for images, texts or aligned pairs."""
        if images is None and texts is None:
            raise ValueError("encode_joint needs images, texts or both")
        if images is not None and texts is not None and len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        kind = "pair" if images is not None and texts is not None else ("image" if images is not None else "text")
        n = len(images) if images is not None else len(texts)
        prompts = [self.prompt(kind, texts[i] if texts is not None else None) for i in range(n)]
        kw = {"images": [im.convert("RGB") for im in images]} if images is not None else {}
        batch = self.processor(text=prompts, padding=True, return_tensors="pt", **kw).to(self.device)
        out = self.model(**batch, output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states[-1]
        mask = batch["attention_mask"]
        # last real token whatever the padding side: the highest index with mask 1
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
        emb = hidden[torch.arange(n, device=hidden.device), last]
        return F.normalize(emb.float(), dim=-1).cpu()


class ImageTextProcessor:
    """What `Qwen2VLProcessor` does for images + text, without its video processor.

    transformers' processor insists on a video processor, which needs torchvision (absent here); for
    embedding only images and texts the logic is: run the image processor, then expand each
    ``<|image_pad|>`` into ``grid_t·grid_h·grid_w / merge²`` copies before tokenising.
    """

    chat_template = None

    def __init__(self, image_processor, tokenizer, image_token: str = "<|image_pad|>"):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token = image_token

    def __call__(self, text: Sequence[str], images: Sequence[Image.Image] | None = None, padding: bool = True,
                 return_tensors: str = "pt"):
        from transformers import BatchFeature

        text = list(text)
        data = {}
        if images is not None:
            img = self.image_processor(images=list(images), return_tensors=return_tensors)
            data.update(img)
            merge = self.image_processor.merge_size ** 2
            counts = iter((img["image_grid_thw"].prod(-1) // merge).tolist())
            out = []
            for t in text:
                while self.image_token in t:
                    t = t.replace(self.image_token, "<|placeholder|>" * next(counts), 1)
                out.append(t.replace("<|placeholder|>", self.image_token))
            text = out
        data.update(self.tokenizer(text, padding=padding, return_tensors=return_tensors))
        # M-RoPE needs to know which tokens are image tokens (0 text, 1 image, 2 video)
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        data["mm_token_type_ids"] = (data["input_ids"] == image_id).long()
        return BatchFeature(data=dict(data), tensor_type=return_tensors)


def tiny_random_qwen2vl(seed: int = 0):
    """A tiny random `Qwen2VLForConditionalGeneration` + processor built offline (for tests only)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor)

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>",
                "<|vision_end|>", "<|video_pad|>"]
    words = ("summarize the above image and sentence in one word : a red blue green circle square star "
             "make it to change background").split()
    vocab = {t: i for i, t in enumerate(specials + sorted(set(words)))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # the special tokens are split off before this
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=specials[2:])
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         pad_token_id=0),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    improc = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56)
    return model, ImageTextProcessor(improc, tok)

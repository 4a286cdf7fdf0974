"""What each peer's released file is and how that peer runs it: container, layout, prompt, protocol.

Every detail here changes published numbers, so each is one field of a `PeerSpec` and is written into the
result JSON (`PeerSpec.describe`): the prompt per benchmark, the placeholder and which of its occurrences
receive φ(image), and the protocol flags the peer's own evaluation uses (`protocol_preset`). The sources
are the peers' public evaluation scripts; docs/PEERS.md cites them.

* SEARLE (``SEARLE_ViT-B32.pt`` / ``SEARLE_ViT-L14.pt``) and LinCIR (``lincir_large.pt``): ``ckpt["Phi"]``,
  prompt ``a photo of $ that {caption}``; every ``$`` token (id 259 in the OpenAI BPE) is replaced. SEARLE
  evaluates with its ``targetpad`` preprocessing, LinCIR with the plain CLIP preprocessing.
* Pic2Word (``pic2word_model.pt``): ``ckpt["state_dict_img2text"]`` (``module.``-prefixed keys), prompt
  ``a photo of * , {caption}``; the first ``*`` token (id 265) is replaced; FashionIQ query text
  ``{cap2} and {cap1}`` from the raw captions.

FashionIQ for SEARLE / LinCIR encodes both caption orders and averages the two normalised text features
(zscir's ``caption_mode=searle``); CIRCO queries never include the shared concept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PeerSpec:
    """One peer method: how its released checkpoint is read and how its queries are built."""

    name: str
    title: str
    #: top-level key of the checkpoint dict that holds φ's state dict
    container: str
    #: "searle" or "pic2word" (see `zscir.methods.peers.phi`)
    layout: str
    #: placeholder token written in the prompt (must be one token of the backbone's tokenizer)
    placeholder: str
    #: prompt with ``{}`` for the modification text and the placeholder once
    template: str
    #: "all": every placeholder token gets φ(image) (SEARLE / LinCIR); "first": only the first (Pic2Word)
    replace: str
    #: released files and the OpenAI CLIP each one was trained with, by φ's input (= projection) dim
    files: dict[int, tuple[str, str]]
    #: protocol flags of the peer's own evaluation, per benchmark (user --flag values win)
    protocol: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: query text per benchmark, as documentation recorded in results
    prompts: dict[str, str | list[str]] = field(default_factory=dict)

    def protocol_preset(self, benchmark: str) -> dict[str, Any]:
        return dict(self.protocol.get(benchmark, {}))

    def describe(self) -> dict[str, Any]:
        return {"peer": self.title, "prompt": self.template.replace("{}", "{caption}"),
                "placeholder": self.placeholder, "placeholder_replaced": self.replace,
                "prompts": {k: v for k, v in self.prompts.items()}, "protocol_preset": dict(self.protocol)}




def _protocol(preprocessing: str, caption_mode: str, strip_captions: bool) -> dict[str, dict[str, Any]]:
    """A peer's evaluation flags: one preprocessing everywhere, its FashionIQ captions, CIRCO without concept."""
    pre = {"preprocessing": preprocessing}
    return {"cirr": pre, "fashioniq": {**pre, "caption_mode": caption_mode, "strip_captions": strip_captions},
            "circo": {**pre, "use_shared_concept": False}}


_SEARLE_FIQ = ["a photo of $ that {cap1} and {cap2}", "a photo of $ that {cap2} and {cap1}"]

PEERS: dict[str, PeerSpec] = {
    "searle": PeerSpec(
        name="searle", title="SEARLE (Baldrati et al., ICCV 2023), released φ", container="Phi", layout="searle",
        placeholder="$", template="a photo of $ that {}", replace="all",
        files={512: ("SEARLE_ViT-B32.pt", "hf-hub:openai/clip-vit-base-patch32"),
               768: ("SEARLE_ViT-L14.pt", "hf-hub:openai/clip-vit-large-patch14")},
        protocol=_protocol("targetpad", "searle", strip_captions=True),
        prompts={"cirr": "a photo of $ that {caption}", "fashioniq": _SEARLE_FIQ,
                 "circo": "a photo of $ that {caption}"},
    ),
    "lincir": PeerSpec(
        name="lincir", title="LinCIR (Gu et al., CVPR 2024), released φ", container="Phi", layout="searle",
        placeholder="$", template="a photo of $ that {}", replace="all",
        files={768: ("lincir_large.pt", "hf-hub:openai/clip-vit-large-patch14")},
        protocol=_protocol("default", "searle", strip_captions=True),
        prompts={"cirr": "a photo of $ that {caption}", "fashioniq": _SEARLE_FIQ,
                 "circo": "a photo of $ that {caption}"},
    ),
    "pic2word-official": PeerSpec(
        name="pic2word-official", title="Pic2Word (Saito et al., CVPR 2023), released mapper",
        container="state_dict_img2text", layout="pic2word", placeholder="*", template="a photo of * , {}",
        replace="first",
        files={768: ("pic2word_model.pt", "hf-hub:openai/clip-vit-large-patch14")},
        protocol=_protocol("default", "pic2word", strip_captions=False),
        prompts={"cirr": "a photo of * , {caption}", "fashioniq": "a photo of * , {cap2} and {cap1}",
                 "circo": "a photo of * , {caption}"},
    ),
}

"""Training a CLIP-style BPE tokenizer with the HF `tokenizers` library.

The world CLIP and the tiny test models need a tokenizer that travels with the checkpoint and loads through
the same `AutoTokenizer.from_pretrained` call as a real CLIP tokenizer. We reproduce the shape of CLIP's
tokenizer — lower-casing, word/punctuation pre-tokenisation, BPE with an end-of-word suffix ``</w>``,
``<|startoftext|> ... <|endoftext|>`` framing — so that:

* words never seen in training (the held-out benchmark phrasings) fall back to sub-word pieces, as rare
  words do in real CLIP, instead of collapsing into one ``[UNK]``;
* the placeholder ``$`` is a single token of its own, as it is in CLIP's vocabulary, which pseudo-word
  methods rely on.

Special ids are fixed: ``[PAD]``=0, ``[UNK]``=1, ``<|startoftext|>``=2, ``<|endoftext|>``=3. The eos id is
deliberately not 2: transformers' CLIP text model treats ``eos_token_id == 2`` as the legacy "eos is the
largest id" convention.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]
PLACEHOLDER = "$"


def train_bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, max_length: int = 64
) -> PreTrainedTokenizerFast:
    """Train a CLIP-style BPE tokenizer on ``corpus`` and wrap it as a transformers fast tokenizer.

    The placeholder ``$`` is always added to the corpus so that it becomes one token.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        end_of_word_suffix="</w>",
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation),
        show_progress=False,
    )

    def lines():
        yield from corpus
        for _ in range(10):  # make "$</w>" frequent enough to always be a merged symbol
            yield f"a photo of {PLACEHOLDER}"

    tok.train_from_iterator(lines(), trainer=trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_length,
    )
    ids = fast(PLACEHOLDER, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise RuntimeError(f"placeholder {PLACEHOLDER!r} is not a single token: {ids}")
    return fast

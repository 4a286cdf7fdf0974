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

The merges are learned by `learn_bpe` below rather than by ``tokenizers.trainers.BpeTrainer``: the latter
is not deterministic (ids and tie-breaking depend on hash-map order, so two runs on the same corpus gave
different vocabularies, even single-threaded), which made seeded models irreproducible. `learn_bpe` breaks
ties lexicographically; normalisation, pre-tokenisation and the tokenizer itself are the HF library's.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]
PLACEHOLDER = "$"


def learn_bpe(word_counts: Counter, vocab_size: int, alphabet: Iterable[str], suffix: str = "</w>",
              min_frequency: int = 1) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Deterministic BPE: greedy merges of the most frequent adjacent pair, ties broken lexicographically.

    Returns the vocabulary (special tokens first, then the alphabet in sorted order, then merged symbols in
    merge order) and the merge list. Every alphabet character exists both bare and with the end-of-word
    suffix, so any word over the alphabet can be tokenized without ``[UNK]``.
    """
    words = {tuple(w[:-1]) + (w[-1] + suffix,): c for w, c in word_counts.items() if w}
    base = set(alphabet) | {ch for w in word_counts for ch in w}
    symbols = sorted(base | {ch + suffix for ch in base} | {s for w in words for s in w})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for sym in symbols:
        vocab.setdefault(sym, len(vocab))
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merged = best[0] + best[1]
        merges.append(best)
        vocab.setdefault(merged, len(vocab))
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def train_bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, max_length: int = 64
) -> PreTrainedTokenizerFast:
    """Train a CLIP-style BPE tokenizer on ``corpus`` and wrap it as a transformers fast tokenizer.

    Deterministic: the same corpus always gives the same vocabulary and ids. The placeholder ``$`` is
    always added to the corpus so that it becomes one token.
    """
    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase(), normalizers.Strip()])
    pre = pre_tokenizers.Whitespace()
    counts: Counter = Counter()
    for line in list(corpus) + [f"a photo of {PLACEHOLDER}"] * 10:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)))
    alphabet = string.ascii_lowercase + string.digits + string.punctuation
    vocab, merges = learn_bpe(counts, vocab_size, alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, end_of_word_suffix="</w>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    bos, eos = vocab[BOS], vocab[EOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    tok.add_special_tokens(SPECIAL_TOKENS)
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


#: the largest tokenizer.json / vocab.json read (CLIP's is 2 MB, multilingual ones reach ~20 MB)
MAX_TOKENIZER_FILE_BYTES = 64 * 2**20


def check_tokenizer_files(folder) -> bool:
    """Check a model folder's tokenizer files before transformers reads them; True when it has any.

    Why: an empty vocabulary made transformers build a tokenizer with no tokens, which zscir then reported
    as "no tokenizer files", and an unreadable tokenizer.json surfaced as a bare ``JSONDecodeError`` naming
    no file. Checked here, with the file named: tokenizer.json must be a JSON object whose ``model.vocab``
    is non-empty; vocab.json (the slow-tokenizer layout) must be a non-empty JSON object of token → id;
    vocab.txt (WordPiece) must list at least one token.
    """
    from pathlib import Path

    from zscir.config_check import ModelConfigError, read_config_json

    folder = Path(folder)
    found = False
    tj = folder / "tokenizer.json"
    if tj.is_file():
        found = True
        raw = read_config_json(tj, max_bytes=MAX_TOKENIZER_FILE_BYTES)
        model = raw.get("model")
        if not isinstance(model, dict):
            raise ModelConfigError(f"{tj}: 'model' must be a JSON object describing the tokenizer, got "
                                   f"{type(model).__name__}")
        vocab = model.get("vocab")
        if not isinstance(vocab, (dict, list)) or not vocab:
            raise ModelConfigError(f"{tj}: the tokenizer's vocabulary (model.vocab) is empty or missing")
    vj = folder / "vocab.json"
    if vj.is_file():
        found = True
        vocab = read_config_json(vj, max_bytes=MAX_TOKENIZER_FILE_BYTES)
        if not vocab:
            raise ModelConfigError(f"{vj}: the vocabulary is empty")
        bad = next((k for k, v in vocab.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0), None)
        if bad is not None:
            raise ModelConfigError(f"{vj}: token {bad!r} has id {vocab[bad]!r}; ids must be integers >= 0")
        if not tj.is_file() and not (folder / "merges.txt").is_file():
            raise ModelConfigError(f"{vj}: a vocab.json needs its merges.txt beside it")
    vt = folder / "vocab.txt"
    if vt.is_file():
        found = True
        if vt.stat().st_size == 0:
            raise ModelConfigError(f"{vt}: the vocabulary is empty")
    return found

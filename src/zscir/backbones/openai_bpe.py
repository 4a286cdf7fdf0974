"""The real OpenAI CLIP tokenizer, built offline from OpenAI's BPE merges file.

OpenAI CLIP (and every ``openai/clip-vit-*`` checkpoint) tokenizes with a byte-level BPE whose merges ship
as ``bpe_simple_vocab_16e6.txt.gz`` (in OpenAI's ``clip`` package and in the ``open_clip_torch`` wheel). The
vocabulary is derived from that file alone: the 256 byte symbols, the same with the end-of-word suffix
``</w>``, one symbol per merge (the first 48,894 merges), then ``<|startoftext|>`` and ``<|endoftext|>`` —
49,408 ids. `build_openai_clip_tokenizer` feeds that vocabulary and those merges to transformers'
`CLIPTokenizer`, i.e. the tokenizer class a hub ``openai/clip-vit-*`` folder loads, so that:

* machines without HF tokenizer files can still tokenize like the real CLIP (e.g. a ``local-dir:`` folder
  holding only config.json and weights);
* tests can check the ids the peer methods rely on (``$`` = 259, ``*`` = 265) against the real vocabulary.

OpenAI's tokenizer also *cleans* text before BPE (ftfy's ``fix_text``, then HTML unescaping twice), which
transformers' CLIP tokenizer does not: "&amp;" or curly quotes give other ids. `openai_text_clean` applies
that cleaning, so that text handed to a transformers CLIP tokenizer gives OpenAI CLIP's ids.

The merges file is found without importing ``open_clip`` (which needs torchvision): ``$ZSCIR_OPENAI_BPE``,
else the ``open_clip`` package folder located by `importlib.util.find_spec`.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
#: environment variable naming the merges file explicitly
BPE_ENV = "ZSCIR_OPENAI_BPE"
#: merges used by OpenAI CLIP: vocabulary size 49408 = 2 * 256 + N_MERGES + 2 special tokens
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77


def find_openai_bpe() -> Path | None:
    """Path of OpenAI's BPE merges file, or None when neither ``$ZSCIR_OPENAI_BPE`` nor open_clip has it."""
    env = os.environ.get(BPE_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.is_file() else None
    try:
        spec = importlib.util.find_spec("open_clip")  # a top-level package: located, not imported
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / BPE_FILENAME
        if p.is_file():
            return p
    return None


def byte_symbols() -> list[str]:
    """The printable stand-in of every byte, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``);
    the remaining bytes (controls, space, soft hyphen) follow in byte order, mapped to code points 256, 257, ...
    so that no vocabulary symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def read_openai_bpe(path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocabulary, merges) of OpenAI CLIP from the gzipped merges file (found by `find_openai_bpe`)."""
    p = Path(path) if path else find_openai_bpe()
    if p is None:
        raise FileNotFoundError(f"OpenAI's {BPE_FILENAME} was not found: set ${BPE_ENV} to its path or install "
                                "open_clip_torch (pip install --no-deps open_clip_torch is enough)")
    lines = gzip.open(p, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{p} is not OpenAI's CLIP BPE file (expected {N_MERGES} merges after a header line)")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_openai_clip_tokenizer(path: str | os.PathLike | None = None, model_max_length: int = CONTEXT_LENGTH):
    """transformers' `CLIPTokenizer` with OpenAI CLIP's real vocabulary and merges (no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = read_openai_bpe(path)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


#: vocabulary size of every OpenAI CLIP text encoder
OPENAI_VOCAB_SIZE = 49408


def openai_tokenizer_for(vocab_size: int, where: str):
    """The tokenizer for a checkpoint folder that has none: OpenAI's, when the model has OpenAI's vocabulary.

    Raises ``OSError`` (the error type of a missing file) when the vocabulary is another one or the merges
    file is not available, instead of silently tokenizing everything to unknown tokens.
    """
    if vocab_size == OPENAI_VOCAB_SIZE and find_openai_bpe() is not None:
        logger.info("%s has no tokenizer files; using OpenAI CLIP's tokenizer from %s", where, find_openai_bpe())
        return build_openai_clip_tokenizer()
    hint = (f" (its {OPENAI_VOCAB_SIZE}-token vocabulary is OpenAI CLIP's: pip install --no-deps open_clip_torch "
            f"or set ${BPE_ENV} to bpe_simple_vocab_16e6.txt.gz to use OpenAI's tokenizer)"
            if vocab_size == OPENAI_VOCAB_SIZE else "")
    raise OSError(f"{where} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt){hint}")


_warned_ftfy = False


def openai_text_clean(text: str) -> str:
    """OpenAI CLIP's pre-BPE cleaning: ``ftfy.fix_text``, HTML-unescape twice, strip.

    ftfy (``pip install ftfy``, in zscir's ``[peers]`` extra) un-curls quotes and repairs mojibake; without
    it only the HTML unescaping is applied and a warning is logged once.
    """
    global _warned_ftfy
    try:
        import ftfy
    except ImportError:
        if not _warned_ftfy:
            logger.warning("ftfy is not installed: texts with curly quotes or mojibake tokenize differently "
                           "from OpenAI CLIP (pip install ftfy)")
            _warned_ftfy = True
    else:
        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()

"""Optional LLM editor: a local causal LM writes (edit, edited caption) for a caption, few-shot prompted.

Any ``transformers`` causal LM loads by name (``AutoModelForCausalLM``); an instruct model follows the
few-shot pattern below, written for this project (not copied from a paper). Generation is seeded. The
parser is strict on purpose — a small model often echoes the input, rambles or breaks the format, and a
bad triplet is worse than none: it needs one ``Edit:`` line and one ``Output:`` line, each short and
single-line, the output must differ from the input in its words, and the edit must not be the input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

#: (input caption, edit, output caption) — the few-shot examples of the prompt
EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("a red car parked in front of a house", "make the car blue", "a blue car parked in front of a house"),
    ("two dogs playing on the grass", "only one dog", "a dog playing on the grass"),
    ("a wooden chair next to a window", "make it a metal chair", "a metal chair next to a window"),
    ("a cat sleeping on a sofa", "add a blanket", "a cat sleeping on a sofa under a blanket"),
    ("a glass of orange juice on a table", "replace the juice with milk", "a glass of milk on a table"),
)
INSTRUCTION = "Write a short edit for the picture described by the input caption, and the caption after the edit."


def build_prompt(caption: str, examples: Sequence[tuple[str, str, str]] = EXAMPLES) -> str:
    shots = "\n\n".join(f"Input: {a}\nEdit: {e}\nOutput: {b}" for a, e, b in examples)
    return f"{INSTRUCTION}\n\n{shots}\n\nInput: {caption.strip()}\nEdit:"


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[\w'-]+", text.lower()))


class ParseError(ValueError):
    """Why a generation was rejected (counted by reason in the run summary)."""


def parse_completion(caption: str, completion: str, max_words: int = 40) -> tuple[str, str]:
    """(edit, output caption) from the text generated after ``Edit:``, or `ParseError`."""
    lines = [ln.strip() for ln in completion.strip("\n").split("\n")]
    if len(lines) < 2 or not lines[1].startswith("Output:"):
        raise ParseError("format")
    edit, output = lines[0].strip(), lines[1][len("Output:"):].strip()
    if not edit or not output:
        raise ParseError("empty")
    if any(t in edit + output for t in ("Input:", "Edit:", "Output:")):
        raise ParseError("format")
    if len(edit.split()) > max_words or len(output.split()) > max_words:
        raise ParseError("too_long")
    if _norm(output) == _norm(caption) or not _norm(output):
        raise ParseError("no_change")
    if _norm(edit) == _norm(caption) or _norm(edit) == _norm(output):
        raise ParseError("echo")
    return edit, output


@dataclass
class LLMEditor:
    """Wraps a causal LM and its tokenizer; ``edit(caption, seed)`` → (edit, output) or `ParseError`."""

    model: object
    tokenizer: object
    name: str
    max_new_tokens: int = 48
    temperature: float = 0.7

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu", **kw) -> "LLMEditor":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
        return cls(model, tok, name, **kw)

    @torch.no_grad()
    def edit(self, caption: str, seed: int) -> tuple[str, str]:
        prompt = build_prompt(caption)
        batch = self.tokenizer(prompt, return_tensors="pt").to(self.model.device)
        torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                  temperature=self.temperature if self.temperature > 0 else None, top_p=None,
                                  top_k=None, pad_token_id=pad)
        text = self.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return parse_completion(caption, text)


def tiny_random_llm(seed: int = 0) -> LLMEditor:
    """A tiny random GPT-2 with a word-level tokenizer covering the prompt, built offline (tests only).

    ``Input:``/``Edit:``/``Output:`` are single tokens and newlines are kept, so what the model writes
    decodes into the layout the parser reads.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[ \t]+"), "removed"),
                                   pre_tokenizers.Split(Regex(r"\n"), "isolated"), pre_tokenizers.Punctuation()])
    marks = ["Input:", "Edit:", "Output:"]
    pieces = {w for w, _ in pre.pre_tokenize_str(build_prompt("a b c"))}
    vocab = {t: i for i, t in enumerate(["<unk>", "<eos>"] + marks + sorted(pieces))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    tk.add_tokens([AddedToken(m, normalized=False) for m in marks])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=1, eos_token_id=1)).eval()
    return LLMEditor(model, tok, "tiny-random-gpt2", max_new_tokens=16)

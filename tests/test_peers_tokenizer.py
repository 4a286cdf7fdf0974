"""The real OpenAI CLIP tokenizer, offline: placeholder ids and equality with OpenAI's own tokenizer.

The merges file comes from the ``open_clip_torch`` wheel (installed with ``--no-deps``; it need not import)
or ``$ZSCIR_OPENAI_BPE``; the reference tokenizer is the wheel's ``tokenizer.py`` (OpenAI's, MIT), loaded
by path. Both are optional: the tests skip cleanly without them.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from zscir.backbones.openai_bpe import (
    build_openai_clip_tokenizer,
    byte_symbols,
    find_openai_bpe,
    openai_text_clean,
)

BPE = find_openai_bpe()
pytestmark = pytest.mark.skipif(BPE is None, reason="OpenAI's bpe_simple_vocab_16e6.txt.gz not found "
                                "(pip install --no-deps open_clip_torch, or set ZSCIR_OPENAI_BPE)")

SENTENCES = [
    "a photo of $ that is red", "a photo of * , has long sleeves", "$, is not the placeholder",
    "The Dog's toys aren't   HERE!!", "café naïve résumé 東京 🐶", "3.14 and 1,000,000 items",
    "tab\tand\nnewline", "  leading and trailing  ", "don't we'll they'd I'm you've", "schön", "e\u0301 composed",
    "an emoji 👍🏽 run", "UPPER lower MiXeD", "a-b_c/d\\e", "ÀÉÎÕÜ", "is darker and has no sleeves",
    "Change the dog to a cat and make the background a beach",
    # OpenAI cleans text (HTML entities, ftfy's quote un-curling) before BPE; transformers' tokenizer does not
    "&amp; &lt;b&gt;", "it’s a “quoted” word",
]
CLEANING_MATTERS = {"&amp; &lt;b&gt;", "it’s a “quoted” word"}


@pytest.fixture(scope="module")
def hf_tok():
    return build_openai_clip_tokenizer()


@pytest.fixture(scope="module")
def openai_tok():
    path = BPE.parent / "tokenizer.py"
    if not path.is_file():
        pytest.skip(f"no reference tokenizer.py next to {BPE}")
    spec = importlib.util.spec_from_file_location("zscir_test_openai_reference_tokenizer", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)  # needs ftfy and regex, not torchvision
    except ImportError as e:
        pytest.skip(f"reference tokenizer not importable: {e}")
    return mod.SimpleTokenizer(bpe_path=str(BPE))


def test_vocabulary_and_placeholder_ids(hf_tok):
    assert len(hf_tok) == 49408 and len(set(byte_symbols())) == 256
    assert hf_tok.bos_token_id == 49406 and hf_tok.eos_token_id == 49407
    ids = lambda s: hf_tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids("$") == [259] and ids("*") == [265]
    assert 259 not in ids("a photo of $, red")  # punctuation runs merge: keep placeholders space-separated
    assert 265 in ids("a photo of * , red") and 259 in ids("a photo of $ that is red")


def test_matches_openai_tokenizer(hf_tok, openai_tok):
    differ = set()
    for s in SENTENCES:
        ref = openai_tok.encode(s)
        assert hf_tok(openai_text_clean(s), add_special_tokens=False)["input_ids"] == ref, s
        if hf_tok(s, add_special_tokens=False)["input_ids"] != ref:
            differ.add(s)
    assert differ == CLEANING_MATTERS  # the cleaning is exactly what closes the gap


def _real_vocab_backbone(hf_tok, eos_token_id: int):
    """A tiny random HF CLIP with OpenAI's vocabulary (the hub configs use the legacy eos_token_id=2)."""
    from transformers import CLIPConfig, CLIPModel

    from zscir.backbones.hf_clip import HFCLIPBackbone, build_image_processor

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=eos_token_id, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    return HFCLIPBackbone(model, hf_tok, build_image_processor(32), name="tiny-openai-vocab")


@pytest.mark.parametrize("eos_token_id", [2, 49407])
def test_hf_backbone_tokenizes_like_openai_clip(eos_token_id, hf_tok, openai_tok, tmp_path):
    from zscir.methods import create_composer
    from zscir.methods.peers.composer import backbone_token_id

    from test_peers import _pic2word_state, _searle_state

    bb = _real_vocab_backbone(hf_tok, eos_token_id)
    assert bb.placeholder_token_id == 259 and backbone_token_id(bb, "*") == 265
    tok = bb.tokenize([openai_text_clean(s) for s in SENTENCES])
    for row, mask, s in zip(tok["input_ids"], tok["attention_mask"], SENTENCES):
        assert row[mask.bool()].tolist() == [49406, *openai_tok.encode(s), 49407], s

    torch.save({"Phi": _searle_state(1)}, tmp_path / "s.pt")
    torch.save({"state_dict_img2text": _pic2word_state(3)}, tmp_path / "p.pt")
    searle = create_composer("searle", backbone=bb, checkpoint=str(tmp_path / "s.pt"))
    p2w = create_composer("pic2word-official", backbone=bb, checkpoint=str(tmp_path / "p.pt"))
    assert (searle.placeholder_id, p2w.placeholder_id) == (259, 265)
    tokens = torch.randn(2, 32)
    # pooling at EOT with padding (pad = eos here, as in the hub tokenizer): a row's features do not depend
    # on the other rows of its batch
    both = searle.encode_prompts(["a photo of $ that is red", "a photo of $ that is a much longer caption here"], tokens)
    alone = searle.encode_prompts(["a photo of $ that is red"], tokens[:1])
    assert torch.allclose(both[0], alone[0], atol=1e-5) and math.isclose(float(both[0].norm()), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="lost its placeholder"):
        searle.encode_prompts(["a photo of $, red"], tokens[:1])


def test_local_dir_without_tokenizer_files_gets_openai_tokenizer(tmp_path, monkeypatch, openai_tok):
    """A folder with only config.json + weights (e.g. converted from OpenAI's .pt) tokenizes like OpenAI CLIP,
    instead of transformers' silent two-token placeholder tokenizer."""
    from zscir.backbones import create_backbone

    bb = _real_vocab_backbone(build_openai_clip_tokenizer(), 2)
    bb.model.save_pretrained(tmp_path / "clip")  # no tokenizer, no preprocessor_config.json
    loaded = create_backbone(f"local-dir:{tmp_path / 'clip'}")
    assert len(loaded.tokenizer) == 49408 and loaded.placeholder_token_id == 259
    s = "a photo of $ that is red"
    assert loaded.tokenize([s])["input_ids"][0].tolist() == [49406, *openai_tok.encode(s), 49407]
    assert loaded.image_processor.crop_size["height"] == 32

    monkeypatch.setenv("ZSCIR_OPENAI_BPE", str(tmp_path / "absent.txt.gz"))
    with pytest.raises(OSError, match="no tokenizer files.*OpenAI CLIP"):
        create_backbone(f"local-dir:{tmp_path / 'clip'}")

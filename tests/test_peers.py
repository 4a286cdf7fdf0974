"""Peer reproductions (SEARLE, LinCIR, Pic2Word released weights) on a tiny random HF CLIP, offline.

Synthetic checkpoints with the released files' exact key names and containers stand in for the real ones
(which are not on this machine): they must load strictly, be refused on a backbone of the wrong size or
when unpickling would run code, and the composed query must equal a direct re-implementation of the
peers' recipe written from the HF CLIPTextModel's submodules.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from zscir.methods import create_composer
from zscir.methods.peers import PEERS, PeerCheckpointError, PeerComposer, load_phi

# tiny-clip-test: projection dim 24, token width 32
EMBED, WIDTH = 24, 32


def _linear_state(shapes: dict[str, tuple[int, int]], seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random ``nn.Linear`` weights/biases under the given key names (shapes are (out, in))."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, (o, i) in shapes.items():
        state[f"{prefix}{k}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        state[f"{prefix}{k}.bias"] = torch.randn(o, generator=g) * 0.1
    return state


def _searle_state(seed: int, d_in: int = EMBED, hidden: int = 40, d_out: int = WIDTH) -> dict[str, torch.Tensor]:
    """SEARLE / LinCIR ``ckpt["Phi"]`` key names."""
    return _linear_state({"layers.0": (hidden, d_in), "layers.3": (hidden, hidden), "layers.6": (d_out, hidden)}, seed)


def _pic2word_state(seed: int, d_in: int = EMBED, hidden: int = 16, d_out: int = WIDTH) -> dict[str, torch.Tensor]:
    """Pic2Word ``ckpt["state_dict_img2text"]`` key names, with DataParallel's ``module.`` prefix."""
    return _linear_state({"layers.0.0": (hidden, d_in), "layers.1.0": (hidden, hidden), "fc_out": (d_out, hidden)},
                         seed, prefix="module.")


def _searle_ref(state, x):
    """SEARLE/LinCIR φ in eval mode, by hand: Linear → GELU → Linear → GELU → Linear."""
    h = F.gelu(F.linear(x, state["layers.0.weight"], state["layers.0.bias"]))
    h = F.gelu(F.linear(h, state["layers.3.weight"], state["layers.3.bias"]))
    return F.linear(h, state["layers.6.weight"], state["layers.6.bias"])


def _pic2word_ref(state, x):
    s = {k[len("module."):]: v for k, v in state.items()}
    h = F.relu(F.linear(x, s["layers.0.0.weight"], s["layers.0.0.bias"]))
    h = F.relu(F.linear(h, s["layers.1.0.weight"], s["layers.1.0.bias"]))
    return F.linear(h, s["fc_out.weight"], s["fc_out.bias"])


def write_checkpoints(d: Path, d_in: int = EMBED, d_out: int = WIDTH) -> dict[str, Path]:
    """One synthetic checkpoint per peer, in the released files' containers (for a backbone with projection
    dim ``d_in`` and token width ``d_out``; default: tiny-clip-test)."""
    out = {"searle": d / "SEARLE_tiny.pt", "lincir": d / "lincir_tiny.pt", "pic2word-official": d / "p2w_tiny.pt"}
    torch.save({"Phi": _searle_state(1, d_in=d_in, d_out=d_out)}, out["searle"])
    torch.save({"Phi": _searle_state(2, d_in=d_in, d_out=d_out)}, out["lincir"])
    # Pic2Word's file also carries training bookkeeping next to the mapper
    torch.save({"epoch": 3, "name": "pic2word", "state_dict_img2text": _pic2word_state(3, d_in=d_in, d_out=d_out),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, out["pic2word-official"])
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("peer-ckpts"))


STATES = {"searle": lambda: _searle_state(1), "lincir": lambda: _searle_state(2),
          "pic2word-official": lambda: _pic2word_state(3)}
REFS = {"searle": _searle_ref, "lincir": _searle_ref, "pic2word-official": _pic2word_ref}


# ------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", list(PEERS))
def test_released_layout_loads_strictly(name, ckpts, tiny_backbone):
    phi, info = load_phi(ckpts[name], PEERS[name], tiny_backbone)
    x = torch.randn(5, EMBED)
    assert torch.allclose(phi(x), REFS[name](STATES[name](), x), atol=1e-6)
    assert not phi.training and info["phi_dims"]["in_dim"] == EMBED and info["phi_dims"]["out_dim"] == WIDTH


@pytest.mark.parametrize("extra", ["layers.9.weight", "layers.1.weight"])
def test_unexpected_keys_are_refused(extra, tmp_path, tiny_backbone):
    state = _searle_state(1)
    state[extra] = torch.zeros(3, 3)
    torch.save({"Phi": state}, tmp_path / "x.pt")
    with pytest.raises(PeerCheckpointError, match="strictly"):
        load_phi(tmp_path / "x.pt", PEERS["searle"], tiny_backbone)


def test_wrong_container_and_layout_are_refused(tmp_path, tiny_backbone):
    torch.save({"Phi": _searle_state(1)}, tmp_path / "s.pt")
    with pytest.raises(PeerCheckpointError, match="no 'state_dict_img2text' entry"):
        load_phi(tmp_path / "s.pt", PEERS["pic2word-official"], tiny_backbone)
    torch.save(_searle_state(1), tmp_path / "bare.pt")  # a bare state dict is read as φ, but must fit the layout
    with pytest.raises(PeerCheckpointError, match="pic2word-layout"):
        load_phi(tmp_path / "bare.pt", PEERS["pic2word-official"], tiny_backbone)
    torch.save({"Phi": {"layers.0.weight": torch.zeros(4, 4), "note": "x"}}, tmp_path / "n.pt")
    with pytest.raises(PeerCheckpointError, match="non-tensor"):
        load_phi(tmp_path / "n.pt", PEERS["searle"], tiny_backbone)
    with pytest.raises(PeerCheckpointError, match="not found"):
        load_phi(tmp_path / "missing.pt", PEERS["searle"], tiny_backbone)


@pytest.mark.parametrize("name,state,hint", [
    ("searle", _searle_state(1, d_in=512, hidden=64, d_out=512), "clip-vit-base-patch32"),
    ("searle", _searle_state(1, d_in=EMBED, hidden=64, d_out=768), None),
    ("pic2word-official", _pic2word_state(3, d_in=768, d_out=768), "clip-vit-large-patch14"),
])
def test_mismatched_backbone_is_refused(name, state, hint, tmp_path, tiny_backbone):
    torch.save({PEERS[name].container: state}, tmp_path / "m.pt")
    with pytest.raises(PeerCheckpointError, match=r"projection dim 24 and token width 32") as e:
        load_phi(tmp_path / "m.pt", PEERS[name], tiny_backbone)
    if hint:
        assert hint in str(e.value)


class _RunsCode:
    """Unpickling this object calls `_touch` — what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


def test_arbitrary_pickle_is_refused_and_not_run(tmp_path, tiny_backbone):
    marker = tmp_path / "pwned"
    torch.save({"Phi": _searle_state(1), "extra": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(PeerCheckpointError, match="arbitrary pickled objects"):
        load_phi(tmp_path / "evil.pt", PEERS["searle"], tiny_backbone)
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the file really does run code when trusted ...
    assert marker.exists()  # ... so the refusal above is what kept it from running


def test_not_a_checkpoint_is_refused(tmp_path, tiny_backbone):
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(PeerCheckpointError, match="not"):
        load_phi(tmp_path / "junk.pt", PEERS["lincir"], tiny_backbone)


# ------------------------------------------------------------------------------------ composed query
def _reference_text_features(model, ids: torch.Tensor, positions: list[int], token: torch.Tensor) -> torch.Tensor:
    """One prompt (no padding), computed directly from the HF CLIP submodules: token embeddings with the
    placeholder position(s) replaced, + positions, causal pre-LN transformer, final LayerNorm, EOT pooling,
    projection, L2 normalisation."""
    tm = model.text_model
    x = tm.embeddings.token_embedding(ids[None])[0].clone()
    for p in positions:
        x[p] = token
    L = x.shape[0]
    x = x + tm.embeddings.position_embedding.weight[:L]
    causal = torch.full((L, L), float("-inf")).triu(1)
    for layer in tm.encoder.layers:
        att = layer.self_attn
        h = layer.layer_norm1(x)
        nh = att.num_heads
        q, k, v = (proj(h).view(L, nh, -1).transpose(0, 1) for proj in (att.q_proj, att.k_proj, att.v_proj))
        w = (q @ k.transpose(1, 2)) * q.shape[-1] ** -0.5 + causal
        a = (w.softmax(-1) @ v).transpose(0, 1).reshape(L, -1)
        x = x + att.out_proj(a)
        x = x + layer.mlp.fc2(layer.mlp.activation_fn(layer.mlp.fc1(layer.layer_norm2(x))))
    x = tm.final_layer_norm(x)
    eot = int((ids == model.config.text_config.eos_token_id).nonzero()[0, 0])
    return F.normalize(model.text_projection(x[eot]), dim=-1)


def _images(n: int, size: int = 32) -> list[Image.Image]:
    g = torch.Generator().manual_seed(7)
    return [Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


@pytest.mark.parametrize("name,texts,expected_positions", [
    # SEARLE / LinCIR replace every "$" (also one inside the caption); Pic2Word only the first "*"
    ("searle", ["is red", "has $ two circles", "remove the square and make it tiny"], [1, 2, 1]),
    ("lincir", ["is blue"], [1]),
    ("pic2word-official", ["is red", "add a * star"], [1, 1]),
])
def test_composed_query_equals_direct_reimplementation(name, texts, expected_positions, ckpts, tiny_backbone):
    comp = create_composer(name, backbone=tiny_backbone, checkpoint=str(ckpts[name]))
    assert isinstance(comp, PeerComposer)
    imgs = _images(len(texts))
    got = comp.encode_queries(imgs, texts)

    model = tiny_backbone.model
    pix = tiny_backbone.preprocess(imgs)
    with torch.no_grad():
        raw = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)  # NOT normalised
        tokens = REFS[name](STATES[name](), raw)  # used as is: no normalisation or rescaling
        ph_id = tiny_backbone.tokenizer(PEERS[name].placeholder, add_special_tokens=False)["input_ids"][0]
        for i, t in enumerate(texts):
            prompt = PEERS[name].template.replace("{}", t)
            ids = torch.tensor(tiny_backbone.tokenizer(prompt)["input_ids"])
            pos = (ids == ph_id).nonzero()[:, 0].tolist()
            pos = pos if PEERS[name].replace == "all" else pos[:1]
            assert len(pos) == expected_positions[i]
            ref = _reference_text_features(model, ids, pos, tokens[i])
            assert torch.allclose(got[i], ref, atol=1e-5), (name, t, (got[i] - ref).abs().max())
    # the normalised-input variant (zscir's own token learner) gives a different query: the test can fail
    assert not torch.allclose(F.normalize(raw, dim=-1), raw)


def test_peer_methods_are_listed_and_need_a_checkpoint(tiny_backbone):
    from zscir.cli import app
    from zscir.methods import list_methods

    specs = {s.name: s for s in list_methods()}
    assert all(specs[n].peer for n in PEERS) and not specs["pic2word"].peer and not specs["sum"].peer
    res = CliRunner().invoke(app, ["list", "methods"])
    assert res.exit_code == 0
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip()}
    assert all("(peer)" in lines[n] for n in PEERS) and "(peer)" not in lines["tscir"]
    with pytest.raises(ValueError, match="--checkpoint"):
        create_composer("searle", backbone=tiny_backbone)


def test_placeholder_must_be_one_token(ckpts, tiny_backbone):
    with pytest.raises(ValueError, match="once"):
        create_composer("searle", backbone=tiny_backbone, checkpoint=str(ckpts["searle"]), template="a photo of {}")


def test_local_dir_without_tokenizer_is_refused(tiny_backbone, tmp_path):
    """transformers 5 silently builds a two-token CLIPTokenizer for a folder without tokenizer files; zscir
    refuses such a folder (here a non-OpenAI vocabulary, so no OpenAI tokenizer can stand in)."""
    from zscir.backbones import create_backbone

    tiny_backbone.model.save_pretrained(tmp_path / "m")
    tiny_backbone.image_processor.save_pretrained(tmp_path / "m")
    with pytest.raises(OSError, match="no tokenizer files"):
        create_backbone(f"local-dir:{tmp_path / 'm'}")

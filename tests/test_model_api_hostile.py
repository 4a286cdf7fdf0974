"""Issue 21 §4 (model folders, API, serve, demo) and §5 (``search -O``): one clear error, never a traceback.

Each case copies a shipped model or checkpoint folder to a temporary folder and corrupts one field of its
config.json (negative, zero, huge, wrong type, missing), or misuses a public API. Before these checks the
cases raised ``RuntimeError`` / ``ZeroDivisionError`` / ``AssertionError`` / transformers' own validation
errors (tracebacks in the CLI), allocated for up to a minute first (``max_position_embeddings: 10**7``:
56 s, ``image_size: 20000``: 20 s), failed only after the caption bank was built (``caption_k: -3``, 175 s),
or loaded "fine" with random weights (a config with 5 text layers for 3 layers of weights).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import SMALL_WORLD, shipped
from test_cli_errors import assert_one_error_line
from test_indexer import MODEL, make_photos

MISSING = object()  # a field deleted from config.json


def zscir(*args):
    from zscir.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def edited(src: Path, dst: Path, key: str, value, file: str = "config.json") -> Path:
    """A copy of folder ``src`` at ``dst`` whose ``file`` has ``key`` (dotted path) set to ``value``."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / file).read_text())
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is MISSING:
        del node[last]
    else:
        node[last] = value
    (dst / file).write_text(json.dumps(cfg))
    return dst


def _cases(table):
    return [pytest.param(k, v, id=f"{k}={'missing' if v is MISSING else repr(v)}") for k, vs in table for v in vs]


# ------------------------------------------------------------------------------------------ CLIP folders
#: (dotted key, bad values): each gives one error naming config.json (or the weights it does not fit)
CLIP_CASES = _cases([
    ("text_config.hidden_size", [-1, 0, 10**6, "128", 12.5, None, True, 64, MISSING]),
    ("text_config.num_attention_heads", [0, 3, -4, "4"]),
    ("text_config.num_hidden_layers", [0, 2, 5, 100_000]),
    ("text_config.vocab_size", [0, 100, 10**9]),
    ("text_config.max_position_embeddings", [0, 10**7, 32]),
    ("vision_config.image_size", [20000, 0, -64, "64", 4]),
    ("vision_config.patch_size", [0, -8, 1]),
    ("vision_config.num_channels", [0, 1, 100]),
    ("vision_config.hidden_act", ["bogus", 3]),
    ("vision_config.layer_norm_eps", [-1.0, 0, "x"]),
    ("projection_dim", [0, 64, MISSING]),
    ("text_config", [MISSING, "abc", []]),
])


@pytest.fixture(scope="module")
def world_clip_dir() -> Path:
    return shipped("world-clip")


@pytest.mark.parametrize("key, value", CLIP_CASES)
def test_clip_folder_with_a_bad_config_field(world_clip_dir, tmp_path, key, value):
    from zscir.backbones import create_backbone

    folder = edited(world_clip_dir, tmp_path / "clip", key, value)
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as info:
        create_backbone(f"local-dir:{folder}")
    msg = str(info.value)
    assert time.perf_counter() - t0 < 20  # no huge allocation first
    assert str(folder / "config.json") in msg, msg
    field = key.split(".")[-1]
    assert field in msg or "does not match" in msg, msg  # the field, or the tensor that does not fit
    assert "\n" not in msg


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe{}", b'"a string"'])
def test_clip_config_json_that_is_not_an_object(world_clip_dir, tmp_path, content):
    from zscir.backbones import create_backbone

    folder = tmp_path / "clip"
    shutil.copytree(world_clip_dir, folder)
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match="config.json: ") as info:
        create_backbone(f"local-dir:{folder}")
    assert "\n" not in str(info.value)


def _tokenizer(folder: Path, edit) -> None:
    tok = json.loads((folder / "tokenizer.json").read_text())
    edit(tok)
    (folder / "tokenizer.json").write_text(json.dumps(tok))


TOKENIZER_CASES = {
    "empty vocab": lambda f: _tokenizer(f, lambda t: t["model"].update(vocab={}, merges=[])),
    "vocab null": lambda f: _tokenizer(f, lambda t: t["model"].update(vocab=None)),
    "no model": lambda f: _tokenizer(f, lambda t: t.pop("model")),
    "not json": lambda f: (f / "tokenizer.json").write_text("{not json"),
    "empty file": lambda f: (f / "tokenizer.json").write_text(""),
    "empty vocab.json": lambda f: ((f / "tokenizer.json").unlink(), (f / "vocab.json").write_text("{}"),
                                   (f / "merges.txt").write_text("#version: 0.2\n")),
    "ids past vocab_size": lambda f: _tokenizer(f, lambda t: t["model"]["vocab"].update({"zzzzq": 5000})),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES))
def test_clip_folder_with_a_bad_tokenizer(world_clip_dir, tmp_path, case):
    """An empty vocabulary was reported as "no tokenizer files"; a broken tokenizer.json as a bare JSON error
    naming no file; ids past the embedding table failed only at the first query (IndexError)."""
    from zscir.backbones import create_backbone

    folder = tmp_path / "clip"
    shutil.copytree(world_clip_dir, folder)
    TOKENIZER_CASES[case](folder)
    with pytest.raises(ValueError) as info:
        create_backbone(f"local-dir:{folder}")
    msg = str(info.value)
    assert str(folder) in msg and "\n" not in msg, msg
    assert ("vocab" in msg or "token" in msg or "JSON" in msg), msg


# ------------------------------------------------------------------------------------------- LiT folders
LIT_CASES = _cases([
    ("image_size", [20000, 0, 31, -160, "160", 160.5, None]),
    ("head_hidden", [1e9, -1, 10**6, "1024", True]),
    ("embed_dim", [0, -512, 10**5]),
    ("max_text_len", [0, -1, 10**6]),
    ("patch_tokens", ["bogus", 3]),
    ("init_temperature", [0, -0.07, float("nan"), 1e9]),
    ("placeholder", ["", 5, "x" * 100]),
    ("text_tower", ["", 5]),
])


@pytest.mark.parametrize("key, value", LIT_CASES)
def test_lit_folder_with_a_bad_config_field(tmp_path, key, value, monkeypatch):
    """Checked before the towers load: no tower is needed to report it (building one fails the test)."""
    import zscir.backbones.lit as lit
    from zscir.backbones import create_backbone

    monkeypatch.setattr(lit.LiTBackbone, "build", classmethod(lambda *a, **k: pytest.fail("towers were loaded")))
    folder = edited(shipped("lit-clipart"), tmp_path / "lit", key, value)
    with pytest.raises(ValueError) as info:
        create_backbone(f"local-dir:{folder}")
    msg = str(info.value)
    assert msg.startswith(f"{folder / 'config.json'}: {key} must be"), msg


def test_lit_config_from_python_is_checked_too():
    from zscir.config_check import ModelConfigError
    from zscir.backbones.lit import LiTConfig

    with pytest.raises(ModelConfigError, match=r"image_size must be an integer in \[32, 1024\], got 20000"):
        LiTConfig(image_size=20000)
    assert LiTConfig(head_hidden=0).head_hidden == 0  # linear heads stay allowed


@pytest.mark.parametrize("key, value, needle", [
    ("embed_dim", 256, "does not match"),
    ("head_hidden", 512, "does not match"),
    ("max_text_len", 600, "positions of text tower"),
])
def test_lit_config_that_does_not_fit_its_weights_or_tower(tmp_path, key, value, needle):
    from zscir.backbones import create_backbone
    from zscir.backbones.lit import default_towers_installed

    if not default_towers_installed():
        pytest.skip("the LiT towers (the [real] extra) are not installed")
    folder = edited(shipped("lit-clipart"), tmp_path / "lit", key, value)
    with pytest.raises(ValueError, match=needle) as info:
        create_backbone(f"local-dir:{folder}")
    assert "config.json" in str(info.value) or "text tower" in str(info.value)


# ---------------------------------------------------------------------------------- TSCIR / Pic2Word
TSCIR_STAGE1_CASES = _cases([
    ("mapping.phi_hidden", [0, -5, 10**6, "512"]),
    ("mapping.phi_layers", [0, 100, 2]),
    ("mapping.phi_dropout", [-0.1, 1.5, "x"]),
    ("mapping.vsi_layers", [[7], "0", [0.5], [-9]]),
    ("mapping.vsi_heads", [0, 3, 1000]),
    ("mapping.prompt", ["no placeholder", 5]),
    ("mapping", [MISSING, "x"]),
    ("stage", [3, "1", MISSING]),
    ("template", [5, "no placeholder {}"]),
    ("backbone.embed_dim", ["128", -1]),
])
TSCIR_STAGE2_CASES = _cases([
    ("adapter.kind", ["bogus", None]),
    ("adapter.bottleneck", [0, 32, "64"]),
    ("adapter.layers", [[9], "all"]),
    ("adapter.lora_rank", [0]),
    ("adapter", [MISSING]),
    ("stage1", ["../../etc", "/abs/stage1", ".."]),
])


@pytest.fixture(scope="module")
def world_clip():
    from zscir.backbones import create_backbone

    return create_backbone("world-clip")


def _tscir_fails(path: Path, backbone, *needles: str) -> str:
    """Loading the checkpoint at ``path`` fails with one line naming its config.json and one of ``needles``."""
    from zscir.methods.tscir.register import build_composer

    with pytest.raises(ValueError) as info:
        build_composer("tscir", backbone, str(path))
    msg = str(info.value)
    assert "\n" not in msg and str(path / "config.json") in msg, msg
    assert any(n in msg for n in needles), (needles, msg)
    return msg


@pytest.mark.parametrize("key, value", TSCIR_STAGE1_CASES)
def test_tscir_stage1_with_a_bad_config_field(world_clip, tmp_path, key, value):
    folder = edited(shipped("tscir") / "stage1", tmp_path / "s1", key, value)
    _tscir_fails(folder, world_clip, key.split(".")[-1], "does not match")


@pytest.mark.parametrize("key, value", TSCIR_STAGE2_CASES)
def test_tscir_stage2_with_a_bad_config_field(world_clip, tmp_path, key, value):
    folder = edited(shipped("tscir"), tmp_path / "s2", key, value)
    _tscir_fails(folder, world_clip, key.split(".")[-1], "does not match")


def test_tscir_template_and_batch_size_options(world_clip):
    from zscir.methods.tscir.register import build_composer

    for opts, needle in (({"batch_size": 0}, "batch_size"), ({"template": 5}, "template")):
        with pytest.raises(ValueError, match=needle):
            build_composer("tscir", world_clip, None, **opts)


# ----------------------------------------------------------------------------------------- Fusion-Diff
FUSIONDIFF_CASES = _cases([
    ("embed_dim", [0, -128, "128", 10**6, 64]),
    ("joint.caption_k", [-3, 0, 10**6, "1", 1.5]),
    ("joint.fusion_weight", [-0.1, 2, "half"]),
    ("joint.space", ["bogus"]),
    ("joint.captioner", ["bogus"]),
    ("joint.bank_pairs", [0, -1]),
    ("prior.width", [0, 64, 130]),
    ("prior.layers", [0, 100, 3]),
    ("prior.heads", [0, 3]),
    ("prior.mlp_ratio", [0, -1, 1e9]),
    ("prior.num_train_timesteps", [0, -5, 5]),
    ("prior.beta_schedule", ["bogus"]),
    ("prior.prediction_type", ["bogus"]),
    ("prior.cond_dropout", [2]),
    ("adapter.blocks", [0, 9]),
    ("adapter.control_parts", [["bogus"], [], "fused"]),
    ("adapter.mode", ["bogus"]),
    ("sampling.steps", [0, -1, 5000]),
    ("sampling.n_samples", [0]),
    ("sampling.strength", [0, 1.5]),
    ("sampling.eta", [-1]),
    ("sampling.guidance_scale", ["x", float("inf")]),
    ("joint", ["not an object"]),
    ("prior", [[]]),
])


@pytest.mark.parametrize("key, value", FUSIONDIFF_CASES)
def test_fusiondiff_checkpoint_with_a_bad_config_field(tmp_path, key, value):
    from zscir.methods.fusiondiff.checkpoint import load_checkpoint, shipped_checkpoint_dir

    folder = edited(shipped_checkpoint_dir("joint"), tmp_path / "fd", key, value)
    with pytest.raises(ValueError) as info:
        load_checkpoint(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder / "config.json") in msg, msg
    assert key.split(".")[-1] in msg or "does not match" in msg, msg


@pytest.mark.parametrize("option, value", [("caption_k", -3), ("caption_k", 0), ("steps", 0), ("steps", 5000),
                                           ("n_samples", -1), ("fusion_weight", 7), ("captioner", "bogus"),
                                           ("strength", 0), ("eta", "x"), ("use_adapter", "maybe"),
                                           ("world_seed", -1)])
def test_fusiondiff_options_are_checked_before_the_caption_bank(world_clip, monkeypatch, option, value):
    """``-O caption_k=-3`` used to fail after the caption bank was built (175 s)."""
    import zscir.methods.fusiondiff.captioner as cap
    from zscir.methods import create_composer

    monkeypatch.setattr(cap, "build_captioner", lambda *a, **k: pytest.fail("the caption bank was built"))
    if value == "maybe":
        value = 7  # a non-boolean that JSON may give (-O use_adapter=7)
    with pytest.raises(ValueError, match=f"option {option}") as info:
        create_composer("fusiondiff", backbone=world_clip, **{option: value})
    assert "\n" not in str(info.value)


def test_fusiondiff_caption_k_on_the_command_line_fails_in_seconds():
    t0 = time.perf_counter()
    res = zscir("eval", "-m", "fusiondiff", "-O", "caption_k=-3", "--limit", "1", "--no-progress")
    assert_one_error_line(res, "caption_k", "-3")
    assert time.perf_counter() - t0 < 30


# --------------------------------------------------------------------------------------- CLI, a few
def test_cli_reports_a_bad_model_folder_on_one_line(world_clip_dir, tmp_path):
    folder = edited(world_clip_dir, tmp_path / "clip", "vision_config.image_size", 20000)
    t0 = time.perf_counter()
    res = zscir("eval", "--model", f"local-dir:{folder}", "-m", "image", "--limit", "1", "--no-progress")
    assert_one_error_line(res, "config.json", "image_size", "20000")
    assert time.perf_counter() - t0 < 20
    lit = edited(shipped("lit-clipart"), tmp_path / "lit", "head_hidden", 1e9)
    assert_one_error_line(zscir("eval", "--model", f"local-dir:{lit}", "-m", "image", "--limit", "1"),
                          "head_hidden", "65536")
    mism = edited(world_clip_dir, tmp_path / "clip5", "text_config.num_hidden_layers", 5)
    assert_one_error_line(zscir("eval", "--model", f"local-dir:{mism}", "-m", "image", "--limit", "1"),
                          "model.safetensors does not match")


def test_cli_reports_a_bad_checkpoint_on_one_line(tmp_path):
    from zscir.methods.fusiondiff.checkpoint import shipped_checkpoint_dir

    fd = edited(shipped_checkpoint_dir("joint"), tmp_path / "fd", "joint.caption_k", -3)
    assert_one_error_line(zscir("eval", "-m", "fusiondiff", "--checkpoint", fd, "--limit", "1"), "caption_k")
    ts = edited(shipped("tscir"), tmp_path / "ts", "adapter.bottleneck", 32)
    assert_one_error_line(zscir("eval", "-m", "tscir", "--checkpoint", ts, "--limit", "1"),
                          "adapters.safetensors does not match")


# ------------------------------------------------------------------------------------------------- API
@pytest.fixture(scope="module")
def gallery():
    return np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)


@pytest.mark.parametrize("kwargs, needle", [
    ({"index": "IVF4,Flat", "nan_row": 3}, "row 3"),
    ({"index": "IVF4,Flat", "inf_row": 7}, "row 7"),
    ({"index": "bogus"}, "'bogus'"),
    ({"index": "IVF4,PQ5"}, "'IVF4,PQ5'"),
    ({"index": 5}, "factory"),
    ({"index": "IVF4,Flat", "nprobe": 0}, "nprobe"),
    ({"index": "IVF4,Flat", "nprobe": -2}, "nprobe"),
    ({"index": "IVF4,Flat", "nprobe": True}, "nprobe"),
])
def test_faiss_searcher_misuse_is_a_value_error(gallery, kwargs, needle):
    pytest.importorskip("faiss")
    from zscir.index.faiss_search import FaissSearcher

    emb = gallery.copy()
    kwargs = dict(kwargs)
    if "nan_row" in kwargs:
        emb[kwargs.pop("nan_row"), 2] = np.nan
    if "inf_row" in kwargs:
        emb[kwargs.pop("inf_row"), 0] = np.inf
    with pytest.raises(ValueError, match=needle) as info:
        FaissSearcher(emb, **kwargs)
    assert "Error in" not in str(info.value)  # faiss' C++ location is not the message


@pytest.mark.parametrize("nprobe", [0, -1])
def test_ann_searcher_refuses_nprobe_below_one(gallery, nprobe):
    faiss = pytest.importorskip("faiss")
    from zscir.index.faiss_search import AnnSearcher

    index = faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(gallery)
    index.add(gallery)
    with pytest.raises(ValueError, match="nprobe"):
        AnnSearcher(index, gallery, nprobe=nprobe)


def test_ann_build_refuses_nan_rows(tmp_path):
    """A NaN row in the gallery made faiss' k-means abort with a C++ RuntimeError naming no row."""
    pytest.importorskip("faiss")
    from zscir.index.ann import AnnConfig, build_ann, gallery_files
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.folder import read_manifest
    from zscir.methods import create_composer

    make_photos(tmp_path / "photos", n=70)
    build_index(tmp_path / "photos", tmp_path / "idx", create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=32, progress=False))
    (file,) = gallery_files(read_manifest(tmp_path / "idx")).values()
    emb = np.load(tmp_path / "idx" / file)
    emb[42] = np.nan
    np.save(tmp_path / "idx" / file, emb)
    with pytest.raises(ValueError, match=f"{file}: gallery: row 42 ") as info:
        build_ann(tmp_path / "idx", AnnConfig(min_items=64, factory="IVF4,Flat"), progress=False)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def shards(gallery):
    from zscir.index.search import ExactSearcher
    from zscir.index.shards import ShardedSearcher

    return ShardedSearcher([ExactSearcher(gallery[:100]), ExactSearcher(gallery[100:])])


@pytest.mark.parametrize("kind", ["list", "tuple", "nested tuples", "empty list"])
def test_sharded_searcher_accepts_lists_of_vectors(shards, gallery, kind):
    q = gallery[:3]
    given = {"list": q.tolist(), "tuple": tuple(q.tolist()), "nested tuples": tuple(map(tuple, q.tolist())),
             "empty list": []}[kind]
    s, i = shards.search(given, 5)
    want_s, want_i = shards.search(q[:len(given)], 5)
    assert np.array_equal(i, want_i) and np.allclose(s, want_s) and i.shape == (len(given), 5)


@pytest.mark.parametrize("queries, error", [("a cat", TypeError), (42, TypeError), ({"q": 1}, TypeError),
                                            ([[1.0, 2.0], [3.0]], ValueError), ([[0.0] * 15], ValueError),
                                            ([1.0] * 16, ValueError)])
def test_sharded_searcher_refuses_other_queries_clearly(shards, queries, error):
    with pytest.raises(error, match="queries"):
        shards.search(queries, 5)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.methods import create_composer

    tmp = tmp_path_factory.mktemp("hostile-api")
    ids = make_photos(tmp / "photos", n=6)
    build_index(tmp / "photos", tmp / "idx", create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=8, progress=False))
    return Retriever.load(tmp / "idx"), tmp / "photos", tmp / "idx", ids


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_retriever_refuses_an_image_without_pixels(retriever, size):
    r = retriever[0]
    for call in (lambda im: r.search(im, "red", k=3), lambda im: r.search_image(im, "red", k=3)):
        with pytest.raises(ValueError, match="no pixels"):
            call(Image.new("RGB", size))


def test_retriever_accepts_a_uint8_pixel_array(retriever):
    r, photos, _, ids = retriever
    im = Image.open(photos / ids[0]).convert("RGB")
    want = [(h.id, round(h.score, 5)) for h in r.search(im, "red", k=4)]
    for arr in (np.asarray(im), np.asarray(im.convert("RGBA")), np.asarray(im)[:, :, :1]):
        got = r.search(arr, "red", k=4)
        assert len(got) == 4
        if arr.shape[2] != 1:
            assert [(h.id, round(h.score, 5)) for h in got] == want


@pytest.mark.parametrize("image, error", [
    (np.zeros((0, 0, 3), np.uint8), ValueError), (np.zeros((5, 0), np.uint8), ValueError),
    (np.zeros((8, 8, 3), np.float32), TypeError), (np.zeros((3, 8, 8), np.uint8), ValueError),
    (np.zeros((8, 8, 2), np.uint8), ValueError), (np.zeros(8, np.uint8), ValueError),
    (42, TypeError), (["a.png"], TypeError),
])
def test_retriever_refuses_other_reference_types_clearly(retriever, image, error):
    with pytest.raises(error, match="reference image"):
        retriever[0].search(image, "red", k=3)


@pytest.mark.parametrize("field, value", [("nprobe", 0), ("nprobe", -4), ("k_factor", 0), ("batch_size", 0),
                                          ("max_ondemand_items", -1), ("single_query", "bogus"), ("ann", "yes")])
def test_retriever_config_refuses_values_it_would_ignore(field, value):
    """``nprobe=0`` fell back to the index's default without a word."""
    from zscir.index.retriever import RetrieverConfig

    with pytest.raises(ValueError, match=field):
        RetrieverConfig(**{field: value})


@pytest.mark.parametrize("field", ["id", "path", "meta"])
def test_store_save_refuses_surrogate_escaped_text_before_writing(tmp_path, field):
    from zscir.index.store import EmbeddingStore

    bad = os.fsdecode(b"caf\xe9.jpg")  # a file name that is not UTF-8, as os.listdir gives it
    items = [{"id": "a.jpg", "path": "/x/a.jpg"}, {"id": "b.jpg", "path": "/x/b.jpg", "meta": "ok"}]
    items[1][field] = bad
    with pytest.raises(ValueError) as info:
        EmbeddingStore.save(tmp_path / "s", np.eye(2, dtype=np.float32), items)
    msg = str(info.value)
    assert "items[1]" in msg and repr(items[1]["id"]) in msg, msg
    assert not (tmp_path / "s").exists()  # nothing written, not even the folder


def test_store_save_refuses_a_surrogate_in_the_manifest(tmp_path):
    from zscir.index.store import EmbeddingStore

    with pytest.raises(ValueError, match="manifest field 'root'"):
        EmbeddingStore.save(tmp_path / "s", np.eye(1, dtype=np.float32), [{"id": "a", "path": "/a"}],
                            {"root": os.fsdecode(b"/caf\xe9")})
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------ serve
def _serve_subprocess(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`zscir serve` as a user runs it; a server that starts anyway is killed by the timeout (a failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "zscir", "serve", *args, "--port", "0"], capture_output=True,
                           text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("zscir serve started a server instead of refusing its settings")
    return r, time.perf_counter() - t0


@pytest.mark.parametrize("args, needle", [(["--max-k", "0"], "--max-k"), (["--max-text", "-1"], "--max-text"),
                                          (["--threads", "-5"], "--threads"),
                                          (["--method-checkpoint", "bogus=x"], "unknown method 'bogus'")])
def test_serve_refuses_bad_settings_at_start(args, needle):
    r, wall = _serve_subprocess(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and " WARNING " not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "serving" not in r.stdout
    assert wall < 60


@pytest.fixture
def no_uvicorn(monkeypatch):
    """uvicorn.run captured: a `zscir serve` that starts would otherwise block the test."""
    uvicorn = pytest.importorskip("uvicorn")
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(k))
    return started


@pytest.mark.parametrize("args, needles", [
    (["--max-k", "-3"], ["--max-k"]),
    (["--max-text", "0"], ["--max-text"]),
    (["--method-checkpoint", "tscir=MISSING"], ["does not exist"]),
    (["--method-checkpoint", "bogus=."], ["unknown method 'bogus'", "tscir"]),
    (["--checkpoint", "MISSING", "-m", "tscir"], ["no such file"]),
    (["--backend", "bogus"], ["--backend 'bogus'"]),
    (["-O", "bogus=1"], ["no option 'bogus'", "template, weight"]),
])
def test_serve_refuses_bad_settings_before_loading_the_model(retriever, no_uvicorn, tmp_path, monkeypatch, args,
                                                             needles):
    import zscir.methods.registry as registry

    _, _, idx, _ = retriever
    monkeypatch.setattr(registry, "create_composer", lambda *a, **k: pytest.fail("the model was loaded"))
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    assert_one_error_line(zscir("serve", idx, *args), *needles)
    assert no_uvicorn == []


@pytest.mark.parametrize("field, value", [("max_k", 0), ("max_text_chars", -1), ("max_pixels", 0),
                                          ("max_upload_bytes", 0), ("max_concurrent_decodes", 0),
                                          ("body_timeout_s", 0.0), ("body_timeout_s", math.inf), ("max_k", 2.5)])
def test_serve_limits_refuse_what_would_refuse_every_request(field, value):
    from zscir.serve import ServeLimits

    with pytest.raises(ValueError, match=field):
        ServeLimits(**{field: value})


# ------------------------------------------------------------------------------------------------- demo
@pytest.mark.parametrize("args, needle", [(["-k", "0"], "-k"), (["-k", "-1"], "-k"), (["--queries", "0"], "--queries"),
                                          (["--queries", "-3"], "--queries")])
def test_demo_refuses_impossible_counts_at_once(tmp_path, args, needle):
    assert_one_error_line(zscir("demo", "-o", tmp_path / "out", *args), needle)
    assert not (tmp_path / "out").exists()


def test_demo_k_larger_than_the_gallery_is_one_error_line(tmp_path, small_world_root, monkeypatch):
    """``-k 100000`` ended in an IndexError after every image was encoded."""
    import zscir.data.world.cache as ew

    real = ew.ensure_world_benchmark
    monkeypatch.setattr(ew, "ensure_world_benchmark",
                        lambda world_seed=0, root=None, **kw: real(world_seed, root, **{**SMALL_WORLD, **kw}))
    res = zscir("demo", "-o", tmp_path / "out", "--model", MODEL, "--method", "sum", "-k", "100000",
                "--queries", "2")
    line = assert_one_error_line(res, "-k 100000", "at most")
    assert "IndexError" not in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs", [{"n_queries": 0}, {"k": 0}, {"k": -5}, {"n_queries": True}])
def test_run_demo_checks_its_counts_first(tmp_path, kwargs):
    from zscir.demo import run_demo

    with pytest.raises(ValueError, match="positive integer"):
        run_demo(tmp_path / "out", method="sum", model=MODEL, **kwargs)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ search -O (§5)
@pytest.mark.parametrize("args, needles", [
    (["-O", "bogus=1"], ["method 'sum' has no option 'bogus'", "template, weight"]),
    (["-O", "weigth=0.3"], ["'weigth'", "template, weight"]),
    (["-m", "image", "-O", "weight=0.3"], ["method 'image' has no option 'weight'", "none"]),
    (["-m", "tscir", "-O", "bogus=1"], ["method 'tscir' has no option 'bogus'", "batch_size, template"]),
    (["-m", "fusiondiff", "-O", "capton_k=3"], ["'capton_k'", "caption_k"]),
])
def test_search_refuses_unknown_method_options(retriever, args, needles):
    _, _, idx, ids = retriever
    assert_one_error_line(zscir("search", idx, "-i", ids[0], "-t", "red", *args), *needles)


def test_search_option_checks_keep_the_valid_ones(retriever):
    from zscir.index.retriever import Retriever

    _, _, idx, ids = retriever
    res = zscir("search", idx, "-i", ids[0], "-t", "red", "-O", "weight=0.3", "--json")
    assert res.exit_code == 0, res.output
    with pytest.raises(ValueError, match="no option 'bogus'"):
        Retriever.load(idx, bogus=1)

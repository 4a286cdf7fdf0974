"""No code from data (issue 21 §1): a checkpoint, model folder, run folder or cache is data, never code.

Before: a Fusion-Diff checkpoint's ``joint.caption_bank = "wds:pipe:touch PWNED; true"`` ran through ``sh`` as
soon as ``zscir index -m fusiondiff --checkpoint`` loaded it; ``--resume`` unpickled ``training_state.pt`` and
the pair-feature cache with ``weights_only=False`` (a planted file ran code); TSCIR's ``stage1``, LiT's tower
names and a trainer's recorded backbone could name any path; ``pipe:`` shards ran from any spec. Every test
here plants the hostile value and checks both the refusal and that the marker file never appears.
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zscir.backbones.folder_refs import FolderRefError
from zscir.backbones.tensor_files import TensorFileError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _shipped(name: str) -> Path:
    from zscir.backbones.assets import shipped_model_dir

    return shipped_model_dir(name)


class RunsCode:
    """A pickled object whose unpickling writes ``marker`` (what a planted file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def plant_pickle(path: Path, marker: Path, payload: dict | None = None) -> None:
    """A ``torch.save``-style file that runs code when unpickled without ``weights_only``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(payload or {}), "x": RunsCode(marker)}, path)


@pytest.fixture(scope="module")
def world_clip():
    from zscir.backbones import create_backbone

    return create_backbone("world-clip")


def _fd_copy(tmp: Path, **joint) -> Path:
    dst = tmp / "fd"
    shutil.copytree(_shipped("fusiondiff") / "joint", dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["joint"].update(joint)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


# ------------------------------------------------------------------------------- Fusion-Diff caption_bank
def _hostile_banks(tmp: Path, marker: Path) -> dict[str, str]:
    outside = tmp / "outside.csv"
    outside.write_text("filepath\ttitle\nx.png\ta caption\n")
    return {
        "wds-pipe": f"wds:pipe:touch {marker}; true",
        "bare-pipe": f"pipe:touch {marker}; cat x.tar",
        "url": "http://127.0.0.1:9/shard-{000..001}.tar",
        "hf-hub": "hf:someone/captions",
        "absolute": str(outside),
        "dotdot": "../outside.csv",
        "home": "~/captions.json",
        "brace": "bank-{a,b}.json",
        "symlink": "link.json",
    }


BANKS = ["wds-pipe", "bare-pipe", "url", "hf-hub", "absolute", "dotdot", "home", "brace", "symlink"]


@pytest.mark.parametrize("kind", BANKS)
def test_checkpoint_caption_bank_names_no_command_url_or_outside_path(kind, tmp_path, world_clip):
    from zscir.methods import create_composer

    marker = tmp_path / "PWNED"
    ref = _hostile_banks(tmp_path, marker)[kind]
    ckpt = _fd_copy(tmp_path, caption_bank=ref)
    (tmp_path / "outside.json").write_text(json.dumps(["a red circle"]))
    (ckpt / "link.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(FolderRefError) as info:
        create_composer("fusiondiff", backbone=world_clip, checkpoint=str(ckpt))
    msg = str(info.value)
    assert "joint.caption_bank" in msg and str(ckpt) in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_cli_reproduction_of_the_issue_creates_no_marker(tmp_path):
    """The issue's exact reproduction through the real CLI in a subprocess."""
    from PIL import Image

    marker = tmp_path / "PWNED"
    ckpt = _fd_copy(tmp_path, caption_bank=f"wds:pipe:touch {marker}; true")
    (tmp_path / "photos").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (90 * i, 30, 30)).save(tmp_path / "photos" / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "zscir", "index", str(tmp_path / "photos"), "--out",
                          str(tmp_path / "idx"), "-m", "fusiondiff", "--checkpoint", str(ckpt)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "joint.caption_bank" in errors[0] and "Traceback" not in res.stderr, res.stderr
    assert not marker.exists()


def test_checkpoint_carries_its_own_caption_bank(tmp_path, world_clip):
    """What the trainer writes (caption_bank.json inside the folder) loads, and the bank comes from it."""
    from zscir.methods.fusiondiff.checkpoint import CAPTION_BANK_FILE, load_checkpoint, save_checkpoint
    from zscir.methods.fusiondiff.register import load_composer

    cfg, prior, adapter = load_checkpoint(_shipped("fusiondiff") / "joint")
    bank = ["a red circle", "a blue square", "two green stars"]
    out = save_checkpoint(tmp_path / "ck", cfg, prior, adapter, caption_bank=bank)
    saved = json.loads((out / "config.json").read_text())
    assert saved["joint"]["caption_bank"] == CAPTION_BANK_FILE
    comp = load_composer(world_clip, out, cache_dir=str(tmp_path / "cache"))
    assert comp.joint.captioner.bank == bank


def test_user_typed_caption_bank_replaces_a_hostile_one(tmp_path, world_clip):
    """An older checkpoint naming a spec still loads when the user names the bank; the file's value is unused."""
    from tests.data_fixtures import corpus, write_csv
    from zscir.methods.fusiondiff.register import load_composer

    marker = tmp_path / "PWNED"
    ckpt = _fd_copy(tmp_path, caption_bank=f"wds:pipe:touch {marker}; true")
    csv = write_csv(tmp_path / "pairs", corpus(4))
    comp = load_composer(world_clip, ckpt, caption_bank=str(csv), cache_dir=str(tmp_path / "cache"))
    assert len(comp.joint.captioner.bank) == 4 and not marker.exists()


@pytest.mark.parametrize("ref", ["/usr/share", "../models/blip", "pipe:sh -c id", "https://host/blip"])
def test_checkpoint_captioner_model_is_a_hub_name_or_inside_the_folder(ref, tmp_path):
    from zscir.methods.fusiondiff.checkpoint import load_checkpoint

    ckpt = _fd_copy(tmp_path, captioner="generative", captioner_model=ref)
    with pytest.raises(FolderRefError, match="joint.captioner_model"):
        load_checkpoint(ckpt)


# ------------------------------------------------------------------------------- TSCIR stage1, LiT towers
@pytest.mark.parametrize("ref", ["/etc", "..", "../tscir", ".", "pipe:true", ""])
def test_tscir_stage1_is_a_sub_folder(ref, tmp_path, world_clip):
    from zscir.methods.tscir.checkpoint import load_checkpoint

    dst = tmp_path / "t"
    shutil.copytree(_shipped("tscir"), dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["stage1"] = ref
    (dst / "config.json").write_text(json.dumps(cfg))
    from zscir.config_check import ModelConfigError

    with pytest.raises((FolderRefError, ModelConfigError), match="stage1"):  # the config check or the folder rule
        load_checkpoint(dst, world_clip)


@pytest.mark.parametrize("field,ref", [("text_tower", "/opt/models/minilm"), ("text_tower", "../minilm"),
                                       ("text_tower", "https://host/minilm"), ("text_tower", "pipe:id"),
                                       ("image_tower", "efficientnet-lite0:/tmp/weights.pth"),
                                       ("image_tower", "efficientnet-lite0:../weights.pth")])
def test_lit_folder_towers_are_hub_names_or_inside_it(field, ref, tmp_path):
    from zscir.backbones.lit import LiTBackbone

    dst = tmp_path / "lit"
    shutil.copytree(_shipped("lit-clipart"), dst, ignore=shutil.ignore_patterns("methods"))
    cfg = json.loads((dst / "config.json").read_text())
    cfg[field] = ref
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FolderRefError, match=field):
        LiTBackbone.from_pretrained(dst)


@pytest.mark.parametrize("name", ["local-dir:/opt/clip", "/opt/clip", "hf-hub:../../clip", "open_clip:ViT-B-32//x.pt"])
def test_adapter_trainer_does_not_load_a_model_folder_a_prior_names(name, tmp_path):
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter

    prior = tmp_path / "prior"
    shutil.copytree(_shipped("fusiondiff") / "joint", prior)
    cfg = json.loads((prior / "config.json").read_text())
    cfg.update(backbone=name, adapter=None)
    (prior / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FolderRefError, match="--model"):
        train_adapter(AdapterTrainConfig(prior=str(prior), steps=1), tmp_path / "out", progress=False)


@pytest.mark.parametrize("name", ["local-dir:/opt/clip", "/opt/clip"])
def test_stage2_trainer_does_not_load_a_model_folder_stage1_names(name, tmp_path):
    from zscir.methods.tscir.config import Stage2Config
    from zscir.methods.tscir.stage2 import train_stage2

    s1 = tmp_path / "s1"
    shutil.copytree(_shipped("tscir") / "stage1", s1)
    cfg = json.loads((s1 / "config.json").read_text())
    cfg.setdefault("train", {})["model"] = name
    (s1 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FolderRefError, match="--model"):
        train_stage2(Stage2Config(stage1=str(s1), steps=1), tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------- training state (--resume)
def _toy_run(out: Path, steps: int, resume: bool, stop_at: int | None = None) -> list[float]:
    """A real `run_loop` (the Fusion-Diff trainers' loop) whose loss draws from torch, numpy and random."""
    from safetensors.torch import save_file

    from zscir.backbones.tensor_files import load_safetensors
    from zscir.methods.fusiondiff.trainer import LoopConfig, run_loop

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    if not resume:  # a fresh run starts from fixed RNG states; a resumed one must get them from the file
        np.random.seed(0), random.seed(0)
    if resume and (out / "m.safetensors").exists():
        model.load_state_dict(load_safetensors(out / "m.safetensors"))

    class Stop(Exception):
        pass

    def batch_loss(step: int):
        if step == stop_at:
            raise Stop
        x = torch.randn(8, 4) + float(np.random.rand()) + random.random()
        return (model(x) ** 2).mean()

    def save(path: Path, info: dict) -> None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "m.safetensors"))

    try:
        return run_loop("toy", model.parameters(), batch_loss, LoopConfig(steps, lr=1e-2, warmup=1, eval_every=2),
                        out, save, resume=resume, progress=False)["losses"]
    except Stop:
        return []


def test_resume_round_trip_matches_an_uninterrupted_run(tmp_path):
    full = _toy_run(tmp_path / "a", 6, resume=False)
    _toy_run(tmp_path / "b", 6, resume=False, stop_at=4)  # interrupted after the step-4 checkpoint
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # the RNG states must come from the file
    rest = _toy_run(tmp_path / "b", 6, resume=True)
    assert len(rest) == 2 and np.allclose(rest, full[4:], rtol=0, atol=1e-7), (rest, full)
    state = torch.load(tmp_path / "b" / "training_state.pt", weights_only=True)  # plain data: loads without code
    assert state["step"] == 6 and isinstance(state["python_rng"]["internal"], list)


def test_planted_training_state_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    out = tmp_path / "run"
    plant_pickle(out / "training_state.pt", marker, {"step": 4})
    with pytest.raises(TensorFileError, match="arbitrary pickled objects") as info:
        _toy_run(out, 6, resume=True)
    assert str(out / "training_state.pt") in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("state", ["numpy-rng", "no-format", "nan-moments"])
def test_foreign_training_state_is_refused_with_one_line(state, tmp_path):
    from zscir.train.common import load_training_state

    out = tmp_path / "run"
    out.mkdir()
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters())
    if state == "numpy-rng":  # what zscir wrote before: np.random.get_state() holds a numpy array
        torch.save({"step": 3, "optimizer": opt.state_dict(), "numpy_rng": np.random.get_state()},
                   out / "training_state.pt")
    elif state == "no-format":
        torch.save({"step": 3, "optimizer": opt.state_dict()}, out / "training_state.pt")
    else:
        from zscir.train.common import save_training_state

        save_training_state(out, 3, opt)
        s = torch.load(out / "training_state.pt", weights_only=True)
        # the optimiser moments get a NaN (a diverged run): resuming it would only spread NaN
        s["optimizer"]["state"] = {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((1, 2), float("nan")),
                                       "exp_avg_sq": torch.zeros(1, 2)}}
        torch.save(s, out / "training_state.pt")
    with pytest.raises(TensorFileError) as info:
        load_training_state(out, opt)
    assert str(out / "training_state.pt") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("folder", ["foreign", "own-run"])
def test_cli_resume_with_a_planted_state_is_one_error_line(tmp_path, folder):
    """A planted state is refused: in a folder zscir did not make, by the run-folder owner before anything is
    read; in a run folder of the same trainer (a shared run folder), by the tensor-file reader."""
    from zscir.cli import app

    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    args = ["train", "tscir-stage1", "--model", "tiny-clip-test", "--vsi-layers", "0", "--n-pairs", "40",
            "--steps", "2", "--batch-size", "8", "--out", str(run), "--no-progress"]
    if folder == "own-run":
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
    plant_pickle(run / "training_state.pt", marker, {"step": 1})
    res = runner.invoke(app, args + ["--resume"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(run) in errors[0], res.stderr
    if folder == "own-run":
        assert "arbitrary pickled objects" in errors[0] or "in the way" in errors[0] or "changed" in errors[0], errors
    else:
        assert "not created by zscir train tscir-stage1" in errors[0]
    assert not marker.exists()


def test_trained_prior_and_adapter_carry_the_caption_bank(tmp_path, tiny_backbone):
    """`train fusiondiff-prior --caption-bank SPEC` stores the captions, not the spec; the adapter copies them."""
    from tests.data_fixtures import corpus, write_csv
    from zscir.methods.fusiondiff.captioner import bank_from_data
    from zscir.methods.fusiondiff.checkpoint import CAPTION_BANK_FILE, read_caption_bank
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior

    csv = str(write_csv(tmp_path / "pairs", corpus(8)))
    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    train_prior(PriorTrainConfig(model="tiny-clip-test", steps=2, batch_size=8, eval_every=2, n_val=10,
                                 cache_dir=str(tmp_path / "cache"), prior=small,
                                 joint=JointConfig(bank_pairs=60, caption_bank=csv)),
                tmp_path / "prior", progress=False, backbone=tiny_backbone)
    want = bank_from_data(csv)
    for folder in ("prior", "fd"):
        if folder == "fd":
            train_adapter(AdapterTrainConfig(prior=str(tmp_path / "prior"), n_triplets=60, n_val=10, steps=2,
                                             batch_size=8, eval_every=2, cache_dir=str(tmp_path / "cache")),
                          tmp_path / "fd", progress=False, backbone=tiny_backbone)
        cfg = json.loads((tmp_path / folder / "config.json").read_text())
        assert cfg["joint"]["caption_bank"] == CAPTION_BANK_FILE, folder
        assert read_caption_bank(tmp_path / folder, CAPTION_BANK_FILE) == want


# ------------------------------------------------------------------------------- caches
@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ZSCIR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("plant", ["code", "nan", "garbage"])
def test_pair_feature_cache_is_data_and_rebuilt_when_foreign(plant, tmp_path, cache_root, tiny_backbone, caplog):
    from tests.data_fixtures import corpus, write_csv
    from zscir.train.data_options import DataOptions
    from zscir.train.pair_features import cached_pair_features

    opts = DataOptions(data=str(write_csv(tmp_path / "pairs", corpus(6))), workers=0)
    first = cached_pair_features(tiny_backbone, opts, opts.data, 32, False, False, "tscir")
    (path,) = list((cache_root / "tscir").glob("pairs-*.pt"))
    marker = tmp_path / "PWNED"
    if plant == "code":
        plant_pickle(path, marker, {"glob": first.glob, "patches": None, "captions": first.captions})
    elif plant == "nan":
        torch.save({"glob": torch.full_like(first.glob, float("nan")), "patches": None, "captions": first.captions},
                   path)
    else:
        path.write_bytes(b"\x80\x04 not a cache")
    again = cached_pair_features(tiny_backbone, opts, opts.data, 32, False, False, "tscir")
    assert torch.allclose(again.glob, first.glob) and again.captions == first.captions
    assert not marker.exists() and "ignoring the feature cache" in caplog.text
    back = torch.load(path, weights_only=True)  # rewritten by zscir: plain data again
    assert torch.allclose(back["glob"], first.glob)


def test_fusiondiff_feature_and_bank_caches_are_data(tmp_path, tiny_backbone, caplog):
    from zscir.methods.fusiondiff.captioner import RetrievalCaptioner
    from zscir.methods.fusiondiff.features import pair_features

    marker = tmp_path / "PWNED"
    first = pair_features(tiny_backbone, 12, cache_dir=tmp_path, progress=False)
    (path,) = list(tmp_path.glob("pairs-*.pt"))
    plant_pickle(path, marker, dict(first))
    again = pair_features(tiny_backbone, 12, cache_dir=tmp_path, progress=False)
    assert torch.allclose(again["image"], first["image"]) and not marker.exists()

    bank = ["a red circle", "a blue square"]
    emb = RetrievalCaptioner(tiny_backbone, bank, cache_dir=tmp_path).bank_embeds
    (bpath,) = list(tmp_path.glob("bank-v2-*.pt"))
    plant_pickle(bpath, marker)
    assert torch.allclose(RetrievalCaptioner(tiny_backbone, bank, cache_dir=tmp_path).bank_embeds, emb)
    assert not marker.exists() and caplog.text.count("ignoring the") == 2


def test_lit_feature_cache_is_data(tmp_path):
    from zscir.train.lit import FeatureCache

    marker = tmp_path / "PWNED"
    plant_pickle(tmp_path / "lit-features-abc.pt", marker, {"image": {}, "text": {}})
    cache = FeatureCache(tmp_path, "abc")
    assert cache.data == {"image": {}, "text": {}} and not marker.exists()


# ------------------------------------------------------------------------------- no unpickling anywhere
OWNER = Path("src/zscir/backbones/tensor_files.py")


def _python_files() -> list[Path]:
    return sorted(p for d in ("src", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _problems(source: str, rel: Path) -> list[str]:
    """Every call in ``source`` (the file ``rel`` under the repository) that could unpickle code."""
    tree = ast.parse(source, str(rel))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module in ("pickle", "dill", "joblib", "cloudpickle")
                                                 or node.module == "torch" and any(a.name == "load" for a in node.names)):
            out.append(f"{rel}:{node.lineno}: from {node.module} import ...")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{rel}:{node.lineno}: {name}"
        if name.endswith(("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads",
                          "joblib.load", "read_pickle", "jit.load", "marshal.loads", "shelve.open",
                          "yaml.load", "yaml.unsafe_load", "yaml.full_load")):
            out.append(f"{where} can run code")
        if name.endswith("torch.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                out.append(f"{where} without weights_only=True")
            if rel != OWNER:
                out.append(f"{where} outside {OWNER} (use zscir.backbones.tensor_files)")
        if name.endswith(("np.load", "numpy.load")):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                out.append(f"{where} with allow_pickle={ast.unparse(ap)}")
    return out


def test_no_torch_load_or_pickle_can_run_code_anywhere():
    files = _python_files()
    assert any(p.relative_to(ROOT) == OWNER for p in files) and len(files) > 100
    problems = [p for f in files for p in _problems(f.read_text(encoding="utf-8"), f.relative_to(ROOT))]
    assert not problems, "\n".join(problems)


def test_the_ast_check_finds_what_it_looks_for():
    """The scanner above is not vacuous: each unsafe form is reported."""
    found = _problems("import torch, pickle, numpy as np\nfrom torch import load\n"
                      "torch.load('x')\ntorch.load('x', weights_only=False)\npickle.loads(b'')\n"
                      "np.load('x', allow_pickle=True)\n", Path("src/zscir/probe.py"))
    assert sum("without weights_only=True" in p for p in found) == 2
    assert sum("outside" in p for p in found) == 2
    assert any("pickle.loads" in p for p in found) and any("allow_pickle=True" in p for p in found)
    assert any("from torch import" in p for p in found)
    assert not _problems("import torch\ntorch.load('x', map_location='cpu', weights_only=True)\n", OWNER)


# ------------------------------------------------------------------------------- pipe: only when allowed
@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    from tests.data_fixtures import corpus, write_wds

    root = tmp_path_factory.mktemp("pipe-shard")
    write_wds(root / "w", corpus(5), per_shard=5)
    return root / "w" / "00000.tar"


def _pipe_specs(shard: Path, marker: Path) -> dict[str, str]:
    return {"wds-pipe": f"wds:pipe:cat {shard}", "bare-pipe": f"pipe:touch {marker}; cat {shard}",
            "marker-pipe": f"wds:pipe:touch {marker}; cat {shard}", "http": "wds:http://127.0.0.1:9/x-{0..1}.tar",
            "https": "https://127.0.0.1:9/x.tar", "gs": "wds:gs://bucket/x.tar",
            "mixed": f"wds:{shard}::pipe:touch {marker}; cat {shard}"}


@pytest.mark.parametrize("kind", ["wds-pipe", "bare-pipe", "marker-pipe", "http", "https", "gs", "mixed"])
def test_pipe_and_url_shards_need_the_flag(kind, shard, tmp_path):
    from zscir.data import DataError, get_pair_data

    marker = tmp_path / "PWNED"
    spec = _pipe_specs(shard, marker)[kind]
    with pytest.raises(DataError, match="--allow-pipe"):
        list(get_pair_data(spec).records())
    assert not marker.exists()


def test_pipe_shard_reads_the_same_records_when_allowed(shard, tmp_path):
    from zscir.data import get_pair_data
    from zscir.train.data_options import DataOptions

    marker = tmp_path / "ran"
    direct = [(r.captions, r.image.size) for r in get_pair_data(str(shard)).records()]
    piped = [(r.captions, r.image.size)
             for r in get_pair_data(f"wds:pipe:touch {marker}; cat {shard}", allow_pipe=True).records()]
    assert piped == direct and len(direct) == 5 and marker.exists()  # the user asked: the command ran
    opts = DataOptions(data=f"pipe:cat {shard}", allow_pipe=True)
    assert len(list(opts.pair_data(opts.data).records())) == 5
    with pytest.raises(ValueError, match="--allow-pipe"):
        DataOptions(data=f"pipe:cat {shard}").pair_data(f"pipe:cat {shard}")


@pytest.mark.parametrize("flag", [False, True])
def test_cli_data_inspect_pipe_spec(flag, shard, tmp_path):
    from zscir.cli import app

    marker = tmp_path / "PWNED"
    args = ["data", "inspect", f"wds:pipe:touch {marker}; cat {shard}", "--grid", str(tmp_path / "g.png")]
    res = runner.invoke(app, args + (["--allow-pipe"] if flag else []))
    if flag:
        assert res.exit_code == 0, res.output
        assert marker.exists()
    else:
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "--allow-pipe" in errors[0], res.stderr
        assert not marker.exists()


def test_training_options_carry_the_flag():
    """Every command that reads pair specs offers --allow-pipe (default off)."""
    from zscir.cli import app

    for cmd in (["data", "inspect"], ["train", "clip"], ["train", "tscir-stage1"], ["train", "fusiondiff-prior"],
                ["train", "lit"]):
        res = runner.invoke(app, cmd + ["--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "--allow-pipe" in res.output, (cmd, res.output)


def test_planted_files_really_run_code_when_trusted(tmp_path):
    """The planted files above do run code when unpickled without weights_only: the refusals stop them."""
    marker = tmp_path / "PWNED"
    plant_pickle(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()

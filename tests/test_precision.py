"""bf16 or fp32 from the hardware: the decision, the trainers' --precision flag, and the recorded choice.

Emulated bf16 made TSCIR Stage I/II about 9x slower on CPUs without native bf16, and fp32 was reachable only
through the Python API; these tests pin the hardware rule and that the choice reaches the run's config.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from zscir.train import precision as P

X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
X86_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("cpuinfo, native", [(X86_BF16, True), (X86_PLAIN, False), (ARM_BF16, True), ("", False)])
def test_native_bf16_from_cpu_flags(cpuinfo, native):
    assert P.cpu_has_native_bf16(cpuinfo) is native
    assert P.resolve_bf16(None, "cpu", cpuinfo) is native  # auto follows the hardware
    assert P.resolve_bf16(True, "cpu", cpuinfo) is True  # an explicit choice always wins
    assert P.resolve_bf16(False, "cpu", cpuinfo) is False


def test_parse_precision_values():
    assert [P.parse_precision(p) for p in ("auto", "BF16", "fp32")] == [None, True, False]
    assert P.parse_precision(P.Precision.fp32) is False
    with pytest.raises(ValueError, match="expected one of auto, bf16, fp32"):
        P.parse_precision("fp16")


def test_tscir_configs_default_to_the_hardware():
    from zscir.methods.tscir.config import Stage1Config, Stage2Config

    # None = decided per machine at the start of training (was True: 9x slower without native bf16)
    assert Stage1Config().bf16 is None and Stage2Config().bf16 is None


@pytest.mark.parametrize("cmd", ["clip", "tscir-stage1", "tscir-stage2", "fusiondiff-prior", "fusiondiff-adapter"])
def test_every_bf16_trainer_has_the_flag(cmd):
    from zscir.cli import app

    r = CliRunner().invoke(app, ["train", cmd, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--precision" in r.output and "auto|bf16|fp32" in r.output.replace(" ", "")
    bad = CliRunner().invoke(app, ["train", cmd, "--precision", "fp16"])
    assert bad.exit_code == 2 and "fp16" in bad.output


def test_cli_flag_reaches_the_config(tmp_path, monkeypatch):
    """`--precision` becomes the config's bf16 (None = auto) in every TSCIR stage command."""
    from zscir.cli import app
    from zscir.methods.tscir import stage1, stage2

    seen = {}

    def fake(name):
        def train(cfg, out, resume=False, progress=True):
            seen[name] = cfg.bf16
            return {"out": str(out), "train_s": 0.0, "metrics": {}}
        return train

    monkeypatch.setattr(stage1, "train_stage1", fake("s1"))
    monkeypatch.setattr(stage2, "train_stage2", fake("s2"))
    for flag, want in (("auto", None), ("bf16", True), ("fp32", False)):
        r1 = CliRunner().invoke(app, ["train", "tscir-stage1", "--precision", flag, "-o", str(tmp_path / "a")])
        r2 = CliRunner().invoke(app, ["train", "tscir-stage2", "--stage1", str(tmp_path / "a"), "--precision", flag,
                                      "-o", str(tmp_path / "b")])
        assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
        assert seen == {"s1": want, "s2": want}


def test_fusiondiff_flags_reach_the_configs(tmp_path, monkeypatch):
    from zscir.cli import app
    from zscir.methods.fusiondiff import train_adapter, train_prior

    seen = {}

    def fake(name):
        def train(cfg, out, resume=False, progress=True):
            seen[name] = cfg.bf16
            return {"out": str(out), "history": [], "trainable_params": 0, "n_train_triplets": 0,
                    "train_seconds": 0.0}
        return train

    monkeypatch.setattr(train_prior, "train_prior", fake("prior"))
    monkeypatch.setattr(train_adapter, "train_adapter", fake("adapter"))
    for flag, want in ((None, False), ("auto", None), ("bf16", True)):  # default fp32: the shipped recipe
        extra = [] if flag is None else ["--precision", flag]
        assert CliRunner().invoke(app, ["train", "fusiondiff-prior", *extra, "-o", str(tmp_path)]).exit_code == 0
        assert CliRunner().invoke(app, ["train", "fusiondiff-adapter", *extra, "-o", str(tmp_path)]).exit_code == 0
        assert seen == {"prior": want, "adapter": want}


def test_bf16_loop_trains(tmp_path):
    """The Fusion-Diff loop runs its loss under bf16 autocast when asked (and the loss still falls)."""
    import torch

    from zscir.methods.fusiondiff.trainer import LoopConfig, run_loop

    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(64, 8)
    seen_dtypes = set()

    def batch_loss(step):
        y = lin(x)
        seen_dtypes.add(y.dtype)
        return torch.nn.functional.mse_loss(y.float(), x)

    r = run_loop("t", lin.parameters(), batch_loss, LoopConfig(steps=30, lr=1e-2, warmup=1, eval_every=1000, bf16=True),
                 tmp_path, lambda path, info: None, progress=False)
    assert seen_dtypes == {torch.bfloat16} and r["losses"][-1] < r["losses"][0]


def test_stage1_records_the_resolved_choice(tmp_path, monkeypatch):
    """auto on a CPU without bf16 flags trains in fp32, and the saved run config says so (not None)."""
    from zscir.methods.tscir.config import MappingConfig, Stage1Config
    from zscir.methods.tscir.stage1 import train_stage1

    monkeypatch.setattr(P, "cpu_flags", lambda cpuinfo=None: {"avx2", "avx512f"})
    cfg = Stage1Config(model="tiny-clip-test", mapping=MappingConfig(vsi_layers=[0], phi_hidden=32), n_pairs=48,
                       n_val=8, steps=1, batch_size=8, eval_every=1000, threads=1)
    assert cfg.bf16 is None
    train_stage1(cfg, tmp_path / "s1", progress=False)
    assert json.loads((tmp_path / "s1" / "train_log.json").read_text())["config"]["bf16"] is False
    monkeypatch.setattr(P, "cpu_flags", lambda cpuinfo=None: {"avx512_bf16"})
    assert P.resolve_bf16(None, "cpu") is True  # the same machine with bf16 flags would have chosen bf16

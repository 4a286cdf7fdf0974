"""One meaning per short option in every command, and one environment variable for every cache.

Before: ``-o`` was ``--out`` in `zscir index` but ``--option`` elsewhere (so the docs' ``zscir submit ... -o
submissions/`` failed), and ``ZSCIR_CACHE`` moved the world cache but not the benchmark feature cache.
"""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from zscir.cli import app


def _options(*path: str) -> dict[str, tuple[str, ...]]:
    """Every option of ``zscir <path>``: its dest name → the option strings."""
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("zscir", [*path, "--help"], resilient_parsing=True)
    for name in path:
        cmd = cmd.get_command(ctx, name)
    return {p.name: tuple(p.opts) for p in cmd.params if getattr(p, "opts", None)}


#: commands that write a result somewhere, and the destination of their output option
WRITERS = {("index",): "out", ("demo",): "out", ("eval",): "output", ("submit",): "out_dir", ("sweep",): "out",
           ("viz", "fused"): "output", ("bench",): "out", ("train", "clip"): "out",
           ("train", "tscir-stage1"): "out", ("train", "tscir-stage2"): "out",
           ("train", "fusiondiff-prior"): "out", ("train", "fusiondiff-adapter"): "out", ("train", "lit"): "out"}
#: commands taking method options
OPTION_TAKERS = [("eval",), ("submit",), ("search",), ("serve",), ("sweep",), ("viz", "fused")]


def test_dash_o_is_the_output_everywhere_and_dash_capital_o_the_method_option():
    for path, dest in WRITERS.items():
        opts = _options(*path)
        assert "-o" in opts[dest] and "--out" in opts[dest], (path, opts[dest])
    for path in OPTION_TAKERS:
        opts = _options(*path)
        assert set(opts["option"]) == {"--option", "-O"}, (path, opts["option"])
    for path in [*WRITERS, *OPTION_TAKERS]:  # no command uses -o or -O for anything else
        for dest, names in _options(*path).items():
            assert "-o" not in names or dest in ("out", "output", "out_dir"), (path, dest)
            assert "-O" not in names or dest == "option", (path, dest)


def test_old_long_names_still_work():
    assert "--output" in _options("eval")["output"] and "--out-dir" in _options("submit")["out_dir"]
    assert "--output" in _options("viz", "fused")["output"]


def test_old_style_dash_o_key_value_is_an_error_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["eval", "-m", "sum", "-o", "weight=0.3"])
    assert r.exit_code == 2 and "--option/-O KEY=VALUE" in r.output
    assert not (tmp_path / "weight=0.3").exists()


def test_zscir_cache_governs_every_cache(tmp_path, monkeypatch):
    from zscir.cache import cache_dir, cache_root
    from zscir.eval.benchmarks import FeatureCache
    from zscir.eval.world import default_cache_dir
    from zscir.methods.fusiondiff.features import default_cache_dir as fusiondiff_cache
    from zscir.serve.world import world_gallery_dir

    monkeypatch.setenv("ZSCIR_CACHE", str(tmp_path / "c"))
    root = tmp_path / "c"
    assert cache_root() == root == default_cache_dir()
    assert FeatureCache().directory == root / "features" == cache_dir("features")  # was ~/.cache/zscir/features
    assert fusiondiff_cache() == root / "fusiondiff"
    assert world_gallery_dir("world-clip", "sum").parent == root / "serve"
    # `zscir train lit --cache-dir` defaults to None = cache_dir("lit") inside the command (was ./runs/cache)
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("zscir", ["train", "lit", "--help"], resilient_parsing=True)
    tr = cmd.get_command(ctx, "train")
    assert [p.default for p in tr.get_command(ctx, "lit").params if p.name == "cache_dir"] == [None]
    monkeypatch.delenv("ZSCIR_CACHE")
    assert cache_root().name == "zscir" and cache_root().parent.name == ".cache"


def test_per_method_checkpoint_wins_over_the_shared_one(monkeypatch):
    """`zscir eval -m pic2word:checkpoint=A -m tscir:checkpoint=B` compares two trained methods in one run;
    this used to fail with "got multiple values for keyword argument 'checkpoint'"."""
    import zscir.methods
    from zscir.cli.common import make_composer

    seen = []
    monkeypatch.setattr(zscir.methods, "create_composer", lambda method, **kw: seen.append((method, kw)) or method)
    opts = {"checkpoint": "runs/b", "template": "a $ that {}"}
    assert make_composer("tscir", "lit-clipart", "runs/shared", "cpu", opts) == "tscir"
    make_composer("pic2word", None, "runs/shared", "cpu", {})
    assert seen[0] == ("tscir", {"model": "lit-clipart", "checkpoint": "runs/b", "device": "cpu",
                                 "template": "a $ that {}"})
    assert seen[1][1]["checkpoint"] == "runs/shared" and opts["checkpoint"] == "runs/b"  # caller's dict untouched


def _float_options() -> list[tuple[tuple[str, ...], str]]:
    """(command path, option string) for every float option of every command (typer >= 0.2x describes the
    type by ``type_descriptor``, older typer by ``type``)."""
    import typing

    out = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + (name,))
        for p in getattr(cmd, "params", []):
            ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            kind = getattr(getattr(p, "type", None), "name", "")
            if getattr(p, "opts", None) and (ann is float or float in typing.get_args(ann) or kind == "float"):
                out.append((path, p.opts[0]))

    walk(typer.main.get_command(app), ())
    return out


def test_every_float_option_refuses_nan_and_infinity():
    """``--hq-guidance nan`` and the like were accepted: the shared check was never attached under typer 0.2x."""
    found = _float_options()
    assert len(found) >= 10, found  # the walk sees the float options (e.g. make-triplets --min-similarity)
    runner = CliRunner()
    for path, opt in found:
        for bad in ("nan", "inf"):
            res = runner.invoke(app, [*path, opt, bad])
            assert res.exit_code == 2 and "finite number" in res.output, (path, opt, bad, res.output)

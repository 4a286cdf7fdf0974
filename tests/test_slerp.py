"""Slerp (`slerp:alpha=A`): the interpolation against hand computations, its degenerate cases, the composer on a
tiny backbone, its place among the methods (eval, index + search, listing), option errors as one line, and the
`--tune-on val` grouping of fusion knobs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from zscir.methods.baselines import PARALLEL_EPS, slerp

MODEL = "tiny-clip-test"
runner = CliRunner()


def zscir(*args):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


def one_error_line(res, *needles: str) -> str:
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text
    assert res.exit_code == 2, (res.exit_code, text, res.exception)
    lines = [ln for ln in res.stderr.splitlines()
             if ln.strip() and " WARNING " not in ln and not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _unit(*v: float) -> torch.Tensor:
    return F.normalize(torch.tensor([v], dtype=torch.float64), dim=-1)


def _rand(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


# --- the interpolation by hand ---------------------------------------------------------------------------
def test_orthogonal_midpoint_is_the_normalised_sum():
    a, b = _unit(1, 0, 0), _unit(0, 1, 0)
    assert torch.allclose(slerp(a, b, 0.5), (a + b) / math.sqrt(2), atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9, 1.0])
def test_orthogonal_arc_by_hand(alpha):
    """On a quarter circle the point at ``alpha`` is cos(alpha·pi/2)·a + sin(alpha·pi/2)·b."""
    a, b = _unit(0, 3, 0, 0), _unit(0, 0, 0, -2)
    want = math.cos(alpha * math.pi / 2) * a + math.sin(alpha * math.pi / 2) * b
    assert torch.allclose(slerp(a, b, alpha), want, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_endpoints_are_exact(seed):
    """alpha=0 is the (normalised) image embedding and alpha=1 the text one, bit for bit."""
    a, b = 3 * _rand(5, 7, seed), _rand(5, 7, seed + 100)
    assert torch.equal(slerp(a, b, 0.0), F.normalize(a, dim=-1)) and torch.equal(slerp(a, b, 1.0), F.normalize(b, dim=-1))


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_symmetric(alpha):
    """slerp(a, b, alpha) == slerp(b, a, 1 - alpha): the same arc walked from the other end."""
    a, b = _rand(16, 9, 1), _rand(16, 9, 2)
    assert torch.allclose(slerp(a, b, alpha), slerp(b, a, 1.0 - alpha), atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.6, 0.95])
def test_angle_is_the_stated_fraction_and_norm_is_one(alpha):
    a, b = _rand(32, 5, 3), _rand(32, 5, 4)
    out = slerp(a, b, alpha)
    theta = torch.arccos((a * b).sum(-1).clamp(-1, 1))
    assert torch.allclose(out.norm(dim=-1), torch.ones(32, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.arccos((a * out).sum(-1).clamp(-1, 1)), alpha * theta, atol=1e-6)
    assert torch.allclose(torch.arccos((out * b).sum(-1).clamp(-1, 1)), (1 - alpha) * theta, atol=1e-6)


def test_midpoint_equals_sum_fusion_at_half():
    """normalise(a + b) is the arc's midpoint: slerp:alpha=0.5 ranks exactly as sum:weight=0.5."""
    a, b = _rand(20, 8, 5), _rand(20, 8, 6)
    assert torch.allclose(slerp(a, b, 0.5), F.normalize(a + b, dim=-1), atol=1e-12)


def test_unnormalised_inputs_are_normalised_first_and_dtype_kept():
    a, b = _rand(4, 6, 7), _rand(4, 6, 8)
    out = slerp((a * 5).float(), (b * 0.01).float(), 0.4)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), slerp(a, b, 0.4), atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-9, 1e-7, 1e-5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_parallel_is_stable(eps, dtype):
    a = _rand(3, 6, 9)
    b = F.normalize(a + eps * _rand(3, 6, 10), dim=-1)
    for alpha in (0.3, 0.5, 0.9):
        out = slerp(a.to(dtype), b.to(dtype), alpha).double()
        assert torch.isfinite(out).all()
        assert torch.allclose(out.norm(dim=-1), torch.ones(3, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(out, a, atol=max(2 * eps, 1e-6))


@pytest.mark.parametrize("vec", [(1, 0, 0), (0, 0, 1), (0.6, 0.8, 0), (1, 1, 1), (-2, 0.5, 3)])
def test_antiparallel_is_handled(vec):
    """Opposite vectors have no unique arc: a fixed perpendicular is used; unit norm, endpoints, symmetry hold."""
    a = _unit(*vec)
    b = -a
    mid = slerp(a, b, 0.5)
    assert torch.isfinite(mid).all()
    assert abs(float(mid.norm()) - 1) < 1e-12 and abs(float((mid * a).sum())) < 1e-12
    for alpha in (0.25, 0.5, 0.75):
        out = slerp(a, b, alpha)
        assert abs(float((out * a).sum()) - math.cos(alpha * math.pi)) < 1e-12
        assert torch.allclose(out, slerp(b, a, 1 - alpha), atol=1e-12)
    assert torch.equal(slerp(a, b, 1.0), F.normalize(b, dim=-1))


def test_float32_antiparallel_is_not_noise():
    """-a in float32 leaves a ~1e-8 tangent: it must be treated as opposite, not normalised into a direction."""
    a = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    mid = slerp(a, -a, 0.5)
    assert torch.allclose(mid.double(), slerp(a.double(), -a.double(), 0.5), atol=1e-6)
    assert PARALLEL_EPS > 1e-7


def test_degenerate_rows_do_not_disturb_the_others():
    a, b = _rand(4, 5, 11), _rand(4, 5, 12)
    mixed_b = b.clone()
    mixed_b[1] = a[1]
    mixed_b[2] = -a[2]
    out = slerp(a, mixed_b, 0.3)
    want = slerp(a, b, 0.3)
    assert torch.allclose(out[[0, 3]], want[[0, 3]], atol=1e-12)
    assert torch.allclose(out[1], a[1], atol=1e-12)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_function_refuses_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha"):
        slerp(_unit(1, 0), _unit(0, 1), alpha)


# --- the composer ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pics():
    from PIL import Image

    return [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]


def test_composer_endpoints_and_midpoint(tiny_backbone, pics):
    from zscir.methods import create_composer

    texts = ["make it red", "a green one", "blue"]
    q = {a: create_composer("slerp", backbone=tiny_backbone, alpha=a).encode_queries(pics, texts)
         for a in (0, 0.5, 1)}
    img = create_composer("image", backbone=tiny_backbone).encode_queries(pics, texts)
    txt = create_composer("text", backbone=tiny_backbone).encode_queries(pics, texts)
    s = create_composer("sum", backbone=tiny_backbone, weight=0.5).encode_queries(pics, texts)
    assert torch.allclose(q[0], img, atol=1e-6) and torch.allclose(q[1], txt, atol=1e-6)
    assert torch.allclose(q[0.5], s, atol=1e-5)
    assert torch.allclose(q[0.5].norm(dim=-1), torch.ones(3), atol=1e-5)
    comp = create_composer("slerp", backbone=tiny_backbone, alpha=0.3, template="a photo of {}")
    assert comp.gallery_cache_key() == create_composer("sum", backbone=tiny_backbone).gallery_cache_key()
    assert comp.describe()["alpha"] == 0.3 and comp.describe()["template"] == "a photo of {}"


def test_registered_with_options_and_grid():
    from zscir.methods import check_method_options, list_methods

    spec = {m.name: m for m in list_methods()}
    assert "slerp" in spec and not spec["slerp"].trained
    assert spec["slerp"].grid[0] == "alpha" and spec["sum"].grid[0] == "weight"
    assert all(0 < v < 1 for v in spec["slerp"].grid[1])
    check_method_options("slerp", {"alpha": 0.2, "template": "{}"})
    with pytest.raises(ValueError, match="no option 'weight'"):
        check_method_options("slerp", {"weight": 0.2})


def test_listed_by_the_cli():
    res = zscir("list", "methods")
    assert res.exit_code == 0 and any(ln.startswith("slerp ") for ln in res.output.splitlines())


@pytest.mark.parametrize("value", ["2", "-0.1", "1.0001", "nan", "NaN", "Infinity", "-Infinity", "1e400", "abc",
                                   "true", "null", "[0.5]", "{}", '"0.5"', ""])
def test_bad_alpha_is_one_error_line(value):
    line = one_error_line(zscir("eval", "--benchmark", "world", "--model", MODEL, "--no-progress",
                                "-m", f"slerp:alpha={value}"), "alpha")
    assert "[0, 1]" in line


@pytest.mark.parametrize("value", ["2", "nan", "x"])
def test_bad_alpha_through_the_option_flag(value):
    one_error_line(zscir("eval", "--benchmark", "world", "--model", MODEL, "--no-progress", "-m", "slerp",
                         "-O", f"alpha={value}"), "alpha")


def test_slerp_with_a_checkpoint_is_refused():
    one_error_line(zscir("eval", "--benchmark", "world", "--model", MODEL, "--no-progress", "-m",
                         "slerp:checkpoint=somewhere"), "training-free")


def test_index_and_search_with_slerp(tmp_path):
    from test_indexer import make_photos

    photos = tmp_path / "photos"
    ids = make_photos(photos, n=4)
    res = zscir("index", photos, "--out", tmp_path / "idx", "--model", MODEL, "--batch-size", "4")
    assert res.exit_code == 0, res.output
    found = {}
    for m, opt in (("slerp", "alpha=0.5"), ("sum", "weight=0.5"), ("slerp", "alpha=0.9")):
        res = zscir("search", tmp_path / "idx", "-i", photos / ids[0], "-t", "red", "-m", m, "-O", opt, "--json",
                    "-k", "4")
        assert res.exit_code == 0, res.output
        found[opt] = [(r["id"], r["score"]) for r in json.loads(res.output)]
    # the arc's midpoint is sum fusion's direction: same ranking, same scores; another alpha scores otherwise
    assert [i for i, _ in found["alpha=0.5"]] == [i for i, _ in found["weight=0.5"]]
    assert all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(found["alpha=0.5"], found["weight=0.5"]))
    assert [s for _, s in found["alpha=0.9"]] != [s for _, s in found["alpha=0.5"]]
    one_error_line(zscir("search", tmp_path / "idx", "-i", photos / ids[0], "-t", "red", "-m", "slerp",
                         "-O", "alpha=7"), "alpha")


# --- choosing the knob on val ---------------------------------------------------------------------------
def _grids(name):
    from zscir.methods.registry import list_methods

    return {m.name: m.grid for m in list_methods()}.get(name)


def test_tuning_groups():
    from zscir.eval.tuning import tuning_groups

    groups = tuning_groups(["sum", "slerp:alpha=0.3", "slerp:alpha=0.6", "tscir:checkpoint=A",
                            "tscir:checkpoint=B", "image", "sum:template=a {},weight=0.2"], _grids)
    by = {g.name: g for g in groups}
    assert by["sum"].candidates == [f"sum:weight={v:g}" for v in _grids("sum")[1]]
    assert by["slerp"].candidates == ["slerp:alpha=0.3", "slerp:alpha=0.6"] and by["slerp"].tuned
    assert not by["tscir:checkpoint=A"].tuned and not by["tscir:checkpoint=B"].tuned  # two seeds stay two
    assert by["image"].candidates == ["image"] and by["image"].knob is None
    assert by["sum:template=a {}"].candidates == ["sum:template=a {},weight=0.2"]


def test_choose_best_on_val_first_on_tie():
    from zscir.eval.tuning import TuneGroup, choose

    g = TuneGroup("slerp", "alpha", ["slerp:alpha=0.3", "slerp:alpha=0.5", "slerp:alpha=0.7"])
    assert choose(g, {"slerp:alpha=0.3": 10.0, "slerp:alpha=0.5": 30.0, "slerp:alpha=0.7": 20.0}) == "slerp:alpha=0.5"
    assert choose(g, {"slerp:alpha=0.3": 30.0, "slerp:alpha=0.5": 30.0, "slerp:alpha=0.7": 1.0}) == "slerp:alpha=0.3"
    with pytest.raises(ValueError, match="no val score"):
        choose(g, {"slerp:alpha=0.3": 1.0})


def test_tune_on_val_cli(monkeypatch, tmp_path):
    """--tune-on val: grids on val, the best of each on test, fixed methods only on test; JSON records it."""
    import zscir.eval.real as real

    calls = []

    def fake_evaluate(composer, split="test", **kw):
        d = composer.describe()
        knob = d.get("alpha", d.get("weight", 0.0))
        calls.append((d["method"], knob, split))
        # val prefers the largest knob for sum, 0.3 for slerp; test hits follow the knob
        score = {"sum": 10 * knob, "slerp": 50 - 100 * abs(knob - 0.3)}.get(d["method"], 5.0)
        hits = [1 if i < round(score) else 0 for i in range(100)]
        return {"benchmark": "real", "split": split, "metrics": {"R@1": float(sum(hits))}, "breakdown": {},
                "method": d, "per_query": {"keys": [str(i) for i in range(100)],
                                           "family": [str(i // 4) for i in range(100)], "hits": {"R@1": hits}}}

    monkeypatch.setattr(real, "evaluate_real", fake_evaluate)
    monkeypatch.setattr(real, "ensure_real_benchmark", lambda *a, **k: tmp_path)
    out = tmp_path / "r.json"
    res = zscir("eval", "--benchmark", "real", "--model", MODEL, "--no-progress", "--tune-on", "val", "-m", "image",
                "-m", "sum", "-m", "slerp", "--baseline", "sum", "--bootstrap", "200", "-o", out)
    assert res.exit_code == 0, res.output
    assert "tuned on val: sum -> sum:weight=0.9" in res.output
    assert "tuned on val: slerp -> slerp:alpha=0.3" in res.output
    assert ("image", 0.0, "test") in calls and ("image", 0.0, "val") not in calls
    assert sum(1 for c in calls if c[0] == "sum" and c[2] == "val") == 9
    assert [c for c in calls if c[2] == "test" and c[0] != "image"] == [("sum", 0.9, "test"), ("slerp", 0.3, "test")]
    payload = json.loads(out.read_text())["results"]
    labels = [r["label"] for r in payload]
    assert labels == ["image", "sum:weight=0.9", "slerp:alpha=0.3"]
    assert payload[1]["tuned_on"]["chosen"] == "sum:weight=0.9" and len(payload[1]["tuned_on"]["val"]) == 9
    assert "paired difference of R@1 against sum:weight=0.9" in res.output
    assert payload[2]["paired"][0]["baseline"] == "sum:weight=0.9"


def test_seed_groups():
    from zscir.eval.tuning import seed_groups

    specs = ["sum", "tscir:checkpoint=a", "pic2word:checkpoint=p", "tscir:checkpoint=b", "tscir:checkpoint=c,x=1",
             "tscir:x=1,checkpoint=d", "sum:weight=0.3"]
    assert seed_groups(specs) == [["tscir:checkpoint=a", "tscir:checkpoint=b"],
                                  ["tscir:checkpoint=c,x=1", "tscir:x=1,checkpoint=d"]]


def test_mean_seeds_cli(monkeypatch, tmp_path):
    """--mean-seeds adds one row per method run with several checkpoints: per-query mean hits, interval, diff."""
    import types

    import zscir.cli.evaluate as cli_eval
    import zscir.eval.real as real

    patterns = {"a": lambda i: i % 3 == 0, "b": lambda i: i % 3 == 1, None: lambda i: False}

    def fake_composer(name, model, checkpoint, device, options):
        ck = options.get("checkpoint", checkpoint)
        return types.SimpleNamespace(name=name, describe=lambda: {"method": name, "checkpoint": ck})

    def fake_evaluate(composer, split="test", **kw):
        hits = [int(patterns[composer.describe()["checkpoint"]](i)) for i in range(60)]
        return {"benchmark": "real", "split": split, "metrics": {"R@1": 100.0 * sum(hits) / 60}, "breakdown": {},
                "method": composer.describe(), "per_query": {"keys": [str(i) for i in range(60)],
                                                             "family": [str(i // 2) for i in range(60)],
                                                             "hits": {"R@1": hits}}}

    monkeypatch.setattr(cli_eval, "make_composer", fake_composer)
    monkeypatch.setattr(real, "evaluate_real", fake_evaluate)
    monkeypatch.setattr(real, "ensure_real_benchmark", lambda *a, **k: tmp_path)
    out = tmp_path / "r.json"
    res = zscir("eval", "--benchmark", "real", "--no-progress", "-m", "image", "-m", "tscir:checkpoint=a",
                "-m", "tscir:checkpoint=b", "--mean-seeds", "--bootstrap", "100", "-o", out)
    assert res.exit_code == 0, res.output
    assert "mean(tscir:checkpoint=a, tscir:checkpoint=b)" in res.output
    payload = json.loads(out.read_text())["results"]
    mean = payload[-1]
    assert mean["label"] == "mean(tscir:checkpoint=a, tscir:checkpoint=b)"
    iv = mean["intervals"]["R@1"]
    assert mean["metrics"]["R@1"] == pytest.approx(100 / 3) and iv["lo"] < iv["estimate"] < iv["hi"]
    assert mean["per_query"]["hits"]["R@1"][:3] == [0.5, 0.5, 0.0]
    assert mean["paired"][0]["baseline"] == "image" and mean["paired"][0]["estimate"] == pytest.approx(100 / 3)
    assert payload[0].get("paired", []) == []  # the baseline has no difference with itself in the table


@pytest.mark.parametrize("args, needles", [
    (["--tune-on", "test"], ["--tune-on"]),
    (["--tune-on", "val", "--split", "val"], ["--tune-on"]),
    (["--baseline", "nope"], ["--baseline", "nope"]),
    (["--resample", "pixels"], ["resample"]),
])
def test_tuning_and_baseline_mistakes(monkeypatch, tmp_path, args, needles):
    import zscir.eval.real as real

    monkeypatch.setattr(real, "ensure_real_benchmark", lambda *a, **k: tmp_path)
    monkeypatch.setattr(real, "evaluate_real", lambda *a, **k: pytest.fail("evaluated despite a mistake"))
    one_error_line(zscir("eval", "--benchmark", "real", "--model", MODEL, "--no-progress", "-m", "sum", "-m", "image",
                         *args), *needles)


@pytest.mark.parametrize("args", [["--tune-on", "val"], ["--baseline", "sum"], ["--mean-seeds"],
                                  ["--resample", "query"], ["--bootstrap", "10"]])
def test_real_only_options_refused_elsewhere(args):
    one_error_line(zscir("eval", "--benchmark", "world", "--model", MODEL, "-m", "sum", *args), "--benchmark real")

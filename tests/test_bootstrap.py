"""Bootstrap intervals of recall@K and paired differences (`zscir.eval.bootstrap`), the per-query hits they are
computed from (`zscir.eval.metrics.hits_at_k`), and their place in the real benchmark's results and table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zscir.eval.bootstrap import Interval, bootstrap_recall, paired_difference
from zscir.eval.metrics import hits_at_k, recall_at_k


def bern(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(int)


def families(n_fam: int, size: int, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly correlated families: every query of a family hits or misses together."""
    fam_hit = np.random.default_rng(seed).random(n_fam) < p
    return np.repeat(fam_hit, size).astype(int), np.repeat(np.arange(n_fam), size)


# --- the interval ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, p", [(50, 0.1), (50, 0.5), (300, 0.3), (1000, 0.05), (1000, 0.9), (37, 0.7)])
@pytest.mark.parametrize("clustered", [False, True])
def test_interval_contains_the_estimate(n, p, clustered):
    h = bern(n, p, n)
    clusters = [i // 3 for i in range(n)] if clustered else None
    iv = bootstrap_recall(h, clusters, samples=500)
    assert iv.estimate == pytest.approx(100 * h.mean())
    assert 0 <= iv.lo <= iv.estimate <= iv.hi <= 100
    assert iv.n == n and iv.resample == ("family" if clustered else "query")
    assert iv.n_clusters == (len(set(clusters)) if clustered else n)


def test_width_shrinks_like_one_over_sqrt_n():
    w = {n: (lambda iv: iv.hi - iv.lo)(bootstrap_recall(bern(n, 0.4, 1), samples=1000)) for n in (400, 1600, 6400)}
    assert 1.6 < w[400] / w[1600] < 2.5 and 1.6 < w[1600] / w[6400] < 2.5
    # and it matches the normal approximation 2 * 1.96 * sqrt(p(1-p)/n) to within 15 %
    assert w[1600] == pytest.approx(2 * 1.96 * 100 * np.sqrt(0.24 / 1600), rel=0.15)


@pytest.mark.parametrize("clustered", [False, True])
def test_deterministic_with_seed(clustered):
    h = bern(200, 0.3, 5)
    clusters = [i // 4 for i in range(200)] if clustered else None
    a = bootstrap_recall(h, clusters, seed=7)
    assert a == bootstrap_recall(h, clusters, seed=7)
    assert any((a.lo, a.hi) != (b.lo, b.hi) for b in (bootstrap_recall(h, clusters, seed=s) for s in (8, 9, 10)))
    assert a.samples == 2000 and a.seed == 7 and a.level == 0.95


def test_constant_hits_give_a_point_interval():
    assert (bootstrap_recall(np.ones(20)).lo, bootstrap_recall(np.ones(20)).hi) == (100.0, 100.0)
    iv = bootstrap_recall(np.zeros(20), clusters=list("aabbccddeeffgghhiijj"))
    assert (iv.estimate, iv.lo, iv.hi) == (0.0, 0.0, 0.0) and not iv.excludes_zero


def test_family_resampling_is_wider_on_correlated_data():
    h, fam = families(60, 8, 0.4, 3)
    by_query = bootstrap_recall(h, None, seed=0)
    by_family = bootstrap_recall(h, fam, seed=0)
    assert by_query.estimate == by_family.estimate
    # 60 independent units, not 480: the interval is about sqrt(8) times wider
    ratio = (by_family.hi - by_family.lo) / (by_query.hi - by_query.lo)
    assert 2.0 < ratio < 4.0
    assert by_family.n_clusters == 60 and by_family.resample == "family"


def test_family_resampling_equals_query_resampling_for_singletons():
    h = bern(100, 0.3, 4)
    a, b = bootstrap_recall(h, None, seed=3), bootstrap_recall(h, [f"f{i}" for i in range(100)], seed=3)
    assert (a.lo, a.hi) == (b.lo, b.hi)


def test_unequal_family_sizes_weigh_by_queries():
    """A redraw's recall is drawn hits over drawn queries (a ratio), not a mean of family means."""
    h = np.array([1] * 9 + [0])  # a big family of 9 hits, a singleton miss
    iv = bootstrap_recall(h, [0] * 9 + [1], samples=4000, seed=0)
    assert iv.estimate == 90.0
    # redraws: {big, big} -> 100, {big, small} -> 90, {small, small} -> 0
    assert iv.lo == 0.0 and iv.hi == 100.0


def test_coverage_of_a_simulated_bernoulli():
    """About 95 % of percentile intervals contain the true p (200 simulated benchmarks of 200 queries)."""
    p, n = 0.3, 200
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(200):
        iv = bootstrap_recall((rng.random(n) < p).astype(int), samples=400, seed=i)
        covered += iv.lo <= 100 * p <= iv.hi
    assert 0.89 <= covered / 200 <= 0.99


def test_coverage_with_correlated_families_needs_family_resampling():
    """Families of 6 perfectly correlated queries: query resampling undercovers badly, family resampling not."""
    rng = np.random.default_rng(12)
    cover = {"query": 0, "family": 0}
    for i in range(120):
        fam_hit = rng.random(40) < 0.5
        h, fam = np.repeat(fam_hit, 6).astype(int), np.repeat(np.arange(40), 6)
        cover["query"] += (lambda iv: iv.lo <= 50 <= iv.hi)(bootstrap_recall(h, None, samples=300, seed=i))
        cover["family"] += (lambda iv: iv.lo <= 50 <= iv.hi)(bootstrap_recall(h, fam, samples=300, seed=i))
    assert cover["family"] / 120 >= 0.88 and cover["query"] / 120 <= 0.75


# --- paired differences ---------------------------------------------------------------------------------
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_paired_difference_with_itself_is_exactly_zero(clustered, p):
    h = bern(150, p, 2)
    d = paired_difference(h, h.copy(), [i // 5 for i in range(150)] if clustered else None)
    assert (d.estimate, d.lo, d.hi) == (0.0, 0.0, 0.0) and not d.excludes_zero


def test_paired_difference_is_the_difference_and_narrower_than_unpaired():
    base = bern(500, 0.4, 6)
    better = base.copy()
    better[np.random.default_rng(1).choice(np.flatnonzero(base == 0), 30, replace=False)] = 1  # +6 points
    d = paired_difference(better, base)
    assert d.estimate == pytest.approx(100 * (better.mean() - base.mean())) == pytest.approx(6.0)
    assert d.lo > 0 and d.excludes_zero
    a, b = bootstrap_recall(better), bootstrap_recall(base)
    assert a.lo < b.hi  # the two intervals side by side overlap ...
    assert d.hi - d.lo < 0.6 * ((a.hi - a.lo) + (b.hi - b.lo)) / 2  # ... the paired one is much narrower


def test_paired_difference_sign_and_negative_exclusion():
    base = np.ones(300, dtype=int)
    worse = base.copy()
    worse[:60] = 0
    d = paired_difference(worse, base)
    assert d.estimate == -20.0 and d.hi < 0 and d.excludes_zero


def test_paired_difference_noise_includes_zero():
    a, b = bern(400, 0.4, 21), bern(400, 0.4, 22)
    d = paired_difference(a, b, seed=1)
    assert d.lo < d.estimate < d.hi
    if abs(d.estimate) < 2:
        assert not d.excludes_zero


@pytest.mark.parametrize("call, match", [
    (lambda: bootstrap_recall([]), "non-empty"),
    (lambda: bootstrap_recall(np.zeros((3, 2))), "1-D"),
    (lambda: bootstrap_recall([1, float("nan")]), "non-finite"),
    (lambda: bootstrap_recall([1, 0], samples=0), "positive integer"),
    (lambda: bootstrap_recall([1, 0], samples=2.5), "positive integer"),
    (lambda: bootstrap_recall([1, 0], samples=True), "positive integer"),
    (lambda: bootstrap_recall([1, 0], level=1.0), "level"),
    (lambda: bootstrap_recall([1, 0], level=float("nan")), "level"),
    (lambda: bootstrap_recall([1, 0], clusters=["a"]), "1 cluster labels for 2 queries"),
    (lambda: paired_difference([1, 0], [1, 0, 1]), "differ in length"),
])
def test_mistakes_are_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_interval_round_trips_through_json():
    iv = bootstrap_recall(bern(60, 0.5, 1), [i // 2 for i in range(60)], samples=100)
    d = json.loads(json.dumps(iv.as_dict()))
    assert d["excludes_zero"] == iv.excludes_zero and Interval.from_dict(d) == iv
    assert str(iv) == f"{iv.estimate:.2f} [{iv.lo:.2f}, {iv.hi:.2f}]"


# --- per-query hits -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_hits_average_to_recall_at_k(seed, k):
    rng = np.random.default_rng(seed)
    ranked = [list(rng.permutation(20)[: rng.integers(1, 15)]) for _ in range(33)]
    targets = list(rng.integers(0, 20, 33))
    h = hits_at_k(ranked, targets, k)
    assert h.dtype == bool and h.shape == (33,)
    assert 100.0 * int(h.sum()) / 33 == recall_at_k(ranked, targets, k)
    assert h.tolist() == [t in r[:k] for r, t in zip(ranked, targets)]


# --- the real benchmark: results, table, pairing ---------------------------------------------------------
def _fake(label: str, hits: list[int], keys: list[str] | None = None) -> dict:
    keys = keys or [str(i) for i in range(len(hits))]
    return {"label": label, "method": {"method": label}, "metrics": {"R@1": 100.0 * sum(hits) / len(hits)},
            "per_query": {"keys": keys, "family": [str(int(k) // 3) for k in keys], "hits": {"R@1": hits}}}


def test_paired_table_against_first_or_named_baseline():
    from zscir.eval.real import format_real_table, paired_table, result_intervals

    a = _fake("sum", [1, 0, 0] * 20)
    b = _fake("tscir", [1, 1, 0] * 20)
    c = _fake("image", [0, 0, 0] * 20)
    for r in (a, b, c):
        r["intervals"] = result_intervals(r["per_query"], samples=200)
    rows = paired_table([a, b, c], samples=200)
    assert [(r["method"], r["baseline"]) for r in rows] == [("tscir", "sum"), ("image", "sum")]
    assert rows[0]["estimate"] == pytest.approx(100 / 3) and rows[0]["excludes_zero"]
    rows = paired_table([a, b, c], baseline="tscir", samples=200)
    assert [r["method"] for r in rows] == ["sum", "image"] and all(r["hi"] < 0 for r in rows)
    text = format_real_table([a, b, c], rows)
    assert "bootstrap interval" in text and "concept families" in text and "against tscir" in text
    assert f"{'sum':<26}-33.33 [" in text and " *" in text
    assert paired_table([a], samples=200) == []


def test_paired_table_refuses_different_queries_and_unknown_baseline():
    from zscir.eval.real import paired_table

    a, b = _fake("a", [1, 0, 1]), _fake("b", [1, 0, 1], keys=["0", "1", "5"])
    with pytest.raises(ValueError, match="different queries"):
        paired_table([a, b], samples=50)
    with pytest.raises(ValueError, match="--baseline 'zz'"):
        paired_table([a, _fake("c", [0, 0, 0])], baseline="zz", samples=50)


@pytest.mark.parametrize("samples, resample", [(-1, "family"), (1.5, "family"), (True, "query"), (10, "pixel")])
def test_check_bootstrap_refuses(samples, resample):
    from zscir.eval.real import check_bootstrap

    with pytest.raises(ValueError):
        check_bootstrap(samples, resample)


@pytest.fixture(scope="module")
def small_real(tmp_path_factory):
    from test_real_benchmark import _small_config, needs_packages  # noqa: F401 - the same small build

    from zscir.data.real.emoji import EMOJI_TEST, FONT_PATH
    from zscir.data.real.tuxpaint import ROOT as TUX_ROOT

    if not (FONT_PATH.exists() and EMOJI_TEST.exists() and TUX_ROOT.is_dir()):
        pytest.skip("needs fonts-noto-color-emoji, unicode-data, tuxpaint-stamps-default")
    from zscir.data.real.benchmark import build_benchmark

    root = tmp_path_factory.mktemp("real-ci")
    build_benchmark(root, _small_config(), progress=False)
    return root


def test_real_results_carry_hits_that_give_the_metrics(small_real, tiny_backbone):
    from zscir.eval.real import INTERVAL_METRICS, evaluate_real, paired_table
    from zscir.methods import create_composer

    cache = small_real.parent / "feat-cache"
    rs = {}
    for name, kw in (("sum", {}), ("slerp", {"alpha": 0.5}), ("image", {})):
        rs[name] = evaluate_real(create_composer(name, backbone=tiny_backbone, **kw), "test", root=small_real,
                                 progress=False, cache_dir=cache, bootstrap=300)
        rs[name]["label"] = name
    r = rs["sum"]
    pq = r["per_query"]
    meta = json.loads((small_real / "test" / "meta.json").read_text())["cirr"]
    assert sorted(pq["keys"]) == sorted(meta) and pq["family"] == [meta[k]["family"] for k in pq["keys"]]
    for name in INTERVAL_METRICS:  # the hits are the reported metric, exactly
        assert 100.0 * sum(pq["hits"][name]) / len(pq["keys"]) == r["metrics"][name]
        iv = r["intervals"][name]
        assert iv["lo"] <= r["metrics"][name] <= iv["hi"] and iv["resample"] == "family"
        assert iv["n_clusters"] == len(set(pq["family"])) and iv["samples"] == 300
    json.dumps(r)  # JSON-ready
    # slerp at alpha 0.5 is sum's direction: the same hits, a paired difference of exactly 0
    assert rs["slerp"]["per_query"]["hits"] == pq["hits"]
    d = paired_table([rs["sum"], rs["slerp"], rs["image"]], samples=300)
    assert (d[0]["estimate"], d[0]["lo"], d[0]["hi"]) == (0.0, 0.0, 0.0)
    q = evaluate_real(create_composer("image", backbone=tiny_backbone), "test", root=small_real, progress=False,
                      cache_dir=cache, bootstrap=0)
    assert "intervals" not in q and q["metrics"] == rs["image"]["metrics"]
    q = evaluate_real(create_composer("image", backbone=tiny_backbone), "test", root=small_real, progress=False,
                      cache_dir=cache, bootstrap=200, resample="query")
    assert q["intervals"]["R@1"]["resample"] == "query" and q["intervals"]["R@1"]["n_clusters"] == len(pq["keys"])


def test_mean_of_seeds_averages_hits_and_metrics():
    from zscir.eval.real import mean_result, paired_table

    s0 = _fake("tscir:checkpoint=a", [1, 0, 1, 0, 0, 0] * 10)
    s1 = _fake("tscir:checkpoint=b", [1, 1, 0, 0, 0, 0] * 10)
    base = _fake("sum", [0, 0, 0, 0, 0, 0] * 10)
    m = mean_result([s0, s1], samples=300)
    assert m["label"] == "mean(tscir:checkpoint=a, tscir:checkpoint=b)"
    assert m["metrics"]["R@1"] == pytest.approx((s0["metrics"]["R@1"] + s1["metrics"]["R@1"]) / 2)
    assert m["per_query"]["hits"]["R@1"][:3] == [1.0, 0.5, 0.5]
    assert m["intervals"]["R@1"]["estimate"] == pytest.approx(m["metrics"]["R@1"])
    d = {r["method"]: r for r in paired_table([base, s0, s1, m], samples=300)}
    assert d[m["label"]]["estimate"] == pytest.approx(m["metrics"]["R@1"]) and d[m["label"]]["excludes_zero"]
    with pytest.raises(ValueError, match="different queries"):
        mean_result([s0, _fake("x", [1, 0, 1], keys=["0", "1", "9"])])
    with pytest.raises(ValueError, match="at least two"):
        mean_result([s0])

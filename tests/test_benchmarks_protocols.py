"""Protocol semantics on the real annotation files with placeholder images.

An oracle composer (query = its ground truth's embedding) must score 100 everywhere; a composer that
returns the reference embedding must never get the reference back from CIRR; FashionIQ's reference is
*not* removed; flags are recorded.
"""

from __future__ import annotations

import json

import pytest

from conftest_benchmarks import (  # noqa: F401  (fixtures)
    OracleComposer,
    ReferenceComposer,
    circo_root,
    cirr_root,
    fiq_full_root,
    fiq_root,
    make_table,
)
from zscir.eval.benchmarks import (
    compose_fashioniq_texts,
    evaluate_benchmark,
    format_table,
    load_circo,
    load_cirr,
    load_fashioniq,
    make_protocol,
    run_benchmark,
)
from zscir.eval.benchmarks.circo import SEMANTIC_ASPECTS

pytestmark = pytest.mark.benchmarks

FAST = {"progress": False, "batch_size": 512}
#: embedding sizes of the test composers: random vectors for the large CIRR / FashionIQ roots (fast to rank),
#: one-hot (exactly orthogonal) for CIRCO, whose oracle mixes up to 14 ground truths per query
CIRR_DIM = 64
FIQ_DIM = 256


# ------------------------------------------------------------------------------------------------ CIRR
def test_cirr_oracle_scores_100(cirr_root, tmp_path):
    data = load_cirr(cirr_root.root, "val")
    oracle = OracleComposer(cirr_root, make_table([(q.reference, q.caption, [q.target]) for q in data.queries]),
                            dim=CIRR_DIM)
    res = evaluate_benchmark("cirr", cirr_root.root, "val", oracle, cache_dir=tmp_path, **FAST)
    m = res["metrics"]
    for key in ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg"):
        assert m[key] == pytest.approx(100.0), key
    assert res["n_queries"] == 4181 and res["n_gallery"] == 2297
    assert res["benchmark"] == "cirr" and res["split"] == "val"
    assert res["protocol"]["remove_reference"] is True and res["protocol"]["preprocessing"] == "default"
    assert res["protocol"]["limit"] is None
    assert res["method"] == {"method": "oracle"}
    assert "zscir_version" in res
    json.dumps(res)  # the result is JSON-serialisable
    table = format_table(res)
    assert "Rsubset@1" in table and "100.00" in table


def test_cirr_reference_never_returned(cirr_root, tmp_path):
    data = load_cirr(cirr_root.root, "val")
    run = run_benchmark("cirr", cirr_root.root, "val", ReferenceComposer(cirr_root, CIRR_DIM), cache_dir=tmp_path, **FAST)
    refs = {str(q.pairid): q for q in data.queries}
    for key, ranked in run.rankings["recall"].items():
        assert len(ranked) == 50
        assert refs[key].reference not in ranked
    for key, sub in run.rankings["recall_subset"].items():
        q = refs[key]
        assert q.reference not in sub
        assert sorted(sub) == sorted(set(q.members) - {q.reference})  # the 5 candidates
    # with removal switched off (analysis only) the reference comes first: removal really matters
    run_off = run_benchmark("cirr", cirr_root.root, "val", ReferenceComposer(cirr_root, CIRR_DIM), cache_dir=tmp_path,
                            limit=50, remove_reference=False, **FAST)
    assert run_off.result["protocol"]["remove_reference"] is False
    for key, ranked in run_off.rankings["recall"].items():
        assert ranked[0] == refs[key].reference


def test_cirr_limit_is_flagged(cirr_root, tmp_path):
    data = load_cirr(cirr_root.root, "val")
    oracle = OracleComposer(cirr_root, make_table([(q.reference, q.caption, [q.target]) for q in data.queries]),
                            dim=CIRR_DIM)
    res = evaluate_benchmark("cirr", cirr_root.root, "val", oracle, limit=25, cache_dir=tmp_path, **FAST)
    assert res["n_queries"] == 25 and res["n_gallery"] < 2297
    assert res["protocol"]["limit"] == 25 and "LIMITED" in res["protocol"]["gallery"]
    assert "WARNING" in format_table(res)


# ------------------------------------------------------------------------------------------------ FashionIQ
def test_fashioniq_caption_modes_documented_strings():
    caps = ["is shiny and silver with shorter sleeves.", " fit and flare "]
    assert compose_fashioniq_texts(caps, "searle") == [
        "is shiny and silver with shorter sleeves and fit and flare",
        "fit and flare and is shiny and silver with shorter sleeves",
    ]
    assert compose_fashioniq_texts(caps, "pic2word") == ["fit and flare and is shiny and silver with shorter sleeves"]
    assert compose_fashioniq_texts(caps, "join") == ["is shiny and silver with shorter sleeves and fit and flare"]
    assert compose_fashioniq_texts(["Is red?", "longer,"], "join") == ["Is red and longer"]
    assert compose_fashioniq_texts(caps, "pic2word", strip=False) == [
        " fit and flare  and is shiny and silver with shorter sleeves."
    ]
    with pytest.raises(ValueError):
        compose_fashioniq_texts(caps, "concat")
    with pytest.raises(ValueError):
        compose_fashioniq_texts(["only one"], "searle")


def _fiq_oracle(fiq_root, mode: str, categories=("dress", "shirt", "toptee")) -> OracleComposer:
    data = load_fashioniq(fiq_root.root, "val", categories)
    items = []
    for cat in data.categories.values():
        for q in cat.queries:
            for text in compose_fashioniq_texts(q.captions, mode):
                items.append((q.candidate, text, [q.target]))
    # FashionIQ has a few (candidate, captions) pairs with two targets: merge them (both rank top-2)
    return OracleComposer(fiq_root, make_table(items), sequential=False, dim=FIQ_DIM)


@pytest.mark.slow
def test_fashioniq_oracle_full_dress_gallery(fiq_full_root, tmp_path):
    fiq_root = fiq_full_root
    res = evaluate_benchmark("fashioniq", fiq_root.root, "val", _fiq_oracle(fiq_root, "searle", ("dress",)),
                             categories=("dress",), cache_dir=tmp_path, **FAST)
    m = res["metrics"]
    assert m["dress/R@10"] == pytest.approx(100.0) and m["dress/R@50"] == pytest.approx(100.0)
    assert m["avg/R@10"] == pytest.approx(100.0) and m["avg"] == pytest.approx(100.0)
    assert res["n_gallery"] == 3817 and res["n_queries"] == 2017
    assert res["protocol"]["caption_mode"] == "searle" and res["protocol"]["categories"] == ["dress"]
    assert res["protocol"]["reference_removed"] is False
    assert "dress" in format_table(res)


@pytest.mark.parametrize("mode", ["searle", "pic2word", "join"])
def test_fashioniq_modes_all_categories(fiq_root, tmp_path, mode):
    res = evaluate_benchmark("fashioniq", fiq_root.root, "val", _fiq_oracle(fiq_root, mode), caption_mode=mode,
                             limit=30, cache_dir=tmp_path, **FAST)
    for cat in ("dress", "shirt", "toptee"):
        assert res["metrics"][f"{cat}/R@10"] == pytest.approx(100.0)
    assert res["protocol"]["caption_mode"] == mode
    assert res["n_queries"] == 90


def test_fashioniq_reference_is_not_removed(fiq_root, tmp_path):
    data = load_fashioniq(fiq_root.root, "val", ("dress",))
    run = run_benchmark("fashioniq", fiq_root.root, "val", ReferenceComposer(fiq_root, FIQ_DIM), categories="dress",
                        limit=30, cache_dir=tmp_path, **FAST)
    for i, q in enumerate(data.categories["dress"].queries[:30]):
        assert run.rankings["dress"][str(i)][0] == q.candidate


def test_fashioniq_reads_jpg_and_png(fiq_root):
    data = load_fashioniq(fiq_root.root, "val", ("dress",))
    cat = data.categories["dress"]
    used = [cat.image(n) for q in cat.queries[:30] for n in (q.candidate, q.target)]
    assert {im.path.suffix for im in used} == {".png", ".jpg"}
    assert all(im.path.is_file() for im in used)


# ------------------------------------------------------------------------------------------------ CIRCO
def test_circo_oracle_scores_100(circo_root, tmp_path):
    data = load_circo(circo_root.root, "val")
    assert data.gallery_source == "directory" and len(data.gallery) == len(circo_root.names)
    oracle = OracleComposer(circo_root, make_table([(q.reference, q.caption, q.gt) for q in data.queries]))
    res = evaluate_benchmark("circo", circo_root.root, "val", oracle, cache_dir=tmp_path, **FAST)
    m = res["metrics"]
    for k in (5, 10, 25, 50):
        assert m[f"mAP@{k}"] == pytest.approx(100.0)
        assert m[f"R@{k}"] == pytest.approx(100.0)
    assert {k.split("/")[1] for k in m if k.startswith("semantic_mAP@10/")} == set(SEMANTIC_ASPECTS)
    assert all(v == pytest.approx(100.0) for k, v in m.items() if k.startswith("semantic"))
    assert res["n_queries"] == 220 and res["protocol"]["use_shared_concept"] is False
    assert "mAP" in format_table(res)


def test_circo_shared_concept_flag(circo_root, tmp_path):
    proto = make_protocol("circo", use_shared_concept=True)
    assert proto.query_text("is red", "a car") == "find a car but is red"
    assert make_protocol("circo").query_text("is red", "a car") == "is red"
    data = load_circo(circo_root.root, "val")
    oracle = OracleComposer(circo_root, make_table(
        [(q.reference, proto.query_text(q.caption, q.shared_concept), q.gt) for q in data.queries]))
    res = evaluate_benchmark("circo", circo_root.root, "val", oracle, use_shared_concept=True, limit=40,
                             cache_dir=tmp_path, **FAST)
    assert res["metrics"]["mAP@10"] == pytest.approx(100.0)
    assert res["protocol"]["use_shared_concept"] is True
    assert res["protocol"]["shared_concept_template"] == "find {shared_concept} but {caption}"


def test_circo_partial_credit_matches_formula(circo_root, tmp_path):
    """The reference composer ranks the reference first and then gallery order: check mAP by hand."""
    from zscir.eval.metrics import average_precision_at_k

    data = load_circo(circo_root.root, "val")
    run = run_benchmark("circo", circo_root.root, "val", ReferenceComposer(circo_root), cache_dir=tmp_path, **FAST)
    expected = 100 * sum(average_precision_at_k(run.rankings["ranking"][str(q.id)], q.gt, 10)
                         for q in data.queries) / len(data.queries)
    assert run.result["metrics"]["mAP@10"] == pytest.approx(expected)
    assert all(r[0] == q.reference for q, r in zip(data.queries, run.rankings["ranking"].values()))


# ------------------------------------------------------------------------------------------------ flags
def test_protocol_flags_are_validated():
    with pytest.raises(ValueError, match="unknown protocol flag"):
        make_protocol("cirr", caption_mode="join")
    with pytest.raises(ValueError, match="caption_mode"):
        make_protocol("fashioniq", caption_mode="concat")
    with pytest.raises(ValueError, match="preprocessing"):
        make_protocol("circo", preprocessing="squash")
    assert make_protocol("cirr", preprocessing=None).preprocessing == "default"  # None = default
    # CLI spellings are coerced to the flag's type
    assert make_protocol("circo", use_shared_concept="false").use_shared_concept is False
    assert make_protocol("circo", targetpad_ratio="1.5").targetpad_ratio == 1.5
    assert make_protocol("fashioniq", categories="dress, toptee").categories == ("dress", "toptee")
    with pytest.raises(ValueError, match="true/false"):
        make_protocol("cirr", remove_reference="maybe")


def test_test_splits_and_unknown_benchmarks_are_rejected(cirr_root):
    with pytest.raises(ValueError, match="no public ground truth"):
        evaluate_benchmark("cirr", cirr_root.root, "test1", ReferenceComposer(cirr_root, CIRR_DIM))
    with pytest.raises(ValueError, match="unknown benchmark"):
        evaluate_benchmark("cifar", cirr_root.root, "val", ReferenceComposer(cirr_root, CIRR_DIM))

"""Tests of the procedural CIR world (zscir.data.world): determinism, rendering, captions,
edits, phrasing, held-out splits, benchmark structure and the official file formats."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import numpy as np
import pytest

from zscir.data.world import (EDIT_KINDS, PHRASINGS, TEMPLATES, UNDERSPECIFIED_KINDS,
                              UNDERSPECIFIED_TEMPLATES, WORLD_VERSION, Obj, Scene, WorldConfig,
                              apply_edit, canonical_caption, caption, generate_benchmark,
                              generate_pairs, generate_triplets, phrase_edit, render, render_batch,
                              sample_scene, satisfies, training_keys, underspecified_edit,
                              write_benchmark)
from zscir.data.world.captions import CAPTION_STYLES
from zscir.data.world.io import read_pairs_jsonl, read_triplets_jsonl, write_pairs_jsonl, \
    write_triplets_jsonl

SMALL = WorldConfig(seed=7, n_pairs=2000, n_triplets=800, n_cirr_sets=30, queries_per_set=2,
                    n_circo_queries=40, n_circo_distractors=200)


@pytest.fixture(scope="module")
def small_pairs():
    return generate_pairs(SMALL)


@pytest.fixture(scope="module")
def small_bench(small_pairs):
    return generate_benchmark(SMALL, pairs=small_pairs)


def _scenes(seed: int, n: int, **kw) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, **kw) for _ in range(n)]


# -- determinism ---------------------------------------------------------------------------------

def test_pairs_deterministic_and_seed_dependent(small_pairs):
    again = generate_pairs(SMALL, n=200)
    assert again == small_pairs[:200]  # same seed -> identical; n is a prefix
    other = generate_pairs(WorldConfig(seed=8, n_pairs=2000), n=200)
    assert [p.scene for p in other] != [p.scene for p in again]
    assert [p.caption for p in other] != [p.caption for p in again]
    a = render_batch([p.scene for p in again[:20]])
    b = render_batch([p.scene for p in generate_pairs(SMALL, n=20)])
    assert np.array_equal(a, b)


def test_scene_roundtrip_and_key():
    for s in _scenes(0, 50):
        assert Scene.from_dict(json.loads(json.dumps(s.to_dict()))) == s
        shuffled = Scene(tuple(reversed(s.objects)), s.background)
        assert shuffled.key() == s.key() and shuffled == s
        assert 1 <= len(s.objects) <= 4
        assert len({o.cell for o in s.objects}) == len(s.objects)
        assert all(o.color != s.background for o in s.objects)


# -- rendering -----------------------------------------------------------------------------------

def test_render_size_mode_determinism():
    s = _scenes(1, 1)[0]
    img = render(s)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(render(s)))
    assert render(s, size=32).size == (32, 32)
    j1, j2 = np.asarray(render(s, jitter_seed=1)), np.asarray(render(s, jitter_seed=1))
    assert np.array_equal(j1, j2)


def test_render_colour_difference_and_batch():
    a = Scene((Obj("star", "red", "small", 0, 0),), "white")
    b = Scene((Obj("star", "blue", "small", 0, 0),), "white")
    pa, pb = np.asarray(render(a)).astype(int), np.asarray(render(b)).astype(int)
    diff = np.abs(pa - pb).sum(-1)
    assert (diff > 60).sum() > 20  # a small star still covers many pixels
    assert diff[32:, 32:].sum() == 0  # the rest of the image is identical
    # the centre pixel of a small object carries its colour
    c = pa[10, 10]
    assert c[0] > 180 and c[2] < 80
    batch = render_batch([a, b])
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[0], pa)


# -- captions ------------------------------------------------------------------------------------

def test_captions_full_form_mentions_everything_lowercase_no_digits():
    rng = random.Random(3)
    for s in _scenes(2, 100):
        full = caption(s, rng, "full")
        canon = canonical_caption(s)
        for o in s.objects:
            for text in (full, canon):
                assert f"{o.color} " in text and o.shape in text
        assert s.background in canon
        for st in CAPTION_STYLES:
            t = caption(s, rng, st)
            assert t == t.lower() and not re.search(r"\d", t), t
    two = Scene((Obj("circle", "red", "small", 0, 0), Obj("circle", "red", "small", 2, 2)), "gray")
    assert "two red circles" in caption(two, rng, "short")


# -- edits ---------------------------------------------------------------------------------------

def _diff(a: Scene, b: Scene) -> tuple[set[Obj], set[Obj]]:
    return set(a.objects) - set(b.objects), set(b.objects) - set(a.objects)


def test_each_edit_kind_changes_the_intended_thing():
    rng = random.Random(4)
    seen = Counter()
    for s in _scenes(5, 300, min_objects=2, max_objects=3):
        for kind in EDIT_KINDS:
            res = apply_edit(s, kind, rng)
            if res is None:
                continue
            t, spec = res
            seen[kind] += 1
            gone, new = _diff(s, t)
            assert spec.kind == kind and t != s
            assert satisfies(t, spec.constraints) and not satisfies(s, spec.constraints)
            if kind in ("color", "size", "shape"):
                (o,), (n,) = gone, new
                assert o.cell == n.cell and getattr(o, kind) != getattr(n, kind)
                others = [f for f in ("shape", "color", "size", "texture") if f != kind]
                assert all(getattr(o, f) == getattr(n, f) for f in others)
                assert t.background == s.background
            elif kind == "add":
                assert not gone and len(new) == 1 and len(t.objects) == len(s.objects) + 1
            elif kind == "remove":
                assert gone == {spec.ref_obj} and not new
            elif kind == "move":
                (o,), (n,) = gone, new
                assert o.attrs() == n.attrs() and o.cell != n.cell
            elif kind == "cardinality":
                (n,) = new
                assert not gone and n.attrs() == spec.ref_obj.attrs()
                assert sum(x.attrs() == n.attrs() for x in t.objects) == 2
            elif kind == "background":
                assert t.objects == s.objects and t.background != s.background
    assert set(seen) == set(EDIT_KINDS)


def test_edit_not_applicable_returns_none():
    rng = random.Random(0)
    one = Scene((Obj("circle", "red", "small", 1, 1),), "white")
    assert apply_edit(one, "remove", rng) is None
    full = Scene(tuple(Obj("square", "blue", "large", r, c) for r in range(3) for c in range(3)),
                 "white")
    for kind in ("add", "move", "cardinality"):
        assert apply_edit(full, kind, rng) is None
    with pytest.raises(ValueError):
        apply_edit(one, "explode", rng)


def test_phrasing_sets_disjoint_nonempty_and_name_the_object():
    for table, kinds in ((TEMPLATES, EDIT_KINDS), (UNDERSPECIFIED_TEMPLATES, UNDERSPECIFIED_KINDS)):
        for kind in kinds:
            tr, te = set(table["train"][kind]), set(table["test"][kind])
            assert tr and te and not tr & te, kind
    rng = random.Random(6)
    for s in _scenes(7, 100, min_objects=2):
        for kind in EDIT_KINDS:
            res = apply_edit(s, kind, rng)
            if res is None:
                continue
            spec = res[1]
            for ph in PHRASINGS:
                text = phrase_edit(spec, rng, ph)
                assert "{" not in text and text == text.lower() and not re.search(r"\d", text)
                if spec.ref_obj is not None:
                    assert spec.ref_obj.shape in text
                if kind in ("color", "shape", "background"):
                    assert spec.new in text


def test_underspecified_edits_admit_several_targets():
    rng = random.Random(8)
    counts = Counter()
    for s in _scenes(9, 200, min_objects=2):
        for kind in UNDERSPECIFIED_KINDS:
            res = underspecified_edit(s, kind, rng)
            if res is None:
                continue
            t, spec = res
            counts[kind] += 1
            assert spec.underspecified and satisfies(t, spec.constraints)
            assert not satisfies(s, spec.constraints)
            assert "{" not in phrase_edit(spec, rng, "test")
    assert set(counts) == set(UNDERSPECIFIED_KINDS)


# -- held-out splits -----------------------------------------------------------------------------

def test_heldout_combos_never_in_training(small_pairs):
    held = set(SMALL.heldout_combos)
    assert len(held) >= 5
    assert not any(p.scene.combos() & held for p in small_pairs)
    ids = {p.id: p.scene for p in small_pairs}
    for t in generate_triplets(SMALL, "hq", n=400, pairs=small_pairs):
        assert t.correct and not (t.reference.scene.combos() | t.target_scene.combos()) & held
        assert t.reference.id in ids and t.reference.scene == ids[t.reference.id]


def test_benchmark_heldout_and_disjoint(small_bench, small_pairs):
    held = set(SMALL.heldout_combos)
    seen = training_keys(SMALL, small_pairs)
    cirr_scenes = [m for s in small_bench.cirr_sets for m in s.members]
    assert not {s.key() for s in cirr_scenes} & seen
    assert not {s.key() for s in small_bench.circo_scenes} & seen
    assert any(q.target.combos() & held for q in small_bench.cirr_queries)
    assert any(q.gts[0].combos() & held for q in small_bench.circo_queries)
    assert all(q.heldout == bool(q.target.combos() & held) for q in small_bench.cirr_queries)


def test_cirr_sets(small_bench):
    sets = {s.id: s for s in small_bench.cirr_sets}
    assert len(sets) == SMALL.n_cirr_sets
    assert len(small_bench.cirr_queries) == SMALL.n_cirr_sets * SMALL.queries_per_set
    for q in small_bench.cirr_queries:
        members = sets[q.set_id].members
        assert len(members) == 6 and len({m.key() for m in members}) == 6
        assert q.reference in members and q.target in members and q.reference != q.target
        # exactly one member is the target of the (fully specified) edit
        assert sum(satisfies(m, q.spec.constraints) for m in members) == 1


def test_circo_ground_truths_complete(small_bench):
    gallery = small_bench.circo_scenes
    assert len(small_bench.circo_queries) >= SMALL.n_circo_queries - 2
    multi = 0
    for q in small_bench.circo_queries:
        brute = {s.key() for s in gallery if satisfies(s, q.spec.constraints)}
        assert brute == {g.key() for g in q.gts}
        assert q.reference.key() not in brute
        assert 1 <= len(q.gts) <= SMALL.max_circo_gts
        multi += len(q.gts) > 1
    assert multi > len(small_bench.circo_queries) // 3


def _check_lq(cfg, n):
    lq = generate_triplets(cfg, "lq", n=n)
    rate = sum(t.correct for t in lq) / len(lq)
    assert 0.0 < rate < 1.0
    assert all(t.target_id.startswith("world-train-") and t.target_id != t.reference.id for t in lq)
    hq = generate_triplets(cfg, "hq", n=50, pairs=generate_pairs(cfg, n=cfg.n_pairs))
    assert [t.text for t in hq] == [t.text for t in lq[:50]]  # same edits, different targets


def test_lq_correct_rate_between_zero_and_one_small_pool():
    _check_lq(WorldConfig(n_pairs=5000), n=1000)  # a smaller mining pool keeps the default suite fast


@pytest.mark.slow
def test_lq_correct_rate_between_zero_and_one():
    _check_lq(WorldConfig(), n=1000)  # default config; a 1,000-triplet sample of the default LQ set


# -- files ---------------------------------------------------------------------------------------

def test_written_files_have_official_format(small_bench, tmp_path):
    man = write_benchmark(small_bench, tmp_path)
    assert man["world_version"] == WORLD_VERSION
    caps = json.loads((tmp_path / "cirr/captions/cap.rc2.val.json").read_text())
    split = json.loads((tmp_path / "cirr/image_splits/split.rc2.val.json").read_text())
    circo = json.loads((tmp_path / "circo/annotations/val.json").read_text())
    world = json.loads((tmp_path / "world.json").read_text())
    assert world["world_version"] == WORLD_VERSION and world["seed"] == SMALL.seed
    c0 = caps[0]
    assert set(c0) == {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"}
    assert set(c0["img_set"]) == {"id", "members", "reference_rank", "target_rank"}
    for c in caps:
        m = c["img_set"]["members"]
        assert c["reference"] in m and c["target_hard"] in m and len(set(m)) == 6
        assert m[c["img_set"]["reference_rank"]] == c["reference"]
        assert all(n in split for n in m) and isinstance(c["pairid"], int)
        assert str(c["pairid"]) in world["cirr"]
    name = caps[0]["reference"]
    assert split[name] == f"./dev/{name}.png" and (tmp_path / "cirr/dev" / f"{name}.png").exists()
    assert set(circo[0]) == {"id", "reference_img_id", "target_img_id", "relative_caption",
                             "shared_concept", "gt_img_ids", "semantic_aspects"}
    for c in circo:
        assert c["target_img_id"] == c["gt_img_ids"][0]
        assert c["reference_img_id"] not in c["gt_img_ids"]
        assert (tmp_path / "circo/unlabeled2017" / f"{c['reference_img_id']:012d}.png").exists()
        assert world["circo"][str(c["id"])]["kind"] in c["semantic_aspects"]
    # cached: a second write does not touch the files
    mtime = (tmp_path / "world.json").stat().st_mtime_ns
    assert write_benchmark(small_bench, tmp_path)["counts"] == man["counts"]
    assert (tmp_path / "world.json").stat().st_mtime_ns == mtime


def test_jsonl_roundtrip(small_pairs, tmp_path):
    write_pairs_jsonl(small_pairs[:20], tmp_path / "p.jsonl", SMALL)
    assert read_pairs_jsonl(tmp_path / "p.jsonl") == small_pairs[:20]
    trips = generate_triplets(SMALL, "hq", n=20, pairs=small_pairs)
    write_triplets_jsonl(trips, tmp_path / "t.jsonl", SMALL)
    back = read_triplets_jsonl(tmp_path / "t.jsonl")
    assert [(t.id, t.text, t.target_scene, t.spec.kind) for t in back] == \
        [(t.id, t.text, t.target_scene, t.spec.kind) for t in trips]

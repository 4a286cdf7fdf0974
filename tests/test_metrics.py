"""Hand-computed cases for zscir.eval.metrics, plus cross-checks against the official formulas."""

from __future__ import annotations

import numpy as np
import pytest

from zscir.eval.metrics import (
    average_precision_at_k,
    map_at_k,
    rank_subset,
    recall_at_k,
    recall_subset_at_k,
    remove_reference,
    subset_ranking,
)


# ---------------------------------------------------------------- recall
def test_recall_at_k_hand_computed():
    ranked = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["a", "c", "b"]]
    targets = ["a", "a", "a", "b"]
    assert recall_at_k(ranked, targets, 1) == pytest.approx(25.0)  # only query 0
    assert recall_at_k(ranked, targets, 2) == pytest.approx(50.0)  # + query 1
    assert recall_at_k(ranked, targets, 3) == pytest.approx(100.0)
    assert recall_at_k(ranked, targets, 50) == pytest.approx(100.0)  # K beyond the list length


def test_recall_at_k_accepts_2d_arrays_and_int_ids():
    ranked = np.array([[3, 1, 2], [2, 3, 1]])
    assert recall_at_k(ranked, [1, 2], 1) == pytest.approx(50.0)
    assert recall_at_k(ranked, np.array([1, 2]), 2) == pytest.approx(100.0)


def test_recall_rejects_bad_input():
    with pytest.raises(ValueError):
        recall_at_k([["a"]], ["a", "b"], 1)
    with pytest.raises(ValueError):
        recall_at_k([["a"]], ["a"], 0)
    with pytest.raises(ValueError):
        recall_at_k([], [], 1)


# ---------------------------------------------------------------- CIRR reference removal / subsets
def test_remove_reference():
    ranked = [["r", "a", "b"], ["a", "r2", "b"], ["a", "b", "c"]]
    assert remove_reference(ranked, ["r", "r2", "zz"]) == [["a", "b"], ["a", "b"], ["a", "b", "c"]]
    # the input is not modified
    assert ranked[0] == ["r", "a", "b"]


def test_reference_removal_changes_recall():
    ranked = [["ref", "t", "x"]]
    assert recall_at_k(ranked, ["t"], 1) == 0.0
    assert recall_at_k(remove_reference(ranked, ["ref"]), ["t"], 1) == 100.0


def test_subset_ranking_keeps_full_gallery_order():
    row = ["g1", "m3", "ref", "g2", "m1", "m5", "m2", "m4"]
    members = ["ref", "m1", "m2", "m3", "m4", "m5"]
    assert subset_ranking(row, members, "ref") == ["m3", "m1", "m5", "m2", "m4"]


def test_recall_subset_hand_computed():
    members = ["ref", "m1", "m2", "m3", "m4", "m5"]
    ranked = [
        ["g", "ref", "m2", "m1", "m3", "m4", "m5"],  # subset order m2 m1 m3 ..., target m1 at subset rank 2
        ["m5", "m4", "m3", "m2", "m1", "ref", "g"],  # target m5 at subset rank 1
        ["m1", "m2", "m3", "m4", "m5", "ref"],  # target m4 at subset rank 4
    ]
    targets = ["m1", "m5", "m4"]
    subsets = [members] * 3
    refs = ["ref"] * 3
    assert recall_subset_at_k(ranked, targets, subsets, refs, 1) == pytest.approx(100 / 3)
    assert recall_subset_at_k(ranked, targets, subsets, refs, 2) == pytest.approx(200 / 3)
    assert recall_subset_at_k(ranked, targets, subsets, refs, 3) == pytest.approx(200 / 3)
    assert recall_subset_at_k(ranked, targets, subsets, refs, 4) == pytest.approx(100.0)
    # already reference-free rankings give the same numbers
    assert recall_subset_at_k(remove_reference(ranked, refs), targets, subsets, refs, 2) == pytest.approx(200 / 3)


def test_recall_subset_rejects_truncated_rankings():
    with pytest.raises(ValueError, match="full-gallery"):
        recall_subset_at_k([["g1", "g2"]], ["m1"], [["ref", "m1", "m2"]], ["ref"], 1)
    with pytest.raises(ValueError, match="not a member"):
        recall_subset_at_k([["m1"]], ["zz"], [["ref", "m1"]], ["ref"], 1)


def test_rank_subset_orders_by_score_ties_by_index():
    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.5, 0.3])
    assert rank_subset(scores, [1, 2, 4, 5]).tolist() == [2, 4, 5, 1]
    assert rank_subset(scores, [4, 2]).tolist() == [2, 4]  # tie 0.5: lower gallery index first
    assert rank_subset(scores, []).tolist() == []


def _official_cirr(scores: np.ndarray, names: np.ndarray, refs, targets, members):
    """SEARLE validate.py `cirr_compute_val_metrics`, transcribed to numpy."""
    sorted_indices = np.argsort(1 - scores, axis=-1, kind="stable")
    sorted_names = names[sorted_indices]
    mask = sorted_names != np.repeat(np.array(refs), len(names)).reshape(len(targets), -1)
    sorted_names = sorted_names[mask].reshape(sorted_names.shape[0], sorted_names.shape[1] - 1)
    labels = sorted_names == np.repeat(np.array(targets), len(names) - 1).reshape(len(targets), -1)
    group_members = np.array(members)
    group_mask = (sorted_names[..., None] == group_members[:, None, :]).sum(-1).astype(bool)
    group_labels = labels[group_mask].reshape(labels.shape[0], -1)
    out = {f"r{k}": labels[:, :k].sum() / len(labels) * 100 for k in (1, 5, 10)}
    out.update({f"s{k}": group_labels[:, :k].sum() / len(labels) * 100 for k in (1, 2, 3)})
    return out


def test_cirr_metrics_match_official_transcription():
    rng = np.random.default_rng(0)
    names = np.array([f"img{i}" for i in range(40)])
    nq = 25
    scores = rng.normal(size=(nq, len(names)))
    refs, targets, members = [], [], []
    for _ in range(nq):
        m = rng.choice(len(names), size=6, replace=False)
        members.append(names[m].tolist())
        refs.append(names[m[0]])
        targets.append(names[m[rng.integers(1, 6)]])
    official = _official_cirr(scores, names, refs, targets, members)
    ranked = names[np.argsort(-scores, axis=-1, kind="stable")].tolist()
    ranked = remove_reference(ranked, refs)
    for k in (1, 5, 10):
        assert recall_at_k(ranked, targets, k) == pytest.approx(official[f"r{k}"])
    for k in (1, 2, 3):
        assert recall_subset_at_k(ranked, targets, members, refs, k) == pytest.approx(official[f"s{k}"])
    # the score-based subset helper gives identical subset rankings
    index = {n: i for i, n in enumerate(names)}
    for q in range(nq):
        member_idx = [index[m] for m in members[q] if m != refs[q]]
        via_scores = names[rank_subset(scores[q], member_idx)].tolist()
        assert via_scores == subset_ranking(ranked[q], members[q], refs[q])


# ---------------------------------------------------------------- CIRCO mAP
def test_average_precision_hand_computed():
    # GT = {a, b}; ranking a x b: P@1 = 1, P@3 = 2/3 -> AP@3 = (1 + 2/3) / 2
    assert average_precision_at_k(["a", "x", "b"], ["a", "b"], 3) == pytest.approx((1 + 2 / 3) / 2)
    # K = 1: only position 1 counts, normaliser min(2, 1) = 1
    assert average_precision_at_k(["a", "x", "b"], ["a", "b"], 1) == pytest.approx(1.0)
    assert average_precision_at_k(["x", "a", "b"], ["a", "b"], 1) == pytest.approx(0.0)
    # K = 2 with GT beyond K: (1/2) / min(2, 2)
    assert average_precision_at_k(["x", "a", "b"], ["a", "b"], 2) == pytest.approx(0.25)
    # more GT than K: normaliser is K, perfect top-K = 1
    assert average_precision_at_k([1, 2, 3], [1, 2, 3, 4, 5], 3) == pytest.approx(1.0)
    # a GT never retrieved still counts in the denominator
    assert average_precision_at_k([1, 9, 9], [1, 2], 3) == pytest.approx(0.5)


def test_average_precision_deduplicates_gt():
    assert average_precision_at_k(["a", "x"], ["a", "a"], 2) == pytest.approx(1.0)


def test_map_at_k_hand_computed():
    ranked = [["a", "x", "b"], ["y", "c", "z"]]
    gts = [["a", "b"], ["c"]]
    # AP@3: (1 + 2/3)/2 = 0.8333 and 0.5 -> mean 0.6667
    assert map_at_k(ranked, gts, 3) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)
    assert map_at_k(ranked, gts, 1) == pytest.approx(50.0)


def _official_circo_ap(predictions, gt_img_ids, rank):
    """CIRCO src/evaluation.py `compute_metrics`, the AP line, verbatim."""
    predictions = np.array(predictions, dtype=int)
    ap_labels = np.isin(predictions, gt_img_ids)
    precisions = np.cumsum(ap_labels, axis=0) * ap_labels
    precisions = precisions / np.arange(1, ap_labels.shape[0] + 1)
    return float(np.sum(precisions[:rank]) / min(len(gt_img_ids), rank))


def test_map_matches_official_circo_code():
    rng = np.random.default_rng(1)
    ranked, gts = [], []
    for _ in range(30):
        ranked.append(rng.permutation(200)[:50].tolist())
        gts.append(rng.choice(80, size=int(rng.integers(1, 15)), replace=False).tolist())
    for k in (5, 10, 25, 50):
        official = 100 * np.mean([_official_circo_ap(r, g, k) for r, g in zip(ranked, gts)])
        assert map_at_k(ranked, gts, k) == pytest.approx(official)

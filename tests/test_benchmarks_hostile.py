"""Bad benchmark data gives one clear `BenchmarkDataError`, never a traceback, a hang or a wrong number.

Regression tests of issue 14 §2 (FIFO named like an image), §4 (data errors), §5 (duplicate query ids,
missing CIRCO ground truth) and §6 (Recall_subset order = the order of the full ranking R@K uses).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_data import SET_SIZE, code_of, make_circo, make_cirr, make_fiq, png, write_json
from zscir.eval.benchmarks import BenchmarkDataError, load_circo, load_cirr, load_fashioniq, run_benchmark
from zscir.eval.metrics import rank_subset, subset_ranking
from zscir.methods.base import Composer


class TableComposer(Composer):
    """Gallery feature = row ``code_of(image)`` of ``gallery``; query feature = row ``int(text)`` of ``queries``."""

    name = "table"

    def __init__(self, gallery: torch.Tensor, queries: torch.Tensor):
        self.g, self.q = gallery, queries

    def encode_gallery(self, images):
        return self.g[[code_of(im) for im in images]]

    def encode_queries(self, reference_images, texts):
        return self.q[[int(t) for t in texts]]


def _random_composer(n_codes: int = 4000, n_queries: int = 64, dim: int = 16) -> TableComposer:
    gen = torch.Generator().manual_seed(0)
    return TableComposer(torch.randn(n_codes, dim, generator=gen), torch.randn(n_queries, dim, generator=gen))


def _run(name: str, root: Path, split: str = "val", composer: Composer | None = None, **kw):
    return run_benchmark(name, root, split, composer or _random_composer(), progress=False, use_cache=False, **kw)


# ------------------------------------------------------------------------------- §2: one file check
def _bounded(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not finish in time."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return t.is_alive(), out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_like_an_image_is_an_error_not_a_hang(tmp_path):
    root = make_cirr(tmp_path / "cirr")
    fifo = root / "dev" / "val-1-img3.png"
    fifo.unlink()
    os.mkfifo(fifo)
    hung, out = _bounded(lambda: _run("cirr", root))
    if hung:  # unblock the reader so the thread can end, then fail
        with open(fifo, "wb"):
            pass
    assert not hung, "evaluation hung on a FIFO"
    assert isinstance(out.get("error"), BenchmarkDataError), out
    assert "val-1-img3.png" in str(out["error"]) and "regular file" in str(out["error"])


def test_image_over_the_bomb_limit_is_a_data_error(tmp_path, monkeypatch):
    from PIL import Image

    root = make_cirr(tmp_path / "cirr")
    (root / "dev" / "val-0-img2.png").write_bytes(png(2, size=(300, 300)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300x300 > 2 x limit: DecompressionBombError
    with pytest.raises(BenchmarkDataError, match="val-0-img2.png.*decompression bomb"):
        _run("cirr", root)


# ------------------------------------------------------------------------------- §4: data errors
def _edit_cirr(root: Path, fn) -> Path:
    p = root / "captions" / "cap.rc2.val.json"
    data = json.loads(p.read_text())
    fn(data)
    write_json(p, data)
    return root


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[0].update(reference=["a", "b"]), "reference must be an image name"),
    (lambda d: d[0].update(reference={"x": 1}), "reference must be an image name"),
    (lambda d: d[0].update(pairid=float("inf")), "pairid inf is not an integer id"),
    (lambda d: d[0].update(pairid=1.5), "pairid 1.5 is not an integer id"),
    (lambda d: d[0].update(pairid=[1]), "pairid \\[1\\] is not an integer id"),
    (lambda d: d[0].update(target_hard=7), "target_hard"),
    (lambda d: d[1].update(pairid=d[0]["pairid"]), "pairids occur more than once \\(0\\)"),
])
def test_cirr_data_errors(tmp_path, mutate, message):
    root = _edit_cirr(make_cirr(tmp_path / "cirr"), mutate)
    with pytest.raises(BenchmarkDataError, match=message):
        load_cirr(root, "val")


def test_ids_like_1e400_and_deep_nesting(tmp_path):
    root = make_cirr(tmp_path / "cirr")
    p = root / "captions" / "cap.rc2.val.json"
    p.write_text(p.read_text().replace('"pairid": 0,', '"pairid": 1e400,', 1))
    with pytest.raises(BenchmarkDataError, match="pairid inf"):
        load_cirr(root, "val")
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BenchmarkDataError, match="nested too deeply"):
        load_cirr(root, "val")
    circo = make_circo(tmp_path / "circo")
    a = circo / "annotations" / "val.json"
    a.write_text(a.read_text().replace('"reference_img_id": 1,', '"reference_img_id": 1e400,', 1))
    with pytest.raises(BenchmarkDataError, match="reference_img_id inf"):
        load_circo(circo, "val")


def test_circo_unhashable_and_duplicate_ids(tmp_path):
    root = make_circo(tmp_path / "circo")
    a = root / "annotations" / "val.json"
    data = json.loads(a.read_text())
    data[0]["reference_img_id"] = [1]
    write_json(a, data)
    with pytest.raises(BenchmarkDataError, match="reference_img_id \\[1\\]"):
        load_circo(root, "val")
    data[0]["reference_img_id"] = 1
    data[2]["id"] = data[1]["id"]
    write_json(a, data)
    with pytest.raises(BenchmarkDataError, match="query ids occur more than once \\(1\\)"):
        load_circo(root, "val")


@pytest.mark.parametrize("captions", [["only one"], ["one", "two", "three"], []])
def test_fashioniq_needs_exactly_two_captions(tmp_path, captions):
    root = make_fiq(tmp_path / "fiq")
    p = root / "captions" / "cap.shirt.val.json"
    data = json.loads(p.read_text())
    data[1]["captions"] = captions
    write_json(p, data)
    with pytest.raises(BenchmarkDataError, match=f"cap.shirt.val.json: entry 1: {len(captions)} captions"):
        load_fashioniq(root, "val")


# ------------------------------------------------------------------------------- §5: silently wrong results
def test_missing_circo_ground_truth_image_is_reported(tmp_path):
    root = make_circo(tmp_path / "circo")
    data = json.loads((root / "annotations" / "val.json").read_text())
    gone = data[2]["gt_img_ids"][1]
    (root / "unlabeled2017" / f"{gone:012d}.png").unlink()
    with pytest.raises(BenchmarkDataError, match=f"{gone:012d}.jpg: 1 ground-truth image.*{gone} \\(query 2\\)"):
        load_circo(root, "val")


def test_duplicate_cirr_pairid_is_rejected_before_a_submission(tmp_path):
    from zscir.eval.benchmarks import write_submission

    root = make_cirr(tmp_path / "cirr")
    p = root / "captions" / "cap.rc2.test1.json"
    data = json.loads(p.read_text())
    data[3]["pairid"] = data[2]["pairid"]
    write_json(p, data)
    with pytest.raises(BenchmarkDataError, match="pairids occur more than once"):
        write_submission("cirr", root, "test1", _random_composer(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- §6: Recall_subset order
def test_recall_subset_order_is_the_full_ranking_order_near_duplicates(tmp_path):
    """Near-duplicate members (1e-6 apart): the subset order must be the R@K ranking's order, as the
    official evaluator's mask gives; re-scoring members with a matrix-vector product reorders many."""
    n_sets, per_set = 8, 8
    root = make_cirr(tmp_path / "cirr", n_sets=n_sets, queries_per_set=per_set)  # 48 images: top-50 = all
    rng = np.random.default_rng(0)
    dim = 64
    base = rng.standard_normal((n_sets, dim)).astype(np.float32)
    gal = np.zeros((2000, dim), np.float32)
    for s in range(n_sets):
        for j in range(SET_SIZE):
            v = base[s] + 1e-6 * rng.standard_normal(dim).astype(np.float32)
            gal[s * SET_SIZE + j] = v / np.linalg.norm(v)
    qs = np.repeat(base, per_set, axis=0) + 0.3 * rng.standard_normal((n_sets * per_set, dim)).astype(np.float32)
    run = _run("cirr", root, composer=TableComposer(torch.from_numpy(gal), torch.from_numpy(qs)))
    data = load_cirr(root, "val")
    differ = 0
    for q in data.queries:
        full = run.rankings["recall"][str(q.pairid)]
        assert len(full) == n_sets * SET_SIZE - 1  # every image but the reference
        expected = subset_ranking(full, q.members, q.reference)
        differ += run.rankings["recall_subset"][str(q.pairid)] != expected
    assert differ == 0, f"{differ} of {len(data.queries)} subset rankings differ from the full ranking's order"


def test_rank_subset_equals_masking_the_full_ranking_for_the_same_scores():
    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal(200), 1)  # many exact ties
    scores[[3, 50]] = np.nan
    full = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    members = np.append(rng.choice(np.setdiff1d(np.arange(200), [3, 50]), 12, replace=False), [3, 50])
    expected = [int(i) for i in full if i in set(members.tolist())]
    assert rank_subset(scores, members).tolist() == expected

"""Data-root layouts, clear errors, the feature cache and targetpad."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from conftest_benchmarks import (  # noqa: F401  (fixtures)
    OracleComposer,
    ReferenceComposer,
    circo_root,
    cirr_root,
    make_table,
    shared_benchmarks,
)
from zscir.eval.benchmarks import (
    BenchmarkDataError,
    FeatureCache,
    evaluate_benchmark,
    load_circo,
    load_cirr,
    load_fashioniq,
    run_benchmark,
    targetpad_transform,
)

FAST = {"progress": False, "batch_size": 512}


# ------------------------------------------------------------------------------------------------ targetpad
def test_targetpad_matches_searle_arithmetic():
    wide = Image.new("RGB", (100, 40), (255, 0, 0))
    out = targetpad_transform(wide, 1.25)
    # max/ratio = 80: no horizontal padding, int((80 - 40) / 2) = 20 rows top and bottom
    assert out.size == (100, 80)
    assert out.getpixel((50, 0)) == (0, 0, 0) and out.getpixel((50, 40)) == (255, 0, 0)
    tall = Image.new("L", (30, 90))
    assert targetpad_transform(tall, 1.25).size == (30 + 2 * 21, 90)  # int((72 - 30) / 2) = 21
    assert targetpad_transform(tall, 1.25).mode == "RGB"
    assert targetpad_transform(Image.new("RGB", (40, 45)), 1.25).size == (40, 45)  # ratio 1.125 < 1.25
    assert targetpad_transform(Image.new("RGB", (50, 100)), 1.0).size == (100, 100)  # ratio 1 -> square


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_root_names_expected_files(tmp_path):
    with pytest.raises(BenchmarkDataError, match=r"captions/cap.rc2.val.json"):
        load_cirr(tmp_path, "val")
    with pytest.raises(BenchmarkDataError, match="does not exist"):
        load_fashioniq(tmp_path / "nope", "val")
    with pytest.raises(BenchmarkDataError, match=r"annotations/val.json"):
        load_circo(tmp_path, "val")


def test_malformed_json_names_the_file(tmp_path):
    shared = shared_benchmarks("cirr")
    (tmp_path / "captions").mkdir()
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "captions" / "cap.rc2.val.json").write_text('[{"pairid": 1, ')
    shutil.copy(shared / "image_splits" / "split.rc2.val.json", tmp_path / "image_splits")
    with pytest.raises(BenchmarkDataError) as e:
        load_cirr(tmp_path, "val")
    assert "cap.rc2.val.json" in str(e.value) and "malformed JSON" in str(e.value)
    (tmp_path / "captions" / "cap.rc2.val.json").write_text('[{"pairid": 1}]')
    with pytest.raises(BenchmarkDataError, match="lacks 'reference'"):
        load_cirr(tmp_path, "val")


def test_missing_images_one_clear_error(cirr_root, tmp_path):
    for sub in ("captions", "image_splits"):
        (tmp_path / sub).symlink_to(cirr_root.root / sub)
    (tmp_path / "dev").mkdir()
    some = sorted((cirr_root.root / "dev").iterdir())[:10]
    for p in some:
        shutil.copy(p, tmp_path / "dev")
    with pytest.raises(BenchmarkDataError) as e:
        evaluate_benchmark("cirr", tmp_path, "val", ReferenceComposer(cirr_root, 16), cache_dir=tmp_path / "c", **FAST)
    msg = str(e.value)
    assert "2287 of 2297 image files are missing" in msg and str(tmp_path / "dev") in msg


def test_nested_cirr_layout(cirr_root, tmp_path):
    """<root>/cirr/{captions,image_splits} with images under <root>/dev (CIRR's own repository layout)."""
    (tmp_path / "cirr").mkdir()
    for sub in ("captions", "image_splits"):
        (tmp_path / "cirr" / sub).symlink_to(cirr_root.root / sub)
    (tmp_path / "dev").symlink_to(cirr_root.root / "dev")
    data = load_cirr(tmp_path, "val")
    assert data.annotation_dir == tmp_path / "cirr" and data.gallery[0].path.parent == tmp_path / "dev"
    oracle = OracleComposer(cirr_root, make_table([(q.reference, q.caption, [q.target]) for q in data.queries]), dim=32)
    res = evaluate_benchmark("cirr", tmp_path, "val", oracle, limit=10, cache_dir=tmp_path / "c", **FAST)
    assert res["metrics"]["R@1"] == pytest.approx(100.0)


def test_circo_gallery_from_coco_info(circo_root, tmp_path):
    """With image_info_unlabeled2017.json the gallery is its list (JPEG names resolved to PNG copies)."""
    (tmp_path / "annotations").symlink_to(circo_root.root / "annotations")
    coco = tmp_path / "COCO2017_unlabeled"
    (coco / "annotations").mkdir(parents=True)
    (coco / "unlabeled2017").symlink_to(circo_root.root / "unlabeled2017")
    images = [{"id": int(i), "file_name": f"{int(i):012d}.jpg"} for i in circo_root.names]
    (coco / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps({"images": images}))
    data = load_circo(tmp_path, "val")
    assert data.gallery_source == "coco_info" and len(data.gallery) == len(images)
    assert all(im.path.is_file() for im in data.gallery)
    assert {im.path.suffix for im in data.gallery} == {".png", ".jpg"}


def test_circo_missing_reference_image(circo_root, tmp_path):
    (tmp_path / "annotations").symlink_to(circo_root.root / "annotations")
    (tmp_path / "unlabeled2017").mkdir()
    shutil.copy(next((circo_root.root / "unlabeled2017").iterdir()), tmp_path / "unlabeled2017")
    with pytest.raises(BenchmarkDataError, match="reference image of query"):
        load_circo(tmp_path, "val")


# ------------------------------------------------------------------------------------------------ cache
def test_gallery_features_shared_between_methods(cirr_root, tmp_path):
    cache_dir = tmp_path / "cache"
    first = ReferenceComposer(cirr_root, 16)
    r1 = run_benchmark("cirr", cirr_root.root, "val", first, limit=30, cache_dir=cache_dir, **FAST)
    assert first.gallery_calls > 0 and r1.result["features"]["gallery_cache_hit"] is False
    entries = FeatureCache(cache_dir).entries()
    assert len(entries) == 1
    manifest = entries[0]
    assert manifest["key"]["encoder"] == first.gallery_cache_key()
    assert manifest["key"]["preprocessing"] == "default" and manifest["shape"][0] == r1.result["n_gallery"]
    assert manifest["benchmark"] == "cirr" and manifest["split"] == "val"

    data = load_cirr(cirr_root.root, "val")
    second = OracleComposer(cirr_root, make_table([(q.reference, q.caption, [q.target]) for q in data.queries]), dim=16)
    r2 = run_benchmark("cirr", cirr_root.root, "val", second, limit=30, cache_dir=cache_dir, **FAST)
    assert second.gallery_calls == 0 and r2.result["features"]["gallery_cache_hit"] is True
    assert r2.result["metrics"]["R@1"] == pytest.approx(100.0)

    third = ReferenceComposer(cirr_root, 16)  # another preprocessing is another cache entry
    r3 = run_benchmark("cirr", cirr_root.root, "val", third, limit=30, cache_dir=cache_dir,
                       preprocessing="targetpad", **FAST)
    assert third.gallery_calls > 0 and r3.result["features"]["gallery_cache_hit"] is False
    assert r3.result["protocol"]["preprocessing_key"] == "targetpad(ratio=1.25)"
    assert len(FeatureCache(cache_dir).entries()) == 2


def test_default_cache_key_is_not_written(cirr_root, tmp_path):
    from zscir.methods.base import Composer

    class Uncached(ReferenceComposer):
        gallery_cache_key = Composer.gallery_cache_key  # the default key contains id(self)

    run_benchmark("cirr", cirr_root.root, "val", Uncached(cirr_root, 16), limit=5, cache_dir=tmp_path, **FAST)
    assert FeatureCache(tmp_path).entries() == []

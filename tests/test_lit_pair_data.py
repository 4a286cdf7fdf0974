"""`zscir train lit --data SPEC` reads real pair data through zscir.data (regression: it used to hand the
trainer `PairRecord`s where (image, caption) tuples were expected)."""

from __future__ import annotations

import csv

import pytest
from PIL import Image


def test_pair_data_from_a_manifest(tmp_path):
    from zscir.train.lit import pair_data

    rows = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (20, 20), colour).save(tmp_path / f"{i}.png")
        rows.append({"filepath": f"{i}.png", "title": ["a red square", "a blue square"][i]})
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "title"], delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    pairs = list(pair_data(str(tmp_path / "pairs.csv")))
    assert [c for _, c in pairs] == ["a red square", "a blue square"]
    assert all(isinstance(im, Image.Image) for im, _ in pairs)
    assert pairs[1][0].convert("RGB").getpixel((3, 3)) == (0, 0, 255)


def test_pair_data_bad_spec_is_a_value_error(tmp_path):
    from zscir.train.lit import pair_data

    with pytest.raises(ValueError):
        list(pair_data(str(tmp_path / "missing.csv")))

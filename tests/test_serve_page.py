"""The web page arrives with its first screen filled in, and its tiles name their files.

Before: a plain headless screenshot caught an empty gallery ("loading…"), since only JavaScript filled it,
and result tiles showed only rank and score.
"""

from __future__ import annotations

import re

import pytest
from PIL import Image

from zscir.serve.page import file_name, render_page, tile_html


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_backbone):
    from fastapi.testclient import TestClient

    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.methods import create_composer
    from zscir.serve import create_app

    root = tmp_path_factory.mktemp("page")
    photos = root / "photos"
    (photos / "a b").mkdir(parents=True)
    for i, name in enumerate(["red.png", "a b/<blue>.png", "green.png"]):
        Image.new("RGB", (40, 40), ((80 * i) % 256, 200 - 60 * i, 40 * i)).save(photos / name)
    composer = create_composer("sum", backbone=tiny_backbone)
    build_index(photos, root / "idx", [composer], model="tiny-clip-test", config=IndexConfig(progress=False))
    return TestClient(create_app(Retriever.load([root / "idx"]))), photos


def test_first_gallery_page_is_in_the_html(client):
    c, photos = client
    html = c.get("/").text
    gallery = re.search(r'<div id="gallery"[^>]*data-rendered="3"[^>]*>(.*?)</div>', html, flags=re.S)
    assert gallery, html
    assert gallery.group(1).count('<figure class="thumb"') == 3
    assert "3 images · model tiny-clip-test" in html and "loading…" not in html
    assert "&lt;blue&gt;.png" in html and "<blue>" not in html  # file names are escaped
    assert f'title="{photos / "red.png"}"' in html  # the full path on hover


def test_result_tiles_carry_the_path(client):
    c, photos = client
    r = c.post("/search", data={"text": "greener", "k": "3", "item_id": "red.png"})
    assert r.status_code == 200, r.text
    assert {h["path"] for h in r.json()["results"]} <= {str(p) for p in photos.rglob("*.png")}
    items = c.get("/items").json()["items"]
    assert all(it["path"].startswith(str(photos)) for it in items)
    js = c.get("/static/app.js").text
    assert "fileName(r.path, r.id)" in js  # the result caption shows the file name, the title the path


def test_render_helpers():
    assert file_name("/x/y/z.jpg", "id") == "z.jpg" and file_name(None, "id") == "id"
    tile = tile_html({"id": "a/b.jpg", "path": "/p/a/b.jpg"}, "/items/a%2Fb.jpg/thumbnail")
    assert 'data-id="a/b.jpg"' in tile and ">b.jpg</figcaption>" in tile and 'title="/p/a/b.jpg"' in tile
    page = render_page('<p id="summary">loading…</p><div id="gallery" class="grid"></div>', "s", [], [], 0)
    assert 'data-rendered="0"' in page and '<p id="summary">s</p>' in page

"""Server regressions of issue 14 §2-3: methods offered only when they can run, a clear 4xx otherwise;
ids with a newline get their thumbnail; a declared but never sent body times out; decodes are bounded.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from test_indexer import MODEL, make_photos

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

NEWLINE_ID = "line\nbreak.png"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A tiny-clip-test index (24-d embeddings: the shipped Fusion-Diff prior is 128-d) with a newline id."""
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.methods import create_composer

    tmp = tmp_path_factory.mktemp("hardening")
    photos, idx = tmp / "photos", tmp / "idx"
    ids = make_photos(photos, n=6)
    Image.new("RGB", (30, 20), (5, 200, 5)).save(photos / NEWLINE_ID, "PNG")
    build_index(photos, idx, create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=8, progress=False))
    return photos, idx, Retriever.load(idx), ids


def _client(retriever, **limits):
    from zscir.serve import ServeConfig, ServeLimits, create_app

    return TestClient(create_app(retriever, ServeConfig(limits=ServeLimits(**limits))))


def _png(size=(40, 40), color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_methods_offered_only_if_they_run_on_the_backbone(indexed):
    _, _, retriever, ids = indexed
    client = _client(retriever)
    methods = {m["name"]: m for m in client.get("/methods").json()["methods"]}
    for name in ("fusiondiff", "fusiondiff-image"):
        assert methods[name]["available"] is False
        assert "embed_dim=128" in methods[name]["reason"] and "has 24" in methods[name]["reason"]
    assert methods["sum"]["available"] is True
    for name, m in methods.items():  # every offered method answers 200, every other one a 400
        r = client.post("/search", data={"text": "red", "k": "3", "method": name, "item_id": ids[0]})
        if m["available"]:
            assert r.status_code == 200, (name, r.text)
        else:
            assert r.status_code == 400 and r.json()["error"]["code"] == "method_unavailable", (name, r.text)


def test_cli_search_with_an_unavailable_method_is_one_error_line(indexed):
    from typer.testing import CliRunner

    from zscir.cli import app

    photos, idx, _, ids = indexed
    res = CliRunner().invoke(app, ["search", str(idx), "-i", ids[0], "-t", "red", "-m", "fusiondiff"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "WARNING" not in ln and not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "embed_dim" in lines[0], res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_item_id_with_a_newline_gets_its_thumbnail(indexed):
    """The indexer stores a file name with a newline as a printable (escaped) id, whose thumbnail URL works;
    the route also matches ids that do contain a raw newline (indexes written before ids were escaped)."""
    from starlette.routing import Match

    from zscir.index.names import escape_name
    from zscir.serve.app import thumbnail_url

    _, _, retriever, _ = indexed
    client = _client(retriever)
    item_id = escape_name(NEWLINE_ID)
    listed = [it for it in client.get("/items").json()["items"] if it["id"] == item_id]
    assert listed and listed[0]["thumbnail"] == thumbnail_url(item_id)
    r = client.get(listed[0]["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (30, 20)
    r = client.post("/search", data={"text": "green", "k": "3", "item_id": item_id})
    assert r.status_code == 200 and all(h["id"] != item_id for h in r.json()["results"])
    route = next(rt for rt in client.app.routes if getattr(rt, "path", "").endswith("/thumbnail"))
    match, params = route.matches({"type": "http", "method": "GET", "path": "/items/dir/new\nline.png/thumbnail"})
    assert match == Match.FULL and params["path_params"]["item_id"] == "dir/new\nline.png"
    r = client.get(thumbnail_url("never\nindexed.png"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_item"  # routed, then unknown: not a 404 route miss


def test_declared_body_never_sent_times_out(indexed):
    """Raw socket on 127.0.0.1: headers promise 5000 bytes, none come; the server answers 408 and closes."""
    from test_serve_api import running_server
    from zscir.serve import ServeConfig, ServeLimits, create_app

    _, _, retriever, _ = indexed
    app = create_app(retriever, ServeConfig(limits=ServeLimits(body_timeout_s=1.0)))
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for length in (5000, 10**12):  # small (read by the app) and over the limit (drained by the middleware)
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                          b"Content-Length: " + str(length).encode() + b"\r\n\r\n")
                t0 = time.time()
                data = b""
                while True:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        pytest.fail(f"no answer within 20 s (Content-Length {length})")
                    if not chunk:
                        break
                    data += chunk
                elapsed = time.time() - t0
            status = int(data.split(b" ", 2)[1])
            if length == 5000:
                assert status == 408 and b"body_timeout" in data, data[:300]
                assert 0.8 < elapsed < 10
            else:
                assert status == 413 and elapsed < 10, data[:300]


def test_concurrent_decodes_are_bounded(indexed, monkeypatch):
    import zscir.serve.app as app_mod

    _, _, retriever, _ = indexed
    running, peak = 0, 0
    lock = threading.Lock()
    real = app_mod.load_image

    def slow_load(source, limits):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        try:
            return real(source, limits)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(app_mod, "load_image", slow_load)
    client = _client(retriever, max_concurrent_decodes=2)
    data = _png()

    def upload(i):
        return client.post("/search", data={"text": f"x{i}", "k": "2"},
                           files={"image": ("a.png", data, "image/png")}).status_code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(upload, range(16)))
    assert codes == [200] * 16
    assert peak == 2


def test_large_png_is_downsized_before_it_is_copied(tmp_path):
    """The decode keeps the source size for the server's bookkeeping and never holds a full-size RGB copy."""
    from zscir.data.imageio import SOURCE_SIZE_KEY, ImageLimits, load_image

    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(buf, "PNG")
    im = load_image(buf.getvalue(), ImageLimits(max_side=256))
    assert im.size == (256, 171) and im.info[SOURCE_SIZE_KEY] == (3000, 2000)


def test_an_indexed_reference_is_decoded_once_not_per_search(indexed, monkeypatch):
    """A cheap file that claims many pixels (or any large photo) costs one decode, not one per search."""
    import zscir.serve.app as app_mod

    _, _, retriever, ids = indexed
    calls = []
    real = app_mod.load_image
    monkeypatch.setattr(app_mod, "load_image", lambda source, limits: calls.append(source) or real(source, limits))
    client = _client(retriever)
    for i in range(5):
        r = client.post("/search", data={"text": f"red {i}", "k": "2", "item_id": ids[1]})
        assert r.status_code == 200
    assert len(calls) == 1

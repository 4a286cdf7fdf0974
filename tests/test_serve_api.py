"""The HTTP API through the real stack (uvicorn on 127.0.0.1, httpx client): routes, limits, hostile uploads.

`running_server` and `served_index` are shared with the load and browser tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from test_indexer import MODEL, make_photos
from test_indexer_hostile import CORPUS_MAX_BYTES, make_hostile_corpus, uploadable

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def running_server(app):
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def served_index(tmp: Path, n: int = 24, model: str = MODEL):
    """A small index of distinct photos plus its retriever; returns (photos dir, index dir, retriever, ids)."""
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.methods import create_composer

    photos, idx = tmp / "photos", tmp / "idx"
    ids = make_photos(photos, n=n)
    build_index(photos, idx, create_composer("sum", model=model), model=model,
                config=IndexConfig(batch_size=8, progress=False))
    return photos, idx, Retriever.load(idx), ids


def small_limits():
    from zscir.serve import ServeLimits

    return ServeLimits(max_upload_bytes=CORPUS_MAX_BYTES, max_pixels=4_000_000, max_text_chars=200, max_k=50)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from zscir.serve import ServeConfig, create_app

    tmp = tmp_path_factory.mktemp("serve")
    photos, idx, retriever, ids = served_index(tmp)
    before = _digest(idx)
    with running_server(create_app(retriever, ServeConfig(limits=small_limits()))) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, ids, photos, tmp
    assert _digest(idx) == before, "the server changed the index"


def _png(color=(200, 10, 10), size=(40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _err(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_health_methods_docs_page(server):
    client, ids, _, _ = server
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 24 and h["model"] == MODEL and h["limits"]["max_k"] == 50
    methods = {m["name"]: m for m in client.get("/methods").json()["methods"]}
    assert methods["sum"]["available"] and methods["sum"]["default"] and methods["image"]["gallery"] == "indexed"
    assert "/search" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="search"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_items_and_thumbnails(server):
    client, ids, _, _ = server
    page = client.get("/items", params={"offset": 20, "limit": 10}).json()
    assert page["total"] == 24 and [i["id"] for i in page["items"]] == ids[20:]
    nested = next(i for i in ids if "/" in i)
    r = client.get(f"/items/{nested.replace('/', '%2F')}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 192
    assert client.get(f"/items/{nested}/thumbnail").status_code == 200  # unencoded slash works too
    _err(client.get("/items", params={"limit": 10_000}), 422, "invalid_request")


@pytest.mark.parametrize("evil", ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..%2Fidx%2Fmanifest.json",
                                  "%2E%2E/%2E%2E/etc/passwd", "photos%2Fp000.png", "p000.png%00", "C:%5Cwindows"])
def test_thumbnail_ids_only_no_traversal(server, evil):
    client, ids, _, _ = server
    r = client.get(f"/items/{evil}/thumbnail")
    assert r.status_code == 404 and b"root:" not in r.content


def test_search_by_item_and_by_upload(server):
    client, ids, photos, _ = server
    r = client.post("/search", data={"text": "make it blue", "k": "5", "item_id": ids[3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["rank"] for x in body["results"]] == [1, 2, 3, 4, 5] and ids[3] not in [x["id"] for x in body["results"]]
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(client.get(x["thumbnail"]).status_code == 200 for x in body["results"])
    up = client.post("/search", data={"text": "", "k": "3", "method": "image"},
                     files={"image": ("q.png", (photos / ids[3]).read_bytes(), "image/png")})
    assert up.status_code == 200 and ids[3] not in [x["id"] for x in up.json()["results"]]  # same bytes: excluded
    assert up.json()["reference"]["indexed"]["id"] == ids[3]
    buf = io.BytesIO()
    Image.open(photos / ids[3]).save(buf, "PNG", compress_level=1)  # same pixels, other bytes: not the item
    up = client.post("/search", data={"text": "", "k": "3", "method": "image"},
                     files={"image": ("q.png", buf.getvalue(), "image/png")})
    assert up.status_code == 200 and up.json()["results"][0]["id"] == ids[3]  # image-only finds the same photo
    assert up.json()["results"][0]["score"] > 0.999 and up.json()["method"] == "image"
    assert up.json()["reference"]["indexed"] is None


def test_server_timing_header_splits_the_request(server):
    """decode / encode / search / app (the whole handler) in Server-Timing; parts add up to at most app."""
    from zscir.serve.app import parse_server_timing

    client, ids, photos, _ = server
    for kw in ({"data": {"text": "blue", "item_id": ids[1]}},
               {"data": {"text": "blue"}, "files": {"image": ("q.png", (photos / ids[2]).read_bytes(), "image/png")}}):
        r = client.post("/search", **kw)
        assert r.status_code == 200, r.text
        t = parse_server_timing(r.headers["server-timing"])
        assert set(t) == {"decode", "encode", "search", "app"} and all(v >= 0 for v in t.values())
        assert t["decode"] + t["encode"] + t["search"] <= t["app"] + 0.05
        assert t["encode"] > 0 and t["app"] <= r.json()["took_ms"] + 0.1  # took_ms is read a little later


def test_limits_give_clear_4xx(server):
    client, ids, _, _ = server
    ok = {"text": "x", "k": "5", "item_id": ids[0]}
    _err(client.post("/search", data={**ok, "k": "0"}), 422, "k_out_of_range")
    _err(client.post("/search", data={**ok, "k": "51"}), 422, "k_out_of_range")
    _err(client.post("/search", data={**ok, "k": "ten"}), 422, "invalid_k")
    _err(client.post("/search", data={**ok, "text": "y" * 201}), 422, "text_too_long")
    _err(client.post("/search", data={"text": "  "}), 400, "reference_required")  # a text alone is a search now
    _err(client.post("/search", data=ok, files={"image": ("a.png", _png(), "image/png")}), 400, "reference_required")
    _err(client.post("/search", data={**ok, "item_id": "../../etc/passwd"}), 404, "unknown_item")
    _err(client.post("/search", data={**ok, "method": "no-such"}), 400, "method_unavailable")
    big = _png(size=(2100, 2100))  # 4.4 MP > 4 MP, yet a small file
    assert len(big) < CORPUS_MAX_BYTES
    _err(client.post("/search", data={"text": "x"}, files={"image": ("b.png", big, "image/png")}), 413,
         "too_many_pixels")
    huge = b"\x00" * (CORPUS_MAX_BYTES + 100_000)
    _err(client.post("/search", data={"text": "x"}, files={"image": ("c.png", huge, "image/png")}), 413,
         "body_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming
        yield (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(64):
            yield b"\x00" * 65536

    r = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    _err(r, 413, "body_too_large")
    _err(client.post("/search", content=b"not multipart", headers={"content-type": "text/plain"}), 400,
         "reference_required")
    garbage = client.post("/search", content=b"\x00" * 1000, headers={"content-type": "multipart/form-data; boundary=q"})
    _err(garbage, 400, "bad_request")
    assert client.get("/health").status_code == 200  # still alive


def test_hostile_uploads_never_5xx(server):
    client, _, _, tmp = server
    root = tmp / "hostile"
    expect = uploadable(root, make_hostile_corpus(root))
    assert len(expect) >= 28
    for name, verdict in expect.items():
        data = (root / name).read_bytes()
        r = client.post("/search", data={"text": "a variation", "k": "3"},
                        files={"image": (Path(name).name, data, "application/octet-stream")})
        assert r.status_code < 500, (name, r.text)
        if verdict == "ok":
            assert r.status_code == 200 and len(r.json()["results"]) == 3, (name, r.text)
        else:
            assert 400 <= r.status_code < 500 and r.json()["error"]["code"], (name, r.text)


def test_vanished_item_file_is_a_404_not_a_crash(tmp_path):
    from fastapi.testclient import TestClient

    from zscir.serve import create_app

    photos, _, retriever, ids = served_index(tmp_path, n=4)
    (photos / ids[1]).unlink()
    client = TestClient(create_app(retriever))
    _err(client.get(f"/items/{ids[1]}/thumbnail"), 404, "item_file_unavailable")
    _err(client.post("/search", data={"text": "x", "item_id": ids[1]}), 404, "item_file_unavailable")
    assert client.post("/search", data={"text": "x", "item_id": ids[0]}).status_code == 200

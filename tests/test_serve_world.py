"""`zscir serve` without an index: the built-in world gallery is indexed once into the cache and served."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from test_indexer import MODEL, make_photos


def test_serve_cli_without_index_serves_world_gallery(tmp_path, monkeypatch):
    """CLI wiring, fast: a stand-in world root with 6 images; uvicorn.run is captured instead of blocking."""
    import uvicorn
    from typer.testing import CliRunner

    import zscir.data.world.cache as world
    from zscir.cli import app

    root = tmp_path / "world"
    make_photos(root / "cirr" / "dev", n=6)
    monkeypatch.setattr(world, "ensure_world_benchmark", lambda seed=0, root_=None: root)
    monkeypatch.setenv("ZSCIR_CACHE", str(tmp_path / "cache"))
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda api, host, port, **kw: served.update(app=api, host=host, port=port))
    for run in range(2):
        res = CliRunner().invoke(app, ["serve", "--model", MODEL, "--port", "8123"])
        assert res.exit_code == 0, res.output
        assert "built-in world gallery" in res.output and served["host"] == "127.0.0.1" and served["port"] == 8123
    index_dir = tmp_path / "cache" / "serve" / f"world-seed0-{MODEL}-sum"
    assert (index_dir / "manifest.json").is_file() and (index_dir / "embeddings-g1.npy").is_file()  # built once
    client = TestClient(served["app"])
    assert client.get("/health").json()["items"] == 6
    first = client.get("/items").json()["items"][0]["id"]
    r = client.post("/search", data={"text": "redder", "k": "3", "item_id": first})
    assert r.status_code == 200 and len(r.json()["results"]) == 3


@pytest.mark.slow
def test_real_world_gallery_index(tmp_path):
    """The real thing: the world benchmark's 1800 CIRR-part images, indexed with the tiny model."""
    from zscir.index.store import EmbeddingStore
    from zscir.methods import create_composer
    from zscir.serve.world import ensure_world_gallery

    composer = create_composer("sum", model=MODEL)
    out = ensure_world_gallery(composer, MODEL, cache_dir=tmp_path, progress=False)
    store = EmbeddingStore.load(out)
    assert len(store) == 1800 and store.manifest["skipped"] == []
    assert ensure_world_gallery(composer, MODEL, cache_dir=tmp_path, progress=False) == out
    assert EmbeddingStore.load(out).manifest["generation"] == 1  # second start: up to date, nothing rebuilt


def test_serve_cli_rejects_malformed_method_checkpoint():
    from typer.testing import CliRunner

    from zscir.cli import app

    res = CliRunner().invoke(app, ["serve", "--method-checkpoint", "tscir-without-dir"])
    assert res.exit_code == 2 and "METHOD=DIR" in res.output

"""Kill-and-resume: a real `zscir index` subprocess is SIGKILLed mid-run, then the run is resumed.

The resumed index must contain exactly the folder's images (none lost, none duplicated), must reuse the
batches committed before the kill instead of re-encoding them, and must equal an uninterrupted build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_indexer import MODEL, make_photos

from zscir.index.build import IndexConfig, build_index
from zscir.index.store import EmbeddingStore
from zscir.methods import create_composer


def _committed(idx) -> int:
    try:
        m = json.loads((idx / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0
    return len((m.get("build") or {}).get("segments", []))


def test_sigkill_mid_index_then_resume(tmp_path):
    photos = tmp_path / "photos"
    ids = make_photos(photos, n=60)
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-m", "zscir", "index", str(photos), "--out", str(idx), "--model", MODEL,
           "--batch-size", "4", "--throttle", "0.25", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 120
        while _committed(idx) < 4:
            assert proc.poll() is None, f"indexer ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline, "indexer made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    m = json.loads((idx / "manifest.json").read_text())
    committed = len(m["build"]["segments"])
    assert m["generation"] == 0 and 4 <= committed < 15  # killed mid-run, before finishing

    composer = create_composer("sum", model=MODEL)
    rep = build_index(photos, idx, composer, model=MODEL, config=IndexConfig(batch_size=4, progress=False))
    assert rep.resumed >= 4 * 4 and rep.resumed % 4 == 0  # committed batches were not re-encoded
    assert rep.resumed + rep.encoded == 60 and rep.indexed == 60
    store = EmbeddingStore.load(idx)
    assert store.ids == ids and len(set(store.ids)) == 60  # exact item set, no duplicates
    assert not (idx / "segments").exists() and not list(idx.glob(".*.tmp"))

    fresh = tmp_path / "fresh"
    build_index(photos, fresh, composer, model=MODEL, config=IndexConfig(batch_size=7, progress=False))
    np.testing.assert_allclose(np.asarray(store.embeddings), np.asarray(EmbeddingStore.load(fresh).embeddings),
                               atol=1e-5)


@pytest.mark.parametrize("kill_after", [1, 3])
def test_stray_files_of_a_kill_are_ignored(tmp_path, kill_after, monkeypatch):
    """Orphans a kill leaves (a written, uncommitted segment; a temp file) never enter the index and are
    collected; look-alike files zscir did not record are never deleted."""
    import zscir.index.folder as folder

    photos = tmp_path / "photos"
    ids = make_photos(photos, n=10)
    idx = tmp_path / "idx"
    composer = create_composer("sum", model=MODEL)
    build_index(photos, idx, composer, model=MODEL, config=IndexConfig(batch_size=4, progress=False))
    make_photos(photos, n=kill_after, start=200)
    real = folder.atomic_write_json

    def kill_at_batch_commit(path, obj, **kw):
        if (obj.get("build") or {}).get("segments"):
            raise KeyboardInterrupt("simulated kill between a segment and its commit")
        return real(path, obj, **kw)

    monkeypatch.setattr(folder, "atomic_write_json", kill_at_batch_commit)
    with pytest.raises(KeyboardInterrupt):
        build_index(photos, idx, composer, model=MODEL, config=IndexConfig(batch_size=4, progress=False))
    monkeypatch.undo()
    orphans = list((idx / "segments").iterdir())
    assert len(orphans) == 1  # written, recorded, never committed
    (idx / ".embeddings-g2.npy.abc.tmp").write_bytes(b"partial")  # what a kill inside atomic_open leaves
    ghost = idx / "segments" / "deadbeef-000000.npz"  # zscir-like names zscir never recorded: not its files
    np.savez(ghost, items=np.frombuffer(b'[{"id": "ghost.png"}]', np.uint8), emb0=np.ones((1, 24), np.float32))
    (idx / ".notes.txt.abc.tmp").write_bytes(b"user")
    rep = build_index(photos, idx, composer, model=MODEL, config=IndexConfig(batch_size=4, progress=False))
    assert rep.encoded == kill_after and "ghost.png" not in EmbeddingStore.load(idx).ids
    assert len(EmbeddingStore.load(idx)) == 10 + kill_after and set(ids) <= set(EmbeddingStore.load(idx).ids)
    assert not orphans[0].exists() and not (idx / ".embeddings-g2.npy.abc.tmp").exists()
    assert ghost.is_file() and (idx / ".notes.txt.abc.tmp").read_bytes() == b"user"

"""Hostile-input corpus (>= 30 files) and the indexer's handling of it.

`make_hostile_corpus` is also used by the upload tests in test_serve_api.py: every file that is a real,
bounded image must be indexed / accepted, everything else skipped / refused with a reason, nothing crashes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: byte limit the corpus is designed around (its "too large" file exceeds it, every good file is below)
CORPUS_MAX_BYTES = 256 * 1024


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` with a tiny IDAT: a decompression-bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _img(mode: str = "RGB", size=(40, 30), color=(200, 30, 30)) -> Image.Image:
    return Image.new(mode, size, color)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_hostile_corpus(root: Path) -> dict[str, str]:
    """Write the corpus under ``root``; returns {relative id: "ok" | "skip"} for every scanned file."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, verdict: str) -> None:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expect[name] = verdict

    # ---- good images (various formats, modes, odd shapes, wrong extensions, odd names)
    put("ok/red.png", _encode(_img(), "PNG"), "ok")
    put("ok/green.jpg", _encode(_img(color=(20, 200, 20)), "JPEG"), "ok")
    frames = [_img("P", (32, 32), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    put("ok/anim.gif", buf.getvalue(), "ok")
    put("ok/blue.webp", _encode(_img(color=(10, 10, 220)), "WEBP"), "ok")
    put("ok/plain.bmp", _encode(_img(color=(90, 90, 0)), "BMP"), "ok")
    put("ok/plain.tiff", _encode(_img(color=(0, 90, 90)), "TIFF"), "ok")
    put("ok/png-named.jpg", _encode(_img(color=(1, 2, 3)), "PNG"), "ok")
    put("ok/jpeg-named.png", _encode(_img(color=(100, 2, 3)), "JPEG"), "ok")
    put("ok/rgba.png", _encode(_img("RGBA", color=(255, 0, 0, 60)), "PNG"), "ok")
    put("ok/gray.png", _encode(_img("L", color=128), "PNG"), "ok")
    pal = _img("P", color=3)
    put("ok/palette-transparent.png", _encode(pal, "PNG", transparency=3), "ok")
    put("ok/cmyk.jpg", _encode(_img("CMYK", color=(0, 50, 100, 0)), "JPEG"), "ok")
    put("ok/one-pixel.png", _encode(_img(size=(1, 1)), "PNG"), "ok")
    put("ok/needle.png", _encode(_img(size=(1, 2000)), "PNG"), "ok")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    put("ok/exif-rotated.jpg", _encode(_img(size=(60, 20)), "JPEG", exif=exif), "ok")
    put("ok/UPPER.PNG", _encode(_img(color=(7, 7, 7)), "PNG"), "ok")
    put("ok/spaces and ünïcödé.png", _encode(_img(color=(77, 7, 7)), "PNG"), "ok")
    put("ok/deep/a/b/c/d/nested.png", _encode(_img(color=(7, 77, 7)), "PNG"), "ok")
    # ---- bad files
    put("bad/empty.png", b"", "skip")
    put("bad/empty.jpg", b"", "skip")
    put("bad/text.jpg", b"hello, I am not an image\n" * 10, "skip")
    put("bad/html.png", b"<html><body>nope</body></html>", "skip")
    put("bad/random.jpeg", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "skip")
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png = _encode(noise, "PNG")
    put("bad/truncated.png", png[: len(png) // 2], "skip")
    jpg = _encode(noise, "JPEG", quality=95)
    put("bad/truncated.jpg", jpg[: len(jpg) // 3], "skip")
    put("bad/signature-only.png", png[:8], "skip")
    corrupt = bytearray(png)
    for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
        corrupt[i] ^= 0xFF
    put("bad/corrupt-idat.png", bytes(corrupt), "skip")
    put("bad/bomb-100k.png", _png_header_only(100_000, 100_000), "skip")
    put("bad/bomb-9k.png", _png_header_only(9_000, 9_000), "skip")
    put("bad/bomb.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b";", "skip")
    put("bad/eps-named.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "skip")
    put("bad/svg-named.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "skip")
    big = Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8))
    put("bad/too-large.png", _encode(big, "PNG"), "skip")
    assert (root / "bad/too-large.png").stat().st_size > CORPUS_MAX_BYTES
    # ---- file-system oddities
    (root / "links").mkdir()
    os.symlink("loop-b.jpg", root / "links/loop-a.jpg")
    os.symlink("loop-a.jpg", root / "links/loop-b.jpg")
    expect["links/loop-a.jpg"] = expect["links/loop-b.jpg"] = "skip"
    os.symlink("does-not-exist.png", root / "links/dangling.png")
    expect["links/dangling.png"] = "skip"
    os.symlink("..", root / "links/dir-loop")  # a directory loop: must not be followed
    os.symlink("../ok/red.png", root / "links/link-to-red.png")
    expect["links/link-to-red.png"] = "ok"
    os.mkfifo(root / "links/fifo.jpg")  # opening it naively would block forever
    expect["links/fifo.jpg"] = "skip"
    (root / "links/folder.jpg").mkdir()  # a directory with an image name: not a file, not scanned
    (root / "notes.txt").write_text("not scanned: no image extension")
    return expect


def uploadable(root: Path, expect: dict[str, str]) -> dict[str, str]:
    """The corpus entries that are plain files (what a client could upload)."""
    return {k: v for k, v in expect.items() if (root / k).is_file() and not (root / k).is_symlink()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "photos"
    return root, make_hostile_corpus(root)


def test_corpus_is_big_enough(corpus):
    root, expect = corpus
    assert len(expect) >= 30
    assert sum(v == "ok" for v in expect.values()) >= 15 and sum(v == "skip" for v in expect.values()) >= 15


def test_load_image_verdicts(corpus):
    from zscir.data.imageio import ImageLimits, ImageRejected, load_image

    root, expect = corpus
    limits = ImageLimits(max_bytes=CORPUS_MAX_BYTES)
    for name, verdict in expect.items():
        try:
            im = load_image(root / name, limits)
            got = "ok"
            assert im.mode == "RGB" and max(im.size) <= limits.max_side
        except ImageRejected as e:
            got = "skip"
            assert e.code and str(e)
        assert got == verdict, name


def test_indexer_skips_exactly_the_bad_files(corpus, tmp_path):
    from zscir.index.build import ImageLimits, IndexConfig, build_index
    from zscir.index.store import EmbeddingStore
    from zscir.methods import create_composer

    root, expect = corpus
    composer = create_composer("sum", model="tiny-clip-test")
    cfg = IndexConfig(batch_size=5, progress=False, limits=ImageLimits(max_bytes=CORPUS_MAX_BYTES))
    rep = build_index(root, tmp_path / "idx", composer, model="tiny-clip-test", config=cfg)
    store = EmbeddingStore.load(tmp_path / "idx")
    assert sorted(store.ids) == sorted(k for k, v in expect.items() if v == "ok")
    assert sorted(s["id"] for s in rep.skipped) == sorted(k for k, v in expect.items() if v == "skip")
    codes = {s["id"]: s["code"] for s in rep.skipped}
    assert codes["bad/empty.png"] == "empty" and codes["bad/too-large.png"] == "file_too_large"
    assert codes["bad/bomb-100k.png"] == "too_many_pixels" and codes["bad/bomb-9k.png"] == "too_many_pixels"
    assert codes["links/fifo.jpg"] == "not_a_file" and codes["links/loop-a.jpg"] == "unreadable"
    assert codes["bad/eps-named.jpg"] == "not_an_image"
    assert np.isfinite(np.asarray(store.embeddings)).all()
    # skipped files are recorded with their signature, so an unchanged bad file is not re-read
    rep2 = build_index(root, tmp_path / "idx", composer, model="tiny-clip-test", config=cfg)
    assert rep2.up_to_date and rep2.encoded == 0 and len(rep2.skipped) == len(rep.skipped)

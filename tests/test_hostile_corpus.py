"""A hostile-input corpus across indexing, serving and the evaluation loaders (issue 14, "Done when").

More than 100 parametrised cases, each checked for the three properties the project promises:

* **0 tracebacks** — every ``zscir`` command ends with exit 0, or exit 1/2 and at most one ``error:`` line;
* **0 5xx** — the server answers every request with a status below 500;
* **0 lost user files** — the user's folder (photos, benchmark roots) hashes the same before and after.

Indexing: one ``zscir index`` run over the corpus of tests/test_indexer_hostile.py plus odd names
(ANSI escapes, newlines, undecodable bytes); each file is a case (indexed, or skipped with a reason).
Serving: every corpus file as an upload, plus hostile form fields, ids and routes (FastAPI TestClient).
Evaluation: damaged copies of tiny CIRR / CIRCO / FashionIQ roots through ``zscir eval`` and ``zscir
submit``, and damaged submission files through ``zscir validate-submission``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import zlib
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from hostile_data import make_circo, make_cirr, make_fiq, png, write_json
from test_indexer import MODEL
from test_indexer_hostile import CORPUS_MAX_BYTES, make_hostile_corpus, uploadable

runner = CliRunner()


def zscir(*args):
    from zscir.cli import app

    return runner.invoke(app, [a if isinstance(a, str) else os.fspath(a) for a in args])


def assert_no_traceback(res, allowed=(0, 1, 2)) -> None:
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text[-2000:]
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in allowed, (res.exit_code, text[-2000:])
    errors = [ln for ln in (res.stderr or "").splitlines() if ln.startswith("error:")]
    assert len(errors) <= 1, errors
    if res.exit_code == 2:
        assert len(errors) == 1, text[-2000:]


def tree_digest(root: Path) -> dict[bytes, str]:
    """Every entry under ``root`` (names as bytes: undecodable ones too) -> its type and content hash."""
    out: dict[bytes, str] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, broot)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.fsdecode(os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = "file:" + hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


# ================================================================================================ indexing
ODD_NAMES = {
    "odd/\x1b[31mred\x1b[0m.png": "ok",
    "odd/new\nline.png": "ok",
    "odd/tab\tand\rcr.png": "ok",
    "odd/ünï ∂ 😀.png": "ok",
    "odd/-dash-first.png": "ok",
    "odd/.hidden.png": "ok",
}
UNDECODABLE = b"odd/caf\xe9.png"  # latin-1 bytes: not UTF-8


def _build_user_folder(root: Path) -> dict[str, str]:
    expect = make_hostile_corpus(root)
    for name, verdict in ODD_NAMES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(len(expect), size=(20, 16)))
        expect[name] = verdict
    return expect


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    photos = tmp / "photos"
    expect = _build_user_folder(photos)
    before = tree_digest(photos)
    report = tmp / "report.json"
    res = zscir("index", photos, "--out", tmp / "idx", "--model", MODEL, "--batch-size", "8",
                "--max-file-mb", str(CORPUS_MAX_BYTES / 2**20), "--report", report)
    after = tree_digest(photos)
    rep = json.loads(report.read_text()) if report.exists() else None
    return {"photos": photos, "idx": tmp / "idx", "expect": expect, "res": res, "before": before, "after": after,
            "report": rep}


def test_index_run_over_the_corpus(indexed):
    assert_no_traceback(indexed["res"], allowed=(0,))
    assert indexed["after"] == indexed["before"], "the index run changed or lost user files"




def _index_case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return sorted(_build_user_folder(Path(d) / "p"))


@pytest.mark.parametrize("name", _index_case_names(), ids=lambda n: n.encode("unicode_escape").decode())
def test_index_case(indexed, name):
    from zscir.index.names import escape_name
    from zscir.index.store import EmbeddingStore

    rep = indexed["report"]
    assert rep is not None, indexed["res"].output
    skipped = {s["id"]: s for s in rep["skipped"]}
    item_id = escape_name(name)  # ids are stored printable (control characters escaped)
    if indexed["expect"][name] == "skip":
        assert item_id in skipped and skipped[item_id]["reason"], name
    else:
        assert item_id in set(EmbeddingStore.load(indexed["idx"]).ids), name


def test_index_case_undecodable_name(tmp_path):
    """A non-UTF-8 file name neither aborts the run nor is lost: indexed, or skipped and named safely."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "fine.png").write_bytes(png(1, size=(20, 16)))
    with open(os.path.join(os.fsencode(photos), UNDECODABLE.split(b"/")[-1]), "wb") as f:
        f.write(png(999, size=(20, 16)))
    before = tree_digest(photos)
    res = zscir("index", photos, "--out", tmp_path / "idx", "--model", MODEL)
    assert tree_digest(photos) == before
    assert_no_traceback(res, allowed=(2,) if res.exit_code == 2 else (0,))
    assert res.exit_code == 0, res.output


# ================================================================================================ serving
@pytest.fixture(scope="module")
def client(indexed):
    from fastapi.testclient import TestClient

    from zscir.index.retriever import Retriever
    from zscir.serve import ServeConfig, ServeLimits, create_app

    limits = ServeLimits(max_upload_bytes=CORPUS_MAX_BYTES, max_pixels=4_000_000, max_text_chars=200, max_k=50)
    app = create_app(Retriever.load(indexed["idx"]), ServeConfig(limits=limits))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    assert tree_digest(indexed["photos"]) == indexed["before"], "serving changed user files"


def _upload_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "p"
        return sorted(uploadable(root, make_hostile_corpus(root)))


@pytest.mark.parametrize("name", _upload_names())
def test_serve_upload_case(client, indexed, name):
    data = (indexed["photos"] / name).read_bytes()
    r = client.post("/search", data={"text": "make it red", "k": "3"},
                    files={"image": (Path(name).name, data, "application/octet-stream")})
    assert r.status_code < 500, r.text
    expected_ok = indexed["expect"][name] == "ok"
    assert (r.status_code == 200) == expected_ok, (name, r.status_code, r.text[:200])
    if r.status_code != 200:
        assert r.json()["error"]["code"]


def _form(**kw):
    base = {"text": "red", "k": "3"}
    base.update({k: v for k, v in kw.items() if v is not None})
    return base


SERVE_REQUESTS: dict[str, Callable] = {
    "k=0": lambda c, i: c.post("/search", data=_form(k="0", item_id=i)),
    "k=-1": lambda c, i: c.post("/search", data=_form(k="-1", item_id=i)),
    "k=1e9": lambda c, i: c.post("/search", data=_form(k="1e9", item_id=i)),
    "k=99999999999999999999999": lambda c, i: c.post("/search", data=_form(k="9" * 23, item_id=i)),
    "k=abc": lambda c, i: c.post("/search", data=_form(k="abc", item_id=i)),
    "k=empty": lambda c, i: c.post("/search", data=_form(k="", item_id=i)),
    "k=NaN": lambda c, i: c.post("/search", data=_form(k="NaN", item_id=i)),
    "k=unicode-digits": lambda c, i: c.post("/search", data=_form(k="٣", item_id=i)),
    "text-too-long": lambda c, i: c.post("/search", data=_form(text="x" * 10_000, item_id=i)),
    "text-nul-and-controls": lambda c, i: c.post("/search", data=_form(text="a\x00b\x1b[31m\r\n", item_id=i)),
    "text-emoji": lambda c, i: c.post("/search", data=_form(text="😀" * 150, item_id=i)),
    "text-lone-surrogate-bytes": lambda c, i: c.post(
        "/search", content=b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n\xed\xa0\x80\r\n--b--\r\n',
        headers={"content-type": "multipart/form-data; boundary=b"}),
    "method=unknown": lambda c, i: c.post("/search", data=_form(method="nope", item_id=i)),
    "method=traversal": lambda c, i: c.post("/search", data=_form(method="../../etc/passwd", item_id=i)),
    "method=fusiondiff-wrong-backbone": lambda c, i: c.post("/search", data=_form(method="fusiondiff", item_id=i)),
    "method=fusiondiff-image": lambda c, i: c.post("/search", data=_form(method="fusiondiff-image", item_id=i)),
    "method=tscir-no-checkpoint": lambda c, i: c.post("/search", data=_form(method="tscir", item_id=i)),
    "method=very-long": lambda c, i: c.post("/search", data=_form(method="m" * 5000, item_id=i)),
    "item_id=traversal": lambda c, i: c.post("/search", data=_form(item_id="../../../etc/passwd")),
    "item_id=absolute": lambda c, i: c.post("/search", data=_form(item_id="/etc/passwd")),
    "item_id=nul": lambda c, i: c.post("/search", data=_form(item_id="a\x00b")),
    "item_id=newline-id": lambda c, i: c.post("/search", data=_form(item_id="odd/new\nline.png")),
    "item_id=escaped-newline-id": lambda c, i: c.post("/search", data=_form(item_id="odd/new\\nline.png")),
    "item_id=ansi-id": lambda c, i: c.post("/search", data=_form(item_id="odd/\x1b[31mred\x1b[0m.png")),
    "item_id=skipped-file": lambda c, i: c.post("/search", data=_form(item_id="bad/bomb-9k.png")),
    "item_id-and-upload": lambda c, i: c.post("/search", data=_form(item_id=i),
                                               files={"image": ("a.png", png(1), "image/png")}),
    "no-reference": lambda c, i: c.post("/search", data=_form()),
    "empty-upload": lambda c, i: c.post("/search", data=_form(), files={"image": ("a.png", b"", "image/png")}),
    "json-body": lambda c, i: c.post("/search", json={"text": "red", "item_id": i}),
    "garbage-multipart": lambda c, i: c.post("/search", content=b"--x\r\n\r\n\r\n--",
                                             headers={"content-type": "multipart/form-data; boundary=x"}),
    "multipart-without-boundary": lambda c, i: c.post("/search", content=b"abc",
                                                      headers={"content-type": "multipart/form-data"}),
    "urlencoded-bad-percent": lambda c, i: c.post("/search", content=b"text=%zz&k=%&item_id=%ff%fe",
                                                  headers={"content-type": "application/x-www-form-urlencoded"}),
    "oversized-body": lambda c, i: c.post("/search", data=_form(),
                                          files={"image": ("a.png", b"\0" * (CORPUS_MAX_BYTES + 70_000), "image/png")}),
    "lying-content-length": lambda c, i: c.post("/search", content=b"x" * 10,
                                                headers={"content-type": "text/plain", "content-length": "5"}),
    "thumbnail-traversal": lambda c, i: c.get("/items/..%2F..%2Fetc%2Fpasswd/thumbnail"),
    "thumbnail-newline-id": lambda c, i: c.get("/items/odd%2Fnew%0Aline.png/thumbnail"),
    "thumbnail-escaped-newline-id": lambda c, i: c.get("/items/odd%2Fnew%5Cnline.png/thumbnail"),
    "thumbnail-ansi-id": lambda c, i: c.get("/items/odd%2F%1B%5B31mred%1B%5B0m.png/thumbnail"),
    "thumbnail-skipped-file": lambda c, i: c.get("/items/bad%2Fbomb-9k.png/thumbnail"),
    "thumbnail-empty-id": lambda c, i: c.get("/items//thumbnail"),
    "thumbnail-nul": lambda c, i: c.get("/items/%00/thumbnail"),
    "items-offset-negative": lambda c, i: c.get("/items?offset=-1"),
    "items-limit-huge": lambda c, i: c.get("/items?limit=10000000000000000000000"),
    "items-limit-text": lambda c, i: c.get("/items?limit=abc"),
    "items-offset-beyond": lambda c, i: c.get("/items?offset=1000000"),
    "unknown-route": lambda c, i: c.get("/nope"),
    "wrong-verb": lambda c, i: c.delete("/search"),
    "health": lambda c, i: c.get("/health"),
    "methods": lambda c, i: c.get("/methods"),
}


@pytest.mark.parametrize("case", sorted(SERVE_REQUESTS))
def test_serve_request_case(client, indexed, case):
    item = "ok/red.png"
    r = SERVE_REQUESTS[case](client, item)
    assert r.status_code < 500, (case, r.status_code, r.text[:300])


# ================================================================================================ evaluation
def _json_edit(rel: str, fn: Callable) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / rel
        data = json.loads(p.read_text())
        fn(data)
        write_json(p, data)
    return apply


def _text_edit(rel: str, fn: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / rel
        p.write_text(fn(p.read_text()))
    return apply


def _raw(rel: str, data: bytes) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).write_bytes(data)
    return apply


def _replace_with(rel: str, kind: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / rel
        p.unlink()
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        elif kind == "dangling":
            os.symlink("nowhere.png", p)
    return apply


def _bomb_png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


CAP = "captions/cap.rc2.val.json"
SPLIT = "image_splits/split.rc2.val.json"
CIRCO_VAL = "annotations/val.json"
FIQ_CAP = "captions/cap.dress.val.json"
FIQ_SPLIT = "image_splits/split.dress.val.json"
DEEP = "[" * 100_000 + "]" * 100_000

#: name -> (benchmark, damage, expected exit code)
EVAL_CASES: dict[str, tuple[str, Callable[[Path], None], int]] = {
    "cirr-reference-list": ("cirr", _json_edit(CAP, lambda d: d[0].update(reference=["a"])), 2),
    "cirr-reference-object": ("cirr", _json_edit(CAP, lambda d: d[0].update(reference={"a": 1})), 2),
    "cirr-reference-int": ("cirr", _json_edit(CAP, lambda d: d[0].update(reference=3)), 2),
    "cirr-reference-unknown": ("cirr", _json_edit(CAP, lambda d: d[0].update(reference="nope")), 2),
    "cirr-pairid-1e400": ("cirr", _text_edit(CAP, lambda t: t.replace('"pairid": 0,', '"pairid": 1e400,', 1)), 2),
    "cirr-pairid-NaN": ("cirr", _text_edit(CAP, lambda t: t.replace('"pairid": 0,', '"pairid": NaN,', 1)), 2),
    "cirr-pairid-text": ("cirr", _json_edit(CAP, lambda d: d[0].update(pairid="abc")), 2),
    "cirr-pairid-null": ("cirr", _json_edit(CAP, lambda d: d[0].update(pairid=None)), 2),
    "cirr-pairid-fraction": ("cirr", _json_edit(CAP, lambda d: d[0].update(pairid=0.5)), 2),
    "cirr-pairid-duplicate": ("cirr", _json_edit(CAP, lambda d: d[1].update(pairid=d[0]["pairid"])), 2),
    "cirr-caption-null": ("cirr", _json_edit(CAP, lambda d: d[0].update(caption=None)), 2),
    "cirr-caption-list": ("cirr", _json_edit(CAP, lambda d: d[0].update(caption=["a"])), 2),
    "cirr-no-img_set": ("cirr", _json_edit(CAP, lambda d: d[0].pop("img_set")), 2),
    "cirr-members-not-list": ("cirr", _json_edit(CAP, lambda d: d[0]["img_set"].update(members="abc")), 2),
    "cirr-members-int": ("cirr", _json_edit(CAP, lambda d: d[0]["img_set"]["members"].append(5)), 2),
    "cirr-no-target": ("cirr", _json_edit(CAP, lambda d: d[0].pop("target_hard")), 2),
    "cirr-target-unknown": ("cirr", _json_edit(CAP, lambda d: d[0].update(target_hard="nope")), 2),
    "cirr-entry-number": ("cirr", _json_edit(CAP, lambda d: d.__setitem__(0, 42)), 2),
    "cirr-top-level-object": ("cirr", _raw(CAP, b'{"a": 1}'), 2),
    "cirr-empty-list": ("cirr", _raw(CAP, b"[]"), 2),
    "cirr-deep-nesting": ("cirr", _raw(CAP, DEEP.encode()), 2),
    "cirr-truncated-json": ("cirr", _text_edit(CAP, lambda t: t[: len(t) // 2]), 2),
    "cirr-not-utf8": ("cirr", _raw(CAP, b'[{"caption": "\xff\xfe"}]'), 2),
    "cirr-captions-is-dir": ("cirr", _replace_with(CAP, "dir"), 2),
    "cirr-split-values-int": ("cirr", _json_edit(SPLIT, lambda d: d.update({k: 1 for k in list(d)[:1]})), 2),
    "cirr-split-empty": ("cirr", _raw(SPLIT, b"{}"), 2),
    "cirr-image-missing": ("cirr", lambda r: (r / "dev/val-0-img3.png").unlink(), 2),
    "cirr-image-fifo": ("cirr", _replace_with("dev/val-0-img3.png", "fifo"), 2),
    "cirr-image-dir": ("cirr", _replace_with("dev/val-0-img3.png", "dir"), 2),
    "cirr-image-dangling-link": ("cirr", _replace_with("dev/val-0-img3.png", "dangling"), 2),
    "cirr-image-empty": ("cirr", _raw("dev/val-0-img3.png", b""), 2),
    "cirr-image-text": ("cirr", _raw("dev/val-0-img3.png", b"not an image"), 2),
    "cirr-image-truncated": ("cirr", _raw("dev/val-0-img3.png", png(3, size=(64, 64))[:60]), 2),
    "cirr-image-bomb-header": ("cirr", _raw("dev/val-0-img3.png", _bomb_png(100_000, 100_000)), 2),
    "circo-id-1e400": ("circo", _text_edit(CIRCO_VAL, lambda t: t.replace('"id": 0,', '"id": 1e400,', 1)), 2),
    "circo-id-text": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(id="abc")), 2),
    "circo-id-duplicate": ("circo", _json_edit(CIRCO_VAL, lambda d: d[1].update(id=d[0]["id"])), 2),
    "circo-reference-list": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(reference_img_id=[1])), 2),
    "circo-reference-unknown": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(reference_img_id=99999)), 2),
    "circo-gt-empty": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(gt_img_ids=[])), 2),
    "circo-gt-not-list": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(gt_img_ids=5)), 2),
    "circo-gt-unhashable": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0]["gt_img_ids"].append({"a": 1})), 2),
    "circo-target-not-in-gt": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(target_img_id=3)), 2),
    "circo-gt-image-missing": ("circo", lambda r: (r / "unlabeled2017/000000000008.png").unlink(), 2),
    "circo-aspects-not-list": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(semantic_aspects="x")), 2),
    "circo-shared-concept-int": ("circo", _json_edit(CIRCO_VAL, lambda d: d[0].update(shared_concept=3)), 2),
    "circo-annotations-object": ("circo", _raw(CIRCO_VAL, b"{}"), 2),
    "circo-deep-nesting": ("circo", _raw(CIRCO_VAL, DEEP.encode()), 2),
    "circo-no-images": ("circo", lambda r: shutil.rmtree(r / "unlabeled2017"), 2),
    "fiq-one-caption": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].update(captions=["a"])), 2),
    "fiq-three-captions": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].update(captions=["a", "b", "c"])), 2),
    "fiq-captions-not-list": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].update(captions="ab")), 2),
    "fiq-candidate-int": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].update(candidate=3)), 2),
    "fiq-no-target": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].pop("target")), 2),
    "fiq-target-not-in-split": ("fashioniq", _json_edit(FIQ_CAP, lambda d: d[0].update(target="nope")), 2),
    "fiq-split-int": ("fashioniq", _json_edit(FIQ_SPLIT, lambda d: d.append(3)), 2),
    "fiq-image-missing": ("fashioniq", lambda r: (r / "images/dressval5.png").unlink(), 2),
    "fiq-image-fifo": ("fashioniq", _replace_with("images/dressval5.png", "fifo"), 2),
    "fiq-truncated-json": ("fashioniq", _text_edit(FIQ_CAP, lambda t: t[:-3]), 2),
    "cirr-intact": ("cirr", lambda r: None, 0),
    "circo-intact": ("circo", lambda r: None, 0),
    "fiq-intact": ("fashioniq", lambda r: None, 0),
}

_MAKERS = {"cirr": make_cirr, "circo": make_circo, "fashioniq": make_fiq}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pristine")
    return {b: make(tmp / b) for b, make in _MAKERS.items()}


def _run_on_damaged_copy(pristine, tmp_path: Path, case: tuple, *command: str) -> None:
    """Copy a pristine root, damage it, run ``zscir COMMAND`` on it: no traceback, the root unchanged."""
    bench, damage, expected = case
    root = tmp_path / bench
    shutil.copytree(pristine[bench], root, symlinks=True)
    damage(root)
    before = tree_digest(root)
    res = zscir(*command[:1], "--benchmark", bench, "--data-root", root, "-m", "image", "--model", MODEL, "--no-progress",
                "--cache-dir", tmp_path / "cache", *command[1:])
    assert_no_traceback(res, allowed=(expected,))
    assert tree_digest(root) == before, "the command changed the data root"


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_case(pristine, tmp_path, case):
    _run_on_damaged_copy(pristine, tmp_path, EVAL_CASES[case], "eval")


SUBMIT_CASES = {
    "submit-cirr-duplicate-pairid": ("cirr", _json_edit("captions/cap.rc2.test1.json",
                                                        lambda d: d[1].update(pairid=d[0]["pairid"])), 2),
    "submit-cirr-image-fifo": ("cirr", _replace_with("test1/test1-0-img2.png", "fifo"), 2),
    "submit-circo-id-duplicate": ("circo", _json_edit("annotations/test.json", lambda d: d[1].update(id=d[0]["id"])), 2),
    "submit-circo-intact": ("circo", lambda r: None, 0),
}


@pytest.mark.parametrize("case", sorted(SUBMIT_CASES))
def test_submit_case(pristine, tmp_path, case):
    _run_on_damaged_copy(pristine, tmp_path, SUBMIT_CASES[case], "submit", "--out-dir", str(tmp_path / "out"))


VALIDATE_CASES = {
    "top-level-list": ("circo", b"[1, 2]", 1),
    "values-not-lists": ("circo", b'{"0": 5}', 1),
    "ids-objects": ("circo", b'{"0": [{"a": 1}]}', 1),
    "ids-bool": ("circo", b'{"0": [true]}', 1),
    "ids-floats": ("circo", b'{"0": [1.5]}', 1),
    "ids-strings": ("circo", b'{"0": ["1", "2"]}', 0),
    "repeated-key": ("circo", b'{"0": [1], "0": [2]}', 1),
    "deep-nesting": ("circo", DEEP.encode(), 1),
    "not-json": ("circo", b"\xff\xfe\x00", 1),
    "empty-file": ("circo", b"", 1),
    "cirr-no-version": ("cirr", b'{"metric": "recall", "0": ["a"]}', 1),
    "cirr-bad-metric": ("cirr", b'{"version": "rc2", "metric": [1]}', 1),
    "cirr-names-int": ("cirr", b'{"version": "rc2", "metric": "recall_subset", "0": [1, 2, 3]}', 1),
    "cirr-huge-key": ("cirr", b'{"version": "rc2", "metric": "recall_subset", "' + b"9" * 5000 + b'": ["a", "b", "c"]}', 0),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_submission_case(tmp_path, case):
    bench, data, expected = VALIDATE_CASES[case]
    p = tmp_path / "sub.json"
    p.write_bytes(data)
    res = zscir("validate-submission", p, "-b", bench)
    assert_no_traceback(res, allowed=(expected,))


def test_corpus_size():
    n = (len(_index_case_names()) + 1 + len(_upload_names()) + len(SERVE_REQUESTS) + len(EVAL_CASES)
         + len(SUBMIT_CASES) + len(VALIDATE_CASES))
    assert n >= 100, n

"""Issue 23 §2: the searches people expect — a text alone, a picture alone ("more like this"), a file of
queries in one call — through the CLI, the Python API and HTTP, with one rank convention (1-based).

Before: `zscir search` required both --image and --text, `POST /search` required a reference,
`Retriever.search` required a text, there was no batch mode, and `SearchHit.rank` was 0-based in Python but
1-based in the CLI and over HTTP. Runs on a tiny-clip-test index made here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from test_indexer import MODEL, make_photos
from zscir.index.batch import QueryFileError, QueryRow, RowError, answer_queries, load_queries
from zscir.index.query import MissingQueryInput, given_text, plan_query

pytest.importorskip("fastapi")
runner = CliRunner()


def zscir(*args):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from zscir.index.build import IndexConfig, build_index
    from zscir.methods import create_composer

    tmp = tmp_path_factory.mktemp("modes")
    photos = tmp / "photos"
    ids = make_photos(photos, n=10)
    build_index(photos, tmp / "idx", create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=8, progress=False))
    return tmp, photos, tmp / "idx", ids


@pytest.fixture(scope="module")
def retriever(index):
    from zscir.index.retriever import Retriever

    return Retriever.load(index[2])


@pytest.fixture(scope="module")
def client(retriever):
    from fastapi.testclient import TestClient

    from zscir.serve import create_app

    return TestClient(create_app(retriever))


def triples(hits):
    """(rank, id, score rounded as the CLI/HTTP JSON has it) of API hits."""
    return [(h.rank, h.id, round(h.score, 6)) for h in hits]


def json_triples(records):
    return [(r["rank"], r["id"], r["score"]) for r in records]


# ------------------------------------------------------------------------------------------ the plan rule
INPUTS = {"sum": ("image", "text"), "tscir": ("image", "text"), "image": ("image",), "text": ("text",)}


@pytest.mark.parametrize("has_image, has_text, method, default, expect", [
    (True, True, None, "sum", ("sum", "composed", False)),
    (False, True, None, "sum", ("text", "text", True)),
    (True, False, None, "sum", ("image", "image", True)),
    (False, True, None, "tscir", ("text", "text", True)),
    (True, False, None, "tscir", ("image", "image", True)),
    (True, True, "image", "sum", ("image", "image", False)),  # a method may ignore a side it is given
    (True, True, "text", "sum", ("text", "text", False)),
    (False, True, "text", "sum", ("text", "text", False)),
    (True, False, "image", "sum", ("image", "image", False)),
    (False, True, None, "text", ("text", "text", False)),  # an index built with -m text
    (True, False, None, "text", ("image", "image", True)),
    (True, False, None, "image", ("image", "image", False)),
    (False, True, None, "image", ("text", "text", True)),
    (False, True, "sum", "sum", "needs a reference image and a text, and this query has no reference image"),
    (True, False, "sum", "sum", "needs a reference image and a text, and this query has no text"),
    (True, False, "tscir", "sum", "use method 'image'"),
    (False, True, "image", "sum", "needs a reference image"),
    (True, False, "text", "sum", "needs a text"),
    (False, False, None, "sum", "the query is empty"),
    (False, False, "image", "sum", "the query is empty"),
])
def test_plan_rule(has_image, has_text, method, default, expect):
    if isinstance(expect, str):
        with pytest.raises(MissingQueryInput, match=expect.replace("(", r"\(")):
            plan_query(has_image, has_text, method, default, INPUTS.__getitem__)
        return
    plan = plan_query(has_image, has_text, method, default, INPUTS.__getitem__)
    assert (plan.method, plan.mode, plan.note is not None) == expect


@pytest.mark.parametrize("text, expect", [(None, None), ("", None), ("   ", None), ("\n\t ", None), ("\u3000", None),
                                          ("red", "red"), (" a car ", " a car ")])
def test_given_text(text, expect):
    assert given_text(text) == expect


@pytest.mark.parametrize("bad", [3, 1.5, ["red"], {"t": 1}, b"red"])
def test_given_text_refuses_non_strings(bad):
    with pytest.raises(MissingQueryInput, match="must be a string"):
        given_text(bad)


# ----------------------------------------------------------------------------------------------- the API
def test_api_text_alone_is_the_text_method(retriever, index):
    hits = retriever.search(text="a red square", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert triples(hits) == triples(retriever.search(None, "a red square", k=5, method="text"))
    composed = retriever.search(index[3][0], "a red square", k=5)  # with a picture: another query
    assert triples(composed) != triples(hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_api_picture_alone_is_more_like_this(retriever, index):
    tmp, photos, _, ids = index
    hits = retriever.search(ids[3], k=4)
    assert ids[3] not in [h.id for h in hits] and [h.rank for h in hits] == [1, 2, 3, 4]  # excluded as before
    assert triples(hits) == triples(retriever.search(ids[3], "", k=4, method="image"))
    assert triples(retriever.search(photos / ids[3], "   ", k=4)) == triples(hits)  # by path, blank text: the same
    copy = tmp / "copy.png"
    Image.open(photos / ids[3]).save(copy, compress_level=1)  # same pixels, other bytes: not the item itself
    first = retriever.search(copy, k=1)[0]
    assert first.id == ids[3] and first.score > 0.999


@pytest.mark.parametrize("image, text, method", [(None, "red", "sum"), ("REF", None, "sum"), ("REF", "", "sum"),
                                                 (None, "red", "image"), ("REF", None, "text"), (None, None, None),
                                                 (None, "", None), (None, " \n", None)])
def test_api_refuses_what_cannot_be_answered(retriever, index, image, text, method):
    image = index[3][0] if image == "REF" else image
    with pytest.raises(MissingQueryInput):
        retriever.search(image, text, k=3, method=method)


def test_api_store_ranks_are_one_based(retriever):
    import numpy as np

    q = np.asarray(retriever.store.embeddings[:2], dtype=np.float32)
    for row in retriever.store.search(q, k=3):
        assert [h.rank for h in row] == [1, 2, 3]


# ----------------------------------------------------------------------------------------------- the CLI
def test_cli_text_alone_and_picture_alone(index, retriever):
    _, _, idx, ids = index
    res = zscir("search", idx, "--text", "a red square", "-k", "3")
    assert res.exit_code == 0, res.output
    assert "note: no reference image: searching by the text alone (method 'text')" in res.stderr
    lines = res.stdout.splitlines()
    assert [ln.split(".")[0].strip() for ln in lines] == ["1", "2", "3"]
    res = zscir("search", idx, "--image", ids[2], "-k", "3")
    assert res.exit_code == 0, res.output
    assert "searching by the picture alone" in res.stderr
    assert f"reference is indexed item {ids[2]}: excluded" in res.stdout
    assert ids[2] not in res.stdout.split("excluded", 1)[1]


@pytest.mark.parametrize("args, needle", [
    ((), "give a reference image (--image), a text (--text), both"),
    (("--text", "red", "-m", "sum"), "method 'sum' needs a reference image and a text"),
    (("--image", "REF", "-m", "sum"), "this query has no text"),
    (("--image", "REF", "--text", "  ", "-m", "sum"), "this query has no text"),
    (("--text", "red", "-m", "image"), "method 'image' needs a reference image"),
    (("--image", "REF", "-m", "text"), "method 'text' needs a text"),
    (("--text", "red", "--output", "out.jsonl"), "--output is for --queries"),
])
def test_cli_incomplete_queries_are_one_error_line(index, tmp_path, args, needle):
    from test_cli_errors import assert_one_error_line

    args = [a.replace("REF", index[3][0]).replace("out.jsonl", str(tmp_path / "o.jsonl")) for a in args]
    assert_one_error_line(zscir("search", index[2], *args), needle)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ one query, every door
@pytest.mark.parametrize("kind", ["composed", "text", "image"])
def test_cli_api_http_and_batch_agree(index, retriever, client, tmp_path, kind):
    _, _, idx, ids = index
    image = None if kind == "text" else ids[4]
    text = None if kind == "image" else "the same but darker"
    api = triples(retriever.search(image, text, k=5))
    cli_args = (["--image", image] if image else []) + (["--text", text] if text else [])
    res = zscir("search", idx, *cli_args, "-k", "5", "--json")
    assert res.exit_code == 0, res.output
    assert json_triples(json.loads(res.stdout)) == api
    res = zscir("search", idx, *cli_args, "-k", "5")  # the plain listing shows the same ranks
    listed = [ln for ln in res.stdout.splitlines() if ln[:4].strip().rstrip(".").isdigit()]
    assert [int(ln.split(".")[0]) for ln in listed] == [r for r, _, _ in api]
    form = {"k": "5", "text": text or ""}
    if image:
        form["item_id"] = image
    r = client.post("/search", data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert json_triples(body["results"]) == api
    assert body["mode"] == kind and body["method"] == {"composed": "sum", "text": "text", "image": "image"}[kind]
    assert (body["note"] is None) == (kind == "composed")
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({k: v for k, v in (("image", image), ("text", text)) if v}) + "\n")
    res = zscir("search", idx, "--queries", queries, "-k", "5")
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert json_triples(rec["hits"]) == api and rec["mode"] == kind and rec["line"] == 1


# ------------------------------------------------------------------------------------------------ HTTP
def test_http_upload_alone_and_text_alone(client, index):
    _, photos, _, ids = index
    r = client.post("/search", data={"k": "3"}, files={"image": ("q.png", (photos / ids[5]).read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "image" and ids[5] not in [x["id"] for x in body["results"]]  # same bytes: excluded
    assert body["reference"]["indexed"]["id"] == ids[5] and [x["rank"] for x in body["results"]] == [1, 2, 3]
    r = client.post("/search", data={"text": "red", "k": "2"})
    assert r.status_code == 200 and r.json()["reference"] is None and r.json()["mode"] == "text"
    assert "decode" in r.headers["server-timing"]


@pytest.mark.parametrize("form, status, code", [
    ({"text": ""}, 400, "reference_required"),
    ({"text": "   "}, 400, "reference_required"),
    ({}, 400, "reference_required"),
    ({"text": "red", "method": "sum"}, 400, "query_incomplete"),
    ({"text": "red", "method": "image"}, 400, "query_incomplete"),
    ({"item_id": "REF", "method": "sum"}, 400, "query_incomplete"),
    ({"item_id": "REF", "text": " ", "method": "text"}, 400, "query_incomplete"),
    ({"item_id": "REF", "method": "no-such-method"}, 400, "method_unavailable"),
    ({"text": "red", "method": "no-such-method"}, 400, "method_unavailable"),
    ({"item_id": "no/such/item.png"}, 404, "unknown_item"),
    ({"text": "red", "item_id": "REF", "method": "text"}, 200, None),
    ({"text": "red", "item_id": "REF", "method": ""}, 200, None),
])
def test_http_query_rule(client, index, form, status, code):
    form = {k: (index[3][0] if v == "REF" else v) for k, v in form.items()}
    r = client.post("/search", data=form)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_page_sends_no_method_for_the_default_and_allows_a_query_without_a_reference(client):
    js = client.get("/static/app.js").text
    assert "Choose a reference image first." not in js and "state.defaultMethod" in js
    html = client.get("/").text
    assert 'id="clear-reference"' in html and "optional" in html


# ------------------------------------------------------------------------------------------------ batch
def _write(path: Path, content) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_batch_jsonl_answers_every_good_row_with_line_numbers(index, tmp_path):
    _, photos, idx, ids = index
    lines = [json.dumps({"image": ids[0], "text": "darker"}), json.dumps({"text": "a blue square"}), "",
             json.dumps({"image": str(photos / ids[1])}), "{not json",
             json.dumps({"image": str(tmp_path / "nope.png")}),
             json.dumps({"image": ids[2], "text": None})]
    queries = _write(tmp_path / "q.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    res = zscir("search", idx, "--queries", queries, "-k", "3", "--output", out)
    assert res.exit_code == 1, res.output  # some rows refused, the others answered
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["line"] for r in recs] == [1, 2, 4, 5, 6, 7]
    ok = {r["line"]: r for r in recs if "error" not in r}
    assert set(ok) == {1, 2, 4, 7}
    assert [ok[n]["mode"] for n in (1, 2, 4, 7)] == ["composed", "text", "image", "image"]
    assert ids[1] not in [h["id"] for h in ok[4]["hits"]] and ok[4]["reference"]["matched_by"] == "path"
    assert all([h["rank"] for h in r["hits"]] == [1, 2, 3] for r in ok.values())
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errs) == 2 and errs[0].startswith(f"error: {queries}:5: not JSON") and ":6: " in errs[1]
    assert "4 of 6 queries answered" in res.stderr and "Traceback" not in res.output


def test_batch_csv_and_the_same_answers_as_single_searches(index, retriever, tmp_path):
    _, _, idx, ids = index
    queries = _write(tmp_path / "q.csv", f'Text,IMAGE\n"darker, please",{ids[0]}\na blue square,\n,{ids[6]}\n')
    res = zscir("search", idx, "--queries", queries, "-k", "4")
    assert res.exit_code == 0, res.output
    recs = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert [r["line"] for r in recs] == [2, 3, 4]
    assert json_triples(recs[0]["hits"]) == triples(retriever.search(ids[0], "darker, please", k=4))
    assert json_triples(recs[1]["hits"]) == triples(retriever.search(text="a blue square", k=4))
    assert json_triples(recs[2]["hits"]) == triples(retriever.search(ids[6], k=4))
    assert "3 of 3 queries answered" in res.stderr


def test_batch_loads_the_model_once(index, tmp_path, monkeypatch):
    import zscir.methods.registry as registry

    _, _, idx, ids = index
    calls = []
    real = registry.create_backbone
    monkeypatch.setattr(registry, "create_backbone", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    rows = [{"image": ids[i % len(ids)], "text": f"variation {i}"} if i % 3 else {"text": f"query {i}"}
            for i in range(30)]
    queries = _write(tmp_path / "q.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = zscir("search", idx, "--queries", queries, "-k", "2")
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 30 and len(calls) == 1


#: rows of a query file that are not queries: (file name, content, line, message part)
BAD_ROWS = [
    ("q.jsonl", "{not json\n", 1, "not JSON"),
    ("q.jsonl", "[1, 2]\n", 1, "expected a JSON object"),
    ("q.jsonl", '"a string"\n', 1, "expected a JSON object"),
    ("q.jsonl", "null\n", 1, "expected a JSON object"),
    ("q.jsonl", "42\n", 1, "expected a JSON object"),
    ("q.jsonl", "{}\n", 1, "nothing to search by"),
    ("q.jsonl", '{"image": null, "text": null}\n', 1, "nothing to search by"),
    ("q.jsonl", '{"image": "", "text": "   "}\n', 1, "nothing to search by"),
    ("q.jsonl", '{"imgae": "a.png"}\n', 1, "unknown key(s) 'imgae'"),
    ("q.jsonl", '{"image": "a.png", "k": 5}\n', 1, "unknown key(s) 'k'"),
    ("q.jsonl", '{"image": 3}\n', 1, "image must be a string"),
    ("q.jsonl", '{"image": ["a.png"]}\n', 1, "image must be a string"),
    ("q.jsonl", '{"text": {"x": 1}}\n', 1, "text must be a string"),
    ("q.jsonl", '{"text": true}\n', 1, "text must be a string"),
    ("q.jsonl", '{"image": "a\\u0000b.png"}\n', 1, "NUL"),
    ("q.jsonl", b'{"text": "caf\xe9"}\n', 1, "not UTF-8"),
    ("q.jsonl", "[" * 100_000 + "\n", 1, "not JSON"),
    ("q.jsonl", '{"text": "ok"}\n\n\n{"text": 1}\n', 4, "text must be a string"),
    ("q.jsonl", '{"text": "ok"}\r\n{"image": 1}\r\n', 2, "image must be a string"),
    ("q.csv", "image,text\na.png,red,extra\n", 2, "3 values for 2 column(s)"),
    ("q.csv", 'image,text\n"a\x00b.png",red\n', 2, "NUL"),
    ("q.csv", "text\nred\n\n,x\n", 4, "2 values for 1 column(s)"),
]


@pytest.mark.parametrize("name, content, line, needle", BAD_ROWS)
def test_bad_rows_are_errors_with_their_line(tmp_path, name, content, line, needle):
    rows = load_queries(_write(tmp_path / name, content))
    errors = [r for r in rows if isinstance(r, RowError)]
    assert errors and errors[-1].line == line and needle in errors[-1].message, rows


@pytest.mark.parametrize("name, content, good", [
    ("q.jsonl", '\ufeff{"text": "bom"}\n', [(1, None, "bom")]),
    ("q.ndjson", '{"image": "a.png"}\n{"image": "b.png", "text": "x"}', [(1, "a.png", None), (2, "b.png", "x")]),
    ("Q.JSONL", '{"text": "upper-case extension"}\n', [(1, None, "upper-case extension")]),
    ("q.csv", "\ufeffimage,text\na.png,\n", [(2, "a.png", None)]),
    ("q.csv", 'text,image\n"multi\nline",a.png\n', [(3, "a.png", "multi\nline")]),
    ("q.csv", "IMAGE\na.png\nb.png\n", [(2, "a.png", None), (3, "b.png", None)]),
    ("q.csv", "image,text\n,\n , \n,red\n", [(4, None, "red")]),  # a spreadsheet's empty rows are skipped
    ("q.csv", "image , text\r\na.png , red\r\n", [(2, "a.png ", " red")]),
])
def test_good_rows(tmp_path, name, content, good):
    rows = load_queries(_write(tmp_path / name, content))
    assert [(r.line, r.image, r.text) for r in rows] == good


@pytest.mark.parametrize("name, content, needle", [
    ("q.txt", "image,text\n", "expected a .jsonl or .csv"),
    ("q", "{}", "expected a .jsonl or .csv"),
    ("q.jsonl", "", "no queries"),
    ("q.jsonl", "\n \n\n", "no queries"),
    ("q.csv", "", "no queries"),
    ("q.csv", "image,text\n", "no queries"),
    ("q.csv", "picture,words\na,b\n", "must name the columns"),
    ("q.csv", "image,image\na,b\n", "each once"),
    ("q.csv", "image,text,k\na,b,3\n", "must name the columns"),
    ("q.csv", b"image,text\na.png,caf\xe9\n", "line 2 is not UTF-8"),
])
def test_unusable_query_files(tmp_path, name, content, needle):
    with pytest.raises(QueryFileError, match=needle.replace(".", r"\.")):
        load_queries(_write(tmp_path / name, content))


@pytest.mark.parametrize("case, needle", [
    ("missing", "No such file"),
    ("folder", "is a folder"),
    ("extension", "expected a .jsonl or .csv"),
    ("empty", "no queries"),
    ("with-image", "--image, --text and --grid are for one query"),
    ("with-grid", "--image, --text and --grid are for one query"),
    ("output-exists", "exists; zscir does not overwrite it"),
    ("output-in-missing-folder", "does not exist"),
    ("output-is-a-folder", "is a folder"),
])
def test_batch_mistakes_fail_before_the_model_load(index, tmp_path, monkeypatch, case, needle):
    import zscir.methods.registry as registry
    from test_cli_errors import assert_one_error_line

    def no_model(*a, **kw):
        raise AssertionError("the model was loaded before the mistake was reported")

    monkeypatch.setattr(registry, "create_backbone", no_model)
    q = _write(tmp_path / "q.jsonl", '{"text": "red"}\n')
    extra: list = []
    queries = q
    if case == "missing":
        queries = tmp_path / "none.jsonl"
    elif case == "folder":
        queries = tmp_path / "dir.jsonl"
        queries.mkdir()
    elif case == "extension":
        queries = _write(tmp_path / "q.json", "{}")
    elif case == "empty":
        queries = _write(tmp_path / "e.jsonl", "")
    elif case == "with-image":
        extra = ["--image", index[3][0]]
    elif case == "with-grid":
        extra = ["--grid", tmp_path / "g.png"]
    elif case == "output-exists":
        extra = ["--output", _write(tmp_path / "keep.jsonl", "precious")]
    elif case == "output-in-missing-folder":
        extra = ["--output", tmp_path / "no-folder" / "o.jsonl"]
    elif case == "output-is-a-folder":
        extra = ["--output", tmp_path]
    assert_one_error_line(zscir("search", index[2], "--queries", queries, *extra), needle)
    if case == "output-exists":
        assert (tmp_path / "keep.jsonl").read_text() == "precious"


@pytest.mark.parametrize("image, needle", [
    ("MISSING", "neither an indexed item id nor an image file"),
    ("CORRUPT", "not a supported image"),
    ("EMPTY", "empty"),
    ("FOLDER", "not"),
])
def test_unreadable_reference_rows_are_refused_and_the_rest_answered(retriever, tmp_path, image, needle):
    paths = {"MISSING": tmp_path / "missing.png", "CORRUPT": _write(tmp_path / "c.png", b"\x89PNG\r\n\x1a\nbroken"),
             "EMPTY": _write(tmp_path / "e.png", b""), "FOLDER": tmp_path}
    rows = [QueryRow(1, str(paths[image]), "red"), QueryRow(2, None, "red"), RowError(3, "bad")]
    recs = list(answer_queries(retriever, rows, k=2))
    assert "error" in recs[0] and needle in recs[0]["error"].lower() + recs[0]["error"], recs[0]
    assert [h["rank"] for h in recs[1]["hits"]] == [1, 2] and recs[2] == {"line": 3, "error": "bad"}


def test_batch_errors_that_concern_every_row_stop_the_command(index, tmp_path):
    from test_cli_errors import assert_one_error_line

    q = _write(tmp_path / "q.jsonl", '{"text": "red"}\n{"image": "x.png"}\n')
    assert_one_error_line(zscir("search", index[2], "--queries", q, "-m", "no-such-method"), "no-such-method")


def test_grid_of_a_text_alone(index, tmp_path):
    res = zscir("search", index[2], "--text", "red", "-k", "3", "--grid", tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    im = Image.open(io.BytesIO((tmp_path / "g.png").read_bytes()))
    assert im.width == 3 * (160 + 4) + 4  # three result tiles, no reference tile

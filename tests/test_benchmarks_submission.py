"""Test-server submission files: generated files pass the validator, broken ones are rejected."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest_benchmarks import RandomComposer, circo_root, cirr_root  # noqa: F401  (fixtures)
from zscir.eval.benchmarks import load_cirr, validate_submission, write_submission

pytestmark = pytest.mark.benchmarks

FAST = {"progress": False, "batch_size": 512}


@pytest.fixture(scope="module")
def cirr_files(cirr_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cirr_sub")
    paths = write_submission("cirr", cirr_root.root, "test1", RandomComposer(cirr_root), out,
                             cache_dir=out / "cache", **FAST)
    return {json.loads(p.read_text())["metric"]: p for p in paths}


@pytest.fixture(scope="module")
def circo_file(circo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("circo_sub")
    (path,) = write_submission("circo", circo_root.root, None, RandomComposer(circo_root), out,
                               cache_dir=out / "cache", **FAST)
    return path


def _rewrite(tmp_path: Path, data: dict, name: str = "sub.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


# ------------------------------------------------------------------------------------------------ CIRR
def test_cirr_submission_format(cirr_files, cirr_root):
    assert set(cirr_files) == {"recall", "recall_subset"}
    queries = {str(q.pairid): q for q in load_cirr(cirr_root.root, "test1").queries}
    for metric, length in (("recall", 50), ("recall_subset", 3)):
        data = json.loads(cirr_files[metric].read_text())
        assert data.pop("version") == "rc2" and data.pop("metric") == metric
        assert set(data) == set(queries) and len(data) == 4148
        for key, names in data.items():
            assert len(names) == length == len(set(names))
            assert queries[key].reference not in names
            assert not any(n.endswith(".png") for n in names)
        assert validate_submission(cirr_files[metric], "cirr", data_root=cirr_root.root) == []
        assert validate_submission(cirr_files[metric], "cirr") == []  # structure only
    meta = json.loads((cirr_files["recall"].parent / "cirr_test1_random.meta.json").read_text())
    assert meta["protocol"]["format"] == "cirr" and meta["method"] == {"method": "random"}


def _first_key(data: dict) -> str:
    return next(k for k in data if k not in ("version", "metric"))


@pytest.mark.parametrize("metric", ["recall", "recall_subset"])
def test_cirr_validator_rejects(cirr_files, cirr_root, tmp_path, metric):
    """Each kind of mistake is made on a different pairid of one file; every one must be reported."""
    good = json.loads(cirr_files[metric].read_text())
    queries = {str(q.pairid): q for q in load_cirr(cirr_root.root, "test1").queries}
    k_dup, k_missing, k_short, k_ref, k_ext, k_outside = [k for k in good if k not in ("version", "metric")][:6]
    bad = copy.deepcopy(good)
    bad[k_dup][1] = bad[k_dup][0]
    del bad[k_missing]
    bad[k_short] = bad[k_short][:-1]
    bad[k_ref][0] = queries[k_ref].reference
    bad[k_ext][0] = bad[k_ext][0] + ".png"
    bad["99999999"] = good[k_dup]
    bad["version"] = "rc1"
    if metric == "recall_subset":
        full = json.loads(cirr_files["recall"].read_text())[k_outside]
        bad[k_outside][0] = next(n for n in full if n not in queries[k_outside].members)
    errors = validate_submission(_rewrite(tmp_path, bad), "cirr", data_root=cirr_root.root)
    text = "\n".join(errors)
    assert f"pairid '{k_dup}': duplicate names" in text
    assert "missing pairids of test1: 1" in text and k_missing in text
    assert f"pairid '{k_short}': {len(good[k_short]) - 1} names, expected exactly" in text
    assert f"pairid '{k_ref}': contains its reference image" in text
    assert f"pairid '{k_ext}': names must not have a file extension" in text
    assert "pairid '99999999': not a pairid of the split" in text
    assert "'version' must be" in text
    if metric == "recall_subset":
        assert f"pairid '{k_outside}': names outside the query's img_set members" in text
    # structural checks work without the annotations; reference / membership checks need them
    errors = validate_submission(_rewrite(tmp_path, bad), "cirr")
    text = "\n".join(errors)
    assert f"pairid '{k_short}'" in text and f"pairid '{k_dup}'" in text and f"pairid '{k_ext}'" in text
    assert "reference" not in text


# ------------------------------------------------------------------------------------------------ CIRCO
def test_circo_submission_format(circo_file, circo_root):
    data = json.loads(circo_file.read_text())
    assert set(data) == {str(i) for i in range(800)}
    for ids in data.values():
        assert len(ids) == 50 == len(set(ids)) and all(isinstance(i, int) for i in ids)
    assert validate_submission(circo_file, "circo", data_root=circo_root.root) == []
    assert validate_submission(circo_file, "circo") == []


def test_circo_validator_rejects(circo_file, circo_root, tmp_path):
    good = json.loads(circo_file.read_text())

    def errors(data, root=circo_root.root):
        return validate_submission(_rewrite(tmp_path, data), "circo", data_root=root)

    bad = copy.deepcopy(good)
    bad["5"][3] = bad["5"][2]
    assert any("duplicate" in e for e in errors(bad))
    bad = copy.deepcopy(good)
    del bad["17"]
    assert any("missing query ids" in e for e in errors(bad))
    assert any("missing query ids" in e for e in errors(bad, root=None))  # ids must be 0..N-1
    bad = copy.deepcopy(good)
    bad["3"] = [str(i) for i in bad["3"]]
    bad["3"][1] = bad["3"][0]
    assert any("duplicate" in e for e in errors(bad))  # duplicates stay errors when written as strings
    bad = copy.deepcopy(good)
    bad["3"][0] = "12a"
    assert any("image ids" in e for e in errors(bad))
    bad = copy.deepcopy(good)
    bad["3"][0] = 999999999
    assert any("not in the gallery" in e for e in errors(bad))
    assert validate_submission(tmp_path / "nope.json", "circo") != []
    (tmp_path / "broken.json").write_text("{not json")
    assert "not valid JSON" in validate_submission(tmp_path / "broken.json", "circo")[0]


def test_circo_validator_accepts_what_the_server_accepts(circo_file, circo_root, tmp_path):
    """String ids (SEARLE writes them) and lists not of 50 ids: valid, with a warning (issue 14 §6)."""
    from zscir.eval.benchmarks import check_submission

    data = json.loads(circo_file.read_text())
    data["3"] = [str(i) for i in data["3"]]
    data["4"] = data["4"][:49]
    data["5"] = data["5"] + [data["6"][0]] if data["6"][0] not in data["5"] else data["5"][:10]
    path = _rewrite(tmp_path, data)
    for root in (circo_root.root, None):
        check = check_submission(path, "circo", data_root=root)
        assert check.errors == []
        text = " ".join(check.warnings)
        assert "as strings" in text and "'3'" in text and "'4 (49 ids)'" in text
    assert validate_submission(path, "circo", data_root=circo_root.root) == []
    res = CliRunner().invoke(_app(), ["validate-submission", str(path), "--benchmark", "circo"])
    assert res.exit_code == 0 and "warning:" in res.output and "valid circo submission" in res.output


def test_submission_with_a_repeated_key_is_invalid(circo_file, tmp_path):
    text = circo_file.read_text()
    assert text.startswith("{")
    first = json.loads(text)["0"]
    path = tmp_path / "repeated.json"
    path.write_text('{"0": ' + json.dumps(first) + ", " + text[1:])
    errors = validate_submission(path, "circo")
    assert errors and "more than once" in errors[0] and "'0'" in errors[0]


def test_fashioniq_has_no_submission_format(tmp_path):
    with pytest.raises(ValueError):
        write_submission("fashioniq", tmp_path, "test", None, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        validate_submission(tmp_path / "x.json", "fashioniq")


# ------------------------------------------------------------------------------------------------ CLI
def _app() -> typer.Typer:
    from zscir.cli.benchmarks import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # force a multi-command app
        pass

    register(app)
    return app


def test_cli_validate_submission(circo_file, circo_root, tmp_path):
    runner = CliRunner()
    res = runner.invoke(_app(), ["validate-submission", str(circo_file), "--benchmark", "circo",
                                 "--data-root", str(circo_root.root)])
    assert res.exit_code == 0, res.output
    assert "valid circo submission" in res.output
    bad = json.loads(circo_file.read_text())
    del bad["0"]
    res = runner.invoke(_app(), ["validate-submission", str(_rewrite(tmp_path, bad)), "--benchmark", "circo"])
    assert res.exit_code == 1 and "missing query ids" in res.output


def test_cli_submit(circo_root, tmp_path, monkeypatch):
    import zscir.methods

    calls = {}

    def fake_create_composer(method, model=None, checkpoint=None, device="cpu", **options):
        calls["args"] = (method, model, checkpoint, device, options)
        return RandomComposer(circo_root)

    monkeypatch.setattr(zscir.methods, "create_composer", fake_create_composer, raising=False)
    res = CliRunner().invoke(_app(), ["submit", "--benchmark", "circo", "--data-root", str(circo_root.root),
                                      "--method", "random", "--out-dir", str(tmp_path), "--no-progress",
                                      "--cache-dir", str(tmp_path / "cache"), "--option", "weight=0.5",
                                      "--flag", "use_shared_concept=true"])
    assert res.exit_code == 0, res.output
    assert calls["args"] == ("random", None, None, "cpu", {"weight": 0.5})
    assert validate_submission(tmp_path / "circo_test_random.json", "circo", data_root=circo_root.root) == []
    meta = json.loads((tmp_path / "circo_test_random.meta.json").read_text())
    assert meta["protocol"]["use_shared_concept"] is True
    res = CliRunner().invoke(_app(), ["submit", "--benchmark", "circo", "--data-root", str(tmp_path / "missing"),
                                      "--method", "random", "--out-dir", str(tmp_path)])
    assert res.exit_code == 2 and "does not exist" in res.output

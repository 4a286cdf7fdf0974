"""The manifest reader (zscir.data.tables) refuses a pyarrow that can run code stored in a parquet file."""

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from zscir.data.records import DataError  # noqa: E402
from zscir.data.tables import read_header, unsafe_pyarrow_message, version_tuple  # noqa: E402


@pytest.mark.parametrize("text,want", [("14.0.1", (14, 0, 1)), ("15.0.0.dev1", (15, 0, 0)), ("9", (9,)),
                                       ("26.0.1", (26, 0, 1))])
def test_version_tuple(text, want):
    assert version_tuple(text) == want


@pytest.mark.parametrize("version", ["12.0.1", "14.0.0", "13.0.0.dev5"])
def test_manifest_parquet_refused_with_an_unsafe_pyarrow(tmp_path, monkeypatch, version):
    pq.write_table(pa.table({"filepath": ["a.jpg"], "title": ["x"]}), tmp_path / "m.parquet")
    monkeypatch.setattr(pa, "__version__", version)
    assert unsafe_pyarrow_message(version)
    with pytest.raises(DataError, match="can run code stored in a parquet file"):
        read_header(tmp_path / "m.parquet")
    monkeypatch.setattr(pa, "__version__", "14.0.1")
    assert unsafe_pyarrow_message("14.0.1") is None
    assert read_header(tmp_path / "m.parquet") == ["filepath", "title"]

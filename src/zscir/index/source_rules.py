"""Rules the index sources share: partition arguments, what a value names, reading one picture's bytes.

Why one owner: a WebDataset shard, a table row and a folder file all end as raw bytes handed to the index's
decoder, and the trust rules must be the same for each, whoever lists them:

* **Local files** are read by `zscir.data.imageio.read_file_bytes` (regular files only, opened without
  blocking, at most ``max_bytes``): a FIFO, a device, a folder or a huge file is a refused record, never a
  hang.
* **Commands** (``pipe:CMD``) run only from a *shard spec the user typed* with ``allow_pipe=True``
  (``--allow-pipe``; the one check is `zscir.data.spec.check_shard_commands`). A ``pipe:`` value inside a
  table row is data and is never run, whatever the options.
* **URLs** (``https://``, ``s3://``, ``gs://``, ``memory://`` ...) are fetched in-process through `fsspec`,
  never through a shell, and only with ``allow_remote=True`` (``--allow-remote``). A row may only name the
  schemes of `ROW_URL_SCHEMES` (the object stores and the web); other fsspec protocols (``ssh``, ``dask``,
  ``reference``...) are refused for rows even with the option.
* ``file://`` URLs are local paths.

Errors of a whole source are `SourceError` (one line); errors of one picture are *error records*
(`error_record`): ``SourceRecord(id, None, "code: reason")``, counted and listed by the engine.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlparse

from zscir.data.imageio import ImageLimits, ImageRejected, read_file_bytes
from zscir.index.sources import SourceError, SourceRecord

__all__ = ["DEFAULT_MAX_BYTES", "ROW_URL_SCHEMES", "MAX_DEFAULT_PARTITIONS", "check_partition", "value_scheme",
           "local_path", "error_record", "split_error", "read_local_bytes", "read_url_bytes", "open_url",
           "check_protocol", "refuse_options", "source_options_help"]

#: the byte cap of one picture: the image loader's default (`ImageLimits.max_bytes`)
DEFAULT_MAX_BYTES = ImageLimits().max_bytes
#: URL schemes a table row may name (with ``allow_remote``): the web and object stores; ``memory`` is fsspec's
#: in-process file system (tests, notebooks). Everything else in a row is refused.
ROW_URL_SCHEMES = frozenset({"http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf", "memory"})
#: the most partitions a source proposes by itself (one per shard, or per 100k table rows, up to this)
MAX_DEFAULT_PARTITIONS = 10_000

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

_HELP = {
    "allow_pipe": "Let WebDataset shards be 'pipe:CMD' (runs CMD through sh) or URLs. A 'pipe:' value in a "
                  "table row is never run.",
    "allow_remote": "Fetch http(s)://, s3://, gs:// ... URLs through fsspec: URL shards, a URL table, URLs in "
                    "table rows. Without it such a row is a listed error.",
    "image_column": "Table column of the image path or URL (default: image_path, url, filepath, file_name, "
                    "path, filename).",
    "caption_column": "Table column of the caption (default: title, text, caption, ... when present).",
    "shard_ids": "Item ids are SHARD/KEY instead of the sample's KEY (for shards whose keys repeat).",
}


def source_options_help() -> dict[str, str]:
    """Option name -> help text, for the CLI (``--allow-pipe``, ``--allow-remote``, ``--image-column``...)."""
    return dict(_HELP)


def check_partition(i: int, n: int) -> None:
    """`SourceError` unless ``0 <= i < n`` are integers (a bool is no partition number)."""
    for name, v in (("partition count", n), ("partition", i)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise SourceError(f"{name} must be an integer, got {v!r}")
    if n <= 0:
        raise SourceError(f"partition count must be at least 1, got {n}")
    if not 0 <= i < n:
        raise SourceError(f"partition {i} does not exist: partitions are numbered 0..{n - 1}")


def value_scheme(value: str) -> str:
    """What a path/URL value names: ``''`` a local path, ``'pipe'`` a command, else the URL scheme (lower)."""
    if value[:5].lower() == "pipe:":
        return "pipe"
    m = _URL.match(value)
    return m.group(1).lower() if m else ""


def local_path(value: str) -> str:
    """The local path of a ``file://`` URL (percent-decoded), or ``value`` itself."""
    if value_scheme(value) == "file":
        return unquote(urlparse(value).path)
    return value


def error_record(id: str, code: str, reason: str, **meta: Any) -> SourceRecord:
    """A picture that cannot be read: no bytes, ``error = "code: reason"`` (see `split_error`)."""
    return SourceRecord(id=id, data=None, error=f"{code}: {reason}", meta=meta)


def split_error(error: str) -> tuple[str, str]:
    """``(code, reason)`` of an error record's ``error`` (the engines list skipped items as code + reason)."""
    code, _, reason = error.partition(": ")
    return (code, reason) if reason else ("unreadable", error)


def read_local_bytes(path: str, max_bytes: int) -> bytes:
    """A local picture's bytes under the image loader's checks; `ImageRejected` (with a code) otherwise."""
    try:
        return read_file_bytes(path, max_bytes)
    except ValueError as e:  # os.open: "embedded null byte" (ImageRejected is a ValueError too)
        if isinstance(e, ImageRejected):
            raise
        raise ImageRejected("unreadable", f"not a usable path ({e})") from None


def check_protocol(url: str) -> None:
    """`SourceError` unless fsspec can open ``url``'s scheme here (unknown scheme, driver not installed)."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with huggingface-hub
        raise SourceError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
    scheme = value_scheme(url)
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        raise SourceError(f"{url}: fsspec cannot open {scheme}:// here ({str(e).splitlines()[0][:200]})") from None


def open_url(url: str):
    """A binary file object of ``url`` through fsspec (in-process; no shell). Raises ``OSError`` and friends."""
    import fsspec

    return fsspec.open(url, "rb").open()


def read_url_bytes(url: str, max_bytes: int) -> bytes:
    """The bytes of a picture at ``url`` (fsspec), at most ``max_bytes``; `ImageRejected` otherwise."""
    try:
        with open_url(url) as f:
            data = f.read(max_bytes + 1)
    except ImageRejected:
        raise
    except FileNotFoundError:
        raise ImageRejected("unreadable", "no such file at this URL") from None
    except ImportError as e:
        raise ImageRejected("unreadable", f"fsspec cannot open this scheme here ({e})") from None
    except Exception as e:  # noqa: BLE001 - fsspec drivers raise many types (HTTP errors, client errors)
        raise ImageRejected("unreadable", f"cannot fetch ({type(e).__name__}: {str(e)[:200]})") from None
    if len(data) > max_bytes:
        raise ImageRejected("file_too_large", f"more than the limit of {max_bytes} bytes")
    if not data:
        raise ImageRejected("empty", "empty file")
    return data


def refuse_options(kind: str, options: Mapping[str, Any], accepted: Iterable[str]) -> dict[str, Any]:
    """The options a source kind takes; `SourceError` for one it does not take that is set (not None/False).

    The CLI passes every source option to whichever kind the spec names; an option left at its default is
    dropped, one the user set for another kind (``--image-column`` for shards) is an error, not ignored.
    """
    accepted = set(accepted)
    out = {}
    for k, v in options.items():
        if k in accepted:
            out[k] = v
        elif v is not None and v is not False:
            raise SourceError(f"option {k!r} does not apply to a {kind} source (it takes: "
                              f"{', '.join(sorted(accepted))})")
    return out

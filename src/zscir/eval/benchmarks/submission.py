"""Test-server submission files for CIRR (test1) and CIRCO (test), and a validator for them.

The test servers accept exactly one format each and reject a file as a whole on any deviation, after an
upload and sometimes a queue; checking locally first saves a round trip. The formats (those SEARLE's
``generate_test_submission.py`` writes and the servers document):

* CIRR (https://cirr.cecs.anu.edu.au) — two files, ``{"version": "rc2", "metric": "recall", "<pairid>":
  [50 image names]}`` and ``{"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}``; names
  without file extension, the reference image never among them, every test1 pairid present; the
  subset names are members of the query's ``img_set`` other than the reference.
* CIRCO (https://circo.micc.unifi.it) — ``{"<query id>": [ranked COCO image ids]}`` for every test query
  (ids 0..N-1). The server (CIRCO's ``evaluation.py``) rejects missing and unknown query ids and duplicate
  image ids in a ranking; it accepts ids written as strings (SEARLE's ``generate_test_submission.py`` writes
  ``"123456"``) and does not check the length. zscir writes 50 integer ids; the validator accepts string
  ids and other lengths with a *warning* (mAP@K only sees the first K <= 50 ids, and a shorter list can
  only score lower), and keeps as errors what the server refuses.

`check_submission` returns errors and warnings, `validate_submission` just the errors. Without
``data_root`` only the structure can be checked (lengths, types, duplicates, extensions, consecutive CIRCO
ids); with it, also the query-id set, that every name/id exists in the split, and the reference / subset
rules. A JSON object that repeats a key is an error for both benchmarks (the later value would silently
replace the earlier query).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...methods.base import Composer
from .circo import load_circo
from .cirr import load_cirr, normalize_cirr_split

logger = logging.getLogger(__name__)

__all__ = ["write_submission", "validate_submission", "check_submission", "SubmissionCheck", "CIRR_RECALL_LENGTH",
           "CIRR_SUBSET_LENGTH", "CIRCO_LENGTH"]

CIRR_RECALL_LENGTH = 50
CIRR_SUBSET_LENGTH = 3
CIRCO_LENGTH = 50
_CIRR_METRICS = {"recall": CIRR_RECALL_LENGTH, "recall_subset": CIRR_SUBSET_LENGTH}
_INT_KEY = re.compile(r"^(0|[1-9]\d*)$")
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|webp|gif|bmp)$", re.IGNORECASE)
_DEFAULT_SPLIT = {"cirr": "test1", "circo": "test"}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "method"


def write_submission(
    name: str,
    data_root: Path | str,
    split: str | None,
    composer: Composer,
    out_dir: Path | str,
    *,
    batch_size: int = 64,
    cache_dir: Path | str | None = None,
    device: str = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    stem: str | None = None,
    **protocol_flags: Any,
) -> list[Path]:
    """Rank the test split with ``composer`` and write the server's submission file(s).

    Returns the submission paths (CIRR: ``<stem>_recall.json`` and ``<stem>_recall_subset.json``; CIRCO:
    ``<stem>.json``); ``<stem>.meta.json`` next to them records the method and protocol flags. Every file is
    validated after writing; a file that fails is a bug and raises ``RuntimeError``.
    """
    from .runner import run_benchmark

    name = name.lower()
    if name not in _DEFAULT_SPLIT:
        raise ValueError(f"no test server submission format for {name!r}; expected one of cirr, circo")
    split = split or _DEFAULT_SPLIT[name]
    run = run_benchmark(name, data_root, split, composer, batch_size=batch_size, cache_dir=cache_dir, device=device,
                        progress=progress, num_workers=num_workers, **protocol_flags)
    split = run.result["split"]
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{name}_{split}_{_safe(str(getattr(composer, 'name', 'method')))}"
    written: list[Path] = []
    if name == "cirr":
        for metric, length in _CIRR_METRICS.items():
            payload: dict[str, Any] = {"version": "rc2", "metric": metric}
            payload.update({k: v[:length] for k, v in run.rankings[metric].items()})
            path = out / f"{stem}_{metric}.json"
            path.write_text(json.dumps(payload, sort_keys=True), encoding="utf-8")
            written.append(path)
    else:
        payload = {k: [int(i) for i in v[:CIRCO_LENGTH]] for k, v in run.rankings["ranking"].items()}
        path = out / f"{stem}.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        written.append(path)
    meta = {k: v for k, v in run.result.items() if k != "metrics"}
    meta["submission_files"] = [p.name for p in written]
    (out / f"{stem}.meta.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    for path in written:
        errors = validate_submission(path, name, data_root=data_root, split=split)
        if errors:
            raise RuntimeError(f"{path}: the generated submission is invalid: {'; '.join(errors[:5])}")
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return written


# ------------------------------------------------------------------------------------------ validation
def _summarise(label: str, items: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"{label}: {len(items)} ({shown}{', ...' if len(items) > limit else ''})"


def _validate_cirr(data: dict[str, Any], data_root: Path | str | None, split: str | None) -> list[str]:
    errors: list[str] = []
    if data.get("version") != "rc2":
        errors.append(f"'version' must be \"rc2\", got {data.get('version')!r}")
    metric = data.get("metric")
    if not isinstance(metric, str) or metric not in _CIRR_METRICS:
        errors.append(f"'metric' must be \"recall\" or \"recall_subset\", got {metric!r}")
        return errors
    length = _CIRR_METRICS[metric]
    preds = {k: v for k, v in data.items() if k not in ("version", "metric")}
    queries = None
    if data_root is not None:
        cirr = load_cirr(data_root, normalize_cirr_split(split or "test1"))
        queries = {str(q.pairid): q for q in cirr.queries}
        names = {str(im.id) for im in cirr.gallery}
        missing = sorted(set(queries) - set(preds), key=int)
        if missing:
            errors.append(_summarise(f"missing pairids of {cirr.split}", missing))
    for key, ranked in preds.items():
        where = f"pairid {key!r}"
        if not _INT_KEY.match(key):
            errors.append(f"{where}: keys must be pairids (integers as strings)")
            continue
        if queries is not None and key not in queries:
            errors.append(f"{where}: not a pairid of the split")
            continue
        if not isinstance(ranked, list) or not all(isinstance(n, str) for n in ranked):
            errors.append(f"{where}: expected a list of {length} image names (strings)")
            continue
        if len(ranked) != length:
            errors.append(f"{where}: {len(ranked)} names, expected exactly {length}")
        dups = sorted({n for n in ranked if ranked.count(n) > 1})
        if dups:
            errors.append(f"{where}: duplicate names {dups}")
        with_ext = [n for n in ranked if _IMAGE_SUFFIX.search(n)]
        if with_ext:
            errors.append(f"{where}: names must not have a file extension: {with_ext[:3]}")
        if queries is not None:
            q = queries[key]
            if q.reference in ranked:
                errors.append(f"{where}: contains its reference image {q.reference!r}")
            unknown = [n for n in ranked if n not in names]
            if unknown:
                errors.append(f"{where}: names not in the split: {unknown[:3]}")
            if metric == "recall_subset":
                outside = [n for n in ranked if n not in q.members and n != q.reference]
                if outside:
                    errors.append(f"{where}: names outside the query's img_set members: {outside[:3]}")
    return errors


def _circo_id(value: Any) -> int | None:
    """A CIRCO image id as the server reads it: an int, or a string of digits (SEARLE writes strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_KEY.match(value.lstrip("0") or "0"):
        return int(value)
    return None


def _validate_circo(data: dict[str, Any], data_root: Path | str | None, split: str | None,
                    warnings: list[str]) -> list[str]:
    errors: list[str] = []
    string_ids, other_lengths = [], []
    bad_keys = [k for k in data if not _INT_KEY.match(k)]
    if bad_keys:
        errors.append(_summarise("keys that are not query ids (integers as strings)", bad_keys))
    keys = sorted((int(k) for k in data if _INT_KEY.match(k)))
    gallery_ids = None
    if data_root is not None:
        root = Path(data_root).expanduser()
        has_images = any((root / d).is_dir() for d in ("unlabeled2017", "COCO2017_unlabeled/unlabeled2017"))
        circo = load_circo(root, split or "test", with_gallery=has_images)
        expected = {q.id for q in circo.queries}
        if has_images:
            gallery_ids = {int(im.id) for im in circo.gallery}
    else:
        expected = set(range(len(keys)))  # CIRCO's evaluation asserts ids 0..N-1
    missing = sorted(expected - set(keys))
    extra = sorted(set(keys) - expected)
    if missing:
        errors.append(_summarise("missing query ids", missing))
    if extra:
        errors.append(_summarise("unknown query ids", extra))
    for key in data:
        if not _INT_KEY.match(key):
            continue
        raw = data[key]
        where = f"query {key!r}"
        ranked = [_circo_id(i) for i in raw] if isinstance(raw, list) else None
        if ranked is None or any(i is None for i in ranked):
            errors.append(f"{where}: expected a list of {CIRCO_LENGTH} image ids (integers, or strings of digits)")
            continue
        if any(isinstance(i, str) for i in raw):
            string_ids.append(key)
        if len(ranked) != CIRCO_LENGTH:
            other_lengths.append((key, len(ranked)))
        dups = sorted({i for i in ranked if ranked.count(i) > 1})
        if dups:
            errors.append(f"{where}: duplicate image ids {dups}")
        if gallery_ids is not None:
            unknown = [i for i in ranked if i not in gallery_ids]
            if unknown:
                errors.append(f"{where}: ids not in the gallery: {unknown[:3]}")
    if string_ids:
        warnings.append(_summarise("queries with image ids written as strings (accepted by the server; zscir "
                                   "writes integers)", string_ids))
    if other_lengths:
        warnings.append(_summarise(f"queries whose ranking does not have {CIRCO_LENGTH} ids (accepted by the "
                                   f"server; mAP@K reads the first K <= {CIRCO_LENGTH}, fewer can only score "
                                   "lower)", [f"{k} ({n} ids)" for k, n in other_lengths]))
    return errors


@dataclass
class SubmissionCheck:
    """What `check_submission` found: ``errors`` (the server would refuse the file) and ``warnings``."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _RepeatedKeys(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    repeated = []
    for k, v in pairs:
        if k in seen:
            repeated.append(k)
        seen[k] = v
    if repeated:
        raise _RepeatedKeys(_summarise("keys that occur more than once (the later value replaces the earlier "
                                       "query)", sorted(set(repeated))))
    return seen


def check_submission(
    path: Path | str, benchmark: str, data_root: Path | str | None = None, split: str | None = None
) -> SubmissionCheck:
    """Check a submission file against its server's rules; returns errors and warnings.

    ``benchmark`` is "cirr" (either of the two files) or "circo". ``data_root`` enables the checks that need
    the annotations (query-id coverage, names in the split, references, subset membership); ``split``
    defaults to the test split. Unreadable annotations raise `BenchmarkDataError`.
    """
    benchmark = benchmark.lower()
    if benchmark not in _DEFAULT_SPLIT:
        raise ValueError(f"no submission format for {benchmark!r}; expected cirr or circo")
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_repeated_keys)
    except FileNotFoundError:
        return SubmissionCheck([f"{path}: file not found"])
    except _RepeatedKeys as e:
        return SubmissionCheck([f"{path}: {e}"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return SubmissionCheck([f"{path}: not valid JSON ({e})"])
    except RecursionError:
        return SubmissionCheck([f"{path}: not valid JSON (nested too deeply)"])
    if not isinstance(data, dict):
        return SubmissionCheck([f"{path}: the top level must be a JSON object"])
    if data_root is None:
        logger.info("no data root given: checking the structure of %s only", path)
    check = SubmissionCheck()
    if benchmark == "cirr":
        check.errors = _validate_cirr(data, data_root, split)
    else:
        check.errors = _validate_circo(data, data_root, split, check.warnings)
    return check


def validate_submission(
    path: Path | str, benchmark: str, data_root: Path | str | None = None, split: str | None = None
) -> list[str]:
    """The errors of `check_submission` (empty list = the server accepts the file); warnings are logged."""
    check = check_submission(path, benchmark, data_root=data_root, split=split)
    for w in check.warnings:
        logger.warning("%s: %s", path, w)
    return check.errors

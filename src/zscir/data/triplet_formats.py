"""Triplet manifests: the canonical schema and adapters for the published training sets.

Canonical (JSONL or CSV; what ``zscir data make-triplets`` writes):

==================  ========  =============================================================
field               required  meaning
==================  ========  =============================================================
reference           yes       reference image id (a path under the image root, or an id)
modification        yes       the modification text
target              yes*      target image id (*may be empty when ``target_caption`` is set)
reference_caption   no        caption of the reference
target_caption      no        caption of the target (a text-target triplet has only this)
quality             no        ``hq`` | ``lq``
source              no        provenance (generator, dataset)
id                  no        a row id
scores / score_*    no        numbers (CLIP-score filters...); a JSON object or ``score_<name>`` columns
==================  ========  =============================================================

Adapters map a published layout's rows onto those fields (detected from the columns, or named):
CIRR train (``reference``, ``caption``, ``target_hard``, names resolved through ``image_splits``),
FashionIQ train (``candidate``, ``captions``, ``target``; caption join modes of the FashionIQ protocol),
LaSCo (``query-image``, ``query-text``, ``target-image``), CoVR / CC-CoIR (``pth1``, ``edit``, ``pth2``,
``txt1``, ``txt2``) and InstructPix2Pix-style HF datasets (``input_image``|``original_image``,
``edit_prompt``, ``edited_image``; images embedded in the rows).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from zscir.data.cells import BadCell, parse_json, shorten, text_of
from zscir.data.records import DataError, Problem, Problems, TripletRecord

__all__ = ["FORMATS", "detect_format", "rows_to_triplets", "EMBEDDED"]

#: ``meta`` keys under which adapters of embedded-image sets keep the image payloads
EMBEDDED = ("reference_payload", "target_payload")
_CANON = ("reference", "modification", "target")
_KNOWN = {"id", "reference", "modification", "target", "reference_caption", "target_caption", "quality",
          "source", "scores"}


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _scores(row: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    s = row.get("scores")
    if isinstance(s, str) and s.strip().startswith("{"):
        s = parse_json(s)
    if isinstance(s, dict):
        out.update({k: f for k, v in s.items() if (f := _float(v)) is not None})
    for k, v in row.items():
        if k.startswith("score_") and (f := _float(v)) is not None:
            out[k[6:]] = f
    return out


def _str(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _mod(v: Any) -> str:
    """A modification text (`BadCell` when it is not text or too long; "" when missing)."""
    return text_of(v, "modification") or ""


def _cap(v: Any) -> str | None:
    return text_of(v, "caption")


def _canonical(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    q = _str(row.get("quality"))
    yield TripletRecord(
        reference_id=str(row["reference"]), modification=_mod(row["modification"]),
        target_id=_str(row.get("target")), reference_caption=_cap(row.get("reference_caption")),
        target_caption=_cap(row.get("target_caption")), quality=q.lower() if q else None,
        source=_str(row.get("source")), scores=_scores(row),
        meta={"id": _str(row.get("id")) or str(i), **{k: v for k, v in row.items()
                                                       if k not in _KNOWN and not k.startswith("score_")}})


def _cirr(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    names = opts.get("image_splits") or {}
    ref, tgt = str(row["reference"]), _str(row.get("target_hard"))
    yield TripletRecord(names.get(ref, ref), _mod(row["caption"]), names.get(tgt, tgt) if tgt else None,
                        source="cirr", meta={"id": str(row.get("pairid", i))})


def _fashioniq(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    from zscir.data.fashioniq_captions import compose_fashioniq_texts

    caps = row["captions"]
    if isinstance(caps, str):
        caps = parse_json(caps) if caps.strip().startswith("[") else [caps]
    if not isinstance(caps, (list, tuple)):
        raise BadCell("bad_modification", f"'captions' is {type(caps).__name__}, not a list of texts")
    caps = [_mod(c) for c in caps]
    for j, text in enumerate(compose_fashioniq_texts(caps, opts.get("fiq_caption_mode", "searle"))):
        yield TripletRecord(str(row["candidate"]), text, _str(row.get("target")), source="fashioniq",
                            meta={"id": f"{i}.{j}"})


def _path_of(v: Any) -> str:
    """LaSCo writes images as ``[coco_id, "train2014/COCO_train2014_....jpg"]``."""
    if isinstance(v, (list, tuple)):
        strs = [x for x in v if isinstance(x, str)]
        return strs[-1] if strs else str(v[0])
    return str(v)


def _lasco(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    yield TripletRecord(_path_of(row["query-image"]), _mod(row["query-text"]), _path_of(row["target-image"]),
                        source="lasco", meta={"id": str(row.get("qid", i))})


def _covr(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    yield TripletRecord(str(row["pth1"]), _mod(row["edit"]), _str(row.get("pth2")),
                        reference_caption=_cap(row.get("txt1")), target_caption=_cap(row.get("txt2")),
                        source="covr", scores={k: f for k in ("scores",) if (f := _float(row.get(k))) is not None},
                        meta={"id": str(i)})


def _ip2p(row: dict, i: int, opts: dict) -> Iterator[TripletRecord]:
    src = "input_image" if "input_image" in row else "original_image"
    yield TripletRecord(f"{i}:reference", _mod(row["edit_prompt"]), f"{i}:target",
                        reference_caption=_cap(row.get("original_prompt") or row.get("input")),
                        target_caption=_cap(row.get("edited_prompt") or row.get("output")), source="instructpix2pix",
                        meta={"id": str(i), "reference_payload": row[src], "target_payload": row["edited_image"]})


#: name -> (columns that must all be present (alternatives joined by |), row adapter)
FORMATS: dict[str, tuple[tuple[str, ...], Callable[[dict, int, dict], Iterator[TripletRecord]]]] = {
    "canonical": (_CANON, _canonical),
    "cirr": (("reference", "caption", "target_hard"), _cirr),
    "fashioniq": (("candidate", "captions", "target"), _fashioniq),
    "lasco": (("query-image", "query-text", "target-image"), _lasco),
    "covr": (("pth1", "edit", "pth2"), _covr),
    "instructpix2pix": (("input_image|original_image", "edit_prompt", "edited_image"), _ip2p),
}


def _has(columns: Sequence[str], need: str) -> bool:
    return any(alt in columns for alt in need.split("|"))


def detect_format(columns: Sequence[str], where: str, name: str | None = None) -> str:
    """The format whose required columns are all present (or check ``name``'s); `DataError` names both sides."""
    cols = list(columns)
    if name and name != "auto":
        if name not in FORMATS:
            raise DataError(f"unknown triplet format {name!r}; expected one of {', '.join(FORMATS)}")
        need = FORMATS[name][0]
        missing = [c for c in need if not _has(cols, c)]
        if name == "canonical" and "target" in missing and "target_caption" in cols:
            missing.remove("target")
        if missing:
            raise DataError(f"{where}: the {name} format needs columns {', '.join(need)}; missing "
                            f"{', '.join(missing)}; columns found: {', '.join(cols) or 'none'}")
        return name
    for fmt, (need, _) in FORMATS.items():
        if all(_has(cols, c) for c in need) or (fmt == "canonical" and {"reference", "modification", "target_caption"} <= set(cols)):
            return fmt
    expected = "; ".join(f"{f}: {', '.join(n)}" for f, (n, _) in FORMATS.items())
    raise DataError(f"{where}: not a triplet manifest; columns found: {', '.join(cols) or 'none'}; expected the "
                    f"columns of one format ({expected})")


def rows_to_triplets(rows, fmt: str, opts: dict, where: str,
                     problems: Problems | None = None) -> Iterator[TripletRecord]:
    """Adapt raw rows of format ``fmt``. A row missing a required value, or with a value of the wrong kind,
    raises `DataError` naming the row; a text that is not text or too long (`zscir.data.cells.BadCell`) is
    counted in ``problems`` and the row skipped (without ``problems``: a `DataError` too)."""
    adapt = FORMATS[fmt][1]
    for i, row in enumerate(rows):
        try:
            yield from adapt(row, i, opts)
        except KeyError as e:
            raise DataError(f"{where}: row {i + 1} has no {e.args[0]!r} (columns: "
                            f"{shorten(', '.join(map(str, row)), 300)})") from None
        except BadCell as e:
            if problems is None:
                raise DataError(f"{where}: row {i + 1}: {e}") from None
            problems.add(Problem(e.code, f"{where}:{i + 1}", str(e)))
        except (TypeError, ValueError, IndexError) as e:
            raise DataError(f"{where}: row {i + 1}: {shorten(str(e), 300)}") from None

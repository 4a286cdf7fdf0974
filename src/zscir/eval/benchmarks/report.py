"""Printing results in the column layout the papers use, so numbers can be compared at a glance.

* CIRR: R@1 R@5 R@10 R@50 | Rsubset@1 Rsubset@2 Rsubset@3 | Avg (as in the CIRR, Pic2Word, SEARLE tables);
* FashionIQ: one row per category plus the average, columns R@10 R@50 (SEARLE / Pic2Word tables);
* CIRCO: mAP@5 mAP@10 mAP@25 mAP@50 (the SEARLE table), then Recall@K and the semantic-aspect mAP@10.

The header repeats the method and the protocol flags that change numbers, because a table without
them is not comparable with anything.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["format_table"]

_HEADER_FLAGS = ("preprocessing_key", "caption_mode", "strip_captions", "use_shared_concept", "remove_reference",
                 "limit")


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.2f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text (Markdown-compatible) table of a result dict from `evaluate_benchmark`."""
    metrics: dict[str, float] = result.get("metrics", {})
    proto: dict[str, Any] = result.get("protocol", {})
    fmt = proto.get("format", result.get("benchmark"))
    method = result.get("method", {})
    method_name = method.get("method", "?") if isinstance(method, dict) else str(method)
    flags = ", ".join(f"{k}={proto[k]}" for k in _HEADER_FLAGS if k in proto and proto[k] is not None)
    lines = [
        f"{result.get('benchmark', fmt)} {result.get('split', '')} | method: {method_name} | "
        f"{result.get('n_queries', '?')} queries, {result.get('n_gallery', '?')} gallery images",
        f"protocol: {flags}" if flags else "protocol: defaults",
    ]
    if proto.get("limit") is not None:
        lines.append(f"WARNING: {proto.get('gallery')}")
    lines.append("")
    if fmt == "cirr":
        cols = [c for c in ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg")
                if c in metrics]
        lines += _grid(cols, [[_num(metrics[c]) for c in cols]])
    elif fmt == "fashioniq":
        ks = [int(k.split("@")[1]) for k in metrics if k.startswith("avg/R@")]
        cats = list(dict.fromkeys(k.split("/")[0] for k in metrics if "/" in k and not k.startswith("avg/")))
        rows = [[c] + [_num(metrics.get(f"{c}/R@{k}")) for k in ks] for c in cats]
        if ks:
            rows.append(["average"] + [_num(metrics.get(f"avg/R@{k}")) for k in ks])
        lines += _grid(["category"] + [f"R@{k}" for k in ks], rows)
        if "avg" in metrics:
            lines.append(f"average of R@{'/R@'.join(map(str, ks))}: {_num(metrics['avg'])}")
    elif fmt == "circo":
        ks = [k.split("@")[1] for k in metrics if k.startswith("mAP@")]
        lines += _grid([""] + [f"@{k}" for k in ks],
                       [["mAP"] + [_num(metrics.get(f"mAP@{k}")) for k in ks],
                        ["Recall"] + [_num(metrics.get(f"R@{k}")) for k in ks]])
        aspects = [(k.split("/", 1)[1], v) for k, v in metrics.items() if k.startswith("semantic_mAP@10/")]
        if aspects:
            lines += ["", "semantic aspects (mAP@10):"] + _grid(["aspect", "mAP@10"],
                                                               [[a, _num(v)] for a, v in aspects])
    else:
        lines += _grid(["metric", "value"], [[k, _num(v)] for k, v in metrics.items()])
    return "\n".join(lines)

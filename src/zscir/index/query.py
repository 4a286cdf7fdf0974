"""What a search asks for — a picture, a text, or both — and which method answers it.

Why this exists: people search a picture collection three ways. "This, but at night" composes a reference
image with a text; "a red car" is a text alone; "more like this" is a picture alone. Each is one composer
already (a composed method such as ``sum``, ``text``, ``image``), so a query that lacks one side simply
needs the method that reads the side it has. The rule, one implementation for the CLI, the Python API and
the server (`plan_query`):

* the method reads everything the query gives (or less, e.g. ``image`` ignores a text): it answers;
* **no method named** (the index's default, e.g. ``sum``) and one side missing: the single-input method
  of the side given answers (``text`` for a text alone, ``image`` for a picture alone), and the plan
  carries a one-line note saying so;
* **a method named explicitly** that needs the missing side (``-m sum`` with no ``--text``): refused with
  one line (`MissingQueryInput`), since silently answering with another method would hide the mistake;
* neither side: refused.

A text that is empty or only whitespace counts as no text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["IMAGE", "TEXT", "MissingQueryInput", "QueryPlan", "given_text", "plan_query", "query_inputs"]

IMAGE, TEXT = "image", "text"
#: the method that answers a query of one side alone
SINGLE_INPUT_METHOD = {IMAGE: "image", TEXT: "text"}
_WHAT = {IMAGE: "a reference image", TEXT: "a text"}


class MissingQueryInput(ValueError):
    """The query lacks what its (explicitly chosen) method needs, or is empty."""


@dataclass(frozen=True)
class QueryPlan:
    """The method that answers a query, what kind of search it is, and a note when it was chosen for it.

    ``mode``: ``"composed"`` (image + text), ``"text"`` (text alone) or ``"image"`` (picture alone).
    """

    method: str
    mode: str
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "mode": self.mode, "note": self.note}


def given_text(text: Any) -> str | None:
    """The query's text, or None when it has none (None, empty or only whitespace)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise MissingQueryInput(f"the text must be a string, got {type(text).__name__}")
    return text if text.strip() else None


def query_inputs(composer: Any) -> tuple[str, ...]:
    """What ``composer``'s queries read (`Composer.query_inputs`; composers without it read both)."""
    inputs = getattr(composer, "query_inputs", (IMAGE, TEXT))
    return tuple(i for i in inputs if i in (IMAGE, TEXT)) or (IMAGE, TEXT)


def plan_query(has_image: bool, has_text: bool, method: str | None, default_method: str,
               inputs_of: Callable[[str], tuple[str, ...]]) -> QueryPlan:
    """The `QueryPlan` of a query with (or without) an image and a text; see the module docstring.

    ``method`` is the method the caller named (None: not named, ``default_method`` answers when it can);
    ``inputs_of(name)`` says what a method's queries read (e.g. ``lambda m: query_inputs(composer(m))``).
    Raises `MissingQueryInput` for an empty query or a named method that needs the missing side.
    """
    given = {side for side, ok in ((IMAGE, has_image), (TEXT, has_text)) if ok}
    if not given:
        raise MissingQueryInput("the query is empty: give a reference image, a text, or both")
    chosen = method or default_method
    needs = set(inputs_of(chosen))
    if needs <= given:
        mode = "composed" if needs == {IMAGE, TEXT} else next(iter(needs))
        return QueryPlan(chosen, mode)
    (side,) = given  # one side given, and the method needs the other
    missing = IMAGE if side == TEXT else TEXT
    alone = SINGLE_INPUT_METHOD[side]
    if method is not None:
        need = " and ".join(_WHAT[s] for s in (IMAGE, TEXT) if s in needs)
        by = "the picture" if side == IMAGE else "the text"
        raise MissingQueryInput(f"method {method!r} needs {need}, and this query has no {_WHAT[missing][2:]}; "
                                f"use method {alone!r} to search by {by} alone, or leave the method unset to let "
                                f"zscir choose")
    if side == TEXT:
        note = f"no reference image: searching by the text alone (method {alone!r})"
    else:
        note = f"no text: searching by the picture alone, more like this (method {alone!r})"
    return QueryPlan(alone, side, note)

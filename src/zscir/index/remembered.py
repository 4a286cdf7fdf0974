"""An index remembers how it was built: updating it without repeating ``--model`` / ``--method`` keeps them.

Why: ``zscir index ~/Pictures --out ~/pictures.zscir --model lit-clipart`` followed a week later by
``zscir index ~/Pictures --out ~/pictures.zscir`` (new photos) used to take the built-in default model,
and was refused with a suggestion to pass ``--overwrite`` — which would have replaced a working index with
one of the wrong model. The manifest records the model and the methods of the run (``model``,
``request.methods``), so they are the defaults for updating that index. Only a model the user names that
differs from the recorded one means "another index", and only that asks for ``--overwrite``.

``--checkpoint`` is not remembered: a path read back from the manifest would be data steering which
weights are loaded. A trained method falls back to its shipped checkpoint unless it is given again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from zscir.index.folder import read_manifest

__all__ = ["IndexChoice", "recorded_choice", "index_choice"]


@dataclass(frozen=True)
class IndexChoice:
    """The model and methods a `zscir index` run uses, and which of them came from the existing index."""

    model: str
    methods: list[str] = field(default_factory=list)
    remembered: tuple[str, ...] = ()  # "model" and/or "methods": taken from the index in --out

    def describe(self) -> str | None:
        """One line for people when something was remembered, else None."""
        if not self.remembered:
            return None
        parts = [f"model {self.model!r}"] if "model" in self.remembered else []
        if "methods" in self.remembered:
            parts.append(f"method(s) {', '.join(self.methods)}")
        return f"updating the index with its own {' and '.join(parts)}"


def _names(value: Any) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def recorded_choice(manifest: Mapping[str, Any] | None) -> tuple[str | None, list[str] | None]:
    """The model and methods an index manifest records (None where it records none).

    Methods: the ``request`` of the last run (``zscir index -m a -m b``), else the methods of its gallery
    matrices (older indexes), else the primary ``method``.
    """
    if not manifest:
        return None, None
    model = manifest.get("model") if isinstance(manifest.get("model"), str) and manifest.get("model") else None
    request = manifest.get("request") if isinstance(manifest.get("request"), Mapping) else {}
    methods = _names(request.get("methods"))
    if methods is None and isinstance(manifest.get("galleries"), Mapping):
        methods = _names([g.get("method") for g in manifest["galleries"].values() if isinstance(g, Mapping)])
    if methods is None and isinstance(manifest.get("method"), str) and manifest.get("method"):
        methods = [manifest["method"]]
    return model, methods


def index_choice(out_dir: str | os.PathLike, model: str | None, methods: Sequence[str] | None, *,
                 default_model: str, default_methods: Sequence[str]) -> IndexChoice:
    """The model and methods for a `zscir index` run into ``out_dir``: the given ones, else the existing
    index's, else the defaults. The index's methods are kept only while its model is (another model may
    not offer them). A foreign ``manifest.json`` raises `StoreError` (nothing is written anywhere)."""
    old_model, old_methods = recorded_choice(read_manifest(Path(out_dir)) if Path(out_dir).is_dir() else None)
    remembered: list[str] = []
    if model is None and old_model is not None:
        model = old_model
        remembered.append("model")
    model = model or default_model
    if not methods and old_methods is not None and model == old_model:
        methods = old_methods
        remembered.append("methods")
    return IndexChoice(model=model, methods=list(methods or default_methods), remembered=tuple(remembered))

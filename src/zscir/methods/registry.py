"""Method registry: name → factory building a `Composer` on a backbone.

``create_composer("sum", model="world-clip", weight=0.3)`` builds the backbone from the model registry and
the composer on top. Trained methods register a factory that also accepts ``checkpoint=DIR`` (a folder with
config.json + safetensors) and, when none is given, use the checkpoint shipped for the default model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from zscir.backbones import DEFAULT_MODEL, Backbone, create_backbone
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., Composer]
    description: str
    trained: bool = False
    #: a reproduction of another project's released weights (docs/PEERS.md)
    peer: bool = False
    #: the option names the factory reads (``-O KEY=VALUE``); None: not declared, nothing is checked
    options: tuple[str, ...] | None = None
    #: a training-free method's one tuned option and its default grid, ``("weight", (0.1, ..., 0.9))``: what
    #: ``zscir eval --tune-on val`` chooses on val (`zscir.eval.tuning`); None: nothing to tune
    grid: tuple[str, tuple[float, ...]] | None = None


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, description: str, trained: bool = False, peer: bool = False,
                    options: tuple[str, ...] | None = None,
                    grid: tuple[str, tuple[float, ...]] | None = None):
    """Decorator registering ``factory(backbone, checkpoint=None, **options) -> Composer``.

    ``options``: the option names the factory reads, so that a misspelt ``-O`` is refused
    (`check_method_options`) instead of silently ignored; None when the factory does not declare them.
    ``grid``: the option chosen on val and its default values (`MethodSpec.grid`).
    """

    def deco(factory: Callable[..., Composer]) -> Callable[..., Composer]:
        _METHODS[name] = MethodSpec(name, factory, description, trained, peer,
                                    tuple(options) if options is not None else None,
                                    (grid[0], tuple(grid[1])) if grid is not None else None)
        return factory

    return deco


def check_method_options(method: str, options: dict[str, Any]) -> None:
    """Refuse option names ``method`` does not read, listing the ones it does (one ``ValueError`` line).

    Why here and not in every factory: the factories accept ``**options`` so that `zscir eval` can hand one
    ``-O`` set to several methods; a command that configures exactly one method (``zscir search``,
    ``zscir serve``, `Retriever.load`) asks for this check, so ``-O bogus=1`` is no longer ignored silently.
    Unknown methods and methods that declare no options pass (the factory reports what it must).
    """
    _load_builtin_methods()
    spec = _METHODS.get(method)
    if spec is None or spec.options is None:
        return
    unknown = sorted(k for k in options if k not in spec.options and k != "checkpoint")
    if unknown:
        valid = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options: {valid}")


def list_methods() -> list[MethodSpec]:
    _load_builtin_methods()
    return [_METHODS[k] for k in sorted(_METHODS)]


def create_composer(
    method: str,
    model: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    backbone: Backbone | None = None,
    **options: Any,
) -> Composer:
    """Build the composer ``method`` on ``backbone`` (or on a new backbone created from ``model``)."""
    _load_builtin_methods()
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(_METHODS))}")
    if backbone is None:
        backbone = create_backbone(model or DEFAULT_MODEL, device=device)
    spec = _METHODS[method]
    try:
        return spec.factory(backbone, checkpoint=checkpoint, **options)
    except TypeError as e:  # an unknown option name or a value of the wrong type (`-o weight=abc`)
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise ValueError(f"method {method!r}: invalid option(s) ({given}): {e}") from e


_loaded = False

#: modules whose import registers methods; each method package owns a ``register`` module
BUILTIN_METHOD_MODULES = (
    "zscir.methods.builtin",
    "zscir.methods.tscir.register",
    "zscir.methods.fusiondiff.register",
    "zscir.methods.peers.register",
)


def _load_builtin_methods() -> None:
    """Import the modules that register the built-in methods (lazily, to keep start-up fast)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in BUILTIN_METHOD_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a method package not present in this build
            if e.name is None or not mod.startswith(e.name):
                raise
            logger.debug("method module %s not available", mod)

"""Composed-retrieval methods behind the `Composer` interface, and their registry.

The names below are imported on first use (PEP 562), not with the package: importing one light
submodule (a method's config, say) runs this file first, and importing torch for that would cost seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zscir.methods.base import Composer
    from zscir.methods.registry import (MethodSpec, check_method_options, create_composer, list_methods,
                                        register_method)

__all__ = ["Composer", "MethodSpec", "check_method_options", "create_composer", "list_methods", "register_method"]
_HOME = {"Composer": "zscir.methods.base", "MethodSpec": "zscir.methods.registry",
         "create_composer": "zscir.methods.registry", "list_methods": "zscir.methods.registry",
         "register_method": "zscir.methods.registry", "check_method_options": "zscir.methods.registry"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

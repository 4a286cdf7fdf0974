"""Composed-retrieval methods behind the `Composer` interface, and their registry."""

from zscir.methods.base import Composer
from zscir.methods.registry import MethodSpec, create_composer, list_methods, register_method

__all__ = ["Composer", "MethodSpec", "create_composer", "list_methods", "register_method"]

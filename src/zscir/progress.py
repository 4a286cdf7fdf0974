"""What zscir prints while it works: its own long phases show a bar with an ETA; libraries' bars stay quiet.

Why: transformers prints a "Loading weights 103/103" bar each time a model loads (several times per
command, a few milliseconds each) and "Writing model shards" when one is saved; diffusers prints its
pipeline bars. They say nothing about zscir's work and bury the lines that do. `quiet_library_bars`
switches them off (``zscir -v`` keeps them); download bars of huggingface_hub stay, because a download is
long work the user waits for.

transformers decides at its import whether its bars are on, and importing it costs seconds, which
``zscir --help`` must not pay. So the switch is applied when transformers' (or diffusers') logging module
is imported, by a one-shot import hook, or at once when it is loaded already.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any, Callable

#: the logging modules whose progress bars are switched off, with the function that does it
LIBRARY_LOGGING = {"transformers.utils.logging": "disable_progress_bar",
                   "diffusers.utils.logging": "disable_progress_bar"}


def _switch_off(module: Any) -> None:
    fn = getattr(module, LIBRARY_LOGGING.get(module.__name__, ""), None)
    if callable(fn):
        fn()


class _AfterImport(importlib.abc.Loader):
    """Runs the real loader, then ``hook(module)``; every other attribute is the real loader's."""

    def __init__(self, loader: Any, hook: Callable[[Any], None]):
        self._loader, self._hook = loader, hook

    def create_module(self, spec):  # noqa: D102 - the loader protocol
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: D102
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the library logging modules not imported yet."""

    def __init__(self) -> None:
        self.pending = {n for n in LIBRARY_LOGGING if n not in sys.modules}

    def find_spec(self, name, path, target=None):  # noqa: D102 - the finder protocol
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterImport(spec.loader, _switch_off)
        return spec


def quiet_library_bars() -> None:
    """Switch off transformers' and diffusers' progress bars now (when loaded) or when they load."""
    for name in LIBRARY_LOGGING:
        if name in sys.modules:
            _switch_off(sys.modules[name])
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        finder = _QuietFinder()
        if finder.pending:
            sys.meta_path.insert(0, finder)


def library_bars_quiet() -> bool:
    """Whether transformers' bars are off (False when it is not loaded and no hook waits for it)."""
    mod = sys.modules.get("transformers.utils.logging")
    if mod is not None:
        return not mod.is_progress_bar_enabled()
    return any(isinstance(f, _QuietFinder) and "transformers.utils.logging" in f.pending for f in sys.meta_path)


"""The one SVG rasteriser of the real-picture readers (cairosvg), bounded so that an SVG file stays data.

Twemoji, OpenMoji, Fluent emoji, flag-icons and the freedesktop icon themes ship SVG; every reader renders
through `rasterise_svg`, never by hand and never through another library, so the limits below hold
everywhere:

* the file is read as bytes (at most ``max_bytes``) and parsed by cairosvg's defusedxml parser with
  entities forbidden (no billion laughs, no external entities); a DOCTYPE that declares entities is refused
  before parsing;
* no URL is ever fetched: cairosvg gets a fetcher that refuses every ``http:``, ``file:``, relative or other
  reference (``data:`` URIs are inside the file, which is already bounded) — and the SVG is given as bytes,
  so it has no base URL to resolve relative paths against;
* the output size is ours, not the file's: the picture's aspect ratio is read from its ``viewBox`` (or
  width/height) and the longer side is rendered at ``size`` pixels, so ``width="1e9"`` costs nothing;
* rendering runs under a CPU-time alarm (``timeout_s`` of process CPU time, ``ITIMER_PROF``: a loaded
  machine does not make a normal file time out, so the corpus stays the same) where the calling thread can
  take one (the main thread of the builder and of its worker processes).

A refused or failing file raises `SvgRejected` with a reason; the corpus builder counts it as skipped.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


class SvgRejected(ValueError):
    """An SVG that is not rendered; the message says why (too large, entities, external reference...)."""


@dataclass(frozen=True)
class SvgLimits:
    max_bytes: int = 4 * 2**20  #: icon and emoji SVGs are kilobytes; clip art a few hundred
    size: int = 256  #: pixels of the longer output side
    timeout_s: float = 10.0  #: CPU seconds (package SVGs take tens of milliseconds)
    max_aspect: float = 50.0  #: wider or taller pictures are not pictures of a thing


_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(px|pt|mm|cm|in|pc)?\s*$")


class _NoFetch:
    """cairosvg's url fetcher: refuses everything but ``data:`` URIs (an SVG may not read files or URLs)."""

    def __call__(self, url: str, resource_type: str):
        if url.startswith("data:"):
            from cairosvg.url import fetch

            return fetch(url, resource_type)
        raise SvgRejected(f"external reference not fetched: {url[:80]!r}")


def _length(value: str | None) -> float | None:
    if not value:
        return None
    m = _NUMBER.match(value)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v if 0 < v < float("inf") else None


def aspect_of(root_attrs: dict) -> float:
    """Width / height of the picture: from its viewBox, else its width and height, else square."""
    box = root_attrs.get("viewBox")
    if box:
        parts = re.split(r"[\s,]+", box.strip())
        if len(parts) == 4:
            try:
                w, h = float(parts[2]), float(parts[3])
                if w > 0 and h > 0:
                    return w / h
            except ValueError:
                pass
    w, h = _length(root_attrs.get("width")), _length(root_attrs.get("height"))
    return w / h if w and h else 1.0


@contextlib.contextmanager
def _alarm(seconds: float):
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGPROF"):
        yield
        return

    def on_alarm(signum, frame):
        raise SvgRejected(f"rendering took longer than {seconds:g} s of CPU time")

    old = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def read_svg_bytes(path: Path, limits: SvgLimits = SvgLimits()) -> bytes:
    """The file's bytes, refused when not a regular file or over ``max_bytes`` (checked before reading)."""
    path = Path(path)
    if not path.is_file():
        raise SvgRejected(f"{path}: not a regular file")
    n = path.stat().st_size
    if n > limits.max_bytes:
        raise SvgRejected(f"{path.name}: {n} bytes, over the {limits.max_bytes}-byte SVG limit")
    with open(path, "rb") as f:
        data = f.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise SvgRejected(f"{path.name}: over the {limits.max_bytes}-byte SVG limit")
    return data


def rasterise_svg(data: bytes | Path, limits: SvgLimits = SvgLimits()) -> Image.Image:
    """An SVG (bytes or a file) rendered as RGBA, longer side ``limits.size``; `SvgRejected` when refused."""
    try:
        import cairosvg  # noqa: F401 - the renderer; needs libcairo2
        from cairosvg.parser import Tree
        from cairosvg.surface import PNGSurface
    except (ImportError, OSError) as e:
        raise SvgRejected(f"cairosvg is not usable ({e}): pip install cairosvg (and apt install libcairo2)") from None
    if isinstance(data, Path):
        data = read_svg_bytes(data, limits)
    if len(data) > limits.max_bytes:
        raise SvgRejected(f"{len(data)} bytes, over the {limits.max_bytes}-byte SVG limit")
    if not data.strip():  # cairosvg would read an empty input as "no input" and fall back to a URL
        raise SvgRejected("an empty file")
    if _ENTITY.search(data[:65536]):
        raise SvgRejected("the SVG declares XML entities (refused: entity expansion)")
    try:
        with _alarm(limits.timeout_s):
            tree = Tree(bytestring=data, unsafe=False, url_fetcher=_NoFetch())
            aspect = aspect_of(tree)
            if not 1 / limits.max_aspect <= aspect <= limits.max_aspect:
                raise SvgRejected(f"aspect ratio {aspect:.3g} out of range")
            w = limits.size if aspect >= 1 else max(1, round(limits.size * aspect))
            h = limits.size if aspect <= 1 else max(1, round(limits.size / aspect))
            buf = io.BytesIO()
            PNGSurface(tree, buf, 96, output_width=w, output_height=h).finish()
    except SvgRejected:
        raise
    except RecursionError:
        raise SvgRejected("the SVG nests too deeply") from None
    except Exception as e:  # noqa: BLE001 - malformed XML, defusedxml refusals, cairo errors: all data errors
        raise SvgRejected(f"{type(e).__name__}: {str(e)[:200]}") from None
    im = Image.open(io.BytesIO(buf.getvalue()))
    im.load()
    return im.convert("RGBA")

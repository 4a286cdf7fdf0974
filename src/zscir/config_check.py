"""Checking the config.json of a model or checkpoint folder before anything is built from it.

Why a module of its own: a config.json is data a user hands zscir, and every size in it becomes a tensor
allocation. Unchecked, ``image_size: 20000`` allocated for 20 s and then failed deep inside transformers,
``head_hidden: 1e9`` asked for gigabytes, ``caption_k: -3`` failed only after the caption bank was built
(175 s), and a string where a number belongs raised a ``TypeError`` traceback. Each config dataclass owns
its own ``validate()`` (the fields and their documented bounds live next to the fields); this module gives
them one vocabulary (`check_int`, `check_number`, `check_choice`, ...) and one error class,
`ModelConfigError`, whose message names the file and the field, e.g.
``/m/config.json: prior.heads must be an integer in [1, 256], got -3``. It is a ``ValueError``, so the
CLI prints it as one ``error:`` line.

It sits at the package's top level and imports only the standard library: the config modules of the
method packages import it, and they are imported by ``zscir --help``, which must not import torch.

Unknown keys are logged as a warning, not refused: checkpoints written by a newer zscir stay loadable
(forward compatibility), but a misspelt key ("head_hiden") is reported instead of silently ignored.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

logger = logging.getLogger(__name__)

__all__ = ["ModelConfigError", "check_int", "check_number", "check_choice", "check_str", "check_bool",
           "check_int_list", "check_str_list", "check_mapping", "warn_unknown_keys", "config_source",
           "read_config_json", "weights_mismatch"]

#: the largest config.json zscir reads (real ones are a few kB; a huge one is not a config)
MAX_CONFIG_BYTES = 16 * 2**20


class ModelConfigError(ValueError):
    """A model / checkpoint config.json (or a method option) is invalid; the message names file and field."""


def check_int(value: Any, field: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
    """``value`` as an int in ``[lo, hi]`` (None allowed when ``optional``); bools and floats are refused."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        # 3.0 from a hand-edited JSON is accepted as 3; 3.5, "3" and true are not integers
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise ModelConfigError(f"{field} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ModelConfigError(f"{field} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_number(value: Any, field: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
                 optional: bool = False) -> float | None:
    """``value`` as a finite float in the interval (open ends where asked); bools, NaN and infinity are refused."""
    if value is None and optional:
        return None
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    want = f"a finite number in {lb}{lo:g}, {hi:g}{rb}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelConfigError(f"{field} must be {want}, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        raise ModelConfigError(f"{field} must be {want}, got {value!r}")
    return float(value)


def check_choice(value: Any, field: str, choices: Iterable[str]) -> str:
    """``value`` is one of ``choices`` (strings)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ModelConfigError(f"{field} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_str(value: Any, field: str, *, optional: bool = False, nonempty: bool = True,
              max_len: int = 4096) -> str | None:
    """``value`` is a string (non-empty unless told otherwise, at most ``max_len`` characters)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (nonempty and not value.strip()) or len(value) > max_len:
        what = "a non-empty string" if nonempty else "a string"
        raise ModelConfigError(f"{field} must be {what} of at most {max_len} characters, got {_short(value)}")
    return value


def check_bool(value: Any, field: str, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ModelConfigError(f"{field} must be true or false, got {_short(value)}")
    return value


def check_int_list(value: Any, field: str, lo: int, hi: int, *, optional: bool = False, max_items: int = 1024
                   ) -> list[int] | None:
    """A list of ints, each in ``[lo, hi]``."""
    if value is None and optional:
        return None
    if not isinstance(value, (list, tuple)) or len(value) > max_items:
        raise ModelConfigError(f"{field} must be a list of at most {max_items} integers, got {_short(value)}")
    return [check_int(v, f"{field}[{i}]", lo, hi) for i, v in enumerate(value)]  # type: ignore[misc]


def check_str_list(value: Any, field: str, *, nonempty: bool = True, max_items: int = 1024) -> list[str]:
    """A list of non-empty strings (and, with ``nonempty``, at least one)."""
    if not isinstance(value, (list, tuple)) or len(value) > max_items or (nonempty and not value):
        raise ModelConfigError(f"{field} must be a {'non-empty ' if nonempty else ''}list of strings, "
                               f"got {_short(value)}")
    return [check_str(v, f"{field}[{i}]", max_len=256) for i, v in enumerate(value)]  # type: ignore[misc]


def check_mapping(value: Any, field: str, *, optional: bool = False) -> dict[str, Any] | None:
    """A JSON object (dict)."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise ModelConfigError(f"{field} must be a JSON object, got {_short(value)}")
    return dict(value)


def warn_unknown_keys(d: Mapping[str, Any], known: Iterable[str], section: str = "") -> None:
    """Log the keys of ``d`` that no field reads (a misspelling, or a newer zscir's field)."""
    unknown = sorted(set(map(str, d)) - set(known))
    if unknown:
        where = f" in {section}" if section else ""
        logger.warning("ignoring unknown config key(s)%s: %s", where, ", ".join(unknown[:10]))


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


@contextmanager
def config_source(path: str | os.PathLike | None) -> Iterator[None]:
    """Within the block, a `ModelConfigError` (or a stray ``TypeError`` from a dataclass built from bad data)
    gets ``path: `` in front of its message, once."""
    try:
        yield
    except ModelConfigError as e:
        msg = str(e)
        if path is not None and not getattr(e, "sourced", False):
            msg = f"{os.fspath(path)}: {msg}"
        err = ModelConfigError(msg)
        err.sourced = path is not None  # type: ignore[attr-defined]
        raise err from None


def read_config_json(path: str | os.PathLike, max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, huge, non-JSON or non-object file is a `ModelConfigError`
    (``FileNotFoundError`` for a missing one) naming the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: file not found") from None
    if size > max_bytes:
        raise ModelConfigError(f"{p}: {size} bytes is too large for this file (limit {max_bytes})")
    try:
        raw = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ModelConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        reason = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else \
            "nested too deeply"
        raise ModelConfigError(f"{p}: not valid JSON ({reason})") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{p}: expected a JSON object, got {type(raw).__name__}")
    return raw


def weights_mismatch(weights: str | os.PathLike, config: str | os.PathLike, error: BaseException) -> ModelConfigError:
    """One line for a ``load_state_dict`` failure: the weights file does not fit what config.json describes.

    torch's message lists every mismatching tensor on its own line; the first one is kept.
    """
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "size mismatch" in ln or "Missing key" in ln or "Unexpected key" in ln),
                  lines[0] if lines else type(error).__name__)
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return ModelConfigError(f"{os.fspath(weights)} does not match {os.fspath(config)} (a wrong or edited "
                            f"config.json?): {detail[:300]}{more}")

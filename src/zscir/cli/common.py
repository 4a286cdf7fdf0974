"""Helpers shared by CLI commands: option parsing, composer creation, error reporting.

The error rule of every ``zscir`` command lives here, once: `ZscirGroup` (the ``cls`` of the top-level typer
app) runs each command and turns an *expected* error — bad data, a user mistake, a full disk — into one
``error: <what and where>`` line on stderr and exit status 2. Expected are ``ValueError`` (zscir's data and
configuration errors derive from it: ``BenchmarkDataError``, ``StoreError``, ``ImageRejected``,
``MethodUnavailable``), ``OSError`` (missing, unreadable or unwritable files, disk full), ``ImportError``
(an optional extra not installed) and the index lock. Anything else is a bug and keeps its traceback; so
does every error under the global ``--debug`` flag. Option checks (`check_device`, `finite_number`,
`finite_positive`, `check_output_file`) reject impossible values before any work starts; every printed
message goes through `zscir.index.names.printable` (one safe line: control characters, ANSI escapes and
undecodable bytes escaped).
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import typer
import typer.core

from zscir.index.names import printable  # stdlib only: zscir.index resolves its heavy names lazily

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import UsageError


def parse_options(options: list[str] | None) -> dict[str, Any]:
    """``["weight=0.3", "template=a photo of {}"]`` → ``{"weight": 0.3, ...}`` (JSON values when they parse)."""
    out: dict[str, Any] = {}
    for opt in options or []:
        if "=" not in opt:
            raise typer.BadParameter(f"--option expects KEY=VALUE, got {opt!r}")
        key, value = opt.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def make_composer(method: str, model: str | None, checkpoint: str | None, device: str, options: dict[str, Any]):
    """Create a composer, turning configuration errors into one clear CLI error. A ``checkpoint`` among the
    method's own options (``-m tscir:checkpoint=DIR``) wins over ``--checkpoint``, so one command can compare
    several trained methods."""
    from zscir.methods import create_composer

    options = dict(options)
    checkpoint = options.pop("checkpoint", checkpoint)
    try:
        return create_composer(method, model=model, checkpoint=checkpoint, device=device, **options)
    except (ValueError, FileNotFoundError, OSError, TypeError, ImportError) as e:
        raise typer.BadParameter(str(e)) from e


def fail(message: str) -> None:
    """Print ``error: message`` (control characters and undecodable bytes escaped) and exit with status 2."""
    typer.secho(f"error: {printable(message)}", fg="red", err=True)
    raise typer.Exit(2)


# ------------------------------------------------------------------------------------------ the error rule
#: exception types a command may raise for bad input (printed as one line); the index lock is added lazily
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)


def _is_expected(exc: BaseException) -> bool:
    if isinstance(exc, EXPECTED_ERRORS):
        return True
    try:  # the lock error is a RuntimeError; import lazily (start-up stays fast)
        from zscir.index.build import IndexLockedError
    except Exception:  # noqa: BLE001 - an import problem must not hide the original error
        return False
    return isinstance(exc, IndexLockedError)


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong and where (the file, for OS errors); newlines are escaped."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        what = exc.strerror
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what += ("; what was written before stays consistent (an index keeps its last committed "
                     "generation): free some space and run the command again")
        msg = f"{printable(where)}: {what}" if where is not None else what
        if exc.filename2 is not None:
            msg += f" (and {printable(exc.filename2)})"
    else:
        msg = str(exc) or type(exc).__name__
    return printable(msg)


class ZscirGroup(typer.core.TyperGroup):
    """The top-level command group: applies the error rule around every (sub)command.

    It also gives every command the same option checks, once: a ``--device`` must exist on this machine
    (`check_device`) and no float option accepts NaN or infinity (`finite_number`).
    """

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            _attach_checks(cmd)
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # a bad option value: one line too, not a usage box
            if ctx.params.get("debug"):
                raise
            cmd = exc.ctx.command_path if exc.ctx is not None else "zscir"
            typer.secho(f"error: {printable(exc.format_message())} (see `{cmd} --help`)", fg="red", err=True)
            raise typer.Exit(2) from None
        except typer.Exit as exc:
            # a command's own `except ...: fail(...)` exits while handling the error: --debug shows that error
            cause = exc.__context__
            if (ctx.params.get("debug") and exc.exit_code != 0 and isinstance(cause, Exception)
                    and not exc.__suppress_context__):
                raise cause
            raise
        except (typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into expected (one line) and bugs (traceback)
            if ctx.params.get("debug") or not _is_expected(exc):
                raise
            typer.secho(f"error: {error_message(exc)}", fg="red", err=True)
            raise typer.Exit(2) from None


# ------------------------------------------------------------------------------------------ option checks
def _attach_checks(cmd: Any) -> None:
    """Chain `check_device` onto ``--device`` and `finite_number` onto float options (recursively)."""
    if getattr(cmd, "_zscir_checked", False):
        return
    cmd._zscir_checked = True
    for param in getattr(cmd, "params", []):
        if param.name == "device":
            _chain(param, check_device)
        elif _is_float_option(param):
            _chain(param, finite_number)
    for sub in getattr(cmd, "commands", {}).values():
        _attach_checks(sub)


def _is_float_option(param: Any) -> bool:
    """A float option, as click-based typer (``param.type``) or typer >= 0.2x (``param.type_descriptor``,
    which has no ``type``) describes it; ``list[float]`` and ``float | None`` count."""
    import typing

    if getattr(getattr(param, "type", None), "name", "") in ("float", "float range"):
        return True
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return ann is float or float in typing.get_args(ann)


def _chain(param: Any, check: Any) -> None:
    original = param.callback

    def callback(ctx: Any, p: Any, value: Any) -> Any:
        if original is not None:
            value = original(ctx, p, value)
        if isinstance(value, (list, tuple)):
            for v in value:
                check(v)
            return value
        return check(value)

    param.callback = callback


def finite_number(value: float | None) -> float | None:
    """Option callback: no NaN / infinity (click's FloatRange lets NaN through every bound)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"expected a finite number, got {value}")
    return value


def check_device(value: str | None) -> str | None:
    """Option callback: a torch device that exists here (``cpu``, ``cuda``, ``cuda:N``, ``mps``); the checks
    are `zscir.backbones.devices.resolve_device`'s (``auto`` is not offered by these options)."""
    if value is None or value == "cpu":
        return value
    from zscir.backbones.devices import DeviceError, resolve_device

    if value == "auto":
        raise typer.BadParameter(f"{value!r} is not a device here; expected cpu, cuda, cuda:N or mps")
    try:
        resolve_device(value)
    except DeviceError as e:
        raise typer.BadParameter(str(e).replace("auto, ", "")) from None
    return value


def finite_positive(value: float | None) -> float | None:
    """Option callback: a finite number > 0 (click's FloatRange lets NaN through)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"expected a finite number > 0, got {value}")
    return value


def write_output(path: Path, text: str) -> None:
    """Write a result file the user asked for; an OS error (disk full, ...) names the file."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from e


def check_output_file(path: Path | None, what: str = "output file") -> Path | None:
    """Fail *before* any work unless ``path`` can be created: its folder exists and it is not a folder.

    Used for files written at the end of a long run (``--report``, ``--grid``, ``--output``), so a typo in the
    folder does not cost the whole run (or leave the index written and the report lost).
    """
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(f"{printable(path)}: is a folder; expected the {what} to write")
    if not parent.is_dir():
        fail(f"{printable(parent)}: folder does not exist; create it first or choose another {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{printable(parent)}: folder is not writable; choose another {what}")
    return path

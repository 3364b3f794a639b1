"""The typer application and the error boundary shared by every command.

Commands live in their own modules (one per command) and register on ``app``; each is a thin
wrapper over a library function. ``main`` turns user errors into one red line and a non-zero exit, and
usage errors (an unknown option or command, a missing argument) into the usage line, one error line and
exit 2, as any click program does.
"""

from __future__ import annotations

import errno
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from forgetscope.errors import ForgetscopeError

app = typer.Typer(
    name="forgetscope",
    help="What will my model forget when I fine-tune it, why, and how do I stop it?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: Width of tables and lines written to a pipe or file (no terminal to fit): wide enough that no column of a
#: table is cut; ``COLUMNS`` still sets the width when given.
PIPED_WIDTH = 200


class _Console(Console):
    """A rich console that, writing to a pipe or file, lays out at :data:`PIPED_WIDTH` rather than 80 columns,
    so piped tables keep every column and every digit."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and size.width < PIPED_WIDTH:
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = _Console()
err_console = _Console(stderr=True)

EXIT_USER_ERROR = 2
#: Errors of the user's file system, not of forgetscope: a read-only place, a file where a folder must go.
PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR})
EXIT_INTERRUPTED = 130
PROG_NAME = "forgetscope"


def package_version() -> str:
    """The installed distribution's version (the package's own string when it runs uninstalled)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("forgetscope")
    except PackageNotFoundError:
        from forgetscope import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"{PROG_NAME} {package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Options read before any command (the app's help text is set on ``app``)."""


def _click_classes(name: str) -> tuple[type[Exception], ...]:
    """Click's exception class ``name`` from typer's bundled copy of click (newer typer) and from click itself."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _usage_context(argv: list[str]) -> Any:
    """A context of the command ``argv`` names (else of the app), for errors the parser raises without one."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name=PROG_NAME)
    name = next((a for a in argv if not a.startswith("-")), None)
    command = group.get_command(ctx, name) if name is not None and hasattr(group, "get_command") else None
    return ctx if command is None else command.context_class(command, info_name=name, parent=ctx)


def _warn_old_out(value: Path | None) -> Path | None:
    if value is not None:  # said at parse time, before any work
        err_console.print("[yellow]warning:[/] --out is deprecated; use --output (-o)", highlight=False,
                          soft_wrap=True)
    return value


def old_out_option() -> Any:
    """The hidden ``--out`` spelling kept beside ``--output/-o`` (merge the two with :func:`option_alias`)."""
    return typer.Option(None, "--out", hidden=True, callback=_warn_old_out, help="deprecated spelling of --output")


def option_alias(value: Any, old_value: Any, *, old: str, new: str) -> Any:
    """The value of option ``new``, or of its deprecated spelling ``old`` (which warned when it was parsed)."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise ForgetscopeError(f"{old} is the deprecated spelling of {new}: give only {new}")
    return old_value


def json_mode(enabled: bool) -> None:
    """With ``--json`` stdout carries one JSON document only: tables and info lines go to stderr until the
    command returns (:func:`run_app` restores stdout)."""
    if enabled:
        console.file = sys.stderr


def _plain(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null (strict JSON) and numpy values as Python ones."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def emit_json(doc: Any) -> None:
    """Write ``doc`` to stdout as one JSON document (NaN as null), the whole of a ``--json`` command's stdout."""
    sys.stdout.write(json.dumps(_plain(doc), indent=2) + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    """Print one error line and exit non-zero (for checks made inside command wrappers)."""
    raise ForgetscopeError(message)


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI and map exceptions to exit codes; returns the exit code instead of exiting."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name=PROG_NAME)
        if rv == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130), returned in non-standalone mode
            raise KeyboardInterrupt
        if isinstance(rv, int) and rv:
            return rv
    except ForgetscopeError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        err_console.print("[bold yellow]interrupted:[/] finished runs are saved; "
                          "run the same command again to resume", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            err_console.print(f"[bold red]error:[/] disk full while writing: {exc.filename or exc}",
                              highlight=False, soft_wrap=True)
            return EXIT_USER_ERROR
        if exc.errno in PATH_ERRNOS and exc.filename:  # a read-only or misplaced path no check caught first
            err_console.print(f"[bold red]error:[/] {escape(str(exc.filename))}: {exc.strerror}",
                              highlight=False, soft_wrap=True)
            return EXIT_USER_ERROR
        raise
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        if isinstance(exc, _click_classes("ClickException")):
            if isinstance(exc, _click_classes("UsageError")) and exc.ctx is None:  # type: ignore[attr-defined]
                exc.ctx = _usage_context(sys.argv[1:] if argv is None else argv)  # type: ignore[attr-defined]
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        raise
    finally:
        console.file = None  # type: ignore[assignment]  # stdout again after a --json command (json_mode)
    return 0


def main() -> None:
    sys.exit(run_app())

"""The typer application and the error boundary shared by every command.

Commands live in their own modules (one per command) and register on ``app``; each is a thin
wrapper over a library function. ``main`` turns user errors into one red line and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from forgetscope.errors import ForgetscopeError

app = typer.Typer(
    name="forgetscope",
    help="What will my model forget when I fine-tune it, why, and how do I stop it?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def fail(message: str) -> None:
    """Print one error line and exit non-zero (for checks made inside command wrappers)."""
    raise ForgetscopeError(message)


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI and map exceptions to exit codes; returns the exit code instead of exiting."""
    try:
        rv = app(args=argv, standalone_mode=False)
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
        if exc.errno == 28:  # ENOSPC
            err_console.print(f"[bold red]error:[/] disk full while writing: {exc.filename or exc}",
                              highlight=False, soft_wrap=True)
            return EXIT_USER_ERROR
        raise
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def main() -> None:
    sys.exit(run_app())

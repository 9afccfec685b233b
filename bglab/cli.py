"""The ``bglab`` command: one Typer app; each sub-command lives in ``bglab/commands/<name>.py``.

Errors that bglab raises on purpose (:class:`bglab.errors.BglabError`) print as one red line without a
traceback; ``--debug`` shows the traceback. Heavy imports happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from bglab.errors import BglabError

app = typer.Typer(
    name="bglab",
    help="Background lab: find the foreground, change the background, measure what it does to a classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)
_state = {"debug": False}

# One module per command group; each defines ``register(app)``.
COMMAND_MODULES = [
    "bglab.commands.remove",
    "bglab.commands.backends",
    "bglab.commands.key",
    "bglab.commands.segtrain",
    "bglab.commands.evalseg",
    "bglab.commands.demo",
    "bglab.commands.dataset",
    "bglab.commands.preprocess",
    "bglab.commands.detect",
    "bglab.commands.serve",
    "bglab.commands.experiment",
    "bglab.commands.variants",
    "bglab.commands.correlate",
    "bglab.commands.challenge",
]


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Background lab: find the foreground, change the background, measure what it does to a classifier."""
    _state["debug"] = debug


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def _esc(value: object) -> str:
    from bglab.commands._common import esc

    return esc(value)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        # click returns the code of a typer.Exit instead of raising it when standalone_mode is off
        rv = app(args=args, standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except BglabError as exc:
        if _state["debug"]:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {_esc(exc)}", highlight=False)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[red]aborted[/]")
        return 130
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130
    except Exception as exc:  # usage errors (typer's bundled click) and unexpected failures
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error: click prints "Usage: ..." and "Error: ..."
            return exc.exit_code
        if _state["debug"]:
            err_console.print_exception()
        err_console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {_esc(exc)} (run with --debug)",
                          highlight=False)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

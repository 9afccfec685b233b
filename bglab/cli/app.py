"""The ``bglab`` command: one Typer app; each sub-command lives in ``bglab/cli/<name>.py``.

Errors that bglab raises on purpose (:class:`bglab.errors.BglabError`) print as one red line without a
traceback; ``--debug`` shows the traceback. Heavy imports happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from typer.models import ArgumentInfo, ParameterInfo

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
    "bglab.cli.remove",
    "bglab.cli.backends",
    "bglab.cli.key",
    "bglab.cli.segtrain",
    "bglab.cli.evalseg",
    "bglab.cli.review",
    "bglab.cli.demo",
    "bglab.cli.dataset",
    "bglab.cli.preprocess",
    "bglab.cli.detect",
    "bglab.cli.serve",
    "bglab.cli.experiment",
    "bglab.cli.variants",
    "bglab.cli.correlate",
    "bglab.cli.challenge",
    "bglab.cli.init",
]


def _version(value: bool) -> None:
    if value:
        from bglab import __version__

        typer.echo(f"bglab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (and library logs)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Background lab: find the foreground, change the background, measure what it does to a classifier.

    Start with: bglab remove photos/ -o out/  (then see docs/ and `bglab COMMAND --help`).
    """
    _state["debug"] = debug


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    groups = [app, *(g.typer_instance for g in app.registered_groups if g.typer_instance is not None)]
    for cmd in (c for g in groups for c in g.registered_commands):
        if cmd.callback is not None:
            _plain_metavars(cmd.callback)
            cmd.callback.__doc__ = _reflow(inspect.getdoc(cmd.callback) or "")


def _reflow(doc: str) -> str:
    """Join a docstring's wrapped source lines into paragraphs: Typer's Rich help keeps every newline, so
    80-column source wrapping would show as ragged lines; paragraphs stay apart, ``Example:`` lines alone."""
    paras = [p.splitlines() for p in doc.split("\n\n")]
    return "\n\n".join(" ".join(line.strip() for line in lines) for lines in paras)


_METAVARS = {bool: "", int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _plain_metavars(fn: Callable[..., Any]) -> None:
    """Give every parameter of a command a plain metavar (``PATH``, ``N``, ``SRC``; none for flags), so help
    shows no Python type names like ``<list[Path]>`` or ``<bool>`` (the type column of recent Typer)."""
    # evaluated once and stored: with postponed annotations every evaluation builds new Annotated infos
    hints = typing.get_type_hints(fn, include_extras=True)
    fn.__annotations__ = dict(hints)
    for name, param in inspect.signature(fn).parameters.items():
        ann = hints.get(name)
        info = param.default if isinstance(param.default, ParameterInfo) else None
        if typing.get_origin(ann) is typing.Annotated:
            ann, *extras = typing.get_args(ann)
            info = next((e for e in extras if isinstance(e, ParameterInfo)), info)
        if info is None or info.metavar is not None:
            continue
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
            ann = args[0]  # X | None
        is_list = typing.get_origin(ann) is list
        base = typing.get_args(ann)[0] if is_list else ann
        if isinstance(info, ArgumentInfo):
            info.metavar = name.upper().rstrip("S") if is_list else name.upper()
        else:
            info.metavar = _METAVARS.get(base, "TEXT")


def _plain_type_column() -> None:
    """Recent Typer prints Python types in help's type column (``<list[Path]>`` beside an argument, ``<bool>``
    beside every flag, ``--help`` included): the argument's name and a flag's name already say what they are, so
    their type column is left empty (older Typer has no such method: nothing to do)."""
    arg, opt = getattr(typer.core, "TyperArgument", None), getattr(typer.core, "TyperOption", None)
    if arg is not None and hasattr(arg, "display_type_rich"):
        arg.display_type_rich = lambda self, ctx: None
    if opt is not None and hasattr(opt, "display_type_rich"):
        shown = opt.display_type_rich
        opt.display_type_rich = lambda self, ctx: None if getattr(self, "is_flag", False) else shown(self, ctx)


_register_all()
_plain_type_column()


def _esc(value: object) -> str:
    from bglab.cli._common import esc

    return esc(value)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    if _state["debug"]:
        os.environ["BGLAB_DEBUG"] = "1"  # libraries' own logs (MediaPipe's native ones) are shown too
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

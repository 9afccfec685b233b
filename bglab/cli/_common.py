"""Helpers shared by CLI commands: parsing ``key=value`` options and colours, building progress bars."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from bglab.errors import ConfigError, safe_text
from bglab.io.colors import parse_color

__all__ = ["console", "deprecated_flag", "device_option", "err_console", "esc", "parse_color", "parse_options",
           "print_failed", "progress_bar", "train_device_option"]

# soft_wrap: long paths and messages stay on one line in logs instead of being cut at 80 columns.
# emoji=False: a file called ":x:.jpg" is printed as it is, not as an emoji.
console = Console(soft_wrap=True, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)


def esc(value: object) -> str:
    """User-controlled text (a path, a file name, an error message quoting one) made safe to print with Rich:
    markup escaped (a name holding ``[/]`` or ``[bold red]`` prints as it is) and non-UTF-8 bytes as ``\\xNN``.
    Every path or message a command prints goes through this (or is printed with ``markup=False``)."""
    return escape(safe_text(value))


def print_failed(con: Console, text: object, label: str = "failed", style: str = "red") -> None:
    """One ``failed <message>`` line, the message escaped (see :func:`esc`)."""
    con.print(f"[{style}]{label}[/] {esc(text)}", highlight=False, emoji=False)


def device_option() -> Any:
    """The one ``--device`` of the commands that run ONNX Runtime models (remove, preprocess, variants, eval-seg,
    serve): the same names and default as the training commands' ``--device`` (``bglab experiment``). The value
    goes to :class:`bglab.foreground.Runtime` (``device``); :func:`bglab.foreground.onnxrt.check_device` refuses
    ``cuda`` without onnxruntime-gpu before any work."""
    return typer.Option("cpu", "--device",
                        help="Where ONNX models run: cpu | cuda (needs onnxruntime-gpu and a CUDA driver) | auto "
                             "(CUDA where available, else the CPU); docs/scaling.md.")


def train_device_option() -> Any:
    """The one ``--device`` of the training commands (experiment, train-seg): where torch trains,
    resolved by :func:`bglab.train.device.resolve_device` before anything is written."""
    return typer.Option("cpu", "--device",
                        help="Where torch trains: cpu (bit-reproducible at a fixed --threads) | cuda | auto "
                             "(the GPU where torch sees one, else the CPU); docs/scaling.md.")


def deprecated_flag(old: str, new: str, old_value: object, new_value: object) -> object:
    """The value of a renamed flag: the old spelling still works (with a note on stderr) when given."""
    if old_value is None:
        return new_value
    err_console.print(f"note: {old} is deprecated; use {new}", highlight=False, markup=False)
    return old_value


def parse_options(items: list[str] | None) -> dict[str, object]:
    """Turn ``["threshold=0.4", "masks=dir"]`` into a dict, parsing numbers, booleans and JSON values."""
    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"option {item!r} is not key=value", hint="e.g. --option threshold=0.4")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


class LazyProgress(Progress):
    """A Progress that draws nothing until its first update: checks that fail before any work (a missing
    source, a bad option) print their error alone, without a bar above it."""

    _shown = False

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shown:
            self.stop()

    def _show(self) -> None:
        if not self._shown:
            self._shown = True
            self.start()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._show()
        super().update(*args, **kwargs)

    def advance(self, *args: Any, **kwargs: Any) -> None:
        self._show()
        super().advance(*args, **kwargs)


def progress_bar(console_: Console | None = None, *, transient: bool = False) -> Progress:
    """The standard bglab progress bar: description, bar, count, rate, elapsed and remaining time; shown from
    its first update (:class:`LazyProgress`)."""
    return LazyProgress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console_ or err_console,
        transient=transient,
    )

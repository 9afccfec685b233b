"""``bglab init experiment|preprocess|variants``: write a commented starting config that runs as is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def init(
    kind: Annotated[str, typer.Argument(help="experiment | preprocess | variants.", show_default=False)],
    source: Annotated[str | None, typer.Option(
        "--from", help="Start from a shipped config (e.g. rps-reference, preprocess-reference) or a config file; "
                       "its relative paths are made absolute.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File to write; refuses to replace an existing one unless --force.",
        show_default="KIND.yaml in the current folder")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="experiment: your ImageFolder (one sub-folder per class); default: the embedded sample "
                       "hands, so the config runs as is.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped configs of KIND and exit.")] = False,
) -> None:
    """Write a commented starting config for `bglab experiment`, `bglab preprocess --config` or `bglab variants
    --config`.

    Example: bglab init experiment --data photos/ --out my-study.yaml
    """
    from bglab.cli._common import console, esc
    from bglab.errors import ConfigError
    from bglab.experiment.templates import KINDS, config_kind, init_config, shipped_configs
    from bglab.io.files import atomic_write_text

    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}", hint=f"choose one of: {', '.join(KINDS)}")
    if list_:
        for name, path in shipped_configs().items():
            if config_kind(path) == kind:
                console.print(name, markup=False, highlight=False)
        return
    if data is not None and kind != "experiment":
        raise ConfigError("--data is for experiment configs", hint="drop --data")
    if data is not None and not data.is_dir():
        raise ConfigError("--data is not a folder", path=data, hint="give an ImageFolder: one sub-folder per class")
    target = out or Path(f"{kind}.yaml")
    if target.exists() and not force:
        raise ConfigError("the file exists", path=target, hint="choose another --out, or add --force")
    text = init_config(kind, source=source, data=data)
    atomic_write_text(target, text)
    run = {"experiment": f"bglab experiment {target} --quick",
           "preprocess": f"bglab preprocess SRC DST --config {target}",
           "variants": f"bglab variants SRC DST --config {target}"}[kind]
    console.print(f"wrote {esc(target)}; edit it, then run: {esc(run)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``init`` command to the bglab app."""
    app.command("init")(init)

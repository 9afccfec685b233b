"""``bglab backends``: list the registered segmenters and locators and whether each can run here."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def backends(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List every backend: name, kind, whether its optional dependencies are installed, and what it does.

    Example: bglab backends --json
    """
    from rich.markup import escape
    from rich.table import Table

    from bglab.cli._common import console
    from bglab.foreground import DEFAULT_SEGMENTER, is_available
    from bglab.foreground import backends as all_backends

    rows = []
    for info in all_backends():
        ok, why = is_available(info.name)
        rows.append({"name": info.name, "kind": info.kind, "available": ok, "reason": why,
                     "extra": info.extra, "default": info.name == DEFAULT_SEGMENTER, "summary": info.summary})
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="bglab backends")
    for col in ("name", "kind", "available", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else r["name"]
        avail = "[green]yes[/]" if r["available"] else f"[red]no[/]: {escape(r['reason'])}"
        table.add_row(escape(name), r["kind"], avail, escape(r["summary"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("backends")(backends)

"""``bglab key SRC DST``: chroma-key a folder of green / blue screen images into mask files, with QC.

``--backend hand-grabcut`` (or any segmenter) labels photos that have no screen the same way, e.g. hands in
real scenes for training the U-Net; QC then usually needs ``--entry-side none --max-border-fg 1``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``key`` command to the bglab app."""

    @app.command("key")
    def key(
        src: Annotated[Path, typer.Argument(help="Folder of screen images (class sub-folders are kept).")],
        dst: Annotated[Path, typer.Argument(help="Output folder for masks, key_report.csv, contact_sheet.png.")],
        key_colour: str = typer.Option("auto", "--key",
                                       help="Key colour: auto (from the image border), green, blue or #rrggbb."),
        tolerance: float = typer.Option(0.2, "--tolerance", min=0.0, max=2.0,
                                        help="HSV distance to the key below which a pixel is background."),
        min_fg: float = typer.Option(0.05, "--min-fg", min=0.0, max=1.0,
                                     help="QC: reject masks whose foreground fraction is below this."),
        max_fg: float = typer.Option(0.80, "--max-fg", min=0.0, max=1.0,
                                     help="QC: reject masks whose foreground fraction is above this."),
        sheet: bool = typer.Option(True, "--sheet/--no-sheet",
                                   help="Write contact_sheet.png (sample + rejects) for review."),
        threads: int = typer.Option(1, "--threads", min=1, help="Images keyed in parallel (threads)."),
        workers_old: int = typer.Option(None, "--workers", min=1, hidden=True,
                                        help="Deprecated spelling of --threads (it always meant threads)."),
        backend: str = typer.Option("chroma", "--backend",
                                    help="Segmenter that makes the masks (chroma; hand-grabcut for real scenes)."),
        option: list[str] = typer.Option(None, "--option", "-O",
                                         help="Backend option key=value (repeatable); chroma: --key/--tolerance."),
        entry_side: str = typer.Option("right", "--entry-side",
                                       help="QC: the side the object enters from (right, left, top, bottom, none)."),
        max_border_fg: float = typer.Option(0.35, "--max-border-fg", min=0.0, max=1.0,
                                            help="QC: max foreground fraction on the other sides' border pixels."),
        max_components: int = typer.Option(4, "--max-components", min=1,
                                           help="QC: max connected components of the raw mask."),
    ) -> None:
        """Key SRC into 8-bit masks DST/<rel>.png; implausible masks go to DST/_rejected. Resumable.

        Example: bglab key screens/ masks/ --key green --threads 2
        """
        from rich.table import Table

        from bglab.cli._common import console, deprecated_flag, esc, parse_options, print_failed, progress_bar
        from bglab.foreground.key import QCRules, key_folder

        threads = int(deprecated_flag("--workers (key)", "--threads", workers_old, threads))  # type: ignore[arg-type]
        qc = QCRules(min_fg=min_fg, max_fg=max_fg, entry_side=entry_side, max_border_fg=max_border_fg,
                     max_components=max_components)
        options = {"key": key_colour, "tolerance": tolerance} if backend == "chroma" else {}
        options.update(parse_options(option))
        with progress_bar(console, transient=True) as bar:
            task = bar.add_task("key", total=None, rate="")

            def on_item(done: int, total: int, item: object) -> None:
                bar.update(task, completed=done, total=total)

            report = key_folder(src, dst, segmenter_options=options, backend=backend, qc=qc, threads=threads,
                                progress=on_item, sheet=sheet)
        table = Table(title=esc(f"bglab key {src} -> {dst}"))
        table.add_column("status")
        table.add_column("images", justify="right")
        table.add_row("[green]ok[/]", str(report.ok))
        table.add_row("[yellow]rejected[/]", str(report.rejected))
        table.add_row("[yellow]not-found[/]", str(report.not_found))
        table.add_row("[red]errors[/]", str(report.errors))
        table.add_row("(already done, skipped)", str(report.resumed))
        console.print(table)
        for item in report.items:
            if item.status == "error":
                print_failed(console, f"{item.file}: {item.reason}", "error")
        from bglab.foreground.qc import backend_hint

        flags = {"full"} if any("no key colour" in it.reason for it in report.items) else set()
        flags |= {"empty"} if report.rejected else set()
        hint = backend_hint(backend, flags, report.not_found)
        if hint:
            console.print(f"[yellow]{esc(hint)}[/]", highlight=False)
        console.print(f"report: {esc(report.report_path)}", highlight=False)
        if report.sheet_path is not None:
            console.print(f"contact sheet: {esc(report.sheet_path)}", highlight=False)
        if report.interrupted:
            print_failed(console, "the report lists what finished; run the same command again to resume",
                         "interrupted:")
            raise typer.Exit(130)
        if report.errors:
            raise typer.Exit(1)

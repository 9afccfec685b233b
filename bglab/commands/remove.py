"""``bglab remove``: remove, recolour, blur, swap or crop the background of images and folders."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from bglab.commands._common import console, err_console, parse_color, parse_options, progress_bar


def remove(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; relative layout of inputs is kept."),
    mode: str = typer.Option("cutout", "--mode", "-m",
                             help="cutout (RGBA) | mask (8-bit) | color | blur | swap | crop."),
    backend: str = typer.Option(None, "--backend", "-b",
                                help="Segmenter backend (see `bglab backends`); default: unet."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Backend option key=value (repeatable)."),
    color: str = typer.Option("white", "--color", help="Background colour for --mode color: #rrggbb, r,g,b, name."),
    blur: float = typer.Option(15.0, "--blur", help="Blur strength (Gaussian sigma, px) for --mode blur."),
    background: Path = typer.Option(None, "--background", help="Replacement image for --mode swap."),
    fit: str = typer.Option("cover", "--fit", help="How --background is fitted: cover | stretch | tile."),
    margin: float = typer.Option(0.1, "--margin", help="Crop margin as a fraction of the box (--mode crop)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Mask threshold for refinement and boxes."),
    refine: bool = typer.Option(True, "--refine/--no-refine",
                                help="Drop stray regions (< --min-region of the largest) and fill holes."),
    min_region: float = typer.Option(0.1, "--min-region", help="Keep regions at least this fraction of the "
                                     "largest (1.0 = the largest only)."),
    feather: float = typer.Option(0.0, "--feather", help="Soften the mask edge (sigma, px)."),
    fmt: str = typer.Option(None, "--format", help="Output format: png (default), webp, jpg (not for cutout)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    report: Path = typer.Option(None, "--report", help="Per-file CSV report (default: OUT/remove_report.csv)."),
) -> None:
    """Remove or change the background of every input image; bad files are reported, never fatal.

    Exit code 0 when every file succeeded (or was already done), 1 when any failed.
    """
    from bglab.io import read_image
    from bglab.remove import RemoveOptions, collect_inputs, remove_files
    from bglab.segment import DEFAULT_SEGMENTER, create

    opts = RemoveOptions(mode=mode, color=parse_color(color), blur=blur, fit=fit, margin=margin,  # type: ignore[arg-type]
                         threshold=threshold, refine=refine, min_region=min_region,
                         feather=feather)
    bg = read_image(background) if background is not None else None
    t_load = time.perf_counter()
    segmenter = create(backend or DEFAULT_SEGMENTER, kind="segmenter", **parse_options(option))
    t_load = time.perf_counter() - t_load
    items = collect_inputs(inputs)
    total = len(items)
    if total == 0:
        err_console.print("[yellow]no input images found[/]")
        raise typer.Exit(1)
    t0 = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("remove", total=total, rate="")

        def tick(res) -> None:  # noqa: ANN001
            done = progress.tasks[task].completed + 1
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} img/s")
            if res.status == "failed":
                progress.console.print(f"[red]failed[/] {res.error}", highlight=False)

        rep = remove_files(items, out, segmenter, opts, background=bg, fmt=fmt, overwrite=overwrite,
                           on_progress=tick)
    rep.write_csv(report or Path(out) / "remove_report.csv")
    elapsed = time.perf_counter() - t0
    table = Table(title=f"bglab remove ({segmenter.name}, mode {mode})")
    for col in ("done", "skipped", "failed", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(rep.count("done")), str(rep.count("skipped")), str(rep.count("failed")),
                  f"{elapsed:.1f} (+{t_load:.1f} load)")
    console.print(table)
    console.print(f"outputs in {out}; report {report or Path(out) / 'remove_report.csv'}")
    if rep.empty:
        names = ", ".join(r.input.name for r in rep.empty[:5]) + (" ..." if len(rep.empty) > 5 else "")
        err_console.print(f"[yellow]{len(rep.empty)} of {total} file(s) got an empty mask (no foreground "
                          f"found, e.g. no hand)[/]: {names}", highlight=False)
    if rep.failed:
        err_console.print(f"[bold red]{len(rep.failed)} of {total} file(s) failed[/]; see the report")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("remove")(remove)

"""``bglab remove``: remove, recolour, blur, swap or crop the background of images and folders."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from bglab.cli._common import console, device_option, err_console, esc, parse_options, print_failed, \
    progress_bar
from bglab.foreground.registry import choices_help
from bglab.io.colors import DEFAULT_COLOR_NAME, parse_color


def remove(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; relative layout of inputs is kept."),
    mode: str = typer.Option("cutout", "--mode", "-m",
                             help="cutout (RGBA) | mask (8-bit) | color (or colour) | blur | swap | crop."),
    backend: str = typer.Option(None, "--backend", "-b",
                                help=f"Segmenter backend: {choices_help('segmenter')} (see `bglab backends`)."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Backend option key=value (repeatable)."),
    color: str = typer.Option(DEFAULT_COLOR_NAME, "--color", "--colour",
                              help="Background colour for --mode color: #rrggbb, r,g,b, name."),
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
    on_suspect: str = typer.Option("keep", "--on-suspect",
                                   help="A mask that fails QC: keep (write it, status suspect) | skip | fail."),
    qc_option: list[str] = typer.Option(None, "--qc", help="QC rule key=value (repeatable), e.g. min_coverage=0.01; "
                                                           "rules in docs/trust.md."),
    workers: int = typer.Option(1, "--workers", "-w", min=1,
                                help="Worker processes, each with its own backend session (use the number of "
                                     "cores for slow backends such as hand-grabcut)."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads per backend session (0: all cores with 1 worker, 1 per worker "
                                     "with several)."),
    device: str = device_option(),
    engine: str = typer.Option("local", "--engine", help="local (process pool) | ray (extra 'ray'; docs/scaling.md)."),
    engine_option: list[str] = typer.Option(None, "--engine-option",
                                            help="Engine option key=value, e.g. address=ray://head:10001."),
) -> None:
    """Remove or change the background of every input image; bad files are reported, never fatal.

    Example: bglab remove photos/ -o out/ --mode color --color white

    Every mask is checked (docs/trust.md): status done, suspect (a QC rule broken), not-found (no foreground)
    or failed. Exit code 0 when no file failed, 1 when any failed (with --on-suspect fail: or was suspect),
    130 when interrupted (Ctrl+C or SIGTERM: the report is still written). OUT may not be, hold or lie inside
    an input folder.
    """
    from bglab.background.remove import RemoveOptions, check_request, collect_inputs_checked, remove_files
    from bglab.batch.engine import check_engine
    from bglab.batch.pool import terminate_as_interrupt
    from bglab.foreground import DEFAULT_SEGMENTER, Runtime, create
    from bglab.foreground.qc import backend_hint, check_on_suspect, rules_from
    from bglab.io.files import check_separate, prepare_output_dir, read_image

    opts = RemoveOptions(mode=mode, color=parse_color(color), blur=blur, fit=fit, margin=margin,  # type: ignore[arg-type]
                         threshold=threshold, refine=refine, min_region=min_region,
                         feather=feather)
    check_request(opts, has_background=background is not None, fmt=fmt)  # before any file or progress bar
    policy = check_on_suspect(on_suspect)
    rules = rules_from(parse_options(qc_option))
    engine_options = parse_options(engine_option)
    check_engine(engine, engine_options)  # an unknown engine or a silent Ray cluster: before anything is written
    from bglab.foreground.onnxrt import check_device

    device = check_device(device)  # cuda without onnxruntime-gpu: before anything is written
    check_separate(inputs, out)  # before anything is read or written, --overwrite or not
    if report is not None:
        check_separate(inputs, report, what="report file")  # never an input, nor inside an input folder
        if Path(report).is_dir():
            from bglab.errors import ConfigError

            raise ConfigError("the report path is a folder", path=report, hint="give a .csv file name")
    prepare_output_dir(out)
    bg = read_image(background) if background is not None else None
    items, problems = collect_inputs_checked(inputs)
    total = len(items) + len(problems)
    if total == 0:
        err_console.print("[yellow]no input images found[/]")
        raise typer.Exit(1)
    from bglab.foreground.auto import resolve

    t_load = time.perf_counter()
    name = backend or DEFAULT_SEGMENTER
    options = resolve(name, parse_options(option), [f for f, _ in items])  # auto: decided once for the data set
    # built here even with --workers N: a missing extra or model file is one error before the progress bar
    runtime = Runtime(threads=threads, device=device) if threads else replace(Runtime.from_env(), device=device)
    segmenter = create(name, kind="segmenter", runtime=runtime, **options)
    t_load = time.perf_counter() - t_load
    t0 = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("remove", total=total, rate="")

        def tick(res) -> None:  # noqa: ANN001
            done = progress.tasks[task].completed + 1
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} img/s")
            if res.status == "failed":
                print_failed(progress.console, res.error)

        with terminate_as_interrupt():
            by_name = workers > 1 or engine == "ray"
            rep = remove_files(items, out, name if by_name else segmenter, opts, background=bg, fmt=fmt,
                               overwrite=overwrite, on_progress=tick, problems=problems, qc=rules,
                               on_suspect=policy, workers=workers, backend_options=options, threads=threads,
                               engine=engine, engine_options=engine_options, device=device)
    rep.write_csv(report or Path(out) / "remove_report.csv")
    elapsed = time.perf_counter() - t0
    table = Table(title=esc(f"bglab remove ({segmenter.name}, mode {opts.mode}, {workers} worker(s))"))
    for col in ("done", "suspect", "not-found", "skipped", "failed", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(rep.count("done")), str(rep.count("suspect")), str(rep.count("not-found")),
                  str(rep.count("skipped")), str(rep.count("failed")), f"{elapsed:.1f} (+{t_load:.1f} load)")
    console.print(table)
    flagged = [r for r in rep.results if r.flags]
    for r in flagged[:10]:
        console.print(f"[yellow]suspect[/] {esc(r.input)}: {esc(r.qc)}", highlight=False)
    if len(flagged) > 10:
        console.print(f"[yellow]... {len(flagged) - 10} more suspect file(s)[/]; see the report's qc column")
    hint = backend_hint(segmenter.name, {f for r in flagged for f in r.flags}, rep.count("not-found"))
    if hint:
        err_console.print(f"[yellow]{esc(hint)}[/]", highlight=False)
    console.print(f"outputs in {esc(out)}; report {esc(report or Path(out) / 'remove_report.csv')}",
                  highlight=False)
    if rep.interrupted:
        err_console.print("[red]interrupted[/]: the report lists what was done; run the same command again to "
                          "resume")
        raise typer.Exit(130)
    if rep.failed:
        err_console.print(f"[bold red]{len(rep.failed)} of {total} file(s) failed[/]; see the report")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("remove")(remove)

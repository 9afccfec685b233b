"""``bglab variants``: write background variants of a data set (Only-FG, No-FG, Only-BG-B/T, Mixed-*, ...)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from bglab.cli._common import console, device_option, err_console, esc, parse_options, print_failed, progress_bar
from bglab.io.colors import parse_color


def variants(
    ctx: typer.Context,
    src: Path = typer.Argument(..., help="ImageFolder: <class>/images + <class>/masks (pets3), or <class>/*.jpg "
                               "with --backend."),
    dst: Path = typer.Argument(..., help="Output folder: DST/<kind>/<class>/<stem>.png (an ImageFolder per kind), "
                               "masks in DST/_masks/<kind>/<class>/<stem>.png, + "
                               "manifest.csv."),
    kinds: str = typer.Option("all", "--kinds", "-k",
                              help="Comma list or 'all': original, only-fg, no-fg, only-bg-b, only-bg-t, "
                              "mixed-same, mixed-rand, mixed-next, bg-color, bg-blur, bg-region=<factor> "
                              "(all = every kind but bg-region)."),
    backend: str = typer.Option(None, "--backend", "-b",
                                help="Segmenter for the masks (see `bglab backends`); default: SRC's mask files."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Backend option key=value (repeatable)."),
    locator: str = typer.Option(None, "--locator",
                                help="Locator backend for the fg box; default: the mask's box."),
    seed: int = typer.Option(0, "--seed", help="Seed for Mixed-* pairs and random bg-color colours."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (or Ray actors with --engine ray)."),
    device: str = device_option(),
    engine: str = typer.Option("local", "--engine", help="local (process pool) | ray (extra 'ray'; docs/scaling.md)."),
    engine_option: list[str] = typer.Option(None, "--engine-option",
                                            help="Engine option key=value, e.g. address=ray://head:10001."),
    size: int = typer.Option(None, "--size", help="Resize-pad every output (and mask) to N x N; default: keep."),
    color: str = typer.Option(None, "--color", "--colour",
                              help="bg-color colour (#rrggbb, r,g,b, name); default: a seeded random one per image."),
    blur: float = typer.Option(15.0, "--blur", help="bg-blur strength (Gaussian sigma, px of the source image)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    on_suspect: str = typer.Option("keep", "--on-suspect",
                                   help="A backend mask that fails QC: keep (write, marked suspect) | skip | fail."),
    qc_option: list[str] = typer.Option(None, "--qc", help="QC rule key=value (repeatable); docs/trust.md."),
    config: str = typer.Option(None, "--config", "-c",
                               help="Variants config (YAML; `bglab init variants` writes one); flags given here "
                                    "win over its values."),
) -> None:
    """Write background variants of every image (Xiao et al. 2021 + Hashmi & Li); bad files are reported.

    Example: bglab variants pets/ out/variants --kinds only-fg,no-fg,mixed-rand -w 2

    Exit code 0 when every variant was written or skipped (undefined, e.g. no foreground), 1 when any failed.
    """
    from bglab.background.variants import generate_variants, parse_kinds

    if config is not None:
        kinds, backend, option_map, locator, seed, workers, size, color, blur, on_suspect, qc_map = _from_config(
            ctx, config, kinds=kinds, backend=backend, options=parse_options(option), locator=locator, seed=seed,
            workers=workers, size=size, color=color, blur=blur, on_suspect=on_suspect, qc=parse_options(qc_option))
    else:
        option_map, qc_map = parse_options(option), parse_options(qc_option)
    kind_list = parse_kinds(kinds)
    rgb = parse_color(color) if color else None
    t0 = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("variants", total=None, rate="")
        start = {"t": 0.0, "done": 0}

        def tick(done: int, total: int, rows: list) -> None:  # noqa: ANN001
            if not rows:  # the first call: outputs already present are counted as done
                start["t"], start["done"] = time.perf_counter(), done
                progress.update(task, total=total, completed=done)
                return
            rate = (done - start["done"]) / max(time.perf_counter() - start["t"], 1e-9)
            progress.update(task, completed=done, rate=f"{rate:.1f} img/s")
            for r in rows:
                if r.status == "failed":
                    print_failed(progress.console, f"{r.kind}: {r.error}")
                    break  # one line per image: every kind of a bad image fails the same way

        rep = generate_variants(src, dst, kind_list, backend=backend, backend_options=option_map,
                                locator=locator, seed=seed, workers=workers, size=size, color=rgb, blur=blur,
                                overwrite=overwrite, progress=tick, qc=qc_map, on_suspect=on_suspect,
                                engine=engine, engine_options=parse_options(engine_option), device=device)
    elapsed = time.perf_counter() - t0
    table = Table(title=esc(f"bglab variants ({rep.images} images, masks: {backend or 'mask files'})"))
    table.add_column("kind")
    for col in ("ok", "suspect", "not-found", "reused", "skipped", "failed"):
        table.add_column(col, justify="right")
    for kind, counts in rep.summary().items():
        reused = sum(r.reused for r in rep.rows if r.kind == kind)
        table.add_row(kind, str(counts["ok"]), str(counts.get("suspect", 0)), str(counts.get("not-found", 0)),
                      str(reused), str(counts["skipped"]),
                      f"[red]{counts['failed']}[/]" if counts["failed"] else "0")
    console.print(table)
    if backend:
        from bglab.foreground.qc import backend_hint, flags_of

        images = {(r.label, r.stem): r for r in rep.rows if r.qc}
        flagged = [r for r in images.values() if r.status != "not-found"]
        for r in flagged[:10]:
            console.print(f"[yellow]suspect[/] {esc(r.source)}: {esc(r.qc)}", highlight=False)
        not_found = sum(r.status == "not-found" for r in images.values())
        hint = backend_hint(backend, {f for r in flagged for f in flags_of(r.qc)}, not_found)
        if hint:
            err_console.print(f"[yellow]{esc(hint)}[/]", highlight=False)
    console.print(f"{elapsed:.1f} s; outputs in {esc(dst)}; manifest {esc(rep.manifest_path)}", highlight=False)
    if rep.interrupted:
        err_console.print("[red]interrupted[/]: the manifest lists what finished; run the same command again to "
                          "resume")
        raise typer.Exit(130)
    if rep.failed:
        images = len({(r.label, r.stem) for r in rep.failed})
        err_console.print(f"[bold red]{len(rep.failed)} variant(s) of {images} image(s) failed[/]; see the manifest")
        raise typer.Exit(1)


def _from_config(ctx: typer.Context, config: str, **given: object) -> tuple:
    """The flags' values with the config file's filling in every flag left at its default."""
    from bglab.background.variants import load_variants_config
    from bglab.experiment.templates import find_config

    raw = load_variants_config(find_config(config))
    out = []
    for name, value in given.items():
        param = {"options": "option", "qc": "qc_option"}.get(name, name)
        source = ctx.get_parameter_source(param)
        from_cli = source is not None and source.name != "DEFAULT"
        if not from_cli and name in raw:
            value = raw[name] if name != "kinds" or isinstance(raw[name], str) else ",".join(map(str, raw[name]))
        if name in ("options", "qc"):
            value = dict(value or {})  # type: ignore[call-overload]
        out.append(value)
    return tuple(out)


def register(app: typer.Typer) -> None:
    """Add the ``variants`` command to the bglab app."""
    app.command("variants")(variants)

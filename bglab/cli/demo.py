"""``bglab demo``: the main job on the embedded sample data, offline, in about a minute.

First half: remove and swap the background of 18 embedded photos (cut-outs, swaps, a contact sheet). Second
half (skip with ``--no-experiment``): a tiny controlled experiment that answers bglab's question on embedded
green-screen hands -- does the classifier learn the hand or the background, and does removing the background
change that? (:mod:`bglab.experiment.demo`; the run directory and HTML report are ``bglab experiment``'s.)
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from bglab.cli._common import console
from bglab.errors import BglabError
from bglab.foreground.registry import choices_help


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where to write the demo's outputs."),
    backend: str = typer.Option(None, "--backend", "-b", help="Segmenter of the remove / swap half: "
                                f"{choices_help('segmenter')}."),
    experiment: bool = typer.Option(True, "--experiment/--no-experiment",
                                    help="Also run the tiny background experiment (about a minute on 2 cores)."),
    quick: bool = typer.Option(False, "--quick", help="Experiment as a smoke run: 1 seed, 4 epochs."),
) -> None:
    """Remove / swap the background of embedded photos, then test whether a classifier learned the background.

    Example: bglab demo --out out/demo
    """
    import numpy as np

    from bglab import ops
    from bglab.background.remove import RemoveOptions, apply_mode, prepare_mask
    from bglab.experiment.demo import sample_data_dir
    from bglab.foreground import DEFAULT_SEGMENTER, create
    from bglab.io.files import list_images, read_image, write_image
    from bglab.ops.viz import contact_sheet, overlay_mask

    data = sample_data_dir()
    images = [p for sub in ("webcam", "sxsw") for p in list_images(data / sub)]
    background = read_image(sorted((data / "backgrounds").glob("*.jpg"))[0])
    name = backend or DEFAULT_SEGMENTER
    t0 = time.perf_counter()
    seg = create(name, kind="segmenter")
    t_load = time.perf_counter() - t0
    cut_opts, swap_opts = RemoveOptions(mode="cutout"), RemoveOptions(mode="swap")
    table = Table(title=f"bglab demo: {len(images)} embedded photos, backend {seg.name}")
    for col, just in (("image", "left"), ("size", "right"), ("foreground %", "right"), ("ms", "right"),
                      ("mask QC", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    from bglab.foreground.qc import check_batch, check_mask, uses_screen

    rows, labels, times, cells, qc = [], [], [], [], []
    for path in images:
        rel = path.relative_to(data)
        t = time.perf_counter()
        image = read_image(path)
        mask = prepare_mask(seg.predict(image, source=path), cut_opts)
        cut = apply_mode(image, mask, cut_opts)
        swap = apply_mode(image, mask, swap_opts, background=background)
        write_image(out / "cutout" / rel.with_suffix(".png"), cut)
        write_image(out / "swap" / rel.with_suffix(".jpg"), swap)
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        cov = ops.coverage(mask)
        cells.append([str(rel), f"{image.shape[1]}x{image.shape[0]}", f"{100 * cov:.1f}", f"{ms:.0f}"])
        qc.append(check_mask(mask, image=image, screen=uses_screen(seg.name)))
        rows.append([image, overlay_mask(image, mask), cut, swap])
        labels.append(f"{rel.parts[0]}/{rel.parts[1]}")
    for cell, chk in zip(cells, check_batch(qc), strict=True):
        status = chk.status if chk.status != "suspect" else f"suspect ({', '.join(chk.flags)})"
        table.add_row(*cell, status if chk.status == "done" else f"[yellow]{status}[/]")
    sheet = contact_sheet(rows, cell=150, row_labels=labels,
                          col_labels=["original", "mask", "cut-out", "swapped"])
    write_image(out / "demo_sheet.png", sheet)
    console.print(table)
    flagged = [c for c in qc if c.status != "done"]
    if flagged:
        console.print(f"[yellow]{len(flagged)} of {len(qc)} mask(s) look wrong (mask QC, docs/trust.md): "
                      "their cut-outs are written but not to be trusted[/]", highlight=False)
    console.print(f"model load {t_load * 1000:.0f} ms; per image median {np.median(times):.0f} ms "
                  "(read + segment + cut-out + swap + 2 writes)")
    console.print(f"wrote {out}/cutout/ (RGBA PNG), {out}/swap/ (JPEG), {out}/demo_sheet.png")
    if experiment:
        failed = _experiment(out, quick=quick)
        if failed:
            raise typer.Exit(1)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _experiment(out: Path, *, quick: bool) -> int:
    """Run the demo experiment with a progress bar, print its table; returns the number of failed files."""
    from rich.markup import escape

    from bglab.cli._common import err_console, progress_bar
    from bglab.experiment.demo import ARMS, TEST_SETS, demo_config, run_demo_experiment

    try:
        import matplotlib  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BglabError(f"the demo experiment needs the train extra ({exc.name} is not installed)",
                         hint="pip install -e '.[train]' (make demo does), or run bglab demo --no-experiment") from None
    raw = demo_config(".", ".", quick=quick)
    n_epochs = len(raw["seeds"]) * len(ARMS) * int(raw["train"]["epochs"])
    console.print()
    console.print(f"[bold]Does the background matter?[/] The same CNN ({raw['input']['size']}x{raw['input']['size']}"
                  f" grey, {len(raw['seeds'])} seed(s)) trained on embedded green-screen hands, preprocessed two "
                  f"ways ({', '.join(ARMS)}: bglab's U-Net, black background), then tested on held-out hands as "
                  "photographed and on the same hands pasted onto new backgrounds.", highlight=False)
    with progress_bar(err_console, transient=True) as bar:
        task = bar.add_task("experiment", total=n_epochs, rate="")

        def log(msg: str) -> None:
            if " epoch " not in msg:
                bar.console.print(f"[dim]{escape(msg)}[/]", highlight=False)

        res = run_demo_experiment(out, quick=quick, log=log, on_epoch=lambda key, epoch: bar.advance(task))
    for _src, err in res.new_backgrounds.failed:
        err_console.print(f"[red]{escape(err)}[/]", highlight=False)
    seeds = len(res.seeds)
    spread = "min-max over seeds" if seeds > 1 else "one seed"
    table = Table(title=f"accuracy % on held-out hands ({res.n_train} training images, {res.epochs} epochs; "
                        f"mean and {spread})")
    names = {"webcam": "as photographed", "new-backgrounds": "on new backgrounds"}
    table.add_column("trained on (arm)", justify="left")
    for t in TEST_SETS:
        cell = next((c for c in res.cells if c.test_set == t), None)
        table.add_column(f"{names.get(t, t)} (n={cell.n_images if cell else 0})", justify="right")
    table.add_column("change (points)", justify="right")
    for arm in ARMS:
        row = [arm]
        cells = [res.cell(arm, t) for t in TEST_SETS]
        for c in cells:
            if c is None:
                row.append("n/a")
            elif len(c.values) > 1:
                row.append(f"{_pct(c.mean)} ({_pct(min(c.values))}-{_pct(max(c.values))})")
            else:
                row.append(_pct(c.mean))
        a, b = cells[0], cells[-1]
        row.append(f"{100 * (b.mean - a.mean):+.1f}" if a is not None and b is not None else "n/a")
        table.add_row(*row)
    console.print(table)
    for v in res.verdicts:
        console.print(escape(v), highlight=False)
    console.print("[dim]Caveat: the remove arm's masks come from bglab's U-Net, which was trained on these webcam "
                  "hands pasted on these background photos (and on real-scene hands that stop at the wrist, so on "
                  "pasted hands it often drops the forearm the green-screen masks keep); removal can only help as "
                  "far as the masks are right and consistent (docs/results.md, Segmenters).[/]",
                  highlight=False)
    console.print(f"experiment {res.seconds:.0f} s; report {res.report}, examples {res.sheet}, "
                  f"new-background test images {out / 'new-backgrounds'}/", highlight=False)
    return len(res.new_backgrounds.failed)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

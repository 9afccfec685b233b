"""``bglab correlate``: build a correlated-background study (train + kept / broken / reversed test sets)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from bglab.cli._common import console, err_console, parse_options, print_failed, progress_bar


def correlate(
    src: Path = typer.Argument(..., help="ImageFolder of foreground photos (one sub-folder per class)."),
    dst: Path = typer.Argument(..., help="Study folder: train/, test-kept/, test-broken/, test-reversed/, ..."),
    backgrounds: Path = typer.Option(..., "--backgrounds", help="Background photos: one sub-folder per family, "
                                     "or a flat folder split into one family per class (seeded)."),
    masks: Path = typer.Option(None, "--masks", help="Mask folder <masks>/<class>/<stem>.png (from `bglab key`); "
                               "images without a mask are skipped and counted."),
    backend: str = typer.Option(None, "--backend", "-b", help="Compute masks with this segmenter instead "
                                "(e.g. chroma for green screens)."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Backend option key=value (repeatable)."),
    correlation: float = typer.Option(0.95, "--correlation", min=0.0, max=1.0,
                                      help="Probability that a training image is on its class's own family."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Fraction of foregrounds held out for test."),
    size: int = typer.Option(128, "--size", min=8, help="Output images are SIZE x SIZE."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, families, backgrounds and crops."),
    per_class: int = typer.Option(None, "--per-class", min=1, help="Use at most N foregrounds per class."),
    fg_only: bool = typer.Option(True, "--fg-only/--no-fg-only", help="Also write test-fg-only (fg on black)."),
    despill: bool = typer.Option(True, "--despill/--no-despill", help="Suppress green-screen spill on the fg."),
    threads: int = typer.Option(1, "--threads", min=1, help="Foregrounds processed in parallel (threads)."),
    workers_old: int = typer.Option(None, "--workers", "-j", min=1, hidden=True,
                                    help="Deprecated spelling of --threads (it always meant threads)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild outputs that already exist."),
) -> None:
    """Pair every class with its own background family (train, at --correlation) and write test sets where
    the pairing is kept, broken (random family) and reversed (the next class's family). Resumable.

    Example: bglab correlate hands/ out/study --backgrounds backgrounds/ --masks masks/

    Exit code 0 when every image was written (or existed), 1 when any failed, 2 on a usage error.
    """
    from bglab.background.correlated import SPLITS, build_study, plan_study
    from bglab.cli._common import deprecated_flag

    threads = int(deprecated_flag("--workers/-j (correlate)", "--threads", workers_old, threads))  # type: ignore[arg-type]

    plan = plan_study(src, backgrounds, masks=masks, backend=backend, correlation=correlation,
                      test_fraction=test_fraction, seed=seed, per_class=per_class, fg_only=fg_only)
    segmenter = None
    if backend is not None:
        from bglab.foreground import create

        segmenter = create(backend, kind="segmenter", **parse_options(option))
    fams = ", ".join(f"{c}: {f.name} ({len(f.files)})" for c, f in plan.families.items())
    console.print(f"families: {fams}", highlight=False)
    t0 = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("correlate", total=len(plan.foregrounds), rate="")

        def tick(done: int, total: int, rows: list) -> None:  # noqa: ANN001
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:.1f} fg/s")
            for r in rows:
                if r.status == "failed":
                    print_failed(progress.console, f"{r.planned.output}: {r.error}")

        rep = build_study(plan, dst, size=size, segmenter=segmenter, despill=despill, threads=threads,
                          overwrite=overwrite, on_progress=tick)
    table = Table(title=f"bglab correlate (correlation {correlation}, {len(plan.classes)} classes)")
    for col in ("set", "images", "done", "skipped", "failed", "own family"):
        table.add_column(col, justify="right")
    for s in SPLITS:
        n = sum(o.split == s for o in plan.outputs)
        if n == 0:
            continue
        own = rep.own_fraction(s)
        table.add_row(s, str(n), str(rep.count("done", s)), str(rep.count("skipped", s)),
                      str(rep.count("failed", s)), "" if own is None else f"{own:.1%}")
    console.print(table)
    no_mask = sum(r == "no mask" for *_, r in plan.skipped)
    if plan.skipped:
        console.print(f"foregrounds left out: {len(plan.skipped)} ({no_mask} without a mask)")
    console.print(f"{rep.seconds:.1f} s; study in {dst}; manifest {dst / 'manifest.csv'}, summary "
                  f"{dst / 'summary.json'}", markup=False, highlight=False)
    if rep.failed:
        err_console.print(f"[bold red]{len(rep.failed)} image(s) failed[/]; see the manifest")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``correlate`` command to the bglab app."""
    app.command("correlate")(correlate)

"""``bglab review-seg``: judge segmenters by eye, blind, on photos without masks; then tally the judgements.

The library side is :mod:`bglab.foreground.review`; this module parses the options and prints the tables.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from bglab.cli._common import device_option
from bglab.errors import ConfigError, DatasetError

review_app = typer.Typer(
    name="review-seg",
    help="Choose a segmenter for photos that have no masks: blind side-by-side sheets to judge by eye "
         "(make), then the unblinded tally with intervals and paired tests (tally).",
    no_args_is_help=True,
)


@review_app.command("make")
def make(
    images: Annotated[Path, typer.Argument(help="Folder of photos (searched recursively).")],
    backends: Annotated[str, typer.Option(
        "--backends", help="Two or more backends, comma-separated (LABEL=BACKEND to name a variant); "
                           "-O LABEL:key=value sets an option for one of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the sheets, the judgement CSV "
                                                          "and the key.")],
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="Backend option key=value (repeatable); refine=true cleans a backend's masks as "
                               "`bglab remove` does by default (min_region=F: smallest region kept, default "
                               "0.1 of the largest).")] = None,
    sample: Annotated[int, typer.Option("--sample", "-n", help="Photos to review (rows).")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the photo draw and of the column order.")] = 0,
    threshold: Annotated[float, typer.Option("--threshold", help="Mask threshold (foreground: > it).")] = 0.5,
    rows_per_sheet: Annotated[int, typer.Option("--rows-per-sheet", help="Rows per PNG sheet.")] = 8,
    cell: Annotated[int, typer.Option("--cell", help="Side of one picture on the sheet, px.")] = 200,
    device: str = device_option(),
) -> None:
    """Write blind review sheets: per photo, every backend's cut-out on dark blue, columns shuffled per row.
    A photo that cannot be read or segmented is skipped and listed (exit code 1; the review is still written).

    Example: bglab review-seg make photos/ --backends unet-effnet,u2netp,hand-grabcut -o review/

    Then judge every cut-out without opening review/key.json: click through review/review.html (it saves
    judgements.csv), or look at review/sheet-*.png and write y (usable) or n (not) in every letter column of
    review/judgements.csv; then run: bglab review-seg tally review/
    """
    from rich.markup import escape

    from bglab.cli._common import console, err_console, parse_options, progress_bar
    from bglab.background.remove import RemoveOptions
    from bglab.foreground import Runtime
    from bglab.foreground.evaluate import open_backends, parse_backend_list
    from bglab.foreground.onnxrt import check_device
    from bglab.foreground.review import JUDGEMENTS_FILE, KEY_FILE, PAGE_FILE, column_letters, make_review
    from bglab.io.configfile import check_bool, check_number
    from bglab.io.files import check_separate, list_images_checked

    if not images.is_dir():
        raise DatasetError("folder not found", path=images, hint="pass a folder of photos")
    check_separate([images], out, what="review folder")
    runs = parse_backend_list(backends)
    column_letters(len(runs))  # 2..26 backends, checked before any model is opened
    runtime = replace(Runtime.from_env(), device=check_device(device))
    paths, unlisted = list_images_checked(images)
    opened = open_backends(runs, parse_options(option), paths, runtime, take=("refine", "min_region"))
    segmenters = {label: o.segmenter for label, o in opened.items()}
    chosen = {label: {"backend": o.name, "options": {k: str(v) for k, v in o.options.items()}}
              for label, o in opened.items()}
    refine: dict[str, float] = {}
    for label, o in opened.items():  # the cut-outs cleaned as `bglab remove` cleans them
        min_region = o.taken.get("min_region")
        if check_bool(f"{label}: refine", o.taken.get("refine", False)) or min_region is not None:
            refine[label] = check_number(f"{label}: min_region",
                                         RemoveOptions().min_region if min_region is None else min_region, lo=0, hi=1)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("review-seg", total=min(sample, len(paths)), rate="")
        made = make_review(paths, segmenters, out, root=images, sample=sample, seed=seed, threshold=threshold,
                           rows_per_sheet=rows_per_sheet, cell=cell, refine=refine, meta={"backend_options": chosen},
                           progress=lambda _p, ok: bar.advance(task) if ok else None)
    console.print(f"{made.rows} photos x {len(runs)} backends on {len(made.sheets)} sheet(s) in "
                  f"{escape(str(out))}", highlight=False)
    console.print(f"judge every cut-out without opening {KEY_FILE}: click through "
                  f"{escape(str(out / PAGE_FILE))} (it saves {JUDGEMENTS_FILE}), or fill "
                  f"{escape(str(out / JUDGEMENTS_FILE))} with y / n from the sheets; then: bglab review-seg tally "
                  f"{escape(str(out))} [--judgements FILE]", highlight=False)
    problems = made.failed + unlisted
    for p, err in problems:
        err_console.print(f"[yellow]skipped[/] {escape(str(p))}: {escape(err)}", highlight=False)
    if made.rows < sample and made.rows < len(paths):
        err_console.print(f"[yellow]{made.rows} of {sample} rows: too few readable photos[/]")
    if problems:  # the review is written; exit 1 as every batch command does when a file failed
        raise typer.Exit(1)


@review_app.command("tally")
def tally(
    folder: Annotated[Path, typer.Argument(help="A review folder made by `review-seg make`, judged.")],
    judgements: Annotated[Path | None, typer.Option(
        "--judgements", help="The filled CSV, when it is not FOLDER/judgements.csv (e.g. saved by review.html "
                             "to your downloads).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> None:
    """Unblind a judged review: usable cut-outs per backend (share, 95 % Wilson interval) and, per pair of
    backends, the photos only one of them got right with an exact McNemar test.

    Example: bglab review-seg tally review/
    """
    import json

    from rich.markup import escape
    from rich.table import Table

    from bglab.cli._common import console
    from bglab.experiment.stats import mcnemar, wilson_interval
    from bglab.foreground.review import tally_review

    t = tally_review(folder, judgements)
    if t.rows == 0:
        raise ConfigError("the review has no rows", path=folder)
    rates = {}
    for lb in t.labels:
        k = t.count(lb)
        lo, hi = wilson_interval(k, t.rows)
        rates[lb] = {"usable": k, "rows": t.rows, "share": k / t.rows, "ci95": [lo, hi]}
    pairs = []
    for a, b in itertools.combinations(t.labels, 2):
        m = mcnemar(t.usable[a], t.usable[b])
        pairs.append({"a": a, "b": b, "only_a": m.b, "only_b": m.c, "p_exact": m.p_exact})
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), "rows": t.rows, "backends": rates, "pairs": pairs}))
        return
    table = Table(title=escape(f"review-seg: usable cut-outs on {t.rows} photos (judged blind)"))
    for col in ("backend", "usable", "share", "95 % interval"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for lb in sorted(t.labels, key=lambda x: -rates[x]["usable"]):
        r = rates[lb]
        table.add_row(escape(lb), f"{r['usable']} / {t.rows}", f"{100 * r['share']:.1f} %",
                      f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f} %")
    console.print(table)
    ptab = Table(title="paired: photos only one backend cut out well (exact McNemar test, not corrected)")
    for col in ("a", "b", "only a", "only b", "p"):
        ptab.add_column(col, justify="left" if col in ("a", "b") else "right")
    for p in pairs:
        ptab.add_row(escape(p["a"]), escape(p["b"]), str(p["only_a"]), str(p["only_b"]), f"{p['p_exact']:.3g}")
    console.print(ptab)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review-seg")

"""``bglab eval-seg``: score a segmenter against ground-truth masks (IoU, F1, precision, recall, speed).

The library side is :mod:`bglab.foreground.evaluate`; this module parses the options and prints the tables.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bglab.cli._common import device_option
from bglab.errors import ConfigError, DatasetError
from bglab.foreground.evaluate import (QC_FLAGS, EvalFailure, EvalItem, EvalResult, evaluate_segmenter,
                                       open_backends, pair_by_stem, parse_backend_list, worst_sheet)
from bglab.foreground.registry import choices_help
from bglab.ops.metrics import json_safe

def eval_seg(
    images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
    masks: Annotated[Path, typer.Option("--masks", help="Folder of ground-truth masks (same file stems).")],
    backend: Annotated[str | None, typer.Option(
        "--backend", "-b", help=f"Segmenter backend: {choices_help('segmenter')} (see `bglab backends`).")] = None,
    backends: Annotated[str | None, typer.Option(
        "--backends", help="Several backends side by side, comma-separated (LABEL=BACKEND to name a variant); "
                           "-O LABEL:key=value sets an option for one of them.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="Backend option key=value (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object and nothing else on stdout.")] = False,
    sheet: Annotated[Path | None, typer.Option(
        "--sheet", help="Write a PNG contact sheet of the worst cases here (one backend only).")] = None,
    sheet_rows: Annotated[int, typer.Option("--sheet-rows", help="How many worst cases the sheet shows.")] = 8,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Score only the first N pairs (sorted by file name).")] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Prediction threshold (foreground: > threshold).")] = 0.5,
    device: str = device_option(),
) -> None:
    """Score segmenters against ground-truth masks: mean IoU / F1 / precision / recall, pooled IoU, speed, and
    mask QC counts (predictions that are empty, tiny, full, or fragmented).

    Example: bglab eval-seg --images test/images --masks test/masks --backend unet

    With ``--backends a,b,c`` every backend runs on the same pairs and one side-by-side table is printed:
    the way to pick a segmenter for a data set from a small labelled sample.
    Exit code 0 when every pair was scored, 1 when any image or mask failed (they are listed at the end).
    """
    from rich.markup import escape
    from rich.table import Table

    from bglab.cli._common import console, err_console, parse_options, progress_bar
    from bglab.foreground import DEFAULT_SEGMENTER, Runtime
    from bglab.foreground.onnxrt import check_device
    from bglab.io.files import list_images, write_image

    runtime = replace(Runtime.from_env(), device=check_device(device))  # cuda without onnxruntime-gpu: refused

    if backend is not None and backends is not None:
        raise ConfigError("give --backend or --backends, not both")
    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError("folder not found", path=folder, hint="pass an existing folder")
    pairs, lonely_images, lonely_masks = pair_by_stem(list_images(images), list_images(masks))
    if limit is not None:
        pairs = pairs[: max(0, limit)]
    if not pairs:
        raise DatasetError("no image/mask pairs with the same file stem", path=images,
                           hint=f"masks are looked up in {masks} by file stem")
    multi = backends is not None
    runs = parse_backend_list(backends) if multi else [(backend or DEFAULT_SEGMENTER,) * 2]
    if multi and sheet is not None and len(runs) > 1:
        raise ConfigError("--sheet works with one backend", hint="run eval-seg --backend NAME --sheet FILE")
    labels = [lb for lb, _ in runs]
    opened = open_backends(runs, parse_options(option), [im for im, _ in pairs], runtime)
    segmenters = {label: o.segmenter for label, o in opened.items()}
    per_label = {label: o.options for label, o in opened.items()}
    load_s = {label: o.load_s for label, o in opened.items()}
    keep = max(0, sheet_rows) if sheet is not None else 0

    results: dict[str, EvalResult] = {}
    for label, _name in runs:
        if as_json:
            results[label] = evaluate_segmenter(segmenters[label], pairs, threshold=threshold, keep_worst=keep)
            continue
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"eval-seg {label}", total=len(pairs), rate="")
            t0 = time.perf_counter()

            def tick(res: EvalItem | EvalFailure, task: Any = task, t0: float = t0, bar: Any = bar) -> None:
                done = bar.tasks[task].completed + 1
                bar.update(task, advance=1, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} img/s")

            results[label] = evaluate_segmenter(segmenters[label], pairs, progress=tick, threshold=threshold,
                                                keep_worst=keep)
    first = results[labels[0]]
    if sheet is not None and first.worst:
        write_image(sheet, worst_sheet(first.worst))

    if as_json:
        def one(label: str, name: str) -> dict[str, Any]:
            return {"backend": name, "label": label, "options": {k: str(v) for k, v in per_label[label].items()},
                    "load_s": load_s[label], **results[label].as_dict()}

        common = {"images": str(images), "masks": str(masks), "threshold": threshold,
                  "unmatched_images": [str(p) for p in lonely_images],
                  "unmatched_masks": [str(p) for p in lonely_masks]}
        if multi:
            out = {**common, "backends": [one(lb, nm) for lb, nm in runs]}
        else:
            out = {**one(*runs[0]), **common,
                   "sheet": str(sheet) if sheet is not None and first.worst else None}
        typer.echo(json.dumps(json_safe(out)))
    elif multi:
        table = Table(title=escape(f"eval-seg: {len(runs)} backends on {len(pairs)} images"),
                      caption=escape(f"{images} vs {masks}; mean per image; QC (bglab's mask rules, docs/trust.md): "
                                     "predictions not-found / empty / full / fragmented / border"))
        for col in ("backend", "IoU", "sd", "F1", "prec", "recall", "pooled", "ms/img", "none", "empty", "full",
                    "frag", "border", "failed"):
            table.add_column(col, justify="left" if col == "backend" else "right", no_wrap=col == "backend")
        best = max(labels, key=lambda lb: _nan_low(results[lb].summary.iou))
        for label, name in runs:
            r = results[label]
            s = r.summary
            q = r.flag_counts
            shown = label if label == name else f"{label} ({name})"
            table.add_row(f"[bold]{escape(shown)}[/]" if label == best else escape(shown),
                          f"{s.iou:.3f}", f"{s.iou_std:.3f}", f"{s.f1:.3f}", f"{s.precision:.3f}", f"{s.recall:.3f}",
                          f"{s.pooled_iou:.3f}", f"{r.predict_ms:.0f}",
                          *(str(q[f]) for f in QC_FLAGS), str(len(r.failures)))
        console.print(table)
    else:
        r = first
        s = r.summary
        table = Table(title=escape(f"eval-seg: {labels[0]} ({len(r.items)} images)"),
                      caption=escape(f"{images} vs {masks}"))
        table.add_column("metric")
        table.add_column("value", justify="right")
        for label, mean, sd in (("IoU (mean per image)", s.iou, s.iou_std), ("F1 / Dice", s.f1, s.f1_std),
                                ("precision", s.precision, s.precision_std), ("recall", s.recall, s.recall_std)):
            table.add_row(label, f"{mean:.4f} ± {sd:.4f}")
        table.add_row("IoU (pooled pixels)", f"{s.pooled_iou:.4f}")
        table.add_row("ms / image (predict)", f"{r.predict_ms:.1f}")
        table.add_row("ms / image (end to end)", f"{r.total_ms:.1f}")
        table.add_row("backend load (s)", f"{load_s[labels[0]]:.2f}")
        q = r.flag_counts
        table.add_row("QC: not-found / empty / full / fragmented / border", " / ".join(str(q[f]) for f in QC_FLAGS))
        table.add_row("failed", str(len(r.failures)))
        console.print(table)
    if not as_json:
        if lonely_images or lonely_masks:
            err_console.print(f"[yellow]unmatched:[/] {len(lonely_images)} image(s) without a mask, "
                              f"{len(lonely_masks)} mask(s) without an image")
            for p in (lonely_images + lonely_masks)[:10]:
                err_console.print(f"  {escape(str(p))}", highlight=False)
        if sheet is not None and first.worst:
            console.print(f"worst cases: {escape(str(sheet))}", highlight=False)
    failed = [(lb, f) for lb in labels for f in results[lb].failures]
    if failed:
        for lb, f in failed:
            err_console.print(f"[red]failed[/] {escape((lb + ': ') if multi else '')}{escape(f.error)}",
                              highlight=False)
        err_console.print(f"[bold red]{len(failed)} of {len(pairs) * len(labels)} pair(s) failed[/]")
        raise typer.Exit(1)


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def register(app: typer.Typer) -> None:
    app.command("eval-seg")(eval_seg)

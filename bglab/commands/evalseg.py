"""``bglab eval-seg``: score a segmenter against ground-truth masks (IoU, F1, precision, recall, speed).

The library side is :func:`evaluate_segmenter` (pairs in, :class:`EvalResult` out), reused by the bench;
:func:`pair_by_stem` matches image and mask files by stem. Bad image or mask files are recorded and skipped.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bglab.errors import BglabError, DatasetError, MaskError
from bglab.metrics import SegScores, SegSummary, json_safe, seg_scores, summarize


@dataclass(frozen=True)
class EvalItem:
    """One scored image: its files, scores and timings (predict only; end to end incl. reading and scoring)."""

    image: Path
    mask: Path
    scores: SegScores
    predict_ms: float
    total_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"image": str(self.image), "mask": str(self.mask), **self.scores.as_dict(),
                "predict_ms": self.predict_ms, "total_ms": self.total_ms}


@dataclass(frozen=True)
class EvalFailure:
    """An image/mask pair that could not be scored (unreadable file, size mismatch, backend refusal)."""

    image: Path
    mask: Path
    error: str


@dataclass(frozen=True)
class WorstCase:
    """Pixels kept for the contact sheet of the lowest-IoU images."""

    item: EvalItem
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


@dataclass
class EvalResult:
    """Everything :func:`evaluate_segmenter` measured."""

    items: list[EvalItem] = field(default_factory=list)
    failures: list[EvalFailure] = field(default_factory=list)
    worst: list[WorstCase] = field(default_factory=list)  # lowest IoU first
    wall_s: float = 0.0

    @property
    def summary(self) -> SegSummary:
        return summarize([i.scores for i in self.items])

    @property
    def predict_ms(self) -> float:
        """Mean milliseconds per image spent in ``segmenter.predict``."""
        return float(np.mean([i.predict_ms for i in self.items])) if self.items else math.nan

    @property
    def total_ms(self) -> float:
        """Mean end-to-end milliseconds per image (read image and mask, predict, score)."""
        return float(np.mean([i.total_ms for i in self.items])) if self.items else math.nan

    def as_dict(self) -> dict[str, Any]:
        return json_safe({
            "n": len(self.items),
            "failed": len(self.failures),
            "summary": self.summary.as_dict(),
            "predict_ms": self.predict_ms,
            "total_ms": self.total_ms,
            "wall_s": self.wall_s,
            "failures": [{"image": str(f.image), "mask": str(f.mask), "error": f.error} for f in self.failures],
            "per_image": [i.as_dict() for i in self.items],
        })


def pair_by_stem(
    images: Sequence[Path], masks: Sequence[Path]
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Match image and mask files by file stem: (pairs sorted by image, unmatched images, unmatched masks).

    When several masks share a stem the first in sorted order is used; the others count as unmatched.
    """
    by_stem: dict[str, Path] = {}
    extra: list[Path] = []
    for m in sorted(masks):
        if m.stem in by_stem:
            extra.append(m)
        else:
            by_stem[m.stem] = m
    pairs: list[tuple[Path, Path]] = []
    lonely: list[Path] = []
    used: set[str] = set()
    for im in sorted(images):
        m = by_stem.get(im.stem)
        if m is None:
            lonely.append(im)
        else:
            pairs.append((im, m))
            used.add(im.stem)
    unmatched_masks = sorted([m for s, m in by_stem.items() if s not in used] + extra)
    return pairs, lonely, unmatched_masks


def evaluate_segmenter(
    segmenter: Any,
    pairs: Iterable[tuple[Path, Path]],
    *,
    progress: Callable[[EvalItem | EvalFailure], None] | None = None,
    threshold: float = 0.5,
    keep_worst: int = 0,
) -> EvalResult:
    """Run ``segmenter.predict`` on every (image, mask) pair and score it; ``progress`` is called per pair.

    Unreadable files, size mismatches and per-image backend errors (:class:`BglabError`) become
    :class:`EvalFailure` entries; anything else propagates. ``keep_worst`` keeps the pixels of that many
    lowest-IoU images for a contact sheet.
    """
    from bglab.io import read_image, read_mask
    from bglab.ops.mask import as_soft

    result = EvalResult()
    heap: list[tuple[float, int, WorstCase]] = []  # max-heap on IoU via negation: keeps the lowest
    t_start = time.perf_counter()
    for k, (image_path, mask_path) in enumerate(pairs):
        t0 = time.perf_counter()
        try:
            image = read_image(image_path)
            truth = read_mask(mask_path)
            if truth.shape[:2] != image.shape[:2]:
                raise MaskError(
                    f"mask is {truth.shape[1]}x{truth.shape[0]} but its image {image_path} is "
                    f"{image.shape[1]}x{image.shape[0]} (WxH)",
                    path=mask_path, hint="the ground-truth mask must have the image's size",
                )
            t1 = time.perf_counter()
            pred = as_soft(segmenter.predict(image, source=Path(image_path)), image.shape)
            t2 = time.perf_counter()
            scores = seg_scores(pred, truth, threshold)
        except (BglabError, OSError) as exc:
            fail = EvalFailure(Path(image_path), Path(mask_path), str(exc))
            result.failures.append(fail)
            if progress is not None:
                progress(fail)
            continue
        item = EvalItem(Path(image_path), Path(mask_path), scores, (t2 - t1) * 1000.0,
                        (time.perf_counter() - t0) * 1000.0)
        result.items.append(item)
        if keep_worst > 0:
            entry = (-scores.iou, -k, WorstCase(item, image, truth, pred))
            if len(heap) < keep_worst:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)
        if progress is not None:
            progress(item)
    result.wall_s = time.perf_counter() - t_start
    result.worst = [w for _, _, w in sorted(heap, key=lambda e: (e[0], e[1]), reverse=True)]
    return result


def worst_sheet(worst: Sequence[WorstCase], *, cell: int = 200) -> np.ndarray:
    """Contact sheet rows ``image | truth | prediction`` for the given cases (already worst first)."""
    from bglab.viz import contact_sheet, overlay_mask

    rows = []
    labels = []
    for w in worst:
        rows.append([w.image, overlay_mask(w.image, w.truth, color=(0, 200, 0)),
                     overlay_mask(w.image, w.pred, color=(255, 0, 255))])
        labels.append(f"{w.item.image.name}  IoU {w.item.scores.iou:.3f}  F1 {w.item.scores.f1:.3f}")
    return contact_sheet(rows, cell=cell, row_labels=labels, col_labels=["image", "truth", "prediction"])


def eval_seg(
    images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
    masks: Annotated[Path, typer.Option("--masks", help="Folder of ground-truth masks (same file stems).")],
    backend: Annotated[str | None, typer.Option(
        "--backend", "-b", help="Segmenter backend (see `bglab backends`); default: unet.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="Backend option key=value (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object and nothing else on stdout.")] = False,
    sheet: Annotated[Path | None, typer.Option(
        "--sheet", help="Write a PNG contact sheet of the worst cases here.")] = None,
    sheet_rows: Annotated[int, typer.Option("--sheet-rows", help="How many worst cases the sheet shows.")] = 8,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Score only the first N pairs (sorted by file name).")] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Prediction threshold (foreground: > threshold).")] = 0.5,
) -> None:
    """Score a segmenter against ground-truth masks: mean IoU / F1 / precision / recall, pooled IoU, speed.

    Exit code 0 when every pair was scored, 1 when any image or mask failed (they are listed at the end).
    """
    from rich.markup import escape
    from rich.table import Table

    from bglab.commands._common import console, err_console, parse_options, progress_bar
    from bglab.io import list_images, write_image
    from bglab.segment import DEFAULT_SEGMENTER, create

    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError("folder not found", path=folder, hint="pass an existing folder")
    pairs, lonely_images, lonely_masks = pair_by_stem(list_images(images), list_images(masks))
    if limit is not None:
        pairs = pairs[: max(0, limit)]
    if not pairs:
        raise DatasetError("no image/mask pairs with the same file stem", path=images,
                           hint=f"masks are looked up in {masks} by file stem")
    name = backend or DEFAULT_SEGMENTER
    options = parse_options(option)
    t_load = time.perf_counter()
    segmenter = create(name, kind="segmenter", **options)
    load_s = time.perf_counter() - t_load
    keep = max(0, sheet_rows) if sheet is not None else 0

    if as_json:
        result = evaluate_segmenter(segmenter, pairs, threshold=threshold, keep_worst=keep)
    else:
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"eval-seg {name}", total=len(pairs), rate="")

            def tick(res: EvalItem | EvalFailure) -> None:
                done = bar.tasks[task].completed + 1
                bar.update(task, advance=1, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} img/s")

            t0 = time.perf_counter()
            result = evaluate_segmenter(segmenter, pairs, progress=tick, threshold=threshold, keep_worst=keep)

    if sheet is not None and result.worst:
        write_image(sheet, worst_sheet(result.worst))

    if as_json:
        out = {"backend": name, "options": {k: str(v) for k, v in options.items()}, "images": str(images),
               "masks": str(masks), "threshold": threshold, "load_s": load_s,
               "unmatched_images": [str(p) for p in lonely_images],
               "unmatched_masks": [str(p) for p in lonely_masks],
               "sheet": str(sheet) if sheet is not None and result.worst else None,
               **result.as_dict()}
        typer.echo(json.dumps(json_safe(out)))
    else:
        s = result.summary
        table = Table(title=escape(f"eval-seg: {name} ({len(result.items)} images)"),
                      caption=escape(f"{images} vs {masks}"))
        table.add_column("metric")
        table.add_column("value", justify="right")
        for label, mean, sd in (("IoU (mean per image)", s.iou, s.iou_std), ("F1 / Dice", s.f1, s.f1_std),
                                ("precision", s.precision, s.precision_std), ("recall", s.recall, s.recall_std)):
            table.add_row(label, f"{mean:.4f} ± {sd:.4f}")
        table.add_row("IoU (pooled pixels)", f"{s.pooled_iou:.4f}")
        table.add_row("ms / image (predict)", f"{result.predict_ms:.1f}")
        table.add_row("ms / image (end to end)", f"{result.total_ms:.1f}")
        table.add_row("backend load (s)", f"{load_s:.2f}")
        table.add_row("failed", str(len(result.failures)))
        console.print(table)
        if lonely_images or lonely_masks:
            err_console.print(f"[yellow]unmatched:[/] {len(lonely_images)} image(s) without a mask, "
                              f"{len(lonely_masks)} mask(s) without an image")
            for p in (lonely_images + lonely_masks)[:10]:
                err_console.print(f"  {escape(str(p))}", highlight=False)
        if sheet is not None and result.worst:
            console.print(f"worst cases: {escape(str(sheet))}", highlight=False)
    if result.failures:
        for f in result.failures:
            err_console.print(f"[red]failed[/] {escape(f.error)}", highlight=False)
        err_console.print(f"[bold red]{len(result.failures)} of {len(pairs)} pair(s) failed[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("eval-seg")(eval_seg)

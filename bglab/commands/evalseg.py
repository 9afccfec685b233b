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

from bglab.errors import BglabError, ConfigError, DatasetError, MaskError
from bglab.metrics import SegScores, SegSummary, json_safe, seg_scores, summarize

QC_FLAGS = ("not-found", "empty", "full", "fragmented", "border")  # bglab.ops.qc.mask_flags


@dataclass(frozen=True)
class EvalItem:
    """One scored image: its files, scores and timings (predict only; end to end incl. reading and scoring)."""

    image: Path
    mask: Path
    scores: SegScores
    predict_ms: float
    total_ms: float
    flags: tuple[str, ...] = ()  # the prediction's mask QC (bglab.ops.qc.mask_flags, the default rules)

    def as_dict(self) -> dict[str, Any]:
        return {"image": str(self.image), "mask": str(self.mask), **self.scores.as_dict(),
                "predict_ms": self.predict_ms, "total_ms": self.total_ms, "flags": list(self.flags)}


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
    def flag_counts(self) -> dict[str, int]:
        """How many predictions the mask QC flagged, per flag (``empty``, ``tiny``, ``full``, ``fragmented``)."""
        out = {f: 0 for f in QC_FLAGS}
        for i in self.items:
            for f in i.flags:
                out[f] = out.get(f, 0) + 1
        return out

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
            "qc": self.flag_counts,
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
    from bglab.ops.qc import mask_flags

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
            flags = mask_flags(pred, threshold)
        except (BglabError, OSError) as exc:
            fail = EvalFailure(Path(image_path), Path(mask_path), str(exc))
            result.failures.append(fail)
            if progress is not None:
                progress(fail)
            continue
        item = EvalItem(Path(image_path), Path(mask_path), scores, (t2 - t1) * 1000.0,
                        (time.perf_counter() - t0) * 1000.0, flags)
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


def parse_backend_list(text: str) -> list[tuple[str, str]]:
    """``"unet,u2netp,box=grabcut"`` -> ``[("unet", "unet"), ("u2netp", "u2netp"), ("box", "grabcut")]``:
    (label, backend name); a label lets one backend appear twice with different options."""
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        label, _, name = part.partition("=")
        label, name = (label.strip(), name.strip()) if name else (part, part)
        if not label or not name:
            raise ConfigError(f"bad --backends entry {part!r}", hint="e.g. --backends unet,u2netp,boxed=grabcut")
        if label in (lb for lb, _ in out):
            raise ConfigError(f"--backends lists {label!r} twice", hint="give one of them a label: LABEL=BACKEND")
        out.append((label, name))
    if not out:
        raise ConfigError("--backends is empty", hint="e.g. --backends unet,u2netp,grabcut")
    return out


def options_for(label: str, options: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """The ``-O`` options meant for ``label``: ``LABEL:key=value`` ones, plus unprefixed ones (all backends)."""
    norm = {lb.replace("-", "_"): lb for lb in labels}
    out: dict[str, Any] = {}
    for key, value in options.items():
        prefix, sep, rest = key.partition(":")
        if not sep:
            out[key] = value
            continue
        if prefix not in norm:
            raise ConfigError(f"option {key!r} names no backend of this run",
                              hint=f"prefix an option with one of: {', '.join(labels)}")
        if norm[prefix] == label:
            out[rest] = value
    return out


def eval_seg(
    images: Annotated[Path, typer.Option("--images", help="Folder of images.")],
    masks: Annotated[Path, typer.Option("--masks", help="Folder of ground-truth masks (same file stems).")],
    backend: Annotated[str | None, typer.Option(
        "--backend", "-b", help="Segmenter backend (see `bglab backends`); default: unet.")] = None,
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

    from bglab.commands._common import console, err_console, parse_options, progress_bar
    from bglab.io import list_images, write_image
    from bglab.segment import DEFAULT_SEGMENTER, create

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
    options = parse_options(option)
    labels = [lb for lb, _ in runs]
    per_label = {lb: (options_for(lb, options, labels) if multi else options) for lb in labels}
    segmenters = {}
    load_s = {}
    from bglab.segment.auto import resolve

    for label, name in runs:  # open every backend first: a bad name or option fails before any work
        per_label[label] = resolve(name, per_label[label], [im for im, _ in pairs])  # auto: per data set
        t_load = time.perf_counter()
        segmenters[label] = create(name, kind="segmenter", **per_label[label])
        load_s[label] = time.perf_counter() - t_load
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

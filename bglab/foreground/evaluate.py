"""Score a segmenter against ground-truth masks: IoU, F1, precision, recall, speed and mask QC per image.

:func:`evaluate_segmenter` (pairs in, :class:`EvalResult` out) is what ``bglab eval-seg`` and the bench run;
:func:`pair_by_stem` matches image and mask files by stem. Bad image or mask files are recorded and skipped.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BglabError, ConfigError, MaskError
from bglab.ops.metrics import SegScores, SegSummary, json_safe, seg_scores, summarize

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
    from bglab.io.files import read_image, read_mask
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
    from bglab.ops.viz import contact_sheet, overlay_mask

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


@dataclass
class OpenedBackend:
    """One ``--backends`` entry, opened: the segmenter, the options it was created with (``auto``'s data-set
    decision filled in), the options its caller took for itself, and how long opening took."""

    name: str
    segmenter: Any
    options: dict[str, Any]
    taken: dict[str, Any]
    load_s: float


def open_backends(runs: Sequence[tuple[str, str]], options: dict[str, Any], paths: Sequence[str | Path],
                  runtime: Any = None, *, take: Sequence[str] = ()) -> dict[str, OpenedBackend]:
    """Every ``(label, backend)`` of ``runs`` created with its ``-O`` options (:func:`options_for`), in order,
    before any image is segmented, so a bad name or option fails first; ``auto`` decides hands / objects on
    ``paths``. Option keys in ``take`` are not backend options: they are handed back in ``taken``."""
    from bglab.foreground.auto import resolve
    from bglab.foreground.registry import create

    labels = [lb for lb, _ in runs]
    out: dict[str, OpenedBackend] = {}
    for label, name in runs:
        opts = options_for(label, options, labels)
        taken = {k: opts.pop(k) for k in take if k in opts}
        opts = resolve(name, opts, paths)
        t0 = time.perf_counter()
        seg = create(name, kind="segmenter", runtime=runtime, **opts)
        out[label] = OpenedBackend(name, seg, opts, taken, time.perf_counter() - t0)
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

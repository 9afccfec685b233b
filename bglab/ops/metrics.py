"""Segmentation quality scores (pure numpy): per-image IoU / F1 / precision / recall and their summaries.

Conventions
-----------
- A prediction is foreground where its soft value is strictly ``> threshold`` (default 0.5), as in
  :func:`bglab.ops.mask.binarize`. Masks may be ``bool``,
  integer 0/1 or 0..255 (divided by 255) or float in [0, 1]; the truth is binarised the same way.
- Empty masks: when prediction *and* truth are both empty every score is 1.0 (nothing to find, nothing found);
  when exactly one of them is empty every score is 0.0 (a miss or a pure false alarm).
- :func:`summarize` gives the mean of the per-image scores (each image weighs the same) with their population
  standard deviation, plus *pooled* IoU and F1 from the summed pixel counts (big objects weigh more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bglab.errors import MaskError

__all__ = ["SegScores", "SegSummary", "seg_scores", "summarize", "to_binary"]


@dataclass(frozen=True)
class SegScores:
    """Scores of one predicted mask against its truth, with the pixel counts they came from."""

    iou: float
    f1: float
    precision: float
    recall: float
    tp: int = 0  # predicted foreground that is foreground
    fp: int = 0  # predicted foreground that is background
    fn: int = 0  # missed foreground

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class SegSummary:
    """Means (and population standard deviations) of per-image scores, plus pooled IoU / F1 over all pixels."""

    n: int
    iou: float
    iou_std: float
    f1: float
    f1_std: float
    precision: float
    precision_std: float
    recall: float
    recall_std: float
    pooled_iou: float
    pooled_f1: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def to_binary(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A bool (H, W) foreground mask from a bool, integer (0..255) or float [0, 1] mask."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise MaskError(f"a mask must be 2-D (H, W), got shape {m.shape}")
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.integer):  # 0/1 masks as they are, 0..255 divided by 255 (as ops.as_soft)
        scale = 1.0 if m.size == 0 or int(m.max()) <= 1 else 255.0
        return m.astype(np.float32) / scale > threshold
    return m > threshold


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def seg_scores(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> SegScores:
    """IoU, F1 (= Dice), precision and recall of ``pred`` against ``truth`` (same H, W; see module conventions)."""
    p = to_binary(pred, threshold)
    t = to_binary(truth, 0.5)
    if p.shape != t.shape:
        raise MaskError(f"prediction {p.shape[1]}x{p.shape[0]} and truth {t.shape[1]}x{t.shape[0]} differ in size")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return _from_counts(tp, fp, fn)


def _from_counts(tp: int, fp: int, fn: int) -> SegScores:
    if tp + fp + fn == 0:  # both empty
        return SegScores(1.0, 1.0, 1.0, 1.0, 0, 0, 0)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return SegScores(
        iou=_ratio(tp, tp + fp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=precision,
        recall=recall,
        tp=tp,
        fp=fp,
        fn=fn,
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


def summarize(scores: Sequence[SegScores]) -> SegSummary:
    """Mean per-image scores with std, and pooled IoU / F1 (sum of intersections / sum of unions).

    An empty sequence gives NaN everywhere (n = 0). Pooled scores are 1.0 when every mask pair is empty.
    """
    items = list(scores)
    iou, iou_sd = _mean_std([s.iou for s in items])
    f1, f1_sd = _mean_std([s.f1 for s in items])
    pr, pr_sd = _mean_std([s.precision for s in items])
    rc, rc_sd = _mean_std([s.recall for s in items])
    if items:
        pooled = _from_counts(sum(s.tp for s in items), sum(s.fp for s in items), sum(s.fn for s in items))
        p_iou, p_f1 = pooled.iou, pooled.f1
    else:
        p_iou = p_f1 = math.nan
    return SegSummary(len(items), iou, iou_sd, f1, f1_sd, pr, pr_sd, rc, rc_sd, p_iou, p_f1)


def json_safe(obj: Any) -> Any:
    """Replace NaN / inf by None (recursively) so metric results serialise as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj

"""Segmentation metrics against hand-computed tiny masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bglab.errors import MaskError
from bglab.ops.metrics import SegScores, seg_scores, summarize


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_scores_hand_computed() -> None:
    pred = _m(["##..", "##..", "....", "...."])  # 4 px
    truth = _m([".##.", ".##.", "....", "...."])  # 4 px, overlap 2
    s = seg_scores(pred, truth)
    assert (s.tp, s.fp, s.fn) == (2, 2, 2)
    assert s.iou == pytest.approx(2 / 6)
    assert s.f1 == pytest.approx(4 / 8)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(0.5)


def test_dtypes_and_threshold() -> None:
    truth = np.array([[255, 0], [255, 0]], dtype=np.uint8)
    soft = np.array([[0.9, 0.4], [0.5, 0.6]], dtype=np.float32)
    s = seg_scores(soft, truth)  # > 0.5 -> pred = [[1, 0], [0, 1]]
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(0.5)
    s2 = seg_scores(soft, truth, threshold=0.7)  # pred = [[1, 0], [0, 0]]
    assert (s2.tp, s2.fp, s2.fn) == (1, 0, 1)
    assert s2.iou == pytest.approx(0.5)


def test_empty_conventions() -> None:
    z = np.zeros((3, 3), bool)
    one = z.copy()
    one[1, 1] = True
    assert seg_scores(z, z) == SegScores(1.0, 1.0, 1.0, 1.0, 0, 0, 0)
    miss = seg_scores(z, one)
    assert (miss.iou, miss.f1, miss.precision, miss.recall) == (0.0, 0.0, 0.0, 0.0)
    alarm = seg_scores(one, z)
    assert (alarm.iou, alarm.f1, alarm.precision, alarm.recall) == (0.0, 0.0, 0.0, 0.0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(MaskError):
        seg_scores(np.zeros((2, 3)), np.zeros((3, 2)))


def test_summarize_means_and_pooled() -> None:
    a = SegScores(0.5, 2 / 3, 1.0, 0.5, tp=1, fp=0, fn=1)
    b = SegScores(0.9, 0.947, 0.9, 1.0, tp=90, fp=10, fn=0)
    s = summarize([a, b])
    assert s.n == 2
    assert s.iou == pytest.approx(0.7)
    assert s.iou_std == pytest.approx(0.2)
    assert s.precision == pytest.approx(0.95)
    assert s.pooled_iou == pytest.approx(91 / 102)  # (1 + 90) / (1 + 0 + 1 + 90 + 10 + 0)
    assert s.pooled_f1 == pytest.approx(182 / 193)
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.iou)


def test_integer_zero_one_mask_is_foreground() -> None:
    truth = np.array([[1, 0], [0, 0]], dtype=np.uint8)
    assert seg_scores(truth, truth * 255).iou == 1.0

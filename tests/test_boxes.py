"""Box: conversions, checks, repair, overlap, with hand-computed values and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bglab.errors import BoxError
from bglab.ops.box import Box, box_iou_matrix, iou

# ------------------------------------------------------------------ hand-computed


def test_constructors_agree() -> None:
    b = Box.from_xyxy(2, 3, 10, 7)
    assert b == Box.from_xywh(2, 3, 8, 4)
    assert b == Box.from_normalized(0.1, 0.3, 0.5, 0.7, 20, 10)
    assert Box.from_cxcywh(0.3, 0.5, 0.4, 0.4, 20, 10).xyxy == pytest.approx(b.xyxy)
    assert isinstance(Box(1, 2, 3, 4).x0, float)


def test_views() -> None:
    b = Box(2, 3, 10, 7)
    assert b.xyxy == (2, 3, 10, 7)
    assert b.xywh == (2, 3, 8, 4)
    assert b.normalized(20, 10) == pytest.approx((0.1, 0.3, 0.5, 0.7))
    assert b.cxcywh_normalized(20, 10) == pytest.approx((0.3, 0.5, 0.4, 0.4))
    assert (b.width, b.height, b.area, b.center) == (8, 4, 32, (6, 5))
    assert b.is_valid


def test_box_is_frozen() -> None:
    b = Box(0, 0, 1, 1)
    with pytest.raises(AttributeError):
        b.x0 = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        (Box(1, 1, 5, 5), (10, 10), []),
        (Box(0, 0, 10, 10), (10, 10), []),
        (Box(float("nan"), 0, 5, 5), (10, 10), ["nan"]),
        (Box(0, 0, math.inf, 5), None, ["nan"]),
        (Box(-2, 1, 5, 5), (10, 10), ["negative", "partly-outside"]),
        (Box(5, 1, 2, 5), (10, 10), ["reversed"]),
        (Box(3, 1, 3, 5), (10, 10), ["zero-width"]),
        (Box(1, 4, 5, 4), (10, 10), ["zero-height"]),
        (Box(12, 1, 15, 5), (10, 10), ["outside-image"]),
        (Box(-5, -5, 0, 0), (10, 10), ["negative", "outside-image"]),
        (Box(5, 5, 11, 9), (10, 10), ["partly-outside"]),
        (Box(5, 5, 11, 9), None, []),
    ],
)
def test_problems(box: Box, size: tuple[int, int] | None, expected: list[str]) -> None:
    w, h = size if size else (None, None)
    assert box.problems(w, h) == expected


def test_validate_raises_with_every_problem_named() -> None:
    assert Box(1, 1, 2, 2).validate(4, 4) == Box(1, 1, 2, 2)
    with pytest.raises(BoxError, match="negative.*partly-outside"):
        Box(-1, 1, 3, 2).validate(4, 4)
    with pytest.raises(BoxError, match="reversed"):
        Box(3, 1, 1, 2).validate()


def test_is_valid_false_cases() -> None:
    for b in (Box(0, 0, 0, 1), Box(2, 0, 1, 1), Box(float("nan"), 0, 1, 1)):
        assert not b.is_valid
        assert b.area == 0


def test_clamp() -> None:
    assert Box(-3, 2, 12, 20).clamp(10, 8) == Box(0, 2, 10, 8)
    assert Box(20, 20, 30, 30).clamp(10, 8) == Box(10, 8, 10, 8)


def test_repair_rule() -> None:
    # clip to the image
    assert Box(-3, 2, 12, 5).repair(10, 8) == Box(0, 2, 10, 5)
    # zero-size: widen by one pixel, to the right/bottom where it fits, otherwise to the left/top
    assert Box(3, 2, 3, 5).repair(10, 8) == Box(3, 2, 4, 5)
    assert Box(10, 2, 10, 5).repair(10, 8) == Box(9, 2, 10, 5)
    assert Box(2, 8, 5, 8).repair(10, 8) == Box(2, 7, 5, 8)
    assert Box(4, 4, 4, 4).repair(10, 8) == Box(4, 4, 5, 5)
    # an image under one pixel: the whole side (the widened box was empty before: hypothesis found it)
    assert Box(0, 0, 0, 0).repair(1, 0.5) == Box(0, 0, 1, 0.5)
    # valid box unchanged
    assert Box(1, 1, 2, 2).repair(10, 8) == Box(1, 1, 2, 2)


@pytest.mark.parametrize("bad", [Box(float("nan"), 0, 1, 1), Box(5, 1, 2, 4), Box(11, 0, 14, 3)])
def test_repair_refuses(bad: Box) -> None:
    with pytest.raises(BoxError, match="cannot repair"):
        bad.repair(10, 8)


def test_expand_pad_scale_translate() -> None:
    b = Box(2, 2, 6, 4)  # centre (4, 3), 4 x 2
    assert b.expand(1) == b
    assert b.expand(2) == Box(0, 1, 8, 5)
    assert b.expand(0.5) == Box(3, 2.5, 5, 3.5)
    assert b.pad(0.25) == Box(1, 1.5, 7, 4.5)
    assert b.pad(1, relative=False) == Box(1, 1, 7, 5)
    assert b.scale(2, 3) == Box(4, 6, 12, 12)
    assert b.scale(0.5) == Box(1, 1, 3, 2)
    assert b.translate(-2, 1) == Box(0, 3, 4, 5)
    with pytest.raises(BoxError):
        b.expand(-1)


def test_to_int_covers_box() -> None:
    assert Box(1.2, 2.7, 3.1, 4.0).to_int() == (1, 2, 4, 4)
    assert all(isinstance(v, int) for v in Box(1.5, 1, 2, 2).to_int())
    with pytest.raises(BoxError):
        Box(float("nan"), 0, 1, 1).to_int()


def test_overlap_hand_computed() -> None:
    a, b = Box(0, 0, 2, 2), Box(1, 1, 3, 3)
    assert a.intersection(b) == Box(1, 1, 2, 2)
    assert a.intersection_area(b) == 1
    assert a.union_area(b) == 7
    assert a.iou(b) == pytest.approx(1 / 7)
    assert iou(a, b) == pytest.approx(1 / 7)
    assert a.intersection(Box(2, 0, 4, 2)) is None  # touching edges do not overlap
    assert a.iou(Box(5, 5, 6, 6)) == 0
    assert a.iou(Box(0, 0, 0, 2)) == 0  # zero-size box


def test_iou_matrix_matches_pairwise() -> None:
    a = [Box(0, 0, 2, 2), Box(1, 1, 3, 3), Box(0, 0, 0, 1)]
    b = [Box(1, 1, 3, 3), Box(10, 10, 12, 12), Box(float("nan"), 0, 1, 1)]
    m = box_iou_matrix(a, b)
    assert m.shape == (3, 3) and m.dtype == np.float64
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert m[i, j] == pytest.approx(x.iou(y))
    assert box_iou_matrix([], b).shape == (0, 3)


def test_from_mask() -> None:
    m = np.zeros((6, 8), dtype=np.uint8)
    m[2:4, 3:7] = 255
    m[5, 1] = 255
    assert Box.from_mask(m) == Box(1, 2, 7, 6)
    assert Box.from_mask(np.zeros((3, 3), bool)) is None
    soft = np.zeros((4, 4), np.float32)
    soft[1, 2] = 0.9
    soft[3, 3] = 0.4
    assert Box.from_mask(soft) == Box(2, 1, 3, 2)
    assert Box.from_mask(soft, threshold=0.3) == Box(2, 1, 4, 4)


# ------------------------------------------------------------------ properties

coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
size = st.integers(min_value=1, max_value=4000)


@st.composite
def valid_boxes(draw: st.DrawFn) -> Box:
    x0, y0 = draw(coord), draw(coord)
    w = draw(st.floats(min_value=1e-2, max_value=1e4))
    h = draw(st.floats(min_value=1e-2, max_value=1e4))
    return Box(x0, y0, x0 + w, y0 + h)


@given(valid_boxes())
def test_xywh_round_trip(b: Box) -> None:
    back = Box.from_xywh(*b.xywh)
    assert back.xyxy == pytest.approx(b.xyxy, abs=1e-6)


@given(valid_boxes(), size, size)
def test_normalized_round_trip(b: Box, w: int, h: int) -> None:
    assert Box.from_normalized(*b.normalized(w, h), w, h).xyxy == pytest.approx(b.xyxy, abs=1e-6)
    assert Box.from_cxcywh(*b.cxcywh_normalized(w, h), w, h).xyxy == pytest.approx(b.xyxy, abs=1e-6)


@given(valid_boxes(), valid_boxes())
def test_iou_symmetric_in_unit_interval(a: Box, b: Box) -> None:
    v = a.iou(b)
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(b.iou(a))


@given(valid_boxes())
def test_iou_self_is_one(b: Box) -> None:
    assert b.iou(b) == pytest.approx(1.0)


@given(st.tuples(coord, coord, coord, coord), size, size)
def test_clamp_inside_image(c: tuple[float, float, float, float], w: int, h: int) -> None:
    b = Box(*c).clamp(w, h)
    assert 0 <= b.x0 <= w and 0 <= b.x1 <= w
    assert 0 <= b.y0 <= h and 0 <= b.y1 <= h
    assert "partly-outside" not in b.problems(w, h)


@given(valid_boxes())
def test_expand_one_is_identity(b: Box) -> None:
    assert b.expand(1.0).xyxy == pytest.approx(b.xyxy, abs=1e-6)


@given(valid_boxes(), st.floats(min_value=0.1, max_value=10))
def test_expand_scales_area_and_keeps_centre(b: Box, f: float) -> None:
    e = b.expand(f)
    assert e.center == pytest.approx(b.center, abs=1e-6)
    assert e.area == pytest.approx(b.area * f * f, rel=1e-6)


@settings(max_examples=60)
@given(st.tuples(coord, coord, coord, coord), st.integers(1, 500), st.integers(1, 500))
def test_repair_yields_valid_inside_box_or_raises(
    c: tuple[float, float, float, float], w: int, h: int
) -> None:
    try:
        r = Box(*c).repair(w, h)
    except BoxError:
        assert {"nan", "reversed", "outside-image"} & set(Box(*c).problems(w, h))
        return
    assert r.is_valid
    assert r.problems(w, h) == []

"""Geometry: crops, resize with padding (and mapping boxes back), greyscale."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bglab.errors import BglabError, BoxError, MaskError
from bglab.ops.box import Box
from bglab.ops.geometry import (
    PadTransform,
    box_to_pixels,
    crop_to_box,
    expand_box_for_region,
    pad_transform,
    resize,
    resize_mask_pad,
    resize_pad,
    to_grey,
)
from bglab.ops.mask import ParameterError


def _ramp(h: int, w: int, c: int | None = 3) -> np.ndarray:
    n = h * w * (c or 1)
    a = (np.arange(n) % 251).astype(np.uint8)
    return a.reshape((h, w, c) if c else (h, w))


# ------------------------------------------------------------------ boxes to pixels, crops


def test_box_to_pixels() -> None:
    assert box_to_pixels(Box(1.2, 0.5, 3.1, 2), 5, 4) == (1, 0, 4, 2)
    assert box_to_pixels(Box(-2, -1, 3, 9), 5, 4) == (0, 0, 3, 4)  # clipped
    for bad in (Box(3, 0, 1, 2), Box(0, 0, 0, 2), Box(6, 0, 8, 2), Box(float("nan"), 0, 1, 1)):
        with pytest.raises(BoxError):
            box_to_pixels(bad, 5, 4)


def test_crop_to_box_exact() -> None:
    img = _ramp(6, 8)
    crop, used = crop_to_box(img, Box(2, 1, 5, 3))
    assert used == Box(2, 1, 5, 3)
    np.testing.assert_array_equal(crop, img[1:3, 2:5])
    crop[:] = 0
    assert img[1:3, 2:5].any()  # crop is a copy


def test_crop_margin_and_clamp() -> None:
    img = _ramp(6, 8)
    crop, used = crop_to_box(img, Box(2, 2, 6, 4), margin=0.25)  # +1 px left/right, +0.5 px top/bottom
    assert used == Box(1, 1, 7, 5)
    assert crop.shape == (4, 6, 3)
    _, used = crop_to_box(img, Box(0, 0, 4, 2), margin=0.5)
    assert used == Box(0, 0, 6, 3)


def test_crop_square_shifts_inside() -> None:
    img = _ramp(10, 10)
    crop, used = crop_to_box(img, Box(0, 4, 6, 6), square=True)  # 6 wide, 2 tall -> 6x6 centred at y=5
    assert used == Box(0, 2, 6, 8)
    assert crop.shape == (6, 6, 3)
    _, used = crop_to_box(img, Box(8, 0, 10, 4), square=True)  # 4x4 at x 7..11 -> shifted to 6..10
    assert used == Box(6, 0, 10, 4)
    _, used = crop_to_box(_ramp(4, 10), Box(0, 1, 10, 3), square=True)  # square larger than image: clamped
    assert used == Box(0, 0, 10, 4)


def test_crop_rejects_bad_boxes() -> None:
    with pytest.raises(BoxError):
        crop_to_box(_ramp(4, 4), Box(5, 5, 7, 7))
    with pytest.raises(BoxError):
        crop_to_box(_ramp(4, 4), Box(3, 1, 1, 3))
    with pytest.raises(ParameterError):
        crop_to_box(_ramp(4, 4), Box(0, 0, 2, 2), margin=-0.6)


def test_crop_grey_and_rgba() -> None:
    assert crop_to_box(_ramp(5, 5, None), Box(1, 1, 3, 4))[0].shape == (3, 2)
    assert crop_to_box(_ramp(5, 5, 4), Box(1, 1, 3, 4))[0].shape == (3, 2, 4)


def test_expand_box_for_region() -> None:
    assert expand_box_for_region(Box(4, 4, 6, 6), 2, 10, 10) == Box(3, 3, 7, 7)
    assert expand_box_for_region(Box(0, 0, 4, 2), 2, 10, 10) == Box(0, 0, 6, 3)
    with pytest.raises(ParameterError):
        expand_box_for_region(Box(0, 0, 4, 2), 0.5, 10, 10)


# ------------------------------------------------------------------ resize_pad


def test_resize_pad_hand_computed() -> None:
    img = np.full((2, 4, 3), 200, np.uint8)
    out, t = resize_pad(img, 8, pad_color=(1, 2, 3))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert t == PadTransform(4, 2, 8, 8, 8, 4, 0, 2)
    assert (t.scale_x, t.scale_y) == (2.0, 2.0)
    assert t.scale == 2.0
    assert (out[2:6] == 200).all()
    assert (out[:2] == [1, 2, 3]).all() and (out[6:] == [1, 2, 3]).all()
    assert t.content_box == Box(0, 2, 8, 6)
    assert t.box_to_output(Box(1, 0, 2, 1)) == Box(2, 2, 4, 4)
    assert t.box_to_input(Box(2, 2, 4, 4)) == Box(1, 0, 2, 1)


def test_resize_pad_size_is_width_height() -> None:
    out, t = resize_pad(_ramp(10, 10), (20, 10))
    assert out.shape == (10, 20, 3)
    assert (t.offset_x, t.offset_y) == (5, 0)


def test_resize_pad_grey_rgba() -> None:
    out, _ = resize_pad(_ramp(4, 2, None), 6, pad_color=(255, 255, 255))
    assert out.shape == (6, 6) and out[0, 0] == 255
    rgba, _ = resize_pad(np.full((4, 2, 4), 255, np.uint8), 6)
    assert rgba.shape == (6, 6, 4)
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]  # transparent padding
    assert rgba[3, 3].tolist() == [255, 255, 255, 255]


def test_resize_pad_rejects() -> None:
    with pytest.raises(ParameterError):
        resize_pad(_ramp(4, 4), 0)
    with pytest.raises(ParameterError):
        resize_pad(_ramp(4, 4), 8, interpolation="bogus")
    with pytest.raises(BglabError):
        resize_pad(np.zeros((4, 4, 3), np.float32), 8)


def test_resize_mask_pad() -> None:
    m = np.zeros((2, 4), np.uint8)
    m[:, 2:] = 255
    out, t = resize_mask_pad(m, 8)
    assert out.dtype == np.uint8 and set(np.unique(out).tolist()) == {0, 255}
    assert t == resize_pad(np.zeros((2, 4, 3), np.uint8), 8)[1]
    assert out[2:6, 4:].all() and not out[2:6, :4].any() and not out[:2].any()
    b, _ = resize_mask_pad(m > 0, 8)
    assert b.dtype == np.bool_ and b.sum() == 16
    soft, _ = resize_mask_pad(m.astype(np.float32) / 255, 8)
    assert soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1
    with pytest.raises(MaskError):
        resize_mask_pad(np.zeros((2, 2, 3), np.uint8), 4)


def test_resize_exact() -> None:
    out = resize(_ramp(4, 6), (3, 2))
    assert out.shape == (2, 3, 3)
    assert resize(_ramp(4, 6, 1), 5).shape == (5, 5, 1)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 120),
    st.integers(1, 120),
    st.integers(1, 96),
    st.integers(1, 96),
)
def test_resize_pad_properties(h: int, w: int, ow: int, oh: int) -> None:
    out, t = resize_pad(np.full((h, w, 3), 255, np.uint8), (ow, oh), pad_color=0)
    assert out.shape == (oh, ow, 3)
    cb = t.content_box
    # the content box is the white area, inside the output
    assert 0 <= cb.x0 and cb.x1 <= ow and 0 <= cb.y0 and cb.y1 <= oh
    x0, y0, x1, y1 = (round(v) for v in cb.xyxy)
    assert (out[y0:y1, x0:x1] == 255).all()
    assert out.sum() == 255 * 3 * (x1 - x0) * (y1 - y0)
    # maps back to the whole input within 1 px
    back = t.box_to_input(cb)
    assert back.xyxy == pytest.approx((0, 0, w, h), abs=1e-6)
    # a box maps there and back
    b = Box(0.25 * w, 0.5 * h, 0.75 * w, h)
    assert t.box_to_input(t.box_to_output(b)).xyxy == pytest.approx(b.xyxy, abs=1e-6)
    # the image fills one side (within rounding) and the aspect ratio is kept to within a pixel
    assert (x1 - x0) == ow or (y1 - y0) == oh
    assert abs((x1 - x0) - w * t.scale) <= 1 and abs((y1 - y0) - h * t.scale) <= 1


def test_pad_transform_matches_resize_pad() -> None:
    assert pad_transform(50, 30, 64) == resize_pad(_ramp(30, 50), 64)[1]


# ------------------------------------------------------------------ greyscale


def test_to_grey_matches_cv2() -> None:
    img = _ramp(5, 7)
    g = to_grey(img)
    np.testing.assert_array_equal(g, cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert to_grey(px).tolist() == [[76, 150, 29]]  # 0.299, 0.587, 0.114 x 255
    g3 = to_grey(img, keep_channels=True)
    assert g3.shape == (5, 7, 3) and (g3[..., 0] == g).all() and (g3[..., 2] == g).all()
    assert to_grey(_ramp(3, 3, 4)).shape == (3, 3)
    grey_in = _ramp(3, 3, None)
    np.testing.assert_array_equal(to_grey(grey_in), grey_in)


def test_inputs_not_mutated() -> None:
    img = _ramp(9, 7)
    keep = img.copy()
    crop_to_box(img, Box(1, 1, 5, 5), margin=0.2, square=True)
    resize_pad(img, 16)
    to_grey(img, keep_channels=True)
    resize(img, 4)
    np.testing.assert_array_equal(img, keep)


def test_real_pet_resize_pad_and_crop(shared_data: Path) -> None:
    folder = shared_data / "pets3" / "Bengal"
    stems = sorted(p.stem for p in (folder / "images").glob("*.jpg"))[:3]
    if not stems:
        pytest.skip("no pets3 images")
    for stem in stems:
        img = np.array(Image.open(folder / "images" / f"{stem}.jpg").convert("RGB"))
        mask = np.array(Image.open(folder / "masks" / f"{stem}.png"))
        box = Box.from_mask(mask)
        assert box is not None
        out, t = resize_pad(img, 224)
        mout, mt = resize_mask_pad(mask, 224)
        assert out.shape == (224, 224, 3) and mout.shape == (224, 224) and t == mt
        # the mask's box, mapped through the transform, matches the box of the resized mask within 2 px
        mapped = t.box_to_output(box)
        got = Box.from_mask(mout)
        assert got is not None
        assert np.allclose(mapped.xyxy, got.xyxy, atol=2)
        crop, used = crop_to_box(img, box, margin=0.1)
        assert crop.shape[:2] == (used.height, used.width)
        assert used.problems(img.shape[1], img.shape[0]) == []

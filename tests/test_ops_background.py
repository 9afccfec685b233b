"""Background edits: exact values on a 4x4 image with a 2x2 mask, and checks on real pets3 photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bglab.errors import BglabError, BoxError, MaskError
from bglab.ops.background import (
    blur_background,
    composite,
    cutout,
    fill_background,
    fill_box,
    largest_background_rect,
    only_foreground,
    remove_foreground,
    replace_background,
)
from bglab.ops.box import Box
from bglab.ops.mask import ParameterError


def _img() -> np.ndarray:
    """4x4 RGB image; pixel (y, x) = (10*y + x + 1, 100 + 10*y + x, 200)."""
    y, x = np.mgrid[0:4, 0:4]
    return np.stack([10 * y + x + 1, 100 + 10 * y + x, np.full_like(y, 200)], axis=2).astype(np.uint8)


def _mask() -> np.ndarray:
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 255
    return m


FG = np.zeros((4, 4), bool)
FG[1:3, 1:3] = True


def test_cutout_exact() -> None:
    out = cutout(_img(), _mask())
    assert out.shape == (4, 4, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], _img())
    np.testing.assert_array_equal(out[..., 3], _mask())
    half = cutout(_img(), np.full((4, 4), 0.5, np.float32))
    assert (half[..., 3] == 128).all()


def test_fill_only_remove_exact() -> None:
    img = _img()
    white = fill_background(img, _mask())
    assert (white[~FG] == 255).all()
    np.testing.assert_array_equal(white[FG], img[FG])
    red = fill_background(img, _mask(), color=(255, 0, 0))
    assert (red[~FG] == [255, 0, 0]).all()
    only = only_foreground(img, _mask())
    assert (only[~FG] == 0).all() and (only[FG] == img[FG]).all()
    nofg = remove_foreground(img, _mask())
    assert (nofg[FG] == 0).all() and (nofg[~FG] == img[~FG]).all()
    assert (remove_foreground(img, _mask(), color=7)[FG] == 7).all()


def test_soft_alpha_blend_exact() -> None:
    img = np.full((1, 2, 3), 100, np.uint8)
    a = np.array([[0.25, 0.5]], np.float32)
    out = fill_background(img, a, color=(200, 200, 200))  # 100a + 200(1-a)
    assert out[0, :, 0].tolist() == [175, 150]
    assert remove_foreground(img, a)[0, :, 0].tolist() == [75, 50]


def test_replace_background_fits() -> None:
    img, m = _img(), _mask()
    bg = np.zeros((2, 2, 3), np.uint8)
    bg[0, 0], bg[0, 1], bg[1, 0], bg[1, 1] = 10, 20, 30, 40
    tiled = replace_background(img, m, bg, fit="tile")
    assert tiled[0, :, 0].tolist() == [10, 20, 10, 20]
    assert tiled[3, :, 0].tolist() == [30, 40, 30, 40]
    np.testing.assert_array_equal(tiled[FG], img[FG])
    stretched = replace_background(img, m, np.full((1, 9, 3), 77, np.uint8), fit="stretch")
    assert (stretched[~FG] == 77).all()
    # cover: a 4x8 background already covers the 4x4 image at scale 1 -> its middle 4 columns are kept
    wide = np.zeros((4, 8, 3), np.uint8)
    wide[..., 0] = 10 * np.arange(8)
    cover = replace_background(img, m, wide, fit="cover")
    assert cover[0, :, 0].tolist() == [20, 30, 40, 50]
    # a 1x2 background is scaled x4 to 4x8 to cover, then centre-cropped
    assert (replace_background(img, m, np.full((1, 2, 3), 60, np.uint8))[~FG] == 60).all()
    grey_bg = replace_background(img, m, np.full((3, 3), 5, np.uint8))
    assert (grey_bg[~FG] == 5).all()
    with pytest.raises(ParameterError):
        replace_background(img, m, bg, fit="zoom")


def test_composite_exact() -> None:
    fg, bg = _img(), np.full((4, 4, 3), 9, np.uint8)
    out = composite(fg, _mask(), bg)
    assert (out[~FG] == 9).all() and (out[FG] == fg[FG]).all()
    with pytest.raises(BglabError, match="background is 2x2"):
        composite(fg, _mask(), np.zeros((2, 2, 3), np.uint8))


def test_blur_background_keeps_foreground_and_no_halo() -> None:
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 200  # background: left half black, right half grey
    m = np.zeros((40, 40), np.uint8)
    m[15:25, 5:15] = 255
    img[m > 0] = [255, 0, 0]  # a red object on the black half
    out = blur_background(img, m, strength=4)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out[m > 0], img[m > 0])
    # background is blurred across the black/grey edge ...
    assert 0 < out[5, 19, 0] < 200 and 0 < out[5, 20, 0] < 200
    # ... but the red object does not bleed into it (normalised blur): the background stays grey (R == G)
    bg = m == 0
    np.testing.assert_array_equal(out[bg, 0], out[bg, 1])
    assert out[14, 10, 0] < 10
    np.testing.assert_array_equal(blur_background(img, m, 0), img)
    with pytest.raises(ParameterError):
        blur_background(img, m, -1)


def test_fill_box_black_exact() -> None:
    img = _img()
    out = fill_box(img, Box(1, 1, 3, 3))
    assert (out[FG] == 0).all()
    np.testing.assert_array_equal(out[~FG], img[~FG])
    # fractional boxes cover every touched pixel; partly-outside boxes are clipped
    out = fill_box(img, Box(2.5, -1, 9, 1.2))
    assert (
        (out[0:2, 2:4] == 0).all() and (out[2:, :] == img[2:, :]).all() and (out[:, :2] == img[:, :2]).all()
    )
    with pytest.raises(BoxError):
        fill_box(img, Box(5, 5, 6, 6))
    with pytest.raises(ParameterError):
        fill_box(img, Box(1, 1, 2, 2), mode="grey")


def test_fill_box_tiles_exact() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = np.arange(24).reshape(4, 6)
    # box columns 0..2: the right strip (x 3..6, area 12) is the largest -> tiled from its top-left
    out = fill_box(img, Box(0, 0, 3, 4), mode="tiles")
    np.testing.assert_array_equal(out[:, :3], img[:, 3:6])
    np.testing.assert_array_equal(out[:, 3:], img[:, 3:])
    # a 2-wide strip repeats over a 4-wide box
    img2 = np.zeros((2, 6, 3), np.uint8)
    img2[..., 1] = [[1, 2, 0, 0, 0, 0], [3, 4, 0, 0, 0, 0]]
    out2 = fill_box(img2, Box(2, 0, 6, 2), mode="tiles")
    assert out2[..., 1].tolist() == [[1, 2, 1, 2, 1, 2], [3, 4, 3, 4, 3, 4]]


def test_fill_box_tiles_avoid_mask() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = np.arange(24).reshape(4, 6)
    m = np.zeros((4, 6), bool)
    m[:, 3:5] = True  # foreground in the right strip: only column 5 is free there
    out = fill_box(img, Box(0, 0, 3, 4), mode="tiles", mask=m)
    for x in range(3):
        np.testing.assert_array_equal(out[:, x], img[:, 5])
    assert not np.isin(out[:, :3, 0], img[:, 3:5, 0]).any()


def test_fill_box_tiles_fallbacks() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = [10, 20, 30]
    img[1, 1] = [30, 40, 50]
    m = np.zeros((2, 2), bool)
    m[0, 1] = True
    # box = left column; free pixels outside box and mask: only (1, 1) -> it is a 1x1 rectangle
    out = fill_box(img, Box(0, 0, 1, 2), mode="tiles", mask=m)
    assert out[:, 0].tolist() == [[30, 40, 50], [30, 40, 50]]
    # whole image boxed: no background at all -> black
    assert not fill_box(img, Box(0, 0, 2, 2), mode="tiles").any()


def test_largest_background_rect() -> None:
    assert largest_background_rect(10, 4, (2, 0, 5, 4)) == (5, 0, 10, 4)
    assert largest_background_rect(4, 4, (1, 1, 3, 3)) == (0, 0, 1, 4)  # ties: left first
    assert largest_background_rect(4, 4, (0, 0, 4, 4)) is None
    fg = np.zeros((4, 4), bool)
    fg[:, 0] = True
    # free: top row x1..4, bottom row x1..4, right column -> the right column (4 px) wins
    assert largest_background_rect(4, 4, (1, 1, 3, 3), fg) == (3, 0, 4, 4)


def test_errors_for_bad_inputs() -> None:
    with pytest.raises(MaskError, match="mask is 3x3"):
        cutout(_img(), np.zeros((3, 3), np.uint8))
    with pytest.raises(BglabError, match="RGB uint8"):
        fill_background(np.zeros((4, 4), np.uint8), _mask())
    with pytest.raises(ParameterError):
        fill_background(_img(), _mask(), color=(300, 0, 0))


def test_inputs_not_mutated() -> None:
    img, m = _img(), _mask()
    ki, km = img.copy(), m.copy()
    bg = np.full((3, 5, 3), 40, np.uint8)
    kb = bg.copy()
    cutout(img, m)
    fill_background(img, m)
    blur_background(img, m, 2)
    replace_background(img, m, bg)
    remove_foreground(img, m)
    only_foreground(img, m)
    fill_box(img, Box(1, 1, 3, 3), mode="tiles", mask=m)
    fill_box(img, Box(1, 1, 3, 3))
    composite(img, m, np.zeros_like(img))
    np.testing.assert_array_equal(img, ki)
    np.testing.assert_array_equal(m, km)
    np.testing.assert_array_equal(bg, kb)


# ------------------------------------------------------------------ real photos


def _pets(shared_data: Path, n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = shared_data / "pets3" / "american_bulldog"
    stems = sorted(p.stem for p in (folder / "images").glob("*.jpg"))[:n]
    if not stems:
        pytest.skip("no pets3 images")
    return [
        (
            np.array(Image.open(folder / "images" / f"{s}.jpg").convert("RGB")),
            np.array(Image.open(folder / "masks" / f"{s}.png")),
        )
        for s in stems
    ]


def test_real_pets(shared_data: Path) -> None:
    bgs = sorted((shared_data / "backgrounds").glob("*.jpg"))
    for img, mask in _pets(shared_data):
        fg = mask > 127
        h, w = mask.shape
        rgba = cutout(img, mask)
        assert rgba.shape == (h, w, 4) and rgba.dtype == np.uint8
        np.testing.assert_array_equal(rgba[..., 3], mask)
        for out in (
            fill_background(img, mask),
            only_foreground(img, mask),
            blur_background(img, mask, 8),
        ):
            assert out.shape == img.shape and out.dtype == np.uint8
            np.testing.assert_array_equal(out[fg], img[fg])
            assert (out[~fg] != img[~fg]).any(axis=1).mean() > 0.3
        nofg = remove_foreground(img, mask)
        assert (nofg[fg] == 0).all() and (nofg[~fg] == img[~fg]).all()
        if bgs:
            bg = np.array(Image.open(bgs[0]).convert("RGB"))
            for fit in ("cover", "stretch", "tile"):
                rep = replace_background(img, mask, bg, fit=fit)
                assert rep.shape == img.shape
                np.testing.assert_array_equal(rep[fg], img[fg])
        box = Box.from_mask(mask)
        assert box is not None
        x0, y0, x1, y1 = box.to_int()
        black = fill_box(img, box)
        assert (black[y0:y1, x0:x1] == 0).all()
        tiles = fill_box(img, box, mode="tiles", mask=mask)
        inside = np.zeros((h, w), bool)
        inside[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(tiles[~inside], img[~inside])
        # the fill is the tiling of a rectangle free of box and foreground pixels
        rect = largest_background_rect(w, h, (x0, y0, x1, y1), fg)
        assert rect is not None
        rx0, ry0, rx1, ry1 = rect
        assert not fg[ry0:ry1, rx0:rx1].any() and not inside[ry0:ry1, rx0:rx1].any()
        patch = img[ry0:ry1, rx0:rx1]
        reps = (-(-(y1 - y0) // patch.shape[0]), -(-(x1 - x0) // patch.shape[1]), 1)
        np.testing.assert_array_equal(tiles[y0:y1, x0:x1], np.tile(patch, reps)[: y1 - y0, : x1 - x0])

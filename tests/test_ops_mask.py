"""Mask conversion and clean-up, on hand-made arrays and on real pets3 masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bglab.errors import MaskError
from bglab.ops.mask import (
    ParameterError,
    as_soft,
    binarize,
    component_count,
    coverage,
    feather,
    fill_holes,
    guided_filter,
    keep_components,
    keep_largest_component,
    refine,
)


def _two_blobs() -> np.ndarray:
    """7x8 uint8 mask: a 3x3 ring (hole at its centre) and a separate single pixel."""
    m = np.zeros((7, 8), dtype=np.uint8)
    m[1:4, 1:4] = 255
    m[2, 2] = 0  # hole
    m[5, 6] = 255  # stray pixel
    return m


# ------------------------------------------------------------------ as_soft


def test_as_soft_dtypes() -> None:
    u8 = np.array([[0, 255], [51, 255]], dtype=np.uint8)
    np.testing.assert_allclose(as_soft(u8), [[0, 1], [0.2, 1]], atol=1e-7)
    assert as_soft(u8).dtype == np.float32
    np.testing.assert_array_equal(as_soft(np.array([[True, False]])), [[1.0, 0.0]])
    np.testing.assert_array_equal(as_soft(np.array([[0, 1]], dtype=np.uint8)), [[0.0, 1.0]])  # 0/1 labels
    np.testing.assert_array_equal(as_soft(np.array([[0.25, 1.0]], dtype=np.float64)), [[0.25, 1.0]])
    assert as_soft(np.zeros((3, 4, 1), np.uint8)).shape == (3, 4)
    assert as_soft(np.array([[0, 65535]], dtype=np.uint16)).tolist() == [[0.0, 1.0]]


def test_as_soft_returns_a_copy() -> None:
    m = np.array([[0.5, 1.0]], dtype=np.float32)
    out = as_soft(m)
    out[:] = 0
    assert m.tolist() == [[0.5, 1.0]]


def test_as_soft_shape_check_accepts_image_shape() -> None:
    m = np.zeros((3, 4), np.uint8)
    assert as_soft(m, (3, 4)).shape == (3, 4)
    assert as_soft(m, (3, 4, 3)).shape == (3, 4)
    with pytest.raises(MaskError, match=r"mask is 3x4 \(HxW\) but the image is 4x3"):
        as_soft(m, (4, 3, 3))


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.zeros((3, 4, 3), np.uint8), "3 channels"),
        (np.zeros((2, 3, 4, 1), np.uint8), "4 dimensions"),
        (np.array([[0.0, 2.0]]), r"\[0, 1\]"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[-1, 3]], dtype=np.int32), "negative"),
        (np.array([[0, 300]], dtype=np.int32), "0..255"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_as_soft_rejects(bad: np.ndarray, pattern: str) -> None:
    with pytest.raises(MaskError, match=pattern):
        as_soft(bad)


# ------------------------------------------------------------------ binarize and components


def test_binarize_threshold_is_strict() -> None:
    soft = np.array([[0.0, 0.5, 0.51, 1.0]], dtype=np.float32)
    assert binarize(soft).tolist() == [[False, False, True, True]]
    assert binarize(soft, 0.0).tolist() == [[False, True, True, True]]
    assert binarize(np.array([[0, 128, 127]], np.uint8)).tolist() == [[False, True, False]]
    with pytest.raises(ParameterError):
        binarize(soft, 1.0)


def test_keep_largest_component() -> None:
    m = _two_blobs()
    big = keep_largest_component(m)
    assert big.dtype == np.bool_
    expected = m > 0
    expected[5, 6] = False
    np.testing.assert_array_equal(big, expected)
    assert not keep_largest_component(m, min_area=9).any()  # the ring has 8 pixels
    assert keep_largest_component(m, min_area=8).sum() == 8
    assert not keep_largest_component(np.zeros((3, 3), bool)).any()


def test_keep_components_by_fraction() -> None:
    m = _two_blobs()
    assert keep_components(m, 0.1).sum() == 9  # 1 >= 0.1 * 8 -> both kept
    assert keep_components(m, 0.2).sum() == 8  # stray pixel dropped
    with pytest.raises(ParameterError):
        keep_components(m, 1.5)


def test_diagonal_pixels_are_one_component() -> None:
    m = np.eye(4, dtype=bool)
    assert component_count(m) == 1


def test_fill_holes() -> None:
    m = _two_blobs()
    filled = fill_holes(m)
    assert filled[2, 2]
    assert filled.sum() == 10
    # a notch open to the border is not a hole
    notch = np.ones((3, 3), bool)
    notch[0, 1] = False
    np.testing.assert_array_equal(fill_holes(notch), notch)


def test_coverage_and_count() -> None:
    m = _two_blobs()
    assert coverage(m) == pytest.approx(9 / 56)
    assert component_count(m) == 2
    assert component_count(m, min_area=2) == 1
    assert component_count(np.zeros((2, 2))) == 0
    assert coverage(np.ones((2, 2), bool)) == 1.0


def test_feather() -> None:
    m = np.zeros((9, 9), np.uint8)
    m[3:6, 3:6] = 255
    same = feather(m, 0)
    np.testing.assert_array_equal(same, (m > 0).astype(np.float32))
    soft = feather(m, 1.5)
    assert soft.dtype == np.float32 and soft.shape == (9, 9)
    assert 0 <= soft.min() and soft.max() <= 1
    assert 0 < soft[2, 4] < 1  # edge softened
    assert soft[4, 4] > soft[3, 3] > soft[0, 0]
    assert soft.sum() == pytest.approx(9, rel=0.05)  # blur preserves mass (far from borders)
    with pytest.raises(ParameterError):
        feather(m, -1)


def test_refine() -> None:
    m = _two_blobs()
    r = refine(m)
    assert r.dtype == np.float32
    assert r.sum() == 9 and r[2, 2] == 1 and r[5, 6] == 0
    assert refine(m, largest=False, fill=False).sum() == 9
    assert refine(m, largest=False).sum() == 10
    soft = refine(m, feather_radius=1.0)
    assert 0 < soft[0, 2] < 1


def test_inputs_not_mutated() -> None:
    m = _two_blobs()
    keep = m.copy()
    for fn in (binarize, keep_largest_component, fill_holes, coverage, component_count, refine):
        fn(m)
    feather(m, 2)
    as_soft(m)
    np.testing.assert_array_equal(m, keep)


# ------------------------------------------------------------------ real masks


def _pets_masks(shared_data: Path, n: int = 4) -> list[np.ndarray]:
    files = sorted((shared_data / "pets3" / "Abyssinian" / "masks").glob("*.png"))[:n]
    if not files:
        pytest.skip("no pets3 masks")
    return [np.array(Image.open(f)) for f in files]


def test_real_masks(shared_data: Path) -> None:
    for m in _pets_masks(shared_data):
        assert m.dtype == np.uint8 and m.ndim == 2
        soft = as_soft(m)
        assert set(np.unique(soft).tolist()) <= {0.0, 1.0}
        cov = coverage(m)
        assert 0.03 < cov < 0.95
        r = refine(m)
        # the largest component, holes filled: still most of the original foreground
        assert binarize(r).sum() >= 0.5 * binarize(m).sum()
        assert component_count(r) == 1
        assert fill_holes(m).sum() >= binarize(m).sum()
        assert (fill_holes(m) | binarize(m)).sum() == fill_holes(m).sum()


def test_refine_min_fraction_keeps_several_regions_and_drops_specks():
    m = np.zeros((20, 40), np.float32)
    m[2:10, 2:10] = 1.0  # 64 px
    m[2:9, 20:28] = 1.0  # 56 px: a second hand
    m[15, 35] = 1.0  # a speck
    out = refine(m, min_fraction=0.2)
    assert out[5, 5] == 1 and out[5, 24] == 1 and out[15, 35] == 0
    only = refine(m)  # default: the largest region alone
    assert only[5, 5] == 1 and only[5, 24] == 0


def test_refine_soft_edge_keeps_antialiased_border():
    m = np.zeros((12, 12), np.float32)
    m[3:9, 3:9] = 0.9
    m[3:9, 9] = 0.3  # soft edge column, below threshold
    m[0, 0] = 0.3  # soft value far from the region: dropped
    hard = refine(m)
    soft = refine(m, soft_edge=True)
    assert hard[5, 9] == 0 and soft[5, 9] == np.float32(0.3)
    assert soft[0, 0] == 0 and soft[5, 5] == 1


# ------------------------------------------------------------------ guided_filter


def test_guided_filter_snaps_a_blurry_edge_to_the_image_edge() -> None:
    """A sharp image edge and a mask blurred across it: the filtered mask's 0.5 crossing moves onto the image
    edge, flat regions keep their value, and radius 0 is a copy."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 200
    truth = np.zeros((40, 60), np.float32)
    truth[:, 30:] = 1.0
    blurry = np.clip((np.arange(60, dtype=np.float32) - 21) / 12, 0, 1)[None].repeat(40, 0)  # 0.5 3 px off

    out = guided_filter(img, blurry, radius=6, eps=0.01)
    assert out.dtype == np.float32 and out.shape == blurry.shape and 0.0 <= out.min() <= out.max() <= 1.0
    assert np.abs((out > 0.5) ^ (truth > 0.5)).sum() < np.abs((blurry > 0.5) ^ (truth > 0.5)).sum()
    assert (out[:, :12] < 0.05).all() and (out[:, 45:] > 0.95).all()
    np.testing.assert_array_equal(guided_filter(img, blurry, radius=0), blurry)
    flat = np.full((10, 10), 0.3, np.float32)
    np.testing.assert_allclose(guided_filter(np.full((10, 10), 7, np.uint8), flat, radius=2), flat, atol=1e-6)


@pytest.mark.parametrize(("radius", "eps", "shape"), [(-1, 0.1, (8, 8)), (2, 0.0, (8, 8)), (2, float("nan"), (8, 8)),
                                                      (2, 0.1, (8, 9))])
def test_guided_filter_bad_parameters(radius: int, eps: float, shape: tuple[int, int]) -> None:
    with pytest.raises(ParameterError):
        guided_filter(np.zeros(shape, np.uint8), np.zeros((8, 8), np.float32), radius, eps)


def test_guided_filter_takes_grey_rgba_and_16_bit_guides() -> None:
    m = np.zeros((12, 12), np.float32)
    m[:, 6:] = 1
    for img in (np.zeros((12, 12), np.uint8), np.zeros((12, 12, 4), np.uint8), np.zeros((12, 12), np.uint16)):
        img[..., :, 6:] = np.iinfo(img.dtype).max
        assert guided_filter(img, m, 2, 0.01).shape == (12, 12)

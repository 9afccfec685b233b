"""Distortions: pixel dropout and Gaussian noise (seeded, validated, non-mutating)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bglab.errors import BglabError
from bglab.ops.distort import gaussian_noise, pixel_dropout
from bglab.ops.mask import ParameterError


def _img(h: int = 64, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), 100, np.uint8)


def test_dropout_extremes() -> None:
    img = _img()
    np.testing.assert_array_equal(pixel_dropout(img, 0.0, rng=0), img)
    assert not pixel_dropout(img, 1.0, rng=0).any()
    assert (pixel_dropout(img, 1.0, value=255) == 255).all()
    assert (pixel_dropout(img, 1.0, value=(1, 2, 3)) == [1, 2, 3]).all()


def test_dropout_whole_pixels_and_rate() -> None:
    out = pixel_dropout(_img(200, 200), 0.3, rng=1)
    dropped = (out == 0).all(axis=2)
    partial = (out == 0).any(axis=2) & ~dropped
    assert not partial.any()  # all channels of a pixel go together
    assert dropped.mean() == pytest.approx(0.3, abs=0.02)
    assert ((out[~dropped]) == 100).all()


def test_dropout_seeded_and_generator() -> None:
    img = _img()
    np.testing.assert_array_equal(pixel_dropout(img, 0.5, rng=7), pixel_dropout(img, 0.5, rng=7))
    assert not np.array_equal(pixel_dropout(img, 0.5, rng=7), pixel_dropout(img, 0.5, rng=8))
    a = pixel_dropout(img, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, pixel_dropout(img, 0.5, rng=7))
    grey = pixel_dropout(np.full((10, 10), 9, np.uint8), 1.0)
    assert grey.shape == (10, 10) and not grey.any()


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_rejects_p(p: float) -> None:
    with pytest.raises(ParameterError, match="probability"):
        pixel_dropout(_img(), p)


def test_dropout_rejects_value_and_image() -> None:
    with pytest.raises(ParameterError):
        pixel_dropout(_img(), 0.5, value=(1, 2))
    with pytest.raises(ParameterError):
        pixel_dropout(_img(), 0.5, value=300)
    with pytest.raises(BglabError):
        pixel_dropout(np.zeros((4, 4, 3), np.float32), 0.5)


def test_noise_statistics() -> None:
    img = np.full((200, 200, 3), 128, np.uint8)
    out = gaussian_noise(img, 10, rng=3)
    assert out.dtype == np.uint8 and out.shape == img.shape
    diff = out.astype(np.float64) - 128
    assert abs(diff.mean()) < 0.2
    assert diff.std() == pytest.approx(10, rel=0.03)
    np.testing.assert_array_equal(gaussian_noise(img, 0), img)
    np.testing.assert_array_equal(gaussian_noise(img, 5, rng=2), gaussian_noise(img, 5, rng=2))


def test_noise_clips() -> None:
    out = gaussian_noise(np.array([[[0, 255, 0]]] * 100, np.uint8), 50, rng=0)
    assert out.min() == 0 and out.max() == 255  # clipped, no wrap-around


@pytest.mark.parametrize("sigma", [-1.0, float("inf"), float("nan")])
def test_noise_rejects_sigma(sigma: float) -> None:
    with pytest.raises(ParameterError, match="sigma"):
        gaussian_noise(_img(), sigma)


def test_parameter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        gaussian_noise(_img(), -1)


def test_inputs_not_mutated() -> None:
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    keep = img.copy()
    pixel_dropout(img, 0.9, rng=0)
    gaussian_noise(img, 20, rng=0)
    np.testing.assert_array_equal(img, keep)


def test_real_image(shared_data: Path) -> None:
    files = sorted((shared_data / "pets3" / "Abyssinian" / "images").glob("*.jpg"))[:1]
    if not files:
        pytest.skip("no pets3 images")
    img = np.array(Image.open(files[0]).convert("RGB"))
    d = pixel_dropout(img, 0.2, rng=0)
    changed = (d != img).any(axis=2)
    assert 0.1 < changed.mean() < 0.25  # a dropped pixel that was already black is unchanged
    n = gaussian_noise(img, 15, rng=0)
    assert n.shape == img.shape and n.dtype == np.uint8
    assert 5 < np.abs(n.astype(int) - img).mean() < 15

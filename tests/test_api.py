"""The small public Python API (``import bglab``) on a real photo."""

from __future__ import annotations

import numpy as np
import pytest

import bglab
from tests.conftest import shared_path


@pytest.fixture()
def webcam_image():
    path = sorted(shared_path("rps", "webcam", "paper").glob("*.png"))[0]
    return bglab.read_image(path)


def test_remove_background_modes(webcam_image):
    seg = bglab.create_backend("chroma")
    cut = bglab.remove_background(webcam_image, segmenter=seg)
    assert cut.shape == (200, 300, 4) and cut.dtype == np.uint8
    assert cut[:, :5, 3].max() < 30 and (cut[..., 3] > 127).mean() > 0.05
    col = bglab.remove_background(webcam_image, segmenter=seg, mode="color", color=(255, 0, 0))
    assert tuple(col[100, 1]) == (255, 0, 0)
    fg = cut[..., 3] == 255
    assert np.array_equal(col[fg], webcam_image[fg]), "foreground pixels must be kept exactly"


def test_unknown_option_and_backend_errors(webcam_image):
    with pytest.raises(bglab.BackendError, match="unknown backend"):
        bglab.remove_background(webcam_image, backend="nope")
    with pytest.raises(bglab.BglabError, match="unknown mode"):
        bglab.remove_background(webcam_image, backend="chroma", mode="paint")  # type: ignore[arg-type]


def test_list_backends_names():
    names = {b.name for b in bglab.list_backends()}
    assert {"unet", "chroma", "grabcut", "mask-files", "mask-box", "rembg", "mediapipe-hands"} <= names

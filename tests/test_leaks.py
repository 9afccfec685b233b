"""The split-leak check: near-identical images across a split found on thumbnails, and the report's note."""

from __future__ import annotations

import numpy as np

from bglab.experiment.leaks import TWIN_COSINE, near_twins, split_twins, thumbnails


def _photos(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)


def test_thumbnails_are_centred_unit_rows() -> None:
    t = thumbnails(_photos(3, 0))
    assert t.shape == (3, 16 * 16 * 3)
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-4) and np.allclose(t.mean(axis=1), 0, atol=1e-6)
    assert thumbnails(np.zeros((0, 8, 8, 3), np.uint8)).shape[0] == 0


def test_near_twins_finds_copies_under_brightness_and_contrast_changes_only() -> None:
    train = _photos(20, 1)
    copy = np.clip(train[7].astype(np.int16) * 0.8 + 20, 0, 255).astype(np.uint8)  # darker, less contrast
    flipped = np.ascontiguousarray(train[3][:, ::-1])                              # a mirror image: not a copy
    test = np.stack([copy, flipped, _photos(1, 2)[0], train[12]])
    hit, nn, cos = near_twins(thumbnails(train), thumbnails(test))
    assert list(hit) == [3, 0] or list(hit) == [0, 3]
    assert dict(zip(hit.tolist(), nn.tolist(), strict=True)) == {0: 7, 3: 12}
    assert (cos >= TWIN_COSINE).all() and cos[0] >= cos[-1]
    assert len(near_twins(thumbnails(train), thumbnails(test[:0]))[0]) == 0


def test_split_twins_reports_counts_and_named_examples() -> None:
    images = _photos(12, 3)
    images[10] = images[2]                      # a test image that is a training image under another name
    keys = [f"src/c/{i}.png" for i in range(12)]
    tests = {"held-out": np.array([8, 9, 10, 11]), "empty": np.array([], int)}
    out = split_twins(thumbnails(images), keys, np.arange(8), tests)
    assert out["held-out"]["n"] == 4 and out["held-out"]["twins"] == 1
    assert out["held-out"]["examples"] == [{"test": "src/c/10.png", "train": "src/c/2.png", "cosine": 1.0}]
    assert out["empty"] == {"n": 0, "twins": 0, "threshold": TWIN_COSINE, "examples": []}


def test_report_flags_a_test_set_with_many_twins() -> None:
    from bglab.experiment.report import _near_twins_html

    many = {"n": 100, "twins": 30, "threshold": 0.97, "examples": [{"test": "a.png", "train": "b.png", "cosine": 1}]}
    few = {**many, "twins": 0, "n": 1000}
    few["twins"] = 5  # 0.5 %: named, not flagged
    html = _near_twins_html({"webcam": many, "sxsw": few, "clean": {**many, "twins": 0, "examples": []}})
    assert len(html) == 2 and html[0].startswith("<p class=unsure>") and "30 of 100" in html[0]
    assert "a.png" in html[0] and html[1].startswith("<p>") and "5 of 1000" in html[1]
    assert "sources.NAME.group" in html[0]

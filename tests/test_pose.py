"""The pose step: hand landmarks drawn as an aligned stick figure (pure drawing, the pipeline step, real photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bglab import ops
from bglab.errors import BackendError, ConfigError
from bglab.foreground import is_available
from bglab.ops.mask import ParameterError
from bglab.pipeline import Pipeline
from tests.conftest import shared_path
from tests.test_handcut import FakeLandmarker, _landmarks


def _turn(xy: np.ndarray, degrees: float, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    a = np.deg2rad(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (xy - centre) @ r.T + centre


def test_align_points_the_hand_up_and_fixes_the_mirror() -> None:
    xy = _turn(_landmarks(100, 80, 40), 70, (100, 80))
    a = ops.align_landmarks(xy)
    assert np.allclose(a[0], 0)  # wrist at the origin
    v = a[9] - a[0]
    assert abs(v[0]) < 1e-9 and v[1] < 0  # wrist -> middle knuckle points up (image y grows downwards)
    assert a[5, 0] > a[17, 0]  # index knuckle right of the little finger's
    # sizes are kept: alignment is a rotation (and maybe a mirror), nothing else
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert np.allclose(np.linalg.norm(a[:, None] - a[None], axis=-1), d)


@pytest.mark.parametrize("degrees", [0, 35, 90, 180, 250])
def test_aligned_drawing_ignores_rotation_scale_position_and_mirror(degrees: float) -> None:
    base = _landmarks(100, 80, 40)
    ref = ops.draw_pose(base, 64)
    moved = _turn(base * 2.5 + (300, -40), degrees)
    mirrored = moved * (-1, 1)
    for xy in (moved, mirrored):
        out = ops.draw_pose(xy, 64)
        assert np.abs(out.astype(int) - ref).mean() < 2.0  # the same drawing, up to sub-pixel rounding
    # without alignment a turned hand is drawn turned
    assert np.abs(ops.draw_pose(_turn(base, 90), 64, align=False).astype(int) - ref).mean() > 10


def test_drawing_shape_and_content() -> None:
    out = ops.draw_pose(_landmarks(50, 50, 20), 96, thickness=1 / 24, margin=0.1)
    assert out.shape == (96, 96) and out.dtype == np.uint8
    assert out.max() == 255 and 0.03 < (out > 127).mean() < 0.4  # lines, not a filled square
    # the figure fills the frame up to the margin on its long side
    rows, cols = np.nonzero(out > 127)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) > 96 * 0.7


@pytest.mark.parametrize("bad", [np.zeros((20, 2)), np.full((21, 2), np.nan), np.zeros((21, 3))])
def test_bad_landmarks_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="21 finite"):
        ops.draw_pose(bad)


def test_bad_drawing_parameters_are_refused() -> None:
    xy = _landmarks(50, 50, 20)
    for kwargs in ({"size": 4}, {"thickness": 0}, {"margin": -1}):
        with pytest.raises(ParameterError):
            ops.draw_pose(xy, **kwargs)


@pytest.fixture()
def fake_landmarks(monkeypatch: pytest.MonkeyPatch):
    """The pose step's landmarker replaced by fixed landmarks (no MediaPipe needed)."""
    import bglab.pipeline.steps as steps

    found: list[np.ndarray] = [_landmarks(60, 50, 25)]

    def create(name: str, kind: str, runtime: object, options: object) -> FakeLandmarker:
        return FakeLandmarker(found)

    monkeypatch.setattr(steps, "_create", create)
    return found


def test_pose_step_replaces_the_photo_by_the_drawing(fake_landmarks: list) -> None:
    pipe = Pipeline.from_config({"steps": [{"pose": {"size": 64}}, {"resize": {"size": 32}}, "grey"]})
    photo = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    res = pipe(photo)
    assert res.status == "done" and res.found is True and res.box is None and res.mask is None
    assert res.image.shape == (32, 32)
    want = ops.draw_pose(fake_landmarks[0], 64)
    assert np.abs(res.image.astype(int) - ops.resize(want, (32, 32), "area").astype(int)).max() <= 1


@pytest.mark.parametrize(("on_missing", "status"), [("blank", "not-found"), ("keep", "not-found"),
                                                    ("skip", "skipped")])
def test_pose_step_without_a_hand(fake_landmarks: list, on_missing: str, status: str) -> None:
    fake_landmarks.clear()
    pipe = Pipeline.from_config({"steps": [{"pose": {"size": 48, "on_missing": on_missing}}]})
    photo = np.full((40, 50, 3), 90, np.uint8)
    res = pipe.run_batch([photo])[0]
    assert res.status == status and res.found is False
    if on_missing == "blank":
        assert res.image.shape == (48, 48, 3) and not res.image.any()
    elif on_missing == "keep":
        assert np.array_equal(res.image, photo)
    else:
        assert res.image is None


def test_pose_step_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"steps\[1\]\.crop: cannot follow pose"):
        Pipeline.from_config({"steps": [{"pose": {}}, {"crop": {"to": "mask"}}]})
    with pytest.raises(ConfigError, match=r"steps\[1\]\.pose: must come before grey"):
        Pipeline.from_config({"steps": ["grey", {"pose": {}}]})
    with pytest.raises(ConfigError, match="on_missing"):
        Pipeline.from_config({"steps": [{"pose": {"on_missing": "guess"}}]})
    with pytest.raises(ConfigError, match="size"):
        Pipeline.from_config({"steps": [{"pose": {"size": 4}}]})
    # a locator that finds boxes but no landmarks is refused when the pipeline opens, naming the fix
    pipe = Pipeline.from_config({"steps": [{"pose": {"backend": "full"}}]})
    with pytest.raises(BackendError, match="mediapipe-hands"):
        pipe(np.zeros((20, 20, 3), np.uint8))


@pytest.mark.skipif(not is_available("mediapipe-hands")[0], reason="MediaPipe not installed (extra 'hands')")
def test_pose_on_real_photos_finds_hands_and_aligns_them() -> None:
    from bglab.io.files import read_image

    folder = shared_path("rps", "webcam", "paper")
    files = sorted(Path(folder).glob("*.png"))[:4]
    pipe = Pipeline.from_config({"steps": [{"pose": {"options": {"min_confidence": 0.1}}},
                                           {"resize": {"size": 64}}, "grey"]})
    results = pipe.run_batch([read_image(f) for f in files], sources=files)
    found = [r for r in results if r.status == "done"]
    assert len(found) >= 3, [r.status for r in results]
    for r in found:
        assert r.image.shape == (64, 64) and 0.02 < (r.image > 127).mean() < 0.5
        # aligned: the wrist (start of the figure) is at the bottom, so the lower half is not empty
        assert (r.image[32:] > 127).any() and (r.image[:32] > 127).any()


def test_pose_with_photo_stacks_both_views(fake_landmarks: list) -> None:
    pipe = Pipeline.from_config({"steps": [{"pose": {"size": 32, "with_photo": True}}]})
    photo = np.random.default_rng(1).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    res = pipe(photo)
    assert res.status == "done" and res.image.shape == (32, 32, 3)
    want_photo = ops.resize_pad(ops.to_grey(photo), (32, 32), interpolation="area")[0]
    assert np.array_equal(res.image[..., 0], want_photo)
    assert np.array_equal(res.image[..., 1], ops.draw_pose(fake_landmarks[0], 32)) and not res.image[..., 2].any()
    fake_landmarks.clear()
    res = pipe.run_batch([photo])[0]
    assert res.status == "not-found" and np.array_equal(res.image[..., 0], want_photo)
    assert not res.image[..., 1:].any()
    # written to the resolved config only when set
    assert "with_photo" not in Pipeline.from_config({"steps": [{"pose": {}}]}).to_config()["steps"][0]["pose"]

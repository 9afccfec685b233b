"""hand-grabcut: landmark seeds (pure), GrabCut on a synthetic hand, pseudo-labelling a folder, real wild scenes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bglab.errors import BackendError, ConfigError
from bglab.foreground import is_available
from bglab.foreground.handcut import BONES, PALM, HandGrabCut, hand_seed
from bglab.foreground.key import QCRules, key_folder
from bglab.io.files import read_image, read_mask, write_image
from bglab.ops.metrics import seg_scores
from tests.conftest import shared_path

SKIN = (225, 170, 140)


def _landmarks(cx: float, cy: float, s: float) -> np.ndarray:
    """A plausible open hand pointing up: wrist at (cx, cy + s), fingers spread above (MediaPipe's order)."""
    pts = [(0.0, 1.0)]  # wrist
    for base_x, tip_y in ((-0.55, 0.2), (-0.3, -0.75), (0.0, -0.85), (0.3, -0.75), (0.5, -0.5)):
        knuckle = (base_x * 0.8, 0.1 if base_x > -0.5 else 0.6)
        pts += [knuckle] + [(base_x * (0.85 + 0.1 * k), knuckle[1] + (tip_y - knuckle[1]) * (k / 3))
                            for k in (1, 2, 3)]
    xy = np.array(pts, np.float64)
    return np.column_stack([cx + xy[:, 0] * s, cy + xy[:, 1] * s])


def _hand_image(rng: np.random.Generator, hands: list[np.ndarray], h: int = 160, w: int = 200):
    """A textured blue-grey scene with skin-coloured hands drawn along their landmarks; (image, truth mask)."""
    img = rng.integers(40, 110, (h, w, 3)).astype(np.uint8)
    img[..., 2] = np.clip(img[..., 2].astype(int) + 60, 0, 255)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    truth = np.zeros((h, w), np.uint8)
    for xy in hands:
        scale = np.linalg.norm(xy[9] - xy[0])
        ij = np.round(xy).astype(np.int32)
        for a, b in BONES:
            cv2.line(truth, tuple(int(v) for v in ij[a]), tuple(int(v) for v in ij[b]), 1, max(2, round(0.22 * scale)))
        cv2.fillConvexPoly(truth, cv2.convexHull(ij[list(PALM)]), 1)
    img[truth > 0] = SKIN
    return img, truth.astype(bool)


class FakeLandmarker:
    """Returns fixed landmarks (what MediaPipe would find) so the tests need no MediaPipe."""

    def __init__(self, hands: list[np.ndarray]) -> None:
        self.hands = hands
        self.calls = 0

    def landmarks(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        self.calls += 1
        return [(0.9, xy) for xy in self.hands]


def test_seed_layers_are_nested_and_landmarks_are_sure_hand() -> None:
    xy = _landmarks(100, 90, 40)
    seed = hand_seed((180, 200), [xy])
    assert seed.dtype == np.uint8 and seed.shape == (180, 200)
    for x, y in np.round(xy).astype(int):
        assert seed[y, x] == cv2.GC_FGD
    sure, hull, band = seed == cv2.GC_FGD, seed == cv2.GC_PR_FGD, seed == cv2.GC_PR_BGD
    assert sure.any() and hull.any() and band.any() and (seed == cv2.GC_BGD).any()
    # the band surrounds the hull, which surrounds the sure hand: grown sure region stays inside hull + sure
    grown = cv2.dilate(sure.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (grown & (seed == cv2.GC_BGD)).any()
    assert seed[0, 0] == cv2.GC_BGD  # far from the hand


def test_seed_without_hands_is_all_background_and_bad_landmarks_fail() -> None:
    assert (hand_seed((20, 30), []) == cv2.GC_BGD).all()
    with pytest.raises(BackendError, match="21 finite"):
        hand_seed((20, 30), [np.zeros((5, 2))])
    bad = _landmarks(10, 10, 5)
    bad[3, 0] = np.nan
    with pytest.raises(BackendError, match="21 finite"):
        hand_seed((20, 30), [bad])


def test_grabcut_recovers_a_synthetic_hand_and_two_hands() -> None:
    rng = np.random.default_rng(0)
    one = [_landmarks(100, 85, 38)]
    img, truth = _hand_image(rng, one)
    seg = HandGrabCut(FakeLandmarker(one), max_side=160)
    mask = seg.predict(img)
    assert mask.dtype == np.float32 and mask.shape == truth.shape
    assert seg_scores(mask > 0.5, truth).iou > 0.8
    np.testing.assert_array_equal(mask, seg.predict(img))  # deterministic (seeded k-means)
    two = [_landmarks(55, 90, 28), _landmarks(150, 95, 30)]
    img2, truth2 = _hand_image(rng, two)
    mask2 = HandGrabCut(FakeLandmarker(two), max_side=160).predict(img2)
    assert seg_scores(mask2 > 0.5, truth2).iou > 0.75


def test_no_hand_gives_empty_mask_and_bad_input_is_refused() -> None:
    img = np.full((40, 50, 3), 90, np.uint8)
    seg = HandGrabCut(FakeLandmarker([]))
    out = seg.predict(img)
    assert out.shape == (40, 50) and not out.any()
    with pytest.raises(BackendError, match="RGB uint8"):
        seg.predict(np.zeros((40, 50), np.uint8))
    with pytest.raises(ConfigError, match="band"):
        HandGrabCut(FakeLandmarker([]), grow=0.5, band=0.2)
    with pytest.raises(ConfigError, match="bone"):
        HandGrabCut(FakeLandmarker([]), bone=-1)


def test_huge_image_is_cut_at_max_side_and_mask_is_full_size() -> None:
    rng = np.random.default_rng(1)
    hands = [_landmarks(400, 340, 150)]
    img, truth = _hand_image(rng, hands, h=640, w=800)
    mask = HandGrabCut(FakeLandmarker(hands), max_side=200).predict(img)
    assert mask.shape == (640, 800)
    assert seg_scores(mask > 0.5, truth).iou > 0.75


def test_key_folder_with_another_backend_writes_masks_and_rejects_empty(tmp_path: Path) -> None:
    """bglab key --backend: any segmenter labels a folder; QC rejects the image where nothing was found."""
    rng = np.random.default_rng(2)
    src = tmp_path / "src" / "paper"
    src.mkdir(parents=True)
    for i in range(3):
        img, _ = _hand_image(rng, [_landmarks(100, 85, 38)])
        write_image(src / f"p{i}.jpg", img)
    write_image(src / "flat.jpg", np.full((60, 60, 3), 128, np.uint8))
    report = key_folder(tmp_path / "src", tmp_path / "dst", backend="grabcut", segmenter_options={"border": 0.1},
                        qc=QCRules(min_fg=0.02, max_fg=0.9, entry_side="none", max_border_fg=1.0), sheet=False)
    status = {it.file: it.status for it in report.items}
    assert status == {"paper/flat.jpg": "not-found", "paper/p0.jpg": "ok", "paper/p1.jpg": "ok", "paper/p2.jpg": "ok"}
    assert read_mask(tmp_path / "dst" / "paper" / "p0.png").shape == (160, 200)
    assert (tmp_path / "dst" / "_rejected" / "paper" / "flat.png").is_file()


mediapipe_ok, mediapipe_why = is_available("hand-grabcut")


@pytest.mark.skipif(not mediapipe_ok, reason=f"mediapipe not installed: {mediapipe_why}")
def test_hand_grabcut_on_real_wild_scenes() -> None:
    """On the 30 hands_wild photos (EgoHands + hand-over-face) landmark-seeded GrabCut beats the box-seeded one."""
    from bglab.foreground import create

    root = shared_path("hands_wild")
    seg = create("hand-grabcut")
    box = create("grabcut", locator="mediapipe-hands", max_hands=4)
    ious, box_ious = [], []
    for f in sorted((root / "images").glob("*.jpg"))[::3]:
        img = read_image(f)
        truth = read_mask(root / "masks" / f"{f.stem}.png") > 127
        ious.append(seg_scores(seg.predict(img) > 0.5, truth).iou)
        box_ious.append(seg_scores(box.predict(img) > 0.5, truth).iou)
    assert len(ious) == 10
    assert np.mean(ious) > 0.4 and np.mean(ious) > np.mean(box_ious)

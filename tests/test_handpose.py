"""hand-pose: viewpoint-free pose features of hand landmarks, the fallback head, the classifier in a study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import csv_rows, quick_study, shared_path

torch = pytest.importorskip("torch")


def _hand(spread: float = 0.0, curl: float = 0.0) -> np.ndarray:
    """Synthetic 21 landmarks of a right hand pointing up (y down): fingers ``spread`` (radians between
    neighbours) and ``curl``ed (0 straight, 1 folded back to the palm)."""
    pts = np.zeros((21, 2))
    bases = [(-0.45, -0.35), (-0.25, -1.0), (0.0, -1.0), (0.22, -0.95), (0.42, -0.85)]
    for f, (bx, by) in enumerate(bases):
        base = np.array([bx, by])
        ang = (f - 2) * spread
        d = np.array([np.sin(ang), -np.cos(ang)])
        pts[1 + 4 * f] = base
        p = base.copy()
        for j in range(1, 4):
            turn = curl * 1.3 * j
            step = np.array([d[0] * np.cos(turn) - d[1] * np.sin(turn), d[0] * np.sin(turn) + d[1] * np.cos(turn)])
            p = p + 0.3 * step
            pts[1 + 4 * f + j] = p
    return pts


def test_pose_features_ignore_position_size_rotation_and_mirror() -> None:
    from bglab.ops import POSE_FEATURES, pose_features

    xy = _hand(spread=0.15, curl=0.2)
    f = pose_features(xy)
    assert f.shape == (POSE_FEATURES,) and f.dtype == np.float32 and np.isfinite(f).all()
    a = 1.1
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (xy @ rot.T) * 3.7 + np.array([120.0, -40.0])
    mirrored = xy * np.array([-1.0, 1.0])
    np.testing.assert_allclose(pose_features(moved), f, atol=1e-5)
    np.testing.assert_allclose(pose_features(mirrored), f, atol=1e-5)


def test_pose_features_tell_a_fist_from_an_open_hand() -> None:
    """Straight fingers reach further from the wrist than curled ones, and spread tips lie further apart."""
    from bglab.ops import pose_features

    open_hand, fist, spread = pose_features(_hand()), pose_features(_hand(curl=1.0)), pose_features(_hand(0.3))
    tip_to_wrist = [3 + 5 * f for f in range(5)]  # per finger: 3 angle cosines, then tip-wrist, tip-base
    assert (open_hand[tip_to_wrist] > fist[tip_to_wrist] + 0.3).all()
    assert (spread[-10:] >= open_hand[-10:] - 1e-6).all() and spread[-10:].sum() > open_hand[-10:].sum() + 0.5


@pytest.mark.parametrize("bad", [np.zeros((20, 2)), np.full((21, 2), np.nan), np.zeros((21, 3))])
def test_pose_features_refuse_what_is_not_21_points(bad: np.ndarray) -> None:
    from bglab.ops import ParameterError, pose_features

    with pytest.raises(ParameterError, match="21 finite"):
        pose_features(bad)


def test_head_uses_the_pose_where_a_hand_was_found_and_the_image_elsewhere() -> None:
    from bglab.ops import POSE_FEATURES
    from bglab.train.handpose import PoseHead

    head = PoseHead(3, 4, dropout=0.0, landmark_dropout=0.5).eval()
    f = torch.randn(6, 1 + POSE_FEATURES + 4)
    f[:, 0] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    out = head(f)
    pose, image = head.pose(head.norm(f[:, 1:1 + POSE_FEATURES])), head.image(f[:, 1 + POSE_FEATURES:])
    found = f[:, 0] > 0.5
    assert torch.equal(out[found], pose[found]) and torch.equal(out[~found], image[~found])
    # training hides landmarks at random (seeded): some found rows then take the image layer
    head.train()
    torch.manual_seed(0)
    a = head(f.repeat(50, 1))
    torch.manual_seed(0)
    assert torch.equal(a, head(f.repeat(50, 1)))
    f50, img50 = f.repeat(50, 1), image.repeat(50, 1)
    hidden = (f50[:, 0] > 0.5) & torch.isclose(a, img50).all(1)
    assert 0.3 < hidden.float().sum() / (f50[:, 0] > 0.5).sum() < 0.7


def test_head_without_fallback_predicts_a_learned_prior_where_no_hand_is_found() -> None:
    from bglab.ops import POSE_FEATURES
    from bglab.train.handpose import PoseHead

    head = PoseHead(3, 0).eval()
    with torch.no_grad():
        head.prior.copy_(torch.tensor([0.0, 2.0, 0.0]))
    f = torch.zeros(2, 1 + POSE_FEATURES)
    assert head(f).argmax(1).tolist() == [1, 1]


class _FakeLandmarker:
    """Stands in for MediaPipe Hands: a hand (the synthetic one) where the image's top-left pixel is bright."""

    def __init__(self, **_: object) -> None:
        self.calls = 0

    def landmarks(self, img: np.ndarray) -> list[tuple[float, np.ndarray]]:
        self.calls += 1
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        return [(0.9, _hand() * 10 + 50)] if img[0, 0, 0] > 128 else []

    def close(self) -> None:
        pass


@pytest.fixture()
def fake_mediapipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """hand-pose without MediaPipe: the install check passes and the landmarker is the fake above."""
    from bglab.foreground import mediapipe as mp_backend
    from bglab.train import handpose

    monkeypatch.setattr(handpose, "mediapipe_installed", lambda: True)
    monkeypatch.setattr(mp_backend, "MediaPipeHands", _FakeLandmarker)


@pytest.mark.parametrize("channels", [3, 1])
def test_classifier_features_from_landmarks_without_fallback(fake_mediapipe: None, channels: int) -> None:
    from bglab.ops import POSE_FEATURES, pose_features
    from bglab.train.classifiers import build_classifier, load_trained, trained_state

    m = build_classifier("hand-pose", 3, channels, 96, fallback="none").eval()
    x = -torch.ones(2, channels, 96, 96)
    x[0, :, 0, 0] = 1.0  # a "hand" in the first image only
    f = m.features(x)
    assert f.shape == (2, 1 + POSE_FEATURES) and f[:, 0].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(f[0, 1:].numpy(), pose_features(_hand()), atol=1e-6)
    assert not f[1, 1:].any()
    assert m(x).shape == (2, 3)
    state = trained_state(m)
    assert {k.split(".")[1] for k in state} == {"norm", "pose", "prior"} and all(k.startswith("head.") for k in state)
    other = build_classifier("hand-pose", 3, channels, 96, fallback="none")
    load_trained(other, state)
    assert all(torch.equal(a, b) for a, b in zip(other.head.state_dict().values(), m.head.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize(("opts", "match"), [
    ({"tune": "all"}, "head only"),
    ({"landmark_dropout": 1.0}, "landmark_dropout"),
    ({"fallback": "cnn"}, "not a pretrained classifier"),
    ({"fallback": "nope"}, "unknown classifier"),
    ({"resolution": 128}, "unknown option"),
    ({"landmarks": {"zoom": 2}}, "model.landmarks.zoom: unknown setting"),
    ({"landmarks": {"pad": -1}}, "model.landmarks.pad must be"),
    ({"landmarks": {"pad": [0.5, "wide"]}}, "model.landmarks.pad must be"),
    ({"landmarks": {"mirror": "yes"}}, "model.landmarks.mirror"),
    ({"landmarks": {"equalize": 1}}, "model.landmarks.equalize"),
    ({"landmarks": {"min_confidence": 2}}, "model.landmarks.min_confidence"),
    ({"landmarks": [0.5]}, "model.landmarks must be a mapping"),
])
def test_classifier_refuses_bad_options(fake_mediapipe: None, opts: dict, match: str) -> None:
    from bglab.errors import ConfigError
    from bglab.train.classifiers import build_classifier

    with pytest.raises(ConfigError, match=match):
        build_classifier("hand-pose", 3, 3, 96, **opts)


def test_landmark_settings_reach_the_landmarker_and_name_the_cached_features(
        fake_mediapipe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.landmarks`` overrides the defaults one by one (one hand always), is what MediaPipe Hands gets,
    and is part of the cached features' identity, so other settings never read the defaults' rows."""
    from bglab.train import handpose
    from bglab.train.classifiers import build_classifier

    got: list[dict] = []

    class Recording(_FakeLandmarker):
        def __init__(self, **kw: object) -> None:
            got.append(kw)
            super().__init__()

    from bglab.foreground import mediapipe as mp_backend

    monkeypatch.setattr(mp_backend, "MediaPipeHands", Recording)
    default = build_classifier("hand-pose", 3, 3, 96, fallback="none")
    first = build_classifier("hand-pose", 3, 3, 96, fallback="none", landmarks={"pad": 0.5, "mirror": False})
    plain = {k: v for k, v in handpose.LANDMARKS.items() if k != "equalize"}  # off: left out of the identity
    assert default.landmarker == {**plain, "max_hands": 1} and handpose.LANDMARKS["equalize"] is False
    assert first.landmarker == {**plain, "pad": 0.5, "mirror": False, "max_hands": 1}
    assert default.pose_id != first.pose_id and "mirror=False" in first.pose_id
    assert "equalize" not in default.pose_id, "features cached before the equalize key keep their identity"
    equal = build_classifier("hand-pose", 3, 3, 96, fallback="none", landmarks={"equalize": True})
    assert equal.landmarker == {**plain, "equalize": True, "max_hands": 1} and "equalize=True" in equal.pose_id
    first.features(-torch.ones(1, 3, 96, 96))
    equal.features(-torch.ones(1, 3, 96, 96))
    assert got == [first.landmarker, equal.landmarker]


def test_classifier_without_mediapipe_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from bglab.errors import ConfigError
    from bglab.train import handpose
    from bglab.train.classifiers import build_classifier

    monkeypatch.setattr(handpose, "mediapipe_installed", lambda: False)
    with pytest.raises(ConfigError, match="MediaPipe") as info:
        build_classifier("hand-pose", 3, 3, 96, fallback="none")
    assert "bglab[hands]" in str(info.value.hint)


def test_cheap_option_errors_come_before_the_fallback_loads(fake_mediapipe: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bglab.errors import ConfigError
    from bglab.train import classifiers

    def no_loading(*a: object, **k: object) -> None:
        raise AssertionError("the fallback backbone was built before the options were checked")

    monkeypatch.setattr(classifiers, "PretrainedClassifier", no_loading)
    for opts, match in (({"tune": "top"}, "head only"), ({"landmark_dropout": -0.1}, "landmark_dropout")):
        with pytest.raises(ConfigError, match=match):
            classifiers.build_classifier("hand-pose", 3, 3, 96, **opts)


def test_study_with_hand_pose_trains_heads_on_cached_landmark_features(fake_mediapipe: None, tmp_path: Path) -> None:
    """Through the runner: the landmark rows are computed once and cached on disk, the run finishes, and the
    images with a "hand" are told from those without."""
    import yaml

    from bglab.experiment.config import load_experiment_config
    from bglab.experiment.runner import run_experiment
    from bglab.io.files import write_image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b")):
        for i in range(12):
            img = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
            if c == 1:
                img[0, 0] = 255  # class b: the fake landmarker finds a hand
            write_image(tmp_path / "data" / cls / f"{i}.png", img)
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "handpose-fake", "seeds": [0], "split_seed": 0,
        "input": {"size": 32, "channels": 3},
        "sources": {"data": {"path": str(tmp_path / "data")}},
        "protocols": {"p": {"split": {"data": [0.5, 0.25, 0.25]}, "test_sets": {"data": "data/test"}}},
        "arms": {"original": []},
        "model": {"name": "hand-pose", "fallback": "none", "landmark_dropout": 0.0},
        "train": {"epochs": 20, "batch_size": 8, "lr": 0.05},
        "evaluate": {"distortions": {}, "bootstrap": 100},
        "studies": {"s": {"protocols": ["p"], "arms": ["original"]}},
        "saliency": {"n": 2},
    }))
    cfg = load_experiment_config(cfg_path)
    logs: list[str] = []
    summary = run_experiment(cfg, tmp_path / "run", log=logs.append, report=False)
    assert summary["complete"] is True and set(summary["runs"].values()) == {"done"}
    assert any("embedded (hand-pose)" in line for line in logs)
    assert list((tmp_path / "run" / "cache" / "features").rglob("*.npy"))
    rows = [r for r in csv_rows(tmp_path / "run" / "metrics.csv") if r["split"] == "test"]
    assert rows and float(rows[-1]["accuracy"]) == 1.0  # a hand <=> class b; the prior takes class a
    # saliency asked for: none for hand-pose runs (no image maps), and the report says why
    from bglab.experiment.report import analyse_saliency

    assert not list((tmp_path / "run" / "predictions").rglob("saliency__*.npz"))
    lines = analyse_saliency(tmp_path / "run", cfg)["protocols"]["p"]["lines"]
    assert lines and all("hand-pose" in ln["reason"] and ln["share"]["n"] == 0 for ln in lines.values())


def test_real_webcam_hands_give_landmark_features() -> None:
    """On real webcam photos MediaPipe finds the hand and the pose features separate rock from paper (fingers
    stretched: tips far from the wrist)."""
    pytest.importorskip("mediapipe")
    import cv2

    from bglab.io.files import read_image
    from bglab.train.classifiers import build_classifier

    root = shared_path("rps", "webcam")
    m = build_classifier("hand-pose", 3, 3, 224, fallback="none")
    ims = {c: [cv2.resize(read_image(p), (224, 224)) for p in sorted((root / c).glob("*.png"))[:3]]
           for c in ("rock", "paper")}
    f = {c: m.features(torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).float() / 127.5 - 1) for c, v in ims.items()}
    m.close()
    assert all(bool((f[c][:, 0] == 1).all()) for c in f)
    tips = [1 + 3 + 5 * k for k in range(1, 5)]  # tip-to-wrist of the four fingers
    assert f["paper"][:, tips].mean() > f["rock"][:, tips].mean() + 0.3


def test_rps_handpose_config_restates_the_reference_arms() -> None:
    """The shipped study keeps rps-reference's preprocessing for its arms (an rps-pretrained run directory lends
    it its arm caches) and its backbone features (the same 224-px images); the classifier is hand-pose."""
    from bglab.experiment.config import load_experiment_config

    root = Path(__file__).resolve().parents[1] / "bglab" / "configs"
    ref = load_experiment_config(root / "rps-reference.yaml")
    cfg = load_experiment_config(root / "rps-handpose.yaml")
    assert cfg.arms.keys() == {"original", "crop+remove"}
    assert all(cfg.arms[a].steps == ref.arms[a].steps for a in cfg.arms)
    assert cfg.protocols == ref.protocols and (cfg.size, cfg.channels) == (224, 3)
    assert cfg.variants["base"].model == {"name": "hand-pose", "fallback": "efficientnet-lite0", "tune": "head",
                                          "dropout": 0.2, "landmark_dropout": 0.5}
    assert len(cfg.runs()) == 2 * 2 * 3


@pytest.mark.slow  # MediaPipe on 360 small images and the U-Net arm: about 30 s on 2 cores
def test_rps_handpose_quick_profile_on_shared_data(tmp_path: Path) -> None:
    """The small study with the real MediaPipe: every run finishes and held-out webcam hands are read by pose
    far above chance."""
    pytest.importorskip("mediapipe")
    shared_path("rps", "webcam")
    webcam = quick_study("rps-handpose.yaml", tmp_path / "quick", runs=4, epoch=10)
    assert len(webcam) == 2 and min(webcam) >= 0.75


def test_landmarks_do_not_depend_on_what_the_landmarker_saw_before() -> None:
    """eval-cls on new photos must give each photo the answer the experiment gave it, whatever came before: on
    real sxsw photos (hands found at once, found only on the equalised second look, never found) one landmarker in
    order, the same in reverse and a fresh landmarker per photo give the same hands, point for point."""
    pytest.importorskip("mediapipe")
    import cv2

    from bglab.foreground.mediapipe import MediaPipeHands
    from bglab.io.files import read_image
    from bglab.train.handpose import landmarker_options

    root = shared_path("rps", "sxsw")
    names = ["paper/training__paper.IMG_7079_MOV-24_jpg.rf.a1113d95947e201f6b4666a275f615ff_00747.jpg",
             "paper/training__paper.IMG_7043_MOV-141_jpg.rf.219f4bdc8fb4b925aa44921eba27525f_00260.jpg",
             "paper/training__paper.IMG_5636_MOV-60_jpg.rf.db0e62813518af0f6663899eff401322_00877.jpg",
             "paper/training__paper.IMG_7079_MOV-27_jpg.rf.0095a6f39845d2b7b60fb591f58d991a_00401.jpg"]
    names += [f"{c}/{p.name}" for c in ("rock", "scissors") for p in sorted((root / c).glob("*.jpg"))[:2]]
    paths = [root / n for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip("the sxsw photos this test names are not in the shared data")
    imgs = [np.ascontiguousarray(cv2.resize(read_image(p), (224, 224), interpolation=cv2.INTER_AREA)) for p in paths]
    kw = landmarker_options({"equalize": True})  # the pose reader's landmarker, with the equalised second look

    def hands(order: list[int]) -> dict[int, list]:
        loc = MediaPipeHands(**kw)
        try:
            return {i: loc.landmarks(imgs[i]) for i in order}
        finally:
            loc.close()

    forward = hands(list(range(len(imgs))))
    backward = hands(list(range(len(imgs)))[::-1])
    fresh = {i: hands([i])[i] for i in range(len(imgs))}
    found = [bool(forward[i]) for i in range(len(imgs))]
    assert any(found) and not all(found)  # both kinds of photo in the sequence
    for other in (backward, fresh):
        for i in range(len(imgs)):
            assert len(other[i]) == len(forward[i]), names[i]
            for (s0, xy0), (s1, xy1) in zip(forward[i], other[i], strict=True):
                assert s0 == pytest.approx(s1, abs=1e-6) and np.allclose(xy0, xy1, atol=1e-4), names[i]

"""``hand-pose``: a classifier of what a hand's landmarks say, with a pretrained image classifier as fallback.

A hand sign (rock, paper, scissors, ...) is the shape of the fingers. An image network trained on one studio
learns that studio's look of each sign: on rock-paper-scissors, trained on the green-screen webcam set alone,
every image network read the real photos' open palm (fingers spread, palm to the camera) as scissors or rock,
because the studio's "paper" is a flat hand seen from the back with the fingers together
(docs/pretrained.md). This classifier reads the pose instead: MediaPipe Hands finds the 21 landmarks
(``mediapipe-hands``, padded, turned, mirrored), :func:`bglab.ops.pose_features` turns them into numbers
that do not depend on where the hand is, how large, how turned or which hand (joint angles, finger extension,
spread), and a linear layer classifies those. Where no hand is found, a frozen ImageNet backbone's features
feed a second linear layer (``fallback``) so every image gets a prediction.

Both inputs are frozen features, so runs train like ``tune: head``: each image is looked at once (cached by
content) and the two linear layers train in seconds. During training each image's landmarks are hidden with
probability ``landmark_dropout`` (seeded like the rest of the run), so the fallback layer learns from every
image, not only from the few without a hand.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from bglab.errors import ConfigError
from bglab.io.configfile import check_bool
from bglab.ops.pose import POSE_FEATURES, pose_features

__all__ = ["LANDMARKS", "HandPoseClassifier", "PoseHead", "landmarker_options"]

#: how the landmarks are found (``model.landmarks`` overrides any of these): padded (tight crops), tried in four
#: turns (hands pointing down or sideways), then with a wider border and mirrored where none is found (on the
#: sxsw photos at 224 px: a hand in 89.7 % of them, was 81.1 % with the first padding alone; docs/pretrained.md);
#: ``equalize`` (off) looks at every view once more with the lightness equalised where none shows a hand
LANDMARKS: dict[str, Any] = {"min_confidence": 0.1, "pad": [0.5, 1.0], "mirror": True, "rotations": True,
                             "equalize": False}
_VERSION = "1"  # of the landmark features: part of the cache identity


def mediapipe_installed() -> bool:
    """Whether MediaPipe (the ``hands`` extra) can be imported, checked without importing it."""
    return importlib.util.find_spec("mediapipe") is not None


class PoseHead(nn.Module):
    """Logits from ``[found, pose features, image features]`` rows: the pose layer where a hand was found,
    the image layer (or, without a fallback, a learned class prior) where none was."""

    def __init__(self, num_classes: int, n_image: int, *, dropout: float = 0.2, landmark_dropout: float = 0.5
                 ) -> None:
        super().__init__()
        self.n_image = int(n_image)
        self.landmark_dropout = float(landmark_dropout)
        # the pose numbers differ in range (cosines, distances in palms): standardised before the linear layer
        self.norm = nn.BatchNorm1d(POSE_FEATURES)
        self.pose = nn.Linear(POSE_FEATURES, num_classes)
        self.drop = nn.Dropout(float(dropout))
        self.image = nn.Linear(self.n_image, num_classes) if self.n_image else None
        self.prior = None if self.n_image else nn.Parameter(torch.zeros(num_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        found = f[:, 0] > 0.5
        pose = self.pose(self.norm(f[:, 1:1 + POSE_FEATURES]))
        if self.image is not None:
            other = self.image(self.drop(f[:, 1 + POSE_FEATURES:]))
        else:
            other = self.prior.expand(f.shape[0], -1)
        if self.training and self.landmark_dropout > 0:
            found = found & (torch.rand(f.shape[0], device=f.device) >= self.landmark_dropout)
        return torch.where(found[:, None], pose, other)


def landmarker_options(landmarks: Mapping[str, Any] | None) -> dict[str, Any]:
    """The MediaPipe Hands settings of ``model.landmarks`` over :data:`LANDMARKS` (one hand: the most confident),
    checked; a :class:`ConfigError` names the key otherwise."""
    from bglab.foreground.mediapipe import parse_pads

    if landmarks is not None and not isinstance(landmarks, Mapping):
        raise ConfigError(f"model.landmarks must be a mapping, not {landmarks!r}",
                          hint="e.g. landmarks: {pad: [0.5, 1.0], mirror: true}")
    own = dict(landmarks or {})
    unknown = sorted(set(own) - set(LANDMARKS))
    if unknown:
        raise ConfigError(f"model.landmarks.{unknown[0]}: unknown setting", hint=f"use {', '.join(LANDMARKS)}")
    opts = {**LANDMARKS, **own}
    conf = opts["min_confidence"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= float(conf) <= 1.0:
        raise ConfigError(f"model.landmarks.min_confidence: {conf!r} must be a number in [0, 1]")
    for key in ("mirror", "rotations", "equalize"):
        check_bool(f"model.landmarks.{key}", opts[key])
    try:
        pads = parse_pads(opts["pad"])
    except ConfigError as exc:
        raise ConfigError(f"model.landmarks.{exc.message}", hint=exc.hint) from None
    out = {**opts, "min_confidence": float(conf), "pad": list(pads) if len(pads) > 1 else pads[0], "max_hands": 1}
    if not out["equalize"]:
        del out["equalize"]  # off: the landmark features' identity (their cached rows) as before the key
    return out


def check_options(in_ch: int, *, tune: str, landmark_dropout: float, landmarks: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The hand-pose options that need nothing loaded, checked first (before a fallback backbone's weights);
    returns the landmarker's settings (:func:`landmarker_options`)."""
    landmarker = landmarker_options(landmarks)
    if tune != "head":
        raise ConfigError(f"model.tune: hand-pose trains its head only, not {tune!r}", hint="use tune: head")
    if not 0.0 <= float(landmark_dropout) < 1.0:
        raise ConfigError(f"model.landmark_dropout: {landmark_dropout!r} must be in [0, 1)")
    if not mediapipe_installed():
        raise ConfigError("model hand-pose needs MediaPipe Hands, which is not installed",
                          hint="pip install 'bglab[hands]'")
    if in_ch not in (1, 3):
        raise ConfigError(f"model: hand-pose takes 1 (grey, replicated) or 3 channels, not {in_ch}")
    return landmarker


class HandPoseClassifier(nn.Module):
    """MediaPipe landmarks -> pose features -> linear layer; a frozen ImageNet backbone's features -> linear
    layer where no hand is found (the config's ``model.fallback``: a pretrained classifier's name, or ``none``).

    Input ``(N, 1 | 3, size, size)`` in [-1, 1] like every bglab classifier. Only the head trains (``tune``
    can only be ``head``); checkpoints hold the head, the rest is rebuilt from the checksum-verified wheels.
    """

    def __init__(self, num_classes: int, in_ch: int = 3, *, fallback: nn.Module | None = None, tune: str = "head",
                 dropout: float = 0.2, landmark_dropout: float = 0.5, landmarks: Mapping[str, Any] | None = None
                 ) -> None:
        """``fallback``: a pretrained classifier whose frozen ``features`` (and ``weights_id``) serve where no
        hand is found, or None (a learned class prior there); built by the registry
        (:func:`bglab.train.classifiers.build_classifier`), which checks its name. ``landmarks``: MediaPipe
        settings over :data:`LANDMARKS`."""
        super().__init__()
        self.landmarker = check_options(in_ch, tune=tune, landmark_dropout=landmark_dropout, landmarks=landmarks)
        self.in_ch, self.tune = int(in_ch), "head"
        self.fallback = fallback
        n_image = 0
        if fallback is not None:
            fallback.head = nn.Identity()  # its features feed this model's head
            n_image = fallback.backbone.num_features
        #: the landmark features' identity (names their cached rows)
        self.pose_id = f"hand-pose|v{_VERSION}|" + ",".join(f"{k}={v}" for k, v in sorted(self.landmarker.items()))
        self.head = PoseHead(num_classes, n_image, dropout=dropout, landmark_dropout=landmark_dropout)
        self._landmarker: Any = None

    def close(self) -> None:
        """Release the MediaPipe graph (made again on the next use)."""
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def pose_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + POSE_FEATURES)`` rows of [-1, 1] input: 1 and the pose features of the most confident hand,
        or zeros where no hand is found."""
        if self._landmarker is None:
            from bglab.foreground.mediapipe import MediaPipeHands

            self._landmarker = MediaPipeHands(**self.landmarker)
        imgs = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        if imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1)
        rows = np.zeros((imgs.shape[0], 1 + POSE_FEATURES), np.float32)
        for i, img in enumerate(imgs.permute(0, 2, 3, 1).numpy()):
            hands = self._landmarker.landmarks(np.ascontiguousarray(img))
            if hands:
                rows[i, 0] = 1.0
                rows[i, 1:] = pose_features(hands[0][1])
        return torch.from_numpy(rows)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: ``[found, pose features, image features]`` of [-1, 1] input."""
        parts = [self.pose_features(x)]
        if self.fallback is not None:
            parts.append(self.fallback.features(x).float().cpu())
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).to(x.device))

"""``auto``: pick the segmenter per image, so a data set of anything gets a sensible mask without choosing.

The rule (measured in ``docs/segmenters.md``; ``bench/bench_segment.py --backends auto,...``):

1. If MediaPipe is installed (extra ``hands``) and MediaPipe Hands finds a hand in the image, the hand is
   cut out by ``hand-grabcut`` from those same landmarks (bglab's best segmenter for hands in real scenes;
   the general model finds the salient object, which in a photo of a person is the person or the face).
2. Otherwise the general-object model ``u2netp`` (pets, products, people, hands on a plain background).

Without MediaPipe the rule is simply rule 2: nothing optional is needed. ``hands=off`` forces rule 2,
``hands=on`` requires MediaPipe (an error naming the extra when missing). ``choices`` counts which branch
each image took (the CLI commands print nothing extra; the bench reports it).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BackendError, ConfigError
from bglab.segment.base import SegmenterBase, rgb_input
from bglab.segment.registry import Runtime


class AutoSegmenter(SegmenterBase):
    """``hand`` (a :class:`~bglab.segment.handcut.HandGrabCut`) where its landmarker finds a hand, else ``general``."""

    name = "auto"

    def __init__(self, general: Any, hand: Any | None = None) -> None:
        self.general = general
        self.hand = hand
        self.choices: Counter[str] = Counter()
        self._lock = threading.Lock()

    def choose(self, image: np.ndarray) -> tuple[str, list[np.ndarray]]:
        """Which backend this image goes to (``"hand-grabcut"`` or ``"u2netp"``) and the hands found."""
        if self.hand is None:
            return "u2netp", []
        hands = [xy for _, xy in self.hand.landmarker.landmarks(image)]
        return ("hand-grabcut", hands) if hands else ("u2netp", [])

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, self.name)
        which, hands = self.choose(img)
        with self._lock:
            self.choices[which] += 1
        if which == "hand-grabcut":
            return self.hand.cut_hands(img, hands)
        return self.general.predict(img, source=source)


def create(runtime: Runtime, *, hands: str = "auto", model_path: str | None = None,
           min_confidence: float = 0.1) -> AutoSegmenter:
    """``hands``: ``auto`` (use MediaPipe when installed), ``on`` (require it) or ``off``; ``model_path``: the
    general model's file (default: the installed one); ``min_confidence``: MediaPipe's detection confidence."""
    from bglab.segment import registry

    mode = str(hands).lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"auto: hands must be auto, on or off, not {hands!r}")
    general = registry.create("u2netp", runtime=runtime, model_path=model_path)
    hand = None
    if mode != "off":
        ok, why = registry.is_available("hand-grabcut")
        if ok:
            hand = registry.create("hand-grabcut", runtime=runtime, min_confidence=min_confidence)
        elif mode == "on":
            raise BackendError(f"auto with hands=on needs MediaPipe: {why}",
                               hint="pip install 'bglab[hands]', or use hands=auto / hands=off")
    return AutoSegmenter(general, hand)

"""``auto``: pick the segmenter, so a data set of anything gets a sensible mask without choosing.

The rule (measured in ``docs/segmenters.md``; ``bench/bench_segment.py --backends auto,...``), in two levels:

1. **The data set** (``remove``, ``preprocess``, ``variants``, ``eval-seg`` resolve ``auto`` once per run with
   :func:`resolve`, before any worker starts): MediaPipe Hands looks at up to 24 images spread evenly over the
   sorted inputs. If it finds a hand in at least half of them, it is a hand data set (``hands=on``), otherwise
   not (``hands=off``); the decision is written into the run's options (``preprocess``'s pipeline.yaml).
   Without MediaPipe (extra ``hands``) it is always ``hands=off``: nothing optional is needed.
2. **Each image**: with ``hands=on`` (or ``hands=auto`` on a single image, e.g. through the library or the
   server), the hands MediaPipe finds (in the whole image and in 2 x 2 overlapping tiles: :data:`HAND_LOCATOR`)
   are cut out by the hand U-Net v4 (``unet-effnet``) run on each hand's
   padded box, the boxes taken from those same landmarks (``unet-effnet -O locator=mediapipe-hands``; it
   beat ``hand-grabcut`` on real scenes and on the webcam set, and is faster: ``docs/segmenter-v4.md``); an
   image without a hand, and every image with ``hands=off``, goes to the general-object model ``u2netp``.

Why two levels: a per-image rule alone sends every pet photo in which MediaPipe "finds" a hand (a paw, a
person's hand holding the dog: 34 of pets3's 599 photos) to the hand model, costing those photos their pet;
the subject of a data set is a property of the data set. ``choices`` counts which branch each image took.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BackendError, ConfigError
from bglab.foreground.base import SegmenterBase, rgb_input
from bglab.foreground.registry import Runtime


HAND_BACKEND = "unet-effnet"  # the hand branch's model, run on the hands' boxes
# the hand branch's MediaPipe settings: up to 4 hands, also looked for in 2 x 2 overlapping tiles (small hands of
# wide scenes; bglab.foreground.mediapipe). Chosen a priori, measured in docs/segmenter-v4.md.
HAND_LOCATOR = {"max_hands": 4, "tiles": 2}


class BoxedHands:
    """The hand branch: ``segmenter`` on each hand's padded box, the boxes from ``landmarker``'s landmarks."""

    def __init__(self, landmarker: Any, segmenter: Any, box_margin: float) -> None:
        self.landmarker = landmarker
        self.segmenter = segmenter
        self.box_margin = float(box_margin)

    def cut_hands(self, img: np.ndarray, hands: Sequence[np.ndarray]) -> np.ndarray:
        """The hand mask of ``img`` given the hands' landmarks (as ``landmarker.landmarks`` found them)."""
        from bglab.foreground.boxprompt import pad_boxes, segment_in_boxes

        boxes = pad_boxes(self.landmarker.boxes(img.shape, hands), img.shape, self.box_margin)
        return segment_in_boxes(img, boxes, self.segmenter)


class AutoSegmenter(SegmenterBase):
    """``hand`` (a :class:`BoxedHands`) where its landmarker finds a hand, else ``general``."""

    name = "auto"

    def __init__(self, general: Any, hand: Any | None = None) -> None:
        self.general = general
        self.hand = hand
        self.choices: Counter[str] = Counter()
        self._lock = threading.Lock()

    def choose(self, image: np.ndarray) -> tuple[str, list[np.ndarray]]:
        """Which backend this image goes to (``"unet-effnet"`` or ``"u2netp"``) and the hands found."""
        if self.hand is None:
            return "u2netp", []
        hands = [xy for _, xy in self.hand.landmarker.landmarks(image)]
        return (HAND_BACKEND, hands) if hands else ("u2netp", [])

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, self.name)
        which, hands = self.choose(img)
        with self._lock:
            self.choices[which] += 1
        if which == HAND_BACKEND:
            return self.hand.cut_hands(img, hands)
        return self.general.predict(img, source=source)


SAMPLE = 24  # images MediaPipe looks at to decide whether a data set is about hands
HAND_SHARE = 0.5  # ... and the share of them that must show a hand (a majority: an a-priori choice, not tuned)


def sample_paths(paths: Sequence[str | Path], n: int = SAMPLE) -> list[Path]:
    """Up to ``n`` paths spread evenly over the sorted ``paths`` (every class of a folder tree gets its share)."""
    ordered = sorted(Path(p) for p in paths)
    if len(ordered) <= n:
        return ordered
    step = len(ordered) / n
    return [ordered[int(i * step)] for i in range(n)]


def decide(paths: Sequence[str | Path], *, runtime: Runtime | None = None, min_confidence: float = 0.1,
           n: int = SAMPLE, share: float = HAND_SHARE) -> tuple[str, int, int]:
    """``("on" | "off", images with a hand, images looked at)``: ``on`` when MediaPipe finds a hand in at least
    ``share`` of a sample of ``paths``; ``off`` without MediaPipe, or when no sampled image can be read."""
    from bglab.errors import BglabError
    from bglab.foreground import registry
    from bglab.io.files import read_image

    if not registry.is_available("mediapipe-hands")[0]:
        return "off", 0, 0
    hands = registry.create("mediapipe-hands", kind="locator", runtime=runtime, min_confidence=min_confidence,
                            max_hands=4)
    found = used = 0
    for p in sample_paths(paths, n):
        try:
            img = read_image(p)
        except (BglabError, OSError):
            continue
        used += 1
        found += bool(hands.landmarks(img))
    return ("on" if used and found >= share * used else "off"), found, used


def resolve(name: str, options: Mapping[str, Any], paths: Sequence[str | Path], *,
            runtime: Runtime | None = None) -> dict[str, Any]:
    """The options to create backend ``name`` with for a run over ``paths``: for ``auto`` with ``hands=auto``
    (the default), the data-set decision :func:`decide` is made here and recorded as ``hands=on`` / ``off``;
    any other backend, or an explicit ``hands``, is returned unchanged."""
    opts = dict(options)
    if name != "auto" or str(opts.get("hands", "auto")).lower() != "auto" or not paths:
        return opts
    opts["hands"], _, _ = decide(paths, runtime=runtime, min_confidence=float(opts.get("min_confidence", 0.1)))
    return opts


def create(runtime: Runtime, *, hands: str = "auto", model_path: str | None = None,
           min_confidence: float = 0.1) -> AutoSegmenter:
    """``hands``: ``auto`` (per image: use MediaPipe when installed; commands first turn it into ``on`` / ``off``
    for the whole data set with :func:`resolve`), ``on`` (require MediaPipe) or ``off`` (always ``u2netp``);
    ``model_path``: the general model's file (default: the installed one); ``min_confidence``: MediaPipe's."""
    from bglab.foreground import registry

    mode = str(hands).lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"auto: hands must be auto, on or off, not {hands!r}")
    general = registry.create("u2netp", runtime=runtime, model_path=model_path)
    hand = None
    if mode != "off":
        ok, why = registry.is_available("mediapipe-hands")
        if ok:
            from bglab.foreground.unet import BOX_MARGIN

            hand = BoxedHands(registry.create("mediapipe-hands", kind="locator", runtime=runtime,
                                              min_confidence=min_confidence, **HAND_LOCATOR),
                              registry.create(HAND_BACKEND, runtime=runtime), BOX_MARGIN)
        elif mode == "on":
            raise BackendError(f"auto with hands=on needs MediaPipe: {why}",
                               hint="pip install 'bglab[hands]', or use hands=auto / hands=off")
    return AutoSegmenter(general, hand)

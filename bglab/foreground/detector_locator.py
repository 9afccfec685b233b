"""``box-model`` and ``box-csv`` locators: boxes from a trained box + label model, or from an annotation file.

``box-model`` runs a checkpoint of :mod:`bglab.train.detector` (``best.safetensors`` from ``bglab
train-det``, through PyTorch) or its ONNX export (through ONNX Runtime, using the ``Runtime``'s threads and
providers) on the image: the image is padded to a square with grey (as the training crops are) and resized
to the model's input size; the predicted box is mapped back to the image's pixels. The model predicts ONE
box per input and was trained on crops where the object takes roughly 1/3 to 2/3 of the side (a face with
1.5-3x context), so it is meant for images or crops framed like that; it is not a multi-object detector.
``classify(image)`` also gives the predicted label and its probability.

``box-csv`` returns the boxes listed for the image in an annotation file (CSV in the face-mask layout,
Pascal VOC XML / folder, or COCO JSON; see :mod:`bglab.data.boxdata`), looked up by the file name of the
image's ``source`` path, largest first. Broken boxes follow the test-time rule: repaired against the
image's real size where safe (clip, widen zero size), dropped otherwise. Options: ``label`` keeps only boxes
of that label (a name or a list); ``strict=true`` raises when the file is not listed at all (default: no
boxes). In a preprocessing config, cropping to the annotated object is one line::

    locate: {backend: box-csv, options: {boxes: ../shared/data/facemask/annotations.csv}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import BackendError, BoxError, ConfigError
from bglab.foreground.registry import Runtime
from bglab.io.configfile import check_bool
from bglab.ops.box import Box

PAD_VALUE = 114


def _square_input(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Pad RGB ``image`` to a square (grey, bottom / right) and resize to ``size``; returns (input, scale)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), PAD_VALUE, np.uint8)
    canvas[:h, :w] = img
    s = size / side
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interp), s


class BoxModelLocator:
    """One box (and label) per image from a box + label model (safetensors via torch, or ONNX)."""

    name = "box-model"

    def __init__(self, model: str | Path, runtime: Runtime | None = None) -> None:
        path = Path(model).expanduser()
        if path.is_dir():  # a train-det run folder
            path = path / "best.safetensors"
        if not path.is_file():
            raise BackendError("box-model file not found", path=path,
                               hint="pass model=RUN/best.safetensors (from `bglab train-det`) or an exported .onnx")
        self.path = path
        rt = runtime or Runtime()
        self._sess: Any = None
        self._torch: Any = None
        if path.suffix.lower() == ".onnx":
            from bglab.foreground.onnxrt import open_session

            self._sess = open_session(path, rt, hint="export it with bglab.train.detector.export_onnx")
            meta = self._sess.get_modelmeta().custom_metadata_map
            try:
                self.classes: list[str] = json.loads(meta["bglab.classes"])
                self.size = int(meta["bglab.size"])
            except (KeyError, ValueError):
                raise BackendError("ONNX file lacks bglab metadata (bglab.classes, bglab.size)", path=path,
                                   hint="export it with bglab.train.detector.export_onnx") from None
        else:
            try:
                from bglab.nets.boxnet import load_detector
            except ImportError as exc:
                raise BackendError(f"box-model with a .safetensors file needs torch ({exc})", path=path,
                                   hint="pip install 'bglab[train]', or export the model to ONNX") from None
            self._torch, info = load_detector(path)
            self.classes = list(info["classes"])
            self.size = int(self._torch.size)

    def _run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        x, s = _square_input(image, self.size)
        if self._sess is not None:
            arr = (x.astype(np.float32) / 255.0 - np.array((0.485, 0.456, 0.406), np.float32)) \
                / np.array((0.229, 0.224, 0.225), np.float32)
            box, prob = self._sess.run(None, {"input": np.ascontiguousarray(arr.transpose(2, 0, 1)[None])})
            return box[0], prob[0], s
        from bglab.nets.boxnet import predict

        box, prob = predict(self._torch, x[None])
        return box[0], prob[0], s

    def classify(self, image: np.ndarray) -> tuple[Box, str, float]:
        """(box in the image's pixels, predicted label, its probability)."""
        b, p, s = self._run(image)
        h, w = np.asarray(image).shape[:2]
        box = Box(*(float(v) * self.size / s for v in b)).clamp(w, h)
        k = int(np.argmax(p))
        return box, self.classes[k], float(p[k])

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        box, _, _ = self.classify(image)
        return [box] if box.is_valid else []


class BoxCsvLocator:
    """The boxes an annotation file lists for the image (by ``source`` file name), largest first."""

    name = "box-csv"

    def __init__(self, boxes: str | Path, *, label: str | Sequence[str] | None = None, strict: bool = False) -> None:
        from bglab.data.boxdata import read_boxes

        self.path = Path(boxes).expanduser()
        labels = [label] if isinstance(label, str) else (list(label) if label is not None else None)
        self.labels = set(labels) if labels is not None else None
        self.strict = check_bool("strict", strict, text=True)
        self.index: dict[str, list[Box]] = {}
        self.unusable: list[str] = []  # where a box could not be read (reported by `bglab boxes check`)
        for a in read_boxes(self.path):
            if a.is_marker:
                self.index.setdefault(a.image, [])
                continue
            if a.error or a.box is None:
                self.unusable.append(a.source_line)
                continue
            self.index.setdefault(a.image, [])
            if self.labels is None or a.label in self.labels:
                self.index[a.image].append(a.box)

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        if source is None:
            raise BackendError("box-csv needs the image's file path to look its boxes up",
                               hint="call locate(image, source=path); it only works on images read from files")
        name = Path(source).name
        if name not in self.index:
            if self.strict:
                raise BackendError(f"no boxes listed for {name}", path=self.path,
                                   hint="the annotation file names images by file name; check it lists this one")
            return []
        h, w = np.asarray(image).shape[:2]
        out: list[Box] = []
        for b in self.index[name]:
            try:
                fixed = b.repair(w, h)
            except BoxError:
                continue  # NaN, reversed or wholly outside: dropped, as in test mode
            if fixed.is_valid:
                out.append(fixed)
        out.sort(key=lambda b: -b.area)
        return out


def create_box_model(runtime: Runtime, *, model: str | Path | None = None) -> BoxModelLocator:
    """``box-model``: ``model=RUN/best.safetensors`` (or a run folder, or an exported ``.onnx``)."""
    if model is None:
        raise ConfigError("box-model needs model=<checkpoint>", hint="--option model=RUN/best.safetensors")
    return BoxModelLocator(model, runtime)


def create_box_csv(runtime: Runtime, *, boxes: str | Path | None = None, label: str | Sequence[str] | None = None,
                   strict: bool = False) -> BoxCsvLocator:
    """``box-csv``: ``boxes=annotations.csv`` (or VOC XML / folder, COCO JSON), optional ``label``, ``strict``."""
    if boxes is None:
        raise ConfigError("box-csv needs boxes=<annotation file>", hint="--option boxes=annotations.csv")
    return BoxCsvLocator(boxes, label=label, strict=strict)

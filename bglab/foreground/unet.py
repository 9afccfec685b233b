"""``unet``: bglab's own hand U-Net, shipped in the package as ONNX and run with ONNX Runtime (the default).

The model file ``bglab/models/hand_unet.onnx`` comes with ``hand_unet.json`` (sha256, input size,
normalisation, threshold, training command, scores) and ``MODEL_CARD.md``. The sha256 is checked every time
the backend is created: a corrupt or replaced file raises :class:`bglab.errors.ModelIntegrityError`. A
user-supplied ``model=`` path must come with its JSON too (same name, ``.json``): without it the model is refused,
unless ``unverified=true`` is passed (``-O unverified=true``): then a warning is issued, no checksum is checked and
the settings stored in the ONNX file's metadata are used. ``size`` is bounded by
:data:`bglab.io.limits.MAX_UNET_SIZE` (memory).

Pre-processing (the same as training): scale the image so its long side equals ``size`` (aspect kept, no
padding; the network takes any height / width), RGB / 255, ImageNet mean / std, NCHW float32. The
probability map is resized back to the image size. Edge cases:

- greyscale-like input (H, W) or (H, W, 1) is replicated to 3 channels; RGBA drops alpha;
- tiny images (1x1, 8x8) are upscaled to the model size and the mask scaled back down (short side of the
  network input is at least 16 px, so extreme aspect ratios are stretched a little);
- huge images are downscaled with INTER_AREA; the returned mask is full size (float32, 4 bytes per pixel);
- an image with no hand gives a near-empty mask, not an error.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import BackendError, ModelIntegrityError
from bglab.foreground.base import Segmenter, SegmenterBase
from bglab.foreground.boxprompt import box_prompted
from bglab.foreground.onnxrt import open_session
from bglab.foreground.registry import Runtime
from bglab.io.configfile import check_bool
from bglab.io.files import sha256_file

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "hand_unet.onnx"
EFFNET_MODEL = MODELS_DIR / "hand_unet_effnet.onnx"
# box prompts (``-O locator=NAME``): padding of each box on top of the locator's own (MediaPipe's: 0.1), picked
# among 0.15 / 0.3 / 0.5 on the first half of hands_wild (docs/segmenter-v4.md); auto's hand branch uses it too
BOX_MARGIN = 0.15
_DEFAULTS = {"size": 160, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "threshold": 0.5,
             "multiple": 1}
MIN_SIDE = 16


def verify_model(model: Path, info: dict[str, Any], json_path: Path) -> None:
    """Raise :class:`ModelIntegrityError` unless ``model``'s sha256 equals the one recorded in ``info``."""
    want = str(info.get("sha256", "")).lower()
    if not want:
        raise ModelIntegrityError("model JSON has no sha256 to check the model against", path=json_path,
                                  hint="re-export with `bglab export-seg RUN OUT.onnx`")
    got = sha256_file(model)
    if got != want:
        raise ModelIntegrityError(
            f"model file is corrupt or was replaced: sha256 {got[:16]}... does not match the recorded "
            f"{want[:16]}... in {json_path.name}",
            path=model,
            hint="reinstall bglab to restore the shipped model, or re-export yours with `bglab export-seg` "
                 "(which rewrites the JSON)")


def verified_info(model: Path, *, hint: str) -> dict[str, Any]:
    """The JSON beside an exported model (``MODEL.json``), after the model's sha256 is checked against it;
    :class:`ModelIntegrityError` when it is unreadable or the checksum differs."""
    json_path = model.with_suffix(".json")
    try:
        info = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"model JSON unreadable ({exc})", path=json_path, hint=hint) from None
    verify_model(model, info, json_path)
    return info


def _onnx_metadata(sess: Any) -> dict[str, Any]:
    meta = sess.get_modelmeta().custom_metadata_map or {}
    out: dict[str, Any] = {}
    if "bglab.size" in meta:
        out["size"] = int(meta["bglab.size"])
    for k in ("mean", "std"):
        if f"bglab.{k}" in meta:
            out[k] = json.loads(meta[f"bglab.{k}"])
    if "bglab.threshold" in meta:
        out["threshold"] = float(meta["bglab.threshold"])
    if "bglab.multiple" in meta:
        out["multiple"] = int(meta["bglab.multiple"])
    return out


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept RGB, RGBA, greyscale (H, W) / (H, W, 1) uint8; return C-contiguous RGB uint8 (H, W, 3)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise BackendError(f"unet needs a uint8 image, got {a.dtype} {a.shape}",
                           hint="read images with bglab.io.files (RGB uint8)")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise BackendError(f"unet needs an (H, W, 3) RGB image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def input_shape(h: int, w: int, size: int, multiple: int = 1) -> tuple[int, int]:
    """Network input (height, width): long side = ``size``, aspect kept, short side >= 16 px; with
    ``multiple`` > 1 (the EfficientNet-Lite model: 32) each side is rounded to a multiple of it (at least one)."""
    f = size / max(h, w)
    nh, nw = max(int(round(h * f)), MIN_SIDE), max(int(round(w * f)), MIN_SIDE)
    if multiple > 1:
        nh = max(int(round(nh / multiple)) * multiple, multiple)
        nw = max(int(round(nw / multiple)) * multiple, multiple)
    return nh, nw


class UNetSegmenter(SegmenterBase):
    """bglab's hand U-Net (ONNX Runtime): RGB image -> float32 hand probability (or 0/1 with ``threshold``)."""

    name = "unet"

    def __init__(self, model: str | Path | None = None, runtime: Runtime | None = None, *,
                 size: int | None = None, threshold: float | None = None, batch_size: int = 8,
                 unverified: bool = False, default_model: Path | None = None, name: str = "unet") -> None:
        from bglab.io.limits import MAX_UNET_SIZE

        runtime = runtime or Runtime.from_env()
        self.name = name
        shipped = model is None
        path = Path(model) if model is not None else (default_model or DEFAULT_MODEL)  # looked up at call time
        if not path.is_file():
            raise BackendError("U-Net model file not found", path=path,
                               hint="reinstall bglab (the model ships in bglab/models/)" if shipped
                               else "pass the path of an ONNX file exported with `bglab export-seg`")
        json_path = path.with_suffix(".json")
        info: dict[str, Any] = {}
        if json_path.is_file():
            info = verified_info(path, hint="reinstall bglab or re-export the model")
        elif shipped:
            raise ModelIntegrityError("the shipped model's checksum file is missing", path=json_path,
                                      hint="reinstall bglab")
        elif not unverified:
            raise ModelIntegrityError(f"no {json_path.name} next to the model, so its checksum cannot be verified",
                                      path=path,
                                      hint=f"put the model's {json_path.name} (written by `bglab export-seg`) next "
                                           "to it, or pass -O unverified=true if you trust the file")
        else:
            warnings.warn(f"{path}: no {json_path.name} next to the model, so its checksum is not verified "
                          "(unverified=true); using the settings stored in the ONNX file", stacklevel=2)
        self.session = open_session(path, runtime, hint="re-export it with `bglab export-seg`")
        settings = dict(_DEFAULTS)
        settings.update(_onnx_metadata(self.session))
        inp = info.get("input", {})
        settings.update({k: inp[k] for k in ("size", "mean", "std", "multiple") if k in inp})
        if "threshold" in info:
            settings["threshold"] = info["threshold"]
        self.model_path = path
        self.info = info
        self.size = int(size or settings["size"])
        self.multiple = max(1, int(settings["multiple"]))
        if not MIN_SIDE <= self.size <= MAX_UNET_SIZE:
            raise BackendError(f"size must be in [{MIN_SIDE}, {MAX_UNET_SIZE}], not {self.size}",
                               hint="the network's memory grows with size squared; see bglab.io.limits")
        if self.size % self.multiple:
            raise BackendError(f"size must be a multiple of {self.multiple} for this model, not {self.size}",
                               hint=f"e.g. size={max(self.multiple, round(self.size / self.multiple) * self.multiple)}")
        self.mean = np.asarray(settings["mean"], np.float32)
        self.std = np.asarray(settings["std"], np.float32)
        self.threshold = threshold  # None: soft probabilities
        self.recommended_threshold = float(settings["threshold"])
        self.batch_size = max(1, int(batch_size))
        self.input_name = self.session.get_inputs()[0].name

    # -- pre / post processing -------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 -> float32 (3, h, w) at the network size, normalised."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        nh, nw = input_shape(h, w, self.size, self.multiple)
        interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else rgb
        x = small.astype(np.float32) * (1.0 / 255.0)
        x -= self.mean
        x /= self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def postprocess(self, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        p = prob if prob.shape == (h, w) else cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        p = np.clip(p, 0.0, 1.0).astype(np.float32, copy=False)
        if self.threshold is not None:
            p = (p >= self.threshold).astype(np.float32)
        return np.ascontiguousarray(p)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw network call: float32 (N, 3, h, w) -> probabilities (N, h, w)."""
        return self.session.run(None, {self.input_name: batch})[0][:, 0]

    # -- protocol ---------------------------------------------------------------------------------------
    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray], *,
                      sources: Sequence[Path | None] | None = None) -> list[np.ndarray]:
        """Images with the same network input shape run as one batch (up to ``batch_size``)."""
        xs = [self.preprocess(im) for im in images]
        shapes = [np.asarray(im).shape[:2] for im in images]
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(x.shape, []).append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.batch_size):
                part = idx[k:k + self.batch_size]
                probs = self.run(np.stack([xs[i] for i in part]))
                for i, p in zip(part, probs, strict=True):
                    out[i] = self.postprocess(p, shapes[i])
        return out  # type: ignore[return-value]


def create(runtime: Runtime | None = None, *, model: str | None = None, size: int | None = None,
           threshold: float | None = None, batch_size: int = 8, unverified: bool = False,
           locator: str | None = None, box_margin: float = BOX_MARGIN, no_box: str = "empty",
           **locator_options: Any) -> Segmenter:
    """Factory for the registry: the shipped model unless ``model=`` names another exported ONNX file; with
    ``locator=NAME`` it runs on that locator's padded boxes (:mod:`bglab.foreground.boxprompt`)."""
    trust = check_bool("unverified", unverified, text=True)
    return box_prompted("unet", lambda: UNetSegmenter(model, runtime, size=size, threshold=threshold,
                                                      batch_size=batch_size, unverified=trust),
                        create, runtime, locator, box_margin=box_margin, no_box=no_box, **locator_options)


def create_effnet(runtime: Runtime | None = None, *, model: str | None = None, size: int | None = None,
                  threshold: float | None = None, batch_size: int = 8, locator: str | None = None,
                  box_margin: float = BOX_MARGIN, no_box: str = "empty", **locator_options: Any) -> Segmenter:
    """Factory for ``unet-effnet``: the shipped v4 model (pretrained EfficientNet-Lite0 encoder + U-Net
    decoder, ``hand_unet_effnet.onnx``), same code path and checks as ``unet``; input sides multiples of 32.
    ``locator=mediapipe-hands no_box=full`` runs it on MediaPipe's hand boxes (real scenes: docs/segmenter-v4.md)."""
    return box_prompted("unet-effnet", lambda: UNetSegmenter(model, runtime, size=size, threshold=threshold,
                                                             batch_size=batch_size, default_model=EFFNET_MODEL,
                                                             name="unet-effnet"),
                        create_effnet, runtime, locator, box_margin=box_margin, no_box=no_box, **locator_options)

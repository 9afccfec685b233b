"""``rembg``: rembg's salient-object models (U^2-Net family), strictly offline.

Two ways in:

- :class:`U2NetOnnx` runs a U^2-Net style ONNX file directly with ONNX Runtime, using rembg's own pre- and
  post-processing (resize to 320x320, divide by the max, ImageNet mean/std, first output, min-max normalise,
  resize back). It needs neither rembg nor a network; the bench uses it directly, and ``create`` uses it when
  given ``model_path=``.
- Without ``model_path``, ``create`` opens a rembg session, but only when ``$U2NET_HOME/<model>.onnx``
  (default ``~/.u2net``) is already there: this backend never downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from bglab.errors import BackendError
from bglab.foreground.base import SegmenterBase, rgb_input
from bglab.foreground.onnxrt import open_session, session_providers
from bglab.foreground.registry import Runtime
from bglab.io.configfile import check_bool

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class U2NetOnnx(SegmenterBase):
    """A U^2-Net style ONNX model (u2net, u2netp, silueta, ...) run with ONNX Runtime; no rembg needed.

    ``size``: the square network input (ignored when the file fixes it). ``flip``: also run the mirrored image
    and average the two probability maps. ``normalize``: ``"minmax"`` stretches each map to [0, 1] as rembg
    does (an image with no object still gets a "foreground"); ``"none"`` keeps the network's own sigmoid output.
    """

    name = "u2net-onnx"

    def __init__(self, path: str | Path, runtime: Runtime | None = None, *, size: int = 320, flip: bool = False,
                 normalize: str = "minmax") -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise BackendError(
                "ONNX model file not found", path=self.path, hint="pass model_path= pointing at e.g. u2netp.onnx"
            )
        if normalize not in ("minmax", "none"):
            raise BackendError(f"normalize must be 'minmax' or 'none', not {normalize!r}")
        self.session = open_session(
            self.path, runtime, hint="is it a complete U^2-Net ONNX file? compare its checksum with the published one")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        fixed = [d for d in inp.shape[2:4] if isinstance(d, int)]
        self.size = int(fixed[0]) if len(fixed) == 2 and fixed[0] == fixed[1] else int(size)
        if self.size < 32:
            raise BackendError(f"size must be >= 32, not {self.size}")
        self.flip = check_bool("flip", flip, text=True)
        self.normalize = normalize

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """rembg's input: LANCZOS resize to size x size, divide by the max, ImageNet normalise, NCHW float32."""
        img = Image.fromarray(rgb_input(image, self.name)).resize((self.size, self.size), Image.LANCZOS)
        a = np.asarray(img, dtype=np.float32)
        a = a / max(float(a.max()), 1e-6)
        a = (a - _MEAN) / _STD
        return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)

    def probability(self, image: np.ndarray) -> np.ndarray:
        """The network's map at its own resolution (size x size), flip-averaged and normalised as configured."""
        x = self.preprocess(image)
        pred = self._run(x)
        if self.flip:  # one run each: u2netp's file fixes the batch size at 1
            pred = 0.5 * (pred + self._run(np.ascontiguousarray(x[..., ::-1]))[:, ::-1])
        if self.normalize == "minmax":
            lo, hi = float(pred.min()), float(pred.max())
            pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        return np.ascontiguousarray(pred, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)
        return out.reshape(out.shape[-2], out.shape[-1])

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        h, w = np.asarray(image).shape[:2]
        mask = cv2.resize(self.probability(image), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)


class RembgSession(SegmenterBase):
    """A rembg session (any model rembg knows) whose model file is already on disk."""

    name = "rembg"

    def __init__(self, session: Any, model: str) -> None:
        self.session = session
        self.model = model

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = Image.fromarray(rgb_input(image, "rembg"))
        masks = self.session.predict(img)
        if not masks:
            return np.zeros(img.size[::-1], np.float32)
        m = np.asarray(masks[0].convert("L"), dtype=np.float32) / 255.0
        if m.shape != img.size[::-1]:
            m = cv2.resize(m, img.size, interpolation=cv2.INTER_LINEAR)
        return np.clip(m, 0.0, 1.0)


def u2net_home() -> Path:
    """Where rembg looks for model files: ``$U2NET_HOME`` or ``~/.u2net``."""
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()


def create(
    runtime: Runtime, *, model: str = "u2netp", model_path: str | Path | None = None
) -> U2NetOnnx | RembgSession:
    """``model_path``: run that ONNX file directly. Otherwise rembg's ``model``, only if already downloaded."""
    if model_path is not None:
        return U2NetOnnx(model_path, runtime)
    home = u2net_home()
    file = home / f"{model}.onnx"
    if not file.is_file():
        raise BackendError(
            f"model {model} not found offline; put {model}.onnx in $U2NET_HOME ({home}) or pass model_path=",
            hint="bglab never downloads models",
        )
    try:
        from rembg import new_session
    except Exception as exc:  # noqa: BLE001
        raise BackendError(
            f"rembg is not available ({type(exc).__name__}: {exc})",
            hint="pip install 'bglab[rembg]', or pass model_path= to run the ONNX file without rembg",
        ) from None
    try:
        try:
            session = new_session(model, providers=session_providers(runtime))
        except TypeError:  # older rembg without ``providers``
            session = new_session(model)
    except Exception as exc:  # noqa: BLE001 - rembg may try (and fail) to fetch a file whose checksum differs
        raise BackendError(
            f"rembg could not open model {model} ({type(exc).__name__}: {exc})",
            path=file,
            hint="check the file's md5 against rembg's, or pass model_path= to run it directly",
        ) from None
    return RembgSession(session, model)

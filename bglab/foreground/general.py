"""``u2netp``: a general-object (salient-object) segmenter that works offline: pets, products, people, cars...

The model is U^2-Net-p (Qin et al. 2020, Apache-2.0; 4.6 MB ONNX, the file rembg calls ``u2netp``), installed
at set-up time by ``python -m bglab.foreground.fetch_models`` (``make demo`` / ``make test`` run it) into
``bglab/models/u2netp.onnx``; see ``bglab/models/U2NETP_CARD.md``. At run time nothing is downloaded; the
file is looked up, in order, at ``model_path=`` (an option), ``bglab/models/u2netp.onnx``, then
``$U2NET_HOME/u2netp.onnx`` (rembg's folder, default ``~/.u2net``). Its sha256 is checked every time the
backend is created: a missing or corrupt file is a :class:`~bglab.errors.BackendError` /
:class:`~bglab.errors.ModelIntegrityError` naming the file and the command that installs it.
(``verify=false`` runs another U^2-Net file given as ``model_path=``, unchecked.)

The network runs with :class:`bglab.foreground.rembg_backend.U2NetOnnx` (rembg's pre-processing: 320 x 320,
ImageNet normalisation). bglab's defaults differ from rembg in the post-processing, chosen on the even-numbered
half of pets3 and reported on all of it (``bench/tune_u2netp.py``, ``docs/segmenters.md``):

- ``flip``: average the image's and its mirror's maps (twice the compute);
- ``normalize="none"``: keep the network's sigmoid instead of stretching each map to [0, 1], so a photo with
  nothing salient (a blank wall) gives an empty mask instead of amplified noise;
- ``threshold``: the decision point; the soft mask is remapped piecewise-linearly so that this value lands on
  0.5 (cut-outs keep soft edges, and everything downstream thresholds at 0.5);
- ``guided``: snap the map's edges to the photo's with a guided filter (:func:`bglab.ops.guided_filter`;
  radius in pixels of the 320-px network grid, so it scales with the photo; 0 = off) of strength ``guided_eps``:
  the network's map is 320 x 320, blurry once stretched onto a large photo, and fur, ears and legs follow
  the image's edges instead;
- ``keep``: keep connected components of at least this fraction of the largest one's area (1.0 = the largest
  only, 0 = all); ``fill_holes``: fill holes inside the kept objects.

Box prompts: with ``locator=NAME`` (any registered locator; its options pass through, e.g.
``locator=box-csv boxes=ann.csv``) the model runs on each box's crop, padded by ``box_margin`` of the box's
size on each side, and the crops' masks are pasted into an otherwise empty mask (no box -> empty mask, or the
whole image with ``no_box=full``): :mod:`bglab.foreground.boxprompt`, shared with the hand U-Nets. This turns a
detector's / an annotation's / MediaPipe's boxes into object masks; ``grabcut locator=NAME`` is the
model-free alternative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import BackendError, ConfigError, ModelIntegrityError
from bglab.foreground.base import Segmenter, SegmenterBase, rgb_input
from bglab.foreground.boxprompt import box_prompted
from bglab.foreground.fetch_models import INSTALL_COMMAND, MODELS_DIR, U2NETP_FILE, U2NETP_SHA256, sha256_path
from bglab.foreground.registry import Runtime
from bglab.foreground.rembg_backend import U2NetOnnx, u2net_home
from bglab.io.configfile import check_bool
from bglab.ops.mask import guided_filter

# Chosen on 151 images of the pets3 tuning half (even image numbers) by bench/tune_u2netp.py: flip, raw sigmoid,
# threshold and holes (IoU 0.792 there, rembg's settings 0.749); then --refine: edge snapping (radius 4 of the
# 320 grid, eps 0.1) with threshold 0.2: IoU 0.822, and 0.867 with pets3's boundary band ignored (0.866 before),
# the rule being "not worse where the truth is certain" (a growing mask alone scores higher on pets3's masks,
# which count that band as pet). keep=0.1 so that several objects survive.
DEFAULTS: dict[str, Any] = {"size": 320, "flip": True, "normalize": "none", "threshold": 0.2, "keep": 0.1,
                            "fill_holes": True, "guided": 4.0, "guided_eps": 0.1}


def model_candidates() -> list[Path]:
    """Where the backend looks for ``u2netp.onnx`` when no ``model_path`` is given, in order."""
    return [MODELS_DIR / U2NETP_FILE, u2net_home() / U2NETP_FILE]


def find_model(model_path: str | Path | None = None) -> Path:
    """The model file to use: ``model_path`` if given (it must exist), else the first installed candidate."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise BackendError("u2netp model file not found", path=path,
                               hint=f"check the path, or leave model_path out after running `{INSTALL_COMMAND}`")
        return path
    for cand in model_candidates():
        if cand.is_file():
            return cand
    where = " or ".join(str(c) for c in model_candidates())
    raise BackendError(f"the general model {U2NETP_FILE} is not installed (looked in {where})",
                       path=model_candidates()[0],
                       hint=f"run `{INSTALL_COMMAND}` once (set-up step; `make demo` / `make test` run it), "
                            "or pass -O model_path=FILE")


def verify_model(path: Path) -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` is the published u2netp file (sha256)."""
    got = sha256_path(path)
    if got != U2NETP_SHA256:
        raise ModelIntegrityError(
            f"model file is corrupt or not u2netp: sha256 {got[:16]}... is not the recorded {U2NETP_SHA256[:16]}...",
            path=path,
            hint=f"reinstall it with `{INSTALL_COMMAND} --force`" + (
                "" if path.parent == MODELS_DIR else "; for another U^2-Net file pass verify=false"))


def remap(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Piecewise-linear map of [0, 1] onto itself sending ``threshold`` to 0.5 (0 -> 0, 1 -> 1)."""
    t = float(threshold)
    if t == 0.5:
        return prob
    low = prob * (0.5 / t)
    high = 0.5 + (prob - t) * (0.5 / (1.0 - t))
    return np.where(prob < t, low, high).astype(np.float32)


def clean_mask(prob: np.ndarray, *, threshold: float = 0.5, keep: float = 0.0, fill_holes: bool = False
               ) -> np.ndarray:
    """Soft mask whose 0.5 level is ``prob > threshold`` after dropping small components and filling holes."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
    if not 0.0 <= keep <= 1.0:
        raise ConfigError(f"keep must be in [0, 1] (fraction of the largest component), got {keep!r}")
    soft = remap(np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False), threshold)
    if keep <= 0.0 and not fill_holes:
        return np.ascontiguousarray(soft, dtype=np.float32)
    fg = soft > 0.5
    final = fg
    if keep > 0.0 and fg.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        good = np.zeros(n, bool)
        good[1:] = areas >= keep * areas.max()
        final = good[labels]
    if fill_holes and final.any():
        inv = (~final).astype(np.uint8)
        n, labels = cv2.connectedComponents(inv, connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        hole = np.ones(n, bool)
        hole[border] = False
        hole[0] = False
        final = final | hole[labels]
    out = soft.copy()
    out[final & ~fg] = 1.0
    out[fg & ~final] = 0.0
    return np.ascontiguousarray(out, dtype=np.float32)


class GeneralSegmenter(SegmenterBase):
    """u2netp with bglab's post-processing (box prompts: :mod:`bglab.foreground.boxprompt`)."""

    name = "u2netp"

    def __init__(self, net: U2NetOnnx, *, threshold: float = 0.5, keep: float = 0.0, fill_holes: bool = False,
                 guided: float = 0.0, guided_eps: float = 0.1) -> None:
        clean_mask(np.zeros((2, 2), np.float32), threshold=threshold, keep=keep)  # validate early
        if not (np.isfinite(guided) and guided >= 0 and np.isfinite(guided_eps) and guided_eps > 0):
            raise ConfigError(f"u2netp: guided must be >= 0 and guided_eps > 0, got {guided!r}, {guided_eps!r}",
                              hint="guided=0 turns the edge snapping off")
        self.net = net
        self.threshold = float(threshold)
        self.keep = float(keep)
        self.fill_holes = bool(fill_holes)
        self.guided, self.guided_eps = float(guided), float(guided_eps)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        rgb = rgb_input(image, self.name)
        return postprocess(rgb, self.net.predict(rgb), size=self.net.size, guided=self.guided,
                           guided_eps=self.guided_eps, threshold=self.threshold, keep=self.keep,
                           fill_holes=self.fill_holes)


def postprocess(image: np.ndarray, prob: np.ndarray, *, size: int, guided: float, guided_eps: float,
                threshold: float, keep: float, fill_holes: bool) -> np.ndarray:
    """The map at the photo's size -> bglab's mask: edges snapped to the photo's (``guided`` radius in pixels
    of the ``size``-px network grid), then :func:`clean_mask` (also what ``bench/tune_u2netp.py`` scores)."""
    if guided > 0:
        radius = max(1, round(guided * max(prob.shape[:2]) / size))
        prob = guided_filter(image, prob, radius, guided_eps)
    return clean_mask(prob, threshold=threshold, keep=keep, fill_holes=fill_holes)


def create(runtime: Runtime, *, model_path: str | Path | None = None, verify: bool = True,
           size: int = DEFAULTS["size"], flip: bool = DEFAULTS["flip"], normalize: str = DEFAULTS["normalize"],
           threshold: float = DEFAULTS["threshold"], keep: float = DEFAULTS["keep"],
           fill_holes: bool = DEFAULTS["fill_holes"], guided: float = DEFAULTS["guided"],
           guided_eps: float = DEFAULTS["guided_eps"], locator: str | None = None, box_margin: float = 0.1,
           no_box: str = "empty", **locator_options: Any) -> Segmenter:
    """The ``u2netp`` backend: the installed (or given) model, checked, with bglab's defaults."""
    if locator_options and locator is None:
        unknown = ", ".join(sorted(locator_options))
        raise ConfigError(f"unknown u2netp options: {unknown}",
                          hint="options: model_path, verify, size, flip, normalize, threshold, keep, fill_holes, "
                               "guided, guided_eps, "
                               "locator (+ its options), box_margin, no_box")
    mirror, holes = check_bool("flip", flip, text=True), check_bool("fill_holes", fill_holes, text=True)
    path = find_model(model_path)
    if verify or model_path is None:
        verify_model(path)

    def make() -> GeneralSegmenter:
        net = U2NetOnnx(path, runtime, size=int(size), flip=mirror, normalize=str(normalize))
        return GeneralSegmenter(net, threshold=float(threshold), keep=float(keep), fill_holes=holes,
                                guided=float(guided), guided_eps=float(guided_eps))

    return box_prompted("u2netp", make, create, runtime, locator, box_margin=float(box_margin), no_box=str(no_box),
                        **locator_options)



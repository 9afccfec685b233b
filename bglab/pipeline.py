"""Preprocessing pipelines: an ordered list of named steps applied to one image (or a batch) in memory.

One :class:`Pipeline` object serves the CLI (``bglab preprocess``), the Python API and
:class:`bglab.torchdata.PipelineDataset`. It is pure of file I/O except for the backend sessions it opens
(and a ``swap`` background image, read once). Steps, in any order the data allow:

``locate``      a box from any locator backend (``mediapipe-hands``, ``mask-box``, ``full``, ...), optional
                ``fallback`` locators tried in turn, ``margin`` (fraction per side) and ``on_missing``:
                ``keep`` (go on without a box), ``skip`` (stop: no output) or ``mask-box`` (use the box of
                the pipeline's ``segment`` mask). ``backend: mask-box`` without options means the box of
                the pipeline's own segment mask (computed once and reused by the segment step).
``segment``     a soft mask from any segmenter backend, refined (largest region, holes filled) as in
                ``bglab remove``; ``input: auto|current|original`` (``auto`` = ``original`` for
                ``mask-files``, whose masks match the file, else the current, possibly cropped, image).
                A mask already made for a ``mask-box`` box is reused (cropped / resized along).
                Every mask goes through QC (:mod:`bglab.ops.qc`; ``qc:`` rule overrides, ``qc: false`` off):
                no foreground gives status ``not-found``, a broken rule ``suspect`` and then
                ``on_suspect``: ``keep`` (default; output made), ``skip`` (no output) or ``fail``.
``background``  ``remove`` (colour fill, or RGBA cut-out with ``alpha: true``), ``colour``, ``blur``,
                ``swap`` (``image:`` a file or a folder, picked per sample by seed) or ``keep``; the
                compositing is :func:`bglab.remove.apply_mode`, the same code as ``bglab remove``.
                ``on_empty: keep`` leaves the image unchanged when the mask found nothing (a segmenter
                that missed the object would otherwise blank the whole image); default ``apply``.
``crop``        ``to: auto|box|mask`` (auto: the located box, else the mask's box), ``margin``, ``square``;
                with nothing to crop to, the image is kept whole.
``pose``        replaces the image by a drawing of the hand's pose (:func:`bglab.ops.draw_pose`: the bones
                between a landmarker's 21 points, white on black, ``size`` pixels square), ``align``-ed
                (wrist to middle knuckle up, mirror fixed) by default: background, appearance and in-plane
                viewpoint removed, only the shape of the pose kept. ``backend`` is a locator with landmarks
                (``mediapipe-hands``); ``on_missing``: ``blank`` (a black image, default), ``keep`` or ``skip``.
                ``with_photo: true`` gives both views in one RGB image: the grey photo (letterboxed), the
                drawing (black without a hand) and an empty channel (use 3 input channels, no grey step).
                Only ``resize``, ``grey`` and ``distort`` may follow it.
``resize``      ``size`` (int or [w, h]) keeping the aspect ratio, padded with ``pad_color``.
``grey``        luma; ``keep_channels: true`` keeps three channels.
``distort``     ``dropout`` probability and / or Gaussian ``noise`` sigma, with a per-sample seed derived
                from (pipeline ``seed``, sample ``key``, step index): identical on every engine and worker.

Masks and boxes follow the image through ``crop`` and ``resize``; the box reported in results is always in
the input image's pixels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bglab import ops
from bglab.boxes import Box
from bglab.configfile import check_bool, check_number, config_error, read_config_file
from bglab.errors import BackendError, BglabError, ConfigError
from bglab.errors import short_repr as _r
from bglab.limits import MAX_OUTPUT_SIDE, MAX_SEED
from bglab.colors import parse_color
from bglab.seeds import sample_seed
from bglab.segment.registry import DEFAULT_SEGMENTER, resolve

__all__ = [
    "BACKGROUND_MODES", "CONFIG_VERSION", "ON_MISSING", "STATUSES", "STEP_NAMES", "Pipeline", "StepResult",
    "load_config", "sample_seed",
]

CONFIG_VERSION = 1
STEP_NAMES: tuple[str, ...] = ("locate", "segment", "background", "crop", "pose", "resize", "grey", "distort")
ON_MISSING: tuple[str, ...] = ("keep", "skip", "mask-box")
BACKGROUND_MODES: tuple[str, ...] = ("remove", "colour", "blur", "swap", "keep")
CROP_TARGETS: tuple[str, ...] = ("auto", "box", "mask")
SEGMENT_INPUTS: tuple[str, ...] = ("auto", "current", "original")
FORMATS: tuple[str, ...] = ("png", "webp", "jpg")
STATUSES: tuple[str, ...] = ("done", "suspect", "not-found", "skipped", "failed")
_TOP_KEYS = ("version", "seed", "steps", "output")


# ------------------------------------------------------------------------------------------ validation


_fail = config_error


def _check_keys(where: str, cfg: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for k in cfg:
        if k not in allowed:
            raise _fail(where, f"unknown key {_r(k)}", f"allowed keys: {', '.join(allowed)}")


def _choice(where: str, key: str, value: Any, allowed: Sequence[str]) -> str:
    v = str(value).strip().lower()
    if v == "color":  # American spelling accepted everywhere
        v = "colour"
    if v not in allowed:
        raise _fail(f"{where}.{key}", f"{_r(value)} is not allowed", f"choose one of: {', '.join(allowed)}")
    return v


def _number(where: str, key: str, value: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False) -> Any:
    return check_number(f"{where}.{key}", value, lo=lo, hi=hi, integer=integer, text=True)


def _bool(where: str, key: str, value: Any) -> bool:
    return check_bool(f"{where}.{key}", value, text=True)


def _colour(where: str, key: str, value: Any) -> tuple[int, int, int]:
    if isinstance(value, str):
        try:
            return parse_color(value)
        except ConfigError as exc:
            raise _fail(f"{where}.{key}", exc.message, exc.hint) from None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return (value, value, value)
    if isinstance(value, Sequence) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise _fail(f"{where}.{key}", f"cannot read colour {_r(value)}",
                "use [r, g, b] (0-255), one grey level, #rrggbb or a name like black")


def _options(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(f"{where}.options", f"expected a mapping of backend options, got {_r(value)}")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _backend_name(where: str, value: Any, kind: str) -> str:
    """A registered backend of ``kind`` (:func:`bglab.segment.resolve`), the error naming the config key."""
    from bglab.segment import backends, resolve

    name = str(value).strip()
    try:
        return resolve(name, kind).name  # type: ignore[arg-type]
    except BackendError:
        names = [b.name for b in backends(kind)]  # type: ignore[arg-type]
        raise _fail(f"{where}.backend", f"unknown {kind} {_r(name)}", f"choose one of: {', '.join(names)}") from None


# --------------------------------------------------------------------------------------- sample state


@dataclass
class _State:
    """One sample going through the steps (image, and the mask / box in the current image's pixels)."""

    image: np.ndarray
    original: np.ndarray
    source: Path | None
    key: str
    box: Box | None = None
    box_source: str = ""
    found: bool | None = None
    mask: np.ndarray | None = None
    coverage: float | None = None
    geometry: list[tuple[str, Any]] = field(default_factory=list)  # ("crop", Box) | ("resize", PadTransform)
    status: str = "done"
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    qc: str = ""  # reasons of the mask QC (bglab.ops.qc), '' when it passed

    @property
    def active(self) -> bool:
        return self.status in ("done", "suspect", "not-found")

    def to_original(self, box: Box) -> Box:
        for kind, g in reversed(self.geometry):
            box = box.translate(g.x0, g.y0) if kind == "crop" else g.box_to_input(box)
        return box

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask of the original image mapped through the crops / resizes done so far."""
        for kind, g in self.geometry:
            if kind == "crop":
                mask = mask[int(g.y0):int(g.y1), int(g.x0):int(g.x1)]
            else:
                mask = ops.resize_mask_pad(mask, (g.out_width, g.out_height))[0]
        return np.ascontiguousarray(mask)


@dataclass
class StepResult:
    """What the pipeline made of one image.

    ``status``: ``done`` (located, or no locate step), ``not-found`` (no box found; output still made as
    ``on_missing`` says), ``skipped`` (no box and ``on_missing: skip``: ``image`` is None) or ``failed``
    (``error`` says why; only from :meth:`Pipeline.run_batch`). ``box`` is in the input image's pixels;
    ``found`` is None without a locate step; ``coverage`` is the mask's foreground fraction on the image
    it was computed on; ``timings`` are seconds per step label (see :attr:`Pipeline.step_labels`).
    """

    image: np.ndarray | None
    status: str
    box: Box | None = None
    box_source: str = ""
    found: bool | None = None
    coverage: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    mask: np.ndarray | None = None
    qc: str = ""  # mask QC reasons (status suspect, or not-found: no foreground)


# ---------------------------------------------------------------------------------------------- steps


class Step:
    """Base of every step: parsed from a config mapping, written back by :meth:`to_config`."""

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    batched: ClassVar[bool] = False

    def to_config(self) -> dict[str, Any]:  # pragma: no cover - every step overrides
        raise NotImplementedError

    def open(self, pipe: Pipeline, runtime: Any) -> None:
        """Create backend sessions (called once per process, lazily)."""

    def close(self) -> None:
        """Drop backend sessions."""

    def run_one(self, s: _State, pipe: Pipeline) -> None:  # pragma: no cover - every step overrides
        raise NotImplementedError

    def run_batch(self, states: list[_State], pipe: Pipeline) -> None:
        for s in states:
            self.run_one(s, pipe)


class SegmentStep(Step):
    name = "segment"
    keys = ("backend", "options", "threshold", "refine", "feather", "input", "qc", "on_suspect")
    batched = True

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.backend = _backend_name(where, cfg.get("backend", DEFAULT_SEGMENTER), "segmenter")
        self.options = _options(where, cfg.get("options"))
        self.threshold = _number(where, "threshold", cfg.get("threshold", 0.5), lo=0, hi=1)
        self.refine = _bool(where, "refine", cfg.get("refine", True))
        self.feather = _number(where, "feather", cfg.get("feather", 0.0), lo=0)
        self.input = _choice(where, "input", cfg.get("input", "auto"), SEGMENT_INPUTS)
        self.qc_options, self.qc_rules, self.on_suspect = _qc_config(where, cfg)
        self.segmenter: Any = None

    def to_config(self) -> dict[str, Any]:
        out = {"backend": self.backend, "options": dict(self.options), "threshold": self.threshold,
               "refine": self.refine, "feather": self.feather, "input": self.input}
        if self.qc_options is not True:  # written only when set, so earlier resolved configs stay equal
            out["qc"] = self.qc_options
        if self.on_suspect != "keep":
            out["on_suspect"] = self.on_suspect
        return out

    def open(self, pipe: Pipeline, runtime: Any) -> None:
        self.segmenter = _create(self.backend, "segmenter", runtime, self.options)

    def close(self) -> None:
        _close(self.segmenter)
        self.segmenter = None

    @property
    def use_original(self) -> bool:
        # a backend that reads the file's own mask by path gets the original file, not a crop of it
        return self.input == "original" or (self.input == "auto" and resolve(self.backend).reads_files)

    def ensure_masks(self, states: list[_State]) -> None:
        """Give every state without a mask this step's refined mask (one batched backend call)."""
        from bglab.remove import RemoveOptions, prepare_mask

        todo = [s for s in states if s.mask is None]
        if not todo:
            return
        orig = self.use_original
        images = [s.original if orig else s.image for s in todo]
        raw = self.segmenter.predict_batch(images, sources=[s.source for s in todo])
        opts = RemoveOptions(threshold=self.threshold, refine=self.refine, feather=self.feather)
        for s, m, img in zip(todo, raw, images, strict=True):
            mask = prepare_mask(m, opts)
            s.coverage = float(ops.coverage(mask, self.threshold))
            s.mask = s.map_mask(mask) if orig else mask
            if self.qc_rules is not None:
                _apply_qc(s, mask, img, self)

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        self.ensure_masks([s])

    def run_batch(self, states: list[_State], pipe: Pipeline) -> None:
        self.ensure_masks(states)


def _qc_config(where: str, cfg: Mapping[str, Any]) -> tuple[Any, Any, str]:
    """The segment step's ``qc`` (True, False or rule overrides) and ``on_suspect``, checked."""
    from bglab.qc import check_on_suspect, rules_from

    raw = cfg.get("qc", True)
    try:
        if isinstance(raw, bool):
            rules = rules_from() if raw else None
        elif isinstance(raw, Mapping):
            rules, raw = rules_from(raw), {str(k).replace("-", "_"): v for k, v in raw.items()}
        else:
            raise _fail(f"{where}.qc", f"expected true, false or a mapping of QC rules, got {raw!r}")
        policy = check_on_suspect(cfg.get("on_suspect", "keep"))
    except ConfigError as exc:
        if exc.message.startswith(where):
            raise
        raise _fail(where, exc.message, exc.hint) from None
    return raw, rules, policy


def _apply_qc(s: _State, mask: np.ndarray, image: np.ndarray, step: SegmentStep) -> None:
    """Mask QC of one sample: not-found (no foreground) or suspect, and the step's ``on_suspect`` policy."""
    from bglab.qc import check_mask, uses_screen

    chk = check_mask(mask, step.qc_rules, image=image, screen=uses_screen(step.backend))
    if chk.status == "not-found":
        s.qc = "no foreground found"
        if s.status == "done":
            s.status = "not-found"
        return
    if chk.status != "suspect":
        return
    s.qc = chk.reason
    if step.on_suspect == "skip":
        s.status = "skipped"
    elif step.on_suspect == "fail":
        s.status, s.error = "failed", f"suspect mask ({chk.reason}); on_suspect: fail"
    elif s.status == "done":
        s.status = "suspect"


class LocateStep(Step):
    name = "locate"
    keys = ("backend", "options", "fallback", "margin", "on_missing", "threshold")
    batched = True

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.backend = _backend_name(where, cfg.get("backend", "mediapipe-hands"), "locator")
        self.options = _options(where, cfg.get("options"))
        fb = cfg.get("fallback") or []
        if isinstance(fb, str | Mapping):
            fb = [fb]
        self.fallback: list[tuple[str, dict[str, Any]]] = []
        for i, f in enumerate(fb):
            w = f"{where}.fallback[{i}]"
            if isinstance(f, Mapping):
                _check_keys(w, f, ("backend", "options"))
                self.fallback.append((_backend_name(w, f.get("backend"), "locator"), _options(w, f.get("options"))))
            else:
                self.fallback.append((_backend_name(w, f, "locator"), {}))
        self.margin = _number(where, "margin", cfg.get("margin", 0.0), lo=0)
        self.on_missing = _choice(where, "on_missing", cfg.get("on_missing", "keep"), ON_MISSING)
        self.threshold = _number(where, "threshold", cfg.get("threshold", 0.5), lo=0, hi=1)
        self.locators: list[Any] = []

    def to_config(self) -> dict[str, Any]:
        return {"backend": self.backend, "options": dict(self.options),
                "fallback": [{"backend": b, "options": dict(o)} for b, o in self.fallback],
                "margin": self.margin, "on_missing": self.on_missing, "threshold": self.threshold}

    def _specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.backend, self.options), *self.fallback]

    def uses_segment_mask(self) -> bool:
        """Whether this step needs the pipeline's segment step (own-mask box or mask-box fallback)."""
        return self.on_missing == "mask-box" or any(b == "mask-box" and not o for b, o in self._specs())

    def open(self, pipe: Pipeline, runtime: Any) -> None:
        # None stands for "box of the pipeline's own segment mask"
        self.locators = [None if (b == "mask-box" and not o) else _create(b, "locator", runtime, o)
                         for b, o in self._specs()]

    def close(self) -> None:
        for loc in self.locators:
            _close(loc)
        self.locators = []

    def _mask_box(self, s: _State) -> Box | None:
        if s.mask is None:
            return None
        return Box.from_mask(s.mask, self.threshold)

    def _finish(self, s: _State, box: Box | None, source: str, found: bool) -> None:
        h, w = s.image.shape[:2]
        if box is not None and self.margin > 0:
            box = box.pad(self.margin, relative=True)
        if box is not None:
            box = box.clamp(w, h)
            if not box.is_valid:
                box = None
        s.box, s.box_source, s.found = box, (source if box is not None else ""), found and box is not None

    def run_batch(self, states: list[_State], pipe: Pipeline) -> None:
        pending = list(states)
        for (name, _), loc in zip(self._specs(), self.locators, strict=True):
            if not pending:
                break
            missed: list[_State] = []
            if loc is None:
                pipe.segment_step.ensure_masks(pending)
                for s in pending:
                    box = self._mask_box(s)
                    (missed.append(s) if box is None else self._finish(s, box, name, True))
            else:
                for s in pending:
                    boxes = [b for b in loc.locate(s.image, source=s.source) if b.is_valid]
                    (missed.append(s) if not boxes else self._finish(s, boxes[0], name, True))
            pending = [s for s in missed if s.box is None]
        for s in pending:
            s.found, s.box, s.box_source = False, None, ""
        if self.on_missing == "skip":
            for s in pending:
                s.status = "skipped"
            return
        for s in pending:
            s.status = "not-found"
        if self.on_missing == "mask-box" and pending:
            pipe.segment_step.ensure_masks(pending)
            for s in pending:
                self._finish(s, self._mask_box(s), "mask-box", False)

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        self.run_batch([s], pipe)


class BackgroundStep(Step):
    name = "background"
    keys = ("mode", "color", "colour", "blur", "alpha", "image", "fit", "on_empty")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.mode = _choice(where, "mode", cfg.get("mode", "remove"), BACKGROUND_MODES)
        col = cfg.get("colour", cfg.get("color", "black" if self.mode == "remove" else "white"))
        self.color = _colour(where, "color", col)
        self.blur = _number(where, "blur", cfg.get("blur", 15.0), lo=0)
        self.alpha = _bool(where, "alpha", cfg.get("alpha", False))
        self.fit = _choice(where, "fit", cfg.get("fit", "cover"), ("cover", "stretch", "tile"))
        self.on_empty = _choice(where, "on_empty", cfg.get("on_empty", "apply"), ("apply", "keep"))
        img = cfg.get("image")
        self.image = None if img in (None, "") else str(img)
        if self.mode == "swap" and self.image is None:
            raise _fail(where, "mode 'swap' needs image: a background file or a folder of them")
        if self.alpha and self.mode != "remove":
            raise _fail(f"{where}.alpha", "alpha output only applies to mode 'remove'")
        from bglab.remove import RemoveOptions

        mode = {"remove": "cutout" if self.alpha else "color", "colour": "color", "blur": "blur",
                "swap": "swap", "keep": "color"}[self.mode]
        self.opts = RemoveOptions(mode=mode, color=self.color, blur=self.blur, fit=self.fit,  # type: ignore[arg-type]
                                  refine=False)
        self._backgrounds: list[Path] = []
        self._cache: dict[Path, np.ndarray] = {}

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode in ("remove", "colour"):
            out["color"] = list(self.color)
        if self.mode == "remove":
            out["alpha"] = self.alpha
        if self.mode == "blur":
            out["blur"] = self.blur
        if self.mode == "swap":
            out["image"] = self.image
            out["fit"] = self.fit
        if self.on_empty != "apply":
            out["on_empty"] = self.on_empty
        return out

    def open(self, pipe: Pipeline, runtime: Any) -> None:
        if self.mode != "swap":
            return
        from bglab.io import list_images

        from bglab.io import image_size, read_image

        p = Path(self.image).expanduser()  # type: ignore[arg-type]
        if p.is_dir():
            self._backgrounds = list_images(p)
            if not self._backgrounds:
                raise ConfigError("no background images in the folder", path=p, hint="background.image")
            for b in self._backgrounds:  # headers only: a bad file fails the run once, before any sample
                image_size(b)
        elif p.is_file():
            self._backgrounds = [p]
            self._cache[p] = read_image(p)  # read once, before any sample: a bad file fails the run here
        else:
            raise ConfigError("background image not found", path=p, hint="set background.image to a file or folder")

    def _background(self, key: str, seed: int) -> np.ndarray:
        from bglab.io import read_image

        i = sample_seed(seed, key, "background") % len(self._backgrounds)
        path = self._backgrounds[i]
        if path not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[path] = read_image(path)
        return self._cache[path]

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        if self.mode == "keep":
            return
        if self.on_empty == "keep" and s.mask is not None and not (s.mask >= 0.5).any():
            return
        from bglab.remove import apply_mode

        bg = self._background(s.key, pipe.seed) if self.mode == "swap" else None
        s.image = apply_mode(np.ascontiguousarray(s.image[..., :3]), s.mask, self.opts,  # type: ignore[arg-type]
                             background=bg)


class CropStep(Step):
    name = "crop"
    keys = ("to", "margin", "square", "threshold")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.to = _choice(where, "to", cfg.get("to", "auto"), CROP_TARGETS)
        self.margin = _number(where, "margin", cfg.get("margin", 0.1), lo=0)
        self.square = _bool(where, "square", cfg.get("square", False))
        self.threshold = _number(where, "threshold", cfg.get("threshold", 0.5), lo=0, hi=1)

    def to_config(self) -> dict[str, Any]:
        return {"to": self.to, "margin": self.margin, "square": self.square, "threshold": self.threshold}

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        box = s.box if self.to in ("auto", "box") else None
        if box is None and self.to in ("auto", "mask") and s.mask is not None:
            box = Box.from_mask(s.mask, self.threshold)
        if box is None:
            return
        crop, used = ops.crop_to_box(s.image, box, margin=self.margin, square=self.square)
        s.image = crop
        if s.mask is not None:
            s.mask = np.ascontiguousarray(s.mask[int(used.y0):int(used.y1), int(used.x0):int(used.x1)])
        if s.box is not None:
            b = s.box.translate(-used.x0, -used.y0).clamp(used.width, used.height)
            s.box = b if b.is_valid else None
        s.geometry.append(("crop", used))


class PoseStep(Step):
    name = "pose"
    keys = ("backend", "options", "size", "align", "thickness", "margin", "on_missing", "with_photo")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.with_photo = _bool(where, "with_photo", cfg.get("with_photo", False))
        self.backend = _backend_name(where, cfg.get("backend", "mediapipe-hands"), "locator")
        self.options = _options(where, cfg.get("options"))
        self.size = _number(where, "size", cfg.get("size", 128), lo=8, hi=MAX_OUTPUT_SIDE, integer=True)
        self.align = _bool(where, "align", cfg.get("align", True))
        self.thickness = _number(where, "thickness", cfg.get("thickness", 1 / 32), lo=0.001, hi=0.5)
        self.margin = _number(where, "margin", cfg.get("margin", 0.1), lo=0)
        self.on_missing = _choice(where, "on_missing", cfg.get("on_missing", "blank"), ("blank", "keep", "skip"))
        self.landmarker: Any = None

    def to_config(self) -> dict[str, Any]:
        out = {"backend": self.backend, "options": dict(self.options), "size": self.size, "align": self.align,
               "thickness": self.thickness, "margin": self.margin, "on_missing": self.on_missing}
        if self.with_photo:  # written only when set, so pipelines resolved before it keep their config
            out["with_photo"] = True
        return out

    def open(self, pipe: Pipeline, runtime: Any) -> None:
        lm = _create(self.backend, "locator", runtime, self.options)
        if not callable(getattr(lm, "landmarks", None)):
            _close(lm)
            raise BackendError(f"pose: backend {_r(self.backend)} finds boxes, not hand landmarks",
                               hint="use backend: mediapipe-hands (extra 'hands')")
        self.landmarker = lm

    def close(self) -> None:
        _close(self.landmarker)
        self.landmarker = None

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        hands = self.landmarker.landmarks(np.ascontiguousarray(s.image[..., :3]))
        s.mask, s.box, s.box_source = None, None, ""  # the drawing has its own frame: no mask or box in it
        s.found = bool(hands)
        drawing = ops.draw_pose(hands[0][1], self.size, align=self.align, thickness=self.thickness,
                                margin=self.margin) if hands else None
        if drawing is None:
            if self.on_missing == "skip":
                s.status = "skipped"
                return
            s.status = "not-found"
        blank = np.zeros((self.size, self.size), np.uint8)
        if self.with_photo:  # channels: the grey photo (letterboxed), the drawing (black without a hand), 0
            photo = ops.resize_pad(ops.to_grey(s.image[..., :3]), (self.size, self.size), interpolation="area")[0]
            s.image = np.dstack([photo, blank if drawing is None else drawing, blank])
        elif drawing is not None or self.on_missing == "blank":
            s.image = np.repeat((blank if drawing is None else drawing)[:, :, None], 3, axis=2)


class ResizeStep(Step):
    name = "resize"
    keys = ("size", "pad_color", "pad_colour", "interpolation")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        if "size" not in cfg:
            raise _fail(where, "missing key 'size'", "e.g. size: 64 or size: [96, 64] (width, height)")
        size = cfg["size"]
        if isinstance(size, Sequence) and not isinstance(size, str):
            if len(size) != 2:
                raise _fail(f"{where}.size", f"expected an int or [width, height], got {_r(size)}")
            self.size: tuple[int, int] = (
                _number(where, "size", size[0], lo=1, hi=MAX_OUTPUT_SIDE, integer=True),
                _number(where, "size", size[1], lo=1, hi=MAX_OUTPUT_SIDE, integer=True))
        else:
            n = _number(where, "size", size, lo=1, hi=MAX_OUTPUT_SIDE, integer=True)
            self.size = (n, n)
        self.pad_color = _colour(where, "pad_color", cfg.get("pad_colour", cfg.get("pad_color", "black")))
        self.interpolation = _choice(where, "interpolation", cfg.get("interpolation", "auto"),
                                     ("auto", *ops.INTERPOLATIONS))

    def to_config(self) -> dict[str, Any]:
        size: Any = self.size[0] if self.size[0] == self.size[1] else list(self.size)
        return {"size": size, "pad_color": list(self.pad_color), "interpolation": self.interpolation}

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        interp = self.interpolation
        if interp == "auto":  # area when shrinking, linear when enlarging (area enlarges like nearest)
            h, w = s.image.shape[:2]
            interp = "area" if w >= self.size[0] or h >= self.size[1] else "linear"
        s.image, t = ops.resize_pad(s.image, self.size, pad_color=self.pad_color, interpolation=interp)
        if s.mask is not None:
            s.mask = ops.resize_mask_pad(s.mask, self.size)[0]
        if s.box is not None:
            s.box = t.box_to_output(s.box)
        s.geometry.append(("resize", t))


class GreyStep(Step):
    name = "grey"
    keys = ("keep_channels",)

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.keep_channels = _bool(where, "keep_channels", cfg.get("keep_channels", False))

    def to_config(self) -> dict[str, Any]:
        return {"keep_channels": self.keep_channels}

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        s.image = ops.to_grey(s.image, keep_channels=self.keep_channels)


class DistortStep(Step):
    name = "distort"
    keys = ("dropout", "noise", "seed")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        _check_keys(where, cfg, self.keys)
        self.dropout = _number(where, "dropout", cfg.get("dropout", 0.0), lo=0, hi=1)
        self.noise = _number(where, "noise", cfg.get("noise", 0.0), lo=0)
        seed = cfg.get("seed")
        self.seed = None if seed is None else _number(where, "seed", seed, lo=0, hi=MAX_SEED, integer=True)
        self.index = 0  # position in the pipeline, part of the per-sample seed

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dropout": self.dropout, "noise": self.noise}
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    def run_one(self, s: _State, pipe: Pipeline) -> None:
        seed = pipe.seed if self.seed is None else self.seed
        rng = np.random.default_rng(sample_seed(seed, s.key, f"distort{self.index}"))
        if self.dropout > 0:
            s.image = ops.pixel_dropout(s.image, self.dropout, rng=rng)
        if self.noise > 0:
            s.image = ops.gaussian_noise(s.image, self.noise, rng=rng)


_STEP_TYPES: dict[str, type[Step]] = {c.name: c for c in (LocateStep, SegmentStep, BackgroundStep, CropStep,
                                                           PoseStep, ResizeStep, GreyStep, DistortStep)}


def _create(name: str, kind: str, runtime: Any, options: Mapping[str, Any]) -> Any:
    from bglab.segment import create

    try:
        return create(name, kind=kind, runtime=runtime, **options)  # type: ignore[arg-type]
    except BglabError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a backend module that does not exist yet
        raise BackendError(f"backend {_r(name)} cannot be created ({type(exc).__name__}: {exc})") from None


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


# ------------------------------------------------------------------------------------------- config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline config file: YAML (.yaml/.yml), TOML (.toml) or JSON (.json)."""
    return read_config_file(path, what="config file", shape_hint="a pipeline config has a 'steps' list")


def _step_entries(steps: Any) -> list[tuple[str, dict[str, Any], str]]:
    if steps is None:
        return []
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise ConfigError(f"steps: expected a list of steps, got {type(steps).__name__}",
                          hint="e.g. steps: [{resize: {size: 64}}, grey]")
    out = []
    for i, item in enumerate(steps):
        where = f"steps[{i}]"
        if isinstance(item, str):
            name, cfg = item, {}
        elif isinstance(item, Mapping) and "step" in item:
            name, cfg = item["step"], {k: v for k, v in item.items() if k != "step"}
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, cfg),) = item.items()
            cfg = {} if cfg is None else cfg
            if not isinstance(cfg, Mapping):
                raise ConfigError(f"{where}.{name}: expected a mapping of settings, got {_r(cfg)}")
        else:
            raise ConfigError(f"{where}: cannot read step {_r(item)}",
                              hint="write a step as a name ('grey'), {name: {settings}} or {step: name, ...}")
        name = str(name).strip().lower()
        if name in ("gray", "greyscale", "grayscale"):
            name = "grey"
        if name not in _STEP_TYPES:
            raise ConfigError(f"{where}: unknown step {_r(name)}", hint=f"choose one of: {', '.join(STEP_NAMES)}")
        out.append((name, dict(cfg), f"{where}.{name}"))
    return out


# ------------------------------------------------------------------------------------------- pipeline


class Pipeline:
    """An ordered list of steps; call it on an image, or :meth:`run_batch` on several (batched backends)."""

    def __init__(self, steps: Sequence[Step], *, seed: int = 0, output: Mapping[str, Any] | None = None,
                 runtime: Any = None) -> None:
        self.steps = list(steps)
        self.seed = int(seed)
        out = dict(output or {})
        _check_keys("output", out, ("format", "quality"))
        self.format = _choice("output", "format", out.get("format", "png"), (*FORMATS, "jpeg"))
        self.format = "jpg" if self.format == "jpeg" else self.format
        self.quality = _number("output", "quality", out.get("quality", 95), lo=1, hi=100, integer=True)
        self.runtime = runtime
        self._opened_pid: int | None = None
        self._validate()
        for i, st in enumerate(self.steps):
            if isinstance(st, DistortStep):
                st.index = i

    # -- construction
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, *, runtime: Any = None) -> Pipeline:
        """Build from a mapping or a YAML / TOML / JSON file; every problem is a ConfigError naming the key."""
        if isinstance(config, str | Path):
            config = load_config(config)
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
        _check_keys("config", config, _TOP_KEYS)
        version = config.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"config.version: {_r(version)} is not supported",
                              hint=f"use version: {CONFIG_VERSION}")
        seed = _number("config", "seed", config.get("seed", 0), lo=0, hi=MAX_SEED, integer=True)
        steps = [_STEP_TYPES[name](cfg, where) for name, cfg, where in _step_entries(config.get("steps"))]
        return cls(steps, seed=seed, output=config.get("output"), runtime=runtime)

    def to_config(self) -> dict[str, Any]:
        """The resolved config (every default written out); ``from_config(to_config())`` is equivalent."""
        return {"version": CONFIG_VERSION, "seed": self.seed,
                "steps": [{st.name: st.to_config()} for st in self.steps],
                "output": {"format": self.format, "quality": self.quality}}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_config(), sort_keys=False, default_flow_style=None)

    def _validate(self) -> None:
        if self.format == "jpg" and any(isinstance(s, BackgroundStep) and s.alpha for s in self.steps):
            raise ConfigError("output.format: jpg cannot store the alpha of background.alpha: true",
                              hint="use format png or webp")
        seen: list[str] = []
        for i, st in enumerate(self.steps):
            where = f"steps[{i}].{st.name}"
            if "pose" in seen and st.name not in ("resize", "grey", "distort"):
                raise ConfigError(f"{where}: cannot follow pose (its drawing has no photo, mask or box left)",
                                  hint="put it before the pose step; only resize, grey and distort may follow")
            if st.name in ("locate", "segment") and st.name in seen:
                raise ConfigError(f"{where}: only one {st.name} step is allowed")
            if st.name in ("locate", "segment", "background", "pose") and "grey" in seen:
                raise ConfigError(f"{where}: must come before grey (it needs colour)")
            if isinstance(st, BackgroundStep) and st.mode != "keep" and "segment" not in seen:
                raise ConfigError(f"{where}: mode {_r(st.mode)} needs a segment step before it",
                                  hint="add {segment: {backend: unet}} earlier, or use mode: keep")
            if isinstance(st, CropStep):
                if st.to == "box" and "locate" not in seen:
                    raise ConfigError(f"{where}: to: box needs a locate step before it", hint="or use to: mask")
                if st.to == "mask" and "segment" not in seen:
                    raise ConfigError(f"{where}: to: mask needs a segment step before it", hint="or use to: box")
                if st.to == "auto" and not {"locate", "segment"} & set(seen):
                    raise ConfigError(f"{where}: needs a locate or segment step before it")
            if isinstance(st, LocateStep) and st.uses_segment_mask() and self.segment_step is None:
                raise ConfigError(f"{where}: the mask-box box needs a segment step in the pipeline",
                                  hint="add {segment: {backend: unet}}, or give mask-box its own options")
            seen.append(st.name)

    @property
    def segment_step(self) -> SegmentStep | None:
        return next((s for s in self.steps if isinstance(s, SegmentStep)), None)

    @property
    def locate_step(self) -> LocateStep | None:
        return next((s for s in self.steps if isinstance(s, LocateStep)), None)

    @property
    def step_labels(self) -> list[str]:
        """Timing keys: the step names, numbered from the second occurrence (``distort``, ``distort2``)."""
        labels: list[str] = []
        for st in self.steps:
            n = sum(lab.rstrip("0123456789") == st.name for lab in labels)
            labels.append(st.name if n == 0 else f"{st.name}{n + 1}")
        return labels

    # -- sessions
    def open(self, runtime: Any = None) -> Pipeline:
        """Create the backend sessions now (otherwise done on first use, once per process)."""
        if runtime is not None:
            self.runtime = runtime
        if self._opened_pid == os.getpid():
            return self
        from bglab.segment import Runtime

        rt = self.runtime or Runtime.from_env()
        for st in self.steps:
            st.open(self, rt)
        self._opened_pid = os.getpid()
        return self

    def close(self) -> None:
        for st in self.steps:
            st.close()
        self._opened_pid = None

    def __getstate__(self) -> dict[str, Any]:
        # backend sessions never travel between processes: a copy reopens them lazily where it runs
        return {"config": self.to_config(), "runtime": self.runtime}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = Pipeline.from_config(state["config"], runtime=state["runtime"])
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        return f"Pipeline({' -> '.join(self.step_labels) or 'no steps'})"

    # -- running
    def __call__(self, image: np.ndarray, *, source: str | Path | None = None, key: str = "") -> StepResult:
        """Run every step on one RGB uint8 image; errors raise (use :meth:`run_batch` to record them)."""
        res = self._run([image], [source], [key], isolate=False)[0]
        return res

    def run_batch(self, images: Sequence[np.ndarray], *, sources: Sequence[str | Path | None] | None = None,
                  keys: Sequence[str] | None = None) -> list[StepResult]:
        """Run on several images with batched backend calls; a sample's error gives it status ``failed``."""
        n = len(images)
        srcs = list(sources) if sources is not None else [None] * n
        ks = list(keys) if keys is not None else [""] * n
        if len(srcs) != n or len(ks) != n:
            raise ConfigError("run_batch: images, sources and keys must have the same length")
        return self._run(list(images), srcs, ks, isolate=True)

    def _run(self, images: list[np.ndarray], sources: list[Any], keys: list[str], *, isolate: bool
             ) -> list[StepResult]:
        self.open()
        states: list[_State] = []
        for img, src, key in zip(images, sources, keys, strict=True):
            s = _State(image=img, original=img, source=None if src is None else Path(src),
                       key=str(key or (Path(src).as_posix() if src else "")))
            try:
                _check_input(img)
            except BglabError as exc:
                if not isolate:
                    raise
                s.status, s.error = "failed", str(exc)
            states.append(s)
        for label, st in zip(self.step_labels, self.steps, strict=True):
            active = [s for s in states if s.active]
            if not active:
                break
            t0 = time.perf_counter()
            if st.batched and len(active) > 1:
                try:
                    st.run_batch(active, self)
                    dt = (time.perf_counter() - t0) / len(active)
                    for s in active:
                        s.timings[label] = dt
                    continue
                except Exception:  # noqa: BLE001 - redo one by one to find the bad sample
                    if not isolate:
                        raise
            for s in active:
                t1 = time.perf_counter()
                try:
                    st.run_one(s, self)
                except Exception as exc:  # noqa: BLE001
                    if not isolate:
                        raise
                    s.status = "failed"
                    s.error = str(exc) if isinstance(exc, BglabError) else f"unexpected {type(exc).__name__}: {exc}"
                    named = isinstance(exc, BglabError) and exc.path is not None \
                        and str(exc.path) == str(s.source)
                    if s.source is not None and not named:  # every failure names its sample's file
                        s.error = f"{s.source}: {s.error}"
                s.timings[label] = time.perf_counter() - t1
        return [_result(s) for s in states]


def _check_input(image: Any) -> None:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise BglabError(f"pipeline input must be an RGB uint8 (H, W, 3) image, got {a.dtype} {a.shape}",
                         hint="read images with bglab.io.read_image")


def _result(s: _State) -> StepResult:
    ok = s.active
    box = s.to_original(s.box) if (ok and s.box is not None) else None
    if s.status == "skipped" or s.status == "failed":
        box = None
    image = np.ascontiguousarray(s.image) if ok else None
    return StepResult(image=image, status=s.status, box=box, box_source=s.box_source if box is not None else "",
                      found=s.found, coverage=s.coverage, timings=dict(s.timings), error=s.error,
                      mask=s.mask if ok else None, qc=s.qc)


# ------------------------------------------------------------------------------------- flags -> config

_CANONICAL = {name: i for i, name in enumerate(STEP_NAMES)}


def apply_overrides(
    config: Mapping[str, Any] | None = None,
    *,
    locator: str | None = None,
    locator_options: Mapping[str, Any] | None = None,
    on_missing: str | None = None,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    background: str | None = None,
    color: Any = None,
    crop: bool = False,
    margin: float | None = None,
    square: bool | None = None,
    size: int | Sequence[int] | None = None,
    grey: bool = False,
    dropout: float | None = None,
    noise: float | None = None,
    seed: int | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """A config with CLI-style overrides applied: a flag sets that step's setting, adding the step (in the
    canonical order locate, segment, background, crop, pose, resize, grey, distort) when the config lacks it.

    ``--background`` without a segment step adds ``segment`` (default backend ``unet``). Validation happens in
    :meth:`Pipeline.from_config`.
    """
    cfg = dict(config or {})
    steps = [[name, dict(c)] for name, c, _ in _step_entries(cfg.get("steps"))]

    def get(name: str) -> dict[str, Any]:
        for n, c in steps:
            if n == name:
                return c
        rank = _CANONICAL[name]
        pos = next((i for i, (n, _) in enumerate(steps) if _CANONICAL[n] > rank), len(steps))
        new: dict[str, Any] = {}
        steps.insert(pos, [name, new])
        return new

    def has(name: str) -> bool:
        return any(n == name for n, _ in steps)

    if locator is not None:
        loc = get("locate")
        loc["backend"] = locator
        if locator_options:
            loc["options"] = dict(locator_options)
    elif locator_options:
        get("locate")["options"] = dict(locator_options)
    if on_missing is not None:
        if not has("locate"):
            raise ConfigError("--on-missing needs a locate step", hint="add --locator NAME")
        get("locate")["on_missing"] = on_missing
    if backend is not None or options:
        seg = get("segment")
        if backend is not None:
            seg["backend"] = backend
        if options:
            seg["options"] = dict(options)
    if background is not None:
        if str(background).lower() != "keep" and not has("segment"):
            get("segment")
        bg = get("background")
        bg["mode"] = background
        if color is not None:
            bg["color"] = color
    elif color is not None and has("background"):
        get("background")["color"] = color
    if crop or margin is not None or square is not None:
        cr = get("crop")
        if margin is not None:
            cr["margin"] = margin
        if square is not None:
            cr["square"] = square
    if size is not None:
        get("resize")["size"] = size
    if grey:
        get("grey")
    if dropout is not None or noise is not None:
        d = get("distort")
        if dropout is not None:
            d["dropout"] = dropout
        if noise is not None:
            d["noise"] = noise
    if seed is not None:
        cfg["seed"] = seed
    if fmt is not None:
        cfg["output"] = {**dict(cfg.get("output") or {}), "format": fmt}
    cfg["steps"] = [{n: c} for n, c in steps]
    return cfg

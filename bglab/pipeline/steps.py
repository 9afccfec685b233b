"""The pipeline's steps, one class each: parsed from a config mapping, written back by ``to_config``, run on samples.

The steps and their settings are described in :mod:`bglab.pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from bglab import ops
from bglab.errors import BackendError, BglabError, ConfigError
from bglab.errors import short_repr as _r
from bglab.foreground.registry import DEFAULT_SEGMENTER, resolve
from bglab.io.configfile import config_error
from bglab.io.limits import MAX_OUTPUT_SIDE, MAX_SEED
from bglab.io.schema import Field, Schema
from bglab.io.seeds import sample_seed
from bglab.ops.box import Box
from bglab.pipeline.state import SampleState

ON_MISSING: tuple[str, ...] = ("keep", "skip", "mask-box")
BACKGROUND_MODES: tuple[str, ...] = ("remove", "colour", "blur", "swap", "keep")
CROP_TARGETS: tuple[str, ...] = ("auto", "box", "mask")
SEGMENT_INPUTS: tuple[str, ...] = ("auto", "current", "original")


class PipelineView(Protocol):
    """What a step reads of its pipeline: the seed and the segment step (whose mask a locate step may box)."""

    seed: int

    @property
    def segment_step(self) -> SegmentStep | None: ...


def backend_options(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise config_error(f"{where}.options", f"expected a mapping of backend options, got {_r(value)}")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def backend_name(where: str, value: Any, kind: str) -> str:
    """A registered backend of ``kind`` (:func:`bglab.foreground.resolve`), the error naming the config key."""
    from bglab.foreground import backends, resolve

    name = str(value).strip()
    try:
        return resolve(name, kind).name  # type: ignore[arg-type]
    except BackendError:
        names = [b.name for b in backends(kind)]  # type: ignore[arg-type]
        raise config_error(f"{where}.backend", f"unknown {kind} {_r(name)}",
                           f"choose one of: {', '.join(names)}") from None


def _backend(kind: str, default: str) -> tuple[Field, Field]:
    """A step's ``backend`` (a registered ``kind``) and its ``options``."""
    return (Field("backend", default=default, parse=lambda w, v: backend_name(w, v, kind)),
            Field("options", parse=backend_options, dump=dict))


class Step:
    """Base of every step: its settings declared once in ``schema`` (parsing, key checks and :meth:`to_config`
    derived from it; the values become attributes); :meth:`check` adds the checks across settings."""

    name: ClassVar[str] = ""
    schema: ClassVar[Schema] = Schema()
    keys: ClassVar[tuple[str, ...]] = ()
    batched: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.keys = cls.schema.keys

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        self.__dict__.update(self.schema.parse(where, cfg))
        self.check(where)

    def check(self, where: str) -> None:
        """Checks across settings and derived state, after the fields are read."""

    def to_config(self) -> dict[str, Any]:
        return self.schema.to_config(self)

    def open(self, pipe: PipelineView, runtime: Any) -> None:
        """Create backend sessions (called once per process, lazily)."""

    def close(self) -> None:
        """Drop backend sessions."""

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:  # pragma: no cover - every step overrides
        raise NotImplementedError

    def run_batch(self, states: list[SampleState], pipe: PipelineView) -> None:
        for s in states:
            self.run_one(s, pipe)


class SegmentStep(Step):
    name = "segment"
    schema = Schema(*_backend("segmenter", DEFAULT_SEGMENTER), Field("threshold", "float", 0.5, lo=0, hi=1),
                    Field("refine", "bool", True), Field("feather", "float", 0.0, lo=0),
                    Field("input", "choice", "auto", choices=SEGMENT_INPUTS),
                    # qc / on_suspect written only when set, so earlier resolved configs stay equal
                    Field("qc", default=True, write=lambda v: v["qc"] is not True),
                    Field("on_suspect", default="keep", write=lambda v: v["on_suspect"] != "keep"), text=True)
    batched = True
    segmenter: Any = None

    def check(self, where: str) -> None:
        self.qc, self.qc_rules, self.on_suspect = _qc_config(where, self.qc, self.on_suspect)

    def open(self, pipe: PipelineView, runtime: Any) -> None:
        self.segmenter = _create(self.backend, "segmenter", runtime, self.options)

    def close(self) -> None:
        _close(self.segmenter)
        self.segmenter = None

    @property
    def use_original(self) -> bool:
        # a backend that reads the file's own mask by path gets the original file, not a crop of it
        return self.input == "original" or (self.input == "auto" and resolve(self.backend).reads_files)

    def ensure_masks(self, states: list[SampleState]) -> None:
        """Give every state without a mask this step's refined mask (one batched backend call)."""
        from bglab.background.remove import RemoveOptions, prepare_mask

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

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
        self.ensure_masks([s])

    def run_batch(self, states: list[SampleState], pipe: PipelineView) -> None:
        self.ensure_masks(states)


def _qc_config(where: str, raw: Any, on_suspect: Any) -> tuple[Any, Any, str]:
    """The segment step's ``qc`` (True, False or rule overrides) and ``on_suspect``, checked."""
    from bglab.foreground.qc import check_on_suspect, rules_from

    try:
        if isinstance(raw, bool):
            rules = rules_from() if raw else None
        elif isinstance(raw, Mapping):
            rules, raw = rules_from(raw), {str(k).replace("-", "_"): v for k, v in raw.items()}
        else:
            raise config_error(f"{where}.qc", f"expected true, false or a mapping of QC rules, got {raw!r}")
        policy = check_on_suspect(on_suspect)
    except ConfigError as exc:
        if exc.message.startswith(where):
            raise
        raise config_error(where, exc.message, exc.hint) from None
    return raw, rules, policy


def _apply_qc(s: SampleState, mask: np.ndarray, image: np.ndarray, step: SegmentStep) -> None:
    """Mask QC of one sample: not-found (no foreground) or suspect, and the step's ``on_suspect`` policy."""
    from bglab.foreground.qc import check_mask, uses_screen

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
    schema = Schema(*_backend("locator", "mediapipe-hands"),
                    Field("fallback", parse=lambda w, v: _fallbacks(w, v),
                          dump=lambda fb: [{"backend": b, "options": dict(o)} for b, o in fb]),
                    Field("margin", "float", 0.0, lo=0), Field("on_missing", "choice", "keep", choices=ON_MISSING),
                    Field("threshold", "float", 0.5, lo=0, hi=1), text=True)
    batched = True
    fallback: list[tuple[str, dict[str, Any]]]

    def check(self, where: str) -> None:
        self.locators: list[Any] = []

    def _specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.backend, self.options), *self.fallback]

    def uses_segment_mask(self) -> bool:
        """Whether this step needs the pipeline's segment step (own-mask box or mask-box fallback)."""
        return self.on_missing == "mask-box" or any(b == "mask-box" and not o for b, o in self._specs())

    def open(self, pipe: PipelineView, runtime: Any) -> None:
        # None stands for "box of the pipeline's own segment mask"
        self.locators = [None if (b == "mask-box" and not o) else _create(b, "locator", runtime, o)
                         for b, o in self._specs()]

    def close(self) -> None:
        for loc in self.locators:
            _close(loc)
        self.locators = []

    def _mask_box(self, s: SampleState) -> Box | None:
        if s.mask is None:
            return None
        return Box.from_mask(s.mask, self.threshold)

    def _finish(self, s: SampleState, box: Box | None, source: str, found: bool) -> None:
        h, w = s.image.shape[:2]
        if box is not None and self.margin > 0:
            box = box.pad(self.margin, relative=True)
        if box is not None:
            box = box.clamp(w, h)
            if not box.is_valid:
                box = None
        s.box, s.box_source, s.found = box, (source if box is not None else ""), found and box is not None

    def run_batch(self, states: list[SampleState], pipe: PipelineView) -> None:
        pending = list(states)
        for (name, _), loc in zip(self._specs(), self.locators, strict=True):
            if not pending:
                break
            missed: list[SampleState] = []
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

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
        self.run_batch([s], pipe)


class BackgroundStep(Step):
    name = "background"
    schema = Schema(
        Field("mode", "choice", "remove", choices=BACKGROUND_MODES),
        Field("color", "colour", lambda v: "black" if v["mode"] == "remove" else "white", aliases=("colour",),
              write=lambda v: v["mode"] in ("remove", "colour"), dump=list),
        Field("blur", "float", 15.0, lo=0, write=lambda v: v["mode"] == "blur"),
        Field("alpha", "bool", False, write=lambda v: v["mode"] == "remove"),
        Field("image", parse=lambda w, v: None if v in (None, "") else str(v), write=lambda v: v["mode"] == "swap"),
        Field("fit", "choice", "cover", choices=("cover", "stretch", "tile"), write=lambda v: v["mode"] == "swap"),
        Field("on_empty", "choice", "apply", choices=("apply", "keep"), write=lambda v: v["on_empty"] != "apply"),
        text=True)

    def check(self, where: str) -> None:
        if self.mode == "swap" and self.image is None:
            raise config_error(where, "mode 'swap' needs image: a background file or a folder of them")
        if self.alpha and self.mode != "remove":
            raise config_error(f"{where}.alpha", "alpha output only applies to mode 'remove'")
        from bglab.background.remove import RemoveOptions

        mode = {"remove": "cutout" if self.alpha else "color", "colour": "color", "blur": "blur",
                "swap": "swap", "keep": "color"}[self.mode]
        self.opts = RemoveOptions(mode=mode, color=self.color, blur=self.blur, fit=self.fit,  # type: ignore[arg-type]
                                  refine=False)
        self._backgrounds: list[Path] = []
        self._cache: dict[Path, np.ndarray] = {}

    def open(self, pipe: PipelineView, runtime: Any) -> None:
        if self.mode != "swap":
            return
        from bglab.io.files import list_images

        from bglab.io.files import image_size, read_image

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
        from bglab.io.files import read_image

        i = sample_seed(seed, key, "background") % len(self._backgrounds)
        path = self._backgrounds[i]
        if path not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[path] = read_image(path)
        return self._cache[path]

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
        if self.mode == "keep":
            return
        if self.on_empty == "keep" and s.mask is not None and not (s.mask >= 0.5).any():
            return
        from bglab.background.remove import apply_mode

        bg = self._background(s.key, pipe.seed) if self.mode == "swap" else None
        s.image = apply_mode(np.ascontiguousarray(s.image[..., :3]), s.mask, self.opts,  # type: ignore[arg-type]
                             background=bg)


class CropStep(Step):
    name = "crop"
    schema = Schema(Field("to", "choice", "auto", choices=CROP_TARGETS), Field("margin", "float", 0.1, lo=0),
                    Field("square", "bool", False), Field("threshold", "float", 0.5, lo=0, hi=1), text=True)

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
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
    schema = Schema(*_backend("locator", "mediapipe-hands"),
                    Field("size", "int", 128, lo=8, hi=MAX_OUTPUT_SIDE), Field("align", "bool", True),
                    Field("thickness", "float", 1 / 32, lo=0.001, hi=0.5), Field("margin", "float", 0.1, lo=0),
                    Field("on_missing", "choice", "blank", choices=("blank", "keep", "skip")),
                    # written only when set, so pipelines resolved before it keep their config
                    Field("with_photo", "bool", False, write=lambda v: v["with_photo"]), text=True)
    landmarker: Any = None

    def open(self, pipe: PipelineView, runtime: Any) -> None:
        lm = _create(self.backend, "locator", runtime, self.options)
        if not callable(getattr(lm, "landmarks", None)):
            _close(lm)
            raise BackendError(f"pose: backend {_r(self.backend)} finds boxes, not hand landmarks",
                               hint="use backend: mediapipe-hands (extra 'hands')")
        self.landmarker = lm

    def close(self) -> None:
        _close(self.landmarker)
        self.landmarker = None

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
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
    schema = Schema(Field("size", parse=lambda w, v: _size(w, v), dump=lambda s: s[0] if s[0] == s[1] else list(s),
                          required="e.g. size: 64 or size: [96, 64] (width, height)"),
                    Field("pad_color", "colour", "black", aliases=("pad_colour",), dump=list),
                    Field("interpolation", "choice", "auto", choices=("auto", *ops.INTERPOLATIONS)), text=True)
    size: tuple[int, int]

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
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
    schema = Schema(Field("keep_channels", "bool", False), text=True)

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
        s.image = ops.to_grey(s.image, keep_channels=self.keep_channels)


class DistortStep(Step):
    name = "distort"
    schema = Schema(Field("dropout", "float", 0.0, lo=0, hi=1), Field("noise", "float", 0.0, lo=0),
                    Field("seed", "int", None, lo=0, hi=MAX_SEED, optional=True, write=lambda v: v["seed"] is not None),
                    text=True)
    index = 0  # position in the pipeline, part of the per-sample seed

    def run_one(self, s: SampleState, pipe: PipelineView) -> None:
        seed = pipe.seed if self.seed is None else self.seed
        rng = np.random.default_rng(sample_seed(seed, s.key, f"distort{self.index}"))
        if self.dropout > 0:
            s.image = ops.pixel_dropout(s.image, self.dropout, rng=rng)
        if self.noise > 0:
            s.image = ops.gaussian_noise(s.image, self.noise, rng=rng)


STEP_TYPES: dict[str, type[Step]] = {c.name: c for c in (LocateStep, SegmentStep, BackgroundStep, CropStep,
                                                           PoseStep, ResizeStep, GreyStep, DistortStep)}


def _fallbacks(where: str, fb: Any) -> list[tuple[str, dict[str, Any]]]:
    """The locate step's ``fallback``: backend names or ``{backend, options}`` mappings, tried in order."""
    fb = [fb] if fb and isinstance(fb, str | Mapping) else (fb or [])
    out = []
    for i, f in enumerate(fb):
        w = f"{where}.fallback[{i}]"
        if isinstance(f, Mapping):
            _FALLBACK.check_keys(w, f)
            out.append((backend_name(w, f.get("backend"), "locator"), backend_options(w, f.get("options"))))
        else:
            out.append((backend_name(w, f, "locator"), {}))
    return out


_FALLBACK = Schema(Field("backend"), Field("options"))


def _size(where: str, size: Any) -> tuple[int, int]:
    """The resize step's ``size``: one side or ``[width, height]``."""
    side = Field("size", "int", lo=1, hi=MAX_OUTPUT_SIDE)
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise config_error(f"{where}.size", f"expected an int or [width, height], got {_r(size)}")
        return (side.read(where, size[0], text=True), side.read(where, size[1], text=True))
    n = side.read(where, size, text=True)
    return (n, n)


def _create(name: str, kind: str, runtime: Any, options: Mapping[str, Any]) -> Any:
    from bglab.foreground import create

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



"""Typed experiment configuration, loaded from YAML and validated: every problem is a ConfigError naming the key.

Format (paths relative to the config file; see ``bglab/configs/rps-reference.yaml``, or ``bglab init experiment``)::

    name: rps-reference
    seeds: [0, 1, 2]               # training seeds (initial weights, data order, augmentation)
    split_seed: 0                  # one split for every arm, variant and seed
    threads: 2                     # torch.set_num_threads (0 = leave torch's default)
    input: {size: 64, channels: 1} # every arm ends with resize(size) (+ grey when channels is 1)
    sources:                       # ImageFolder folders or CSV manifests; the name is the origin
      webcam: {path: ../../shared/data/rps/webcam, per_class: null}   # group: REGEX ties frames of one video
    protocols:                     # which parts train / validate / test
      cross-domain:
        split: {webcam: [0.7, 0.15, 0.15]}           # train, val, test fractions per source
        test_sets: {webcam: webcam/test, sxsw: sxsw} # SOURCE/PART (train|val|test) or a whole SOURCE
    #   train_on_val: [sxsw]: these sources' val parts train too, once the recipe is chosen (the split and so
    #   every test set stay as they are; another source must keep a val part to watch)
    arms:                          # preprocessing: pipeline steps before resize / grey (bglab.pipeline)
      original: []
      crop: [{segment: {backend: unet}}, {crop: {to: mask, margin: 0.1}}]
      swap: {steps: [{segment: {backend: chroma}}, {background: {mode: swap, image: backgrounds/}}],
             sources: [webcam]}    # steps for these sources' images only; the others get resize / grey alone
    model: {name: cnn, dropout: 0.5, batchnorm: false}
    train: {epochs: 100, batch_size: 64, lr: 0.001, eval_every: 10, augment: {noise: 0}}
    #   augment (each image with probability p): noise (SD), dropout (pixel prob.), flip, rot90, rotate (+-deg),
    #   scale (zoom 1 +- s), shift (fraction), brightness / contrast (factor 1 +- b), white_balance (a gain
    #   1 +- w per RGB channel), saturation (1 +- s), grey (probability), blur (sigma up to N px);
    #   schedule: constant | cosine; label_smoothing: s (the target 1 - s on the label, s over every class)
    variants:                      # model / train overrides, e.g. the regularisation ablation
      base: {}
      none: {model: {dropout: 0.0}}
    evaluate: {distortions: {dropout25: {dropout: 0.25}, noise25: {noise: 25}}, seed: 1234}
    #   distorted copies are scored at the final epoch (distortion_curves: true scores them at every eval)
    studies:                       # which protocol x arm x variant combinations to train (x every seed)
      background: {protocols: [cross-domain], arms: [original, crop], variants: [base]}
    #   a study may add ensembles: {tuned+pose: [crop+remove/tuned, original/pose]}: per seed, the members'
    #   class probabilities averaged (soft voting), reported as one more line and compared with each member
    baseline: original             # arm the others are compared with
    quick: {seeds: [0], train: {epochs: 3}}   # overrides applied by --quick (deep merge)

A follow-up study starts from another file: ``extends: rps-reference.yaml`` (relative to this file); the keys
written here replace that file's keys whole (e.g. ``name``, ``variants``, ``studies``), the rest is kept. A variant
can start from another by name, ``pose: {extends: pose, model: {dropout: 0.3}}`` (one of this file, else of the
extended config), and merge its own model and train over it (:func:`inherit_variants`).

Matrix experiments (see ``docs/matrix.md`` and ``bglab/configs/pets3-matrix.yaml``)::

    arms:
      mixed-rand: {from: ../work/pets3-variants/mixed-rand, steps: []}  # images of another tree, by class + stem
    train: {augment: {bg_swap: 0.5, bg_from: only-bg-t}}  # paste the fg on another training image's background
    studies:
      matrix: {protocols: [p], arms: [original, mixed-rand], test_arms: [original, mixed-same, mixed-rand],
               bg_gap: [mixed-same, mixed-rand]}
    saliency: {n: 8, test_set: test}  # Grad-CAM at the final epoch; share of saliency inside the fg mask
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bglab.errors import ConfigError
from bglab.errors import short_repr as _r
from bglab.foreground.registry import path_options
from bglab.io.configfile import check_number, config_error, read_config_file
from bglab.io.limits import MAX_BATCH_SIZE, MAX_BOOTSTRAP, MAX_EPOCHS, MAX_LR, MAX_SEED, MAX_THREADS
from bglab.io.schema import Field, Schema, declare

__all__ = [
    "ArmConfig", "AugmentConfig", "EvalConfig", "ExperimentConfig", "ProtocolConfig", "RunKey", "SourceConfig",
    "SaliencyConfig", "StudyConfig", "TrainConfig", "VariantConfig", "deep_merge", "load_experiment_config",
    "parse_config", "row_label", "run_dir_studies",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PARTS = ("train", "val", "test")
_err = config_error


def _mapping(key: str, value: Any, *, allow_none: bool = True) -> dict[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise _err(key, f"expected a mapping, got {type(value).__name__} {_r(value)}")
    return {str(k): v for k, v in value.items()}


def _keys(key: str, cfg: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    Schema(*map(Field, allowed), unknown_at_key=True).check_keys(key, cfg)


def _name(key: str, value: Any) -> str:
    s = str(value)
    if not _NAME_RE.match(s):
        raise _err(key, f"name {_r(s)} may only use letters, digits and _ . + -", "e.g. crop+remove")
    return s


def _int(key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    return check_number(key, value, lo=lo, hi=hi, integer=True)  # type: ignore[no-any-return]


def _build(schema: Schema, key: str, value: Any) -> Any:
    """The mapping ``value`` (None: every default) read by ``schema``, its errors naming ``key``."""
    return schema.build(key, _mapping(key, value))


def _names(key: str, value: Any, known: Mapping[str, Any], what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise _err(key, f"expected a non-empty list of {what} names, got {_r(value)}")
    out = []
    for i, v in enumerate(value):
        if str(v) not in known:
            raise _err(f"{key}[{i}]", f"unknown {what} {_r(v)}", f"defined: {', '.join(known)}")
        if str(v) not in out:
            out.append(str(v))
    return tuple(out)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ------------------------------------------------------------------------------------------------ parts


@dataclass(frozen=True)
class SourceConfig:
    """One data source: an ImageFolder folder or a CSV manifest; ``per_class`` keeps that many per class;
    ``group``, a regular expression searched in each file name, ties the files it matches with the same text
    (its first capture, else the whole match) into one group that no split divides: frames of one video."""

    name: str
    path: Path
    per_class: int | None = None
    group: str | None = None


@dataclass(frozen=True)
class TestSetRef:
    """A test set: ``part`` (train / val / test) of a split source, or the whole source (``part`` None)."""

    source: str
    part: str | None


@dataclass(frozen=True)
class ProtocolConfig:
    """Which fraction of each split source trains / validates / tests, and the named test sets."""

    name: str
    split: dict[str, tuple[float, float, float]]
    test_sets: dict[str, TestSetRef]
    train_on_val: tuple[str, ...] = ()  # sources whose val part trains too (the split itself unchanged)


@dataclass(frozen=True)
class ArmConfig:
    """One preprocessing arm: its own pipeline steps and the full pipeline config (with resize / grey).

    ``source_dir`` (``from:``): read each sample's image from this tree instead, aligned by class and stem
    (``FROM/<class>/<stem>.*``, or ``FROM/<class>/images/<stem>.*``; masks from ``bglab variants``' sibling tree
    ``DST/_masks/<kind>/<class>``, or ``FROM/<class>/masks``).
    ``sources``: the steps change only the images of these sources (e.g. key out the green screen of the
    studio photos); every other image gets the resize / grey alone. None: every image.
    """

    name: str
    steps: list[Any]
    pipeline: dict[str, Any]
    source_dir: Path | None = None
    sources: tuple[str, ...] | None = None

    @property
    def plain_pipeline(self) -> dict[str, Any]:
        """The pipeline without the arm's own steps (resize / grey only): for images outside ``sources``."""
        return {**self.pipeline, "steps": list(self.pipeline["steps"][len(self.steps):])}

    @property
    def crops(self) -> bool:
        """True when the arm's own steps crop (a source mask then cannot be mapped onto its images)."""
        for st in self.steps:
            name = st if isinstance(st, str) else (next(iter(st)) if isinstance(st, Mapping) and st else "")
            if str(name).lower() == "crop":
                return True
        return False


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly training augmentation (seeded): each image is augmented with probability ``p``."""

    p: float = declare(0.5, lo=0.0, hi=1.0)
    noise: float = declare(0.0, lo=0.0, hi=255.0)  # Gaussian noise SD in 0..255 units
    dropout: float = declare(0.0, lo=0.0, hi=1.0)  # probability of removing a pixel
    flip: bool = declare(False)  # horizontal flip with probability 0.5
    rot90: bool = declare(False)  # rotation by a random multiple of 90 degrees (with flip: all 8 orientations)
    bg_swap: float = declare(0.0, lo=0.0, hi=1.0)  # probability of pasting the fg on another image's background
    # arm whose images are the backgrounds (e.g. only-bg-t); None: the arm itself
    bg_from: str | None = declare(None, optional=True, parse=lambda w, v: _name(f"{w}.bg_from", v))
    rotate: float = declare(0.0, lo=0.0, hi=180.0)  # random rotation within +-rotate degrees
    scale: float = declare(0.0, lo=0.0, hi=0.9)  # random zoom by a factor in [1 - scale, 1 + scale]
    shift: float = declare(0.0, lo=0.0, hi=0.5)  # random shift by up to this fraction of the image size, per axis
    brightness: float = declare(0.0, lo=0.0, hi=1.0)  # brightness multiplied by a factor in [1 - b, 1 + b]
    contrast: float = declare(0.0, lo=0.0, hi=1.0)  # contrast around the image mean scaled by [1 - c, 1 + c]
    # colour (3-channel inputs; no effect on grey ones): another camera's colour cast and saturation
    white_balance: float = declare(0.0, lo=0.0, hi=0.5)  # each of R, G, B multiplied by a factor in [1 - w, 1 + w]
    saturation: float = declare(0.0, lo=0.0, hi=1.0)  # distance from the grey image scaled by [1 - s, 1 + s]
    grey: float = declare(0.0, lo=0.0, hi=1.0)  # probability of the grey image (replicated to 3 channels)
    blur: float = declare(0.0, lo=0.0, hi=5.0)  # Gaussian blur, sigma drawn in [0, blur] px (defocus, motion)

    @property
    def geometric(self) -> bool:
        return self.rotate > 0 or self.scale > 0 or self.shift > 0

    @property
    def colour(self) -> bool:
        return self.white_balance > 0 or self.saturation > 0 or self.grey > 0

    @property
    def active(self) -> bool:
        return (self.noise > 0 or self.dropout > 0 or self.flip or self.rot90 or self.geometric
                or self.brightness > 0 or self.contrast > 0 or self.colour or self.blur > 0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = declare(100, lo=1, hi=MAX_EPOCHS)
    batch_size: int = declare(64, lo=1, hi=MAX_BATCH_SIZE)
    lr: float = declare(1e-3, lo=1e-9, hi=MAX_LR)
    weight_decay: float = declare(0.0, lo=0.0)
    # the training loss's target: 1 - s on the label, s spread over every class (0 = plain cross-entropy)
    label_smoothing: float = declare(0.0, lo=0.0, hi=0.5)
    optimizer: str = declare("adam", "choice", choices=("adam", "sgd"), what="optimizer")
    eval_every: int = declare(10, lo=1)
    checkpoint_every: int = declare(1, lo=1)
    augment: AugmentConfig = declare(factory=AugmentConfig, parse=lambda w, v: _build(AUGMENT, f"{w}.augment", v))
    # learning rate per epoch: constant, or cosine (lr -> 0 over the epochs)
    schedule: str = declare("constant", "choice", choices=("constant", "cosine"), what="learning-rate schedule")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based): a pure function of the epoch, so a resumed run matches."""
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.lr


@dataclass(frozen=True)
class VariantConfig:
    """A model / training variant: the classifier options and the training settings."""

    name: str
    model: dict[str, Any]
    train: TrainConfig


@dataclass(frozen=True)
class EvalConfig:
    """Distorted copies of every test set (``bglab.ops.distort``, fixed per-image seed)."""

    distortions: dict[str, dict[str, float]] = declare(factory=dict, parse=lambda w, v: _distortions(w, v))
    seed: int = declare(1234, lo=0, hi=MAX_SEED)
    bootstrap: int = declare(2000, lo=100, hi=MAX_BOOTSTRAP)
    alpha: float = declare(0.05, lo=1e-6, hi=0.5)
    distortion_curves: bool = declare(False)  # distorted copies scored every eval (True) or at the final epoch only


@dataclass(frozen=True)
class StudyConfig:
    """Which protocol x arm x variant runs to train; ``test_arms``: also test every run through these arms."""

    name: str
    protocols: tuple[str, ...]
    arms: tuple[str, ...]
    variants: tuple[str, ...]
    test_arms: tuple[str, ...] = ()
    bg_gap: tuple[str, str] | None = None
    ensembles: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # name -> its members (arm, variant): their class probabilities averaged per seed (soft voting)


@dataclass(frozen=True)
class SaliencyConfig:
    """Grad-CAM at the final epoch: ``n`` sheet images per class of ``test_set`` (None: each protocol's first)."""

    n: int = declare(8, lo=0, hi=64)
    test_set: str | None = declare(None, "str", optional=True)


@dataclass(frozen=True, order=True)
class RunKey:
    """One training run: protocol x arm x variant x seed."""

    protocol: str
    variant: str
    seed: int
    arm: str

    @property
    def id(self) -> str:
        return f"{self.protocol}__{self.arm}__{self.variant}__s{self.seed}"


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seeds: tuple[int, ...]
    split_seed: int
    threads: int
    size: int
    channels: int
    sources: dict[str, SourceConfig]
    protocols: dict[str, ProtocolConfig]
    arms: dict[str, ArmConfig]
    variants: dict[str, VariantConfig]
    evaluate: EvalConfig
    studies: dict[str, StudyConfig]
    baseline: str
    raw: dict[str, Any]
    quick: bool = False
    saliency: SaliencyConfig | None = None

    def runs(self) -> list[RunKey]:
        """Every run the studies ask for, once each, ordered protocol, variant, seed, arm (config order)."""
        pi = {n: i for i, n in enumerate(self.protocols)}
        vi = {n: i for i, n in enumerate(self.variants)}
        ai = {n: i for i, n in enumerate(self.arms)}
        keys = {RunKey(p, v, s, a) for st in self.studies.values() for p in st.protocols for a in st.arms
                for v in st.variants for s in self.seeds}
        return sorted(keys, key=lambda k: (pi[k.protocol], vi[k.variant], k.seed, ai[k.arm]))

    def used_arms(self) -> list[str]:
        """Arms to preprocess: trained arms, test arms of matrix studies and the backgrounds of ``bg_swap``."""
        used = {a for st in self.studies.values() for a in (*st.arms, *st.test_arms)}
        for k in self.runs():
            bg = self.variants[k.variant].train.augment
            if bg.bg_swap > 0 and bg.bg_from:
                used.add(bg.bg_from)
        return [a for a in self.arms if a in used]

    def test_arms(self, key: RunKey) -> list[str]:
        """The test arms a run is also evaluated through (union over the matrix studies that train it)."""
        out: list[str] = []
        for st in self.studies.values():
            if key.protocol in st.protocols and key.arm in st.arms and key.variant in st.variants:
                out += [a for a in st.test_arms if a not in out]
        return out

    def in_ensemble(self, key: RunKey) -> bool:
        """Whether a study averages this run's class probabilities with others' (``ensembles``)."""
        return any(key.protocol in st.protocols and (key.arm, key.variant) in members
                   for st in self.studies.values() for members in st.ensembles.values())

    def matrix_studies(self) -> list[StudyConfig]:
        """The studies with ``test_arms`` (train x test matrices)."""
        return [st for st in self.studies.values() if st.test_arms]

    def used_sources(self) -> list[str]:
        used: set[str] = set()
        for st in self.studies.values():
            for p in st.protocols:
                proto = self.protocols[p]
                used |= set(proto.split) | {t.source for t in proto.test_sets.values()}
        return [s for s in self.sources if s in used]


# ------------------------------------------------------------------------------------------------ parse

AUGMENT, TRAIN, EVAL, SALIENCY = (Schema.of(c, unknown_at_key=True)
                                  for c in (AugmentConfig, TrainConfig, EvalConfig, SaliencyConfig))
DISTORTION = Schema(Field("dropout", "float", 0.0, lo=0.0, hi=1.0), Field("noise", "float", 0.0, lo=0.0, hi=255.0),
                    unknown_at_key=True)
INPUT = Schema(Field("size", "int", 64, lo=8, hi=1024), Field("channels", "int", 1, lo=1, hi=3), unknown_at_key=True)


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(value, list) or not value:
        raise _err("seeds", f"expected a non-empty list of integers, got {_r(value)}")
    return tuple(dict.fromkeys(_int(f"seeds[{i}]", s, lo=0, hi=MAX_SEED) for i, s in enumerate(value)))


TOP = Schema(Field("name", default="experiment", parse=lambda w, v: _name("name", v)),
             Field("seeds", default=[0], parse=_seeds), Field("split_seed", "int", 0, lo=0, hi=MAX_SEED),
             Field("threads", "int", 0, lo=0, hi=MAX_THREADS),
             *(Field(k) for k in ("input", "sources", "protocols", "arms", "model", "train", "variants", "evaluate",
                                  "studies", "baseline", "quick", "saliency")), unknown_at_key=True)


def _under(base: Path, path: str) -> Path:
    """``path`` (``~`` expanded) as it is when absolute, else resolved against ``base`` (the config's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _parse_sources(raw: Any, base: Path) -> dict[str, SourceConfig]:
    cfg = _mapping("sources", raw, allow_none=False)
    if not cfg:
        raise _err("sources", "needs at least one source", "e.g. sources: {webcam: {path: data/webcam}}")
    out = {}
    for name, v in cfg.items():
        key = f"sources.{name}"
        _name(key, name)
        if isinstance(v, str):
            v = {"path": v}
        v = _mapping(key, v, allow_none=False)
        _keys(key, v, ("path", "per_class", "group"))
        if "path" not in v:
            raise _err(f"{key}.path", "missing", "an ImageFolder folder or a CSV manifest")
        p = _under(base, str(v["path"]))
        pc = v.get("per_class")
        out[name] = SourceConfig(name, p, None if pc is None else _int(f"{key}.per_class", pc, lo=1),
                                 _group_pattern(f"{key}.group", v.get("group")))
    return out


def _group_pattern(key: str, value: Any) -> str | None:
    """A ``sources.NAME.group`` regular expression, compiled once here so a typo fails before any work."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _err(key, f"expected a regular expression, got {_r(value)}", r"e.g. group: '^(.+)_frame\d+'")
    try:
        re.compile(value)
    except re.error as exc:
        raise _err(key, f"not a regular expression ({exc})", r"e.g. group: '^(.+)_frame\d+'") from None
    return value


def _fractions(key: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise _err(key, f"expected [train, val, test] fractions, got {_r(value)}", "e.g. [0.7, 0.15, 0.15]")
    fr = [check_number(f"{key}[{i}]", f, lo=0.0, hi=1.0) for i, f in enumerate(value)]
    if len(fr) == 2:
        fr.append(0.0)
    if abs(sum(fr) - 1.0) > 1e-6:
        raise _err(key, f"fractions {fr} must sum to 1")
    if fr[0] <= 0:
        raise _err(key, "the train fraction must be > 0")
    return (fr[0], fr[1], fr[2])


def _parse_protocols(raw: Any, sources: Mapping[str, SourceConfig]) -> dict[str, ProtocolConfig]:
    cfg = _mapping("protocols", raw, allow_none=False)
    if not cfg:
        raise _err("protocols", "needs at least one protocol")
    out = {}
    for name, v in cfg.items():
        key = f"protocols.{name}"
        _name(key, name)
        v = _mapping(key, v, allow_none=False)
        _keys(key, v, ("split", "test_sets", "train_on_val"))
        split_raw = _mapping(f"{key}.split", v.get("split"), allow_none=False)
        if not split_raw:
            raise _err(f"{key}.split", "needs at least one source to train on",
                       "e.g. split: {webcam: [0.7, 0.15, 0.15]}")
        split: dict[str, tuple[float, float, float]] = {}
        for s, fr in split_raw.items():
            if s not in sources:
                raise _err(f"{key}.split.{s}", "unknown source", f"defined: {', '.join(sources)}")
            split[s] = _fractions(f"{key}.split.{s}", fr)
        if not any(f[1] > 0 for f in split.values()):
            raise _err(f"{key}.split", "no source gives a validation part", "give some source a val fraction > 0")
        on_val = _train_on_val(f"{key}.train_on_val", v.get("train_on_val"), split)
        tests_raw = _mapping(f"{key}.test_sets", v.get("test_sets"), allow_none=False)
        if not tests_raw:
            raise _err(f"{key}.test_sets", "needs at least one test set", "e.g. test_sets: {webcam: webcam/test}")
        tests: dict[str, TestSetRef] = {}
        for t, ref in tests_raw.items():
            tkey = f"{key}.test_sets.{t}"
            _name(tkey, t)
            src, _, part = str(ref).partition("/")
            if src not in sources:
                raise _err(tkey, f"unknown source {_r(src)}", f"defined: {', '.join(sources)}")
            if part:
                if part not in PARTS:
                    raise _err(tkey, f"unknown part {_r(part)}", "use SOURCE/test (or /val, /train), or SOURCE")
                if src not in split:
                    raise _err(tkey, f"source {_r(src)} is not split in this protocol", f"use {src} (the whole source)")
                if split[src][PARTS.index(part)] <= 0:
                    raise _err(tkey, f"the {part} fraction of {_r(src)} is 0")
                if part == "val" and src in on_val:
                    raise _err(tkey, f"{_r(src)}'s val part trains this protocol (train_on_val)", "use SOURCE/test")
                if part == "train":
                    raise _err(tkey, "testing on the training part measures nothing", "use SOURCE/test")
                tests[t] = TestSetRef(src, part)
            else:
                if src in split:
                    raise _err(tkey, f"source {_r(src)} trains this protocol: testing on all of it would leak",
                               f"use {src}/test")
                tests[t] = TestSetRef(src, None)
        out[name] = ProtocolConfig(name, split, tests, on_val)
    return out


def _train_on_val(key: str, raw: Any, split: Mapping[str, tuple[float, float, float]]) -> tuple[str, ...]:
    """``train_on_val``: split sources with a val part, leaving at least one source's val part to watch."""
    if raw is None:
        return ()
    chosen = _names(key, raw, split, "split source")
    for n in chosen:
        if split[n][1] <= 0:
            raise _err(key, f"the val fraction of {_r(n)} is 0: nothing to train on")
    if all(f[1] <= 0 or s in chosen for s, f in split.items()):
        raise _err(key, "no val part would be left to watch training on",
                   "leave one source's val part out of train_on_val")
    return chosen


def arm_pipeline(steps: list[Any], size: int, channels: int, seed: int = 0) -> dict[str, Any]:
    """An arm's pipeline config: its own steps, then resize to ``size`` (+ grey when ``channels`` is 1)."""
    full = list(copy.deepcopy(steps)) + [{"resize": {"size": size}}]
    if channels == 1:
        full.append("grey")
    return {"seed": seed, "steps": full}


def _parse_arms(raw: Any, size: int, channels: int, base: Path = Path("."),
                known_sources: Mapping[str, Any] | None = None) -> dict[str, ArmConfig]:
    from bglab.pipeline import Pipeline

    cfg = _mapping("arms", raw, allow_none=False)
    if not cfg:
        raise _err("arms", "needs at least one arm", "e.g. arms: {original: []}")
    out = {}
    for name, steps in cfg.items():
        key = f"arms.{name}"
        _name(key, name)
        seed = 0
        source_dir: Path | None = None
        only: tuple[str, ...] | None = None
        if isinstance(steps, Mapping):
            _keys(key, steps, ("steps", "seed", "from", "sources"))
            seed = _int(f"{key}.seed", steps.get("seed", 0), lo=0, hi=MAX_SEED)
            if steps.get("from") is not None:
                source_dir = _under(base, str(steps["from"]))
            if steps.get("sources") is not None:
                if source_dir is not None:
                    raise _err(f"{key}.sources", "cannot be combined with from:",
                               "a from: tree already holds every image of the arm")
                only = _names(f"{key}.sources", steps["sources"], known_sources or {}, "source")
            steps = steps.get("steps")
        steps = [] if steps is None else steps
        if not isinstance(steps, list):
            raise _err(key, f"expected a list of pipeline steps, got {_r(steps)}", "e.g. [{segment: {backend: unet}}]")
        for i, st in enumerate(steps):
            sname = st if isinstance(st, str) else (next(iter(st)) if isinstance(st, Mapping) and st else "")
            if str(sname).lower() in ("resize", "grey", "gray", "greyscale", "grayscale"):
                raise _err(f"{key}[{i}]", f"leave out {_r(sname)}: every arm ends with resize and grey",
                           "set input.size / input.channels instead")
        steps = _resolve_step_paths(steps, base)
        pcfg = arm_pipeline(steps, size, channels, seed)
        try:
            Pipeline.from_config(pcfg)
        except ConfigError as exc:
            raise _err(key, exc.message, exc.hint) from None
        out[name] = ArmConfig(name, list(steps), pcfg, source_dir, only)
    return out


_MODEL_DEFAULTS: dict[str, Any] = {"name": "cnn", "dropout": 0.5, "batchnorm": False}


def _resolve_step_paths(steps: list[Any], base: Path) -> list[Any]:
    """Relative file / folder options of the steps' backends (and a swap background's ``image``), made absolute
    against the config's folder."""
    out = copy.deepcopy(steps)
    for st in out:
        if not isinstance(st, Mapping):
            continue
        for name, body in st.items():
            if not isinstance(body, dict):
                continue
            if str(name).lower() == "background" and "image" in body:
                body["image"] = _relative_made_absolute(body["image"], base)
            for holder in (body.get("options"), *(f.get("options") for f in (body.get("fallback") or [])
                                                 if isinstance(f, dict))):
                if not isinstance(holder, dict):
                    continue
                for k in sorted(path_options()):  # any backend's file / folder options (the registry's)
                    if k in holder:
                        holder[k] = _relative_made_absolute(holder[k], base)
    return out


def _relative_made_absolute(value: Any, base: Path) -> Any:
    """A non-empty relative path string resolved against ``base``; anything else (absolute, empty) as it is."""
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        return str(_under(base, value))
    return value


def _other_network(base: Mapping[str, Any], own: Mapping[str, Any], default: str = "cnn") -> bool:
    """Whether model options ``own`` name another classifier than ``base`` (``default`` where base names none):
    then ``own`` starts afresh, since ``base``'s options belong to another network."""
    return "name" in own and str(own["name"]) != str(base.get("name", default))


def _variant_model(base: Mapping[str, Any], own: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """A variant's model options: the config's ``model`` with the variant's merged in, on top of the named
    classifier's defaults. A variant that names another classifier starts from that classifier's defaults
    (the base model's options belong to another network); a relative ``pretrained:`` file is made absolute."""
    from bglab.train.classifiers import classifier_spec

    if _other_network(base, own):
        base = {}
    name = str(own.get("name", base.get("name", "cnn")))
    if name in ("cnn", "vgg"):  # unchanged construction: run directories made before the registry still match
        m = deep_merge(deep_merge(_MODEL_DEFAULTS, base), own)
    else:
        spec = classifier_spec(name)
        m = deep_merge(deep_merge({"name": spec.name, **spec.defaults}, base), own)
    if isinstance(m.get("pretrained"), str):
        m["pretrained"] = _relative_made_absolute(m["pretrained"], base_dir)
    return m


def inherit_variants(raw: Any, model: Any, outer: Any = None) -> Any:
    """``variants`` with each ``extends: NAME`` resolved: the variant starts from variant NAME's model and train
    (another variant of this mapping, else ``outer``'s, the variants of the config this file extends; a variant
    naming itself means the extended config's) and merges its own over them, as the top-level ``model`` and
    ``train`` merge into a variant (a model of another name starts afresh). Anything not a mapping is returned
    as it is for the parser to report."""
    if not isinstance(raw, Mapping) or not any(isinstance(v, Mapping) and "extends" in v for v in raw.values()):
        return raw
    own = {str(k): v for k, v in raw.items()}
    others = {str(k): v for k, v in outer.items()} if isinstance(outer, Mapping) else {}
    top_name = str(model.get("name", "cnn")) if isinstance(model, Mapping) else "cnn"
    done: dict[str, Any] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Any:
        v = own[name]
        if name in done or not isinstance(v, Mapping) or "extends" not in v:
            return done.get(name, v)
        here, parent = f"variants.{name}", v["extends"]
        key = f"{here}.extends"
        if not isinstance(parent, str) or not parent:
            raise _err(key, f"expected a variant name, got {_r(parent)}", "e.g. extends: pose")
        if parent != name and parent in own:
            if parent in chain:
                raise _err(key, f"variants extend each other in a cycle: {' -> '.join((*chain, name, parent))}")
            start = _mapping(f"variants.{parent}", resolve(parent, (*chain, name)))
        elif parent in others:
            start = _mapping(f"variants.{parent}", others[parent])
        else:
            here_names = [n for n in own if n != name]
            where = [f"{', '.join(names)} ({what})" for names, what in ((here_names, "here"),
                                                                      (list(others), "the extended config")) if names]
            raise _err(key, f"unknown variant {_r(parent)}", f"defined: {'; '.join(where) or 'none'}")
        mine = {k: x for k, x in v.items() if k != "extends"}
        m0, m1 = _mapping(f"variants.{parent}.model", start.get("model")), _mapping(f"{here}.model", mine.get("model"))
        merged = {**start, **mine,
                  "model": m1 if _other_network(m0, m1, top_name) else deep_merge(m0, m1),
                  "train": deep_merge(_mapping(f"variants.{parent}.train", start.get("train")),
                                      _mapping(f"{here}.train", mine.get("train")))}
        done[name] = {k: x for k, x in merged.items() if x != {}}
        return done[name]

    return {n: resolve(n, ()) for n in own}


def _parse_variants(raw: Any, model: Mapping[str, Any], train: Mapping[str, Any], size: int, channels: int,
                    base_dir: Path = Path(".")) -> dict[str, VariantConfig]:
    from bglab.train.classifiers import build_classifier

    cfg = _mapping("variants", raw)
    if not cfg:
        cfg = {"base": {}}
    out = {}
    for name, v in cfg.items():
        key = f"variants.{name}"
        _name(key, name)
        v = _mapping(key, v)
        _keys(key, v, ("model", "train"))
        try:
            m = _variant_model(model, _mapping(f"{key}.model", v.get("model")), base_dir)
        except ConfigError as exc:
            raise _err(key, exc.message, exc.hint) from None
        t = deep_merge(train, _mapping(f"{key}.train", v.get("train")))
        opts = {k: val for k, val in m.items() if k != "name"}
        try:
            build_classifier(str(m["name"]), 2, channels, size, **opts)
        except ConfigError as exc:
            raise _err(key, exc.message, exc.hint) from None
        except (TypeError, ValueError) as exc:
            raise _err(f"{key}.model", str(exc)) from None
        out[name] = VariantConfig(name, m, TRAIN.build(f"{key}.train" if "train" in v else "train", t))
    return out


def _distortions(where: str, raw: Any) -> dict[str, dict[str, float]]:
    dist: dict[str, dict[str, float]] = {}
    for name, d in _mapping(f"{where}.distortions", raw).items():
        key = f"{where}.distortions.{name}"
        _name(key, name)
        if name == "clean":
            raise _err(key, "'clean' is reserved for the undistorted test set")
        dist[name] = DISTORTION.parse(key, _mapping(key, d, allow_none=False))
        if dist[name]["dropout"] == 0 and dist[name]["noise"] == 0:
            raise _err(key, "distorts nothing", "give dropout (probability) and/or noise (SD, 0..255)")
    return dist


def _parse_studies(raw: Any, protocols: Mapping[str, Any], arms: Mapping[str, Any], variants: Mapping[str, Any],
                   ) -> dict[str, StudyConfig]:
    cfg = _mapping("studies", raw)
    if not cfg:
        return {"main": StudyConfig("main", tuple(protocols), tuple(arms), tuple(variants))}
    out = {}
    for name, v in cfg.items():
        key = f"studies.{name}"
        _name(key, name)
        v = _mapping(key, v, allow_none=False)
        _keys(key, v, ("protocols", "arms", "variants", "test_arms", "bg_gap", "ensembles"))
        test_arms: tuple[str, ...] = ()
        if v.get("test_arms") is not None:
            test_arms = _names(f"{key}.test_arms", v["test_arms"], arms, "arm")
        gap: tuple[str, str] | None = None
        if v.get("bg_gap") is not None:
            g = v["bg_gap"]
            if not test_arms:
                raise _err(f"{key}.bg_gap", "needs test_arms", "list the test arms, e.g. [mixed-same, mixed-rand]")
            if not isinstance(g, list | tuple) or len(g) != 2:
                raise _err(f"{key}.bg_gap", f"expected [same-arm, rand-arm], got {_r(g)}",
                           "e.g. [mixed-same, mixed-rand]")
            gn = _names(f"{key}.bg_gap", list(g), {a: 1 for a in test_arms}, "test arm")
            if len(gn) != 2:
                raise _err(f"{key}.bg_gap", "needs two different test arms")
            gap = (gn[0], gn[1])
        elif "mixed-same" in test_arms and "mixed-rand" in test_arms:
            gap = ("mixed-same", "mixed-rand")
        st_arms = _names(f"{key}.arms", v.get("arms", list(arms)), arms, "arm")
        st_variants = _names(f"{key}.variants", v.get("variants", list(variants)[:1]), variants, "variant")
        out[name] = StudyConfig(
            name,
            _names(f"{key}.protocols", v.get("protocols", list(protocols)), protocols, "protocol"),
            st_arms, st_variants, test_arms, gap,
            _parse_ensembles(f"{key}.ensembles", v.get("ensembles"), st_arms, st_variants))
    return out


def _parse_ensembles(key: str, raw: Any, arms: tuple[str, ...], variants: tuple[str, ...]
                      ) -> dict[str, tuple[tuple[str, str], ...]]:
    """``{NAME: [ARM/VARIANT, ...]}``: two or more of the study's runs per seed whose class probabilities are
    averaged. A member may name the arm alone when the study has one variant, the variant alone when it has one
    arm."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    taken = set(arms) | set(variants) | {f"{a} / {v}" for a in arms for v in variants}
    for name, members in _mapping(key, raw).items():
        k = f"{key}.{name}"
        _name(k, name)
        if name in taken:
            raise _err(k, f"{_r(name)} is already an arm or variant of this study", "give the ensemble its own name")
        if not isinstance(members, list | tuple) or len(members) < 2:
            raise _err(k, f"expected a list of two or more members, got {_r(members)}",
                       "e.g. [crop+remove/tuned, original/pose]")
        got: list[tuple[str, str]] = []
        for i, m in enumerate(members):
            parts = str(m).split("/")
            if len(parts) == 2:
                arm, variant = (p.strip() for p in parts)
            elif len(parts) == 1 and len(variants) == 1:
                arm, variant = parts[0].strip(), variants[0]
            elif len(parts) == 1 and len(arms) == 1:
                arm, variant = arms[0], parts[0].strip()
            else:
                raise _err(f"{k}[{i}]", f"expected ARM/VARIANT, got {_r(m)}", f"arms: {', '.join(arms)}; "
                           f"variants: {', '.join(variants)}")
            if arm not in arms or variant not in variants:
                raise _err(f"{k}[{i}]", f"{_r(m)} is not a run of this study",
                           f"arms: {', '.join(arms)}; variants: {', '.join(variants)}")
            if (arm, variant) in got:
                raise _err(f"{k}[{i}]", f"{_r(m)} is listed twice")
            got.append((arm, variant))
        out[name] = tuple(got)
    return out


def run_dir_studies(resolved: Mapping[str, Any]) -> dict[str, StudyConfig]:
    """The studies of a run directory's ``config.yaml`` (as :func:`resolved_config` wrote it), with the defaults
    the parser fills in: what ``bglab eval-cls`` needs to score the ensembles without the sources at hand."""
    r = _mapping("resolved", resolved.get("resolved"))
    return _parse_studies(resolved.get("studies"), _mapping("protocols", resolved.get("protocols")),
                          _mapping("resolved.arms", r.get("arms")), _mapping("resolved.variants", r.get("variants")))


def parse_config(raw: Mapping[str, Any], *, base_dir: str | Path = ".", quick: bool = False) -> ExperimentConfig:
    """Validate a raw config mapping (``quick``: apply its ``quick:`` overrides first)."""
    raw = _mapping("config", raw, allow_none=False)
    TOP.check_keys("", raw)
    if quick:
        if not raw.get("quick"):
            raise ConfigError("--quick: this config has no quick: section, so there is no quick profile to apply",
                              hint="add one, e.g. quick: {seeds: [0], train: {epochs: 3}} (deep-merged over the "
                                   "config), or run without --quick")
        q = _mapping("quick", raw.get("quick"))
        if "quick" in q:
            raise _err("quick.quick", "not allowed")
        raw = deep_merge(raw, q)
    base = Path(base_dir)
    top = TOP.parse("", {k: v for k, v in raw.items() if k in TOP.keys})  # the keys were checked before quick
    size, channels = _build(INPUT, "input", raw.get("input")).values()
    if channels == 2:
        raise _err("input.channels", "must be 1 (grey) or 3 (RGB)")
    sources = _parse_sources(raw.get("sources"), base)
    protocols = _parse_protocols(raw.get("protocols"), sources)
    arms = _parse_arms(raw.get("arms"), size, channels, base, sources)
    model = _mapping("model", raw.get("model"))
    train = _mapping("train", raw.get("train"))
    TRAIN.build("train", train)  # validates the defaults themselves
    variants = _parse_variants(inherit_variants(raw.get("variants"), model), model, train, size, channels, base)
    studies = _parse_studies(raw.get("studies"), protocols, arms, variants)
    baseline = str(raw.get("baseline", next(iter(arms))))
    if baseline not in arms:
        raise _err("baseline", f"unknown arm {_r(baseline)}", f"defined: {', '.join(arms)}")
    for vname, var in variants.items():
        bg = var.train.augment.bg_from
        if bg is not None and bg not in arms:
            raise _err(f"variants.{vname}.train.augment.bg_from", f"unknown arm {_r(bg)}",
                       f"defined: {', '.join(arms)}")
    saliency = _parse_saliency(raw.get("saliency"), protocols)
    return ExperimentConfig(
        name=top["name"], seeds=top["seeds"], split_seed=top["split_seed"], threads=top["threads"], size=size,
        channels=channels, sources=sources, protocols=protocols, arms=arms, variants=variants,
        evaluate=_build(EVAL, "evaluate", raw.get("evaluate")), studies=studies, baseline=baseline, raw=raw,
        quick=quick, saliency=saliency)


def _parse_saliency(raw: Any, protocols: Mapping[str, ProtocolConfig]) -> SaliencyConfig | None:
    if raw is None:
        return None
    sal = _build(SALIENCY, "saliency", raw)
    known = {t for p in protocols.values() for t in p.test_sets}
    if sal.test_set is not None and sal.test_set not in known:
        raise _err("saliency.test_set", f"unknown test set {_r(sal.test_set)}", f"defined: {', '.join(sorted(known))}")
    return sal


def row_label(cfg: ExperimentConfig, arm: str, variant: str) -> str:
    """A matrix row's name: the arm, with ``+variant`` unless it is the config's first variant."""
    return arm if variant == next(iter(cfg.variants)) else f"{arm}+{variant}"


def load_experiment_config(path: str | Path, *, quick: bool = False) -> ExperimentConfig:
    """Read and validate an experiment YAML file (``quick``: apply its ``quick:`` profile; ``extends``: start
    from another config file, see :func:`read_experiment_raw`)."""
    p = Path(path)
    raw = read_experiment_raw(p)
    try:
        return parse_config(raw, base_dir=p.resolve().parent, quick=quick)
    except ConfigError as exc:
        if exc.path is None:
            raise ConfigError(exc.message, path=p, hint=exc.hint) from None
        raise


def read_experiment_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's mapping; with ``extends: OTHER.yaml`` (relative to this file) the other config's mapping with
    this file's top-level keys replacing its keys whole (a follow-up study restates ``studies`` and
    ``variants`` and keeps the rest). The base's relative paths stay relative to the base's folder."""
    raw = read_config_file(path, what="experiment config",
                           shape_hint="see bglab/configs/rps-reference.yaml, or write one with bglab init experiment")
    if "extends" not in raw:
        return _with_variants_inherited(raw, None, path)
    ext = raw.pop("extends")
    if not isinstance(ext, str) or not ext:
        raise ConfigError(f"extends: expected a config file name, got {_r(ext)}", path=path,
                          hint="e.g. extends: rps-reference.yaml (relative to this file)")
    seen = (*_seen, path.resolve())
    base_path = _under(seen[-1].parent, ext).resolve()
    if base_path in seen:
        raise ConfigError(f"extends: {ext} extends itself (a cycle)", path=path)
    base = _absolute_paths(read_experiment_raw(base_path, seen), base_path.parent)
    merged = _with_variants_inherited({**base, **raw}, base.get("variants"), path)
    quick = merged.get("quick")
    if "quick" not in raw and "studies" in raw and isinstance(quick, dict) and isinstance(quick.get("studies"), dict):
        # the base's quick profile shrinks the base's studies: it must not bring them back into this one
        own = raw["studies"] if isinstance(raw["studies"], dict) else {}
        merged["quick"] = {**quick, "studies": {k: v for k, v in quick["studies"].items() if k in own}}
    return merged


def _with_variants_inherited(raw: dict[str, Any], outer: Any, path: Path) -> dict[str, Any]:
    """``raw`` with its variants' ``extends`` resolved (against ``outer``, the extended config's variants); the
    file named in any error."""
    try:
        return {**raw, "variants": inherit_variants(raw["variants"], raw.get("model"), outer)} \
            if "variants" in raw else raw
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, hint=exc.hint) from None


def _absolute_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` with the relative paths it names (sources, arms' ``from`` and backend file options, also in
    ``quick``) made absolute against ``folder``, so they survive being merged into a config elsewhere."""
    out = copy.deepcopy(raw)

    def absolute(p: str) -> str:
        return str(_under(folder, p))

    def fix(part: Any) -> None:
        if not isinstance(part, dict):
            return
        srcs = part.get("sources")
        if isinstance(srcs, dict):
            for k, v in srcs.items():
                if isinstance(v, str):
                    srcs[k] = absolute(v)
                elif isinstance(v, dict) and isinstance(v.get("path"), str):
                    v["path"] = absolute(v["path"])
        arms = part.get("arms")
        if isinstance(arms, dict):
            for k, v in arms.items():
                if isinstance(v, list):
                    arms[k] = _resolve_step_paths(v, folder)
                elif isinstance(v, dict):
                    if isinstance(v.get("from"), str):
                        v["from"] = absolute(v["from"])
                    if isinstance(v.get("steps"), list):
                        v["steps"] = _resolve_step_paths(v["steps"], folder)

    def fix_model(part: Any) -> None:  # model.pretrained: FILE, at the top and in every variant
        if not isinstance(part, dict):
            return
        models = [part.get("model")] + [v.get("model") for v in (part.get("variants") or {}).values()
                                        if isinstance(v, dict)]
        for m in models:
            if isinstance(m, dict) and isinstance(m.get("pretrained"), str):
                m["pretrained"] = absolute(m["pretrained"])

    for part in (out, out.get("quick")):
        fix(part)
        fix_model(part)
    return out


def resolved_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as run: paths absolute, the quick profile applied, arm pipelines and variants expanded."""
    out = {k: v for k, v in cfg.raw.items() if k != "quick"}
    out["sources"] = {n: {"path": str(s.path), "per_class": s.per_class, **({"group": s.group} if s.group else {})}
                      for n, s in cfg.sources.items()}
    out["resolved"] = {
        "quick": cfg.quick,
        "arms": {n: {**a.pipeline, **({"from": str(a.source_dir)} if a.source_dir is not None else {}),
                     **({"sources": list(a.sources)} if a.sources is not None else {})}
                 for n, a in cfg.arms.items()},
        "variants": {n: {"model": v.model, "train": _train_dict(v.train)} for n, v in cfg.variants.items()},
        "runs": [k.id for k in cfg.runs()],
    }
    return out


def _train_dict(t: TrainConfig) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(t)
    if t.augment.bg_swap == 0 and t.augment.bg_from is None:  # run directories made before bg_swap still match
        d["augment"].pop("bg_swap")
        d["augment"].pop("bg_from")
    for k in ("rot90", "rotate", "scale", "shift", "brightness", "contrast",  # ... and before these keys
              "white_balance", "saturation", "grey", "blur"):
        if not getattr(t.augment, k):
            d["augment"].pop(k)
    if t.schedule == "constant":  # ... and before the schedule
        d.pop("schedule")
    if not t.label_smoothing:  # ... and before label smoothing
        d.pop("label_smoothing")
    return d

"""Experiment data: sources with their origins, one seeded split for every arm, arm preprocessing, caching.

* :func:`load_sources` reads every source (ImageFolder folder or CSV manifest) with ``origin`` = the source's
  name, keeping at most ``per_class`` samples per class (whole near-duplicate groups, seeded); a source's
  ``group`` pattern ties files by name (frames of one video: :func:`group_by_name`).
* :func:`prepare_arm` runs an arm's :class:`bglab.pipeline.Pipeline` over every sample once and caches the
  result as ``cache/<arm>-<fingerprint>.npz`` (uint8 images, ok flags, errors, keys; read back with
  ``allow_pickle=False``). The fingerprint covers the pipeline config and the sample list, so a changed arm
  or data set is recomputed and an unchanged one is read back.
* :func:`make_protocol` turns a protocol into index arrays (train / val / each test set) over the sample
  table. The split depends only on ``split_seed`` and the samples (never on the arm or the training seed) and
  keeps near-duplicate groups (Roboflow ``.rf.`` copies) whole; samples that failed in *any* arm are left out
  of every arm so that all arms see exactly the same images.
* An arm with ``from:`` reads each sample's image from another tree aligned by class and stem
  (:func:`counterparts`); a missing counterpart fails that sample in that arm. :func:`arm_masks` gives each
  sample's foreground mask at the arm's size (the variant's mask tree for a ``from:`` arm, else the source's
  ``mask_path``), for the background-swap augmentation and the saliency share.
* :func:`distorted` makes the distorted copies of a test set with :mod:`bglab.ops.distort` and a fixed
  per-image seed (the same noise pattern for an image in every arm).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bglab.data.dataset import Sample, combine, read_imagefolder, read_manifest, regroup, sample_key
from bglab.data.dataset import split as split_samples
from bglab.errors import BglabError, DatasetError
from bglab.experiment.config import ArmConfig, ExperimentConfig, ProtocolConfig, SourceConfig
from bglab.io.files import atomic_write_npz

__all__ = ["ArmImages", "ExperimentData", "ProtocolData", "arm_masks", "counterparts", "distorted", "load_data",
           "load_sources", "make_protocol", "prepare_arm", "sample_key"]

Progress = Callable[[str, int, int], None]


def _limit(samples: list[Sample], per_class: int, seed: int, source: str) -> list[Sample]:
    """At most ``per_class`` samples per class, taking whole groups in a seeded order."""
    by_label: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_label[s.label][s.group].append(s)
    out: list[Sample] = []
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        random.Random(f"bglab.experiment.limit|{seed}|{source}|{label}").shuffle(groups)
        taken = 0
        for g in groups:
            if taken >= per_class:
                break
            members = by_label[label][g][: per_class - taken]
            out.extend(members)
            taken += len(members)
    return out


def _read_source(src: SourceConfig) -> list[Sample]:
    p = src.path
    if p.is_file():
        samples = [replace(s, origin=src.name) for s in read_manifest(p)]
    elif not p.exists():
        raise DatasetError(f"source {src.name!r} not found", path=p,
                           hint=f"fix sources.{src.name}.path (relative paths are relative to the config file)")
    else:
        samples = read_imagefolder(p, origin=src.name)
    return samples if src.group is None else group_by_name(samples, src.group, src.name)


def group_by_name(samples: Sequence[Sample], pattern: str, source: str) -> list[Sample]:
    """``sources.NAME.group``: a file whose name ``pattern`` matches joins group ``SOURCE:<text>`` (the first
    capture, else the whole match), whatever its class, so frames of one video stay on one side of every
    split; the others keep their group."""
    rx = re.compile(pattern)

    def key(s: Sample) -> str:
        m = rx.search(Path(s.path).name)
        if m is None:
            return s.group
        return f"{source}:{m.group(1) if rx.groups and m.group(1) is not None else m.group(0)}"

    return regroup(samples, key)


def load_sources(cfg: ExperimentConfig) -> dict[str, list[Sample]]:
    """Samples of every source the studies use, in config order (``per_class`` applied, seeded)."""
    out: dict[str, list[Sample]] = {}
    for name in cfg.used_sources():
        src = cfg.sources[name]
        samples = _read_source(src)
        if src.per_class is not None:
            samples = _limit(samples, src.per_class, cfg.split_seed, name)
        out[name] = sorted(samples, key=lambda s: (s.label, str(s.path)))
    combine(*out.values())  # refuses a file with two labels across sources
    return out


# ------------------------------------------------------------------------------------------- arm images


@dataclass
class ArmImages:
    """One arm's preprocessed images: ``images[i]`` for sample ``i``; ``ok[i]`` False where it failed (``errors[i]``
    says why); an ``errors[i]`` where ``ok[i]`` is True is the QC note of a kept image whose mask is suspect."""

    arm: str
    images: np.ndarray
    ok: np.ndarray
    errors: list[str]
    cached: bool = False


def _stem_index(folder: Path) -> dict[str, Path]:
    """stem -> image file in ``folder`` (first by name when several extensions share a stem)."""
    from bglab.data.dataset import IMAGE_SUFFIXES

    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
                out.setdefault(p.stem, p)
    return out


def counterparts(root: Path, samples: Sequence[Sample], sub: str = "images") -> list[Path | None]:
    """Each sample's file in another tree: ``root/<label>/<sub>/<stem>.*``, else ``root/<label>/<stem>.*``.

    ``sub="masks"`` finds the masks: ``bglab variants``' sibling mask tree (``DST/_masks/<kind>/<label>/``, see
    :func:`bglab.data.dataset.masks_root`), else ``root/<label>/masks/<stem>.*`` (trees written before the sibling
    layout). None where there is none.
    """
    from bglab.data.dataset import masks_root

    index: dict[str, dict[str, Path]] = {}
    out: list[Path | None] = []
    for s in samples:
        if s.label not in index:
            idx = _stem_index(root / s.label / sub)
            if sub == "masks":
                for stem, p in _stem_index(masks_root(root) / s.label).items():
                    idx.setdefault(stem, p)
            else:
                for stem, p in _stem_index(root / s.label).items():
                    idx.setdefault(stem, p)
            index[s.label] = idx
        out.append(index[s.label].get(Path(s.path).stem))
    return out


def _file_id(p: Path | None) -> str:
    if p is None:
        return "-"
    try:
        st = p.stat()
        return f"{p}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{p}|?"


def _fingerprint(arm: ArmConfig, keys: Sequence[str], paths: Sequence[str], shape: tuple[int, ...]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(arm.pipeline, sort_keys=True, default=str).encode())
    h.update(json.dumps(list(shape)).encode())
    for k, p in zip(keys, paths, strict=True):
        h.update(f"{k}\0{p}\n".encode())
    return h.hexdigest()


def prepare_arm(arm: ArmConfig, samples: Sequence[Sample], *, size: int, channels: int, cache_dir: Path | None,
                threads: int = 0, progress: Progress | None = None, chunk: int = 16, workers: int = 1) -> ArmImages:
    """Run the arm's pipeline on every sample (or read the cache); failed samples get ``ok=False``.

    ``workers`` > 1 preprocesses chunks in that many processes (one thread each, bglab.batch.engine); the images are
    the same as with one worker (every step is seeded per sample), so the cache does not depend on it. An arm
    with ``sources`` runs its steps on those sources' samples and resize / grey alone on the others."""

    shape = (len(samples), size, size) if channels == 1 else (len(samples), size, size, 3)
    if arm.sources is not None:  # the steps for the named sources, resize / grey alone for the rest
        images = np.zeros(shape, np.uint8)
        ok = np.zeros(len(samples), bool)
        errors = [""] * len(samples)
        cached = True
        inside = [s.origin in arm.sources for s in samples]
        parts = (replace(arm, sources=None), replace(arm, steps=[], pipeline=arm.plain_pipeline, sources=None))
        for part, want in zip(parts, (True, False), strict=True):
            idx = [i for i, flag in enumerate(inside) if flag is want]
            if not idx:
                continue
            got = prepare_arm(part, [samples[i] for i in idx], size=size, channels=channels, cache_dir=cache_dir,
                              threads=threads, progress=progress, chunk=chunk, workers=workers)
            images[idx], ok[idx] = got.images, got.ok
            for i, e in zip(idx, got.errors, strict=True):
                errors[i] = e
            cached = cached and got.cached
        return ArmImages(arm.name, images, ok, errors, cached=cached)
    keys = [sample_key(s) for s in samples]
    if arm.source_dir is None:
        files: list[Path | None] = [s.path for s in samples]
        fp = _fingerprint(arm, keys, [str(s.path) for s in samples], shape)
    else:
        if not arm.source_dir.is_dir():
            raise DatasetError(f"arm {arm.name!r}: the from: folder does not exist", path=arm.source_dir,
                               hint=f"make it (bglab variants SRC DST) or fix arms.{arm.name}.from "
                                    "(relative paths are relative to the config file)")
        files = counterparts(arm.source_dir, samples)
        fp = _fingerprint(arm, keys, [f"from:{_file_id(f)}" for f in files], shape)
    cache = None if cache_dir is None else Path(cache_dir) / f"{arm.name}-{fp[:16]}.npz"
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fp and z["images"].shape == shape:
                    errors = [str(e) for e in z["errors"]]
                    return ArmImages(arm.name, z["images"].copy(), z["ok"].astype(bool), errors, cached=True)
        except (OSError, ValueError, KeyError):
            pass  # a broken cache is recomputed
    images = np.zeros(shape, np.uint8)
    ok = np.zeros(len(samples), bool)
    errors = [""] * len(samples)
    jobs = []
    for start in range(0, len(samples), chunk):
        idx = list(range(start, min(start + chunk, len(samples))))
        for i in idx:
            if files[i] is None:
                errors[i] = (f"{samples[i].path}: no counterpart {samples[i].label}/{Path(samples[i].path).stem}"
                             f".* in {arm.source_dir} (arm {arm.name})")
        good = [i for i in idx if files[i] is not None]
        jobs.append((idx, good, [files[i] for i in good], [keys[i] for i in good]))
    from bglab.batch.engine import run_batch

    pooled = workers > 1 and len(jobs) > 1
    done = {"n": 0}

    def on_chunk(_: Any, results: list[tuple[list[int], list[Any]]]) -> None:
        done["n"] += _collect(results, shape, images, ok, errors, samples)
        if progress is not None:
            progress(arm.name, done["n"], len(samples))

    if run_batch(jobs, partial(_ArmWorker, arm.pipeline, 1 if pooled else threads), on_chunk,
                 workers=workers if pooled else 1, preload=["bglab.pipeline", "bglab.foreground"], kept="arms"):
        raise KeyboardInterrupt  # an unfinished arm is never cached
    if cache is not None:
        atomic_write_npz(cache, images=images, ok=ok, errors=np.array(errors, dtype=str),
                         keys=np.array(keys, dtype=str), fingerprint=np.array(fp))
    return ArmImages(arm.name, images, ok, errors)


class _ArmWorker:
    """The arm's pipeline (its backends opened once per process) over chunks of jobs."""

    def __init__(self, pipeline: Mapping[str, Any], threads: int) -> None:
        from bglab.foreground import Runtime
        from bglab.pipeline import Pipeline

        self.pipe = Pipeline.from_config(pipeline, runtime=Runtime(threads=threads))

    def process(self, jobs: Sequence[Any]) -> list[tuple[list[int], list[Any]]]:
        return [_arm_chunk(job, self.pipe) for job in jobs]

    def close(self) -> None:
        self.pipe.close()


def _arm_chunk(job: tuple[list[int], list[int], list[Path], list[str]], pipe: Any) -> tuple[list[int], list[Any]]:
    """Read and preprocess one chunk with ``pipe``: (chunk indices, per good index an image array or an error
    string)."""
    from bglab.io.files import read_image

    idx, good, files, keys = job
    batch, ids, bkeys, srcs, out = [], [], [], [], {}
    for i, f, k in zip(good, files, keys, strict=True):
        try:
            batch.append(read_image(f))
            ids.append(i)
            bkeys.append(k)
            srcs.append(f)
        except BglabError as exc:
            out[i] = str(exc)
    if batch:
        results = pipe.run_batch(batch, sources=srcs, keys=bkeys)
        for i, f, r in zip(ids, srcs, results, strict=True):
            note = f"{f}: {r.status}" + (f" ({r.qc})" if getattr(r, "qc", "") else "")
            if r.image is None:
                out[i] = r.error or note
            elif getattr(r, "qc", ""):  # kept, but its mask failed QC: the note travels with the image
                out[i] = (np.asarray(r.image), note)
            else:
                out[i] = np.asarray(r.image)
    return idx, [(i, out[i]) for i in good]


def _collect(results: Any, shape: tuple[int, ...], images: np.ndarray, ok: np.ndarray, errors: list[str],
             samples: Sequence[Sample]) -> int:
    """Put chunk results in place (any order); return how many samples they held."""
    done = 0
    for idx, items in results:
        for i, got in items:
            if isinstance(got, str):
                errors[i] = got
                continue
            if isinstance(got, tuple):  # a usable image whose mask failed QC: its note, with ok[i] True
                got, errors[i] = got
            img = got[:, :, 0] if len(shape) == 3 and got.ndim == 3 and got.shape[2] == 1 else got
            if img.shape != shape[1:]:
                errors[i] = f"{samples[i].path}: arm output has shape {img.shape}, expected {shape[1:]}"
                continue
            images[i] = img
            ok[i] = True
        done += len(idx)
    return done


# -------------------------------------------------------------------------------------------- the table


@dataclass
class ExperimentData:
    """Every sample of every used source, its label index, and each arm's images (aligned by index)."""

    classes: list[str]
    samples: list[Sample]
    keys: list[str]
    labels: np.ndarray
    origins: np.ndarray
    arms: dict[str, ArmImages]
    ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def dropped(self) -> dict[str, list[str]]:
        """Per arm, the errors of the samples it could not preprocess."""
        return {a: [e for e, o in zip(im.errors, im.ok, strict=True) if not o] for a, im in self.arms.items()}

    def suspect(self) -> dict[str, list[str]]:
        """Per arm, the QC notes of samples it kept although their mask failed QC (bglab.ops.qc)."""
        return {a: [e for e, o in zip(im.errors, im.ok, strict=True) if o and e] for a, im in self.arms.items()}


def load_data(cfg: ExperimentConfig, *, cache_dir: Path | None, progress: Progress | None = None,
              workers: int = 1) -> ExperimentData:
    """Read the sources and preprocess them with every used arm (cached; ``workers`` processes); ``ok`` = usable
    in every arm."""
    sources = load_sources(cfg)
    samples = [s for src in sources.values() for s in src]
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DatasetError(f"the experiment needs at least 2 classes, found {classes}",
                           hint="check the sources' class folders")
    cls_index = {c: i for i, c in enumerate(classes)}
    labels = np.array([cls_index[s.label] for s in samples], np.int64)
    origins = np.array([s.origin for s in samples], dtype=str)
    keys = [sample_key(s) for s in samples]
    dup = {k for k, n in Counter(keys).items() if n > 1}
    if dup:
        raise DatasetError(f"two samples share the key {sorted(dup)[0]!r} (origin/label/filename)",
                           hint="rename one of the files")
    arms = {}
    for name in cfg.used_arms():
        arms[name] = prepare_arm(cfg.arms[name], samples, size=cfg.size, channels=cfg.channels,
                                 cache_dir=cache_dir, threads=cfg.threads, progress=progress, workers=workers)
    ok = np.ones(len(samples), bool)
    for a in arms.values():
        ok &= a.ok
    return ExperimentData(classes, samples, keys, labels, origins, arms, ok)


@dataclass
class ProtocolData:
    """Index arrays into :class:`ExperimentData` for one protocol: train, val and each named test set."""

    name: str
    train: np.ndarray
    val: np.ndarray
    tests: dict[str, np.ndarray]

    def counts(self, data: ExperimentData) -> dict[str, dict[str, int]]:
        parts = {"train": self.train, "val": self.val, **{f"test:{k}": v for k, v in self.tests.items()}}
        out = {}
        for name, idx in parts.items():
            row = {c: int((data.labels[idx] == i).sum()) for i, c in enumerate(data.classes)}
            row["total"] = int(len(idx))
            out[name] = row
        return out


def make_protocol(cfg: ExperimentConfig, proto: ProtocolConfig, data: ExperimentData) -> ProtocolData:
    """The protocol's parts as sorted index arrays, leaving out samples that failed in any arm."""
    index = {str(s.path): i for i, s in enumerate(data.samples)}
    parts: dict[str, dict[str, list[int]]] = {}  # source -> part -> indices
    for src, fractions in proto.split.items():
        members = [s for s in data.samples if s.origin == src]
        sp = split_samples(members, fractions=fractions, seed=cfg.split_seed)
        parts[src] = {p: [index[str(s.path)] for s in getattr(sp, p)] for p in ("train", "val", "test")}

    def keep(ids: list[int]) -> np.ndarray:
        a = np.array(sorted(ids), np.int64)
        return a[data.ok[a]] if len(a) else a

    train = keep([i for src, p in parts.items() for i in p["train"] + (p["val"] if src in proto.train_on_val else [])])
    val = keep([i for src, p in parts.items() if src not in proto.train_on_val for i in p["val"]])
    tests = {}
    for name, ref in proto.test_sets.items():
        if ref.part is None:
            ids = [i for i, s in enumerate(data.samples) if s.origin == ref.source]
        else:
            ids = parts[ref.source][ref.part]
        tests[name] = keep(ids)
    for part, idx in (("train", train), ("val", val), *((f"test set {k}", v) for k, v in tests.items())):
        if len(idx) == 0:
            raise DatasetError(f"protocol {proto.name!r}: the {part} part is empty",
                               hint="use more images (per_class) or larger fractions")
    return ProtocolData(proto.name, train, val, tests)


def arm_masks(arm: ArmConfig, samples: Sequence[Sample], size: int, errors: list[str] | None = None,
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """Foreground masks ``bool (N, size, size)`` mapped like the arm's images, ``has (N,)`` and a reason.

    A ``from:`` arm uses the variant's mask tree (:func:`counterparts` with ``"masks"``), any other arm the
    sample's ``mask_path``; masks are resize-padded like the images (``bglab.ops.resize_mask_pad``). An arm
    whose own steps crop cannot map a mask: every ``has`` is False and ``reason`` says why (empty otherwise).
    """
    from bglab.io.files import read_mask
    from bglab.ops import resize_mask_pad

    masks = np.zeros((len(samples), size, size), bool)
    has = np.zeros(len(samples), bool)
    if arm.crops:
        return masks, has, (f"arm {arm.name!r} crops its images; its masks cannot be mapped onto them "
                            "(no per-sample crop geometry is kept)")
    paths = (counterparts(arm.source_dir, samples, "masks") if arm.source_dir is not None
             else [s.mask_path for s in samples])
    for i, p in enumerate(paths):
        if p is None:
            continue
        try:
            m = read_mask(p)
        except BglabError as exc:  # the sample counts as having no mask; the error goes to ``errors``
            if errors is not None:
                errors.append(str(exc))
            continue
        masks[i] = resize_mask_pad(m > 127, size)[0]
        has[i] = True
    reason = "" if has.any() else f"arm {arm.name!r}: no masks found for any sample"
    return masks, has, reason


def distorted(images: np.ndarray, keys: Sequence[str], spec: Mapping[str, float], seed: int, name: str
              ) -> np.ndarray:
    """Copies of ``images`` under one distortion (pixel ``dropout`` then Gaussian ``noise``), seeded per image."""
    from bglab.io.seeds import sample_seed
    from bglab.ops.distort import gaussian_noise, pixel_dropout

    out = np.empty_like(images)
    p, sigma = float(spec.get("dropout", 0.0)), float(spec.get("noise", 0.0))
    for i, (img, key) in enumerate(zip(images, keys, strict=True)):
        rng = np.random.default_rng(sample_seed(seed, key, f"experiment.{name}"))
        x = img
        if p > 0:
            x = pixel_dropout(x, p, rng=rng)
        if sigma > 0:
            x = gaussian_noise(x, sigma, rng=rng)
        out[i] = x
    return out

"""The :class:`Pipeline`: an ordered list of checked steps run on one image or a batch, sessions opened lazily."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BglabError, ConfigError
from bglab.errors import short_repr as _r
from bglab.io.limits import MAX_SEED
from bglab.io.schema import Field, Schema
from bglab.pipeline.config import CONFIG_VERSION, load_config, step_entries
from bglab.pipeline.state import SampleState, StepResult
from bglab.pipeline.steps import STEP_TYPES, BackgroundStep, CropStep, DistortStep, LocateStep, SegmentStep, Step

FORMATS: tuple[str, ...] = ("png", "webp", "jpg")
OUTPUT = Schema(Field("format", "choice", "png", choices=(*FORMATS, "jpeg")),
                Field("quality", "int", 95, lo=1, hi=100), text=True)


def _version(where: str, version: Any) -> int:
    if version != CONFIG_VERSION:
        raise ConfigError(f"config.version: {_r(version)} is not supported", hint=f"use version: {CONFIG_VERSION}")
    return CONFIG_VERSION


TOP = Schema(Field("version", default=CONFIG_VERSION, parse=_version), Field("seed", "int", 0, lo=0, hi=MAX_SEED),
             Field("steps"), Field("output"), text=True)


class Pipeline:
    """An ordered list of steps; call it on an image, or :meth:`run_batch` on several (batched backends)."""

    def __init__(self, steps: Sequence[Step], *, seed: int = 0, output: Mapping[str, Any] | None = None,
                 runtime: Any = None) -> None:
        self.steps = list(steps)
        self.seed = int(seed)
        out = OUTPUT.parse("output", dict(output or {}))
        self.format = "jpg" if out["format"] == "jpeg" else out["format"]
        self.quality = out["quality"]
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
        top = TOP.parse("config", config)
        steps = [STEP_TYPES[name](cfg, where) for name, cfg, where in step_entries(top["steps"])]
        return cls(steps, seed=top["seed"], output=top["output"], runtime=runtime)

    def to_config(self) -> dict[str, Any]:
        """The resolved config (every default written out); ``from_config(to_config())`` is equivalent."""
        return {"version": CONFIG_VERSION, "seed": self.seed,
                "steps": [{st.name: st.to_config()} for st in self.steps], "output": OUTPUT.to_config(self)}

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
        from bglab.foreground import Runtime

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
        states: list[SampleState] = []
        for img, src, key in zip(images, sources, keys, strict=True):
            s = SampleState(image=img, original=img, source=None if src is None else Path(src),
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
                         hint="read images with bglab.io.files.read_image")


def _result(s: SampleState) -> StepResult:
    ok = s.active
    box = s.to_original(s.box) if (ok and s.box is not None) else None
    if s.status == "skipped" or s.status == "failed":
        box = None
    image = np.ascontiguousarray(s.image) if ok else None
    return StepResult(image=image, status=s.status, box=box, box_source=s.box_source if box is not None else "",
                      found=s.found, coverage=s.coverage, timings=dict(s.timings), error=s.error,
                      mask=s.mask if ok else None, qc=s.qc)



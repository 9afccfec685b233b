"""The adversarial-background challenge (Xiao et al. 2021, "Noise or Signal"): can *some* background fool the model?

For every test foreground (an image with its foreground mask) every test background is tried: the foreground
is pasted with its mask onto each image's Only-BG-T version (the object's box filled with tiles of the largest
free background rectangle, :func:`bglab.ops.background.fill_box`), the composite goes through the run's arm
preprocessing and the model. A foreground is **broken** when at least one background makes the model predict a
wrong class; the broken share is taken over the foregrounds the model classifies correctly on their own
original image. The mean accuracy over all foreground x background composites is reported as well.

Two ways to make the composites (``mode``):

* ``fast`` (what ``auto`` picks when the arm's pipeline is only ``resize`` + ``grey``, e.g. the ``original``
  arm): each foreground is resized once to the model size with its mask (the arm's own ``resize`` step: aspect
  kept, padded), each background once to the foreground's resized content area (stretched, as Xiao et al.
  stretch backgrounds to the image), and the composites are blended **at model size** in one numpy operation
  per foreground, then ``grey`` as the arm does. This is what makes N_fg x N_bg affordable on a CPU (a few
  microseconds of numpy per composite instead of a full-resolution blend and resize). ``fast`` on an arm with
  other steps ignores them (they are listed in the result as ``ignored_steps``): an approximation, say so.
* ``full`` (what ``auto`` picks otherwise): the composite is made at the foreground's full resolution (the
  background stretched to it) and the run's whole arm pipeline runs on it (segmenters included; a
  ``mask-files`` segmenter finds the foreground's own mask since the composite's source is the foreground's
  file). Exact, and N_fg x N_bg pipeline runs: keep ``max_fg`` / ``max_bg`` small.

Runs sharing a pipeline share the composites (built once per foreground, predicted by every model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bglab.data.dataset import Sample, sample_key
from bglab.errors import BglabError, DatasetError

__all__ = ["MODES", "ChallengeError", "ChallengeItem", "ChallengeResult", "RunModel", "broken_sheet",
           "challenge_predictions", "find_runs", "held_out", "load_items", "run_challenge", "score_predictions"]

MODES = ("auto", "fast", "full")
_GEOMETRY_STEPS = ("resize", "grey")
Progress = Callable[[str, int, int], None]


class ChallengeError(BglabError):
    """The challenge cannot run: no finished runs of the arm, no usable foregrounds, unknown classes."""


# ------------------------------------------------------------------------------------------------ data


@dataclass
class ChallengeItem:
    """One usable image: its sample, full-resolution RGB image, soft mask and Only-BG-T background."""

    sample: Sample
    key: str
    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    _small_bg: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _shrunk: np.ndarray | None = field(default=None, repr=False)

    def background_at(self, width: int, height: int, base: int) -> np.ndarray:
        """The Only-BG-T background stretched to ``width`` x ``height`` (cached; pre-shrunk to ~4x ``base``)."""
        import cv2

        hit = self._small_bg.get((width, height))
        if hit is not None:
            return hit
        if self._shrunk is None:  # one expensive full-resolution resize per background, then cheap ones
            h, w = self.background.shape[:2]
            tw, th = min(w, 4 * base), min(h, 4 * base)
            self._shrunk = (self.background if (tw, th) == (w, h)
                            else cv2.resize(self.background, (tw, th), interpolation=cv2.INTER_AREA))
        src = self._shrunk
        shrink = width <= src.shape[1] and height <= src.shape[0]
        out = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        self._small_bg[(width, height)] = out
        return out


def _load_one(s: Sample, segmenter: Any, max_pixels: int | None) -> ChallengeItem | tuple[str, str]:
    """A ready item, or ``("skipped" | "failed", reason)``."""
    from bglab import ops
    from bglab.io.files import read_image, read_mask
    from bglab.ops.box import Box

    try:
        image = read_image(s.path, max_pixels=max_pixels)
    except BglabError as exc:
        return ("failed", str(exc))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    try:
        if segmenter is not None:
            from bglab.background.remove import RemoveOptions, prepare_mask

            mask = prepare_mask(segmenter.predict(image, source=s.path), RemoveOptions())
        elif s.mask_path is None:
            return ("skipped", f"{s.path}: no mask file (expected <class>/masks/{Path(s.path).stem}.png)")
        else:
            mask = ops.as_soft(read_mask(s.mask_path, shape=image.shape), image.shape)
    except BglabError as exc:
        return ("failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
        return ("failed", f"{s.path}: unexpected {type(exc).__name__}: {exc}")
    box = Box.from_mask(mask)
    if box is None:
        return ("skipped", f"{s.path}: empty mask (no foreground pixel)")
    background = ops.fill_box(image, box, mode="tiles", mask=mask)
    return ChallengeItem(s, sample_key(s), image, np.asarray(mask, np.float32), background)


def load_items(samples: Sequence[Sample], *, max_fg: int | None, max_bg: int | None, seed: int = 0,
               segmenter: Any = None, max_pixels: int | None = None, progress: Progress | None = None
               ) -> tuple[list[ChallengeItem], list[ChallengeItem], list[dict[str, str]], list[dict[str, str]]]:
    """``(foregrounds, backgrounds, skipped, failed)``: seeded subsamples of the usable samples.

    Samples are visited in a seeded order and loaded until ``max_fg`` foregrounds and ``max_bg`` backgrounds
    are usable (None = all); the two pools are drawn independently from the same data and may share images.
    Missing / empty masks are skipped with a reason; unreadable images or masks are recorded as failed.
    """
    n = len(samples)
    rng = np.random.default_rng(seed)
    fg_order = rng.permutation(n)
    bg_order = rng.permutation(n)
    want_fg = n if max_fg is None else max(0, int(max_fg))
    want_bg = n if max_bg is None else max(0, int(max_bg))
    loaded: dict[int, ChallengeItem | tuple[str, str]] = {}

    def get(i: int) -> ChallengeItem | tuple[str, str]:
        if i not in loaded:
            loaded[i] = _load_one(samples[i], segmenter, max_pixels)
            if progress is not None:
                progress("load", len(loaded), min(n, want_fg + want_bg))
        return loaded[i]

    def take(order: np.ndarray, want: int) -> list[ChallengeItem]:
        out: list[ChallengeItem] = []
        for i in order:
            if len(out) >= want:
                break
            it = get(int(i))
            if isinstance(it, ChallengeItem):
                out.append(it)
        return sorted(out, key=lambda it: (it.sample.label, it.key))

    fgs = take(fg_order, want_fg)
    bgs = take(bg_order, want_bg)
    skipped = [{"path": str(samples[i].path), "reason": r[1]} for i, r in sorted(loaded.items())
               if isinstance(r, tuple) and r[0] == "skipped"]
    failed = [{"path": str(samples[i].path), "error": r[1]} for i, r in sorted(loaded.items())
              if isinstance(r, tuple) and r[0] == "failed"]
    return fgs, bgs, skipped, failed


# ----------------------------------------------------------------------------------------------- models


@dataclass
class RunModel:
    """A finished run's model with what is needed to feed it: classes, input size / channels, arm pipeline."""

    run: str
    arm: str
    protocol: str
    variant: str
    seed: int
    classes: list[str]
    size: int
    channels: int
    pipeline: dict[str, Any]
    model: Any
    path: Path

    @property
    def pipeline_key(self) -> str:
        """Runs with equal keys see identical composites."""
        return json.dumps([self.pipeline, self.size, self.channels], sort_keys=True, default=str)


def _read_config(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "config.yaml"
    if not p.is_file():
        return {}
    try:
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - only used to pick the default arm
        return {}
    return data if isinstance(data, dict) else {}


def default_arm(run_dir: Path, states: Sequence[dict[str, Any]]) -> str:
    """The run directory's baseline arm (config ``baseline``), else its first arm, else the first finished run's."""
    cfg = _read_config(run_dir)
    arms = [s["arm"] for s in states]
    base = cfg.get("baseline")
    if isinstance(base, str) and base in arms:
        return base
    for name in (cfg.get("arms") or {}):
        if name in arms:
            return str(name)
    return sorted(arms)[0]


def find_runs(run_dir: str | Path, *, arm: str | None = None, protocol: str | None = None,
              runs: Sequence[str] | None = None) -> list[RunModel]:
    """Every finished run of ``arm`` (default: the baseline arm) in a ``bglab experiment`` run directory, loaded."""
    from bglab.experiment.checkpoints import build_run_model, load_checkpoint

    rd = Path(run_dir)
    if not rd.is_dir():
        raise ChallengeError("run directory not found", path=rd, hint="pass the --out folder of `bglab experiment`")
    ckpts = sorted((rd / "checkpoints").glob("*.safetensors"))
    if not ckpts:
        raise ChallengeError("no checkpoints in the run directory", path=rd,
                             hint="run `bglab experiment CONFIG --out RUN_DIR` first")
    loaded = [(p, *load_checkpoint(p)[:2]) for p in ckpts]
    done = [(p, st, w) for p, st, w in loaded if st.get("done")]
    if not done:
        raise ChallengeError("no finished runs in the run directory", path=rd,
                             hint="let the experiment finish (run the same `bglab experiment` command again)")
    chosen = arm or default_arm(rd, [st for _, st, _ in done])
    arms = sorted({st["arm"] for _, st, _ in done})
    sel = [(p, st, w) for p, st, w in done if st["arm"] == chosen and (protocol is None or st["protocol"] == protocol)
           and (not runs or st["run"] in runs)]
    if not sel:
        raise ChallengeError(f"no finished run of arm {chosen!r}" + (f" in protocol {protocol!r}" if protocol else "")
                             + (f" among runs {list(runs)}" if runs else ""), path=rd,
                             hint=f"finished arms: {', '.join(arms)}")
    out: list[RunModel] = []
    for p, st, w in sel:
        classes = list(st["classes"])
        model = build_run_model(st, w)
        out.append(RunModel(st["run"], st["arm"], st["protocol"], st["variant"], int(st["seed"]), classes,
                            int(st["size"]), int(st["channels"]), st["pipeline"], model, p))
    return out


# ------------------------------------------------------------------------------------------- composites


def _steps(pipeline: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for st in pipeline.get("steps", []):
        if isinstance(st, str):
            out.append((st, {}))
        else:
            (name, cfg), = st.items()
            out.append((str(name), dict(cfg or {})))
    return out


def resolve_mode(pipeline: dict[str, Any], mode: str) -> tuple[str, list[str]]:
    """``(fast | full, ignored steps)``: ``auto`` is fast when the arm is only resize / grey, else full."""
    if mode not in MODES:
        raise ChallengeError(f"unknown mode {mode!r}", hint=f"choose one of: {', '.join(MODES)}")
    other = [name for name, _ in _steps(pipeline) if name not in _GEOMETRY_STEPS]
    if mode == "auto":
        mode = "full" if other else "fast"
    names = [name for name, _ in _steps(pipeline)]
    if mode == "fast" and "resize" not in names:
        raise ChallengeError("the arm's pipeline has no resize step, which the fast mode needs",
                             hint="use --mode full")
    return mode, (other if mode == "fast" else [])


class _Composer:
    """Makes the model inputs (uint8, model size) of one foreground on many backgrounds, for one arm pipeline."""

    def __init__(self, pipeline: dict[str, Any], mode: str, channels: int, runtime: Any = None) -> None:
        from bglab.pipeline import Pipeline

        self.mode, self.ignored = resolve_mode(pipeline, mode)
        self.channels = channels
        self._fg_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.mode == "fast":
            steps = [{n: c} for n, c in _steps(pipeline) if n in _GEOMETRY_STEPS]
            cfg = {"seed": pipeline.get("seed", 0), "steps": steps}
            self.pipe = Pipeline.from_config(cfg, runtime=runtime)
            self.resize = next(s for s in self.pipe.steps if s.name == "resize")
            self.grey = next((s for s in self.pipe.steps if s.name == "grey"), None)
            self.resize_only = Pipeline.from_config({"seed": 0, "steps": [{"resize": self.resize.to_config()}]})
        else:
            self.pipe = Pipeline.from_config(pipeline, runtime=runtime)

    def close(self) -> None:
        """Release the pipeline's backend sessions."""
        self.pipe.close()

    def _model_input(self, img: np.ndarray, where: str) -> np.ndarray:
        a = np.asarray(img)
        if self.channels == 1 and a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if self.channels == 1 and a.ndim == 3:
            raise ChallengeError(f"{where}: the arm gives {a.shape[2]}-channel images but the model takes 1",
                                 hint="the checkpoint's pipeline and channels disagree")
        return a

    def originals(self, items: Sequence[ChallengeItem]) -> tuple[np.ndarray | None, list[str]]:
        """Each item's own original image as the model sees it (None where the pipeline failed) and errors."""
        res = self.pipe.run_batch([it.image for it in items], sources=[it.sample.path for it in items],
                                  keys=[it.key for it in items])
        xs, errs = [], []
        for it, r in zip(items, res, strict=True):
            if r.image is None:
                xs.append(None)
                errs.append(r.error or f"{it.sample.path}: {r.status}")
            else:
                xs.append(self._model_input(r.image, str(it.sample.path)))
                errs.append("")
        return xs, errs  # type: ignore[return-value]

    def _grey(self, comps: np.ndarray) -> np.ndarray:
        import cv2

        if self.grey is None:
            return comps
        n, h, w, _ = comps.shape
        g = cv2.cvtColor(np.ascontiguousarray(comps.reshape(n * h, w, 3)), cv2.COLOR_RGB2GRAY).reshape(n, h, w)
        return np.repeat(g[..., None], 3, axis=3) if self.grey.keep_channels else g

    def composites(self, fg: ChallengeItem, bgs: Sequence[ChallengeItem]) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, ok)``: the model inputs of ``fg`` pasted on each background, and which ones were made."""
        if self.mode == "fast":
            return self._fast(fg, bgs), np.ones(len(bgs), bool)
        return self._full(fg, bgs)

    def _fast(self, fg: ChallengeItem, bgs: Sequence[ChallengeItem]) -> np.ndarray:
        from bglab import ops

        if fg.key not in self._fg_cache:  # the foreground at model size, with its mask as alpha
            small = self.resize_only(fg.image).image
            alpha = ops.resize_mask_pad(fg.mask, self.resize.size)[0][:, :, None].astype(np.float32)
            self._fg_cache[fg.key] = (small, alpha)
        small, alpha = self._fg_cache[fg.key]
        h, w = fg.image.shape[:2]
        t = ops.pad_transform(w, h, self.resize.size)
        canvas = np.empty((len(bgs),) + small.shape, np.uint8)
        canvas[...] = np.asarray(self.resize.pad_color, np.uint8)
        base = max(self.resize.size)
        for j, bg in enumerate(bgs):
            canvas[j, t.offset_y:t.offset_y + t.new_height, t.offset_x:t.offset_x + t.new_width] = \
                bg.background_at(t.new_width, t.new_height, base)
        out = small.astype(np.float32)[None] * alpha[None] + canvas.astype(np.float32) * (1.0 - alpha[None])
        comps = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
        return self._grey(comps)

    def _full(self, fg: ChallengeItem, bgs: Sequence[ChallengeItem]) -> tuple[np.ndarray, np.ndarray]:
        from bglab import ops

        xs: list[np.ndarray | None] = []
        for s in range(0, len(bgs), 16):
            chunk = bgs[s:s + 16]
            comps = [ops.replace_background(fg.image, fg.mask, bg.background, fit="stretch") for bg in chunk]
            res = self.pipe.run_batch(comps, sources=[fg.sample.path] * len(chunk), keys=[fg.key] * len(chunk))
            xs += [None if r.image is None else self._model_input(r.image, str(fg.sample.path)) for r in res]
        ok = np.array([x is not None for x in xs], bool)
        shape = next((x.shape for x in xs if x is not None), None)
        if shape is None:
            return np.zeros((len(bgs), 1, 1), np.uint8), ok
        return np.stack([x if x is not None else np.zeros(shape, np.uint8) for x in xs]), ok


def _classes(model: Any, x: np.ndarray) -> np.ndarray:
    from bglab.experiment.inference import predict, to_tensor

    if len(x) == 0:
        return np.zeros(0, np.int64)
    return predict(model, to_tensor(x))[0]


# ------------------------------------------------------------------------------------------------ scoring


def score_predictions(y: np.ndarray, pred_original: np.ndarray, pred: np.ndarray, classes: Sequence[str]
                      ) -> dict[str, Any]:
    """Broken share and composite accuracy from labels ``(F,)``, original predictions ``(F,)`` (-1 = none) and
    composite predictions ``(F, B)`` (-1 = composite not made). Per class by the foreground's label."""
    y = np.asarray(y)
    po = np.asarray(pred_original)
    p = np.asarray(pred).reshape(len(y), -1)
    valid = p >= 0
    correct = (po == y) & (po >= 0)
    wrong = valid & (p != y[:, None])
    broken = correct & wrong.any(axis=1)

    def part(sel: np.ndarray) -> dict[str, Any]:
        n_ok = int(correct[sel].sum())
        n_valid = int(valid[sel].sum())
        return {"n_fg": int(sel.sum()), "original_correct": n_ok, "broken": int(broken[sel].sum()),
                "broken_share": (float(broken[sel].sum()) / n_ok) if n_ok else None,
                "original_accuracy": float(correct[sel].mean()) if sel.any() else None,
                "n_composites": n_valid,
                "composite_accuracy": (float((valid[sel] & ~wrong[sel]).sum()) / n_valid) if n_valid else None}

    out = part(np.ones(len(y), bool))
    out["per_class"] = {c: part(y == i) for i, c in enumerate(classes)}
    out["flipping_backgrounds"] = wrong.sum(axis=1).tolist()
    return out


@dataclass
class ChallengeResult:
    """Everything the challenge found: per run scores, per (protocol, variant) mean and CI over seeds, inputs."""

    runs: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    foregrounds: list[ChallengeItem]
    backgrounds: list[ChallengeItem]
    skipped: list[dict[str, str]]
    failed: list[dict[str, str]]
    info: dict[str, Any]
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    models: list[RunModel] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays beyond small lists; NaN written as null)."""
        return _no_nan({**self.info, "groups": self.groups, "runs": self.runs,
                "foregrounds": [it.key for it in self.foregrounds],
                "backgrounds": [it.key for it in self.backgrounds], "skipped": self.skipped, "failed": self.failed})


def _no_nan(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_no_nan(v) for v in obj]
    return obj


def challenge_predictions(models: Sequence[RunModel], fgs: Sequence[ChallengeItem], bgs: Sequence[ChallengeItem], *,
                          mode: str = "auto", runtime: Any = None, progress: Progress | None = None,
                          batch: int = 1024) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Per run: ``original`` predictions ``(F,)`` and composite predictions ``(F, B)`` (-1 = not made); timings."""
    groups: dict[str, list[RunModel]] = {}
    for m in models:
        groups.setdefault(m.pipeline_key, []).append(m)
    preds: dict[str, dict[str, np.ndarray]] = {}
    timing = {"compose_s": 0.0, "predict_s": 0.0, "composites": 0, "predictions": 0, "modes": {}, "errors": []}
    done_steps, total = 0, len(fgs) * len(groups)
    for runs in groups.values():
        comp = _Composer(runs[0].pipeline, mode, runs[0].channels, runtime)
        timing["modes"][runs[0].arm] = {"mode": comp.mode, "ignored_steps": comp.ignored}
        try:
            origs, errs = comp.originals(fgs)
            timing["errors"] += [e for e in errs if e]
            ok_o = np.array([o is not None for o in origs], bool)
            for m in runs:
                po = np.full(len(fgs), -1, np.int64)
                if ok_o.any():
                    po[ok_o] = _classes(m.model, np.stack([o for o in origs if o is not None]))
                preds[m.run] = {"original": po, "composites": np.full((len(fgs), len(bgs)), -1, np.int64)}
            per = max(1, int(batch) // max(1, len(bgs)))  # foregrounds per model call: big batches are cheaper
            for s in range(0, len(fgs), per):
                t0 = time.perf_counter()
                made = [comp.composites(fg, bgs) for fg in fgs[s:s + per]]
                xs = [x[ok] for x, ok in made if ok.any()]
                t1 = time.perf_counter()
                timing["compose_s"] += t1 - t0
                n_ok = sum(int(ok.sum()) for _, ok in made)
                timing["composites"] += n_ok
                if xs:
                    x_all = np.concatenate(xs)
                    for m in runs:
                        p_all = _classes(m.model, x_all)
                        at = 0
                        for i, (_, ok) in enumerate(made):
                            k = int(ok.sum())
                            preds[m.run]["composites"][s + i, ok] = p_all[at:at + k]
                            at += k
                timing["predict_s"] += time.perf_counter() - t1
                timing["predictions"] += n_ok * len(runs)
                done_steps += len(made)
                if progress is not None:
                    progress("composites", done_steps, total)
        finally:
            comp.close()
    return preds, timing


def _clip01(mean: float, lo: float, hi: float) -> tuple[float, float, float]:
    """A t-interval of a share, clipped to [0, 1] (the t-interval itself knows no bounds)."""
    return mean, (lo if lo != lo else max(0.0, lo)), (hi if hi != hi else min(1.0, hi))


def held_out(run_dir: str | Path, samples: Sequence[Sample], test_set: str) -> list[Sample]:
    """Only the samples that were in the run directory's test set ``test_set`` (matched by class and file stem).

    The experiment saves the keys of every test set's images with its predictions, so the challenge can use
    exactly the held-out images of the models it evaluates, never their training images.
    """
    root = Path(run_dir) / "predictions"
    files = sorted(root.glob(f"*/{test_set}__clean.npz"))
    if not files:
        names = sorted({p.name.split("__")[0] for p in root.glob("*/*__clean.npz")})
        raise ChallengeError(f"no predictions for test set {test_set!r} in this run directory", path=root,
                             hint=f"test sets found: {', '.join(names) or 'none (no finished run)'}")
    keep: set[tuple[str, str]] = set()
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            for k in z["keys"]:
                parts = str(k).split("/")
                keep.add((parts[-2], Path(parts[-1]).stem))
    out = [s for s in samples if (s.label, Path(s.path).stem) in keep]
    if not out:
        raise ChallengeError(f"none of the images is in test set {test_set!r} of the run", path=root,
                             hint="DATA must hold the images the experiment was run on (same classes and names)")
    return out


def run_challenge(run_dir: str | Path, samples: Sequence[Sample], *, arm: str | None = None,
                  protocol: str | None = None, runs: Sequence[str] | None = None, max_fg: int | None = 100,
                  max_bg: int | None = 100, seed: int = 0, mode: str = "auto", segmenter: Any = None,
                  runtime: Any = None, progress: Progress | None = None) -> ChallengeResult:
    """The whole challenge: load the runs and the data, predict every composite, score per run and over seeds."""
    from bglab.experiment.stats import t_interval

    models = find_runs(run_dir, arm=arm, protocol=protocol, runs=runs)
    classes = models[0].classes
    for m in models[1:]:
        if m.classes != classes:
            raise ChallengeError(f"runs disagree on the classes ({m.run}: {m.classes} vs {classes})", path=run_dir)
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DatasetError(f"classes {unknown} were not trained (the model knows {classes})",
                           hint="use class folders named like the training classes")
    if segmenter is None and samples and all(s.mask_path is None for s in samples):
        raise ChallengeError("no masks in the data set", path=Path(samples[0].path).parent.parent,
                             hint="use the <class>/images + <class>/masks layout, or make masks with --backend NAME")
    fgs, bgs, skipped, failed = load_items(samples, max_fg=max_fg, max_bg=max_bg, seed=seed, segmenter=segmenter,
                                           progress=progress)
    if not fgs or not bgs:
        raise ChallengeError(f"no usable foreground image ({len(skipped)} skipped, {len(failed)} failed)",
                             hint=(skipped + failed)[0].get("reason", (skipped + failed)[0].get("error", ""))
                             if (skipped or failed) else "the data set is empty")
    t0 = time.perf_counter()
    preds, timing = challenge_predictions(models, fgs, bgs, mode=mode, runtime=runtime, progress=progress)
    wall = time.perf_counter() - t0
    y = np.array([classes.index(it.sample.label) for it in fgs], np.int64)
    rows: list[dict[str, Any]] = []
    for m in models:
        p = preds[m.run]
        sc = score_predictions(y, p["original"], p["composites"], classes)
        examples = []
        for i in np.flatnonzero((p["original"] == y) & ((p["composites"] >= 0) & (p["composites"] != y[:, None]))
                                .any(axis=1)):
            j = int(np.flatnonzero((p["composites"][i] >= 0) & (p["composites"][i] != y[i]))[0])
            examples.append({"foreground": fgs[i].key, "background": bgs[j].key, "label": classes[y[i]],
                             "predicted": classes[int(p["composites"][i, j])], "fg_index": int(i), "bg_index": j})
        rows.append({"run": m.run, "arm": m.arm, "protocol": m.protocol, "variant": m.variant, "seed": m.seed,
                     **sc, "broken_examples": examples})
    groups = []
    for key in sorted({(r["protocol"], r["variant"]) for r in rows}):
        rs = [r for r in rows if (r["protocol"], r["variant"]) == key]
        g: dict[str, Any] = {"protocol": key[0], "variant": key[1], "arm": rs[0]["arm"], "n_seeds": len(rs)}
        for metric in ("broken_share", "composite_accuracy", "original_accuracy"):
            vals = [r[metric] for r in rs if r[metric] is not None]
            mean, lo, hi = _clip01(*t_interval(vals))
            g[metric] = {"mean": mean, "lo": lo, "hi": hi}
        g["per_class_broken_share"] = {}
        for c in classes:
            mean, lo, hi = _clip01(*t_interval([r["per_class"][c]["broken_share"] for r in rs
                                                if r["per_class"][c]["broken_share"] is not None]))
            g["per_class_broken_share"][c] = {"mean": mean, "lo": lo, "hi": hi}
        groups.append(g)
    n_pred = max(1, timing["predictions"])
    info = {"run_dir": str(run_dir), "arm": models[0].arm, "classes": classes, "size": models[0].size,
            "channels": models[0].channels, "seed": seed, "n_fg": len(fgs), "n_bg": len(bgs),
            "mode": timing["modes"], "timing": {
                "seconds": wall, "composites": timing["composites"], "predictions": timing["predictions"],
                "ms_per_composite": 1000 * wall / n_pred,
                "compose_ms_per_composite": 1000 * timing["compose_s"] / max(1, timing["composites"]),
                "predict_ms_per_composite": 1000 * (timing["predict_s"]) / n_pred},
            "pipeline_errors": timing["errors"]}
    return ChallengeResult(rows, groups, fgs, bgs, skipped, failed, info, preds, list(models))


# --------------------------------------------------------------------------------------------------- sheet


def broken_sheet(result: ChallengeResult, models: Sequence[RunModel] | None = None, *, run: str | None = None,
                 limit: int = 24, mode: str = "auto") -> np.ndarray | None:
    """Contact sheet (RGB) of broken foregrounds of one run: photo | as the model sees it | flipping composite |
    flipping Only-BG-T background. None when nothing is broken."""
    from bglab.ops.viz import contact_sheet

    row = next((r for r in result.runs if run is None or r["run"] == run), None)
    if row is None or not row["broken_examples"]:
        return None
    m = next((m for m in (models or result.models) if m.run == row["run"]), None)
    ex = row["broken_examples"][:limit]
    comp = None
    if m is not None:
        comp = _Composer(m.pipeline, mode, m.channels)
    rows, labels = [], []
    try:
        for e in ex:
            fg, bg = result.foregrounds[e["fg_index"]], result.backgrounds[e["bg_index"]]
            cells = [fg.image]
            if comp is not None:
                orig = comp.originals([fg])[0][0]
                x, _ = comp.composites(fg, [bg])
                cells += [orig if orig is not None else np.zeros((8, 8), np.uint8), x[0]]
            cells.append(bg.background)
            rows.append(cells)
            labels.append(f"{Path(e['foreground']).name} ({e['label']}) -> {e['predicted']} on "
                          f"{Path(e['background']).name}")
    finally:
        if comp is not None:
            comp.close()
    cols = ["photo", "model input", "flipping composite", "flipping background"] if comp is not None else \
        ["photo", "flipping background"]
    return contact_sheet(rows, cell=128, row_labels=labels, col_labels=cols)

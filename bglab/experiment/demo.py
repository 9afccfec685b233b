"""``bglab demo``'s second half: a tiny controlled background experiment on the embedded hands, offline.

The question: does a classifier trained on green-screen photos learn the hand or the green screen, and does
removing the background in preprocessing change that? The data is embedded (``bglab/sample_data/demo``, made
by ``make_demo_set.py``): 40 training and 20 held-out webcam hands per class, on a green screen, 128 x 85 px.

* :func:`build_new_backgrounds` pastes the *same held-out hands* onto new backgrounds (the 13 embedded
  background photos; masks from the chroma key, green spill suppressed): every test hand ``per_image`` times,
  each on a seeded random crop (50-100 % of the largest crop with the image's aspect ratio, random position and
  mirror) of a seeded random photo. It writes ``<out>/<class>/<stem>__bg<k>.png`` and ``<out>/composites.csv``
  (which photo and crop made each file); existing outputs are kept (a re-run redoes nothing), stale ones are
  deleted, a bad file is recorded and the others go on.
* :func:`demo_config` is the experiment: the same small CNN, split, data order and initial weights on two
  arms, ``original`` and ``remove`` (bglab's U-Net, black background), over three seeds; test sets ``webcam``
  (the held-out hands as photographed) and ``new-backgrounds`` (the same hands on the new backgrounds).
* :func:`run_demo_experiment` writes ``OUT/new-backgrounds/``, runs
  :func:`bglab.experiment.runner.run_experiment` into ``OUT/experiment/`` (the same run directory and
  ``report.html`` as ``bglab experiment``; a re-run resumes) and draws ``OUT/experiment_sheet.png``; it returns
  the final accuracy per arm x test set with its spread over seeds. Nothing here expects a particular outcome.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BglabError, ConfigError

__all__ = ["DEMO_NAME", "DemoCell", "DemoResult", "NewBackgroundsReport", "build_new_backgrounds", "demo_config",
           "demo_data_dir", "demo_backgrounds", "run_demo_experiment", "sample_data_dir", "write_examples_sheet"]

DEMO_NAME = "bglab-demo"
ARMS = ("original", "remove")
TEST_SETS = ("webcam", "new-backgrounds")
COMPOSITES_CSV = "composites.csv"

Log = Callable[[str], None]


def sample_data_dir() -> Path:
    """Folder of the photos embedded in the package (with their licence files)."""
    return Path(str(resources.files("bglab") / "sample_data"))


def demo_data_dir() -> Path:
    """The embedded demo set: ``train/<class>/*.jpg``, ``test/<class>/*.jpg``, ``backgrounds/*.jpg``."""
    return sample_data_dir() / "demo"


def demo_backgrounds() -> list[Path]:
    """Every embedded background photo (the demo's and the remove / swap demo's), sorted by file name."""
    data = sample_data_dir()
    files = [*(data / "backgrounds").glob("*.jpg"), *(demo_data_dir() / "backgrounds").glob("*.jpg")]
    return sorted(files, key=lambda p: p.name)


# ------------------------------------------------------------------------------------------------ new backgrounds


@dataclass
class NewBackgroundsReport:
    """What :func:`build_new_backgrounds` did: files written, kept from an earlier run, and failures."""

    out: Path
    written: int = 0
    kept: int = 0
    removed: int = 0  # stale composites of an earlier run, deleted so they do not join the test set
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source file, error)

    @property
    def total(self) -> int:
        return self.written + self.kept


def _crop_plan(rng: random.Random, bw: int, bh: int, w: int, h: int) -> tuple[int, int, int, int, bool]:
    """A random crop ``(x0, y0, x1, y1, mirror)`` of a ``bw x bh`` photo with the aspect ratio of ``w x h``."""
    aspect = w / h
    cw_max = min(bw, bh * aspect)
    cw = max(1, round(cw_max * rng.uniform(0.5, 1.0)))
    ch = max(1, min(bh, round(cw / aspect)))
    x0 = rng.randint(0, bw - cw)
    y0 = rng.randint(0, bh - ch)
    return x0, y0, x0 + cw, y0 + ch, rng.random() < 0.5


def build_new_backgrounds(test_dir: str | Path, backgrounds: Sequence[str | Path], out: str | Path, *,
                          per_image: int = 2, seed: int = 0) -> NewBackgroundsReport:
    """Paste every green-screen test hand in ``test_dir`` on ``per_image`` new backgrounds (seeded) into ``out``.

    The test set of the demo's question "does the model still know the hand when the background changes?".
    """
    from bglab import ops
    from bglab.data.dataset import read_imagefolder
    from bglab.foreground.chroma import ChromaKeySegmenter
    from bglab.io.files import atomic_write_text, read_image, write_image

    if per_image < 1:
        raise ConfigError(f"per_image must be >= 1, got {per_image}")
    bg_files = sorted((Path(b) for b in backgrounds), key=lambda p: p.name)
    if not bg_files:
        raise BglabError("no background photos", path=out, hint="pass at least one background image")
    out = Path(out)
    samples = read_imagefolder(test_dir, mask_dir=None)
    keyer = ChromaKeySegmenter()
    photos: dict[Path, np.ndarray] = {}
    report = NewBackgroundsReport(out)
    rows: list[dict[str, Any]] = []
    for s in samples:
        src = Path(s.path)
        try:
            planned: list[tuple[Path, np.ndarray, tuple[int, int, int, int, bool], dict[str, Any]]] = []
            image: np.ndarray | None = None
            for k in range(per_image):
                rng = random.Random(f"bglab.demo.new-backgrounds|{seed}|{s.label}|{src.stem}|{k}")
                bg_path = bg_files[rng.randrange(len(bg_files))]
                if bg_path not in photos:
                    photos[bg_path] = read_image(bg_path)
                photo = photos[bg_path]
                if image is None:
                    image = read_image(src)
                h, w = image.shape[:2]
                crop = _crop_plan(rng, photo.shape[1], photo.shape[0], w, h)
                dst = out / s.label / f"{src.stem}__bg{k}.png"
                row = {"file": f"{s.label}/{dst.name}", "source": src.name, "background": bg_path.name,
                       "crop": ",".join(str(v) for v in crop[:4]), "mirror": int(crop[4])}
                planned.append((dst, photo, crop, row))
            todo = [p for p in planned if not p[0].is_file()]
            if todo and image is not None:
                res = keyer.analyse(image)
                if not res.screen_found:
                    raise BglabError("no green screen found", path=src,
                                     hint="the demo's test images must be green-screen photos")
                fg = keyer.despill(image, res.mask)
                for dst, photo, (x0, y0, x1, y1, mirror), _ in todo:
                    bg = photo[y0:y1, x0:x1]
                    bg = np.ascontiguousarray(bg[:, ::-1] if mirror else bg)
                    write_image(dst, ops.replace_background(fg, res.mask, bg, fit="stretch"))
        except BglabError as exc:
            report.failed.append((str(src), str(exc)))
            continue
        report.written += len(todo)
        report.kept += len(planned) - len(todo)
        rows += [p[3] for p in planned]
    planned_files = {out / r["file"] for r in rows} | {out / s.label / f"{Path(s.path).stem}__bg{k}.png"
                                                       for s in samples for k in range(per_image)}
    for stale in sorted(out.glob("*/*__bg*.png")):  # left by a run with other test images or per_image
        if stale not in planned_files:
            stale.unlink()
            report.removed += 1
    buf = io.StringIO()
    w_ = csv.DictWriter(buf, fieldnames=["file", "source", "background", "crop", "mirror"], lineterminator="\n")
    w_.writeheader()
    w_.writerows(rows)
    atomic_write_text(out / COMPOSITES_CSV, buf.getvalue())
    return report


# ------------------------------------------------------------------------------------------------ experiment


def demo_config(data_dir: str | Path, new_backgrounds: str | Path, *, quick: bool = False,
                epochs: int | None = None, seeds: Sequence[int] | None = None, threads: int = 1) -> dict[str, Any]:
    """The demo experiment as a raw ``bglab experiment`` config (absolute paths; ``quick``: one seed, 4 epochs).

    ``threads`` defaults to 1: this network is so small that a second torch thread only adds waiting, and on a
    busy machine two spinning threads made training 5-50x slower.
    """
    data_dir, new_backgrounds = Path(data_dir).resolve(), Path(new_backgrounds).resolve()
    n_epochs = epochs if epochs is not None else (4 if quick else 30)
    return {
        "name": DEMO_NAME + ("-quick" if quick else ""),
        "seeds": list(seeds) if seeds is not None else ([0] if quick else [0, 1, 2]),
        "split_seed": 0,
        "threads": threads,
        "input": {"size": 32, "channels": 1},
        "sources": {
            "webcam": {"path": str(data_dir / "train")},
            "webcam-test": {"path": str(data_dir / "test")},
            "new-backgrounds": {"path": str(new_backgrounds)},
        },
        "protocols": {
            "demo": {"split": {"webcam": [0.85, 0.15, 0.0]},
                     "test_sets": {"webcam": "webcam-test", "new-backgrounds": "new-backgrounds"}},
        },
        "arms": {
            "original": [],
            "remove": [{"segment": {"backend": "unet"}}, {"background": {"mode": "remove", "color": "black"}}],
        },
        "baseline": "original",
        "model": {"name": "cnn", "widths": [16, 32], "hidden": 64, "dropout": 0.5, "batchnorm": False},
        "train": {"epochs": n_epochs, "batch_size": 16, "lr": 0.001, "optimizer": "adam",
                  "eval_every": max(1, n_epochs // 6), "checkpoint_every": n_epochs},
        "evaluate": {"distortions": {}, "seed": 1234, "bootstrap": 1000, "alpha": 0.05},
        "studies": {"background": {"protocols": ["demo"], "arms": list(ARMS), "variants": ["base"]}},
    }


@dataclass(frozen=True)
class DemoCell:
    """Final accuracy of one arm on one test set: mean, 95 % t-interval and the value of every seed."""

    arm: str
    test_set: str
    n_images: int
    mean: float
    lo: float
    hi: float
    values: tuple[float, ...]


@dataclass
class DemoResult:
    """What the demo experiment produced: the cells, the verdicts, where it wrote, how long it took."""

    run_dir: Path
    report: Path
    sheet: Path
    cells: list[DemoCell]
    verdicts: list[str]
    new_backgrounds: NewBackgroundsReport
    seconds: float
    seeds: tuple[int, ...]
    epochs: int
    n_train: int

    def cell(self, arm: str, test_set: str) -> DemoCell | None:
        """The cell of ``arm`` x ``test_set`` (None when absent)."""
        return next((c for c in self.cells if c.arm == arm and c.test_set == test_set), None)


def _cells(summary: Mapping[str, Any], counts: Mapping[str, int]) -> list[DemoCell]:
    res = summary["analysis"]["studies"]["background"]["protocols"]["demo"]
    cells = []
    for arm in ARMS:
        for t in TEST_SETS:
            f = res["final"].get(arm, {}).get(f"{t}|clean")
            if not f or not f.get("values"):
                continue
            vals = tuple(float(v) for v in f["values"])
            lo, hi = f.get("lo"), f.get("hi")
            cells.append(DemoCell(arm, t, int(counts.get(t, 0)), float(f["mean"]),
                                  float(lo) if lo is not None else float(min(vals)),
                                  float(hi) if hi is not None else float(max(vals)), vals))
    return cells


def _test_counts(run_dir: Path) -> tuple[dict[str, int], int]:
    """Images per test set and training images, from the run directory's ``data.json``."""
    import json

    info = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    parts = info.get("protocols", {}).get("demo", {})
    tests = {k.split(":", 1)[1]: int(v.get("total", 0)) for k, v in parts.items() if k.startswith("test:")}
    return tests, int(parts.get("train", {}).get("total", 0))


def _is_demo_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a run of this demo (its config's name starts with ``bglab-demo``)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, Mapping) and str(cfg.get("name", "")).startswith(DEMO_NAME)


def write_examples_sheet(cfg: Any, test_dir: Path, new_backgrounds: Path, path: Path, *, per_class: int = 2) -> Path:
    """A contact sheet of a few test hands: photo and new background, each as every arm's network input sees it.

    Shows what "new backgrounds" means and what each arm's preprocessing leaves of it.
    """
    from bglab.data.dataset import read_imagefolder
    from bglab.io.files import read_image, write_image
    from bglab.ops.viz import contact_sheet
    from bglab.pipeline import Pipeline

    pipes = {a: Pipeline.from_config(cfg.arms[a].pipeline) for a in ARMS}
    by_class: dict[str, list[Any]] = {}
    for smp in read_imagefolder(test_dir, mask_dir=None):
        by_class.setdefault(smp.label, []).append(smp)
    rows, labels = [], []
    for label in sorted(by_class):
        items = by_class[label]
        for smp in [items[i] for i in sorted({int((j + 0.5) * len(items) / per_class) for j in range(per_class)})]:
            src = Path(smp.path)
            comp = new_backgrounds / label / f"{src.stem}__bg0.png"
            if not comp.is_file():
                continue
            row = []
            for p in (src, comp):
                img = read_image(p)
                row += [img, *(pipes[a](img, source=p).image for a in ARMS)]
            rows.append(row)
            labels.append(f"{label}/{src.stem}")
    cols = [what for where in ("photo", "new background") for what in (where, *(f"{a} sees" for a in ARMS))]
    write_image(path, contact_sheet(rows, cell=144, row_labels=labels, col_labels=cols))
    for pipe in pipes.values():
        pipe.close()
    return path


def run_demo_experiment(out: str | Path, *, quick: bool = False, epochs: int | None = None,
                        seeds: Sequence[int] | None = None, threads: int = 1, log: Log | None = None,
                        on_epoch: Callable[[Any, int], None] | None = None,
                        data_dir: str | Path | None = None) -> DemoResult:
    """Build ``out/new-backgrounds``, run the experiment into ``out/experiment`` and draw ``out/experiment_sheet.png``.

    ``quick``: one seed, 4 epochs (a smoke run). A run directory left by an
    older demo with another config is started again (only when its config is a demo's: nothing else is deleted).
    ``on_epoch(run_key, epoch)`` is called after every trained epoch (progress bars).
    """
    from bglab.experiment.config import parse_config
    from bglab.experiment.runner import run_experiment

    log = log or (lambda s: None)
    t0 = time.perf_counter()
    out = Path(out)
    data = Path(data_dir) if data_dir is not None else demo_data_dir()
    if not (data / "train").is_dir() or not (data / "test").is_dir():
        raise BglabError("the embedded demo data is missing", path=data,
                         hint="reinstall bglab, or rebuild it with bglab/sample_data/make_demo_set.py")
    nb_dir = out / "new-backgrounds"
    log("pasting the held-out hands on new backgrounds")
    nb = build_new_backgrounds(data / "test", demo_backgrounds(), nb_dir, per_image=2)
    if nb.total == 0:
        raise BglabError("no new-background test images could be made", path=nb_dir,
                         hint="; ".join(e for _, e in nb.failed[:3]) or "check the embedded demo data")
    raw = demo_config(data, nb_dir, quick=quick, epochs=epochs, seeds=seeds, threads=threads)
    cfg = parse_config(raw, base_dir=out.resolve())
    run_dir = out / "experiment"
    try:
        summary = run_experiment(cfg, run_dir, log=log, on_epoch=on_epoch)
    except ConfigError as exc:
        if exc.path is None or Path(exc.path) != run_dir or not _is_demo_run(run_dir):
            raise
        log(f"{run_dir} holds an earlier demo run with another config: starting it again")
        shutil.rmtree(run_dir)
        summary = run_experiment(cfg, run_dir, log=log, on_epoch=on_epoch)
    counts, n_train = _test_counts(run_dir)
    verdicts = [str(v["text"]) for v in summary.get("verdicts", []) if v.get("distortion") == "clean"]
    sheet = write_examples_sheet(cfg, data / "test", nb_dir, out / "experiment_sheet.png")
    return DemoResult(run_dir=run_dir, report=run_dir / "report.html", sheet=sheet, cells=_cells(summary, counts),
                      verdicts=verdicts, new_backgrounds=nb, seconds=time.perf_counter() - t0,
                      seeds=cfg.seeds, epochs=int(raw["train"]["epochs"]), n_train=n_train)

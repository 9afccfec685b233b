"""Background removal as a library: one image in memory (:func:`apply_mode`) or many files (:func:`remove_files`).

``apply_mode`` is pure (numpy in, numpy out); ``remove_files`` adds reading, the segmenter, atomic writing,
resumption (finished outputs are skipped) and a per-file report, so one bad file never stops a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bglab import ops
from bglab.errors import BglabError, ConfigError
from bglab.io.colors import DEFAULT_COLOR
from bglab.ops.box import Box

Mode = Literal["cutout", "mask", "color", "blur", "swap", "crop"]
MODES: tuple[str, ...] = ("cutout", "mask", "color", "blur", "swap", "crop")


def normalize_mode(mode: str) -> str:
    """A mode name as bglab spells it: ``colour`` (British) is accepted everywhere and means ``color``."""
    m = str(mode).strip().lower()
    return "color" if m == "colour" else m
Fit = Literal["cover", "stretch", "tile"]
DEFAULT_SUFFIX = ".png"  # lossless, and keeps alpha for cut-outs; --format changes it


@dataclass(frozen=True)
class RemoveOptions:
    """How to change the background once the mask is known (the CLI flags of ``bglab remove``)."""

    mode: Mode = "cutout"
    color: tuple[int, int, int] = DEFAULT_COLOR
    blur: float = 15.0  # Gaussian sigma in pixels for mode "blur"
    fit: Fit = "cover"  # how a swap background is fitted
    margin: float = 0.1  # crop margin, fraction of the box size on each side
    threshold: float = 0.5  # soft mask -> binary for refinement and boxes
    refine: bool = True  # drop regions < min_region of the largest, fill holes, keep the soft edge
    min_region: float = 0.1
    feather: float = 0.0  # soften the mask edge (Gaussian sigma, pixels)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", normalize_mode(self.mode))  # "colour" -> "color"
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}",
                              hint=f"choose one of {', '.join(MODES)} (colour is accepted for color)")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.blur < 0 or self.margin < 0 or self.feather < 0:
            raise ConfigError("blur, margin and feather must be >= 0")


def prepare_mask(mask: np.ndarray, opts: RemoveOptions) -> np.ndarray:
    """Refine a raw soft mask as the options say (stray regions, holes, feathering); soft edges are kept."""
    soft = ops.as_soft(mask)
    if opts.refine:
        soft = ops.refine(soft, threshold=opts.threshold, min_fraction=opts.min_region, fill=True,
                          soft_edge=True, feather_radius=opts.feather)
    elif opts.feather > 0:
        soft = ops.feather(soft, opts.feather)
    return soft


def apply_mode(
    image: np.ndarray,
    mask: np.ndarray,
    opts: RemoveOptions,
    *,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Change the background of ``image`` given its (refined) soft ``mask``; returns RGB, RGBA or an 8-bit mask."""
    if opts.mode == "cutout":
        return ops.cutout(image, mask)
    if opts.mode == "mask":
        return np.round(ops.as_soft(mask, image.shape[:2]) * 255).astype(np.uint8)
    if opts.mode == "color":
        return ops.fill_background(image, mask, opts.color)
    if opts.mode == "blur":
        return ops.blur_background(image, mask, opts.blur)
    if opts.mode == "swap":
        if background is None:
            raise ConfigError("mode 'swap' needs a background image", hint="pass --background FILE")
        return ops.replace_background(image, mask, background, fit=opts.fit)
    # crop: to the mask's box with a margin; an empty mask keeps the whole image
    box = Box.from_mask(mask, threshold=opts.threshold)
    if box is None:
        return image.copy()
    crop, _ = ops.crop_to_box(image, box, margin=opts.margin)
    return crop


@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    output: Path | None
    status: Literal["done", "suspect", "not-found", "skipped", "failed"]
    coverage: float | None = None
    seconds: float = 0.0
    error: str = ""
    qc: str = ""  # the QC rules the mask broke (status suspect), see bglab.ops.qc
    flags: tuple[str, ...] = ()


@dataclass
class BatchReport:
    """Per-file results of a batch and its totals; ``interrupted`` when Ctrl+C / SIGTERM stopped it early."""

    results: list[FileResult] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def write_csv(self, path: Path) -> Path:
        """Write the report as CSV, atomically."""
        from bglab.batch.engine import write_csv

        return write_csv(path, ["input", "output", "status", "coverage", "seconds", "error", "qc"],
                         ([r.input, r.output or "", r.status, "" if r.coverage is None else f"{r.coverage:.4f}",
                           f"{r.seconds:.4f}", r.error, r.qc] for r in self.results), newline="\r\n")


def collect_inputs(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (file, path relative to its root) pairs, sorted; folders are recursive.

    Every file named explicitly is kept (even with an odd suffix: reading it will say what is wrong);
    inside folders only image suffixes are taken. :func:`collect_inputs_checked` also returns what could not
    be listed.
    """
    return collect_inputs_checked(paths)[0]


def collect_inputs_checked(paths: Sequence[Path]) -> tuple[list[tuple[Path, Path]], list[FileResult]]:
    """:func:`collect_inputs` plus a failed :class:`FileResult` per unreadable sub-folder or symlink loop."""
    from bglab.io.files import list_images_checked

    out: list[tuple[Path, Path]] = []
    problems: list[FileResult] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files, probs = list_images_checked(p)
            out.extend((f, f.relative_to(p)) for f in files)
            problems.extend(FileResult(where, None, "failed", error=f"{where}: {why}") for where, why in probs)
        else:
            out.append((p, Path(p.name)))
    return out, problems


def _roots(items: Sequence[tuple[Path, Path]]) -> list[Path]:
    """What the items were collected from: the folder (file minus its relative path), or the file itself when
    it lies at the top (an explicit file and a folder's top-level file look the same)."""
    roots: dict[Path, None] = {}
    for src, rel in items:
        src = Path(src)
        n = len(Path(rel).parts)
        roots[src.parents[n - 1] if n >= 2 else src] = None
    return list(roots)


def output_path(out_dir: Path, rel: Path, fmt: str | None = None) -> Path:
    """Where the result for input ``rel`` goes: same relative path, new suffix."""
    suffix = f".{fmt.lstrip('.')}" if fmt else DEFAULT_SUFFIX
    return out_dir / rel.with_suffix(suffix)


def check_request(opts: RemoveOptions, *, has_background: bool, fmt: str | None = None) -> None:
    """Refuse option combinations that cannot work (swap without a background, a JPEG cut-out) before any
    file is read, so a command fails at once instead of after drawing its progress bar."""
    if opts.mode == "swap" and not has_background:
        raise ConfigError("mode 'swap' needs a background image", hint="pass --background FILE")
    if fmt in ("jpg", "jpeg") and opts.mode == "cutout":
        raise ConfigError("cutouts carry alpha, which JPEG cannot store", hint="use --format png or webp")


@dataclass(frozen=True)
class _FileJob:
    """Everything one worker needs to turn an input file into an output (picklable for the process pool)."""

    opts: RemoveOptions
    background: np.ndarray | None
    rules: Any
    screen: bool
    policy: str
    overwrite: bool
    max_pixels: int | None


def _process_file(src: Path, dst: Path, segmenter: Any, job: _FileJob) -> FileResult:
    """Segment, check and write one file; every failure becomes a failed :class:`FileResult`."""
    from bglab.foreground import qc as _qc
    from bglab.io.files import read_image, write_image

    t0 = time.perf_counter()
    opts = job.opts
    if dst.exists() and not job.overwrite:
        res = FileResult(src, dst, "skipped")
    else:
        try:
            image = read_image(src, max_pixels=job.max_pixels)
            mask = prepare_mask(segmenter.predict(image, source=src), opts)
            chk = None if job.rules is None else _qc.check_mask(mask, job.rules, image=image, screen=job.screen)
            cov = float(ops.coverage(mask, opts.threshold))
            if chk is not None and chk.status == "not-found":
                res = FileResult(src, None, "not-found", coverage=cov, qc="no foreground found")
            elif chk is not None and chk.status == "suspect" and job.policy != "keep":
                res = _suspect_result(src, None, cov, chk.reason, chk.flags, job.policy)
            else:
                write_image(dst, apply_mode(image, mask, opts, background=job.background))
                res = FileResult(src, dst, "done", coverage=cov)
                if chk is not None and chk.flags:
                    res.status, res.qc, res.flags = "suspect", chk.reason, chk.flags
        except BglabError as exc:
            text = str(exc)
            res = FileResult(src, None, "failed",
                             error=text if exc.path is not None and Path(exc.path) == Path(src) else f"{src}: {text}")
        except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
            res = FileResult(src, None, "failed", error=f"{src}: unexpected {type(exc).__name__}: {exc}")
    res.seconds = time.perf_counter() - t0
    return res


class _RemoveWorker:
    """One segmenter (a ready one, or built by name with ``threads`` CPU threads, 0: the backend's default, on
    ``device``) that turns chunks of (input, output) pairs into :class:`FileResult` records."""

    def __init__(self, segmenter: Any, options: Mapping[str, Any], threads: int, job: _FileJob,
                 device: str = "cpu") -> None:
        if isinstance(segmenter, str):
            from bglab.foreground import Runtime, create

            segmenter = create(segmenter, kind="segmenter", runtime=Runtime.for_threads(threads, device),
                               **dict(options))
        self.segmenter, self.job = segmenter, job

    def process(self, pairs: Sequence[tuple[Path, Path]]) -> list[FileResult]:
        return [_process_file(src, dst, self.segmenter, self.job) for src, dst in pairs]


_PRELOAD = ["numpy", "cv2", "PIL.Image", "bglab.io.files", "bglab.ops", "bglab.background.remove", "bglab.foreground"]


def remove_files(
    items: Sequence[tuple[Path, Path]],
    out_dir: Path,
    segmenter,
    opts: RemoveOptions,
    *,
    background: np.ndarray | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[FileResult], None] | None = None,
    max_pixels: int | None = None,
    qc: Any = None,
    on_suspect: str = "keep",
    problems: Sequence[FileResult] = (),
    workers: int = 1,
    backend_options: Mapping[str, Any] | None = None,
    threads: int = 0,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> BatchReport:
    """Run background removal over ``items`` (from :func:`collect_inputs`) into ``out_dir``.

    One bad file never stops the batch: it is recorded and the rest go on. ``problems`` (from
    :func:`collect_inputs_checked`: unreadable folders, symlink loops) are reported first, as failures, and so
    are output-name clashes, before any image is processed.

    ``segmenter``: a ready segmenter, or a backend name (built with ``backend_options``). ``workers > 1`` and
    ``engine="ray"`` need a name: each worker process / Ray actor of the batch engine
    (:func:`bglab.batch.engine.run_batch`, as ``preprocess``) builds its own session with ``threads`` CPU threads
    (0: 1 per worker) on ``device`` (``cpu`` | ``cuda`` | ``auto``; a ready segmenter keeps its own).

    ``out_dir`` may not overlap an input folder (refused before anything is written, with ``overwrite`` too).
    Outputs that already exist are skipped (so an interrupted run resumes) unless ``overwrite``; temp files
    left by a killed run are removed first. Ctrl+C or SIGTERM (:func:`bglab.batch.engine.run_batch`)
    stops the batch after the current file: the report is returned with ``interrupted`` set.

    Every mask goes through QC (``qc``: :class:`bglab.ops.qc.QCRules`, default rules when None; ``False``
    turns QC off): no foreground at all gives ``not-found`` (nothing written); a broken rule gives
    ``suspect``, and ``on_suspect`` says what then: ``keep`` (written, status suspect), ``skip`` (not
    written) or ``fail`` (not written, status failed). The batch pass (coverage far from the batch median)
    runs at the end and treats the outputs it flags the same way.
    """
    from bglab.batch.engine import check_engine, run_batch
    from bglab.io.files import check_separate, prepare_output_dir, remove_temp_files

    check_request(opts, has_background=background is not None, fmt=fmt)
    workers = int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if (workers > 1 or engine == "ray") and not isinstance(segmenter, str):
        raise ConfigError("workers > 1 and the ray engine need the backend by name (each worker builds its own)",
                          hint="pass the backend name, e.g. remove_files(..., 'unet', opts, workers=2)")
    check_engine(engine, engine_options)  # before anything is written
    from bglab.foreground.onnxrt import check_device

    device = check_device(device)  # cuda without onnxruntime-gpu: before anything is written
    from bglab.foreground import qc as _qc

    policy = _qc.check_on_suspect(on_suspect)
    rules = None if qc is False else (qc or _qc.QCRules())
    name = segmenter if isinstance(segmenter, str) else getattr(segmenter, "name", None)
    screen = _qc.uses_screen(name)
    check_separate(_roots(items), out_dir)
    out_dir = prepare_output_dir(out_dir)
    remove_temp_files(out_dir)
    report = BatchReport()
    job = _FileJob(opts, background, rules, screen, policy, overwrite, max_pixels)

    def record(res: FileResult) -> None:
        report.results.append(res)
        if on_progress is not None:
            on_progress(res)

    for res in problems:
        record(res)
    todo: list[tuple[Path, Path]] = []
    seen: dict[Path, Path] = {}
    for src, rel in items:  # output-name clashes are failures, reported up front
        dst = output_path(out_dir, rel, fmt)
        if dst in seen:
            record(FileResult(src, None, "failed", error=f"{src}: output name {dst.name} clashes with "
                                                          f"{seen[dst]} (same stem); rename one of them"))
            continue
        seen[dst] = src
        todo.append((src, dst))
    pooled = engine == "ray" or (workers > 1 and len(todo) > 1)
    make_worker = partial(_RemoveWorker, segmenter, dict(backend_options or {}),
                          max(int(threads), 1) if pooled else 0, job, device)
    report.interrupted = run_batch(todo, make_worker, lambda _, results: [record(r) for r in results],
                                   workers=workers if pooled else 1, engine=engine, engine_options=engine_options,
                                   threads=max(int(threads), 1), preload=_PRELOAD)
    # with several workers results arrive in completion order; the report lists files in input order
    rank = {str(src): i for i, (src, _) in enumerate(todo)}
    report.results.sort(key=lambda r: rank.get(str(r.input), -1))
    if rules is not None:
        _batch_pass(report, rules, policy)
    return report


def _suspect_result(src: Path, dst: Path | None, cov: float | None, reason: str, flags: tuple[str, ...],
                    policy: str) -> FileResult:
    """A suspect file under ``--on-suspect skip`` (status suspect, no output) or ``fail`` (status failed)."""
    if policy == "fail":
        return FileResult(src, None, "failed", coverage=cov, qc=reason, flags=flags,
                          error=f"{src}: suspect mask ({reason}); --on-suspect fail")
    return FileResult(src, dst, "suspect", coverage=cov, qc=reason, flags=flags)


def _batch_pass(report: BatchReport, rules: Any, policy: str) -> None:
    """Flag this run's written outputs whose coverage is far from the batch median (bglab.ops.qc)."""
    from bglab.ops.qc import median_outliers

    fresh = [r for r in report.results if r.status in ("done", "suspect") and r.output is not None]
    reasons = median_outliers([r.coverage for r in fresh], rules)
    for r, why in zip(fresh, reasons, strict=True):
        if not why:
            continue
        r.qc = f"{r.qc}; {why}" if r.qc else why
        r.flags = (*r.flags, "outlier")
        r.status = "suspect"
        if policy != "keep":
            out = r.output
            new = _suspect_result(r.input, None, r.coverage, r.qc, r.flags, policy)
            r.output, r.status, r.error = None, new.status, new.error
            if out is not None:
                out.unlink(missing_ok=True)


def remove_background(
    image: np.ndarray,
    *,
    mode: Mode = "cutout",
    backend: str | None = None,
    segmenter=None,
    background: np.ndarray | None = None,
    **options,
) -> np.ndarray:
    """One call for one in-memory image: segment it (``backend`` name or a ready ``segmenter``) and apply ``mode``.

    ``options`` are :class:`RemoveOptions` fields (``color=``, ``blur=``, ``fit=``, ``margin=``, ...). Reuse a
    ``segmenter`` from :func:`bglab.foreground.create` when processing many images, so the model loads once.
    """
    if segmenter is None:
        from bglab.foreground import DEFAULT_SEGMENTER, create

        segmenter = create(backend or DEFAULT_SEGMENTER, kind="segmenter")
    opts = RemoveOptions(mode=mode, **options)
    mask = prepare_mask(segmenter.predict(image), opts)
    return apply_mode(image, mask, opts, background=background)

"""Run a :class:`~bglab.pipeline.Pipeline` over whole data sets: parallel, resumable, with a manifest and summary.

Layout of ``DST``::

    DST/<origin>/<class>/<stem>.png   one output per input (format from the config's ``output.format``)
    DST/manifest.parquet              one row per sample (``manifest.csv`` when pyarrow is missing)
    DST/summary.csv                   found / not found / failed per origin x class, with totals
    DST/pipeline.yaml                 the resolved pipeline config the outputs were made with
    DST/.journal/run-*.jsonl          append-only journal: one line per finished sample

Safety: every output is written atomically (:func:`bglab.io.files.write_image`) by a worker, and only after that
does the main process append the sample's journal line (``fsync`` once per chunk). A restart skips the
samples whose journal line exists *and* whose output file exists (``skipped`` samples have no output by
design; ``failed`` ones are retried), removes temp files left by a killed write, and rebuilds the manifest
from the journal, atomically. So a run can be killed at any moment and resumed: no half-written output, no
sample journalled twice, a manifest that matches the files.

Statuses: ``done`` (output written; located, or no locate step; the mask passed QC), ``suspect`` (the mask
broke a QC rule of :mod:`bglab.ops.qc`, output written; ``qc`` says which; the segment step's
``on_suspect: skip | fail`` makes it ``skipped`` / ``failed`` instead), ``not-found`` (no box found, or
a mask with no foreground; output still written as ``on_missing: keep | mask-box`` says), ``skipped`` (no
box and ``on_missing: skip``: no output), ``failed`` (unreadable file, backend error, output name clash:
``error`` says why). The batch pass of the QC (coverage far from the data set's median) runs over every
record when the manifest is written, so resumed runs are judged with the rest. Only ``failed`` makes the
run's exit code 1: not finding a hand is a result (it is what the summary measures), not an error.

Engines (:func:`bglab.batch.engine.run_batch`, shared with ``remove`` and ``variants``): ``local`` runs in this
process (``workers=1``) or a process pool with one backend session per worker (``Runtime(threads=1)``), chunks
of ``chunk`` images per task (batched inference); ``ray`` is :mod:`bglab.batch.ray_engine`. From a Python
script with ``workers > 1``, call :func:`preprocess` under ``if __name__ == "__main__":`` (worker processes
import the main module, as always with ``spawn`` / ``forkserver``).

Only the samples of the current sources are in the manifest; outputs left in DST by earlier runs over other
sources (or another ``--limit``) stay on disk but are not listed.
"""

from __future__ import annotations

import io as _io
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bglab.batch.engine import JOURNAL_DIR, Journal, check_engine, run_batch, write_csv
from bglab.batch.pool import terminate_as_interrupt
from bglab.data.dataset import Sample, sample_key
from bglab.errors import BglabError, ConfigError, DatasetError, safe_text
from bglab.foreground import Runtime
from bglab.io.files import prepare_output_dir, remove_temp_files

__all__ = [
    "Item", "PreprocessReport", "collect_samples", "plan", "preprocess", "summarize",
]

_UNSAFE = re.compile(r"[^\w.+-]+")


# ---------------------------------------------------------------------------------------------- inputs


def _parse_source(src: str | Path) -> tuple[str | None, Path]:
    text = str(src)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name and path:
            return name, Path(path)
    return None, Path(text)


def collect_samples(sources: Sequence[str | Path | Sequence[Sample]], *, manifest: bool | None = None
                    ) -> tuple[list[Sample], list[str]]:
    """Samples from ImageFolder trees and / or CSV manifests, each keeping its origin; plus row problems.

    A source is a folder (origin = its name), a ``.csv`` manifest (or any file with ``manifest=True``),
    ``ORIGIN=PATH`` to name the origin, or an already-built list of samples. Two sources with the same origin
    name are refused (their outputs would mix).
    """
    from bglab.data.dataset import combine, read_imagefolder, read_manifest

    parts: list[list[Sample]] = []
    problems: list[str] = []
    origin_of: dict[str, str] = {}
    for src in sources:
        if not isinstance(src, str | Path):
            parts.append(list(src))
            continue
        name, path = _parse_source(src)
        if path.is_file() and (manifest or path.suffix.lower() == ".csv"):
            samples, probs = read_manifest(path, strict=False)
            if name:
                from dataclasses import replace

                samples = [replace(s, origin=name) for s in samples]
            problems.extend(str(p) for p in probs)
        elif path.is_dir() and not manifest:
            samples = read_imagefolder(path, origin=name)
        elif not path.exists():
            raise DatasetError("source not found", path=path, hint="pass an ImageFolder folder or a CSV manifest")
        else:
            raise DatasetError("cannot read this source", path=path,
                               hint="pass a folder of class sub-folders, or a .csv manifest (path,label,...)")
        for o in {s.origin for s in samples}:
            if o in origin_of and origin_of[o] != str(path):
                raise DatasetError(f"two sources have the origin name {o!r}: {origin_of[o]} and {path}",
                                   path=path, hint=f"name them: OTHERNAME={path}")
            origin_of[o] = str(path)
        parts.append(samples)
    return combine(*parts), problems


@dataclass(frozen=True)
class Item:
    """One unit of work (picklable): the sample's key, input file, output path relative to DST and labels."""

    key: str
    input: str
    output: str
    origin: str
    label: str


def _safe(name: str) -> str:
    s = _UNSAFE.sub("_", str(name)).strip("._") or "_"
    return s


def plan(samples: Iterable[Sample], fmt: str = "png") -> tuple[list[Item], list[dict[str, Any]]]:
    """Work items, and failure records for samples whose output name clashes with an earlier one."""
    items: list[Item] = []
    clashes: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    keys: set[str] = set()
    for s in samples:
        key = sample_key(s)
        out = f"{_safe(s.origin)}/{_safe(s.label)}/{_safe(Path(s.path).stem)}.{fmt}"
        if out in seen or key in keys:
            clashes.append(_record(Item(key, str(s.path), "", s.origin, s.label), "failed",
                                   error=f"{s.path}: output name {out} clashes with {seen.get(out, key)}; "
                                         "rename one of them"))
            continue
        seen[out] = str(s.path)
        keys.add(key)
        items.append(Item(key, str(s.path), out, s.origin, s.label))
    return items, clashes


def _record(item: Item, status: str, *, error: str = "", result: Any = None, timings: Mapping[str, float] = (),
            ) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": item.key, "input": item.input,
                           "output": item.output if status in ("done", "suspect", "not-found") else "",
                           "origin": item.origin, "label": item.label, "status": status,
                           "found": None, "box_source": "", "box": None, "coverage": None,
                           "timings": dict(timings), "error": error}
    if result is not None:
        rec["found"] = result.found
        rec["box_source"] = result.box_source
        rec["box"] = None if result.box is None else [round(v, 3) for v in result.box.xyxy]
        rec["coverage"] = None if result.coverage is None else round(float(result.coverage), 6)
        rec["timings"].update(result.timings)
        if getattr(result, "qc", ""):
            rec["qc"] = result.qc
    rec["timings"] = {k: round(v, 6) for k, v in rec["timings"].items()}
    return rec


# --------------------------------------------------------------------------------------------- workers


class Worker:
    """One pipeline session that reads, processes and writes chunks of items (in a pool process or here)."""

    def __init__(self, config: Mapping[str, Any], dst: str | Path, threads: int = 0,
                 max_pixels: int | None = None, device: str = "cpu") -> None:
        from bglab.pipeline import Pipeline

        self.pipeline = Pipeline.from_config(dict(config), runtime=Runtime.for_threads(threads, device)).open()
        self.dst = Path(dst)
        self.max_pixels = max_pixels

    def process(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        from bglab.io.files import read_image, write_image

        records: dict[int, dict[str, Any]] = {}
        images, idx, reads = [], [], []
        for i, it in enumerate(items):
            t0 = time.perf_counter()
            try:
                images.append(read_image(it.input, max_pixels=self.max_pixels))
                idx.append(i)
                reads.append(time.perf_counter() - t0)
            except BglabError as exc:
                records[i] = _record(it, "failed", error=str(exc), timings={"read": time.perf_counter() - t0})
            except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
                records[i] = _record(it, "failed", error=f"{it.input}: unexpected {type(exc).__name__}: {exc}")
        results = self.pipeline.run_batch(images, sources=[items[i].input for i in idx],
                                          keys=[items[i].key for i in idx]) if images else []
        for i, t_read, res in zip(idx, reads, results, strict=True):
            it = items[i]
            timings = {"read": t_read}
            if res.status in ("done", "suspect", "not-found"):
                t0 = time.perf_counter()
                try:
                    write_image(self.dst / it.output, res.image, quality=self.pipeline.quality)
                except BglabError as exc:
                    records[i] = _record(it, "failed", error=str(exc), timings=timings)
                    continue
                timings["write"] = time.perf_counter() - t0
            records[i] = _record(it, res.status, error=res.error, result=res, timings=timings)
        for rec in records.values():
            rec["timings"]["total"] = round(sum(v for k, v in rec["timings"].items() if k != "total"), 6)
        return [records[i] for i in range(len(items))]

    def close(self) -> None:
        self.pipeline.close()


_PRELOAD = ["numpy", "cv2", "PIL.Image", "bglab.io.files", "bglab.ops", "bglab.pipeline", "bglab.pipeline.preprocess",
            "bglab.foreground"]


# --------------------------------------------------------------------------------------------- report


@dataclass
class PreprocessReport:
    """What a run did: one record per sample (this run's and resumed ones), totals, where things are."""

    dst: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    processed: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manifest_path: Path | None = None
    summary_path: Path | None = None
    summary: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (not-found and skipped are results, not failures), else 1."""
        return 1 if (self.failed or self.problems) else 0


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows per origin x class, then per origin (class ``all``) and overall (``all``/``all``).

    ``found`` counts samples whose box came from a locator and whose mask passed QC; ``not_found`` those where
    none did (statuses not-found and skipped); ``suspect`` those whose mask broke a QC rule (kept or skipped
    by ``on_suspect``); ``failed`` errors. ``found_pct`` = found / (found + not_found + suspect), failures
    excluded: the detection rate of the reference study. Without a locate step ``found`` counts finished
    samples that passed QC.
    """
    cells: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        st = r["status"]
        suspect = st == "suspect" or (st == "skipped" and bool(r.get("qc")))
        kind = "failed" if st == "failed" else "suspect" if suspect else (
            "not_found" if st in ("not-found", "skipped") or r.get("found") is False else "found")
        for key in ((r["origin"], r["label"]), (r["origin"], "all"), ("all", "all")):
            cells[key]["images"] += 1
            cells[key][kind] += 1
            cells[key]["skipped"] += st == "skipped"
    rows = []
    order = sorted(cells, key=lambda k: (k[0] == "all", k[0], k[1] == "all", k[1]))
    for origin, label in order:
        c = cells[(origin, label)]
        seen = c["found"] + c["not_found"] + c["suspect"]
        rows.append({"origin": origin, "label": label, "images": c["images"], "found": c["found"],
                     "not_found": c["not_found"], "suspect": c["suspect"], "skipped": c["skipped"],
                     "failed": c["failed"],
                     "found_pct": round(100.0 * c["found"] / seen, 2) if seen else None})
    return rows


_MANIFEST_BASE = ("key", "input", "output", "origin", "label", "status", "found", "box_source",
                  "box_x0", "box_y0", "box_x1", "box_y1", "coverage", "qc")


def _manifest_rows(records: Sequence[Mapping[str, Any]], step_labels: Sequence[str]) -> tuple[list[str], list]:
    tcols = ["read", *step_labels, "write", "total"]
    extra = sorted({k for r in records for k in r.get("timings", {})} - set(tcols))
    tcols += extra
    cols = [*_MANIFEST_BASE, *(f"t_{t}" for t in tcols), "error"]
    rows = []
    for r in records:
        box = r.get("box") or [None] * 4
        t = r.get("timings", {})
        rows.append([r["key"], r["input"], r["output"], r["origin"], r["label"], r["status"], r.get("found"),
                     r.get("box_source", ""), *box, r.get("coverage"), r.get("qc", ""), *(t.get(k) for k in tcols),
                     r.get("error", "")])
    return cols, rows


def write_manifest(dst: Path, records: Sequence[Mapping[str, Any]], step_labels: Sequence[str]) -> Path:
    """``DST/manifest.parquet`` (``.csv`` without pyarrow), written atomically."""
    import pandas as pd

    from bglab.io.files import atomic_write_bytes

    cols, rows = _manifest_rows(records, step_labels)
    # non-UTF-8 file names (lone surrogates from os.fsdecode) become \xNN escapes: parquet / CSV need UTF-8
    rows = [[safe_text(v) if isinstance(v, str) else v for v in row] for row in rows]
    df = pd.DataFrame(rows, columns=cols)
    df["found"] = df["found"].astype("boolean")
    for c in cols:
        if c.startswith(("box_x", "box_y", "t_")) or c == "coverage":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    try:
        import pyarrow  # noqa: F401

        buf = _io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(dst / "manifest.parquet", buf.getvalue(), fsync=True)
    except ImportError:
        return atomic_write_bytes(dst / "manifest.csv", df.to_csv(index=False).encode(), fsync=True)


def read_output_manifest(dst: str | Path) -> Any:
    """The manifest of a finished run as a pandas DataFrame (parquet or CSV, whichever is there)."""
    import pandas as pd

    dst = Path(dst)
    if (dst / "manifest.parquet").is_file():
        return pd.read_parquet(dst / "manifest.parquet")
    if (dst / "manifest.csv").is_file():
        return pd.read_csv(dst / "manifest.csv", keep_default_na=False)
    raise DatasetError("no manifest.parquet or manifest.csv", path=dst, hint="run bglab preprocess first")


def write_summary(dst: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``DST/summary.csv``, written atomically."""
    cols = ["origin", "label", "images", "found", "not_found", "suspect", "skipped", "failed", "found_pct"]
    return write_csv(dst / "summary.csv", cols, (["" if r[c] is None else r[c] for c in cols] for r in rows),
                     newline="\r\n")


def summary_table(rows: Sequence[Mapping[str, Any]], title: str = "found / not found / failed") -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(safe_text(title)))
    for c in ("origin", "class", "images", "found", "not found", "suspect", "failed", "found %"):
        table.add_column(c, justify="left" if c in ("origin", "class") else "right")
    for r in rows:
        pct = "" if r["found_pct"] is None else f"{r['found_pct']:.1f}"
        style = "bold" if r["label"] == "all" else None
        table.add_row(escape(safe_text(r["origin"])), escape(safe_text(r["label"])), str(r["images"]),
                      str(r["found"]), str(r["not_found"]), str(r.get("suspect", 0)), str(r["failed"]), pct,
                      style=style)
    return table


# ---------------------------------------------------------------------------------------------- runner


def _check_dst_config(dst: Path, config: Mapping[str, Any], journal: Journal, overwrite: bool) -> None:
    import yaml

    path = dst / "pipeline.yaml"
    if overwrite or not path.is_file() or not journal.files():
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an unreadable record is treated as different
        old = None
    if old != dict(config):
        raise ConfigError("this output folder was made with a different pipeline config", path=path,
                          hint="use a new DST, or --overwrite to redo every sample with the new config")


def preprocess(
    sources: Sequence[str | Path | Sequence[Sample]],
    dst: str | Path,
    config: Mapping[str, Any] | str | Path,
    *,
    workers: int = 1,
    chunk: int = 8,
    engine: str = "local",
    threads: int | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    manifest: bool | None = None,
    max_pixels: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    engine_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> PreprocessReport:
    """Run the pipeline over every sample of ``sources`` into ``dst``; see the module doc for the layout.

    ``on_start(total, resumed)`` is called once before processing, ``on_progress(record)`` per finished
    sample. Returns the report; ``report.exit_code`` is 1 when any sample failed. ``threads``: CPU threads
    of each worker's backend session (default: all cores with one worker, 1 per worker with several).
    ``device``: where the ONNX backends run, ``cpu`` | ``cuda`` | ``auto`` (not part of the pipeline's config:
    a resumed run may change it).
    """
    from bglab.pipeline import Pipeline

    t_start = time.perf_counter()
    from bglab.io.limits import MAX_CHUNK, MAX_THREADS, MAX_WORKERS

    if not 1 <= int(workers) <= MAX_WORKERS:
        raise ConfigError(f"workers must be in [1, {MAX_WORKERS}], got {workers}")
    if not 1 <= int(chunk) <= MAX_CHUNK:
        raise ConfigError(f"chunk must be in [1, {MAX_CHUNK}], got {chunk}")
    if threads is not None and not 1 <= int(threads) <= MAX_THREADS:
        raise ConfigError(f"threads must be in [1, {MAX_THREADS}], got {threads}")
    pipe = Pipeline.from_config(config)  # validates; no backend is opened here
    resolved = pipe.to_config()
    check_engine(engine, engine_options)  # an unknown engine or a silent Ray cluster: before anything is written
    from bglab.foreground.onnxrt import check_device

    device = check_device(device)  # cuda without onnxruntime-gpu: before anything is written
    _check_separate(sources, (), Path(dst))  # folders first: before reading them (DST = SRC, nested)
    samples, problems = collect_samples(sources, manifest=manifest)
    if limit is not None and int(limit) < len(samples):
        step = len(samples) / max(int(limit), 1)  # an evenly spaced subset: every class gets its share
        samples = [samples[int(i * step)] for i in range(int(limit))]
    if not samples:
        raise DatasetError("no input images found", hint="check SRC")
    if _resolve_auto(pipe, samples):  # `segment: {backend: auto}` decided once for the data set
        resolved = pipe.to_config()
    items, clashes = plan(samples, pipe.format)
    _check_separate(sources, samples, Path(dst))  # the manifests' files
    dst = prepare_output_dir(dst)
    journal = Journal(dst)
    lock = _lock(dst)
    try:
        with terminate_as_interrupt():  # SIGTERM stops the run like Ctrl+C: the manifest is still written
            return _preprocess_locked(pipe, resolved, items, clashes, problems, dst, journal, t_start,
                                      workers=workers, chunk=chunk, engine=engine, threads=threads,
                                      overwrite=overwrite, max_pixels=max_pixels, on_start=on_start,
                                      on_progress=on_progress, engine_options=engine_options, device=device)
    finally:
        _unlock(lock)


def _check_separate(sources: Sequence[Any], samples: Sequence[Sample], dst: Path) -> None:
    """DST may not be, hold or lie inside a source folder, nor hold a manifest's image (before any write)."""
    from bglab.io.files import check_separate

    folders, files = [], []
    for src in sources:
        if isinstance(src, str | Path):
            _, path = _parse_source(src)
            (folders if path.is_dir() else files).append(path)
    check_separate(folders, dst)
    if samples and (files or len(folders) < len(sources)):
        check_separate([s.path for s in samples if not any(f in Path(s.path).parents for f in folders)], dst)
def _resolve_auto(pipe: Any, samples: Sequence[Sample]) -> bool:
    """Turn a ``segment`` step's ``auto`` backend into its data-set decision (hands on / off); True if changed."""
    from bglab.foreground.auto import resolve

    changed = False
    for step in pipe.steps:
        if getattr(step, "name", "") == "segment" and getattr(step, "backend", "") == "auto":
            new = resolve("auto", step.options, [s.path for s in samples])
            if new != dict(step.options):
                step.options = new
                changed = True
    return changed


def _lock(dst: Path) -> Any:
    """An exclusive lock on ``DST/.journal/lock`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return None
    try:
        (dst / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
        fh = open(dst / JOURNAL_DIR / "lock", "a")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot write in the output folder: {exc.strerror or exc}", path=dst / JOURNAL_DIR,
                          hint="check the folder's permissions, or choose another DST") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ConfigError("another bglab preprocess is writing to this folder", path=dst,
                          hint="wait for it to finish, or use another DST") from None
    return fh


def _unlock(fh: Any) -> None:
    if fh is not None:
        fh.close()


def _preprocess_locked(pipe: Any, resolved: Mapping[str, Any], items: list[Item], clashes: list[dict[str, Any]],
                       problems: list[str], dst: Path, journal: Journal, t_start: float, *, workers: int,
                       chunk: int, engine: str, threads: int | None, overwrite: bool, max_pixels: int | None,
                       on_start: Callable[[int, int], None] | None,
                       on_progress: Callable[[dict[str, Any]], None] | None,
                       engine_options: Mapping[str, Any] | None, device: str = "cpu") -> PreprocessReport:
    from bglab.io.files import atomic_write_text

    _check_dst_config(dst, resolved, journal, overwrite)
    remove_temp_files(dst)
    if overwrite:
        journal.clear()
    atomic_write_text(dst / "pipeline.yaml", pipe.to_yaml())

    latest = journal.latest()
    todo: list[Item] = []
    resumed = 0
    for it in items:
        rec = latest.get(it.key)
        if rec is not None and rec.get("input") == it.input and (
                rec["status"] == "skipped" or (rec["status"] in ("done", "suspect", "not-found")
                                               and rec.get("output") == it.output
                                               and (dst / it.output).is_file())):
            resumed += 1
            continue
        todo.append(it)
    report = PreprocessReport(dst=dst, resumed=resumed, problems=problems)
    if on_start is not None:
        on_start(len(items), resumed)
    if on_progress is not None:
        for rec in clashes:  # output-name clashes are failures, reported before any sample is processed
            on_progress(rec)

    def on_chunk(_: Sequence[Item], recs: list[dict[str, Any]]) -> None:
        journal.append(recs)
        if on_progress is not None:
            for r in recs:
                on_progress(r)

    # threads: all cores in this process, 1 per pool worker unless given; a Ray actor's session uses 1 (the
    # actor gets num_cpus, an engine option)
    pooled = engine == "ray" or int(workers) > 1
    n = 1 if engine == "ray" else (int(threads) if threads is not None else (1 if pooled else 0))
    journal.open()
    try:
        report.interrupted = run_batch(todo, partial(Worker, dict(resolved), str(dst), n, max_pixels, device),
                                       on_chunk,
                                       workers=int(workers), chunk=int(chunk), engine=engine,
                                       engine_options=engine_options, threads=max(n, 1), preload=_PRELOAD,
                                       kept="samples")
    except KeyboardInterrupt:  # a signal between the journal and the engine
        report.interrupted = True
    finally:
        journal.close()
        report.processed = journal.appended
        latest = journal.latest()
        report.records = [latest[it.key] for it in items if it.key in latest] + clashes
        _batch_qc(report.records, pipe)
        report.summary = summarize(report.records)
        report.manifest_path = write_manifest(dst, report.records, pipe.step_labels)
        report.summary_path = write_summary(dst, report.summary)
        report.seconds = time.perf_counter() - t_start
    return report


def _batch_qc(records: list[dict[str, Any]], pipe: Any) -> None:
    """The QC's batch pass (coverage far from the median, bglab.ops.qc) over every record with a mask."""
    seg = pipe.segment_step
    if seg is None or seg.qc_rules is None:
        return
    from bglab.ops.qc import median_outliers

    fresh = [r for r in records if r["status"] in ("done", "suspect") and r.get("coverage") is not None]
    for r, why in zip(fresh, median_outliers([r["coverage"] for r in fresh], seg.qc_rules), strict=True):
        if why:
            r["qc"] = f"{r['qc']}; {why}" if r.get("qc") else why
            if r["status"] == "done":
                r["status"] = "suspect"

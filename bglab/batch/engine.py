"""The one batch engine of ``remove``, ``variants``, ``preprocess``, ``key``, ``correlate`` and the experiments' arm
preparation: chunks of items through a worker, here (on threads), in a process pool (:mod:`bglab.batch.pool`) or on
Ray (:mod:`bglab.batch.ray_engine`).

A command supplies its items (picklable, each with a stable identity the command keys its records by) and
``make_worker``: a picklable zero-argument factory (a module-level class or a ``functools.partial`` of one)
whose result has ``process(chunk) -> list`` (one record per item, in the chunk's order; a bad item is a failed
record, never an exception). The engine builds one worker per process / Ray actor, keeps ``2 x workers`` chunks
in flight, hands each finished chunk to ``on_chunk`` (journal it, count it, report progress) and turns Ctrl+C /
SIGTERM into a clean stop, so the caller still writes its manifest. Resuming is the caller's choice of items:
those whose output (or :class:`Journal` line) exists are left out of the next run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bglab.batch.pool import run_pool, terminate_as_interrupt
from bglab.errors import BglabError, ConfigError

__all__ = ["ENGINES", "JOURNAL_DIR", "Journal", "Worker", "check_engine", "run_batch", "write_csv"]

ENGINES = ("local", "ray")
JOURNAL_DIR = ".journal"
T = TypeVar("T")


class Worker(Protocol):
    """What ``make_worker()`` returns: one session (backend, pipeline) that processes chunks of items."""

    def process(self, items: Sequence[Any]) -> list[Any]: ...


def check_engine(engine: str, engine_options: Mapping[str, Any] | None = None) -> None:
    """Refuse an unknown engine, a missing Ray and an unreachable Ray cluster, before anything is written."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", hint=f"choose one of: {', '.join(ENGINES)}")
    if engine == "ray":
        from bglab.batch.ray_engine import _import_ray, check_address

        _import_ray()
        check_address(dict(engine_options or {}).get("address"))


# one worker per pool process, built by the pool's initializer
_WORKER: Any = None
_WORKER_ERROR: BaseException | None = None


def _init_worker(make_worker: Callable[[], Worker], threads: int) -> None:
    global _WORKER, _WORKER_ERROR
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(max(threads, 1)))
    try:
        _WORKER = make_worker()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the first task, so the caller sees the real error
        _WORKER_ERROR = exc


def _run_chunk(items: Sequence[Any]) -> tuple[Sequence[Any], list[Any]]:
    if _WORKER is None:
        raise _WORKER_ERROR or BglabError("batch worker was not initialised")
    return items, _WORKER.process(items)


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), max(int(size), 1))]


def _threaded(chunks: list[list[Any]], worker: Worker, threads: int) -> Iterator[tuple[Sequence[Any], list[Any]]]:
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        yield from zip(chunks, pool.map(worker.process, chunks), strict=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on a signal: finish the running chunks only


def _stream(chunks: list[list[Any]], make_worker: Callable[[], Worker], *, workers: int, engine: str,
            engine_options: Mapping[str, Any], threads: int, in_threads: int, preload: Sequence[str], kept: str,
            ) -> Iterator[tuple[Sequence[Any], list[Any]]]:
    if engine == "ray":
        from bglab.batch.ray_engine import run_chunks

        yield from run_chunks(chunks, make_worker, workers=workers, **dict(engine_options))
    elif workers == 1:
        worker = make_worker()
        try:
            if in_threads > 1:
                yield from _threaded(chunks, worker, in_threads)
            else:
                for c in chunks:
                    yield c, worker.process(c)
        finally:
            if hasattr(worker, "close"):  # a session that holds backends
                worker.close()
    else:
        yield from run_pool(chunks, _run_chunk, workers=workers, initializer=_init_worker,
                            initargs=(make_worker, threads), preload=preload, kept=kept)


def run_batch(items: Sequence[T], make_worker: Callable[[], Worker],
              on_chunk: Callable[[Sequence[T], list[Any]], None], *, workers: int = 1, chunk: int = 1,
              engine: str = "local", engine_options: Mapping[str, Any] | None = None, threads: int = 1,
              in_threads: int = 1, preload: Sequence[str] = (), kept: str = "outputs") -> bool:
    """Process ``items`` in chunks of ``chunk``; call ``on_chunk(chunk_items, records)`` as each chunk finishes
    (completion order with several workers); return True when Ctrl+C / SIGTERM stopped the run early.

    ``workers`` processes (or Ray actors), each with one ``make_worker()``; only with ``workers == 1`` and the
    local engine does everything run in this process (the worker need not pickle). ``threads`` sets the OpenMP / BLAS
    threads of pool processes; ``preload`` names modules the pool's forkserver imports once. ``in_threads > 1``
    (``--threads`` of ``key`` and ``correlate``) runs the chunks of this process on that many threads, sharing
    one thread-safe worker, in input order.
    """
    check_engine(engine, engine_options)
    if not items:
        return False
    chunks = _chunks(items, chunk)
    try:
        with terminate_as_interrupt():  # SIGTERM stops the run like Ctrl+C: the caller's manifest is still written
            for done, records in _stream(chunks, make_worker, workers=int(workers), engine=engine,
                                         engine_options=engine_options or {}, threads=threads,
                                         in_threads=int(in_threads), preload=preload, kept=kept):
                on_chunk(done, records)
    except KeyboardInterrupt:
        return True
    return False


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], *, newline: str = "\n") -> Path:
    """Write a batch's manifest / report CSV atomically (``newline`` kept per file: existing files stay identical)."""
    import csv
    import io

    from bglab.io.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(header)
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


class Journal:
    """Append-only JSONL journal in ``DIR/.journal``: one file per run, one line (a dict with a ``key``) per
    finished item, made durable once per chunk; a line torn by a kill is ignored on reading."""

    def __init__(self, dst: Path) -> None:
        self.dir = Path(dst) / JOURNAL_DIR
        self._fh: Any = None
        self.appended = 0  # lines this run wrote (the count a report gives, even when a signal cut the loop)

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("run-*.jsonl")) if self.dir.is_dir() else []

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete line of every run, oldest first."""
        for f in self.files():
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and "key" in rec:
                        yield rec

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of every key."""
        return {rec["key"]: rec for rec in self.records()}

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self._fh = open(self.dir / f"run-{stamp}-{os.getpid()}.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append lines and make them durable (one fsync per call: per chunk)."""
        lines = [json.dumps(rec, sort_keys=True) + "\n" for rec in records]
        self._fh.write("".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.appended += len(lines)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def clear(self) -> None:
        for f in self.files():
            f.unlink()

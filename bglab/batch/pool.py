"""One process pool for the batch engine (:mod:`bglab.batch.engine`) and experiment runs: bounded, streaming.

Workers start from a ``forkserver`` that has imported the heavy modules once (else ``spawn``); at most
``2 x workers`` chunks are in flight, and each chunk's result is yielded as soon as it is done, so the caller
can journal it before the next one arrives. A worker that dies ends the run with one clear error; what the
caller already recorded stays recorded.

Workers die with their parent: when the main process is killed (even by SIGKILL), the forkserver and every
worker exit within a second (``PR_SET_PDEATHSIG`` on Linux, plus a watchdog thread that polls the main process),
so nothing is left running under PID 1. :func:`terminate_as_interrupt` turns SIGTERM (sent by ``timeout``,
docker, systemd) into ``KeyboardInterrupt`` so a batch command stops the way Ctrl+C stops it: it writes its
manifest / report and exits 130.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bglab.errors import BglabError

__all__ = ["die_with_parent", "pool_context", "run_pool", "terminate_as_interrupt"]

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; the watchdog below still works
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed parent not yet reaped is a zombie: as good as gone
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def die_with_parent(main_pid: int, interval: float = 0.5) -> None:
    """Make this (worker) process exit when ``main_pid`` is gone: PDEATHSIG on its direct parent, and a daemon
    thread polling ``main_pid`` (the parent of a forkserver worker is the forkserver, not the main process)."""
    _set_pdeathsig()

    def watch() -> None:
        while _alive(main_pid):
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="bglab-die-with-parent", daemon=True).start()


def _guarded_init(main_pid: int, initializer: Callable[..., None], *initargs: Any) -> None:
    die_with_parent(main_pid)
    initializer(*initargs)


def pool_context(preload: Sequence[str]) -> Any:
    """``forkserver`` (workers fork from a server that has imported ``preload`` once) or ``spawn``.

    The forkserver also imports :mod:`bglab.batch._forkserver_guard`, so it dies with the main process."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["bglab.batch._forkserver_guard", *preload])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises ``KeyboardInterrupt`` like Ctrl+C, so ``finally`` blocks
    write their manifest / report; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pool(chunks: Iterable[Any], fn: Callable[[Any], Any], *, workers: int, initializer: Callable[..., None],
             initargs: tuple[Any, ...], preload: Sequence[str], kept: str = "outputs") -> Iterator[Any]:
    """Yield ``fn(chunk)`` for every chunk, in completion order, from ``workers`` processes.

    ``kept`` names what survives a dead worker in the error's hint ("finished <kept> are kept").
    """
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(preload), initializer=_guarded_init,
                             initargs=(os.getpid(), initializer, *initargs))
    pending: set[Future] = set()
    it = iter(chunks)
    try:
        for c in it:
            pending.add(ex.submit(fn, c))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    result = f.result()
                except BrokenProcessPool as exc:
                    raise BglabError(f"a worker process died ({exc})",
                                     hint=f"finished {kept} are kept: run the same command again to resume; "
                                          "--workers 1 shows the error in this process") from None
                yield result
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(ex.submit(fn, nxt))
    finally:
        for f in pending:
            f.cancel()
        ex.shutdown(wait=True, cancel_futures=True)

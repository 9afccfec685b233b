"""One process pool for batch commands (``preprocess``, ``variants``): bounded, streaming, resumable-friendly.

Workers start from a ``forkserver`` that has imported the heavy modules once (else ``spawn``); at most
``2 x workers`` chunks are in flight, and each chunk's result is yielded as soon as it is done, so the caller
can journal it before the next one arrives. A worker that dies ends the run with one clear error; what the
caller already recorded stays recorded.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bglab.errors import BglabError

__all__ = ["pool_context", "run_pool"]


def pool_context(preload: Sequence[str]) -> Any:
    """``forkserver`` (workers fork from a server that has imported ``preload`` once) or ``spawn``."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        return ctx
    return mp.get_context("spawn")


def run_pool(chunks: Iterable[Any], fn: Callable[[Any], Any], *, workers: int, initializer: Callable[..., None],
             initargs: tuple[Any, ...], preload: Sequence[str], kept: str = "outputs") -> Iterator[Any]:
    """Yield ``fn(chunk)`` for every chunk, in completion order, from ``workers`` processes.

    ``kept`` names what survives a dead worker in the error's hint ("finished <kept> are kept").
    """
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(preload), initializer=initializer,
                             initargs=initargs)
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

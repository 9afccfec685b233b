"""``--engine ray`` of the batch engine (:mod:`bglab.batch.engine`: ``preprocess``, ``remove``, ``variants``): the same
chunks of work as the local pool, as a Ray Data pipeline.

The chunks become a Ray Data data set (one pickled row per chunk) mapped with ``map_batches`` over an actor
pool: each actor holds one worker made by the command (one backend session, ``Runtime(threads=1)``) and
processes chunks of items: it reads the inputs and writes the outputs atomically, exactly as a local pool
worker does; the driver appends the journal and writes the manifest, so resuming, the manifest and the
byte-identical outputs are the same as with ``--engine local``.

Local machine (Ray starts and stops a private instance)::

    pip install 'bglab[ray]'
    bglab preprocess data/ out/ --config my.yaml --engine ray --workers 8

A cluster: start Ray on the nodes (``ray start --head`` / ``ray start --address HEAD:6379``) with bglab
installed in the same environment on every node, put SRC and DST on a file system every node mounts at the
same path (outputs are written by the actors, where they run), then point the driver at the cluster::

    bglab preprocess /shared/data /shared/out --config my.yaml --engine ray --workers 64 \
        --engine-option address=auto            # or address=ray://HEAD:10001 from outside the cluster

Engine options (``--engine-option key=value``): ``address`` (``ray.init`` address; default: a private local
instance), ``num_cpus`` (CPUs per actor, default 1), ``runtime_env`` (JSON, passed to ``ray.init``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from bglab.errors import BackendError

__all__ = ["check_address", "run_chunks"]


def _import_ray() -> Any:
    try:
        import ray
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise BackendError(f"the ray engine needs Ray ({type(exc).__name__}: {exc})",
                           hint="pip install 'bglab[ray]', or use --engine local") from None
    return ray


class _ChunkUDF:
    """The ``map_batches`` callable class: one worker per actor; each row is one pickled chunk of items."""

    def __init__(self, make_worker: Callable[[], Any]) -> None:
        self.worker = make_worker()

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        out = [pickle.dumps(self.worker.process(pickle.loads(blob))) for blob in batch["chunk"]]
        return {"chunk": batch["chunk"], "records": np.array(out, dtype=object)}


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, before anything is written, when a cluster ``address`` does not answer.

    ``host:port`` and ``ray://host:port`` are probed with a TCP connection (``ray.init`` itself may wait for
    minutes); ``auto``, ``local`` and no address are left to Ray, which fails fast when no local cluster runs."""
    if not address or str(address).strip().lower() in ("auto", "local"):
        return
    text = str(address).strip()
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendError(f"Ray address {text!r} is not host:port",
                           hint="use --engine-option address=HOST:6379, ray://HOST:10001 or auto")
    import socket

    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise BackendError(f"the Ray cluster at {text} does not answer ({why}, {timeout:g} s)",
                           hint="start it with `ray start --head`, check the address and firewall, "
                                "or use --engine local") from None


def _init(ray: Any, workers: int, num_cpus: float, address: str | None,
          runtime_env: Mapping[str, Any] | None) -> bool:
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = max(int(workers * num_cpus), 1)
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - cannot reach the cluster, bad options, ...
        raise BackendError(f"cannot start or reach Ray ({type(exc).__name__}: {exc})",
                           hint="check --engine-option address=..., or use --engine local") from None
    return True


def run_chunks(chunks: Sequence[Sequence[Any]], make_worker: Callable[[], Any], *, workers: int = 1,
               address: str | None = None, num_cpus: float = 1, runtime_env: Mapping[str, Any] | None = None,
               num_gpus: float = 0) -> Iterator[tuple[list[Any], list[Any]]]:
    """Yield ``(chunk, records)`` for each chunk as Ray Data streams them back (``map_batches`` over actors).

    ``num_gpus`` per actor (e.g. 0.25: four actors share a GPU): Ray hides the GPUs from actors that ask for
    none, so ``--device cuda`` / ``auto`` on Ray needs it.

    ``chunks`` hold picklable items; ``make_worker()`` (picklable) builds, once per actor, an object whose
    ``process(items)`` returns the chunk's records (the engine knows nothing of what the work is).
    """
    if not chunks:
        return
    ray = _import_ray()
    started = _init(ray, workers, num_cpus, address, runtime_env)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.verbose_progress = False
        rows = [{"chunk": pickle.dumps(list(c))} for c in chunks]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ChunkUDF, batch_size=1, concurrency=max(int(workers), 1), num_cpus=num_cpus,
            **({"num_gpus": float(num_gpus)} if num_gpus else {}), fn_constructor_kwargs={"make_worker": make_worker})
        try:
            for row in ds.iter_rows():
                yield pickle.loads(row["chunk"]), pickle.loads(row["records"])
        except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's exception
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
    finally:
        if started:
            ray.shutdown()

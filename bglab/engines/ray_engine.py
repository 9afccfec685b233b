"""``bglab preprocess --engine ray``: the same chunks of work as the local engine, run by Ray actors.

Each actor holds one :class:`bglab.preprocess.Worker` (one backend session, ``Runtime(threads=1)``) and
processes chunks of items: it reads the inputs, runs the pipeline and writes the outputs atomically, exactly
as a local pool worker does; the driver appends the journal and writes the manifest, so resuming, the
manifest and the byte-identical outputs are the same as with ``--engine local``.

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

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bglab.errors import BackendError

__all__ = ["run_chunks"]


def _import_ray() -> Any:
    try:
        import ray
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise BackendError(f"the ray engine needs Ray ({type(exc).__name__}: {exc})",
                           hint="pip install 'bglab[ray]', or use --engine local") from None
    return ray


class _ChunkActor:
    """Body of the Ray actor: one pipeline session, many chunks."""

    def __init__(self, config: Mapping[str, Any], dst: str, max_pixels: int | None) -> None:
        from bglab.preprocess import Worker

        self.worker = Worker(config, dst, 1, max_pixels)

    def process(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        return self.worker.process(items)


def run_chunks(chunks: Sequence[Sequence[Any]], dst: str, config: Mapping[str, Any], *, workers: int = 1,
               max_pixels: int | None = None, address: str | None = None, num_cpus: float = 1,
               runtime_env: Mapping[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Yield each chunk's records as its actor finishes it (at most 2 chunks queued per actor)."""
    if not chunks:
        return
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
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
        started = True
    try:
        actor_cls = ray.remote(num_cpus=num_cpus)(_ChunkActor)
        actors = [actor_cls.remote(dict(config), dst, max_pixels) for _ in range(max(int(workers), 1))]
        queue = list(chunks)[::-1]
        pending: dict[Any, Any] = {}

        def submit(actor: Any) -> None:
            if queue:
                pending[actor.process.remote(queue.pop())] = actor

        for a in actors:
            submit(a)
            submit(a)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            actor = pending.pop(ref)
            try:
                records = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the worker's exception
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            submit(actor)
            yield records
    finally:
        if started:
            ray.shutdown()

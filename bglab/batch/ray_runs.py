"""``bglab experiment --engine ray``: the experiment's training runs as Ray actor tasks, identical to local.

Each actor is one run process (as with ``--parallel-runs``): it reads the arms back from the run directory's
caches (the driver preprocessed them first), then trains the runs it is handed with ``threads`` torch
threads (``num_cpus`` = threads; ``num_gpus`` = 1 when the device is ``cuda``). A run writes its own files
(metrics, predictions, checkpoint) atomically into the run directory, so that directory must be on storage
every node sees at the same path; the driver merges the metrics and writes the report. A run that fails is
retried once (on a fresh actor when its actor died) and then reported, without stopping the others; finished
runs are kept and a rerun resumes.

Local machine (a private Ray instance)::

    bglab experiment rps-reference --engine ray --parallel-runs 2 --threads 1

A cluster (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the others, bglab installed
in the same environment everywhere, the data and ``--out`` on a shared file system)::

    bglab experiment my.yaml --out /shared/runs/my --engine ray --parallel-runs 16 --engine-option address=auto
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bglab.batch.ray_engine import _import_ray, _init

__all__ = ["train_runs"]


class _RunActor:
    """One run process: ``initializer(*initargs)`` once (the data from the arm caches), then one run per call."""

    def __init__(self, initializer: Callable[..., None], initargs: tuple[Any, ...],
                 run: Callable[[Any], tuple[Any, list[str]]]) -> None:
        initializer(*initargs)
        self.run = run

    def train(self, key: Any) -> tuple[Any, list[str]]:
        return self.run(key)


def train_runs(run: Callable[[Any], tuple[Any, list[str]]], keys: Sequence[Any], *,
               initializer: Callable[..., None], initargs: tuple[Any, ...], threads: int, cuda: bool,
               parallel: int, options: Mapping[str, Any] | None = None,
               log: Callable[[str], None] = lambda s: None) -> tuple[list[Any], dict[str, str]]:
    """Train ``keys`` on Ray, ``run(key)`` on actors set up by ``initializer(*initargs)`` (as with a local
    pool; the runner passes its own, so this engine never imports it); returns (the runs' results,
    failures: run id -> error after one retry)."""
    if not keys:
        return [], {}
    ray = _import_ray()
    opts = dict(options or {})
    started = _init(ray, parallel, max(1, threads), opts.get("address"), opts.get("runtime_env"))
    try:
        actor_cls = ray.remote(num_cpus=max(1, threads), num_gpus=1 if cuda else 0)(_RunActor)

        def new_actor() -> Any:
            return actor_cls.remote(initializer, initargs, run)

        actors = [new_actor() for _ in range(min(parallel, len(keys)))]
        todo = list(keys)
        tries: dict[Any, int] = {}
        running: dict[Any, tuple[Any, Any]] = {}  # object ref -> (key, actor)
        results: list[Any] = []
        failures: dict[str, str] = {}
        idle = list(actors)
        while todo or running:
            while todo and idle:
                key, actor = todo.pop(0), idle.pop()
                running[actor.train.remote(key)] = (key, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            key, actor = running.pop(ref)
            try:
                res, lines = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task error, or the actor (node) died
                tries[key] = tries.get(key, 0) + 1
                cause = getattr(exc, "cause", None) or exc
                if isinstance(exc, ray.exceptions.RayActorError):
                    actor = new_actor()  # the process is gone: a fresh one takes its place
                if tries[key] <= 1:
                    log(f"{key.id}: failed ({type(cause).__name__}: {str(cause)[:200]}); retrying once")
                    todo.append(key)
                else:
                    failures[key.id] = f"{type(cause).__name__}: {str(cause)[:500]}"
                    log(f"{key.id}: failed twice, reported and left: {failures[key.id]}")
                idle.append(actor)
                continue
            for line in lines:
                log(line)
            log(f"{res.key.id}: {res.status} ({res.epochs_trained} epoch(s), {res.seconds:.1f} s)")
            results.append(res)
            idle.append(actor)
        return results, failures
    finally:
        if started:
            ray.shutdown()

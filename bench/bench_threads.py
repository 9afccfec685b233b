"""Why (or whether) ``--parallel-runs`` pays on this machine: training-step throughput of an experiment's
classifier, side by side in one run, three ways on the same synthetic batches:

- ``serial-1t``: one process, 1 torch thread;
- ``serial-Nt``: one process, N threads (the config's ``threads``; 2 for rps-reference);
- ``parallel-Nx1t``: N processes at once, 1 thread each (what ``--parallel-runs N --threads 1`` does).

    .venv/bin/python bench/bench_threads.py                       # rps-reference's CNN, 3 repeats
    .venv/bin/python bench/bench_threads.py --config bglab/configs/pets3-u2netp.yaml --json out.json

The speed-up of ``--parallel-runs N`` over the serial default is ``parallel / serial-Nt`` in images per second.
It only measures the optimiser steps (forward, backward, Adam) of each variant's model at the config's input
size and batch size; data loading, evaluation and preprocessing are left out (``bench_experiment.py`` times
a whole study). Run it on an idle machine: another job on the cores measures that job.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.train.machine import machine_info  # noqa: E402


def _steps(config: str, variant: str, threads: int, images: int, seed: int, start: object | None = None) -> float:
    """Seconds for ``images`` training images through ``variant``'s model at ``threads`` threads."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from bglab.experiment.config import load_experiment_config
    from bglab.train.classifiers import build_classifier

    torch.set_num_threads(threads)
    cfg = load_experiment_config(config)
    var = cfg.variants[variant]
    size, ch = cfg.size, cfg.channels
    torch.manual_seed(seed)
    opts = {k: v for k, v in var.model.items() if k != "name"}
    model = build_classifier(var.model["name"], 3, ch, size, **opts)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bs = var.train.batch_size
    x = torch.rand(bs, ch, size, size)
    y = torch.randint(0, 3, (bs,))
    model.train()

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):  # warm-up (allocations, kernel choice)
        step()
    if start is not None:
        start.wait()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(max(1, images // bs)):
        step()
    return time.perf_counter() - t0


def _worker(args: tuple) -> float:
    return _steps(*args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "bglab" / "configs" / "rps-reference.yaml"))
    ap.add_argument("--variant", default=None, help="the config's variant (default: its first)")
    ap.add_argument("--images", type=int, default=3200, help="training images per process and pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from bglab.experiment.config import load_experiment_config

    cfg = load_experiment_config(a.config)
    variant = a.variant or next(iter(cfg.variants))
    n = max(2, int(cfg.threads))
    ctx = mp.get_context("spawn")
    rows: dict[str, list[float]] = {"serial-1t": [], f"serial-{n}t": [], f"parallel-{n}x1t": []}
    for r in range(a.repeats):
        rows["serial-1t"].append(a.images / _steps(a.config, variant, 1, a.images, r))
        rows[f"serial-{n}t"].append(a.images / _steps(a.config, variant, n, a.images, r))
        with ctx.Manager() as m:
            start = m.Barrier(n)
            with ctx.Pool(n) as pool:
                t0 = time.perf_counter()
                pool.map(_worker, [(a.config, variant, 1, a.images, r, start)] * n)
                wall = time.perf_counter() - t0
        rows[f"parallel-{n}x1t"].append(n * a.images / wall)
        print(f"pass {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rows.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "config": a.config, "variant": variant, "images_per_pass": a.images, "repeats": a.repeats,
        "img_per_s": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "median_img_per_s": {k: round(v, 1) for k, v in med.items()},
        f"thread_scaling_{n}t_vs_1t": round(med[f"serial-{n}t"] / med["serial-1t"], 2),
        f"parallel_vs_serial_{n}t": round(med[f"parallel-{n}x1t"] / med[f"serial-{n}t"], 2),
        "parallel_vs_serial_1t": round(med[f"parallel-{n}x1t"] / med["serial-1t"], 2),
        "machine": {**machine_info(), "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

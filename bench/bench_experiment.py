"""Time `bglab experiment` end to end: the targets are a full study in <= 60 min and ``--quick`` in <= 5 min
(the pretrained configs: <= 2 min) on 2 CPU cores.

    .venv/bin/python bench/bench_experiment.py --quick                  # the --quick profile (40 s idle)
    .venv/bin/python bench/bench_experiment.py --json out/bench/experiment.json   # the full config (~1 hour)
    .venv/bin/python bench/bench_experiment.py --config bglab/configs/rps-pretrained.yaml --quick   # target 2 min
    .venv/bin/python bench/bench_experiment.py --config bglab/configs/rps-ensemble-lite2.yaml   # the issue's 60 min
    .venv/bin/python bench/bench_experiment.py --config bglab/configs/rps-ensemble-lite2.yaml --quick   # 2 min

With ``--versus-parallel N`` one call times the study twice, side by side: first as configured (serial, the
config's threads), then with ``--parallel-runs N --threads 1`` on a fresh run directory that starts with the
first run's arm caches (so the second pays no preprocessing); the verdict is the ratio of the training phases
(the issue's target: >= 1.6x for N = 2 on 2 cores):

    .venv/bin/python bench/bench_experiment.py --versus-parallel 2 --json out/bench/parallel_vs_serial.json

Each run starts the CLI in a subprocess on a fresh, empty run directory (nothing cached), so the wall time
includes start-up, preprocessing every arm, training every run, evaluation and the HTML report. Printed and
written as JSON: wall seconds, the preprocessing and training (+ evaluation) seconds the run recorded
(``data.json``, ``summary.json``), the peak resident memory of the child processes, the machine, and the verdict against
the target. One run per call: run it again for a spread, on an idle machine (another job on the cores
measures that job).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.train.machine import machine_info  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "bglab" / "configs" / "rps-reference.yaml"))
    ap.add_argument("--quick", action="store_true", help="the config's --quick profile (target 5 min)")
    ap.add_argument("--workers", type=int, default=2, help="arm preprocessing processes (default 2)")
    ap.add_argument("--parallel-runs", type=int, default=1, help="training runs at once (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the config's)")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--keep", default=None, help="keep the run directory here instead of a temporary one")
    ap.add_argument("--versus-parallel", type=int, default=None, metavar="N",
                    help="then time it again with --parallel-runs N --threads 1 on the first run's arm caches and "
                         "report the training-phase speed-up (target 1.6x)")
    ap.add_argument("--target-min", type=float, default=None,
                    help="wall-time target in minutes (default: 60; --quick 5, or 2 where a variant is pretrained)")
    a = ap.parse_args()
    if a.target_min is not None:
        target_s = a.target_min * 60.0
    elif a.quick:
        target_s = 120.0 if _uses_pretrained(a.config) else 300.0
    else:
        target_s = 3600.0
    if a.keep and Path(a.keep).exists():
        print(f"{a.keep} exists: give an empty place for the run directory", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bglab-bench-exp-"))
    out = Path(a.keep) if a.keep else tmp / "run"
    result = _time_run(a, out, a.parallel_runs, a.threads, target_s)
    if a.versus_parallel:
        par_out = tmp / "parallel"
        if (out / "cache").is_dir():
            shutil.copytree(out / "cache", par_out / "cache")  # the same arms: only training is compared
        par = _time_run(a, par_out, a.versus_parallel, 1, target_s)
        both = (result.get("training_s"), par.get("training_s"))
        result = {"serial": result, "parallel": par,
                  "training_speedup": round(both[0] / both[1], 2) if None not in both and both[1] else None,
                  "target_speedup": 1.6}
        result["met"] = bool(result["training_speedup"] and result["training_speedup"] >= 1.6)
        print(f"training phase: serial {both[0]} s, --parallel-runs {a.versus_parallel} --threads 1 {both[1]} s: "
              f"{result['training_speedup']}x (target 1.6x: {'met' if result['met'] else 'NOT met'})")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)  # a temporary folder of our own (--keep is elsewhere)
    return 0 if result.get("exit_code", 0) == 0 and result.get("parallel", {}).get("exit_code", 0) == 0 else 1


def _uses_pretrained(config: str) -> bool:
    """Whether any variant of the config trains on a pretrained backbone (its own ``pretrained`` option, or the
    hand-pose reader's frozen ``fallback`` network): the issue's --quick target is 2 min for those studies."""
    from bglab.experiment.config import load_experiment_config
    from bglab.experiment.templates import find_config

    cfg = load_experiment_config(find_config(config), quick=True)
    return any(v.model.get("pretrained") or v.model.get("fallback") not in (None, "none")
               for v in cfg.variants.values())


def _time_run(a: argparse.Namespace, out: Path, parallel_runs: int, threads: int | None, target_s: float) -> dict:
    """One CLI run of the study into ``out``, timed; the figures it recorded."""
    cmd = [sys.executable, "-m", "bglab.cli.app", "experiment", a.config, "--out", str(out),
           "--workers", str(a.workers), "--parallel-runs", str(parallel_runs),
           *(["--threads", str(threads)] if threads else []), *(["--quick"] if a.quick else [])]
    print("$ " + " ".join(cmd), flush=True)
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    code = subprocess.call(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (Linux: KiB)
    result: dict = {"command": " ".join(cmd[1:]), "exit_code": code, "wall_s": round(wall, 1),
                    "target_s": target_s, "quick": a.quick, "workers": a.workers,
                    "parallel_runs": parallel_runs, "threads": threads,
                    "peak_child_rss_mb": round(peak_kb / 1024, 1), "load_avg_at_start": load,
                    "machine": machine_info(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        data = json.loads((out / "data.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        pre, total = data.get("preprocess_seconds"), summary.get("seconds")  # total: before the report
        result.update(preprocess_s=pre, training_s=None if None in (pre, total) else round(total - pre, 1),
                      runs=len(summary.get("runs", {})), complete=summary.get("complete"))
    except (OSError, ValueError) as exc:
        result["error"] = f"run directory incomplete: {exc}"
    result["met"] = code == 0 and wall <= target_s
    print(f"wall {wall / 60:.1f} min (target {target_s / 60:.0f} min: {'met' if result['met'] else 'NOT met'}); "
          f"preprocessing {result.get('preprocess_s')} s, training {result.get('training_s')} s, "
          f"{result.get('runs')} runs, peak child RSS {result['peak_child_rss_mb']} MB", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())

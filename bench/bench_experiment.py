"""Time `bglab experiment` end to end: the targets are a full study in <= 60 min and ``--quick`` in <= 5 min
(the pretrained configs: <= 2 min) on 2 CPU cores.

    .venv/bin/python bench/bench_experiment.py --quick                  # the --quick profile (40 s idle)
    .venv/bin/python bench/bench_experiment.py --json out/bench/experiment.json   # the full config (~1 hour)
    .venv/bin/python bench/bench_experiment.py --config bglab/configs/rps-pretrained.yaml --quick   # target 2 min
    /work/venv-hands/bin/python bench/bench_experiment.py --config bglab/configs/rps-pretrained.yaml   # needs MediaPipe

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
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "bglab" / "configs" / "rps-reference.yaml"))
    ap.add_argument("--quick", action="store_true", help="the config's --quick profile (target 5 min)")
    ap.add_argument("--workers", type=int, default=2, help="arm preprocessing processes (default 2)")
    ap.add_argument("--parallel-runs", type=int, default=1, help="training runs at once (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the config's)")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--keep", default=None, help="keep the run directory here instead of a temporary one")
    ap.add_argument("--target-min", type=float, default=None,
                    help="wall-time target in minutes (default: 60; --quick 5, or 2 for a *pretrained* config)")
    a = ap.parse_args()
    if a.target_min is not None:
        target_s = a.target_min * 60.0
    elif a.quick:
        target_s = 120.0 if "pretrained" in Path(a.config).stem else 300.0
    else:
        target_s = 3600.0
    if a.keep and Path(a.keep).exists():
        print(f"{a.keep} exists: give an empty place for the run directory", file=sys.stderr)
        return 2
    tmp = None if a.keep else Path(tempfile.mkdtemp(prefix="bglab-bench-exp-"))
    out = Path(a.keep) if tmp is None else tmp / "run"
    cmd = [sys.executable, "-m", "bglab.cli.app", "experiment", a.config, "--out", str(out),
           "--workers", str(a.workers), "--parallel-runs", str(a.parallel_runs),
           *(["--threads", str(a.threads)] if a.threads else []), *(["--quick"] if a.quick else [])]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child (Linux: KiB)
    result: dict = {"command": " ".join(cmd[1:]), "exit_code": code, "wall_s": round(wall, 1),
                    "target_s": target_s, "quick": a.quick, "workers": a.workers,
                    "parallel_runs": a.parallel_runs, "threads": a.threads,
                    "peak_child_rss_mb": round(peak_kb / 1024, 1),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()},
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
          f"{result.get('runs')} runs, peak child RSS {result['peak_child_rss_mb']} MB")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)  # a temporary folder of our own
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

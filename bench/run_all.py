"""Run every benchmark in sequence (``make bench``); results land in ``out/bench/*.json``.

Benchmarks need an otherwise idle machine and the shared data beside the repository (``../shared``).
``--quick`` runs each on a small subset to check that it works (figures are then not those of docs/results.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OUT = REPO / "out" / "bench"


def run(args: list[str]) -> int:
    print("\n$ " + " ".join(args), flush=True)
    return subprocess.call(args, cwd=REPO)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small subsets: checks that the benchmarks run")
    ap.add_argument("--only", default="segment,preprocess,server",
                    help="comma list of benchmarks to run (also: experiment, the full reference config: ~1 hour)")
    a = ap.parse_args()
    if not (SHARED / "data").is_dir():
        print(f"benchmarks need the shared data at {SHARED / 'data'}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    keyed = REPO / "work" / "keyed"
    codes = []
    only = set(a.only.split(","))
    if "segment" in only:
        if not keyed.is_dir():  # held-out webcam masks come from the chroma key, as in training
            codes.append(run([py, "-m", "bglab.cli.app", "key", str(SHARED / "data/rps/webcam"), str(keyed)]))
        quick = ["--limit", "10", "--repeats", "1"] if a.quick else []
        codes.append(run([py, "bench/bench_segment.py", "--keyed", str(keyed), "--out",
                          str(OUT / "segment.json"), *quick]))
    if "preprocess" in only:
        quick = ["--limit", "120"] if a.quick else []
        codes.append(run([py, "bench/bench_preprocess.py", "--json", str(OUT / "preprocess.json"), *quick]))
    if "server" in only:
        quick = ["--requests", "60", "--clients", "2"] if a.quick else []
        codes.append(run([py, "bench/bench_server.py", "--out", str(OUT / "server.json"), *quick]))
    if "experiment" in only:
        quick = ["--quick"] if a.quick else []
        codes.append(run([py, "bench/bench_experiment.py", "--json", str(OUT / "experiment.json"), *quick]))
    failed = [c for c in codes if c != 0]
    print(f"\n{len(codes) - len(failed)} of {len(codes)} benchmark steps succeeded; results in {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

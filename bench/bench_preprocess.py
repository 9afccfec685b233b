"""Benchmark ``bglab preprocess``: 1 vs N workers, and the per-image cost against the I/O floor.

Pipeline (the reference study's shape at 128 px): locate (MediaPipe Hands when installed, else the box of the
segmenter's mask) + segment (the U-Net when its model ships, else chroma) + background remove + crop +
resize 128 + grey, over the 1350 webcam images (``../shared/data/rps/webcam``).

The floor is the same images through a pipeline of resize 128 + grey only: decode + resize + encode + write,
i.e. what any preprocessing must pay. Every run writes to a fresh temporary folder and is timed end to end
(pool start-up, model loading, manifest and summary included).

    .venv/bin/python bench/bench_preprocess.py                      # full run (a few minutes on 2 cores)
    .venv/bin/python bench/bench_preprocess.py --limit 120          # quick check on a subset
    .venv/bin/python bench/bench_preprocess.py --runs 1x1,1,2 --json bench/results/preprocess.json

Run it on an otherwise idle machine: the speed-up measures free cores as much as bglab.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.train.machine import machine_info  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data")) / "rps" / "webcam"


def pick_locator(name: str) -> str:
    if name != "auto":
        return name
    from bglab.foreground import is_available

    return "mediapipe-hands" if is_available("mediapipe-hands")[0] else "mask-box"


def pick_segmenter(name: str) -> str:
    if name != "auto":
        return name
    from bglab.foreground import create

    try:
        create("unet", kind="segmenter")
        return "unet"
    except Exception:  # noqa: BLE001 - the model is not there (yet): fall back to the chroma key
        return "chroma"


def configs(locator: str, segmenter: str, size: int) -> tuple[dict, dict]:
    loc: dict = {"backend": locator, "on_missing": "mask-box"}
    if locator == "mediapipe-hands":
        loc["options"] = {"min_confidence": 0.1}
    full = {"steps": [{"locate": loc}, {"segment": {"backend": segmenter}}, {"background": {"mode": "remove"}},
                      {"crop": {"margin": 0.05}}, {"resize": {"size": size}}, "grey"]}
    floor = {"steps": [{"resize": {"size": size}}, "grey"]}
    return full, floor


def parse_runs(spec: str) -> list[tuple[int, int | None]]:
    """``1x1,1,2`` -> [(1, 1), (1, None), (2, None)]: workers, and threads per worker (None = bglab's default)."""
    out = []
    for part in spec.split(","):
        w, _, t = part.strip().partition("x")
        out.append((int(w), int(t) if t else None))
    return out


def label(workers: int, threads: int | None) -> str:
    if threads is None:
        return f"{workers} worker(s), default threads ({'all cores' if workers == 1 else '1 each'})"
    return f"{workers} worker(s) x {threads} thread(s)"


def run_once(data: Path, cfg: dict, workers: int, chunk: int, limit: int | None, threads: int | None = None) -> dict:
    from bglab.pipeline.preprocess import preprocess, read_output_manifest

    dst = Path(tempfile.mkdtemp(prefix="bglab-bench-pp-"))
    try:
        t0 = time.perf_counter()
        rep = preprocess([data], dst, cfg, workers=workers, chunk=chunk, limit=limit, threads=threads)
        wall = time.perf_counter() - t0
        df = read_output_manifest(dst)
        steps = {c[2:]: round(1000 * float(df[c].mean()), 3) for c in df.columns if c.startswith("t_")}
        return {"workers": workers, "threads": threads, "label": label(workers, threads),
                "images": len(rep.records), "failed": rep.count("failed"),
                "found_pct": rep.summary[-1]["found_pct"], "wall_s": round(wall, 3),
                "img_per_s": round(len(rep.records) / wall, 2),
                "ms_per_img_wall": round(1000 * wall / len(rep.records), 3),
                "ms_per_step_mean": steps}
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder tree (default: rps/webcam)")
    ap.add_argument("--limit", type=int, default=None, help="evenly spaced subset of N images")
    ap.add_argument("--runs", default="1x1,1,2",
                    help="comma list of WORKERS[xTHREADS] (first is the baseline of the speed-up); default "
                         "1x1,1,2: one worker on one thread (the scaling baseline), one worker with bglab's "
                         "default threads (all cores), two workers (one thread each)")
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--locator", default="auto", help="auto | mediapipe-hands | mask-box | full")
    ap.add_argument("--segmenter", default="auto", help="auto | unet | chroma | ...")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"data not found: {args.data} (set BGLAB_SHARED_DATA)", file=sys.stderr)
        return 2
    locator, segmenter = pick_locator(args.locator), pick_segmenter(args.segmenter)
    full, floor = configs(locator, segmenter, args.size)
    specs = parse_runs(args.runs)
    print(f"data {args.data} limit {args.limit or 'all'}; locate {locator}, segment {segmenter}, "
          f"size {args.size}, chunk {args.chunk}; {os.cpu_count()} CPUs", flush=True)
    run_once(args.data, full, 1, args.chunk, 16)  # warm-up: imports, model files, file cache
    res_floor = run_once(args.data, floor, 1, args.chunk, args.limit)
    runs = [run_once(args.data, full, w, args.chunk, args.limit, t) for w, t in specs]
    base = runs[0]["wall_s"]
    print("\n| run | images | wall s | img/s | ms/img | speed-up | x floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    fl = res_floor["ms_per_img_wall"]
    print(f"| floor (decode+resize+encode, 1 worker) | {res_floor['images']} | "
          f"{res_floor['wall_s']:.2f} | {res_floor['img_per_s']:.1f} | {fl:.2f} | | 1.0 |")
    for r in runs:
        print(f"| {r['label']} | {r['images']} | {r['wall_s']:.2f} | {r['img_per_s']:.1f} | "
              f"{r['ms_per_img_wall']:.2f} | {base / r['wall_s']:.2f} | {r['ms_per_img_wall'] / fl:.1f} |")
    print(f"\nper-step mean ms/img (1 worker): {runs[0]['ms_per_step_mean']}")
    print(f"found: {runs[0]['found_pct']} % ({locator}); failed: {runs[0]['failed']}")
    out = {"data": str(args.data), "limit": args.limit, "locator": locator, "segmenter": segmenter,
           "size": args.size, "chunk": args.chunk, "machine": machine_info(),
           "floor": res_floor, "runs": runs,
           "speedup": {r["label"]: round(base / r["wall_s"], 3) for r in runs}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

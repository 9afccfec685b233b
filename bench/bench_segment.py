"""Benchmark segmenters side by side: bglab's shipped U-Net against u2netp (rembg's small model), chroma, GrabCut.

Two evaluation sets, in ONE run:

- ``hands_wild``: the 30 real wild scenes with hand masks (``../shared/data/hands_wild``; evaluation only);
- ``webcam_test``: the held-out keyed webcam photos (the U-Net's test split, listed in
  ``bglab/models/hand_unet.json``; truth = the keyed masks in ``--keyed``). Chroma runs on this set only
  (its truth *is* a chroma key, so chroma's score there is an agreement figure, not a quality figure).

Quality: mean per-image IoU / F1 / precision / recall (a pixel is foreground where the mask is > 0.5) and
pooled IoU. Speed: end to end per image = read the file + decode (bglab.io) + predict + cut-out composite
(RGBA) + PNG encode; each image's median over ``--repeats`` passes (>= 3), then the median and p90 over the
images; predict-only times are reported too. GrabCut (seconds per wild image) gets ``--slow-repeats`` (1).

    .venv/bin/python bench/bench_segment.py --out bench/results/segment.json
    .venv/bin/python bench/bench_segment.py --backends unet,u2netp --repeats 3 --limit 20   # quick look
    .venv/bin/python bench/bench_segment.py --record      # also write the U-Net's scores into hand_unet.json
    .venv/bin/python bench/bench_segment.py --backends unet,unet@work/v3.onnx,hand-grabcut   # a candidate model
    .venv/bin/python bench/bench_segment.py --backends unet,unet-effnet,u2netp,hand-grabcut --record unet-effnet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.io import decode_image, encode_image, read_mask  # noqa: E402
from bglab.metrics import seg_scores, summarize  # noqa: E402
from bglab.ops.background import cutout  # noqa: E402
from bglab.segment.registry import Runtime  # noqa: E402

DATA = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
U2NETP = REPO.parent / "shared" / "anchors" / "u2netp.onnx"
MODEL_JSON = REPO / "bglab" / "models" / "hand_unet.json"
MODEL_JSONS = {"unet": MODEL_JSON, "unet-effnet": REPO / "bglab" / "models" / "hand_unet_effnet.json"}


# ----------------------------------------------------------------------------------------------- data
def wild_set(data: Path) -> list[tuple[str, Path, Path]]:
    imgs = sorted((data / "hands_wild" / "images").glob("*.jpg"))
    return [(p.stem, p, data / "hands_wild" / "masks" / f"{p.stem}.png") for p in imgs]


def webcam_test_set(data: Path, keyed: Path, split: Path | None) -> list[tuple[str, Path, Path]]:
    if split is not None:
        keys = json.loads(split.read_text())["test"]
    else:
        info = json.loads(MODEL_JSON.read_text()) if MODEL_JSON.is_file() else {}
        keys = info.get("training", {}).get("test_split")
        if not keys:  # recompute the training split (seed 0)
            from bglab.train.composite import list_keyed, split_records

            keys = [r.key for r in split_records(list_keyed(keyed, data / "rps" / "webcam"), seed=0)["test"]]
    out = []
    for k in keys:
        cls, stem = k.split("/")
        img = data / "rps" / "webcam" / cls / f"{stem}.png"
        m = keyed / cls / f"{stem}.png"
        if img.is_file() and m.is_file():
            out.append((k, img, m))
    return out


# ----------------------------------------------------------------------------------------------- backends
def make_backend(name: str, runtime: Runtime, u2netp: Path):  # noqa: ANN201
    if name.startswith("unet-effnet@"):  # a candidate v4 model (EfficientNet-Lite0 U-Net) before it ships
        from bglab.segment.unet import create_effnet

        return create_effnet(runtime, model=name.split("@", 1)[1])
    if name == "unet" or name.startswith("unet@"):  # unet@FILE.onnx: a candidate model before it ships
        from bglab.segment.unet import create

        return create(runtime, model=name.split("@", 1)[1]) if "@" in name else create(runtime)
    if name == "u2netp":
        try:
            from bglab.segment.rembg_backend import U2NetOnnx
        except ImportError:  # pragma: no cover - fallback: rembg's pre / post-processing inline
            U2NetOnnx = None  # noqa: N806
        if U2NetOnnx is not None:
            return U2NetOnnx(u2netp, runtime)
        return _U2Inline(u2netp, runtime)
    from bglab.segment import create

    return create(name, runtime=runtime)


class _U2Inline:
    """u2netp without bglab's rembg backend: 320x320 LANCZOS, / max, ImageNet mean/std, min-max output."""

    name = "u2netp"

    def __init__(self, path: Path, runtime: Runtime) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if runtime.threads:
            opts.intra_op_num_threads = runtime.threads
        self.sess = ort.InferenceSession(str(path), opts, providers=list(runtime.providers))
        self.inp = self.sess.get_inputs()[0].name

    def predict(self, image: np.ndarray, source: Path | None = None) -> np.ndarray:
        import cv2
        from PIL import Image

        h, w = image.shape[:2]
        a = np.asarray(Image.fromarray(image[..., :3]).resize((320, 320), Image.LANCZOS), np.float32)
        a = a / max(float(a.max()), 1e-6)
        a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
        out = self.sess.run(None, {self.inp: a.transpose(2, 0, 1)[None].astype(np.float32)})[0][0, 0]
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
        return np.clip(cv2.resize(out, (w, h)), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- measuring
def run_one(seg, items: list[tuple[str, Path, Path]], repeats: int) -> dict:  # noqa: ANN001
    truths = {k: read_mask(m) for k, _, m in items}
    e2e: list[list[float]] = []
    pred_ms: list[list[float]] = []
    scores = []
    for r in range(repeats):
        t_e2e, t_pred = [], []
        for k, img_path, _ in items:
            t0 = time.perf_counter()
            data = img_path.read_bytes()
            image = decode_image(data, name=str(img_path))
            t1 = time.perf_counter()
            mask = seg.predict(image)
            t2 = time.perf_counter()
            png = encode_image(cutout(image, mask), "png")
            t3 = time.perf_counter()
            assert len(png) > 0
            t_e2e.append((t3 - t0) * 1000)
            t_pred.append((t2 - t1) * 1000)
            if r == 0:
                scores.append(seg_scores(mask, truths[k]))
        e2e.append(t_e2e)
        pred_ms.append(t_pred)
    e = np.array(e2e)  # (repeats, images)
    p = np.array(pred_ms)
    per_image = np.median(e, axis=0)  # each image's median over the repeats
    summ = summarize(scores).as_dict()
    return {
        "n": len(items),
        **{k: round(float(v), 4) for k, v in summ.items() if k != "n"},
        "ms_median": round(float(np.median(per_image)), 2),
        "ms_p90": round(float(np.percentile(per_image, 90)), 2),
        "ms_mean": round(float(e.mean()), 2),
        "ms_repeat_medians": [round(float(np.median(x)), 2) for x in e],
        "predict_ms_median": round(float(np.median(np.median(p, axis=0))), 2),
        "repeats": repeats,
        "per_image_iou": {k: round(s.iou, 4) for (k, _, _), s in zip(items, scores, strict=True)},
    }


def machine() -> dict:
    import onnxruntime

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="shared data root")
    ap.add_argument("--keyed", type=Path, default=REPO / "work" / "keyed", help="keyed webcam masks")
    ap.add_argument("--split", type=Path, default=None, help="a run's splits.json (default: the model JSON's)")
    ap.add_argument("--u2netp", type=Path, default=U2NETP)
    ap.add_argument("--backends", default="unet,u2netp,chroma,grabcut")
    ap.add_argument("--sets", default="hands_wild,webcam_test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow", default="grabcut,hand-grabcut",
                    help="backends timed with --slow-repeats passes only")
    ap.add_argument("--slow-repeats", type=int, default=1, help="passes for the --slow backends (seconds/image)")
    ap.add_argument("--threads", type=int, default=0, help="threads per ONNX Runtime session (0 = all cores)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of each set")
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    ap.add_argument("--record", nargs="?", const="unet", default=None,
                    help="write these backends' scores into their shipped model JSON (unet: hand_unet.json, "
                         "unet-effnet: hand_unet_effnet.json; comma list; bare --record = unet)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    runtime = Runtime(threads=args.threads)
    sets = {}
    if "hands_wild" in args.sets:
        sets["hands_wild"] = wild_set(args.data)
    if "webcam_test" in args.sets:
        sets["webcam_test"] = webcam_test_set(args.data, args.keyed, args.split)
    if args.limit:
        sets = {k: v[: args.limit] for k, v in sets.items()}
    from bglab.segment import registry

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, dict]] = {s: {} for s in sets}
    skipped = {}
    for name in names:
        if name not in ("unet", "u2netp") and not name.startswith(("unet@", "unet-effnet@")):
            try:
                ok, why = registry.is_available(name)
            except Exception as exc:  # noqa: BLE001 - unknown backend
                ok, why = False, str(exc)
            if not ok:
                skipped[name] = why
                continue
        if name == "u2netp" and not args.u2netp.is_file():
            skipped[name] = f"{args.u2netp} not found"
            continue
        seg = make_backend(name, runtime, args.u2netp)
        seg.predict(np.zeros((64, 64, 3), np.uint8))  # warm-up (session init, first-call allocations)
        for sname, items in sets.items():
            if name == "chroma" and sname != "webcam_test":
                continue
            t0 = time.time()
            reps = args.slow_repeats if name in args.slow.split(",") else args.repeats
            res = run_one(seg, items, max(reps, 1))
            results[sname][name] = res
            print(f"  {sname:12s} {name:12s} IoU {res['iou']:.3f} F1 {res['f1']:.3f}  "
                  f"{res['ms_median']:.1f} ms/img  ({time.time() - t0:.0f} s)", flush=True)
    # table
    print()
    print(f"{'set':12s} {'backend':12s} {'n':>4s} {'IoU':>6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} "
          f"{'pooledIoU':>9s} {'ms med':>7s} {'ms p90':>7s} {'predict':>7s} {'speed-up':>8s}")
    for sname, per in results.items():
        ref = per.get("u2netp", {}).get("ms_median")
        for name, r in per.items():
            sp = f"{ref / r['ms_median']:.1f}x" if ref else "-"
            print(f"{sname:12s} {name:12s} {r['n']:4d} {r['iou']:6.3f} {r['f1']:6.3f} {r['precision']:6.3f} "
                  f"{r['recall']:6.3f} {r['pooled_iou']:9.3f} {r['ms_median']:7.1f} {r['ms_p90']:7.1f} "
                  f"{r['predict_ms_median']:7.1f} {sp:>8s}")
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    report = {"command": "python bench/bench_segment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
              "threads": args.threads, "repeats": args.repeats, "results": results, "skipped": skipped}
    if MODEL_JSON.is_file():
        report["unet_sha256"] = json.loads(MODEL_JSON.read_text()).get("sha256")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    for bname in (args.record.split(",") if args.record else []):
        mjson = MODEL_JSONS.get(bname)
        if mjson is None or not mjson.is_file():
            print(f"--record {bname}: no shipped model JSON for that backend")
            continue
        info = json.loads(mjson.read_text())
        scores = {}
        for sname, per in results.items():
            if bname in per:
                r = per[bname]
                scores[sname] = {k: r[k] for k in ("n", "iou", "f1", "precision", "recall", "pooled_iou",
                                                   "ms_median", "ms_p90")}
                if "u2netp" in per:
                    u = per["u2netp"]
                    scores[sname]["u2netp"] = {k: u[k] for k in ("iou", "f1", "ms_median")}
        info["scores"] = {**scores, "measured": report["date"], "threads": args.threads,
                          "command": report["command"]}
        tmp = mjson.with_name(f".{mjson.name}.tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, mjson)
        print(f"recorded scores in {mjson}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

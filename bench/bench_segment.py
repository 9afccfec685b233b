"""Benchmark segmenters side by side: every shipped offline backend (hand U-Net, general u2netp, auto, chroma,
GrabCut, MediaPipe's) and box-prompted masks, on the same images in one run.

Evaluation sets (``--sets``, comma list):

- ``pets3``: the 599 Oxford-IIIT Pet photos with pixel masks (``../shared/data/pets3``); results are also split
  into the u2netp tuning half (even image numbers, ``tune``) and the rest (``heldout``);

- ``hands_wild``: the 30 real wild scenes with hand masks (``../shared/data/hands_wild``; evaluation only);
- ``nohand``: photos without a hand (the shared background photos and the pets3 photos, pet included; pets3
  photos a candidate trained on, its ``--split``'s ``real_train`` / ``real_val``, left out): the truth is an
  empty mask, so what counts is how many masks are empty (``qc`` ``not-found``) and ``fg_mean``;
- ``webcam_test``: the held-out keyed webcam photos (the U-Net's test split, listed in
  ``bglab/models/hand_unet.json``; truth = the keyed masks in ``--keyed``). Chroma runs on this set only
  (its truth *is* a chroma key, so chroma's score there is an agreement figure, not a quality figure).

Quality: mean per-image IoU / F1 / precision / recall (a pixel is foreground where the mask is > 0.5) and
pooled IoU. Speed: end to end per image = read the file + decode (bglab.io.files) + predict + cut-out composite
(RGBA) + PNG encode; each image's median over ``--repeats`` passes (>= 3), then the median and p90 over the
images; predict-only times are reported too. GrabCut (seconds per wild image) gets ``--slow-repeats`` (1).

    .venv/bin/python bench/bench_segment.py --out bench/results/segment.json
    .venv/bin/python bench/bench_segment.py --backends unet,u2netp --repeats 3 --limit 20   # quick look
    .venv/bin/python bench/bench_segment.py --record      # also write the U-Net's scores into hand_unet.json
    .venv/bin/python bench/bench_segment.py --backends unet,unet@work/v3.onnx,hand-grabcut   # a candidate model
    .venv/bin/python bench/bench_segment.py --sets pets3 --backends unet,u2netp,auto,u2netp+gtbox,grabcut+gtbox \
        --repeats 3 --timing-subset 20 --out bench/results/segment_pets3.json
    .venv/bin/python bench/bench_segment.py --backends unet,unet-effnet,u2netp,hand-grabcut --record unet-effnet

Backend names are registry names, plus ``u2netp-anchor`` (the shared anchor file through rembg's settings, as
the old bench ran it), ``unet@FILE``, ``unet-effnet@FILE`` (a candidate v4 model before it ships) and box
prompts ``X+gtbox`` / ``X+hands`` / ``X+hands/full`` / ``X+handtiles`` (X = ``u2netp``, ``grabcut``, ``unet``,
``unet-effnet``, ``unet-effnet@FILE``): the box of the ground-truth mask (what an annotated box / ``box-csv``
gives) or MediaPipe's hand boxes, refined into a mask by X (``/full``: X on the whole image where MediaPipe finds
no hand; ``handtiles``: MediaPipe with auto's hand-branch settings, up to 4 hands, also in 2 x 2 tiles).
``auto``'s branches reuse the masks of ``u2netp`` / ``unet-effnet+handtiles`` computed earlier in the same run when
both ran (MediaPipe's detection still runs per image; checked equal to a live run on the timing subset);
its data-set decision (``hands`` on / off) is made per set as the commands make it.
``--timing-subset N``: passes after the first time only the first N images of each set (CPU budget).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.foreground.registry import Runtime  # noqa: E402
from bglab.io.files import decode_image, encode_image, read_mask  # noqa: E402
from bglab.ops.background import cutout  # noqa: E402
from bglab.ops.metrics import seg_scores, summarize  # noqa: E402
from bglab.train.machine import machine_info  # noqa: E402

DATA = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
U2NETP = DATA.parent / "anchors" / "u2netp.onnx"  # the shared anchor copy (comparison only; never shipped)
MODEL_JSON = REPO / "bglab" / "models" / "hand_unet.json"
MODEL_JSONS = {"unet": MODEL_JSON, "unet-effnet": REPO / "bglab" / "models" / "hand_unet_effnet.json"}


# ----------------------------------------------------------------------------------------------- data
def wild_set(data: Path) -> list[tuple[str, Path, Path]]:
    imgs = sorted((data / "hands_wild" / "images").glob("*.jpg"))
    return [(p.stem, p, data / "hands_wild" / "masks" / f"{p.stem}.png") for p in imgs]


def pets3_set(data: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for img in sorted((data / "pets3").glob("*/images/*.jpg")):
        out.append((img.stem, img, img.parent.parent / "masks" / f"{img.stem}.png"))
    return out


def nohand_set(data: Path, split: Path | None) -> list[tuple[str, Path, Path | None]]:
    """Photos with no hand in them (truth: empty); pets3 photos in a candidate's training split are left out."""
    trained: set[str] = set()
    if split is not None:
        s = json.loads(split.read_text())
        trained = set(s.get("real_train", [])) | set(s.get("real_val", []))
    out: list[tuple[str, Path, Path | None]] = []
    for img in sorted((data / "backgrounds").glob("*.jpg")):
        out.append((f"backgrounds/{img.stem}", img, None))
    for img in sorted((data / "pets3").glob("*/images/*.jpg")):
        key = f"{img.parent.parent.name}/{img.stem}"
        if key not in trained:
            out.append((key, img, None))
    return out


def is_tuning(key: str) -> bool:
    """pets3's u2netp tuning half (bench/tune_u2netp.py): image number even."""
    import re

    m = re.search(r"_(\d+)$", key)
    return bool(m) and int(m.group(1)) % 2 == 0


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
AUTO_HAND = "unet-effnet+handtiles"  # what auto's hand branch computes (v4 on MediaPipe's hand boxes, tiled)


def make_backend(name: str, runtime: Runtime, u2netp: Path, masks: Path | None = None):  # noqa: ANN201
    from bglab.foreground import create

    if "+" in name:  # box prompts: X+gtbox (box of the truth mask), X+hands (MediaPipe's hand boxes; no hand:
        # empty mask), X+hands/full (no hand: X on the whole image), X+handtiles (auto's hand-branch locator)
        base, _, boxes = name.partition("+")
        if boxes == "gtbox":
            loc = {"locator": "mask-box", "segmenter": "mask-files", "masks": str(masks)}
        elif boxes in ("hands", "hands/full"):
            loc = {"locator": "mediapipe-hands", **({"no_box": "full"} if boxes.endswith("/full") else {})}
        elif boxes == "handtiles":
            from bglab.foreground.auto import HAND_LOCATOR

            loc = {"locator": "mediapipe-hands", **HAND_LOCATOR}
        else:
            raise SystemExit(f"unknown box prompt {name!r}: use X+gtbox, X+hands, X+hands/full or X+handtiles")
        if base.startswith("unet-effnet@"):  # a candidate v4 model on boxes
            from bglab.foreground.unet import create_effnet

            return create_effnet(runtime, model=base.split("@", 1)[1], **loc)
        return create(base, runtime=runtime, **loc)
    if name.startswith("unet-effnet@"):  # a candidate v4 model (EfficientNet-Lite0 U-Net) before it ships
        from bglab.foreground.unet import create_effnet

        return create_effnet(runtime, model=name.split("@", 1)[1])
    if name == "u2netp-unsnapped":  # u2netp's defaults before the guided-filter edge snapping
        return create("u2netp", runtime=runtime, guided=0, threshold=0.1)
    if name == "u2netp-anchor":  # the shared anchor file with rembg's own settings (the 0.775)
        from bglab.foreground.rembg_backend import U2NetOnnx

        return U2NetOnnx(u2netp, runtime)
    if name == "unet" or name.startswith("unet@"):  # unet@FILE.onnx: a candidate model before it ships
        from bglab.foreground.unet import create

        return create(runtime, model=name.split("@", 1)[1]) if "@" in name else create(runtime)
    return create(name, runtime=runtime)


class _Reuse:
    """Stands in for a backend inside ``auto``: returns the mask that backend computed for this image earlier in
    the run (same image, same deterministic backend), so ``auto`` costs only its MediaPipe detection here."""

    def __init__(self, masks: dict[str, np.ndarray], live) -> None:  # noqa: ANN001
        self.masks = masks
        self.live = live
        self.key: str | None = None
        self.landmarker = getattr(live, "landmarker", None)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        return self.masks[self.key] if self.key in self.masks else self.live.predict(image, source=source)

    def cut_hands(self, img: np.ndarray, hands: list) -> np.ndarray:  # noqa: ANN001
        return self.masks[self.key] if self.key in self.masks else self.live.cut_hands(img, hands)


# ----------------------------------------------------------------------------------------------- measuring
def run_one(seg, items: list[tuple[str, Path, Path]], repeats: int, timing_subset: int | None = None,  # noqa: ANN001
            keep: dict[str, np.ndarray] | None = None, reuse: list[_Reuse] | None = None) -> dict:
    """Pass 1 over every image (scores + times), passes 2..repeats over the first ``timing_subset`` images
    (times only). ``keep``: store each image's mask (for ``auto``'s reuse). ``reuse``: stand-ins to point at
    the current image; with them, pass 1 uses stored masks and the later passes run live."""
    from bglab.ops.qc import mask_flags

    truths = {k: None if m is None else read_mask(m) for k, _, m in items}  # None: no hand (empty truth)
    fg: list[float] = []
    n_t = len(items) if timing_subset is None else min(len(items), timing_subset)
    e2e: list[list[float]] = []
    pred_ms: list[list[float]] = []
    scores = []
    flags: dict[str, int] = {"not-found": 0, "empty": 0, "full": 0, "fragmented": 0, "border": 0}
    live_equal = 0
    choices = getattr(seg, "choices", None)  # auto: which backend each image went to (first pass only)
    first_choices: dict[str, int] = {}
    if choices is not None:
        choices.clear()
    for r in range(repeats):
        if r == 1 and choices is not None:
            first_choices = dict(choices)
        t_e2e, t_pred = [], []
        for k, img_path, _ in (items if r == 0 else items[:n_t]):
            for stand_in in reuse or []:
                stand_in.key = k if r == 0 else None  # later passes: live (timed honestly)
            t0 = time.perf_counter()
            data = img_path.read_bytes()
            image = decode_image(data, name=str(img_path))
            t1 = time.perf_counter()
            mask = seg.predict(image, source=img_path)
            t2 = time.perf_counter()
            png = encode_image(cutout(image, mask), "png")
            t3 = time.perf_counter()
            assert len(png) > 0
            t_e2e.append((t3 - t0) * 1000)
            t_pred.append((t2 - t1) * 1000)
            if r == 0:
                truth = truths[k] if truths[k] is not None else np.zeros(mask.shape[:2], np.uint8)
                scores.append(seg_scores(mask, truth))
                fg.append(float((np.asarray(mask) > 0.5).mean()))
                for f in mask_flags(mask):
                    flags[f] += 1
                if keep is not None:
                    keep[k] = mask
            elif r == 1 and reuse and keep is not None:
                live_equal += int(np.array_equal(keep[k], mask))
        e2e.append(t_e2e)
        pred_ms.append(t_pred)
    if choices is not None and repeats == 1:
        first_choices = dict(choices)
    first = np.array(e2e[0])
    e = np.array([x[:n_t] for x in e2e])  # (repeats, timing images)
    p = np.array([x[:n_t] for x in pred_ms])
    per_image = np.median(e, axis=0) if not reuse or repeats == 1 else np.median(e[1:], axis=0)
    summ = summarize(scores).as_dict()
    out = {
        "n": len(items),
        **{k: round(float(v), 4) for k, v in summ.items() if k != "n"},
        "qc": flags,
        "fg_mean": round(float(np.mean(fg)), 4),  # mean foreground share of the masks (the no-hand set's measure)
        "ms_median": round(float(np.median(per_image)), 2),
        "ms_p90": round(float(np.percentile(per_image, 90)), 2),
        "ms_first_pass_median_all": round(float(np.median(first)), 2),
        "ms_repeat_medians": [round(float(np.median(x)), 2) for x in e],
        "predict_ms_median": round(float(np.median(np.median(p, axis=0))), 2),
        "repeats": repeats,
        "timing_images": n_t,
        "per_image_iou": {k: round(s.iou, 4) for (k, _, _), s in zip(items, scores, strict=True)},
    }
    if choices is not None:
        out["choices"] = first_choices
    if reuse:
        out["reused_masks"] = True
        out["reuse_checked_equal"] = f"{live_equal}/{n_t if repeats > 1 else 0}"
    if any(is_tuning(k) for k, _, _ in items) and items[0][1].parent.parent.parent.name == "pets3":
        for part, pick in (("tune", True), ("heldout", False)):
            sub = summarize([s for (k, _, _), s in zip(items, scores, strict=True) if is_tuning(k) == pick])
            out[f"iou_{part}"] = round(sub.iou, 4)
            out[f"n_{part}"] = sub.n
    return out


def machine() -> dict:
    import onnxruntime

    return {**machine_info(), "onnxruntime": onnxruntime.__version__, "loadavg_start": os.getloadavg()}


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
    ap.add_argument("--every", type=int, default=1, help="only every K-th image of each set (a spread subset)")
    ap.add_argument("--timing-subset", type=int, default=None,
                    help="passes after the first time only the first N images of each set (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    ap.add_argument("--record", nargs="?", const="unet", default=None,
                    help="write these backends' scores into their shipped model JSON (unet: hand_unet.json, "
                         "unet-effnet: hand_unet_effnet.json; comma list; bare --record = unet)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    runtime = Runtime(threads=args.threads)
    facts = machine()  # before the run: its load average is the one at the start
    sets = {}
    if "pets3" in args.sets:
        sets["pets3"] = pets3_set(args.data)
    if "hands_wild" in args.sets:
        sets["hands_wild"] = wild_set(args.data)
    if "webcam_test" in args.sets:
        sets["webcam_test"] = webcam_test_set(args.data, args.keyed, args.split)
    if "nohand" in args.sets:
        sets["nohand"] = nohand_set(args.data, args.split)
    if args.every > 1:
        sets = {k: v[:: args.every] for k, v in sets.items()}
    if args.limit:
        sets = {k: v[: args.limit] for k, v in sets.items()}
    mask_roots = {"pets3": args.data / "pets3", "hands_wild": args.data / "hands_wild" / "masks",
                  "webcam_test": args.keyed, "nohand": None}
    from bglab.foreground import registry

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, dict]] = {s: {} for s in sets}
    skipped = {}
    kept: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (backend, set) -> masks, for auto's reuse
    for name in names:
        base = "u2netp" if name == "u2netp-unsnapped" else name.partition("+")[0].partition("@")[0]
        if name == "u2netp-anchor" and not args.u2netp.is_file():
            skipped[name] = f"{args.u2netp} not found"
            continue
        if name != "u2netp-anchor":  # a candidate file (X@FILE) is checked when it is opened
            try:
                ok, why = registry.is_available(base)
                if ok and name.endswith(("+hands", "+hands/full", "+handtiles")):
                    ok, why = registry.is_available("mediapipe-hands")
            except Exception as exc:  # noqa: BLE001 - unknown backend
                ok, why = False, str(exc)
            if not ok:
                skipped[name] = why
                continue
        seg = None
        for sname, items in sets.items():
            if name == "chroma" and sname != "webcam_test":
                continue
            if name == "auto":  # decided per data set (bglab.foreground.auto.resolve), as the commands do
                from bglab.foreground import create
                from bglab.foreground.auto import resolve

                opts = resolve("auto", {}, [p for _, p, _ in items], runtime=runtime)
                seg = create("auto", runtime=runtime, **opts)
            elif name.endswith("+gtbox") or seg is None:  # box of the truth mask: this set's mask folder
                seg = make_backend(name, runtime, args.u2netp, mask_roots[sname])
                if not name.endswith("+gtbox"):
                    seg.predict(np.zeros((64, 64, 3), np.uint8))  # warm-up (session init, first allocations)
            reuse = []
            if name == "auto":  # reuse the u2netp / unet-effnet+hands masks of this run (see the module doc)
                if ("u2netp", sname) in kept:
                    seg.general = _Reuse(kept[("u2netp", sname)], seg.general)
                    reuse.append(seg.general)
                if seg.hand is not None and (AUTO_HAND, sname) in kept:
                    seg.hand = _Reuse(kept[(AUTO_HAND, sname)], seg.hand)
                    reuse.append(seg.hand)
            t0 = time.time()
            reps = args.slow_repeats if name in args.slow.split(",") else args.repeats
            keep = {} if name in ("u2netp", AUTO_HAND) or reuse else None
            res = run_one(seg, items, max(reps, 1), args.timing_subset, keep=keep, reuse=reuse or None)
            if name in ("u2netp", AUTO_HAND):
                kept[(name, sname)] = keep
            if name == "auto":
                res["hands"] = opts["hands"]
            results[sname][name] = res
            extra = f"  tune {res['iou_tune']:.3f} held-out {res['iou_heldout']:.3f}" if "iou_tune" in res else ""
            print(f"  {sname:12s} {name:14s} IoU {res['iou']:.3f} F1 {res['f1']:.3f}{extra}  "
                  f"{res['ms_median']:.1f} ms/img  qc {res['qc']}  fg {res['fg_mean']:.3f}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
    # table
    print()
    print(f"{'set':12s} {'backend':14s} {'n':>4s} {'IoU':>6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} "
          f"{'pooledIoU':>9s} {'ms med':>7s} {'ms p90':>7s} {'predict':>7s} {'speed-up':>8s}")
    for sname, per in results.items():
        ref = per.get("u2netp", {}).get("ms_median")
        for name, r in per.items():
            sp = f"{ref / r['ms_median']:.1f}x" if ref else "-"
            print(f"{sname:12s} {name:14s} {r['n']:4d} {r['iou']:6.3f} {r['f1']:6.3f} {r['precision']:6.3f} "
                  f"{r['recall']:6.3f} {r['pooled_iou']:9.3f} {r['ms_median']:7.1f} {r['ms_p90']:7.1f} "
                  f"{r['predict_ms_median']:7.1f} {sp:>8s}")
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    report = {"command": "python bench/bench_segment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": facts,
              "threads": args.threads, "repeats": args.repeats, "timing_subset": args.timing_subset,
              "every": args.every, "results": results, "skipped": skipped}
    report["machine"]["loadavg_end"] = os.getloadavg()
    if "auto" in names:
        from bglab.foreground.registry import is_available as _avail

        report["auto_hand_branch"] = _avail("mediapipe-hands")[0]
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

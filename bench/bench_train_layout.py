"""Training-step throughput of the segmenters ``train-seg`` builds, NCHW against channels-last, side by side in
one run on the same synthetic batches (why ``bglab.train.segtrain.CHANNELS_LAST`` is the training layout):

    .venv/bin/python bench/bench_train_layout.py                  # EffUNet (lite0) and the small U-Net, 160 px
    .venv/bin/python bench/bench_train_layout.py --size 320 --json out.json

Each cell: ``--repeats`` rounds of ``--steps`` optimiser steps (forward, BCE + Dice, backward, Adam) at
``--batch``, after two warm-up steps; images per second, median and range over the rounds. Layouts alternate
round by round so a change in the machine's load hits both. Data loading and validation are left out
(``train-seg`` logs the whole loop's img/s per epoch). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.train.machine import machine_info  # noqa: E402


def _model(name: str):  # noqa: ANN202
    from bglab.train.segtrain import build_model

    arch = {"encoder": "efficientnet-lite0"} if name == "effunet" else {"encoder": "none"}
    base = {"depth": 4, "base": 16, "dropout": 0.0, "batchnorm": True, "skip": "concat", "max_mult": 4,
            "separable": False}
    return build_model({**base, **arch}, pretrained=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="effunet,unet", help="effunet (the v4 EfficientNet U-Net), unet (v3)")
    ap.add_argument("--size", type=int, default=160, help="training crop side (train-seg --size; 160)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import torch

    from bglab.train.unet import bce_dice_loss

    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=gen)
    y = (torch.rand(a.batch, 1, a.size, a.size, generator=gen) > 0.5).float()
    layouts = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    rows = []
    for name in a.models.split(","):
        nets = {}
        for lay, fmt in layouts.items():
            torch.manual_seed(0)
            m = _model(name).to(memory_format=fmt)
            m.train()
            nets[lay] = (m, torch.optim.Adam(m.parameters(), 1e-3), x.contiguous(memory_format=fmt))

        def step(lay: str, nets: dict = nets) -> None:
            m, opt, xb = nets[lay]
            loss = bce_dice_loss(m(xb), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for lay in layouts:
            for _ in range(2):
                step(lay)
        rates: dict[str, list[float]] = {lay: [] for lay in layouts}
        for _ in range(a.repeats):
            for lay in layouts:
                t = time.perf_counter()
                for _ in range(a.steps):
                    step(lay)
                rates[lay].append(a.steps * a.batch / (time.perf_counter() - t))
        for lay, r in rates.items():
            rows.append({"model": name, "layout": lay, "img_per_s_median": statistics.median(r),
                         "img_per_s_min": min(r), "img_per_s_max": max(r), "rounds": r})
        speed = statistics.median(rates["channels_last"]) / statistics.median(rates["nchw"])
        rows.append({"model": name, "layout": "speed-up", "channels_last_over_nchw": speed})
    out = {"machine": machine_info(),
           "args": vars(a), "rows": rows}
    for r in rows:
        if r["layout"] == "speed-up":
            print(f"{r['model']:8s} channels-last / NCHW: {r['channels_last_over_nchw']:.2f}x")
        else:
            print(f"{r['model']:8s} {r['layout']:14s} {r['img_per_s_median']:6.1f} img/s "
                  f"(range {r['img_per_s_min']:.1f}-{r['img_per_s_max']:.1f} over {len(r['rounds'])} rounds)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

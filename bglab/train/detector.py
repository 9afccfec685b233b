"""A box + label model in plain PyTorch: ONE object of interest per input crop, two heads, summed losses.

This is the reference study's first model (a backbone with a box head and a label head, losses summed),
made small enough to train on a CPU:

* backbone: a compact ResNet-style network (:class:`TinyResNet`: a stride-2 stem and four stages of two
  basic residual blocks, channels ``width x (1, 2, 4, 8)``, total stride 16; ~1.0 M parameters at
  ``width=16``, input 96);
* box head: the last feature map (``size/16`` squared cells) reduced by a 1x1 convolution, flattened (so
  the head sees *where* things are, which global pooling would throw away), two linear layers, a sigmoid:
  the box as normalised corners ``(x0, y0, x1, y1)`` in [0, 1] of the input crop;
* label head: global average pooling, dropout, a linear layer: class logits;
* loss: ``box_weight * (L1(box) + GIoU loss(box)) + cross-entropy(label)``
  (:func:`detection_loss`; the reference used L1 + BCE).

:func:`fit` trains with Adam and cosine decay, early stopping on the validation loss and an optional time
budget, and keeps ``best.safetensors`` / ``last.safetensors`` in the run folder (weights only, safetensors,
no pickle; the architecture and class names ride in the file's metadata, so :func:`load_detector` needs
nothing else; the network, :func:`load_detector` and :func:`predict` live in :mod:`bglab.nets.boxnet`, so
the ``box-model`` locator runs a model without the trainer). :func:`export_onnx` writes an ONNX file with
outputs ``box`` (N, 4) and ``prob`` (N, C). Inputs are float32 NCHW RGB scaled to [0, 1] and normalised
with :data:`MEAN` / :data:`STD` (use :func:`to_tensor`). :func:`synthetic_squares` makes a toy data set
(coloured squares on noise) for tests.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bglab.errors import BglabError, ConfigError
from bglab.io.tensorfiles import save_tensors
from bglab.nets.boxnet import (MEAN, STD, BoxLabelNet, TinyResNet, load_detector, order_corners, predict,
                               to_tensor)

__all__ = [
    "MEAN", "STD", "BoxLabelNet", "FitConfig", "FitResult", "TinyResNet", "box_iou_xyxy", "count_params",
    "detection_loss",
    "export_onnx", "fit", "giou_loss", "load_detector", "predict", "save_detector", "synthetic_squares",
    "to_tensor",
]


# ---------------------------------------------------------------------------------------------- model


class _ProbModel(nn.Module):
    """For export: ordered box corners and softmax probabilities."""

    def __init__(self, net: BoxLabelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        box, logits = self.net(x)
        return order_corners(box), torch.softmax(logits, dim=1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- losses


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of two (N, 4) tensors of xyxy boxes (corners ordered first)."""
    a, b = order_corners(a), order_corners(b)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / union.clamp(min=1e-9)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - GIoU`` over (N, 4) xyxy boxes (corners of ``pred`` ordered first)."""
    p, t = order_corners(pred), order_corners(target)
    iw = (torch.minimum(p[:, 2], t[:, 2]) - torch.maximum(p[:, 0], t[:, 0])).clamp(min=0)
    ih = (torch.minimum(p[:, 3], t[:, 3]) - torch.maximum(p[:, 1], t[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) + (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1]) - inter
    iou = inter / union.clamp(min=1e-7)
    cw = torch.maximum(p[:, 2], t[:, 2]) - torch.minimum(p[:, 0], t[:, 0])
    ch = torch.maximum(p[:, 3], t[:, 3]) - torch.minimum(p[:, 1], t[:, 1])
    hull = (cw * ch).clamp(min=1e-7)
    return (1 - (iou - (hull - union) / hull)).mean()


def detection_loss(box: torch.Tensor, logits: torch.Tensor, box_t: torch.Tensor, label_t: torch.Tensor, *,
                   box_weight: float = 1.0, class_weight: torch.Tensor | None = None,
                   giou: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed loss ``box_weight * (L1 [+ GIoU]) + CE`` and its parts (as floats) for logging."""
    l1 = F.l1_loss(box, box_t)
    lg = giou_loss(box, box_t) if giou else box.new_zeros(())
    ce = F.cross_entropy(logits, label_t, weight=class_weight)
    total = box_weight * (l1 + lg) + ce
    return total, {"l1": float(l1.detach()), "giou": float(lg.detach()), "ce": float(ce.detach())}


# ---------------------------------------------------------------------------------------------- data helpers


def synthetic_squares(n: int, size: int = 32, *, seed: int = 0,
                      colors: Sequence[tuple[int, int, int]] = ((230, 30, 30), (30, 200, 30), (40, 60, 230))
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Toy detection set: one filled square per noisy image; its colour is the label.

    Returns ``images`` uint8 (n, size, size, 3), ``boxes`` float32 (n, 4) normalised xyxy, ``labels`` int64 (n,).
    """
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8) // 2 + 64
    boxes = np.zeros((n, 4), np.float32)
    labels = rng.integers(0, len(colors), size=n).astype(np.int64)
    for i in range(n):
        s = int(rng.integers(size // 5, size // 2 + 1))
        x0 = int(rng.integers(0, size - s + 1))
        y0 = int(rng.integers(0, size - s + 1))
        imgs[i, y0:y0 + s, x0:x0 + s] = colors[labels[i]]
        boxes[i] = (x0 / size, y0 / size, (x0 + s) / size, (y0 + s) / size)
    return imgs, boxes, labels


# ---------------------------------------------------------------------------------------------- checkpoints


def save_detector(model: BoxLabelNet, path: str | Path, classes: Sequence[str],
                  extra: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors (atomic); architecture, class names and ``extra`` as JSON metadata. No pickle."""
    if len(classes) != model.n_classes:
        raise ConfigError(f"{len(classes)} class names for a model with {model.n_classes} outputs")
    meta = {"bglab.model": "box-label", "arch": json.dumps(model.arch()), "classes": json.dumps(list(classes)),
            "extra": json.dumps(extra or {})}
    p = Path(path)
    save_tensors(p, model.state_dict(), meta)
    return p


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17) -> Path:
    """Export a checkpoint to ONNX (input ``input`` (N, 3, S, S); outputs ``box`` (N, 4), ``prob`` (N, C)).

    The class names and input size are stored as metadata (``bglab.classes``, ``bglab.size``); ONNX Runtime
    is checked against PyTorch (max abs diff < 1e-4). Needs the ``onnx`` package.
    """
    import onnx
    import onnxruntime as ort

    model, info = load_detector(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    prob = _ProbModel(model).eval()
    size = model.size
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is legacy; it needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(prob, (torch.zeros(1, 3, size, size),), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["box", "prob"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "box": {0: "batch"}, "prob": {0: "batch"}})
    m = onnx.load(str(tmp))
    for k, v in {"bglab.model": "box-label", "bglab.classes": json.dumps(info["classes"]),
                 "bglab.size": str(size), "bglab.mean": json.dumps(MEAN), "bglab.std": json.dumps(STD)}.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.save(m, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_box, ref_prob = prob(x)
    got_box, got_prob = sess.run(None, {"input": x.numpy()})
    diff = max(float(np.abs(ref_box.numpy() - got_box).max()), float(np.abs(ref_prob.numpy() - got_prob).max()))
    if not diff < 1e-4:
        tmp.unlink(missing_ok=True)
        raise BglabError(f"exported model disagrees with PyTorch (max abs diff {diff:.2e})", path=out)
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------- training


@dataclass
class FitConfig:
    """Training options for :func:`fit`."""

    epochs: int = 30
    max_minutes: float | None = None
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    box_weight: float = 2.0
    giou: bool = True
    balance_classes: bool = False  # weight the cross-entropy by inverse class frequency
    threads: int = 2
    seed: int = 0


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stop: str  # "epochs", "early-stopping" or "time"
    elapsed_s: float
    history: list[dict[str, float]]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images (normalised), boxes (N, 4), labels (N,)


def _evaluate_loss(model: BoxLabelNet, batches: Sequence[Batch], cfg: FitConfig,
                   class_weight: torch.Tensor | None) -> dict[str, float]:
    model.eval()
    tot = n = 0.0
    iou_sum = correct = 0.0
    with torch.no_grad():
        for x, b, y in batches:
            box, logits = model(x)
            loss, _ = detection_loss(box, logits, b, y, box_weight=cfg.box_weight, giou=cfg.giou,
                                     class_weight=class_weight)
            k = len(y)
            tot += float(loss) * k
            n += k
            iou_sum += float(box_iou_xyxy(box, b).sum())
            correct += float((logits.argmax(1) == y).sum())
    n = max(n, 1)
    return {"val_loss": tot / n, "val_iou": iou_sum / n, "val_acc": correct / n}


def fit(model: BoxLabelNet, train_batches: Callable[[int], Sequence[Batch]], val_batches: Sequence[Batch],
        run: str | Path, classes: Sequence[str], cfg: FitConfig, *, class_counts: Sequence[int] | None = None,
        log: Callable[[str], None] = print, extra: dict[str, Any] | None = None) -> FitResult:
    """Train ``model``; ``train_batches(epoch)`` yields that epoch's batches (fresh random crops each epoch).

    AdamW with cosine learning-rate decay over whichever ends first, the epochs or the time budget. Early
    stopping on the validation loss (``patience`` epochs without improvement), optional time budget
    (``max_minutes``, checked after every batch; the epoch in progress is cut short and still validated).
    Writes ``RUN/log.csv`` (one row per epoch), ``RUN/best.safetensors``, ``RUN/last.safetensors`` and
    ``RUN/state.json``.
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(model, train_batches, val_batches, Path(run), classes, cfg, class_counts, log, extra)
    finally:
        torch.set_num_threads(threads)


def _fit(model: BoxLabelNet, train_batches: Callable[[int], Sequence[Batch]], val_batches: Sequence[Batch],
         run: Path, classes: Sequence[str], cfg: FitConfig, class_counts: Sequence[int] | None,
         log: Callable[[str], None], extra: dict[str, Any] | None) -> FitResult:
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    class_weight = None
    if cfg.balance_classes and class_counts is not None:
        c = torch.tensor([max(1, int(v)) for v in class_counts], dtype=torch.float32)
        class_weight = (c.sum() / (len(c) * c)).clamp(max=10.0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.monotonic()
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf

    def set_lr(epoch_progress: float) -> None:
        # cosine decay over whichever ends first: the epochs or the time budget
        done = min(1.0, max(epoch_progress / max(1, cfg.epochs), (time.monotonic() - t0) / budget))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done)))

    best, best_epoch, bad, stop = math.inf, -1, 0, "epochs"
    history: list[dict[str, float]] = []
    log_path = run / "log.csv"
    extra = dict(extra or {})
    epoch = -1
    for epoch in range(cfg.epochs):
        model.train()
        te = time.monotonic()
        sums = {"loss": 0.0, "l1": 0.0, "giou": 0.0, "ce": 0.0}
        seen = 0
        out_of_time = False
        batches = train_batches(epoch)
        n_batches = len(batches) if hasattr(batches, "__len__") else 0
        for bi, (x, b, y) in enumerate(batches):
            set_lr(epoch + (bi / n_batches if n_batches else 0.0))
            box, logits = model(x)
            loss, parts = detection_loss(box, logits, b, y, box_weight=cfg.box_weight, giou=cfg.giou,
                                         class_weight=class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            k = len(y)
            seen += k
            sums["loss"] += float(loss.detach()) * k
            for key, v in parts.items():
                sums[key] += v * k
            if time.monotonic() - t0 > budget:
                out_of_time = True
                break
        row: dict[str, float] = {"epoch": epoch, **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
        row.update(_evaluate_loss(model, val_batches, cfg, class_weight))
        row.update({"lr": opt.param_groups[0]["lr"], "epoch_s": time.monotonic() - te,
                    "elapsed_s": time.monotonic() - t0, "samples": seen})
        history.append(row)
        _append_log(log_path, row, first=epoch == 0)
        improved = row["val_loss"] < best - 1e-5
        if improved:
            best, best_epoch, bad = row["val_loss"], epoch, 0
            save_detector(model, run / "best.safetensors", classes,
                          {**extra, "epoch": epoch, "val": {k: row[k] for k in ("val_loss", "val_iou", "val_acc")}})
        else:
            bad += 1
        save_detector(model, run / "last.safetensors", classes, {**extra, "epoch": epoch})
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val IoU {row['val_iou']:.3f}  val acc {row['val_acc']:.3f}  ({row['epoch_s']:.0f} s)"
            f"{'  *' if improved else ''}")
        if out_of_time:
            stop = "time"
            break
        if bad >= cfg.patience:
            stop = "early-stopping"
            break
    result = FitResult(best_epoch, best, epoch + 1, stop, time.monotonic() - t0, history)
    state = {k: v for k, v in asdict(result).items() if k != "history"}
    state["config"] = asdict(cfg)
    tmp = run / f".state.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=1, default=float) + "\n")
    os.replace(tmp, run / "state.json")
    return result


def _append_log(path: Path, row: dict[str, float], *, first: bool) -> None:
    mode = "w" if first or not path.exists() else "a"
    with open(path, mode, newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if mode == "w":
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

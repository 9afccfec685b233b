"""Train the hand U-Net on composites, checkpoint it (safetensors + JSON, no pickle), export it to ONNX.

Run folder layout (``--out RUN_DIR``)::

    config.json            every option, the command line, the data counts
    splits.json            the seeded train / val / test file lists (keyed webcam photos) + background split
    log.csv                one row per epoch: losses, val F1 / IoU, learning rate, time, images/s
    last.safetensors       weights of the last finished epoch        (+ last_optim.safetensors: Adam state)
    best.safetensors       weights with the lowest validation loss
    state.json             epoch, best loss / epoch, elapsed seconds, scheduler and optimizer scalars

``--resume`` reloads ``last*`` and ``state.json`` and continues at the next epoch (the data of epoch ``e``
depends only on (seed, e), so a resumed run sees what an uninterrupted one would have).
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from bglab.errors import BglabError, ConfigError, DatasetError
from bglab.io.files import atomic_write_text, sha256_file
from bglab.io.seeds import seed_everything
from bglab.train import composite as C
from bglab.io.tensorfiles import read_tensors, save_tensors
from bglab.train.state import from_json_float, load_optimizer, optimizer_tensors, to_json
from bglab.train.unet import UNet, bce_dice_loss, count_params

#: validation images (an even sample of them) that measure the batch-norm statistics of an ``--init`` ONNX model
INIT_CALIBRATION = 256
ARCH_KEYS = ("depth", "base", "dropout", "batchnorm", "skip", "max_mult", "separable", "encoder")
ENCODERS = ("none", "efficientnet-lite0")
#: the layout the networks train in: on 2 CPU cores channels-last convolutions run the EfficientNet U-Net's
#: training steps 1.7x faster than NCHW (bench/bench_train_layout.py); checkpoints are written contiguous
CHANNELS_LAST = torch.channels_last


@dataclass
class TrainConfig:
    keyed: str
    images: str
    out: str
    data_root: str | None = None  # backgrounds / pets3 / facemask root; default: images/../..
    size: int = 160
    epochs: int = 100
    max_minutes: float | None = None
    depth: int = 4
    base: int = 16
    max_mult: int = 4
    separable: bool = False
    dropout: float = 0.0
    batchnorm: bool = True
    skip: str = "concat"
    augment: bool = True
    faces: bool = True
    harmonize: bool = True
    seed: int = 0
    batch: int = 16
    lr: float = 1e-3
    samples_per_epoch: int = 1600
    val_composites: int = 240
    val_plain: int | None = None  # None = every val webcam photo
    patience: int = 6
    threads: int = 2
    workers: int = 1
    use_qc: bool = True
    limit: int | None = None  # cap records / backgrounds (tests)
    # real-scene photos (class folders, or any sub-folders) with masks from `bglab key --backend ...`: one folder
    # or several (a list; real_masks pairs with it item by item)
    real_images: str | list[str] | None = None
    real_masks: str | list[str] | None = None
    real_split: tuple[float, float, float] = (0.5, 0.1, 0.4)  # grouped like `bglab experiment`; test never used
    real_origin: str | None = None  # source name for the split's strata (default: each real_images folder's name)
    init: str | None = None  # warm start: a train-seg checkpoint (.safetensors) of the same architecture
    p_real: float = 0.3
    encoder: str = "none"  # "none": the from-scratch U-Net; "efficientnet-lite0": pretrained encoder + decoder
    encoder_lr: float = 0.3  # the pretrained encoder's learning rate as a fraction of --lr
    scenes: bool = False  # v4 scene kinds (hand over face, egocentric, hard negatives, pale) + photometric realism
    device: str = "cpu"  # cpu | cuda | auto (bglab.train.device); may change on --resume
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def arch(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ARCH_KEYS}

    def real_sets(self) -> list[tuple[str, str]]:
        """(photos, masks) folder pairs of the pseudo-labelled real-scene sets, in the order given."""
        def as_list(v: str | list[str] | None) -> list[str]:
            return [] if not v else [v] if isinstance(v, str) else list(v)

        images, masks = as_list(self.real_images), as_list(self.real_masks)
        if images and not masks:
            raise ConfigError("real_images needs real_masks", hint="pass --real-masks DIR (from `bglab key`)")
        if len(images) != len(masks):
            raise ConfigError(f"{len(images)} --real-images folder(s) but {len(masks)} --real-masks folder(s)",
                              hint="give one --real-masks per --real-images, in the same order")
        return list(zip(images, masks, strict=True))


def build_model(arch: dict[str, Any], *, pretrained: bool = False) -> torch.nn.Module:
    """The network an ``arch`` dict describes: bglab's U-Net (``encoder`` "none", the default) or the
    EfficientNet-Lite U-Net (:mod:`bglab.train.effunet`; ``pretrained`` loads the ImageNet encoder weights,
    only wanted for a fresh run: checkpoints hold every weight)."""
    enc = arch.get("encoder") or "none"
    if enc != "none":
        from bglab.train.effunet import EffUNet

        return EffUNet(enc, pretrained=pretrained, dropout=float(arch.get("dropout", 0.0)))
    return UNet(3, 1, depth=int(arch["depth"]), base=int(arch["base"]), dropout=float(arch["dropout"]),
                batchnorm=bool(arch["batchnorm"]), skip=arch["skip"], max_mult=int(arch.get("max_mult", 8)),
                separable=bool(arch.get("separable", False)))


def normalisation(arch: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the network's input, in the ``(x / 255 - mean) / std`` form."""
    if (arch.get("encoder") or "none") != "none":
        from bglab.train.effunet import LITE_MEAN, LITE_STD

        return LITE_MEAN, LITE_STD
    return C.IMAGENET_MEAN, C.IMAGENET_STD


def input_multiple(arch: dict[str, Any]) -> int:
    """Input sides must be multiples of this (1: any size)."""
    if (arch.get("encoder") or "none") != "none":
        from bglab.train.effunet import MULTIPLE

        return MULTIPLE
    return 1


def renormalise(x: np.ndarray, src: tuple[Sequence[float], Sequence[float]],
                dst: tuple[Sequence[float], Sequence[float]]) -> np.ndarray:
    """Inputs normalised with ``src`` (mean, std) re-expressed with ``dst`` (exact: both are per-channel affine)."""
    if tuple(src[0]) == tuple(dst[0]) and tuple(src[1]) == tuple(dst[1]):
        return x
    sm, ss = (np.asarray(v, np.float32)[None, :, None, None] for v in src)
    dm, ds = (np.asarray(v, np.float32)[None, :, None, None] for v in dst)
    return np.ascontiguousarray(((x * ss + sm) - dm) / ds, dtype=np.float32)


def scene_spec(cfg: TrainConfig, *, real: bool) -> C.CompositeSpec:
    """The training sample mix of a config (v3: harmonised composites, + real photos; + v4 scene kinds)."""
    kw: dict[str, Any] = {"harmonize": cfg.harmonize}
    if real:
        kw.update(p_plain=0.08, p_real=cfg.p_real)
    if cfg.scenes:
        kw.update(scenes=dict(C.V4_SCENES), p_distract=0.3, p_photo=0.5)
    return C.CompositeSpec(**kw)


# ----------------------------------------------------------------------------------------------- metrics
def mask_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """IoU, F1, precision, recall of two binary masks (both empty -> all 1.0; one empty -> 0.0)."""
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    tp = float(np.logical_and(p, g).sum())
    fp = float(np.logical_and(p, ~g).sum())
    fn = float(np.logical_and(~p, g).sum())
    if tp + fp + fn == 0:
        return {"iou": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}
    return {
        "iou": tp / (tp + fp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else (1.0 if tp + fn == 0 else 0.0),
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp, "fp": fp, "fn": fn,
    }


# ----------------------------------------------------------------------------------------------- checkpoints
def save_weights(model: torch.nn.Module, path: Path, arch: dict[str, Any]) -> None:
    """The model's weights (CPU copies, whatever device it trains on) with its architecture."""
    save_tensors(path, {k: v.detach().cpu() for k, v in model.state_dict().items()}, {"arch": json.dumps(arch)})


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise BglabError("checkpoint not found", path=path, hint="train first with `bglab train-seg`")
    model.load_state_dict(load_file(str(path)))


def save_checkpoint(run: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    state: dict[str, Any], arch: dict[str, Any]) -> None:
    save_weights(model, run / "last.safetensors", arch)
    tens, scal = optimizer_tensors(opt)
    save_tensors(run / "last_optim.safetensors", tens)
    full = dict(state)
    full["optimizer"] = scal
    full["scheduler"] = to_json(sched.state_dict()) if sched is not None else None
    atomic_write_text(run / "state.json", json.dumps(full, indent=1))


def init_file(cfg: TrainConfig) -> Path | None:
    """The file ``cfg.init`` names: a path, or a shipped segmenter's name (``unet-effnet``, ``unet``)."""
    if not cfg.init:
        return None
    from bglab.train.onnx_weights import shipped_model

    return shipped_model(cfg.init) or Path(cfg.init)


def read_init(cfg: TrainConfig) -> dict[str, torch.Tensor] | None:
    """The weights ``cfg.init`` names, checked against the run's architecture (None without ``init``).

    A warm start: a new run (its own data, learning rate, epochs) from another run's checkpoint, or from an
    exported ONNX model such as the shipped segmenter (:mod:`bglab.train.onnx_weights`), e.g. to fine-tune it on
    a user's own masks. Checked before anything is written."""
    path = init_file(cfg)
    if path is None:
        return None
    from safetensors import SafetensorError

    from bglab.train.onnx_weights import is_onnx, load_onnx_weights, verified_info

    if is_onnx(path):  # an exported model: its record is the JSON beside it, its weights batch-norm folded
        info = verified_info(path)
        arch = {"encoder": "none", **(info.get("arch") or {})}
        keys = ("encoder",) if arch["encoder"] != "none" else tuple(k for k in ARCH_KEYS if k != "dropout")
        tensors = None
    else:
        hint = "pass a train-seg checkpoint (RUN/best.safetensors), an exported .onnx or a shipped model's name"
        if not path.is_file():
            raise BglabError("--init checkpoint not found", path=path, hint=hint)
        try:
            meta, tensors = read_tensors(path)
            arch = json.loads(meta.get("arch", "null"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BglabError(f"--init is not a readable safetensors checkpoint ({exc})", path=path,
                             hint=hint) from exc
        if not isinstance(arch, dict):
            raise BglabError("--init has no architecture record (not written by train-seg)", path=path, hint=hint)
        keys = ARCH_KEYS
    diff = _differences(arch, cfg, keys)
    if diff:
        listed = ", ".join(f"{k}: {a!r} in the file vs {b!r} asked" for k, (a, b) in diff.items())
        raise ConfigError(f"--init was trained with another architecture ({listed})", path=path,
                          hint="pass the same --encoder / --depth / --base ... as the run that wrote it")
    if tensors is None:
        model = build_model(cfg.arch())
        load_onnx_weights(model, path)
        tensors = model.state_dict()
    return tensors


def load_checkpoint(run: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None,
                    sched: Any = None) -> dict[str, Any]:
    state_path = run / "state.json"
    if not state_path.is_file():
        raise BglabError("nothing to resume: no state.json", path=run, hint="start without --resume")
    state = json.loads(state_path.read_text())
    load_weights(model, run / "last.safetensors")
    if opt is not None:
        load_optimizer(opt, load_file(str(run / "last_optim.safetensors")), state["optimizer"])
    if sched is not None and state.get("scheduler"):
        sched.load_state_dict({k: from_json_float(v) for k, v in state["scheduler"].items()})
    return state


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    train: C.CompositeDataset
    val_x: np.ndarray
    val_y: np.ndarray
    val_kind: np.ndarray  # 0 composite, 1 plain webcam, 2 real photo (pseudo-labelled)
    splits: dict[str, Any]
    counts: dict[str, int]
    test: list[C.KeyedRecord] = field(default_factory=list)  # held-out keyed webcam photos (scored, never trained)
    norm: tuple[tuple[float, ...], tuple[float, ...]] = (C.IMAGENET_MEAN, C.IMAGENET_STD)  # of val_x


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def prepare_data(cfg: TrainConfig, log: Callable[[str], None] = print) -> Data:
    import cv2

    cv2.setNumThreads(1)
    t0 = time.time()
    records = C.list_keyed(cfg.keyed, cfg.images, use_qc=cfg.use_qc)
    if cfg.limit:
        records = [r for i, r in enumerate(records) if i % max(1, len(records) // cfg.limit) == 0][: cfg.limit]
    split = C.split_records(records, seed=cfg.seed)
    if not split["train"] or not split["val"]:
        raise DatasetError(f"too few keyed photos to split ({len(records)})", path=cfg.keyed)
    root = Path(cfg.data_root) if cfg.data_root else Path(cfg.images).resolve().parent.parent
    bgs = C.load_backgrounds(root, faces=cfg.faces, limit=cfg.limit)
    if not bgs:
        raise DatasetError("no background photos found", path=root, hint="pass --data-root (backgrounds/, pets3/)")
    bg_train, bg_val = C.split_backgrounds(bgs, seed=cfg.seed)
    hands_tr, plain_tr = C.load_hands(split["train"])
    hands_va, plain_va = C.load_hands(split["val"])
    real_split: dict[str, list[C.KeyedRecord]] = {"train": [], "val": [], "test": []}
    real_tr: list[tuple[np.ndarray, np.ndarray]] = []
    real_va: list[tuple[np.ndarray, np.ndarray]] = []
    for images, masks in cfg.real_sets():  # each set split on its own, like an experiment splits each source
        recs = C.list_keyed(masks, images, use_qc=cfg.use_qc, classes=None)
        part = C.split_grouped(recs, cfg.real_split, origin=cfg.real_origin or Path(images).name, seed=cfg.seed)
        real_hands, tr = C.load_hands(part["train"], despill=False, long_side=320)
        hands_tr = hands_tr + real_hands
        real_tr += tr
        real_va += C.load_hands(part["val"], despill=False, long_side=320, cut=False)[1]
        for k in real_split:
            real_split[k] += part[k]
    spec = scene_spec(cfg, real=bool(real_tr))
    mean, std = normalisation(cfg.arch())
    train = C.CompositeDataset(hands_tr, plain_tr, [b for _, b in bg_train], size=cfg.size,
                               length=cfg.samples_per_epoch, seed=cfg.seed, augment=cfg.augment,
                               bg_weights=C.source_weights([n for n, _ in bg_train]), spec=spec, real=real_tr,
                               bg_names=[n for n, _ in bg_train], mean=mean, std=std)
    # fixed validation: composites (val hands on val backgrounds, fixed seed) + the plain val webcam photos
    vspec = C.CompositeSpec(p_plain=0.0)
    vds = C.CompositeDataset(hands_va, plain_va, [b for _, b in bg_val], size=cfg.size, length=cfg.val_composites,
                             seed=cfg.seed + 10_000, augment=True, spec=vspec,
                             bg_weights=C.source_weights([n for n, _ in bg_val]))
    cx, cy = C.fixed_set(vds, cfg.val_composites)
    plain = plain_va if cfg.val_plain is None else plain_va[: cfg.val_plain]
    px, py = _fixed_photos(plain, cfg.size)
    rx, ry = _fixed_photos(real_va, cfg.size)
    splits = {k: [r.key for r in v] for k, v in split.items()}
    splits.update({f"real_{k}": [r.key for r in v] for k, v in real_split.items()})
    splits["backgrounds_train"] = [n for n, _ in bg_train]
    splits["backgrounds_val"] = [n for n, _ in bg_val]
    counts = {"keyed": len(records), "train": len(split["train"]), "val": len(split["val"]),
              "test": len(split["test"]), "hands_train": len(hands_tr), "backgrounds_train": len(bg_train),
              "backgrounds_val": len(bg_val), "val_composites": len(cx), "val_plain": len(px),
              "real_train": len(real_tr), "real_val": len(rx), "real_test_unused": len(real_split["test"])}
    log(f"data: {counts} ({time.time() - t0:.1f} s)")
    return Data(train, np.concatenate([cx, px, rx]), np.concatenate([cy, py, ry]).astype(np.float32),
                np.array([0] * len(cx) + [1] * len(px) + [2] * len(rx)), splits, counts, list(split["test"]))


def _fixed_photos(pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(photo, mask) pairs squashed to size x size: network inputs and (1, S, S) masks (empty arrays if none)."""
    import cv2

    if not pairs:
        return np.zeros((0, 3, size, size), np.float32), np.zeros((0, 1, size, size), np.float32)
    x = np.stack([C.to_input(cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)) for im, _ in pairs])
    y = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)[None] for _, m in pairs])
    return x, y


# ----------------------------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, kind: np.ndarray | None = None,
             batch: int = 32, threshold: float = 0.5, device: str = "cpu") -> dict[str, float]:
    """Validation loss and mean per-image F1 / IoU (overall, and per kind when given)."""
    model.eval()
    losses, f1s, ious = [], [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).to(device, memory_format=CHANNELS_LAST)
        yb = torch.from_numpy(y[i:i + batch]).to(device)
        logits = model(xb)
        losses.append(float(bce_dice_loss(logits, yb)) * len(xb))
        pb = (torch.sigmoid(logits) > threshold).cpu().numpy()
        for p, g in zip(pb, y[i:i + batch] > 0.5, strict=True):  # the host copy of yb
            s = mask_scores(p[0], g[0])
            f1s.append(s["f1"])
            ious.append(s["iou"])
    f1a, ioua = np.array(f1s), np.array(ious)
    out = {"val_loss": sum(losses) / len(x), "val_f1": float(f1a.mean()), "val_iou": float(ioua.mean())}
    if kind is not None:
        for k, name in ((0, "comp"), (1, "plain"), (2, "real")):
            sel = kind == k
            if sel.any():
                out[f"val_f1_{name}"] = float(f1a[sel].mean())
                out[f"val_iou_{name}"] = float(ioua[sel].mean())
    return out


LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_f1", "val_iou", "val_f1_comp", "val_iou_comp",
              "val_f1_plain", "val_iou_plain", "val_f1_real", "val_iou_real", "lr", "epoch_s", "elapsed_s",
              "img_per_s", "samples", "best"]


def _differences(old: dict[str, Any], cfg: TrainConfig, keys: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """``{key: (recorded, asked)}`` where a recorded config (a run's config.json, a checkpoint's ``arch``) and
    ``cfg`` differ; a key the record lacks counts as its default (records made before the key existed)."""
    out = {}
    for k in keys:
        was = old.get(k, TrainConfig.__dataclass_fields__[k].default)
        if was != getattr(cfg, k):
            out[k] = (was, getattr(cfg, k))
    return out


def _check_resume_config(run: Path, cfg: TrainConfig) -> TrainConfig:
    old = json.loads((run / "config.json").read_text())
    diff = _differences(old, cfg, ARCH_KEYS + ("size", "seed", "scenes"))
    if diff:
        k, (was, asked) = next(iter(diff.items()))  # the first, in ARCH_KEYS order
        raise ConfigError(f"--resume with a different {k} ({asked!r} vs {was!r} in the run)",
                          path=run / "config.json", hint="resume with the original options or use a new --out")
    return cfg


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, data: Data | None = None) -> dict[str, Any]:
    """Train (or resume) into ``cfg.out``; returns the final state (best loss / epoch, elapsed, stop reason)."""
    import cv2

    from bglab.train.device import resolve_device

    device = resolve_device(cfg.device)  # cuda without a GPU: refused before the run folder is made
    run = Path(cfg.out)
    fresh = not (resume and (run / "state.json").is_file())  # no epoch saved yet: the run starts from its init
    init = read_init(cfg) if fresh else None  # a bad --init: refused before the run folder is made
    run.mkdir(parents=True, exist_ok=True)
    if resume:
        if not (run / "config.json").is_file():
            raise BglabError("nothing to resume: no config.json", path=run, hint="start without --resume")
        _check_resume_config(run, cfg)
    elif (run / "state.json").is_file():
        raise ConfigError("run folder already holds a training run", path=run,
                          hint="pass --resume to continue it, or choose a new --out")
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    cv2.setNumThreads(1)
    data = data or prepare_data(cfg, log)
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {cfg.encoder!r}", hint=f"choose one of: {', '.join(ENCODERS)}")
    model = build_model(cfg.arch(), pretrained=fresh and init is None)
    norm = normalisation(cfg.arch())
    data.train.mean, data.train.std = norm
    val_x = renormalise(data.val_x, data.norm, norm)
    init_path = init_file(cfg) if init is not None else None
    if init is not None:
        model.load_state_dict(init)
        log(f"warm start from {cfg.init}" + (f" ({init_path})" if str(init_path) != str(cfg.init) else ""))
        from bglab.train.onnx_weights import is_onnx, recalibrate_batchnorm

        if is_onnx(init_path):  # folded batch-norms: give them real statistics
            calib = val_x[::max(1, -(-len(val_x) // INIT_CALIBRATION))]  # every kind of validation image
            n_bn = recalibrate_batchnorm(model, calib)
            log(f"batch-norm statistics of {n_bn} trainable layers measured on {len(calib)} validation images")
    n_params = count_params(model)
    # before the optimizer and the checkpoint load, so its state lands on the same device and layout
    model.to(device=device, memory_format=CHANNELS_LAST)
    if hasattr(model, "encoder_parameters"):  # pretrained encoder: a smaller step than the new decoder
        opt = torch.optim.Adam([{"params": model.decoder_parameters(), "lr": cfg.lr},
                                {"params": model.encoder_parameters(), "lr": cfg.lr * cfg.encoder_lr}], lr=cfg.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2)
    state: dict[str, Any] = {"epoch": -1, "best_loss": float("inf"), "best_epoch": -1, "elapsed_s": 0.0,
                             "bad_epochs": 0, "stop": None, "params": n_params}
    if resume and (run / "state.json").is_file():
        state.update({k: from_json_float(v) for k, v in load_checkpoint(run, model, opt, sched).items()
                      if k not in ("optimizer", "scheduler")})
        state["stop"] = None  # why the last session stopped (e.g. its time budget) must not stop this one
        log(f"resumed at epoch {state['epoch'] + 1} (best val loss {state['best_loss']:.4f} "
            f"at epoch {state['best_epoch']})")
    conf = asdict(cfg)
    conf.update(params=n_params, counts=data.counts, torch=torch.__version__)
    if init_path is not None:  # which file the warm start read, exactly (a shipped model changes with releases)
        conf.update(init_file=str(init_path), init_sha256=sha256_file(init_path))
    elif resume and (run / "config.json").is_file():  # a resumed run keeps its first session's record
        old = json.loads((run / "config.json").read_text())
        conf.update({k: old[k] for k in ("init_file", "init_sha256") if k in old})
    atomic_write_text(run / "config.json", json.dumps(conf, indent=1))
    atomic_write_text(run / "splits.json", json.dumps(data.splits, indent=0))
    log_path = run / "log.csv"
    if not log_path.is_file() or not resume:
        with log_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(LOG_FIELDS)
    start = "pretrained" if fresh and init is None else "from checkpoint"
    kind = f"EffUNet ({cfg.encoder}, {start})" if cfg.encoder != "none" else "UNet"
    log(f"model: {kind} {cfg.arch()} params={n_params} ({n_params * 4 / 1e6:.2f} MB float32) on {device}")
    if init is not None:  # a fresh warm start (init is read only then): the bar its epochs must clear
        ev0 = evaluate(model, val_x, data.val_y, data.val_kind, device=device)
        state.update(best_loss=ev0["val_loss"], best_epoch=-1, best_scores=dict(ev0), start_scores=dict(ev0))
        save_weights(model, run / "best.safetensors", cfg.arch())
        log(f"start (the --init weights on this run's validation set): val {ev0['val_loss']:.4f}  "
            f"F1 {ev0['val_f1']:.3f}  IoU {ev0['val_iou']:.3f}; best.safetensors holds them until an epoch "
            "does better")
    budget = cfg.max_minutes * 60.0 if cfg.max_minutes else float("inf")
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=cfg.batch, shuffle=False, num_workers=cfg.workers, drop_last=False,
        worker_init_fn=_worker_init if cfg.workers > 0 else None, prefetch_factor=4 if cfg.workers > 0 else None)
    prog = _progress() if progress else None
    start_epoch = state["epoch"] + 1
    t_session = time.time()
    elapsed0 = float(state["elapsed_s"])
    try:
        if prog is not None:
            prog.start()
        for epoch in range(start_epoch, cfg.epochs):
            if elapsed0 + (time.time() - t_session) >= budget:
                state["stop"] = "time budget"
                break
            data.train.epoch = epoch
            model.train()
            t0 = time.time()
            tot, n = 0.0, 0
            task = prog.add_task(f"epoch {epoch}", total=len(loader)) if prog is not None else None
            for xb, yb in loader:
                xb, yb = xb.to(device, memory_format=CHANNELS_LAST), yb.to(device)
                loss = bce_dice_loss(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(xb)
                n += len(xb)
                if prog is not None:
                    prog.update(task, advance=1, description=f"epoch {epoch} loss {tot / n:.4f}")
                if elapsed0 + (time.time() - t_session) >= budget:
                    state["stop"] = "time budget"
                    break
            if prog is not None:
                prog.remove_task(task)
            if n == 0:
                break
            ev = evaluate(model, val_x, data.val_y, data.val_kind, device=device)
            epoch_s = time.time() - t0
            state["elapsed_s"] = elapsed0 + (time.time() - t_session)
            improved = ev["val_loss"] < state["best_loss"] - 1e-4
            if improved:
                state.update(best_loss=ev["val_loss"], best_epoch=epoch, bad_epochs=0,
                             best_scores={k: v for k, v in ev.items()})
                save_weights(model, run / "best.safetensors", cfg.arch())
            else:
                state["bad_epochs"] += 1
            sched.step(ev["val_loss"])
            state["epoch"] = epoch
            save_checkpoint(run, model, opt, sched, state, cfg.arch())
            row = {"epoch": epoch, "train_loss": tot / n, **ev, "lr": opt.param_groups[0]["lr"],
                   "epoch_s": epoch_s, "elapsed_s": state["elapsed_s"], "img_per_s": n / epoch_s, "samples": n,
                   "best": int(improved)}
            with log_path.open("a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row.get(k, "")) for k in LOG_FIELDS])
            log(f"epoch {epoch:3d}  train {tot / n:.4f}  val {ev['val_loss']:.4f}  F1 {ev['val_f1']:.3f} "
                f"(comp {ev.get('val_f1_comp', float('nan')):.3f} / plain {ev.get('val_f1_plain', float('nan')):.3f}"
                f" / real {ev.get('val_f1_real', float('nan')):.3f})"
                f"  IoU {ev['val_iou']:.3f}  lr {opt.param_groups[0]['lr']:.1e}  {n / epoch_s:.1f} img/s"
                f"  {state['elapsed_s'] / 60:.1f} min{'  *' if improved else ''}")
            if state["stop"]:
                break
            if state["bad_epochs"] >= cfg.patience:
                state["stop"] = f"early stopping (no val improvement in {cfg.patience} epochs)"
                break
        else:
            state["stop"] = state["stop"] or "epochs done"
    finally:
        if prog is not None:
            prog.stop()
    state["stop"] = state["stop"] or "epochs done"
    save_state = json.loads((run / "state.json").read_text()) if (run / "state.json").is_file() else {}
    save_state["stop"] = state["stop"]
    if save_state:
        atomic_write_text(run / "state.json", json.dumps(save_state, indent=1))
    log(f"stopped: {state['stop']}; best val loss {state['best_loss']:.4f} at epoch {state['best_epoch']}, "
        f"{state['elapsed_s'] / 60:.1f} min")
    return state


def _fmt(v: Any) -> Any:
    return f"{v:.5g}" if isinstance(v, float) else v


def _progress():  # noqa: ANN202
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


# ----------------------------------------------------------------------------------------------- export
def export_onnx(run: str | Path, out: str | Path, *, which: str = "best", opset: int = 17,
                threshold: float = 0.5, size: int | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``RUN/<which>.safetensors`` to one ONNX file (dynamic batch / height / width, sigmoid output).

    Writes ``OUT.onnx`` and ``OUT.json`` (sha256, input size, normalisation, threshold, training command,
    validation scores) and checks ONNX Runtime against PyTorch (max abs diff must be < 1e-4). ``size`` is
    the inference long side recorded for the backend (default: the training crop size).
    """
    import onnx
    import onnxruntime as ort

    from bglab.train.unet import ProbModel

    run, out = Path(run), Path(out)
    conf_path = run / "config.json"
    if not conf_path.is_file():
        raise BglabError("not a training run (no config.json)", path=run, hint="train with `bglab train-seg`")
    conf = json.loads(conf_path.read_text())
    model = build_model(conf)
    load_weights(model, run / f"{which}.safetensors")
    prob = ProbModel(model).eval()
    mean, std = normalisation(conf)
    mult = input_multiple(conf)
    size = int(size or conf["size"])
    if size % mult:
        raise ConfigError(f"--size must be a multiple of {mult} for this model, not {size}",
                          hint=f"e.g. --size {max(mult, round(size / mult) * mult)}")
    encoder = conf.get("encoder") or "none"
    name = "hand_unet" if encoder == "none" else f"hand_unet_{encoder.replace('-', '_')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:  # the temporary file never outlives a failed export or check
        dummy = torch.randn(1, 3, size, size)
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(prob, (dummy,), str(tmp), dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["prob"], do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                            "prob": {0: "batch", 2: "height", 3: "width"}})
        m = onnx.load(str(tmp))
        meta = {"bglab.model": name, "bglab.size": str(size),
                "bglab.mean": json.dumps(list(mean)), "bglab.std": json.dumps(list(std)),
                "bglab.threshold": str(threshold), "bglab.resize": "long-side", "bglab.multiple": str(mult)}
        for k, v in meta.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        m.doc_string = ("bglab hand U-Net: input float32 NCHW RGB (x/255-mean)/std"
                        + (f", height and width multiples of {mult}" if mult > 1 else "")
                        + ", output sigmoid probability")
        onnx.checker.check_model(m)
        onnx.save(m, str(tmp))
        # ONNX Runtime vs PyTorch, at two shapes (dynamic batch and spatial size)
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        g = torch.Generator().manual_seed(0)
        max_diff = 0.0
        shapes = ((2, 3, size, size), (1, 3, max(size * 2 // 3, 8), size), (1, 3, 37, 53)) if mult == 1 else \
            ((2, 3, size, size), (1, 3, max(size - 2 * mult, mult), size), (1, 3, size + mult, 2 * mult))
        for shape in shapes:  # several sizes: the dynamic axes (and, for the encoder, its padding) hold
            x = torch.randn(*shape, generator=g)
            with torch.no_grad():
                ref = prob(x).numpy()
            got = sess.run(None, {"input": x.numpy()})[0]
            max_diff = max(max_diff, float(np.abs(ref - got).max()))
        log(f"ONNX Runtime vs PyTorch: max abs diff {max_diff:.2e}")
        if not max_diff < 1e-4:
            raise BglabError(f"exported model disagrees with PyTorch (max abs diff {max_diff:.2e} >= 1e-4)", path=out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").is_file() else {}
    info = {
        "name": name,
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "channels": "RGB",
                  "size": size, "resize": "long-side", "multiple": mult,
                  "resize_note": ("scale so the long side equals `size` (aspect kept, no padding); any H, W works"
                                  if mult == 1 else
                                  f"scale so the long side equals `size`, each side rounded to a multiple of {mult} "
                                  "(aspect kept within that rounding, no padding)"),
                  "mean": list(mean), "std": list(std), "scale": 1 / 255},
        "output": {"name": "prob", "meaning": "sigmoid hand probability, (N, 1, H, W)"},
        "threshold": threshold,
        "arch": ({k: conf[k] for k in ARCH_KEYS if k in conf} if encoder == "none"
                 else {"encoder": encoder, "decoder": "U-Net, depthwise-separable blocks",
                       "dropout": conf.get("dropout", 0.0), "pretrained": "ImageNet (efficientnet-lite0 wheel)"}),
        "params": conf.get("params"),
        "training": {"command": conf.get("command", ""), "elapsed_min": round(state.get("elapsed_s", 0) / 60, 1),
                     "epochs": state.get("epoch", -1) + 1, "best_epoch": state.get("best_epoch"),
                     "stop": state.get("stop"), "seed": conf.get("seed"), "counts": conf.get("counts"),
                     "crop_size": conf.get("size"), "scenes": conf.get("scenes", False),
                     "torch": conf.get("torch")},
        "validation": {k: round(v, 4) for k, v in (state.get("best_scores") or {}).items()},
        "export": {"opset": opset, "max_abs_diff_vs_torch": max_diff, "checkpoint": f"{which}.safetensors"},
    }
    if (run / "splits.json").is_file():  # the held-out keyed webcam photos, for the bench and the model card
        info["training"]["test_split"] = json.loads((run / "splits.json").read_text()).get("test", [])
    json_path = out.with_suffix(".json")
    if json_path.is_file():  # keep the bench's measured scores, but only for the same model file
        old = json.loads(json_path.read_text())
        if old.get("sha256") == info["sha256"]:
            for k in ("scores", "notes"):
                if k in old:
                    info[k] = old[k]
        elif "scores" in old:
            log(f"{json_path.name}: the bench scores of the file it replaces are dropped (another model); "
                "measure this one with bench/bench_segment.py --record")
    atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")
    log(f"wrote {out} ({info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256'][:12]}...) and {json_path.name}")
    return info


# ----------------------------------------------------------------------------------------------- ablation
ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("base", {"dropout": 0.0, "batchnorm": False, "augment": False}),
    ("+dropout", {"dropout": 0.2, "batchnorm": False, "augment": False}),
    ("+batch-norm", {"dropout": 0.2, "batchnorm": True, "augment": False}),
    ("+augmentation", {"dropout": 0.2, "batchnorm": True, "augment": True}),
    # v3's recipe: + the pseudo-labelled real photos (needs --real-images / --real-masks)
    ("+pseudo-labels", {"dropout": 0.0, "batchnorm": True, "augment": True, "real": True}),
    # v4: the pretrained EfficientNet-Lite0 encoder, then the new scene kinds + photometric realism
    ("+pretrained encoder", {"dropout": 0.0, "batchnorm": True, "augment": True, "real": True,
                             "encoder": "efficientnet-lite0"}),
    ("+scenes", {"dropout": 0.0, "batchnorm": True, "augment": True, "real": True,
                 "encoder": "efficientnet-lite0", "scenes": True}),
]


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: np.ndarray, *, size: int, arch: dict[str, Any]) -> np.ndarray:
    """Hand probability (H, W) for one RGB uint8 image, pre-processed exactly as the ``unet`` backend does."""
    import cv2

    from bglab.foreground.unet import as_rgb, input_shape

    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    nh, nw = input_shape(h, w, size, input_multiple(arch))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR)
    mean, std = normalisation(arch)
    x = torch.from_numpy(C.to_input(small, mean, std)[None])
    prob = torch.sigmoid(model.eval()(x))[0, 0].numpy()
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)


def score_sets(model: torch.nn.Module, sets: dict[str, Sequence[tuple[Path, Path]]], *, size: int,
               arch: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean per-image IoU / F1 (threshold 0.5) of ``model`` on each set of (image, mask) files."""
    out = {}
    for name, items in sets.items():
        if not items:
            continue
        sc = [mask_scores(predict_image(model, C._read_rgb(i), size=size, arch=arch) >= 0.5, C._read_mask(m) > 0.5)
              for i, m in items]
        out[name] = {"n": len(sc), "iou": float(np.mean([x["iou"] for x in sc])),
                     "f1": float(np.mean([x["f1"] for x in sc]))}
    return out


def eval_sets(data: Data, wild: str | Path | None) -> dict[str, list[tuple[Path, Path]]]:
    """The test sets of the ablation: held-out keyed webcam photos, and ``wild`` (images/ + masks/) if given."""
    sets: dict[str, list[tuple[Path, Path]]] = {"webcam_test": [(r.image, r.mask) for r in data.test]}
    if wild:
        root = Path(wild)
        imgs = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in C._PHOTO_EXT)
        sets["hands_wild"] = [(p, root / "masks" / f"{p.stem}.png") for p in imgs
                              if (root / "masks" / f"{p.stem}.png").is_file()]
        if not sets["hands_wild"]:
            raise DatasetError("no image with a mask in the wild set", path=root,
                               hint="expected DIR/images/NAME.jpg and DIR/masks/NAME.png")
    return sets


def ablate(cfg: TrainConfig, *, minutes_each: float = 3.0, names: Sequence[str] | None = None,
           log: Callable[[str], None] = print, progress: bool = False, wild: str | Path | None = None,
           eval_size: int = 160) -> list[dict[str, Any]]:
    """Short runs adding dropout, batch-norm, augmentation, pseudo-labels, the pretrained encoder and the v4
    scene kinds in turn; all scored on the same validation set, and (best checkpoint) on the held-out keyed
    webcam photos and ``wild`` (e.g. hands_wild: scored only, never trained on) at long side ``eval_size``
    (rounded to a multiple of 32 for the encoder models)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(names or ()) - {n for n, _ in ABLATIONS}
    if unknown:
        raise ConfigError(f"unknown ablation rows {sorted(unknown)}", hint=f"choose from: {[n for n, _ in ABLATIONS]}")
    base_data = prepare_data(cfg, log)
    sets = eval_sets(base_data, wild)
    rows = []
    for name, change in ABLATIONS:
        if names and name not in names:
            continue
        change = dict(change)
        use_real = bool(change.pop("real", False)) and bool(base_data.train.real)
        c = TrainConfig(**{**asdict(cfg), **change, "out": str(out / name.strip("+").replace(" ", "-")),
                           "max_minutes": minutes_each})
        spec = scene_spec(c, real=use_real)
        mean, std = normalisation(c.arch())
        t = base_data.train
        d = Data(C.CompositeDataset(t.hands, t.plain, t.backgrounds, size=c.size, length=c.samples_per_epoch,
                                    seed=c.seed, augment=c.augment, bg_weights=t.bg_p, spec=spec,
                                    real=t.real if use_real else (), bg_names=getattr(t, "bg_names", None),
                                    mean=mean, std=std),
                 base_data.val_x, base_data.val_y, base_data.val_kind, base_data.splits, base_data.counts,
                 base_data.test, base_data.norm)
        log(f"--- ablation {name}: {change}{' + real photos' if use_real else ''}")
        if Path(c.out, "state.json").is_file():
            raise ConfigError("ablation run folder already exists", path=c.out, hint="use a new --out")
        st = train(c, progress=progress, log=log, data=d)
        sc = st.get("best_scores") or {}
        model = build_model(c.arch())
        load_weights(model, Path(c.out) / "best.safetensors")
        mult = input_multiple(c.arch())
        size = max(mult, int(round(eval_size / mult)) * mult)
        tests = score_sets(model, sets, size=size, arch=c.arch())
        rows.append({"name": name, **change, "real": use_real, "epochs": st["epoch"] + 1,
                     "samples": (st["epoch"] + 1) * c.samples_per_epoch,
                     "minutes": round(st["elapsed_s"] / 60, 2), "eval_size": size,
                     **{k: sc.get(k) for k in ("val_loss", "val_f1", "val_iou", "val_f1_comp", "val_f1_plain")},
                     **{f"{k}_{m}": v[m] for k, v in tests.items() for m in ("iou", "f1")}})
        atomic_write_text(out / "ablation.json", json.dumps(rows, indent=1))
    atomic_write_text(out / "ablation.json", json.dumps(rows, indent=1))
    return rows

"""Train every protocol x arm x variant x seed with identical splits, order and initial weights; resumable.

Run directory (``OUT``)::

    config.yaml                      the resolved config (a different config in the same OUT is refused;
                                     arms that no run uses and ``threads`` may differ)
    data.json                        classes, counts per protocol part x class, samples left out and why
    cache/<arm>-<hash>.npz           preprocessed uint8 images per arm (no pickle)
    metrics/<run>.csv                per run: one ``fit`` row per epoch (running train loss / accuracy) and,
                                     every ``eval_every`` epochs, train / val / test rows (clean; the
                                     distorted copies at the final epoch, or every time with
                                     ``evaluate.distortion_curves: true``)
    metrics.csv, metrics.parquet     all runs together (columns in METRIC_COLUMNS)
    checkpoints/<run>.safetensors    weights (+ optimiser state while unfinished); the JSON state is in its
                                     metadata and mirrored in checkpoints/<run>.json
    predictions/<run>/<test>__<distortion>.npz   y_true, y_pred, keys, probs (class probabilities) of the
                                     final model
    predictions/<run>/matrix/<test>__<test arm>.npz   the same test images seen through each test arm
                                     (matrix studies; metric rows with split ``matrix`` and ``test_arm``)
    predictions/<run>/saliency__<test>.npz   Grad-CAM share inside the fg mask per image + a sample sheet
    sessions.jsonl                   one line per invocation, with the machine it ran on
    summary.json, report.html        written by :mod:`bglab.experiment.report`

Determinism: the initial weights come from ``(seed, "init")`` only, so every arm of a seed starts from the
same weights; the data order and augmentation of epoch ``e`` come from ``(seed, e)`` and the dropout masks
from ``torch.manual_seed((seed, e))``, so a resumed run continues exactly where it stopped. Resumption: a
finished run (checkpoint marked done) is skipped; an unfinished one continues at the epoch after its
checkpoint, and metric rows after that epoch are dropped first. A run's files are written in the order
predictions -> metrics -> checkpoint, each atomically, so an interruption never leaves them disagreeing.
Bit for bit means on one kind of machine: the CPU model, the instruction set torch's kernels use (AVX2,
AVX-512) and the torch version, all recorded per session (:mod:`bglab.train.machine`); elsewhere a
fine-tuned run lands within its seed spread, not on the same figure, and a resumed directory says so.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bglab.batch.engine import check_engine
from bglab.errors import BglabError, ConfigError
from bglab.experiment.augment import apply_bg_swap, augment_selected, bg_swap_plan
from bglab.experiment.checkpoints import checkpoint_state, load_checkpoint, restore_optimizer, save_checkpoint
from bglab.experiment.config import ExperimentConfig, RunKey, TrainConfig, VariantConfig, resolved_config
from bglab.experiment.data import ExperimentData, ProtocolData, arm_masks, distorted, load_data, make_protocol
from bglab.experiment.inference import as_float, normalise, predict, predict_proba, to_tensor
from bglab.experiment.metrics_file import METRIC_COLUMNS, read_metrics, write_metrics
from bglab.io.files import atomic_write_bytes, atomic_write_npz, atomic_write_text
from bglab.io.seeds import derive_seed, seed_everything
from bglab.train.device import resolve_device
from bglab.train.machine import machine_info, reproducibility_key

__all__ = ["METRIC_COLUMNS", "RunResult", "collect_metrics", "derive_seed", "run_experiment"]

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------- file helpers


@dataclass
class _EvalSet:
    split: str
    test_set: str
    distortion: str
    x: Any
    y: Any
    keys: np.ndarray
    test_arm: str = ""


@dataclass
class _Extras:
    """What matrix studies, background swapping and saliency add to a run (all optional)."""

    matrix: list[_EvalSet]
    swap: tuple[Any, Any, float] | None = None  # keep-mask (bool N,1,H,W), backgrounds (uint8), probability
    saliency: tuple[str, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str] | None = None
    # (test set, x uint8 tensor, keys, labels, masks bool (N,H,W), has mask (N,), reason when no masks)


@dataclass
class RunResult:
    key: RunKey
    status: str  # done | skipped (already done) | partial
    epochs_trained: int
    seconds: float


class _Budget:
    def __init__(self, max_epochs: int | None) -> None:
        self.left = max_epochs

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _build(variant: VariantConfig, n_classes: int, cfg: ExperimentConfig) -> Any:
    from bglab.train.classifiers import build_classifier

    opts = {k: v for k, v in variant.model.items() if k != "name"}
    return build_classifier(variant.model["name"], n_classes, cfg.channels, cfg.size, **opts)


def _optimizer(model: Any, variant: VariantConfig) -> Any:
    import torch

    t = variant.train
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen backbone is not optimised
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)


@dataclass
class _Resume:
    """Where a run starts: the epoch of its checkpoint (0: none), its metric rows and sessions so far."""

    epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    optimizer: tuple[dict[str, Any], dict[str, Any]] | None = None  # (state, tensors) of the checkpoint
    done: bool = False


def _resume(model: Any, key: RunKey, ckpt: Path, mpath: Path) -> _Resume:
    """Load the run's checkpoint into ``model`` if there is one; metric rows after its epoch are dropped."""
    from bglab.train.classifiers import load_trained

    if not ckpt.is_file():
        if mpath.exists():
            mpath.unlink()  # metrics without a checkpoint: an interrupted first epoch
        return _Resume()
    state = checkpoint_state(ckpt)  # the header alone: a finished run's weights are not read here
    if state.get("run") != key.id:
        raise BglabError(f"checkpoint belongs to run {state.get('run')!r}", path=ckpt, hint="delete it")
    if state.get("done"):
        return _Resume(done=True)
    state, msd, osd = load_checkpoint(ckpt)
    load_trained(model, msd)
    start = int(state["epoch"])
    return _Resume(start, [r for r in read_metrics(mpath) if r["epoch"] <= start],
                   list(state.get("sessions", [])), (state, osd))


def _run_state(key: RunKey, cfg: ExperimentConfig, data: ExperimentData) -> dict[str, Any]:
    """The part of a run's checkpoint state that no epoch changes."""
    variant, arm = cfg.variants[key.variant], cfg.arms[key.arm]
    t, on_val = variant.train, cfg.protocols[key.protocol].train_on_val
    return {"run": key.id, "protocol": key.protocol, "arm": key.arm, "variant": key.variant, "seed": key.seed,
            **({"train_on_val": list(on_val)} if on_val else {}),
            "epochs": t.epochs, "classes": data.classes, "size": cfg.size, "channels": cfg.channels,
            "model": variant.model, "pipeline": arm.pipeline,
            **({"from": str(arm.source_dir)} if arm.source_dir else {}),
            **({"sources": list(arm.sources)} if arm.sources is not None else {}),
            "train": {"batch_size": t.batch_size, "lr": t.lr, "optimizer": t.optimizer,
                      **({"schedule": t.schedule} if t.schedule != "constant" else {}),
                      **({"label_smoothing": t.label_smoothing} if t.label_smoothing else {})}}


@dataclass
class _TrainSet:
    """A run's training images (uint8 tensor), what the net takes of them (features with ``tune: head``), labels."""

    images: Any
    inputs: Any
    labels: Any


def _fit_epoch(net: Any, opt: Any, key: RunKey, epoch: int, train: TrainConfig, ts: _TrainSet, extras: _Extras,
               featurise: Any, device: str) -> tuple[float, float, int]:
    """One epoch of training in the order and with the draws of ``(seed, epoch)``: (loss, accuracy, images seen)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    n = ts.inputs.shape[0]
    for group in opt.param_groups:
        group["lr"] = train.lr_at(epoch)
    torch.manual_seed(derive_seed(key.seed, "epoch", epoch))
    g = torch.Generator().manual_seed(derive_seed(key.seed, "order", epoch))
    perm = torch.randperm(n, generator=g)
    if extras.swap is not None:
        sw_sel, sw_partner = bg_swap_plan(key.seed, epoch, n, extras.swap[2])
    net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for b in range(0, n, train.batch_size):
        idx = perm[b:b + train.batch_size]
        if idx.numel() < 2:
            continue  # batch-norm cannot train on one image
        xb = ts.images[idx]
        changed = torch.zeros(idx.numel(), dtype=torch.bool)
        if extras.swap is not None:
            xb = apply_bg_swap(xb, extras.swap[0][idx], extras.swap[1][sw_partner[idx]], sw_sel[idx])
            changed |= sw_sel[idx]
        x = as_float(xb)
        if train.augment.active:
            x, sel = augment_selected(x, train.augment, g)
            changed |= sel
        if featurise is not None:  # frozen backbone: cached features, images altered this epoch re-embedded
            feats = ts.inputs[idx].clone()
            if changed.any():
                feats[changed] = featurise.embed(x[changed])
            x = feats
        x, y = x.to(device), ts.labels[idx].to(device)
        logits = net(normalise(x))
        loss = F.cross_entropy(logits, y, label_smoothing=train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * idx.numel()
        correct += int((logits.argmax(1) == y).sum().item())
        seen += idx.numel()
    return loss_sum / max(1, seen), correct / max(1, seen), seen


def _score(net: Any, es: _EvalSet, row: dict[str, Any], device: str, npz: Path | None) -> dict[str, Any]:
    """``row`` completed with the accuracy and loss of ``net`` on ``es``; the predictions saved to ``npz``."""
    pred, prob, loss = predict_proba(net, es.x, es.y, device=device)
    acc = float((pred == es.y.numpy()).mean()) if len(pred) else float("nan")
    if npz is not None:
        atomic_write_npz(npz, y_true=es.y.numpy().astype(np.int64), y_pred=pred.astype(np.int64), keys=es.keys,
                         probs=prob)
    return {**row, "split": es.split, "test_set": es.test_set, "distortion": es.distortion, "accuracy": acc,
            "loss": loss, "n": len(pred)}


def _evaluate_epoch(net: Any, model: Any, key: RunKey, cfg: ExperimentConfig, evalsets: list[_EvalSet],
                    extras: _Extras, row: dict[str, Any], final: bool, out: Path, device: str,
                    featurise: Any) -> list[dict[str, Any]]:
    """The evaluation rows of one epoch; at the final one, also the saved predictions, matrix and saliency."""
    folder = out / "predictions" / key.id
    rows = []
    for es in evalsets:
        if not final and es.distortion != "clean" and not cfg.evaluate.distortion_curves:
            continue  # distorted copies: final epoch only (the curves plot clean accuracy)
        save = final and es.split == "test"
        rows.append(_score(net, es, row, device, folder / f"{es.test_set}__{es.distortion}.npz" if save else None))
    if final:
        for es in extras.matrix:  # the same test images through every test arm (clean, final model)
            npz = folder / "matrix" / f"{es.test_set}__{es.test_arm}.npz"
            rows.append({**_score(net, es, row, device, npz), "test_arm": es.test_arm})
        if extras.saliency is not None:
            _saliency(model, extras.saliency, cfg, folder, device, featurise)
    return rows


def _train_run(key: RunKey, cfg: ExperimentConfig, data: ExperimentData, pdata: ProtocolData,
               evalsets: list[_EvalSet], out: Path, session: int, budget: _Budget, log: Log,
               on_epoch: Callable[[RunKey, int], None] | None, device: str = "cpu",
               extras: _Extras | None = None, featurise: Callable[[Any], Any] | None = None) -> RunResult:
    """Train (or resume) one run. ``featurise`` (``tune: head``): the frozen backbone's cached features of a
    uint8 batch; the run then trains only the model's head on them (``evalsets`` hold features too), and
    images that augmentation or background swapping alter in an epoch are embedded afresh."""
    import torch

    variant = cfg.variants[key.variant]
    t = variant.train
    ckpt = out / "checkpoints" / f"{key.id}.safetensors"
    mpath = out / "metrics" / f"{key.id}.csv"
    t0 = time.perf_counter()
    seed_everything(derive_seed(key.seed, "init"))
    model = _build(variant, len(data.classes), cfg)
    res = _resume(model, key, ckpt, mpath)
    if res.done:
        if cfg.in_ensemble(key):
            _add_probabilities(model, featurise is not None, key, ckpt, evalsets,
                               extras.matrix if extras is not None else [], out, device, log)
        return RunResult(key, "skipped", 0, 0.0)
    rows, sessions = res.rows, res.sessions
    # weights were initialised on the CPU (the same on every device); channels-last suits CPU convolutions
    model.to(device=device, memory_format=torch.channels_last)
    net = model.head if featurise is not None else model  # what trains and predicts
    opt = _optimizer(net, variant)
    if res.optimizer is not None:
        restore_optimizer(opt, *res.optimizer)
    if session not in sessions:
        sessions.append(session)
    x_img = to_tensor(data.arms[key.arm].images[pdata.train])
    ts = _TrainSet(x_img, x_img if featurise is None else featurise(x_img),
                   torch.from_numpy(data.labels[pdata.train]))
    base = {"protocol": key.protocol, "arm": key.arm, "variant": key.variant, "seed": key.seed, "session": session,
            "test_arm": key.arm}
    extras = extras or _Extras([])
    state_base = _run_state(key, cfg, data)
    trained = 0
    for epoch in range(res.epoch + 1, t.epochs + 1):
        if not budget.take():
            return RunResult(key, "partial", trained, time.perf_counter() - t0)
        te = time.perf_counter()
        loss, acc, seen = _fit_epoch(net, opt, key, epoch, t, ts, extras, featurise, device)
        row = {**base, "epoch": epoch}
        rows.append({**row, "split": "fit", "test_set": "train", "distortion": "clean", "accuracy": acc,
                     "loss": loss, "n": seen})
        final = epoch == t.epochs
        if epoch % t.eval_every == 0 or final:
            rows += _evaluate_epoch(net, model, key, cfg, evalsets, extras, row, final, out, device, featurise)
        trained += 1
        if final or epoch % t.checkpoint_every == 0 or budget.left == 0:
            write_metrics(mpath, rows)
            state = {**state_base, "epoch": epoch, "done": final, "sessions": sessions,
                     "updated": datetime.now(UTC).isoformat(timespec="seconds")}
            save_checkpoint(ckpt, model, None if final else opt, state)
        val = [r for r in rows[-(len(evalsets) + len(extras.matrix)):] if r["split"] == "val" and r["epoch"] == epoch]
        log(f"{key.id} epoch {epoch}/{t.epochs}: loss {loss:.3f} train acc {acc:.3f}"
            + (f" val acc {val[0]['accuracy']:.3f}" if val else "") + f" ({time.perf_counter() - te:.1f} s)")
        if on_epoch is not None:
            on_epoch(key, epoch)
    return RunResult(key, "done", trained, time.perf_counter() - t0)


def _add_probabilities(model: Any, head: bool, key: RunKey, ckpt: Path, evalsets: list[_EvalSet],
                       matrix: list[_EvalSet], out: Path, device: str, log: Log) -> None:
    """Class probabilities for a finished run's saved test predictions (and train x test ``matrix`` ones) that
    lack them (run directories made before they were stored), scored again from its final checkpoint: an
    ensemble averages them. The saved predicted classes are kept; a disagreement with the new scoring is logged."""
    from bglab.train.classifiers import load_trained

    folder = out / "predictions" / key.id
    saved = [(es, folder / f"{es.test_set}__{es.distortion}.npz") for es in evalsets if es.split == "test"]
    saved += [(es, folder / "matrix" / f"{es.test_set}__{es.test_arm}.npz") for es in matrix]
    todo = []
    for es, p in saved:
        if p.is_file():
            with np.load(p, allow_pickle=False) as z:
                if "probs" not in z.files:
                    todo.append((es, p, {k: z[k].copy() for k in z.files}))
    if not todo:
        return
    load_trained(model, load_checkpoint(ckpt)[1])
    model.to(device=device)
    net = model.head if head else model
    for es, p, old in todo:
        if not np.array_equal(old["keys"], es.keys):
            raise BglabError(f"run {key.id}: the saved test images of {es.test_set} are not this config's", path=p,
                             hint="delete the run's checkpoint to train it again")
        pred, prob, _ = predict_proba(net, es.x, es.y, device=device)
        if (differ := int((pred != old["y_pred"]).sum())):
            log(f"{key.id}: {differ} of {len(pred)} predictions on {es.test_set} ({es.distortion}) differ when "
                "scored again (other threads or library versions); the saved classes are kept")
        atomic_write_npz(p, **old, probs=prob)
    log(f"{key.id}: class probabilities added to {len(todo)} saved prediction file(s), from its checkpoint")


def _saliency(model: Any, spec: tuple, cfg: ExperimentConfig, folder: Path, device: str,
              featurise: Any = None) -> None:
    """Grad-CAM of the final model on one test set: share of saliency inside the fg mask + a sample sheet.
    With a frozen backbone (``featurise``) the maps come from the cache and Grad-CAM is computed from them
    exactly (:func:`bglab.train.saliency.cam_from_maps`), without a backward pass per image."""
    from bglab.train.saliency import cam_from_maps, grad_cam, mass_inside

    test, x, keys, labels, masks, has, reason = spec
    if featurise is not None:
        pred, _ = predict(model.head, featurise(x), device=device)
        heat = cam_from_maps(featurise.maps(x), model.head[-1].weight.cpu(), pred, tuple(x.shape[-2:]))
    else:
        xn = normalise(as_float(x)).to(device)
        heat = np.asarray(grad_cam(model, xn), np.float32)
        pred, _ = predict(model, x, device=device)
    share = np.full(len(keys), np.nan)
    if has.any():
        share[has] = mass_inside(heat[has], masks[has])
    n = cfg.saliency.n if cfg.saliency is not None else 8
    pick: list[int] = []
    for c in sorted(set(labels.tolist())):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: str(keys[i]))
        pick += members[:n]
    pick_a = np.array(pick, np.int64)
    imgs = x.numpy()[pick_a]
    imgs = imgs[:, 0] if imgs.shape[1] == 1 else imgs.transpose(0, 2, 3, 1)
    atomic_write_npz(folder / f"saliency__{test}.npz", keys=np.asarray(keys, dtype=str), share=share, has_mask=has,
              y_true=labels.astype(np.int64), y_pred=pred.astype(np.int64), sheet_index=pick_a,
              sheet_images=np.ascontiguousarray(imgs), sheet_heat=heat[pick_a].astype(np.float16),
              sheet_masks=masks[pick_a], reason=np.array(reason))


# ------------------------------------------------------------------------------------------------ driver


def _check_run_dir(out: Path, resolved: dict[str, Any], used_arms: Sequence[str]) -> None:
    import yaml

    path = out / "config.yaml"
    if path.is_file():
        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            old = {}

        def used(arms: Any) -> Any:
            return {a: v for a, v in arms.items() if a in used_arms} if isinstance(arms, Mapping) else arms

        def key(d: Mapping[str, Any]) -> Any:
            # threads may change (speed; no longer bit-identical then); so may arms no run uses, e.g. an arm
            # added to a base config that this follow-up study extends but does not train
            # the arms as written are compared in their resolved form (resolved.arms: paths absolute), so moving a
            # config file and adjusting its relative paths (bglab/configs, issue 21) keeps its run directories
            # ensembles only combine finished runs' predictions: adding or changing one keeps the runs
            k = {n: v for n, v in d.items() if n not in ("threads", "arms")}
            if isinstance(k.get("studies"), Mapping):
                k["studies"] = {sn: ({a: b for a, b in st.items() if a != "ensembles"} if isinstance(st, Mapping)
                                     else st) for sn, st in k["studies"].items()}
            if isinstance(k.get("resolved"), Mapping):
                k["resolved"] = {**k["resolved"], "arms": used(k["resolved"].get("arms"))}
                if isinstance(k["resolved"].get("runs"), list):  # the runs, not the order the arms are listed in
                    k["resolved"]["runs"] = sorted(k["resolved"]["runs"], key=str)
            return k

        new = json.loads(json.dumps(resolved))
        if key(old) != key(new):
            raise ConfigError("this run directory holds a different experiment (config changed)", path=out,
                              hint="use another --out, or delete the directory to start again")
        if old.get("studies") == new.get("studies"):
            return  # else only the ensembles changed: the file records the new ones
    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(resolved)), sort_keys=False))


def _next_session(out: Path, info: Mapping[str, Any]) -> tuple[int, list[int]]:
    """Append this invocation's line to ``sessions.jsonl``; return its number and the earlier sessions whose
    recorded machine (``info["machine"]``) would not repeat this one's training bit for bit (sessions from
    before machines were recorded are not counted)."""
    path = out / "sessions.jsonl"
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()] if path.is_file() else []
    here = reproducibility_key(info["machine"])
    elsewhere = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        m = rec.get("machine") if isinstance(rec, dict) else None
        if isinstance(m, dict) and reproducibility_key(m) != here:
            elsewhere.append(rec.get("session"))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"session": len(lines) + 1, **info}, default=str) + "\n")
    return len(lines) + 1, elsewhere


def collect_metrics(out: Path, runs: Collection[str] | None = None,
                    log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """All per-run metric rows of a run directory (sorted), written to metrics.csv and metrics.parquet; with
    ``runs`` (run ids) only those runs' rows: files of runs the config no longer declares (a variant taken out,
    runs copied in from another study) stay on disk, left out of the tables, and are logged."""
    rows: list[dict[str, Any]] = []
    others = []
    for p in sorted((out / "metrics").glob("*.csv")):
        if runs is not None and p.stem not in runs:
            others.append(p.stem)
            continue
        rows.extend(read_metrics(p))
    if others and log is not None:
        log(f"metrics of {len(others)} run(s) this config does not declare left out (kept in metrics/): "
            + ", ".join(others[:4]) + (", ..." if len(others) > 4 else ""))
    write_metrics(out / "metrics.csv", rows)
    try:
        import pandas as pd

        df = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(out / "metrics.parquet", buf.getvalue())
    except ImportError:  # pragma: no cover - pandas / pyarrow are in the train extra
        pass
    return rows


def _matrix_sets(data: ExperimentData, pdata: ProtocolData, test_arm: str) -> list[_EvalSet]:
    """Every clean test set of a protocol as seen through ``test_arm`` (the same samples, that arm's images)."""
    import torch

    x = data.arms[test_arm].images
    keys = np.array(data.keys, dtype=str)
    return [_EvalSet("matrix", name, "clean", to_tensor(x[idx]), torch.from_numpy(data.labels[idx]), keys[idx],
                     test_arm) for name, idx in pdata.tests.items()]


def _masks_for(cache: dict[str, tuple], cfg: ExperimentConfig, data: ExperimentData, arm: str, log: Log) -> tuple:
    if arm not in cache:
        errors: list[str] = []
        cache[arm] = arm_masks(cfg.arms[arm], data.samples, cfg.size, errors)
        for e in errors:
            log(f"arm {arm}: unreadable mask, the image counts as having none: {e}")
    return cache[arm]


def _extras(key: RunKey, cfg: ExperimentConfig, data: ExperimentData, pdata: ProtocolData,
            cache: dict[Any, Any], log: Log) -> _Extras:
    import torch

    from bglab.train.classifiers import classifier_spec

    matrix: list[_EvalSet] = []
    for ta in cfg.test_arms(key):
        ck = ("matrix", key.protocol, ta)
        if ck not in cache:
            cache[ck] = _matrix_sets(data, pdata, ta)
        matrix += cache[ck]
    ex = _Extras(matrix)
    mcache = cache.setdefault("masks", {})
    aug = cfg.variants[key.variant].train.augment
    if aug.bg_swap > 0:
        masks, has, reason = _masks_for(mcache, cfg, data, key.arm, log)
        if reason:
            raise ConfigError(f"variant {key.variant!r}: bg_swap needs foreground masks for arm {key.arm!r}: "
                              f"{reason}", hint="give the source masks (<class>/masks) or use a from: tree with "
                                                "masks/, or set bg_swap: 0")
        idx = pdata.train
        keep = torch.from_numpy((masks[idx] | ~has[idx, None, None])[:, None])
        bg = to_tensor(data.arms[aug.bg_from or key.arm].images[idx])
        ex.swap = (keep, bg, aug.bg_swap)
    if cfg.saliency is not None and classifier_spec(cfg.variants[key.variant].model["name"]).grad_cam:
        test = cfg.saliency.test_set or next(iter(pdata.tests))
        if test in pdata.tests:
            idx = pdata.tests[test]
            masks, has, reason = _masks_for(mcache, cfg, data, key.arm, log)
            ex.saliency = (test, to_tensor(data.arms[key.arm].images[idx]), np.array(data.keys, dtype=str)[idx],
                           data.labels[idx], masks[idx], has[idx], reason)
    return ex


def _evalsets(cfg: ExperimentConfig, data: ExperimentData, pdata: ProtocolData, arm: str) -> list[_EvalSet]:
    import torch

    x = data.arms[arm].images
    keys = np.array(data.keys, dtype=str)
    sets = []
    for split, idx in (("train", pdata.train), ("val", pdata.val)):
        sets.append(_EvalSet(split, split, "clean", to_tensor(x[idx]), torch.from_numpy(data.labels[idx]), keys[idx]))
    for name, idx in pdata.tests.items():
        y = torch.from_numpy(data.labels[idx])
        sets.append(_EvalSet("test", name, "clean", to_tensor(x[idx]), y, keys[idx]))
        for dname, spec in cfg.evaluate.distortions.items():
            xd = distorted(x[idx], list(keys[idx]), spec, cfg.evaluate.seed, dname)
            sets.append(_EvalSet("test", name, dname, to_tensor(xd), y, keys[idx]))
    for es in sets:
        es.test_arm = arm
    return sets


class _Trainer:
    """Trains runs one after the other over loaded data, keeping each protocol x arm's test sets (and, for
    frozen-backbone variants, their features) in memory between runs."""

    def __init__(self, cfg: ExperimentConfig, data: ExperimentData, protocols: dict[str, ProtocolData], out: Path,
                 session: int, device: str, log: Log) -> None:
        self.cfg, self.data, self.protocols, self.out = cfg, data, protocols, out
        self.session, self.device, self.log = session, device, log
        self.cache: dict[tuple[str, ...], list[_EvalSet]] = {}
        self.extra_cache: dict[Any, Any] = {}
        self.featurisers: dict[str, Any] = {}

    def train(self, key: RunKey, budget: _Budget, on_epoch: Callable[[RunKey, int], None] | None) -> RunResult:
        cfg, data, pdata = self.cfg, self.data, self.protocols[key.protocol]
        ek = (key.protocol, key.arm)
        if ek not in self.cache:  # 64x64 grey test sets are small: keep every protocol x arm in memory
            self.cache[ek] = _evalsets(cfg, data, pdata, key.arm)
        extras = _extras(key, cfg, data, pdata, self.extra_cache, self.log)
        fc = _featuriser(cfg, key.variant, len(data.classes), self.out, self.device, self.featurisers, self.log)
        evalsets = self.cache[ek]
        if fc is not None:  # tune: head: every set as frozen-backbone features (cached by content)
            fk = (*ek, fc.identity)
            if fk not in self.cache:
                self.cache[fk] = [replace(es, x=fc(es.x)) for es in self.cache[ek]]
            evalsets = self.cache[fk]
            extras.matrix = [replace(es, x=fc(es.x)) for es in extras.matrix]
        return _train_run(key, cfg, data, pdata, evalsets, self.out, self.session, budget, self.log, on_epoch,
                          self.device, extras, featurise=fc)


def _is_done(out: Path, key: RunKey) -> bool:
    ckpt = out / "checkpoints" / f"{key.id}.safetensors"
    if not ckpt.is_file():
        return False
    try:
        return bool(checkpoint_state(ckpt).get("done"))
    except BglabError:
        return False


_POOL: dict[str, Any] = {}


def _pool_init(cfg: ExperimentConfig, out: Path, session: int, device: str, threads: int) -> None:
    """A run process: the same torch settings as the parent, the data read back from the arm caches."""
    import torch

    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_data(cfg, cache_dir=out / "cache")
    protocols = {name: make_protocol(cfg, cfg.protocols[name], data)
                 for name in dict.fromkeys(k.protocol for k in cfg.runs())}
    lines: list[str] = []
    _POOL.update(lines=lines, trainer=_Trainer(cfg, data, protocols, out, session, device, lines.append))


def _pool_run(key: RunKey) -> tuple[RunResult, list[str]]:
    lines = _POOL["lines"]
    lines.clear()
    res = _POOL["trainer"].train(key, _Budget(None), None)
    return res, [f"{key.id}: {line}" if not line.startswith(key.id) else line for line in lines]


def _featuriser(cfg: ExperimentConfig, variant: str, n_classes: int, out: Path, device: str,
                made: dict[str, Any], log: Log) -> Any:
    """The feature cache of a ``tune: head`` variant (None for every other variant), one per variant: the
    frozen backbone's features, or for ``hand-pose`` its landmark features beside its fallback's."""
    from bglab.experiment.features import FeatureCache, StackedFeatures

    var = cfg.variants[variant]
    if var.model.get("tune") != "head":
        return None
    if variant not in made:
        model = _build(var, n_classes, cfg).eval()
        folder = out / "cache" / "features"
        pose = getattr(model, "pose_features", None)
        if pose is None:
            made[variant] = _backbone_features(model, cfg, folder, device, log)
        else:  # hand-pose: MediaPipe runs on the CPU whatever the device
            parts = [FeatureCache(model.pose_id, lambda xb: pose(normalise(as_float(xb))), folder, log=log)]
            if model.fallback is not None:
                parts.append(_backbone_features(model.fallback, cfg, folder, device, log))
            made[variant] = StackedFeatures(parts)
    return made[variant]


def _backbone_features(model: Any, cfg: ExperimentConfig, folder: Path, device: str, log: Log) -> Any:
    """The cache of a pretrained classifier's frozen backbone features (ONNX Runtime on a CPU)."""
    import torch

    from bglab.experiment.features import FeatureCache, onnx_embedder

    if device == "cpu":  # ONNX Runtime: ~4x faster on a CPU than torch's depthwise convolutions
        run = onnx_embedder(model, (cfg.channels, cfg.size, cfg.size), threads=torch.get_num_threads())
        engine = "onnxruntime"
    else:
        model.to(device)

        def run(x: Any) -> Any:
            return model.features(x.to(device))

        engine = device

    def embed(xb: Any) -> Any:
        return run(normalise(as_float(xb)))

    def maps(xb: Any) -> Any:
        return model.maps(normalise(as_float(xb)).to(device))

    return FeatureCache(f"{model.weights_id}|{engine}", embed, folder, log=log, maps=maps)


def _near_twins(cfg: ExperimentConfig, data: ExperimentData,
                protocols: Mapping[str, ProtocolData]) -> dict[str, dict[str, Any]]:
    """Per protocol and test set, the test images with a near-identical training image (bglab.experiment.leaks),
    on the baseline arm's images (the photos as they are, in the usual configs)."""
    from bglab.experiment.leaks import split_twins, thumbnails

    arm = cfg.baseline if cfg.baseline in data.arms else next(iter(data.arms))
    thumbs = thumbnails(data.arms[arm].images)
    return {name: split_twins(thumbs, data.keys, p.train, p.tests) for name, p in protocols.items()}


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, max_epochs: int | None = None,
                   threads: int | None = None, log: Log | None = None, report: bool = True,
                   on_epoch: Callable[[RunKey, int], None] | None = None, device: str = "cpu",
                   workers: int = 1, parallel_runs: int = 1, engine: str = "local",
                   engine_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole experiment into ``out``; returns the summary (also ``out/summary.json``).

    ``max_epochs``: train at most this many epochs in this call (over all runs), then stop with the state
    saved (``summary["complete"]`` is False); running again continues. ``on_epoch(run, epoch)`` is called after
    every trained epoch (tests raise from it to simulate an interruption). ``device``: ``cpu`` (default,
    bit-reproducible), ``cuda`` or ``auto`` (cuda when available). ``workers``: processes that preprocess the
    arms (same images as one; training is unaffected). ``parallel_runs``: train this many runs at once, each
    in its own process with ``threads`` torch threads (the same figures, bit for bit, as one after the other at
    those threads; not with ``max_epochs`` / ``on_epoch``). ``engine``: ``local`` (processes on this machine)
    or ``ray`` (:mod:`bglab.batch.ray_runs`: Ray actors, ``engine_options`` such as ``address``; a failed run
    is retried once, then listed in ``summary["failed"]`` while the others go on).
    """
    import torch

    from bglab.experiment.preflight import preflight

    preflight(cfg)  # sources, arms, backends: before anything is written
    log = log or (lambda s: None)
    parallel_runs = max(1, int(parallel_runs))
    check_engine(engine, engine_options)  # unknown engine, no Ray, a silent cluster: before anything is written
    if engine == "local" and str(device).lower() != "cpu" and parallel_runs > 1:
        raise ConfigError("--parallel-runs runs CPU processes", hint="use --device cpu, or --parallel-runs 1")
    if (parallel_runs > 1 or engine == "ray") and (max_epochs is not None or on_epoch is not None):
        raise ConfigError("an epoch budget (--max-epochs) needs one run at a time",
                          hint="use --parallel-runs 1 and --engine local")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolved_config(cfg)
    _check_run_dir(out, resolved, cfg.used_arms())
    n_threads = cfg.threads if threads is None else threads
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if n_threads > 0:
        torch.set_num_threads(n_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(cfg, out, max_epochs=max_epochs, log=log, report=report, on_epoch=on_epoch,
                    device=resolve_device(device), workers=max(1, int(workers)), parallel_runs=parallel_runs,
                    threads=torch.get_num_threads(), engine=engine, engine_options=engine_options)
    finally:  # leave the process as it was (library use, tests)
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def _run(cfg: ExperimentConfig, out: Path, *, max_epochs: int | None, log: Log, report: bool,
         on_epoch: Callable[[RunKey, int], None] | None, device: str, workers: int = 1, parallel_runs: int = 1,
         threads: int = 1, engine: str = "local", engine_options: Mapping[str, Any] | None = None
         ) -> dict[str, Any]:
    machine = {**machine_info(), "device": device, "threads": threads}
    session, others = _next_session(out, {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                                           "quick": cfg.quick, "max_epochs": max_epochs, "pid": os.getpid(),
                                           "machine": machine})
    if others:
        log(f"note: session(s) {', '.join(map(str, others))} of this run directory ran on another kind of machine "
            f"(sessions.jsonl); this one: {machine['cpu'] or 'CPU unknown'}, {machine.get('cpu_capability')}, torch "
            f"{machine.get('torch')}. Runs trained here do not repeat theirs bit for bit; finished runs are kept")
    t0 = time.perf_counter()
    log(f"reading and preprocessing {len(cfg.used_arms())} arm(s)")
    data = load_data(cfg, cache_dir=out / "cache", workers=workers,
                     progress=lambda arm, i, n: log(f"  {arm}: {i}/{n}") if i == n else None)
    protocols = {name: make_protocol(cfg, cfg.protocols[name], data)
                 for name in dict.fromkeys(k.protocol for k in cfg.runs())}
    info = {"classes": data.classes, "n_samples": len(data.samples), "n_usable": int(data.ok.sum()),
            "left_out": {a: errs[:50] for a, errs in data.dropped().items() if errs},
            "suspect_masks": {a: {"count": len(n), "examples": n[:20]} for a, n in data.suspect().items() if n},
            "protocols": {n: p.counts(data) for n, p in protocols.items()},
            "near_twins": _near_twins(cfg, data, protocols),
            "preprocess_seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / "data.json", json.dumps(info, indent=2) + "\n")
    results: list[RunResult] = []
    complete = True
    failed: dict[str, str] = {}
    if parallel_runs > 1 or engine == "ray":
        todo = [k for k in cfg.runs() if not _is_done(out, k)]
        results = [RunResult(k, "skipped", 0, 0.0) for k in cfg.runs() if k not in todo]
        log(f"training {len(todo)} run(s), {parallel_runs} at a time ({threads} thread(s) each, {engine})")
        if engine == "ray":
            from bglab.batch.ray_runs import train_runs

            done, failed = train_runs(_pool_run, todo, initializer=_pool_init,
                                      initargs=(cfg, out, session, device, threads), threads=threads,
                                      cuda=str(device).startswith("cuda"), parallel=parallel_runs,
                                      options=engine_options, log=log)
            results += done
            complete = not failed
        else:
            from bglab.batch.pool import run_pool

            for res, lines in run_pool(todo, _pool_run, workers=min(parallel_runs, max(1, len(todo))),
                                       initializer=_pool_init, initargs=(cfg, out, session, device, threads),
                                       preload=["torch", "bglab.experiment.runner"], kept="runs"):
                for line in lines:
                    log(line)
                results.append(res)
                log(f"{res.key.id}: {res.status} ({res.epochs_trained} epoch(s), {res.seconds:.1f} s)")
        order = {k: i for i, k in enumerate(cfg.runs())}
        results.sort(key=lambda r: order[r.key])
    else:
        trainer = _Trainer(cfg, data, protocols, out, session, device, log)
        budget = _Budget(max_epochs)
        for key in cfg.runs():
            res = trainer.train(key, budget, on_epoch)
            results.append(res)
            if res.status != "skipped":
                log(f"{key.id}: {res.status} ({res.epochs_trained} epoch(s), {res.seconds:.1f} s)")
            if res.status == "partial":
                complete = False
                break
    collect_metrics(out, {k.id for k in cfg.runs()}, log)
    summary: dict[str, Any] = {"name": cfg.name, "complete": complete, "session": session, "machine": machine,
                               **({"sessions_on_other_machines": others} if others else {}),
                               "runs": {r.key.id: r.status for r in results},
                               **({"failed": failed} if failed else {}),
                               "seconds": round(time.perf_counter() - t0, 2)}
    if complete and report:
        from bglab.experiment.report import write_report

        summary = write_report(out, cfg, data_info=info, extra=summary)
    else:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary

"""``bglab train-seg`` / ``export-seg`` / ``ablate-seg``: train bglab's hand U-Net, export it to ONNX, ablate it.

Needs the ``train`` extra (torch, albumentations, onnx, safetensors); imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bglab.cli._common import train_device_option
from bglab.errors import BackendError, ConfigError


def _need_train_extra() -> None:
    try:
        import albumentations  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"training needs the 'train' extra ({exc})", hint="pip install 'bglab[train]'") from None


def _command_line(ctx: typer.Context) -> str:
    """The running command as ``bglab <name> --opt value ...`` (only options that differ from the default)."""
    import shlex

    parts = ["bglab", ctx.info_name or ctx.command.name or ""]
    for prm in ctx.command.params:
        val = ctx.params.get(prm.name)
        if getattr(prm, "param_type_name", "") == "argument":
            parts.append(shlex.quote(str(val)))
            continue
        if val is None or val == prm.default or (isinstance(val, tuple | list) and not val):
            continue
        if getattr(prm, "is_flag", False) and isinstance(val, bool):
            flags = prm.opts if val else prm.secondary_opts
            if flags:
                parts.append(flags[0])
            continue
        for v in val if isinstance(val, tuple | list) else [val]:
            parts += [prm.opts[0], shlex.quote(str(v))]
    return " ".join(parts)


def register(app: typer.Typer) -> None:
    """Add ``train-seg``, ``export-seg`` and ``ablate-seg`` to the bglab app."""

    @app.command("train-seg")
    def train_seg(
        ctx: typer.Context,
        keyed: Annotated[Path, typer.Option("--keyed", help="Keyed masks: DIR/<class>/<stem>.png (+ key_report.csv).")],
        images: Annotated[Path, typer.Option("--images", help="Webcam photos: DIR/<class>/<stem>.png.")],
        out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, logs, splits).")],
        data_root: Annotated[Path | None, typer.Option(
            "--data-root", help="Folder with backgrounds/, pets3/, facemask/ (default: IMAGES/../..).")] = None,
        size: int = typer.Option(160, "--size", min=32, help="Training crop side (pixels)."),
        epochs: int = typer.Option(100, "--epochs", min=1, help="Maximum number of epochs."),
        max_minutes: float | None = typer.Option(None, "--max-minutes", min=0.05,
                                                 help="Stop after this much training time (resume counts it)."),
        depth: int = typer.Option(4, "--depth", min=1, max=6, help="Number of down-samplings."),
        base: int = typer.Option(16, "--base", min=2, help="Channels of the first level."),
        max_mult: int = typer.Option(4, "--max-mult", min=1, help="Channels stop growing at base * max-mult."),
        separable: bool = typer.Option(False, "--separable/--no-separable", help="Depthwise-separable convs."),
        dropout: float = typer.Option(0.0, "--dropout", min=0.0, max=0.9, help="Dropout in the deep half."),
        batchnorm: bool = typer.Option(True, "--batchnorm/--no-batchnorm", help="Batch normalisation."),
        skip: str = typer.Option("concat", "--skip", help="Skip connections: concat or add."),
        augment: bool = typer.Option(True, "--augment/--no-augment",
                                     help="Composites + albumentations (off: plain webcam photos only)."),
        faces: bool = typer.Option(True, "--faces/--no-faces", help="Use face crops as hand-free backgrounds."),
        harmonize: bool = typer.Option(True, "--harmonize/--no-harmonize",
                                       help="Hide the paste (colour pull to the scene, area shrink, blur)."),
        batch: int = typer.Option(16, "--batch", min=1, help="Batch size."),
        lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
        samples: int = typer.Option(1600, "--samples-per-epoch", min=1, help="Training samples per epoch."),
        patience: int = typer.Option(6, "--patience", min=1, help="Early stopping: epochs without improvement."),
        threads: int = typer.Option(2, "--threads", min=1, help="PyTorch threads."),
        workers: int = typer.Option(1, "--workers", "-w", min=0, help="Data-generating worker processes."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch."),
        seed: int = typer.Option(0, "--seed", help="Seed for splits, composites and weights."),
        limit: int | None = typer.Option(None, "--limit", min=4, help="Use only this many photos (smoke tests)."),
        val_composites: int = typer.Option(240, "--val-composites", min=1, help="Fixed validation composites."),
        real_images: list[Path] | None = typer.Option(
            None, "--real-images",
            help="Real-scene photos, DIR/<class or any folder>/<stem>.* (e.g. rps/sxsw); repeatable."),
        real_masks: list[Path] | None = typer.Option(
            None, "--real-masks",
            help="Their masks from `bglab key --backend ...` (+ key_report.csv); one per --real-images, in order."),
        real_split: str = typer.Option(
            "0.5,0.1,0.4", "--real-split",
            help="train,val,test fractions of the real photos, grouped as `bglab experiment` splits a source "
                 "of the same name with split_seed = --seed; the test part is never used."),
        p_real: float = typer.Option(0.3, "--p-real", min=0.0, max=0.9, help="Share of real photos per epoch."),
        encoder: str = typer.Option(
            "none", "--encoder",
            help="none: the small U-Net from scratch (the default); efficientnet-lite0: the pretrained ImageNet "
                 "encoder (extra 'pretrained') + a U-Net decoder (v4; --size a multiple of 32)."),
        encoder_lr: float = typer.Option(0.3, "--encoder-lr", min=0.0, max=1.0,
                                         help="Pretrained encoder's learning rate as a fraction of --lr."),
        init: Path | None = typer.Option(
            None, "--init", help="Warm start from a train-seg checkpoint of the same architecture "
                                 "(RUN/best.safetensors), an exported model (OUT.onnx with its .json) or a "
                                 "shipped one by name (unet-effnet with --encoder efficientnet-lite0: the "
                                 "default segmenter; unet); a new run with its own data and schedule."),
        scenes: bool = typer.Option(False, "--scenes/--no-scenes",
                                    help="v4 scene kinds: hand over face, egocentric forearms, hard negatives, "
                                         "pale hands, + photometric realism."),
        device: str = train_device_option(),
    ) -> None:
        """Train the hand U-Net on keyed webcam hands composited onto real photos (and, with
        --real-images / --real-masks, on pseudo-labelled real-scene photos and their cut-out hands); from
        scratch, or on the pretrained EfficientNet-Lite0 encoder with --encoder efficientnet-lite0.

        Example: bglab train-seg --keyed masks/ --images photos/ --out runs/seg
        """
        _need_train_extra()
        from bglab.train.segtrain import ENCODERS, TrainConfig, train

        if skip not in ("concat", "add"):
            raise ConfigError(f"--skip must be concat or add, not {skip!r}")
        if encoder not in ENCODERS:
            raise ConfigError(f"--encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
        if encoder != "none" and size % 32:
            raise ConfigError(f"--size must be a multiple of 32 with --encoder {encoder}, not {size}",
                              hint=f"e.g. --size {max(32, round(size / 32) * 32)}")
        cfg = TrainConfig(keyed=str(keyed), images=str(images), out=str(out),
                          data_root=str(data_root) if data_root else None, size=size, epochs=epochs,
                          max_minutes=max_minutes, depth=depth, base=base, max_mult=max_mult, separable=separable,
                          dropout=dropout, batchnorm=batchnorm, skip=skip, augment=augment, faces=faces,
                          harmonize=harmonize,
                          seed=seed, batch=batch, lr=lr, samples_per_epoch=samples, patience=patience,
                          threads=threads, workers=workers, limit=limit, val_composites=val_composites,
                          real_images=[str(p) for p in real_images or ()] or None,
                          real_masks=[str(p) for p in real_masks or ()] or None,
                          real_split=_fractions(real_split), p_real=p_real, encoder=encoder,
                          encoder_lr=encoder_lr, scenes=scenes, device=device, init=str(init) if init else None,
                          command=_command_line(ctx))
        train(cfg, resume=resume, progress=True)

    @app.command("export-seg")
    def export_seg(
        run: Annotated[Path, typer.Argument(help="Training run folder (from train-seg).")],
        out: Annotated[Path, typer.Argument(help="ONNX file to write (a .json with its sha256 goes next to it).")],
        which: str = typer.Option("best", "--which", help="Checkpoint: best or last."),
        threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Recorded mask threshold."),
        size: int | None = typer.Option(None, "--size", min=16,
                                        help="Inference long side recorded in the JSON (default: training size; "
                                             "a multiple of 32 for the EfficientNet-Lite model)."),
    ) -> None:
        """Export a run's checkpoint to ONNX (dynamic batch / size) and check it against PyTorch.

        Example: bglab export-seg runs/seg hand.onnx
        """
        _need_train_extra()
        from bglab.train.segtrain import export_onnx

        if which not in ("best", "last"):
            raise ConfigError(f"--which must be best or last, not {which!r}")
        export_onnx(run, out, which=which, threshold=threshold, size=size)

    @app.command("ablate-seg")
    def ablate_seg(
        ctx: typer.Context,
        keyed: Annotated[Path, typer.Option("--keyed", help="Keyed masks folder.")],
        images: Annotated[Path, typer.Option("--images", help="Webcam photos folder.")],
        out: Annotated[Path, typer.Option("--out", help="Folder for the ablation runs and ablation.json.")],
        data_root: Annotated[Path | None, typer.Option("--data-root", help="backgrounds/ + pets3/ root.")] = None,
        minutes: float = typer.Option(3.0, "--minutes", min=0.001, help="Training minutes per configuration."),
        size: int = typer.Option(160, "--size", min=32),
        samples: int = typer.Option(800, "--samples-per-epoch", min=1),
        seed: int = typer.Option(0, "--seed"),
        limit: int | None = typer.Option(None, "--limit", min=4, help="Use only this many photos (smoke tests)."),
        val_composites: int = typer.Option(240, "--val-composites", min=1),
        only: list[str] | None = typer.Option(None, "--only", help="Run only these (base, +dropout, ...)."),
        workers: int = typer.Option(1, "--workers", "-w", min=0, help="Data-generating worker processes."),
        threads: int = typer.Option(2, "--threads", min=1, help="PyTorch threads."),
        real_images: list[Path] | None = typer.Option(None, "--real-images",
                                                      help="Real photos (for +pseudo-labels); repeatable."),
        real_masks: list[Path] | None = typer.Option(None, "--real-masks",
                                                     help="Their pseudo-label masks, one per --real-images."),
        wild: Path | None = typer.Option(
            None, "--wild", help="A test set DIR/images + DIR/masks scored after each run (e.g. hands_wild; "
                                 "scored only, never trained on)."),
        eval_size: int = typer.Option(160, "--eval-size", min=32,
                                      help="Long side for the test-set scores (multiple of 32 for the encoder)."),
    ) -> None:
        """Short runs: base / +dropout / +batch-norm / +augmentation / +pseudo-labels / +pretrained encoder /
        +scenes; prints validation F1 and, per run, IoU / F1 on the held-out webcam photos (and --wild).

        Example: bglab ablate-seg --keyed masks/ --images photos/ --out runs/ablate
        """
        _need_train_extra()
        from rich.console import Console
        from rich.table import Table

        from bglab.train.segtrain import TrainConfig, ablate

        cfg = TrainConfig(keyed=str(keyed), images=str(images), out=str(out),
                          data_root=str(data_root) if data_root else None, size=size, seed=seed,
                          samples_per_epoch=samples, limit=limit, val_composites=val_composites, workers=workers,
                          threads=threads, real_images=[str(p) for p in real_images or ()] or None,
                          real_masks=[str(p) for p in real_masks or ()] or None,
                          command=_command_line(ctx))
        rows = ablate(cfg, minutes_each=minutes, names=only, wild=wild, eval_size=eval_size)
        table = Table(title=f"ablation ({minutes:g} min each, same validation set)")
        cols = ("config", "epochs", "val loss", "val F1", "F1 composites", "F1 webcam", "val IoU",
                "webcam test IoU / F1", "wild IoU / F1")
        for col in cols:
            table.add_column(col, justify="right" if col != "config" else "left")

        def f(v: object) -> str:
            return f"{v:.3f}" if isinstance(v, float) else "-"

        for r in rows:
            table.add_row(r["name"], str(r["epochs"]), f(r["val_loss"]), f(r["val_f1"]), f(r["val_f1_comp"]),
                          f(r["val_f1_plain"]), f(r["val_iou"]),
                          f"{f(r.get('webcam_test_iou'))} / {f(r.get('webcam_test_f1'))}",
                          f"{f(r.get('hands_wild_iou'))} / {f(r.get('hands_wild_f1'))}")
        Console().print(table)


def _fractions(text: str) -> tuple[float, float, float]:
    """``"0.5,0.1,0.4"`` -> (0.5, 0.1, 0.4); three non-negative numbers with a positive train share."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or sum(parts) > 1.0 + 1e-9:
        raise ConfigError(f"--real-split must be three fractions train,val,test summing to <= 1, got {text!r}",
                          hint="e.g. --real-split 0.5,0.1,0.4")
    return parts  # type: ignore[return-value]

"""``bglab boxes check``, ``bglab train-det``, ``bglab eval-det``: box hygiene and the box + label detector.

``boxes check`` reads annotations (face-mask CSV, VOC XML / folder, COCO JSON), reports every broken box by
kind with its file and line and applies the reference rule (``--mode train``: skip; ``--mode test``:
repair where safe); ``--out`` writes the kept boxes as a clean CSV. Exit code 0 when nothing was found, 1
when any problem was found (after writing everything), 2 for an unreadable file.

``train-det`` / ``eval-det`` train and score the one-face-per-crop box + label model (:mod:`bglab.train.detect`);
they need the ``train`` extra (torch, safetensors) and import it inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bglab.cli._common import console, err_console
from bglab.errors import BackendError, ConfigError

_MAX_SHOWN = 30


def _need_torch() -> None:
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"the detector needs the 'train' extra ({exc})", hint="pip install 'bglab[train]'") \
            from None


def register(app: typer.Typer) -> None:
    """Add the ``boxes`` group (``check``), ``train-det`` and ``eval-det`` to the bglab app."""
    boxes_app = typer.Typer(help="Box annotations: check, repair, clean.", no_args_is_help=True)
    app.add_typer(boxes_app, name="boxes")

    @boxes_app.command("check")
    def boxes_check(
        annotations: Annotated[Path, typer.Argument(
            help="Annotations: CSV (file,width,height,label,xmin,ymin,xmax,ymax), VOC .xml / folder, COCO .json.")],
        images: Annotated[Path | None, typer.Option(
            "--images", help="Images folder: check files exist, sizes match, and list images without boxes.")] = None,
        mode: str = typer.Option("train", "--mode", help="train: skip broken boxes; test: repair where safe."),
        out: Annotated[Path | None, typer.Option("--out", help="Write the kept boxes as a clean CSV here.")] = None,
        as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
        show: int = typer.Option(_MAX_SHOWN, "--show", min=0, help="How many problems to list (table output)."),
    ) -> None:
        """Report every broken box (by kind, with file and line) and apply the skip / repair rule.

        Example: bglab boxes check boxes.csv --images photos/ --out clean.csv
        """
        from rich.table import Table

        from bglab.data.boxdata import check_boxes, read_boxes, write_boxes_csv

        if mode not in ("train", "test"):
            raise ConfigError(f"--mode must be train or test, not {mode!r}")
        report = check_boxes(read_boxes(annotations), images, mode=mode)  # type: ignore[arg-type]
        if out is not None:
            write_boxes_csv(report.kept, out)
        if as_json:
            print(json.dumps(report.as_dict(), indent=1))
        else:
            table = Table(title=f"box check of {annotations} ({mode} mode)")
            table.add_column("kind")
            table.add_column("boxes / files", justify="right")
            for kind, n in report.counts.items():
                table.add_row(kind, str(n), style="red" if n else "dim")
            console.print(table)
            for issue in report.issues[:show]:
                console.print(f"  {issue}", highlight=False, markup=False)
            if len(report.issues) > show:
                console.print(f"  ... and {len(report.issues) - show} more (--json lists all)")
            console.print(report.summary(), highlight=False)
            if out is not None:
                console.print(f"wrote {len(report.kept)} boxes to {out}")
        if not report.ok:
            raise typer.Exit(1)

    @app.command("train-det")
    def train_det(
        annotations: Annotated[Path, typer.Option("--annotations", help="Box annotations (CSV / VOC / COCO).")],
        images: Annotated[Path, typer.Option("--images", help="Folder holding the annotated images.")],
        out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, logs, splits, test metrics).")],
        epochs: int = typer.Option(40, "--epochs", min=1, help="Maximum number of epochs."),
        max_minutes: float | None = typer.Option(None, "--max-minutes", min=0.05, help="Training time budget."),
        size: int = typer.Option(96, "--size", min=32, help="Crop side in pixels (multiple of 16)."),
        width: int = typer.Option(16, "--width", min=4, help="Backbone channels of the first stage."),
        batch: int = typer.Option(32, "--batch", min=2, help="Batch size."),
        lr: float = typer.Option(2e-3, "--lr", help="AdamW learning rate (cosine decay)."),
        patience: int = typer.Option(6, "--patience", min=1, help="Early stopping: epochs without improvement."),
        box_weight: float = typer.Option(2.0, "--box-weight", min=0.0, help="Weight of the box loss (L1 + GIoU)."),
        balance: bool = typer.Option(False, "--balance-classes/--no-balance-classes",
                                     help="Weight the cross-entropy by inverse class frequency."),
        threads: int = typer.Option(2, "--threads", min=1, help="PyTorch threads."),
        seed: int = typer.Option(0, "--seed", help="Seed for the split, crops and weights."),
        limit_images: int | None = typer.Option(None, "--limit-images", min=3, help="Use only N images (smoke)."),
    ) -> None:
        """Train the box + label model on face crops with context (one face per sample); scores the test split.

        Example: bglab train-det --annotations boxes.csv --images photos/ --out runs/det
        """
        _need_torch()
        import sys

        from bglab.train.detect import TrainDetConfig, train_run

        if size % 16:
            raise ConfigError(f"--size must be a multiple of 16, got {size}", hint="e.g. 96")
        cfg = TrainDetConfig(annotations=str(annotations), images=str(images), out=str(out), epochs=epochs,
                             max_minutes=max_minutes, size=size, width=width, batch=batch, lr=lr, patience=patience,
                             box_weight=box_weight, balance_classes=balance, seed=seed, threads=threads,
                             limit_images=limit_images, command="bglab " + " ".join(sys.argv[1:]))
        train_run(cfg, log=lambda m: err_console.print(m, highlight=False, markup=False))
        console.print(f"run written to {out} (test metrics: {out / 'test_metrics.json'})")

    @app.command("eval-det")
    def eval_det(
        run: Annotated[Path, typer.Argument(help="Run folder from train-det.")],
        annotations: Annotated[Path, typer.Option("--annotations", help="Box annotations (CSV / VOC / COCO).")],
        images: Annotated[Path, typer.Option("--images", help="Folder holding the annotated images.")],
        split_name: str = typer.Option("test", "--split", help="Which recorded split: train, val or test."),
        which: str = typer.Option("best", "--which", help="Checkpoint: best or last."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
        sheet: Annotated[Path | None, typer.Option(
            "--sheet", help="Write a contact sheet PNG: true box green, predicted red (orange = wrong label).")] = None,
    ) -> None:
        """Mean IoU, accuracy, per-class accuracy and confusion matrix of a run on its recorded split.

        Example: bglab eval-det runs/det --annotations boxes.csv --images photos/
        """
        _need_torch()
        from rich.table import Table

        from bglab.train.detect import contact_sheet_image, evaluate_run

        if which not in ("best", "last"):
            raise ConfigError(f"--which must be best or last, not {which!r}")
        ev, keep = evaluate_run(run, annotations, images, which=which, split_name=split_name)
        if sheet is not None and ev.n:
            from bglab.io.files import write_image

            write_image(sheet, contact_sheet_image(keep, ev))
        if as_json:
            print(json.dumps({"split": split_name, "checkpoint": which, **ev.as_dict()}, indent=1))
            return
        console.print(f"{split_name} split, {which} checkpoint; box check: {keep['check']}", highlight=False)
        for line in ev.lines():
            console.print(line, highlight=False)
        table = Table(title="confusion matrix (rows: true, columns: predicted)")
        table.add_column("true \\ pred")
        for c in ev.classes:
            table.add_column(c, justify="right")
        for c, row in zip(ev.classes, ev.confusion, strict=True):
            table.add_row(c, *(str(v) for v in row))
        console.print(table)
        if sheet is not None:
            console.print(f"wrote {sheet}")

"""``bglab dataset``: inspect data sets (ImageFolder trees and CSV manifests): counts per class x origin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

dataset_app = typer.Typer(
    name="dataset",
    help="Inspect data sets: ImageFolder trees (one sub-folder per class) and CSV manifests.",
    no_args_is_help=True,
)


def _parse_fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint="--split") from None
    return values


@dataset_app.command("info")
def info(
    sources: Annotated[list[Path], typer.Argument(help="ImageFolder roots and/or CSV manifests (*.csv).",
                                                  show_default=False)],
    manifest: Annotated[bool, typer.Option(
        "--manifest", help="Read every SRC as a CSV manifest (a folder: its manifest.csv).")] = False,
    split: Annotated[str | None, typer.Option(
        "--split", help="Also split and count: train,val[,test] fractions, e.g. 0.7,0.15,0.15.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")] = False,
) -> None:
    """Count the samples of one or more sources per class x origin (and per split with --split).

    Example: bglab dataset info photos/ --split 0.7,0.15,0.15
    """
    from bglab.cli._common import console
    from bglab.data.dataset import (
        class_names,
        combine,
        count_matrix,
        format_counts,
        read_imagefolder,
        read_manifest,
    )
    from bglab.data.dataset import split as split_samples

    loaded = []
    for src in sources:
        if manifest or src.suffix.lower() == ".csv":
            loaded.append(read_manifest(src / "manifest.csv" if src.is_dir() else src))
        else:
            loaded.append(read_imagefolder(src))
    samples = combine(*loaded)
    parts = None
    if split is not None:
        parts = split_samples(samples, fractions=_parse_fractions(split), seed=seed)

    if as_json:
        out: dict[str, object] = {
            "sources": [str(s) for s in sources],
            "total": len(samples),
            "classes": class_names(samples),
            "origins": sorted({s.origin for s in samples}),
            "groups": len({s.group for s in samples}),
            "counts": count_matrix(samples),
        }
        if parts is not None:
            out["split"] = {
                "fractions": list(parts.fractions),
                "seed": seed,
                "parts": {name: {"total": len(p), "counts": count_matrix(p)}
                          for name, p in parts.as_dict().items()},
            }
        typer.echo(json.dumps(out, indent=2))
        return

    console.print(format_counts(samples, title="samples per class x origin"))
    console.print(f"{len(samples)} samples, {len(class_names(samples))} classes, "
                  f"{len({s.origin for s in samples})} origin(s), {len({s.group for s in samples})} groups")
    if parts is not None:
        for name, p in parts.as_dict().items():
            console.print(format_counts(p, title=f"{name} ({len(p)} samples)"))
        sizes = ", ".join(f"{name} {len(p)}" for name, p in parts.as_dict().items())
        console.print(f"split (seed {seed}): {sizes}; no group crosses splits")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")

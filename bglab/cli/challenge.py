"""``bglab challenge RUN_DIR DATA``: the adversarial-background evaluation (Xiao et al. 2021) of an experiment's models.

Every test foreground is pasted on every test background (Only-BG-T versions); a foreground is *broken* when
some background makes the model wrong. Prints the broken share (of the foregrounds classified correctly on
their original image) per class and overall and the accuracy over all composites, per run and as the mean and
95 % t-interval over seeds; ``--out`` writes ``challenge.json`` and ``challenge_broken.png``. Exit code 0 ok,
1 when some image or mask could not be read (recorded, the rest went on), 2 on a usage error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}"


def _ci(d: dict) -> str:
    m, lo, hi = d["mean"], d["lo"], d["hi"]
    if m is None or m != m:
        return "n/a"
    if lo is None or lo != lo:
        return _pct(m)
    return f"{_pct(m)} [{_pct(lo)}, {_pct(hi)}]"


def challenge(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `bglab experiment`.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="ImageFolder with masks (<class>/images + <class>/masks), "
                                         "or any ImageFolder with --backend.", show_default=False)],
    arm: Annotated[str | None, typer.Option("--arm", help="Arm to challenge (default: the baseline arm).")] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="Only runs of this protocol.")] = None,
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these run ids (repeatable).")] = None,
    max_fg: Annotated[int, typer.Option("--max-fg", help="At most this many foregrounds (seeded subsample; "
                                        "0 = all).", min=0)] = 100,
    max_bg: Annotated[int, typer.Option("--max-bg", help="At most this many backgrounds (seeded subsample; "
                                        "0 = all).", min=0)] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the subsamples.")] = 0,
    test_set: Annotated[str | None, typer.Option("--test-set", help="Use only the images that were in this test "
                                                 "set of the run (e.g. test): never its training images.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto | fast (composite at model size, resize/grey only) | "
                                      "full (whole arm pipeline per composite).")] = "auto",
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Make masks with this segmenter "
                                                "instead of reading mask files (see `bglab backends`).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-O", help="Backend option key=value (repeatable).")
                      ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: torch's).", min=1)
                       ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write challenge.json and "
                                             "challenge_broken.png here.")] = None,
) -> None:
    """Adversarial backgrounds: share of foregrounds that some test background makes the model misclassify.

    Example: bglab challenge work/experiments/rps-reference pets/
    """
    from rich.table import Table

    from bglab.cli._common import console, err_console, parse_options, print_failed, progress_bar
    from bglab.data.dataset import read_imagefolder
    from bglab.experiment.challenge import broken_sheet, held_out, run_challenge

    if threads:
        import torch

        torch.set_num_threads(threads)
    samples = read_imagefolder(data, mask_dir=None if backend else "masks")
    if test_set:
        samples = held_out(run_dir, samples, test_set)
    segmenter = None
    if backend:
        from bglab.foreground import create

        segmenter = create(backend, kind="segmenter", **parse_options(option))
    t0 = time.perf_counter()
    with progress_bar(transient=True) as bar:
        tasks: dict[str, int] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, rate="")
            bar.update(tasks[stage], completed=done, total=total,
                       rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f}/s")

        result = run_challenge(run_dir, samples, arm=arm, protocol=protocol, runs=run, max_fg=max_fg or None,
                               max_bg=max_bg or None, seed=seed, mode=mode, segmenter=segmenter, progress=tick)
    doc = result.to_json()
    doc["data"] = str(data)
    if out is not None:
        from bglab.io.files import atomic_write_text, write_image

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "challenge.json", json.dumps(doc, indent=1) + "\n")
        broken = [r for r in result.runs if r["broken_examples"]]
        if broken:
            sheet = broken_sheet(result, run=broken[0]["run"], mode=mode)
            if sheet is not None:
                write_image(out / "challenge_broken.png", sheet)
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
    else:
        classes = doc["classes"]
        t = doc["timing"]
        modes = ", ".join(f"{a}: {m['mode']}" + (f" (ignored: {', '.join(m['ignored_steps'])})"
                                                 if m["ignored_steps"] else "") for a, m in doc["mode"].items())
        table = Table(title=f"adversarial backgrounds: arm {doc['arm']}, {doc['n_fg']} foregrounds x "
                            f"{doc['n_bg']} backgrounds ({modes})")
        for col in ("run", "seed", "orig. acc %", "broken", "broken %", "composite acc %",
                    *(f"{c} broken %" for c in classes)):
            table.add_column(col, justify="left" if col == "run" else "right")
        for r in result.runs:
            table.add_row(r["run"], str(r["seed"]), _pct(r["original_accuracy"]),
                          f"{r['broken']}/{r['original_correct']}", _pct(r["broken_share"]),
                          _pct(r["composite_accuracy"]),
                          *(_pct(r["per_class"][c]["broken_share"]) for c in classes))
        console.print(table)
        summary = Table(title="mean [95 % CI] over seeds")
        for col in ("protocol", "variant", "seeds", "orig. acc %", "broken %", "composite acc %"):
            summary.add_column(col, justify="left" if col in ("protocol", "variant") else "right")
        for g in doc["groups"]:
            summary.add_row(g["protocol"], g["variant"], str(g["n_seeds"]), _ci(g["original_accuracy"]),
                            _ci(g["broken_share"]), _ci(g["composite_accuracy"]))
        console.print(summary)
        console.print(f"{t['predictions']} predictions in {t['seconds']:.1f} s: {t['ms_per_composite']:.2f} ms per "
                      f"composite (compose {t['compose_ms_per_composite']:.2f} ms, predict "
                      f"{t['predict_ms_per_composite']:.2f} ms)", highlight=False)
        if out is not None:
            console.print(f"wrote {out / 'challenge.json'}", highlight=False)
    if result.skipped:
        err_console.print(f"[yellow]{len(result.skipped)} image(s) skipped[/] (e.g. {result.skipped[0]['reason']})",
                          highlight=False)
    for e in doc.get("pipeline_errors", [])[:5]:
        err_console.print(f"[yellow]pipeline failed[/] {e}", highlight=False)
    if result.failed:
        for f in result.failed[:5]:
            print_failed(err_console, f["error"])
        err_console.print(f"[bold red]{len(result.failed)} file(s) could not be read[/]; the rest were evaluated")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``challenge`` command to the bglab app."""
    app.command("challenge")(challenge)

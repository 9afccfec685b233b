"""``bglab experiment CONFIG``: run (or resume) a background experiment; ``bglab eval-cls``: score its models.

``experiment`` trains every protocol x arm x variant x seed the config asks for into ``--out`` (default
``work/experiments/<name>``, ``<name>-quick`` with ``--quick``), resuming an interrupted run, then writes
``summary.json`` and ``report.html`` (and prints the verdicts, the label check and, for matrix studies, one
BG-Gap line per trained arm; see ``docs/matrix.md``). ``eval-cls RUN_DIR DATA_DIR`` preprocesses an ImageFolder data set
with each finished run's arm pipeline and reports the accuracy of its final model: per arm (mean and 95 %
t-interval over the seeds, per class), then per run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from bglab.cli._common import train_device_option


def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, or the name of a shipped one (rps-reference; "
                                                "`bglab init experiment --list` names them).",
                                           show_default=False)],
    quick: Annotated[bool, typer.Option("--quick", help="Apply the config's quick: profile (CI-sized run).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (resumed when it exists).",
                                             show_default="work/experiments/NAME, NAME-quick with --quick")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: the config's).")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", "-w", min=1, help="Processes that preprocess the arms (same images; MediaPipe / GrabCut arms "
                                 "are CPU-bound: use the number of cores).")] = 1,
    parallel_runs: Annotated[int, typer.Option(
        "--parallel-runs", min=1, help="Train this many runs at once, each in its own process with --threads "
                                       "threads (identical figures to one at a time at those threads).")] = 1,
    engine: Annotated[str, typer.Option(
        "--engine", help="local (processes here) | ray (Ray actors; extra 'ray'; see bglab/batch/ray_runs.py).")
    ] = "local",
    engine_option: Annotated[list[str] | None, typer.Option(
        "--engine-option", help="Engine option key=value, e.g. address=auto.")] = None,
    max_epochs: Annotated[int | None, typer.Option(
        "--max-epochs", help="Stop after training this many epochs in total (resume later).", min=1)] = None,
    device: str = train_device_option(),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every epoch.")] = False,
) -> None:
    """Train and compare the preprocessing arms of an experiment; writes metrics, checkpoints and a report.

    Example: bglab experiment rps-reference --quick
    """
    from rich.markup import escape

    from bglab.cli._common import console, err_console, parse_options
    from bglab.experiment.config import load_experiment_config
    from bglab.experiment.runner import run_experiment

    from bglab.experiment.templates import find_config

    cfg = load_experiment_config(find_config(config), quick=quick)
    run_dir = out or Path("work") / "experiments" / (f"{cfg.name}-quick" if quick else cfg.name)
    runs = cfg.runs()
    console.print(f"experiment [bold]{cfg.name}[/]{' (quick)' if quick else ''}: {len(runs)} run(s) "
                  f"({len(cfg.used_arms())} arm(s), {len(cfg.seeds)} seed(s)) -> {escape(str(run_dir))}",
                  highlight=False)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if verbose or " epoch " not in msg:
            err_console.print(f"[dim]{time.perf_counter() - t0:7.1f}s[/] {escape(msg)}", highlight=False)

    summary = run_experiment(cfg, run_dir, max_epochs=max_epochs, threads=threads, log=log, device=device,
                             workers=workers, parallel_runs=parallel_runs, engine=engine,
                             engine_options=parse_options(engine_option))
    if summary.get("failed"):
        for run, why in summary["failed"].items():
            err_console.print(f"[red]{escape(run)} failed twice: {escape(why)}[/]", highlight=False)
        console.print(f"{len(summary['failed'])} run(s) failed; the others are kept: run the same command again "
                      f"to retry them ({run_dir})")
        raise typer.Exit(1)
    if not summary.get("complete"):
        console.print(f"stopped after the epoch budget; run the same command again to continue "
                      f"({escape(str(run_dir))})", highlight=False)
        raise typer.Exit(0)
    for table in final_tables(summary):
        console.print(table)
    for v in summary.get("verdicts", []):
        if v["distortion"] == "clean":
            colour = "red" if v["rejected"] else "yellow" if v.get("status") == "inconclusive" else "green"
            console.print(f"[{colour}]{escape(v['study'] + ': ' + v['text'])}[/]", highlight=False)
    for proto, tests in (summary.get("bg_gap") or {}).items():
        for test, rows in tests.items():
            for g in rows.values():
                console.print(escape(f"[{proto}; {test}] {g['text']}"), highlight=False)
    for line in label_check_lines(summary):
        console.print(escape(line), highlight=False)
    for note in summary.get("notes", []):
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    console.print(f"done in {time.perf_counter() - t0:.0f} s: {escape(str(run_dir / 'report.html'))}",
                  highlight=False)


def label_check_line(where: str, photos: str, check: Mapping[str, Any], listed: str) -> str:
    """The terminal's sentence on one label check (bglab.experiment.label_check) with flagged photos."""
    return (f"{where}: {check['count']} of {check['photos']} {photos} get the same wrong class from all "
            f"{check['runs']} runs: check their labels ({listed})")


def label_check_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per study, protocol and test set with photos every run gives the same wrong class."""
    return [label_check_line(f"{sname} / {proto}", f"{test} test photos", c, "report: Photos every model gets wrong")
            for sname, protos in (summary.get("label_check") or {}).items()
            for proto, tests in protos.items() for test, c in tests.items() if c["count"]]


def final_tables(summary: dict[str, Any]) -> list[Any]:
    """One Rich table per study x protocol: final accuracy % per line and test set (clean), with its 95 %
    interval (over seeds from 3 seeds on; else over test images, marked img), then train accuracy."""
    from rich.table import Table

    from bglab.experiment.report import _ci_cell

    tables = []
    for sname, st in (summary.get("analysis") or {}).get("studies", {}).items():
        for proto, res in st["protocols"].items():
            n_seeds = max((c["n"] for f in res["final"].values() for c in f.values()), default=0)
            table = Table(title=f"{sname} / {proto}: final accuracy % ({n_seeds} seed(s))")
            table.add_column("trained on", justify="left")
            for t in res["tests"]:
                table.add_column(f"test {t}", justify="right")
            table.add_column("train", justify="right")
            for lab, f in res["final"].items():
                table.add_row(lab, *(_ci_cell(f[f"{t}|clean"]) for t in res["tests"]), _ci_cell(f["train|clean"]))
            tables.append(table)
    return tables


def eval_cls(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `bglab experiment`.", show_default=False)],
    data_dir: Annotated[Path, typer.Argument(help="ImageFolder data set (one sub-folder per class).",
                                             show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these run ids (repeatable).")] = None,
    as_source: Annotated[str | None, typer.Option(
        "--as-source", help="The folder counts as this source of the experiment (for arms whose steps apply "
                            "to some sources only, arms.NAME.sources).")] = None,
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Also write every photo's label and each run's and ensemble's answer to this CSV.",
        show_default=False)] = None,
) -> None:
    """Score every finished model of an experiment on another data set (preprocessed with its arm): accuracy
    per arm (mean and 95 % CI over seeds) and per class, then per run, and the photos every run gets wrong the
    same way (the label check).

    Example: bglab eval-cls work/experiments/rps-reference new-photos/
    """
    from rich.markup import escape
    from rich.table import Table

    from bglab.cli._common import console
    from bglab.experiment.evaluate import by_arm, score_run_dir
    from bglab.io.files import atomic_write_text

    scores = score_run_dir(run_dir, data_dir, runs=run, as_source=as_source)
    results = scores.rows
    arms = by_arm(results)
    checks = scores.label_check()
    if predictions is not None:
        atomic_write_text(predictions, scores.predictions_csv())
    if as_json:
        typer.echo(json.dumps({"arms": arms, "runs": results, "label_check": checks,
                               "unreadable": scores.unreadable}, indent=1))
        return

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    classes = list(results[0]["per_class"])
    table = Table(title=f"{data_dir} scored by {run_dir}: per arm, over seeds")
    table.add_column("protocol / arm / variant", overflow="fold")  # long names wrap; the figures never do
    for col in ("seeds", "n", "accuracy % [95 % CI]", *classes):
        table.add_column(col, justify="right", no_wrap=True, min_width=min(len(col), 8))
    for a in arms:
        ci = "" if a["ci95"][0] is None else f" [{pct(max(0.0, a['ci95'][0]))}, {pct(min(1.0, a['ci95'][1]))}]"
        table.add_row(f"{a['protocol']} / {a['arm']} / {a['variant']}", str(len(a["seeds"])), str(a["n"]),
                      pct(a["accuracy"]) + ci, *(pct(a["per_class"][c]) for c in classes))
    console.print(table)
    table = Table(title="per run")
    for col in ("run", "n", "accuracy %", *classes):
        table.add_column(col, justify="left" if col == "run" else "right", overflow="fold" if col == "run" else None,
                         no_wrap=col != "run", min_width=None if col == "run" else min(len(col), 8))
    for r in results:
        table.add_row(r["run"], str(r["n"]), pct(r["accuracy"]), *(pct(v) for v in r["per_class"].values()))
    console.print(table)
    for proto, c in checks.items():
        if c["count"]:
            console.print(escape(label_check_line(proto, "photos", c, "--json lists them")), highlight=False)
    if scores.unreadable:
        console.print(f"[yellow]{len(scores.unreadable)} of {len(scores.paths)} photos could not be read or "
                      f"preprocessed and are not scored (n counts the others; --json lists them), e.g. "
                      f"{escape(next(iter(scores.unreadable.values())))}[/]", highlight=False)
    if predictions is not None:
        console.print(f"every photo's answers: {escape(str(predictions))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("experiment")(experiment)
    app.command("eval-cls")(eval_cls)

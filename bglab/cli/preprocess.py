"""``bglab preprocess``: run a preprocessing pipeline over whole data sets (parallel, resumable)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from bglab.cli._common import console, device_option, err_console, esc, parse_options, print_failed, progress_bar
from bglab.errors import ConfigError
from bglab.foreground.registry import choices_help


def preprocess(
    srcs: list[str] = typer.Argument(..., metavar="SRC",
                                     help="Sources: ImageFolder folders, CSV manifests, or ORIGIN=PATH."),
    dst: Path = typer.Argument(..., metavar="DST", help="Output folder."),
    config: Path = typer.Option(None, "--config", "-c", help="Pipeline config (YAML / TOML / JSON) or a shipped "
                                                             "name (preprocess-reference); flags below override "
                                                             "or add steps."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes (one backend session each)."),
    workers_old: int = typer.Option(None, "-j", min=1, hidden=True, help="Deprecated spelling of -w."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads per worker's backend session (0: all cores with 1 worker, "
                                     "1 per worker with several)."),
    device: str = device_option(),
    size: int = typer.Option(None, "--size", help="Resize to SIZE x SIZE, keeping the aspect ratio (padded)."),
    grey: bool = typer.Option(False, "--grey", "--gray", help="Convert to greyscale."),
    crop: bool = typer.Option(False, "--crop", help="Crop to the located box (else the mask's box)."),
    margin: float = typer.Option(None, "--margin", help="Crop margin, fraction of the box per side (implies --crop)."),
    square: bool = typer.Option(None, "--square/--no-square", help="Square crops."),
    backend: str = typer.Option(None, "--backend", "-b",
                                help=f"Segmenter backend: {choices_help('segmenter')} (see `bglab backends`)."),
    option: list[str] = typer.Option(None, "--option", "-O", help="Segmenter option key=value (repeatable)."),
    locator: str = typer.Option(None, "--locator", "-l", help=f"Locator backend: {choices_help('locator')}."),
    locator_option: list[str] = typer.Option(None, "--locator-option", help="Locator option key=value."),
    on_missing: str = typer.Option(None, "--on-missing", help="No box found: keep | skip | mask-box."),
    background: str = typer.Option(None, "--background", help="remove | color (or colour) | blur | swap | keep."),
    color: str = typer.Option(None, "--color", "--colour", help="Background colour (#rrggbb, r,g,b, name)."),
    dropout: float = typer.Option(None, "--dropout", help="Pixel dropout probability (seeded per sample)."),
    noise: float = typer.Option(None, "--noise", help="Gaussian noise sigma, 0..255 units (seeded per sample)."),
    seed: int = typer.Option(None, "--seed", help="Global seed of the random steps."),
    fmt: str = typer.Option(None, "--format", help="Output format: png (default), webp, jpg."),
    engine: str = typer.Option("local", "--engine", help="local (process pool) | ray (extra 'ray')."),
    engine_option: list[str] = typer.Option(None, "--engine-option",
                                            help="Engine option key=value, e.g. address=ray://head:10001."),
    chunk: int = typer.Option(8, "--chunk", help="Images per task (batched inference)."),
    manifest: bool = typer.Option(False, "--manifest", help="Treat every SRC as a CSV manifest (default: "
                                                             "files ending .csv are manifests)."),
    limit: int = typer.Option(None, "--limit",
                              help="Only N samples, evenly spaced over the sorted list (a quick check)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo every sample (forget the journal)."),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved pipeline and exit."),
    on_suspect: str = typer.Option(None, "--on-suspect",
                                   help="A mask that fails QC: keep (write it, marked suspect) | skip | fail."),
    qc_option: list[str] = typer.Option(None, "--qc", help="QC rule key=value for the segment step's masks "
                                                           "(repeatable); rules in docs/trust.md."),
) -> None:
    """Preprocess data sets: DST/<origin>/<class>/<stem>.png, DST/manifest.parquet, DST/summary.csv.

    Example: bglab preprocess photos/ out/pre --size 128 --background colour --color white -w 2

    Kill it at any time and run it again: finished samples are skipped. Exit code 0 when nothing failed
    (samples where no box was found are results, not failures), 1 when any sample failed.
    """
    from bglab.cli._common import deprecated_flag
    from bglab.io.colors import parse_color
    from bglab.pipeline import Pipeline, load_config
    from bglab.pipeline.preprocess import preprocess as run, summary_table

    workers = int(deprecated_flag("-j (preprocess)", "-w / --workers", workers_old, workers))  # type: ignore[arg-type]
    from bglab.experiment.templates import find_config

    base = load_config(find_config(config)) if config is not None else None
    cfg = apply_overrides(
        base, locator=locator, locator_options=parse_options(locator_option), on_missing=on_missing,
        backend=backend, options=parse_options(option), background=background,
        color=list(parse_color(color)) if color else None, crop=crop, margin=margin, square=square, size=size,
        grey=grey, dropout=dropout, noise=noise, seed=seed, fmt=fmt)
    from bglab.foreground.qc import set_segment_qc

    cfg = set_segment_qc(cfg, on_suspect=on_suspect, rules=parse_options(qc_option))
    pipe = Pipeline.from_config(cfg)
    if show_config:
        console.print(pipe.to_yaml(), highlight=False)
        return

    t0 = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("preprocess", total=None, rate="")
        state = {"n": 0, "t": time.perf_counter()}

        def start(total: int, resumed: int) -> None:
            progress.update(task, total=total, completed=resumed)
            if resumed:
                progress.console.print(f"resuming: {resumed} of {total} sample(s) already done")
            state["t"] = time.perf_counter()

        def tick(rec: dict) -> None:
            state["n"] += 1
            rate = state["n"] / max(time.perf_counter() - state["t"], 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} img/s")
            if rec["status"] == "failed":
                print_failed(progress.console, rec["error"])

        rep = run(srcs, dst, cfg, workers=workers, chunk=chunk, engine=engine, threads=threads or None,
                  overwrite=overwrite, limit=limit, manifest=manifest or None, on_start=start, on_progress=tick,
                  engine_options=parse_options(engine_option), device=device)
    for p in rep.problems:
        print_failed(err_console, p, "manifest row skipped:", "yellow")
    console.print(summary_table(rep.summary, title=f"bglab preprocess ({pipe!r})"))  # escapes its cells
    _print_qc(rep, pipe)
    elapsed = time.perf_counter() - t0
    rate = rep.processed / elapsed if elapsed > 0 else 0.0
    console.print(f"{rep.processed} processed, {rep.resumed} already done, {rep.count('failed')} failed in "
                  f"{elapsed:.1f} s ({rate:.1f} img/s, {workers} worker(s)); outputs in {esc(dst)}; manifest "
                  f"{rep.manifest_path.name if rep.manifest_path else '-'}; summary summary.csv", highlight=False)
    if rep.interrupted:
        err_console.print("[red]interrupted[/]: run the same command again to resume")
        raise typer.Exit(130)
    if rep.exit_code:
        n = len(rep.failed) + len(rep.problems)
        err_console.print(f"[bold red]{n} sample(s) failed[/]; see the manifest's error column")
        raise typer.Exit(rep.exit_code)


def _print_qc(rep, pipe) -> None:  # noqa: ANN001
    """The suspect samples (up to 10) and one hint naming a better backend."""
    from bglab.foreground.qc import backend_hint, flags_of

    seg = pipe.segment_step
    flagged = [r for r in rep.records if r.get("qc") and r["status"] != "not-found"]
    for r in flagged[:10]:
        console.print(f"[yellow]suspect[/] {esc(r['input'])}: {esc(r['qc'])}", highlight=False)
    if len(flagged) > 10:
        console.print(f"[yellow]... {len(flagged) - 10} more suspect sample(s)[/]; see the manifest's qc column")
    not_found = sum(r["status"] == "not-found" and bool(r.get("qc")) for r in rep.records)
    if seg is not None:
        hint = backend_hint(seg.backend, {f for r in flagged for f in flags_of(r["qc"])}, not_found)
        if hint:
            err_console.print(f"[yellow]{esc(hint)}[/]", highlight=False)


def apply_overrides(
    config: Mapping[str, Any] | None = None,
    *,
    locator: str | None = None,
    locator_options: Mapping[str, Any] | None = None,
    on_missing: str | None = None,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    background: str | None = None,
    color: Any = None,
    crop: bool = False,
    margin: float | None = None,
    square: bool | None = None,
    size: int | Sequence[int] | None = None,
    grey: bool = False,
    dropout: float | None = None,
    noise: float | None = None,
    seed: int | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """A config with CLI-style overrides applied: a flag sets that step's setting, adding the step (in the
    canonical order locate, segment, background, crop, pose, resize, grey, distort) when the config lacks it.

    ``--background`` without a segment step adds ``segment`` (the default backend). Validation happens in
    :meth:`Pipeline.from_config`.
    """
    from bglab.pipeline import STEP_NAMES, step_entries

    rank_of = {name: i for i, name in enumerate(STEP_NAMES)}
    cfg = dict(config or {})
    steps = [[name, dict(c)] for name, c, _ in step_entries(cfg.get("steps"))]

    def put(name: str, add: bool = False, **values: Any) -> None:
        """Set the given (not None) settings of step ``name``, adding the step when one is set or ``add``."""
        values = {k: v for k, v in values.items() if v is not None}
        if not (values or add):
            return
        for n, c in steps:
            if n == name:
                c.update(values)
                return
        pos = next((i for i, (n, _) in enumerate(steps) if rank_of[n] > rank_of[name]), len(steps))
        steps.insert(pos, [name, values])

    def has(name: str) -> bool:
        return any(n == name for n, _ in steps)

    put("locate", backend=locator, options=dict(locator_options) if locator_options else None)
    if on_missing is not None and not has("locate"):
        raise ConfigError("--on-missing needs a locate step", hint="add --locator NAME")
    put("locate", on_missing=on_missing)
    put("segment", backend=backend, options=dict(options) if options else None)
    if background is not None:
        put("segment", add=str(background).lower() != "keep")
        put("background", mode=background, color=color)
    elif has("background"):
        put("background", color=color)
    put("crop", add=crop, margin=margin, square=square)
    put("resize", size=size)
    put("grey", add=grey)
    put("distort", dropout=dropout, noise=noise)
    if seed is not None:
        cfg["seed"] = seed
    if fmt is not None:
        cfg["output"] = {**dict(cfg.get("output") or {}), "format": fmt}
    cfg["steps"] = [{n: c} for n, c in steps]
    return cfg


def register(app: typer.Typer) -> None:
    app.command("preprocess")(preprocess)

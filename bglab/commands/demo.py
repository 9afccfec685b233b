"""``bglab demo``: the main job on the embedded sample data, offline, in well under a minute."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer
from rich.table import Table

from bglab.commands._common import console


def sample_data_dir() -> Path:
    """Folder of the photos embedded in the package (with their licence files)."""
    return Path(str(resources.files("bglab") / "sample_data"))


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where to write the demo's outputs."),
    backend: str = typer.Option(None, "--backend", "-b", help="Segmenter backend (default: unet)."),
) -> None:
    """Remove and swap the background of the embedded sample hands; write cut-outs, swaps and a contact sheet."""
    import numpy as np

    from bglab import ops
    from bglab.io import list_images, read_image, write_image
    from bglab.remove import RemoveOptions, apply_mode, prepare_mask
    from bglab.segment import DEFAULT_SEGMENTER, create
    from bglab.viz import contact_sheet, overlay_mask

    data = sample_data_dir()
    images = [p for sub in ("webcam", "sxsw") for p in list_images(data / sub)]
    background = read_image(sorted((data / "backgrounds").glob("*.jpg"))[0])
    name = backend or DEFAULT_SEGMENTER
    t0 = time.perf_counter()
    seg = create(name, kind="segmenter")
    t_load = time.perf_counter() - t0
    cut_opts, swap_opts = RemoveOptions(mode="cutout"), RemoveOptions(mode="swap")
    table = Table(title=f"bglab demo: {len(images)} embedded photos, backend {seg.name}")
    for col, just in (("image", "left"), ("size", "right"), ("foreground %", "right"), ("ms", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    rows, labels, times = [], [], []
    for path in images:
        rel = path.relative_to(data)
        t = time.perf_counter()
        image = read_image(path)
        mask = prepare_mask(seg.predict(image, source=path), cut_opts)
        cut = apply_mode(image, mask, cut_opts)
        swap = apply_mode(image, mask, swap_opts, background=background)
        write_image(out / "cutout" / rel.with_suffix(".png"), cut)
        write_image(out / "swap" / rel.with_suffix(".jpg"), swap)
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        cov = ops.coverage(mask)
        table.add_row(str(rel), f"{image.shape[1]}x{image.shape[0]}", f"{100 * cov:.1f}", f"{ms:.0f}")
        rows.append([image, overlay_mask(image, mask), cut, swap])
        labels.append(f"{rel.parts[0]}/{rel.parts[1]}")
    sheet = contact_sheet(rows, cell=150, row_labels=labels,
                          col_labels=["original", "mask", "cut-out", "swapped"])
    write_image(out / "demo_sheet.png", sheet)
    console.print(table)
    console.print(f"model load {t_load * 1000:.0f} ms; per image median {np.median(times):.0f} ms "
                  "(read + segment + cut-out + swap + 2 writes)")
    console.print(f"wrote {out}/cutout/ (RGBA PNG), {out}/swap/ (JPEG), {out}/demo_sheet.png")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
